"""The training tricks (`nas.models.tricks`): what each computes, that each is off by
default, and that bad values are refused by name."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.config.space import ARCH_KEYS
from nas.data.config import DataConfig
from nas.data.tensors import load_data, train_batches
from nas.errors import ConfigError
from nas.models import ArchConfig, build_model, parse_short_name
from nas.models.trick_layers import GhostBatchNorm2d, apply_tricks, make_activation
from nas.models.tricks import TricksConfig
from nas.models.whitening import PatchWhitening, patch_moments
from nas.training.ema import Lookahead, WeightEMA
from nas.training.loop import make_optimizer, train
from nas.training.recipe import Recipe, slimmable_conflicts
from nas.training.tta import tta_logits
from tests.cifar_fixture import write_cifar

SMALL = {"width": 0.125, "L1": {"residual": 1}}
FAST = Recipe(epochs=2, batch_size=32, eval_batch_size=64)


def arch_with(**tricks) -> ArchConfig:
    return ArchConfig.from_dict({**SMALL, "tricks": tricks})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = write_cifar(tmp_path_factory.mktemp("cifar"), n_train_per_class=20, n_test_per_class=5)
    cfg = DataConfig(root=str(root), val_size=50)
    return load_data(cfg), cfg


# ----------------------------------------------------------------------------- the config


def test_every_trick_is_off_by_default_and_leaves_the_hash_unchanged():
    plain = ArchConfig.from_dict(SMALL)
    assert plain.tricks == TricksConfig() and "tricks" not in plain.to_dict()
    assert arch_with().hash == plain.hash
    assert not TricksConfig().changes_network


def test_tricks_are_space_keys_and_short_name_tokens():
    assert {"tricks.activation", "tricks.ema_decay", "tricks.tta", "tricks.whiten"} <= set(ARCH_KEYS)
    arch = arch_with(activation="celu", celu_alpha=0.3, ema_decay=0.99, ema_start=2, ghost_batch=16, tta="flip",
                     whiten=True, freeze_bn_scale=True, pool_before_bn=True, bias_lr=64, lookahead=0.8,
                     alternating_flip=True)
    assert parse_short_name(arch.short_name()) == arch
    assert "t.activation=celu" in arch.short_name()


def test_settings_of_a_trick_that_is_off_are_its_defaults():
    assert arch_with(celu_alpha=0.3).hash == arch_with().hash  # relu: alpha means nothing
    assert arch_with(ema_start=3).hash == arch_with().hash  # no EMA: no start


@pytest.mark.parametrize("field, value, needle", [
    ("ema_decay", 1.0, "ema_decay must be 0 (off) or in (0, 1)"),
    ("ema_decay", -0.1, "ema_decay must be 0 (off) or in (0, 1)"),
    ("lookahead", 1.5, "lookahead must be 0 (off) or in (0, 1)"),
    ("ghost_batch", 1, "ghost_batch must be 0 (off) or at least 2"),
    ("activation", "tanh", "activation"),
    ("celu_alpha", 0.0, "celu_alpha"),
    ("bias_lr", 0, "bias_lr"),
    ("tta", "mirror", "tta"),
    ("ema_start", -1, "ema_start"),
])
def test_bad_trick_values_are_refused_naming_the_field(field, value, needle):
    with pytest.raises(ConfigError, match="tricks") as err:
        ArchConfig.from_dict({"tricks": {field: value, "activation": "celu"} if field == "celu_alpha"
                              else {field: value}})
    assert needle in str(err.value)


def test_a_ghost_batch_that_does_not_divide_the_batch_is_refused(tiny):
    data, cfg = tiny
    with pytest.raises(ConfigError, match="ghost_batch=12 must divide recipe.batch_size=32"):
        train(arch_with(ghost_batch=12), FAST, data, cfg)


def test_slimmable_training_refuses_the_tricks():
    assert slimmable_conflicts(arch_with(ema_decay=0.9).to_flat()) == ["tricks.ema_decay=0.9"]
    assert slimmable_conflicts(arch_with().to_flat()) == []


# ----------------------------------------------------------------------------- the network


@pytest.mark.parametrize("name, functional", [
    ("celu", lambda x: F.celu(x, alpha=0.3)), ("gelu", F.gelu), ("relu", F.relu),
])
def test_the_activation_is_torch_functional_one(name, functional):
    tricks = TricksConfig(activation=name, celu_alpha=0.3)
    x = torch.randn(4, 8, 5, 5)
    assert torch.equal(make_activation(tricks)(x.clone()), functional(x))


def test_every_relu_of_the_network_becomes_the_activation():
    model = build_model(arch_with(activation="gelu"))
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert sum(isinstance(m, nn.GELU) for m in model.modules()) == 6  # prep, 3 stage convs, 2 in the block


def test_pool_before_bn_is_conv_pool_bn_act():
    arch = arch_with(pool_before_bn=True)
    model = build_model(arch).eval()
    stage = model.l1
    x = torch.randn(2, 8, 16, 16)
    want = stage.conv.act(stage.conv.bn(F.max_pool2d(stage.conv.conv(x), 2)))
    assert torch.equal(stage(x), stage.residual(want))
    plain = build_model(arch_with(), seed=0).eval()
    assert plain.state_dict().keys() == model.state_dict().keys()


def test_ghost_batch_norm_normalises_each_virtual_batch_by_its_own_statistics():
    torch.manual_seed(0)
    bn = GhostBatchNorm2d(3, virtual_batch=4).train()
    x = torch.randn(12, 3, 5, 5) * 3 + 1
    out = bn(x)
    for group in range(3):
        part = x[4 * group : 4 * (group + 1)]
        want = F.batch_norm(part, None, None, training=True, eps=bn.eps)
        torch.testing.assert_close(out[4 * group : 4 * (group + 1)], want)
    # running statistics: the momentum step towards the mean of the groups' statistics
    means = torch.stack([x[4 * g : 4 * (g + 1)].mean((0, 2, 3)) for g in range(3)]).mean(0)
    torch.testing.assert_close(bn.running_mean, 0.1 * means)
    assert torch.equal(bn.eval()(x), F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                                  False, 0.0, bn.eps))


@pytest.mark.parametrize("images", [10, 3, 1])
def test_ghost_batch_norm_gives_a_batch_the_groups_do_not_divide_a_last_group_of_its_own(images):
    """The images a per-sample drop kind keeps in a branch reach its BN as any count."""
    torch.manual_seed(1)
    bn = GhostBatchNorm2d(3, virtual_batch=4).train()
    x = torch.randn(images, 3, 5, 5) * 2 - 1
    out = bn(x)
    starts = list(range(0, images, 4))
    for start in starts:
        part = x[start : start + 4]
        torch.testing.assert_close(out[start : start + 4], F.batch_norm(part, None, None, training=True, eps=bn.eps))
    means = torch.stack([x[s : s + 4].mean((0, 2, 3)) for s in starts]).mean(0)
    torch.testing.assert_close(bn.running_mean, 0.1 * means)


@pytest.mark.parametrize("kind", ["stochastic_depth", "depth_dropout", "drop_path", "width_dropout"])
def test_ghost_batch_norm_trains_with_every_drop_kind(kind):
    """A drop kind that runs a branch on the images it keeps hands its BNs a part of the batch."""
    arch = ArchConfig.from_dict({"width": 0.125, "L1": {"residual": 1}, "L3": {"residual": 1},
                                 "drop": {"kind": kind, "rate": 0.3}, "tricks": {"ghost_batch": 8}})
    model = build_model(arch, seed=0).train()
    torch.manual_seed(0)
    for _ in range(3):
        out = model(torch.randn(32, 3, 32, 32))
        assert out.shape == (32, 10) and torch.isfinite(out).all()
        out.sum().backward()


def test_ghost_batch_norm_keeps_the_state_dict_keys_of_batch_norm():
    plain, ghost = build_model(arch_with()), build_model(arch_with(ghost_batch=8))
    assert plain.state_dict().keys() == ghost.state_dict().keys()
    assert all(type(m) is not nn.BatchNorm2d for m in ghost.modules())


def test_frozen_bn_scales_are_not_optimised_and_stay_after_a_step():
    model = build_model(arch_with(freeze_bn_scale=True))
    scales = [m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    optimizer = make_optimizer(model, Recipe(), 1.0)
    optimised = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert scales and not any(id(s) in optimised for s in scales)
    for group in optimizer.param_groups:
        group["lr"] = 0.4
    F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    assert all(torch.equal(s, torch.ones_like(s)) for s in scales)


def test_whitening_makes_the_patch_covariance_of_its_fitting_sample_identity_up_to_eps():
    torch.manual_seed(0)
    mix = torch.randn(3, 3)
    images = torch.einsum("dc,nchw->ndhw", mix, torch.randn(64, 3, 12, 12))
    images = images + 0.5 * images.roll(1, dims=3)  # correlated neighbours, as in photographs
    layer = PatchWhitening()
    eps = 1e-2
    layer.fit(images, eps)
    out = F.conv2d(images, layer.weight)  # over the same patches (no padding)
    moments = out.permute(1, 0, 2, 3).reshape(27, -1).double()
    cov = moments @ moments.T / moments.shape[1]
    eigenvalues = torch.linalg.eigvalsh(patch_moments(images)).flip(0)
    torch.testing.assert_close(cov, torch.diag(eigenvalues / (eigenvalues + eps)), atol=1e-4, rtol=1e-4)
    big = eigenvalues > 100 * eps
    assert torch.allclose(cov.diagonal()[big], torch.ones(int(big.sum()), dtype=torch.float64), atol=0.011)


def test_whitening_is_fitted_before_training_and_never_trained(tiny):
    data, cfg = tiny
    result = train(arch_with(whiten=True), replace(FAST, epochs=1), data, cfg)
    layer = result.model.whiten
    assert not layer.weight.requires_grad
    fresh = PatchWhitening()
    fresh.fit(data.train_x, 1e-2)
    torch.testing.assert_close(layer.weight, fresh.weight)


# ----------------------------------------------------------------------------- the loop


def test_the_ema_is_the_hand_computed_average_of_the_weights():
    model = nn.Linear(2, 1, bias=False)
    average = nn.Linear(2, 1, bias=False)
    ema = WeightEMA(model, average, decay=0.9, start_step=1)
    history = []
    for step in range(4):
        with torch.no_grad():
            model.weight.add_(1.0)
        history.append(model.weight.detach().clone())
        ema.update(step)
    want = history[0]  # step 0 is before the start: the average is the weights
    for w in history[1:]:
        want = 0.9 * want + 0.1 * w
    torch.testing.assert_close(average.weight, want)


def test_with_ema_the_trained_result_is_the_average_and_evaluation_uses_it(tiny):
    data, cfg = tiny
    arch = arch_with(ema_decay=0.5)
    result = train(arch, FAST, data, cfg)
    plain = train(arch_with(), FAST, data, cfg)
    trained = {k: v for k, v in plain.model.state_dict().items() if v.is_floating_point()}
    averaged = {k: v for k, v in result.model.state_dict().items() if v.is_floating_point()}
    assert trained.keys() == averaged.keys()
    assert any(not torch.equal(trained[k], averaged[k]) for k in trained)  # the average, not the weights
    from nas.training.evaluate import evaluate
    assert result.final.val_acc == evaluate(result.model, data.val_x, data.val_y, 64)


def test_lookahead_moves_the_slow_weights_and_restarts_the_fast_ones():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    lookahead = Lookahead(model, decay=0.5, every=2, total_steps=2)  # step 2 of 2: the whole decay
    with torch.no_grad():
        model.weight.fill_(4.0)
    lookahead.update(0)  # not a sync step
    assert model.weight.item() == 4.0
    lookahead.update(1)  # slow 0 -> 0.5 * 0 + 0.5 * 4
    assert model.weight.item() == 2.0
    with torch.no_grad():
        model.weight.fill_(6.0)
    lookahead.finish()  # airbench94's last update, at decay 1: the network takes the slow weights
    assert model.weight.item() == 2.0


def test_lookahead_ramps_its_decay_cubically_over_the_steps_as_airbench94():
    """airbench94: decay 0.95**5 * (step / total)**3 at every 5th step: at half the steps an
    eighth of it, so early syncs hardly hold the fast weights back."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    lookahead = Lookahead(model, decay=0.8, every=5, total_steps=10)
    slow = 0.0
    for step in range(10):
        with torch.no_grad():
            model.weight.add_(1.0)  # a training step
        fast = model.weight.item()
        lookahead.update(step)
        if (step + 1) % 5 == 0:
            d = 0.8 * ((step + 1) / 10) ** 3
            slow = d * slow + (1 - d) * fast
            assert model.weight.item() == pytest.approx(slow)
        else:
            assert model.weight.item() == fast
    # by hand: step 5, d = 0.8 / 8 = 0.1: 0.9 * 5 = 4.5; step 10, d = 0.8: 0.8 * 4.5 + 0.2 * 9.5 = 5.5
    # (a constant 0.8 would give 1.0, then 2.0)
    assert model.weight.item() == pytest.approx(5.5)


def test_bias_lr_multiplies_the_lr_of_bn_parameters_keeping_their_decay_per_step():
    recipe = Recipe(weight_decay=5e-4)
    model = build_model(arch_with())
    plain = make_optimizer(model, recipe)
    assert len(plain.param_groups) == 1 and plain.param_groups[0]["lr_scale"] == 1.0
    scaled = make_optimizer(model, recipe, 64.0)
    weights, biases = scaled.param_groups
    assert all(p.ndim > 1 for p in weights["params"]) and all(p.ndim == 1 for p in biases["params"])
    assert biases["lr_scale"] == 64.0 and biases["lr_scale"] * biases["weight_decay"] == pytest.approx(5e-4)


def test_alternating_flip_mirrors_each_image_in_every_other_epoch(tiny):
    data, cfg = tiny
    first = torch.rand(len(data.train_y), generator=torch.Generator().manual_seed(1)) < 0.5
    plain_cfg = replace(cfg, crop_padding=0, cutout=0)
    for epoch in range(2):
        flips = first ^ bool(epoch % 2)
        gen = torch.Generator().manual_seed(0)
        order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(0))
        x, _ = next(train_batches(data, len(data.train_y), plain_cfg, gen, flips))
        want = torch.where(flips[order][:, None, None, None], data.train_x[order].flip(3), data.train_x[order])
        assert torch.equal(x, want)


# ----------------------------------------------------------------------------- evaluation


def test_flip_tta_is_the_mean_of_the_logits_of_the_image_and_its_mirror():
    model = build_model(arch_with()).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want = (model(x) + model(x.flip(3))) / 2
        torch.testing.assert_close(tta_logits(model, x, "flip"), want)
        assert torch.equal(tta_logits(model, x, "none"), model(x))


def test_translate_tta_is_airbench_level_two():
    model = build_model(arch_with()).eval()
    x = torch.randn(2, 3, 32, 32)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")

    def mirror(inputs):
        return 0.5 * model(inputs) + 0.5 * model(inputs.flip(-1))

    with torch.no_grad():
        translate = torch.stack([mirror(padded[:, :, :32, :32]), mirror(padded[:, :, 2:, 2:])]).mean(0)
        torch.testing.assert_close(tta_logits(model, x, "flip_translate"), 0.5 * mirror(x) + 0.5 * translate)


# ----------------------------------------------------------------------------- all of them


def test_every_trick_at_once_trains_and_is_seeded(tiny):
    data, cfg = tiny
    arch = arch_with(activation="celu", pool_before_bn=True, ghost_batch=16, freeze_bn_scale=True, whiten=True,
                     ema_decay=0.9, ema_start=1, lookahead=0.8, bias_lr=8, alternating_flip=True, tta="flip")
    one, two = train(arch, FAST, data, cfg, seed=3), train(arch, FAST, data, cfg, seed=3)
    assert one.status == "completed" and [m.val_acc for m in one.epochs] == [m.val_acc for m in two.epochs]
    assert one.final.train_loss == two.final.train_loss


def test_apply_tricks_changes_nothing_when_every_trick_is_off():
    model = build_model(arch_with())
    before = [type(m) for m in model.modules()]
    apply_tricks(model, TricksConfig())
    assert [type(m) for m in model.modules()] == before


# ----------------------------------------------------------------------------- search and ablation


def test_a_yaml_space_searches_tricks_like_any_architecture_key(tmp_path):
    from nas.config.experiment import load_experiment
    from tests.helpers import experiment_yaml

    space = {"width": {"fixed": 0.125}, "L1.residual": {"fixed": 1}, "tricks.activation": {"choice": ["relu", "celu"]},
             "tricks.ema_decay": {"choice": [0.0, 0.99]}, "tricks.tta": {"fixed": "flip"}}
    spec = load_experiment(experiment_yaml(tmp_path / "exp.yaml", space=space))
    archs = [spec.space.arch_from_params(point) for point in spec.space.grid()]
    assert len(archs) == 4 and len({a.hash for a in archs}) == 4
    assert {(a.tricks.activation, a.tricks.ema_decay, a.tricks.tta) for a in archs} == {
        ("relu", 0.0, "flip"), ("celu", 0.0, "flip"), ("relu", 0.99, "flip"), ("celu", 0.99, "flip")}


def test_a_space_whose_ghost_batch_does_not_divide_the_batch_is_refused_at_load(tmp_path):
    from nas.config.experiment import load_experiment
    from tests.helpers import experiment_yaml

    space = {"width": {"fixed": 0.125}, "tricks.ghost_batch": {"choice": [0, 10, 16]}}
    with pytest.raises(ConfigError, match="ghost batch 16 does not divide recipe.batch_size=50"):
        load_experiment(experiment_yaml(tmp_path / "exp.yaml", space=space))


def test_nas_ablate_switches_each_trick_that_is_on_off():
    from nas.ablation.plan import plan_variants
    from nas.config.space import parse_space
    from nas.config.validate import Source

    reference = arch_with(activation="celu", ema_decay=0.99, whiten=True, tta="flip")
    variants = plan_variants(reference, parse_space(Source(), {"width": {"fixed": 0.125}}))
    off = {v.key: v.after for v in variants if v.move == "off" and v.key.startswith("tricks.")}
    assert off == {"tricks.activation": "relu", "tricks.whiten": False, "tricks.ema_decay": 0.0, "tricks.tta": "none"}
    assert all(v.arch.tricks != reference.tricks for v in variants if v.key.startswith("tricks."))
