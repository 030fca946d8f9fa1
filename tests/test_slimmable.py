"""Universally slimmable networks (US-Nets, Yu & Huang 2019): slicing, the sandwich rule,
inplace distillation, BN recalibration, config checks, the store, the CLI and the dashboard."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from typer.testing import CliRunner

import nas.training.loop
import nas.training.steps
from nas.cli import app
from nas.data.config import DataConfig
from nas.data.tensors import load_data
from nas.db import Store
from nas.errors import ConfigError
from nas.models import ArchConfig, build_model, count_flops, count_params, parse_short_name, unit_channels
from nas.models.width_slicing import SlimmableBatchNorm2d, check_slimmable, extract_width, make_slimmable, set_bn_updates, set_width, width_member
from nas.training.usnets import WidthCurve, accuracy_at_widths, curve_widths, distillation_loss, recalibrate_bn, sandwich_widths
from nas.config.experiment import load_experiment
from nas.training.evaluate import evaluate
from nas.training.loop import train
from nas.training.recipe import Recipe, SlimmableConfig
from tests.cifar_fixture import write_cifar
from tests.old_store import write_old_store

ARCH = parse_short_name("R:L1 w=0.125")
RECIPE = Recipe(epochs=1, batch_size=50, eval_batch_size=100, slimmable=SlimmableConfig(min_width=0.25, samples=4))
STEPS = 150 // 50  # steps of the one epoch: 200 fixture images, 50 held out for val
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = write_cifar(tmp_path_factory.mktemp("cifar"), n_train_per_class=20, n_test_per_class=5)
    cfg = DataConfig(root=str(root), val_size=50)
    return load_data(cfg), cfg


@pytest.fixture(scope="module")
def recorded(tiny):
    """One US-Net training with spies: every head call in training (its input channels and
    logits) and every distillation loss call (its teacher and student)."""
    data, cfg = tiny
    head_calls, distill_calls = [], []

    def spy_make_slimmable(model):
        model = make_slimmable(model)
        model.head.register_forward_hook(
            lambda module, args, out: head_calls.append((module.training, args[0].shape[1], out.detach().clone()))
        )
        return model

    def spy_distillation_loss(logits, teacher):
        distill_calls.append({"teacher": teacher, "student_requires_grad": logits.requires_grad})
        return distillation_loss(logits, teacher)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nas.training.loop, "make_slimmable", spy_make_slimmable)  # the loop makes the net slimmable
        mp.setattr(nas.training.steps, "distillation_loss", spy_distillation_loss)  # the sandwich step distils
        result = train(ARCH, RECIPE, data, cfg, seed=0)
    training_calls = [(channels, logits) for training, channels, logits in head_calls if training]
    return result, training_calls, distill_calls


def last_channels(arch: ArchConfig) -> int:
    return unit_channels(arch)["L3"][-1]  # the head's input features


# ---- slicing: the net at width r is the width-r member ------------------------------------


@pytest.mark.parametrize("name", ["R:L1+L3 X:L2 w=0.125", "R:L1x2 X:L2 pyr w=0.125"])
@pytest.mark.parametrize("ratio", [0.25, 0.4, 0.65, 1.0])
def test_a_net_sliced_at_width_r_has_exactly_the_params_and_output_of_the_width_r_member(name, ratio):
    arch = parse_short_name(name)
    slim = set_width(make_slimmable(build_model(arch, seed=3)), ratio)
    member = build_model(width_member(arch, ratio))
    standalone = extract_width(slim, ratio)
    assert count_params(standalone) == count_params(member)
    assert ratio == 1.0 or count_params(member) < count_params(build_model(arch))
    assert {k: v.shape for k, v in standalone.state_dict().items()} == {k: v.shape for k, v in member.state_dict().items()}
    assert count_flops(slim) == count_flops(member)  # the slimmable net runs only the member's channels
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for mode in ("train", "eval"):  # batch statistics, then the sliced running statistics
        getattr(slim, mode)(), getattr(standalone, mode)()
        with torch.no_grad():
            assert torch.allclose(slim(x), standalone(x), atol=1e-5)


def test_weights_outside_the_width_r_slice_get_no_gradient():
    arch = parse_short_name("R:L1+L3 w=0.125")
    slim = set_width(make_slimmable(build_model(arch)), 0.5)
    shapes = {k: v.shape for k, v in build_model(width_member(arch, 0.5)).named_parameters()}
    slim(torch.randn(4, 3, 32, 32)).logsumexp(1).sum().backward()
    used = 0
    for key, param in slim.named_parameters():
        inside = tuple(slice(0, n) for n in shapes[key])
        outside = param.grad.clone()
        outside[inside] = 0
        assert not outside.any(), key
        used += param.grad[inside].numel()
    assert used == count_params(build_model(width_member(arch, 0.5)))


def test_the_member_at_width_r_is_the_architecture_with_width_times_r():
    arch = parse_short_name("R:L1+L3 pyr w=0.5")
    assert width_member(arch, 0.25) == parse_short_name("R:L1+L3 pyr w=0.125")
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        width_member(arch, 1.5)


def test_set_width_needs_a_slimmable_net():
    with pytest.raises(ValueError, match="make_slimmable"):
        set_width(build_model(ARCH), 0.5)


# ---- the sandwich rule and inplace distillation --------------------------------------------


def test_sandwich_widths_are_the_max_the_min_and_random_widths_between():
    cfg = SlimmableConfig(min_width=0.3, max_width=0.9, samples=5)
    generator = torch.Generator().manual_seed(0)
    steps = [sandwich_widths(cfg, generator) for _ in range(50)]
    assert all(len(w) == 5 and w[:2] == [0.9, 0.3] and all(0.3 <= r <= 0.9 for r in w[2:]) for w in steps)
    assert len({r for w in steps for r in w[2:]}) == 150  # random, not a fixed grid


def test_every_step_trains_the_max_and_the_min_width(recorded):
    result, training_calls, _ = recorded
    assert result.status == "completed" and len(result.step_widths) == STEPS
    assert len(training_calls) == STEPS * RECIPE.slimmable.samples  # one forward per width per step
    widest, narrowest = last_channels(ARCH), last_channels(width_member(ARCH, 0.25))
    for step in range(STEPS):
        channels = [c for c, _ in training_calls[4 * step : 4 * step + 4]]
        assert channels[:2] == [widest, narrowest]  # the max width first (the teacher), then the min
        assert all(narrowest <= c <= widest for c in channels[2:])
        assert result.step_widths[step][:2] == (1.0, 0.25)
    assert len({w for step in result.step_widths for w in step[2:]}) == 2 * STEPS


def test_smaller_widths_learn_from_the_detached_max_width_output(recorded):
    _, training_calls, distill_calls = recorded
    assert len(distill_calls) == STEPS * (RECIPE.slimmable.samples - 1)
    for step in range(STEPS):
        max_logits = training_calls[4 * step][1] * 0.125  # the head's output, before the logit scale
        for call in distill_calls[3 * step : 3 * step + 3]:
            teacher = call["teacher"]
            # no path back into the max width's forward: its loss alone trains it on the labels
            assert not teacher.requires_grad and teacher.grad_fn is None
            assert call["student_requires_grad"]
            assert torch.allclose(teacher, max_logits.softmax(1), atol=1e-6)


def test_the_distillation_loss_pulls_the_student_to_the_teachers_distribution():
    logits = torch.randn(8, 10, requires_grad=True)
    teacher = torch.randn(8, 10).softmax(1)
    distillation_loss(logits, teacher).backward()
    assert torch.allclose(logits.grad, (logits.detach().softmax(1) - teacher) / 8, atol=1e-6)
    same = logits.detach().clone().requires_grad_()
    distillation_loss(same, same.detach().softmax(1)).backward()
    assert same.grad.abs().max() < 1e-6  # at the teacher's distribution: nothing left to learn


def test_the_reported_metrics_are_the_max_widths(recorded, tiny):
    data, _ = tiny
    result, _, _ = recorded
    full = extract_width(result.model, 1.0)  # a standalone copy of the widest member
    assert result.final.val_acc == evaluate(full, data.val_x, data.val_y, 100)
    assert result.final.test_acc == evaluate(full, data.test_x, data.test_y, 100)
    assert all(math.isfinite(m.train_loss) for m in result.epochs)


def test_the_same_seed_gives_the_same_us_net(tiny, recorded):
    data, cfg = tiny
    again = train(ARCH, RECIPE, data, cfg, seed=0)
    assert again.step_widths == recorded[0].step_widths
    assert [m.train_loss for m in again.epochs] == [m.train_loss for m in recorded[0].epochs]


def test_a_smaller_width_going_non_finite_ends_the_trial_as_diverged(tiny, monkeypatch):
    data, cfg = tiny
    nan_loss = lambda logits, teacher: distillation_loss(logits, teacher) * math.nan  # noqa: E731
    monkeypatch.setattr(nas.training.steps, "distillation_loss", nan_loss)
    one_step = Recipe(epochs=3, batch_size=150, slimmable=RECIPE.slimmable)  # the max width's loss stays finite
    result = train(ARCH, one_step, data, cfg, seed=0)
    assert result.status == "diverged" and len(result.epochs) == 1
    assert math.isnan(result.final.train_loss) and result.final.test_acc is None


# ---- BN post-statistics and the width curve ------------------------------------------------


def test_bn_recalibration_recomputes_the_running_statistics_as_a_cumulative_average(recorded, tiny):
    data, cfg = tiny
    net = extract_width(recorded[0].model, 0.5)
    weights = {k: v.clone() for k, v in net.named_parameters()}
    before = net.prep.bn.running_mean.clone(), net.prep.bn.running_var.clone()
    batch_means = []
    net.prep.bn.register_forward_hook(lambda m, args, out: batch_means.append(args[0].mean((0, 2, 3))))
    recalibrate_bn(net, data, cfg, batch_size=50, images=100, generator=torch.Generator().manual_seed(0))
    assert len(batch_means) == 2 and int(net.prep.bn.num_batches_tracked) == 2
    assert torch.allclose(net.prep.bn.running_mean, torch.stack(batch_means).mean(0), atol=1e-5)
    assert not torch.allclose(net.prep.bn.running_mean, before[0])
    assert not torch.allclose(net.prep.bn.running_var, before[1])
    assert all(torch.equal(v, weights[k]) for k, v in net.named_parameters())
    assert not net.training and all(m.momentum == 0.1 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_accuracy_at_widths_measures_each_member_and_leaves_the_us_net_alone(recorded, tiny):
    data, cfg = tiny
    model = recorded[0].model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    curve = accuracy_at_widths(model, data, cfg, RECIPE, [1.0, 0.25, 0.5], calibration_images=100)
    assert [p.width for p in curve.points] == [0.25, 0.5, 1.0]
    for p in curve.points:
        member = build_model(width_member(ARCH, p.width))
        assert (p.params, p.flops) == (count_params(member), count_flops(member))
        assert 0.0 <= p.val_acc <= 1.0 and 0.0 <= p.test_acc <= 1.0
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert WidthCurve.from_json(curve.to_json()) == curve


def test_curve_widths_span_min_to_max():
    assert curve_widths(SlimmableConfig()) == [0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]
    assert curve_widths(SlimmableConfig(min_width=0.3, max_width=0.8)) == [0.3, 0.375, 0.5, 0.625, 0.75, 0.8]


def test_only_the_max_width_updates_the_running_statistics_in_training(tiny):
    data, _ = tiny
    slim = make_slimmable(build_model(ARCH)).train()
    bn = slim.prep.bn
    assert isinstance(bn, SlimmableBatchNorm2d)
    set_bn_updates(slim, False)  # a width that learns by distillation only
    set_width(slim, 0.5)(data.train_x[:16])
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    set_bn_updates(slim, True)
    set_width(slim, 0.5)(data.train_x[:16])
    channels = unit_channels(width_member(ARCH, 0.5))["prep"][0]
    assert bn.running_mean[:channels].abs().sum() > 0 and not bn.running_mean[channels:].any()


# ---- what is refused ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"samples": 1}, "samples must be at least 2"),
        ({"min_width": 0.0}, "min_width must be in (0, max_width=1)"),
        ({"min_width": 0.5, "max_width": 0.5}, "min_width must be in (0, max_width=0.5)"),
        ({"max_width": 1.5}, "max_width must be in (0, 1]"),
        ({"samples": 2.5}, "samples must be an integer"),
        ({"min_width": True}, "min_width must be a number"),
    ],
)
def test_invalid_slimmable_configs_name_the_key_and_the_rule(kwargs, needle):
    with pytest.raises(ConfigError, match=_escape(needle)):
        SlimmableConfig(**kwargs)


def test_a_recipe_reads_slimmable_from_a_mapping_and_names_bad_keys():
    recipe = Recipe.from_dict({"slimmable": {"min_width": 0.5, "samples": 3}})
    assert recipe.slimmable == SlimmableConfig(min_width=0.5, samples=3)
    assert Recipe(**recipe.to_dict()) == recipe  # how a trial's config carries it to the worker
    assert "slimmable" not in Recipe().to_dict()  # off: the stored recipes of older experiments still match
    with pytest.raises(ConfigError, match=r"recipe\.slimmable\.min: unknown key; allowed keys are max_width"):
        Recipe.from_dict({"slimmable": {"min": 0.5}})
    with pytest.raises(ConfigError, match=r"recipe\.slimmable: samples must be at least 2"):
        Recipe.from_dict({"slimmable": {"samples": 1}})
    with pytest.raises(ConfigError, match="slimmable must be a mapping"):
        Recipe(slimmable="yes")


@pytest.mark.parametrize(
    ("name", "key"),
    [("R:L1 F2:L2 w=0.125", "L2.fractal=2"), ("R:L1 C2:L2 w=0.125", "L2.clique=2"),
     ("R:L1 D:L3 w=0.125", "L3.deformable=True"), ("R:L1 E:L1 w=0.125", "exits.stages=('L1',)"),
     ("R:L1 sd=0.2 w=0.125", "drop.kind='stochastic_depth'")],
)
def test_unsupported_primitives_are_refused_naming_what_to_remove(name, key, tiny):
    with pytest.raises(ConfigError, match=_escape(f"has {key}; remove it or train without slimmable")):
        check_slimmable(parse_short_name(name))
    data, cfg = tiny
    with pytest.raises(ConfigError, match="slimmable training supports the backbone, extra layers, residual blocks"):
        train(parse_short_name(name), RECIPE, data, cfg)


def test_a_slimmable_experiment_refuses_a_space_value_it_cannot_slim(tmp_path):
    space = {"width": {"fixed": 0.125}, "L1.residual": {"choice": [0, 1]}}
    path = tmp_path / "slim.yaml"
    path.write_text(yaml.safe_dump({"recipe": {"slimmable": {"min_width": 0.5}}, "space": space}))
    spec = load_experiment(path)
    assert spec.recipe.slimmable == SlimmableConfig(min_width=0.5)
    assert spec.resolved()["recipe"]["slimmable"] == {"min_width": 0.5, "max_width": 1.0, "samples": 4}
    path.write_text(yaml.safe_dump({"recipe": {"slimmable": {"min_width": 0.5}},
                                    "space": {**space, "L2.fractal": {"choice": [0, 2]}}}))
    with pytest.raises(ConfigError, match=r"slim\.yaml: space\.L2\.fractal\.choice: 2 is not supported by slimmable"):
        load_experiment(path)
    path.write_text(yaml.safe_dump({"recipe": {"slimmable": {"samples": 1}}, "space": space}))
    with pytest.raises(ConfigError, match=r"slim\.yaml: recipe\.slimmable\.samples: samples must be at least 2"):
        load_experiment(path)
    path.write_text(yaml.safe_dump({"space": {**space, "L2.fractal": {"choice": [0, 2]}}}))
    assert "slimmable" not in load_experiment(path).resolved()["recipe"]  # without it, nothing changes


# ---- the store ----------------------------------------------------------------------------

POINTS = [
    {"width": 0.25, "params": 2_000, "flops": 700_000, "val_acc": 0.30, "test_acc": 0.31},
    {"width": 1.0, "params": 30_000, "flops": 9_900_000, "val_acc": 0.50, "test_acc": 0.52},
    {"width": 0.5, "params": 7_800, "flops": 2_600_000, "val_acc": None, "test_acc": 0.40},
]


def _trial(store: Store, arch: ArchConfig, experiment: str = "slim", *, recipe: dict | None = None,
           acc: float = 0.5, seed: int = 0) -> int:
    experiment_id = store.ensure_experiment(experiment)
    model = build_model(arch)
    store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), count_params(model), count_flops(model))
    trial_id = store.start_trial(experiment_id, arch.hash, seed, "train", epochs_planned=1,
                                 recipe_json=json.dumps({"recipe": recipe or {}}), device="cpu", code_version="test")
    store.record_epoch(trial_id, 0, train_loss=1.0, train_acc=acc, val_acc=acc, test_acc=acc,
                       epoch_seconds=1.0, cumulative_seconds=1.0)
    store.finish_trial(trial_id, "completed")
    return trial_id


def test_the_store_writes_and_reads_a_width_curve(tmp_path):
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    with Store.open(url) as store:
        trial_id = _trial(store, ARCH)
        store.save_width_curve(trial_id, POINTS)
        store.save_width_curve(trial_id, POINTS[:2])  # saved again: replaced, not added
        assert [p.width for p in store.width_curve(_trial(store, ARCH, seed=1))] == []
    with Store.open(url, read_only=True) as store:
        stored = store.width_curve(trial_id)
    assert [(p.width, p.params, p.flops, p.val_acc, p.test_acc) for p in stored] == [
        (0.25, 2_000, 700_000, 0.30, 0.31), (1.0, 30_000, 9_900_000, 0.50, 0.52)]


def test_the_migration_adds_width_curves_to_an_existing_store(tmp_path):
    url, tables = write_old_store(tmp_path, "0004")  # a store as nas wrote it before slimmable training
    assert "nas_width_curves" not in tables and "nas_exit_curves" in tables
    with Store.open(url) as store:  # opening upgrades it
        assert [t.id for t in store.trials()] == [7]
        store.save_width_curve(7, POINTS)
    with Store.open(url, read_only=True) as store:
        assert [(p.width, p.val_acc) for p in store.width_curve(7)] == [(0.25, 0.30), (0.5, None), (1.0, 0.50)]


# ---- nas train ----------------------------------------------------------------------------


def test_nas_train_slimmable_prints_and_records_the_accuracy_at_every_width(tmp_path):
    data_root = write_cifar(tmp_path / "data", n_train_per_class=20, n_test_per_class=5)
    db = tmp_path / "nas.db"
    result = runner.invoke(app, ["train", "--arch", "R:L1", "--width", "0.125", "--epochs", "1", "--batch-size", "50",
                                 "--val-size", "50", "--slimmable-min", "0.5", "--slimmable-samples", "3",
                                 "--db", str(db), "--data-root", str(data_root)])
    assert result.exit_code == 0, result.output
    assert "universally slimmable R:L1 w=0.125" in result.output and "R:L1 w=0.0625" in result.output
    with Store.open(str(db), read_only=True) as store:
        (trial,) = store.trials()
        curve = store.width_curve(trial.id)
        recipe = json.loads(trial.recipe_json)["recipe"]
    assert recipe["slimmable"] == {"min_width": 0.5, "max_width": 1.0, "samples": 3}
    assert [p.width for p in curve] == [0.5, 0.625, 0.75, 0.875, 1.0]
    assert [p.params for p in curve] == [count_params(build_model(width_member(parse_short_name("R:L1 w=0.125"), p.width)))
                                         for p in curve]


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--arch", "R:L1 F2:L2", "--slimmable-min", "0.5"], "has L2.fractal=2; remove it"),
     (["--arch", "R:L1", "--slimmable-samples", "1"], "samples must be at least 2")],
)
def test_nas_train_refuses_bad_slimmable_settings_before_loading_data(args, needle, tmp_path):
    result = runner.invoke(app, ["train", *args, "--db", str(tmp_path / "nas.db"), "--data-root", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert needle in " ".join(result.output.split())
    assert not (tmp_path / "nas.db").exists()


# ---- the dashboard ------------------------------------------------------------------------


def test_architecture_page_draws_the_us_net_curve_beside_separately_trained_widths(tmp_path, monkeypatch):
    from tests.helpers import trace

    url = f"sqlite:///{tmp_path / 'slim.db'}"
    arch = parse_short_name("R:L1+L3 w=0.25")
    slim = {"slimmable": {"min_width": 0.25, "max_width": 1.0, "samples": 4}}
    with Store.open(url) as store:
        us_net = _trial(store, arch, recipe=slim, acc=0.55)
        store.save_width_curve(us_net, [
            {"width": 0.25, "params": 30_000, "flops": 3e6, "val_acc": 0.40, "test_acc": 0.41},
            {"width": 0.5, "params": 110_000, "flops": 12e6, "val_acc": 0.48, "test_acc": 0.49},
            {"width": 1.0, "params": 410_000, "flops": 48e6, "val_acc": 0.55, "test_acc": 0.56},
        ])
        _trial(store, arch.replace(width=0.0625), acc=0.38)  # the same net, narrower, trained alone
        _trial(store, arch.replace(width=0.125), acc=0.47)
        _trial(store, arch.replace(width=0.125), recipe=slim, acc=0.46, seed=1)  # a US-Net: not "separate"
        _trial(store, parse_short_name("R:L1 w=0.125"), acc=0.45)  # another architecture
        _trial(store, arch.replace(width=0.0625), "elsewhere", acc=0.36)  # another experiment
    monkeypatch.setenv("NAS_DB", url)
    at = _open_page({}, exp="slim", arch=arch.hash)
    assert "Slimmable widths" in [s.value for s in at.subheader]
    line = trace(at, "US-Net: one training, every width")
    assert line["x"] == pytest.approx([3.0, 12.0, 48.0]) and line["y"] == pytest.approx([40.0, 48.0, 55.0])
    assert [row[2] for row in line["customdata"]] == ["R:L1+L3 w=0.0625", "R:L1+L3 w=0.125", "R:L1+L3 w=0.25"]
    separate = trace(at, "each width trained separately")
    member_flops = [count_flops(build_model(arch.replace(width=w))) / 1e6 for w in (0.0625, 0.125)]
    assert separate["x"] == pytest.approx(member_flops) and separate["y"] == pytest.approx([38.0, 47.0])
    (table,) = [d.value for d in at.dataframe if "member" in d.value.columns]
    assert table["member"].tolist() == ["R:L1+L3 w=0.0625", "R:L1+L3 w=0.125", "R:L1+L3 w=0.25"]
    every = _open_page({"arch_width_every": True}, exp="slim", arch=arch.hash)  # the toggle on
    assert trace(every, "each width trained separately")["y"] == pytest.approx([38.0, 36.0, 47.0])


def test_architecture_page_without_a_width_curve_has_no_slimmable_section(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    with Store.open(url) as store:
        _trial(store, ARCH)
    monkeypatch.setenv("NAS_DB", url)
    at = _open_page({}, exp="slim", arch=ARCH.hash)
    assert "Slimmable widths" not in [s.value for s in at.subheader]


# ---- a search -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_slimmable_search_stores_each_trials_width_curve(tmp_path):
    import ray
    from tests.helpers import experiment_yaml

    data_root = write_cifar(tmp_path / "cifar", n_train_per_class=40, n_test_per_class=10)
    space = experiment_yaml(
        tmp_path / "slim.yaml", name="slim", recipe={"epochs": 2, "slimmable": {"min_width": 0.5, "samples": 3}},
        space={"width": {"fixed": 0.125}, "L1.residual": {"choice": [0, 1]}},
    )
    db = tmp_path / "nas.db"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        result = runner.invoke(app, ["launch", str(space), "--db", str(db), "--data-root", str(data_root)])
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    with Store.open(str(db), read_only=True) as store:
        trials = store.trials(phase="search")
        assert len(trials) == 2 and all(t.status == "completed" for t in trials)
        for trial in trials:
            arch = ArchConfig.from_json(store.get_architecture(trial.arch_hash).config_json)
            curve = store.width_curve(trial.id)
            assert [p.width for p in curve] == [0.5, 0.625, 0.75, 0.875, 1.0]
            assert [p.flops for p in curve] == [count_flops(build_model(width_member(arch, p.width))) for p in curve]
            assert json.loads(trial.recipe_json)["recipe"]["slimmable"]["samples"] == 3


def _open_page(state: dict, **query: str):
    """The architecture page after a run, with widget values preset in Session State (the
    page's arch selectbox formats its options, which AppTest cannot send back on a rerun)."""
    from streamlit.testing.v1 import AppTest

    from nas.dashboard import ui
    from tests.helpers import APP, TIMEOUT_S

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    for key, value in state.items():
        at.session_state[key] = value
    at.query_params.update(query)
    at.run()
    at.query_params.update(query)
    at.switch_page(ui.PAGES["architecture"]).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _escape(text: str) -> str:
    import re

    return re.escape(text)
