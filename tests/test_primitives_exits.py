"""Early exits (BranchyNet, Teerapittayanon et al. 2016): config, model, loss, early-exit
inference against the threshold sweep, costs, store, objective, export and the YAML space."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
import yaml

from nas.data.config import DataConfig
from nas.data.tensors import load_data, train_batches
from nas.db import Store
from nas.errors import ConfigError
from nas.models import ArchConfig, ExitConfig, build_model, count_flops, parse_short_name
from nas.models.builder import FastResNet
from nas.models.cost import count_call_flops
from nas.models.exits import (
    SWEEP_THRESHOLDS,
    ExitCurve,
    early_exit_forward,
    exit_flops,
    exit_loss,
    exits_taken,
    normalized_entropy,
    threshold_sweep,
)
from nas.config.experiment import METRICS, list_budgets, load_experiment
from nas.config.space import ARCH_KEYS, SearchSpace
from nas.training.evaluate import exit_curve
from nas.training.loop import train
from nas.training.recipe import Recipe
from tests.cifar_fixture import write_cifar
from tests.old_store import write_old_store

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
R13 = {"width": 0.125, "L1": {"residual": 1}, "L3": {"residual": 1}}
EXITS = "R:L1+L3 E:L1+L2 w=0.125"
PLAIN = "R:L1+L3 w=0.125"


def confident(arch: ArchConfig, seed: int = 0) -> FastResNet:
    """A net whose heads are scaled to logits of std 2, so every exit's softmax entropies
    spread over (0, 1) as a trained net's do (at init every exit is near uniform)."""
    model = build_model(arch, seed=seed).eval()
    heads = [*(exit_head.head for exit_head in model.exits.values()), model.head]
    with torch.no_grad():
        for head, logits in zip(heads, model.forward_exits(images(64, seed=99))):
            head.weight.mul_(2.0 / logits.std())
    return model


def images(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ---- config ---------------------------------------------------------------------------


def test_exits_at_their_default_keep_every_stored_hash():
    for data in ({**R13, "width": 0.25}, {**R13, "width": 0.25, "exits": {}},
                 {**R13, "width": 0.25, "exits": {"stages": [], "weights": 0.3, "threshold": 0.7}}):
        arch = ArchConfig.from_dict(data)
        assert arch.hash == "afd4b65a62cb"  # tests/test_models.py's pinned Residual:L1+L3 w=0.25
        assert "exits" not in arch.to_json()


def test_canonical_exits_sort_the_stages_and_give_every_side_exit_a_weight():
    written = ArchConfig.from_dict({**R13, "exits": {"stages": ["L2", "L1"], "weights": [0.3, 0.5]}})
    assert written.exits == ExitConfig(stages=("L1", "L2"), weights=(0.5, 0.3))
    assert written.to_json() == (
        '{"L1":{"residual":1},"L3":{"residual":1},"exits":{"stages":["L1","L2"],"weights":[0.5,0.3]},"width":0.125}'
    )
    assert ArchConfig.from_json(written.to_json()) == written
    # one number weighs every side exit; no weight means 1.0 each; strings as the spaces write them
    assert ExitConfig(stages="L1+L2", weights=0.3).weights == (0.3, 0.3)
    assert ExitConfig(stages=["L1"]).weights == (1.0,)
    assert ExitConfig(stages="L1+L2", weights="0.5+0.3") == ExitConfig(stages=("L1", "L2"), weights=(0.5, 0.3))


@pytest.mark.parametrize(
    ("exits", "needle"),
    [
        ({"stages": ["L3"]}, "arch.exits: stages: unknown stage 'L3'"),
        ({"stages": "L1+L4"}, "unknown stage 'L4'; a side exit may follow L1, L2"),
        ({"stages": ["L1", "L1"]}, "stages lists L1 twice"),
        ({"stages": [1]}, "stages must be a list of stage names"),
        ({"stages": ["L1"], "weights": [0.5, 0.3]}, "weights has 2 values for 1 side exits"),
        ({"stages": ["L1", "L2"], "weights": [-0.5, 1.0]}, "weights must be non-negative"),
        ({"stages": ["L1"], "weights": [math.nan]}, "weights must be finite numbers"),
        ({"stages": ["L1"], "weights": "a+b"}, "weights must be numbers such as [0.5, 0.3]"),
        ({"stages": ["L1"], "threshold": 1.5}, "threshold must be in [0, 1]"),
        ({"stages": ["L1"], "threshold": True}, "threshold must be a number"),
        ({"stage": ["L1"]}, "arch.exits.stage: unknown key; allowed keys are stages, threshold, weights"),
    ],
)
def test_invalid_exit_configs_name_the_key_the_value_and_the_rule(exits, needle):
    with pytest.raises(ConfigError) as err:
        ArchConfig.from_dict({**R13, "exits": exits})
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        ({"exits": {"stages": ["L1"]}}, "E:L1 w=0.125"),
        ({**R13, "exits": {"stages": ["L1", "L2"], "weights": 0.3}}, "R:L1+L3 E:L1+L2 ew=0.3 w=0.125"),
        ({**R13, "exits": {"stages": ["L1", "L2"], "weights": [0.5, 0.3]}}, "R:L1+L3 E:L1+L2 ew=0.5+0.3 w=0.125"),
        ({**R13, "exits": {"stages": ["L2"], "threshold": 0.4}}, "R:L1+L3 E:L2 et=0.4 w=0.125"),
    ],
)
def test_short_names_of_exits_read_and_parse_back(data, name):
    arch = ArchConfig.from_dict({"width": 0.125, **data})
    assert arch.short_name() == name
    assert parse_short_name(name) == arch


@pytest.mark.parametrize(("text", "needle"), [("R:L1 ew=0.3", "need E:L1"), ("E:L3", "unknown stage 'L3'")])
def test_unreadable_exit_short_names_are_config_errors(text, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        parse_short_name(text)


# ---- search spaces --------------------------------------------------------------------


def test_a_choice_over_lists_of_stages_samples_every_placement():
    space = SearchSpace.from_dict({
        "exits.stages": {"choice": [[], ["L1"], ["L1", "L2"]]},
        "exits.weights": {"choice": [0.3, 1.0], "when": {"exits.stages": [["L1"], ["L1", "L2"]]}},
    })
    assert {"exits.stages", "exits.weights", "exits.threshold"} <= set(ARCH_KEYS)
    assert space.params[0].choices == ("", "L1", "L1+L2")  # Optuna's choices must be scalars
    archs = {point["exits.stages"]: space.arch_from_params(point) for point in space.grid()}
    assert {a.exits.stages for a in archs.values()} == {(), ("L1",), ("L1", "L2")}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sampled = {space.suggest(study.ask()).exits.stages for _ in range(30)}
    assert sampled == {(), ("L1",), ("L1", "L2")}


def test_the_early_exits_space_has_a_cpu_budget_and_the_inference_flops_objective():
    path = SPACES / "early_exits.yaml"
    assert "cpu" in list_budgets(path)
    spec = load_experiment(path, "cpu")
    assert spec.space.params[0].key == "width" and spec.space.params[0].value == 0.25
    assert [o.metric for o in spec.search.objectives] == ["val_acc", "mean_inference_flops"]
    assert "mean_inference_flops" in METRICS
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    archs = [spec.space.suggest(study.ask()) for _ in range(20)]
    assert all(a.L1.residual >= 1 and a.L3.residual >= 1 for a in archs)
    assert {a.exits.stages for a in archs} == {(), ("L1",), ("L2",), ("L1", "L2")}


# ---- the model ------------------------------------------------------------------------


def test_side_exits_leave_the_backbone_weights_and_the_final_logits_of_the_plain_net():
    exits = build_model(parse_short_name(EXITS), seed=3).eval()
    plain = build_model(parse_short_name(PLAIN), seed=3).eval()
    ours = {k: v for k, v in exits.state_dict().items() if not k.startswith("exits.")}
    assert ours.keys() == plain.state_dict().keys()
    assert all(torch.equal(ours[k], v) for k, v in plain.state_dict().items())
    assert sorted({k.split(".")[1] for k in exits.state_dict() if k.startswith("exits.")}) == ["L1", "L2"]
    x = images(8)
    with torch.no_grad():
        every = exits.forward_exits(x)
        assert len(every) == 3 and all(logits.shape == (8, 10) for logits in every)
        assert torch.equal(exits(x), every[-1])  # model(x) stays the final exit: evaluate() and export unchanged
        assert torch.allclose(exits(x), plain(x), atol=1e-6)


def test_thresholds_of_zero_send_every_sample_to_the_final_exit_with_the_plain_nets_output():
    model = confident(parse_short_name(EXITS), seed=1)
    plain = build_model(parse_short_name(PLAIN), seed=1).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("exits.")})
    x = images()
    logits, taken = early_exit_forward(model, x, 0.0)
    assert taken.tolist() == [2] * len(x)
    with torch.no_grad():
        assert torch.allclose(logits, plain(x), atol=1e-5)


def test_infinite_thresholds_send_every_sample_to_the_first_exit():
    model = confident(parse_short_name(EXITS))
    x = images()
    logits, taken = early_exit_forward(model, x, math.inf)
    assert taken.tolist() == [0] * len(x)
    with torch.no_grad():
        assert torch.allclose(logits, model.forward_exits(x)[0], atol=1e-5)


def test_samples_that_left_are_not_run_further():
    model = confident(parse_short_name(EXITS))
    seen = {"l2": [], "l3": []}
    for name in seen:
        getattr(model, name).register_forward_hook(lambda m, args, out, name=name: seen[name].append(len(args[0])))
    x = images()
    with torch.no_grad():
        side = normalized_entropy(model.forward_exits(x)[0])
    seen = {"l2": [], "l3": []}  # forget the full pass above
    _, taken = early_exit_forward(model, x, side.median().item())
    left_at_l1 = int((taken == 0).sum())
    assert 0 < left_at_l1 < len(x)
    assert seen["l2"] == [len(x) - left_at_l1]
    seen = {"l2": [], "l3": []}
    early_exit_forward(model, x, math.inf)
    assert seen == {"l2": [], "l3": []}  # everyone left at L1: L2 and L3 never ran


@pytest.mark.parametrize("per_exit", [False, True])
def test_the_real_early_exit_path_agrees_with_the_sweep_from_one_pass(per_exit):
    model = confident(parse_short_name(EXITS))
    x, y = images(96), torch.randint(0, 10, (96,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        every = model.forward_exits(x)
    entropies = [normalized_entropy(logits) for logits in every[:-1]]
    if per_exit:
        thresholds = [e.median().item() for e in entropies]
    else:  # the shared threshold that spreads the images most evenly over the three exits
        thresholds = max(torch.cat(entropies).tolist(),
                         key=lambda t: min(torch.bincount(exits_taken(every, t), minlength=3).tolist()))
    logits, taken = early_exit_forward(model, x, thresholds)
    assert len(set(taken.tolist())) == 3  # the thresholds split the images over all three exits
    assert torch.equal(taken, exits_taken(every, thresholds))
    chosen = torch.stack(every)[taken, torch.arange(len(x))]
    assert torch.allclose(logits, chosen, atol=1e-5)
    if not per_exit:  # the sweep shares one threshold over the side exits
        flops = exit_flops(model)
        (point,) = threshold_sweep(every, y, flops, [thresholds])
        assert point.accuracy == pytest.approx((logits.argmax(1) == y).double().mean().item())
        assert point.mean_flops == pytest.approx(sum(flops[k] for k in taken.tolist()) / len(x))
        assert point.exit_shares == pytest.approx([(taken == k).double().mean().item() for k in range(3)])


def test_the_curve_at_extreme_thresholds_is_the_final_and_the_first_exits_accuracy():
    model = confident(parse_short_name(EXITS))
    x, y = images(96), torch.randint(0, 10, (96,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        every = model.forward_exits(x)
    points = threshold_sweep(every, y, exit_flops(model), SWEEP_THRESHOLDS)
    accuracy = [(logits.argmax(1) == y).double().mean().item() for logits in every]
    assert points[0].threshold == 0.0 and points[-1].threshold == math.inf
    assert points[0].accuracy == pytest.approx(accuracy[-1]) and points[0].exit_shares == (0.0, 0.0, 1.0)
    assert points[-1].accuracy == pytest.approx(accuracy[0]) and points[-1].exit_shares == (1.0, 0.0, 0.0)
    assert points[0].mean_flops == exit_flops(model)[-1] and points[-1].mean_flops == exit_flops(model)[0]


def test_exit_flops_count_the_backbone_to_each_exit_plus_the_side_heads_passed():
    model = build_model(parse_short_name(EXITS))
    flops = exit_flops(model)
    heads = []
    for name, side in (("L1", 16), ("L2", 8)):  # each stage halves the 32x32 input
        channels = model.exits[name].conv.conv.in_channels
        heads.append(count_call_flops(model.exits[name], torch.zeros(1, channels, side, side))[1])
    assert flops[-1] == count_flops(model) + sum(heads)  # the final exit pays for every side head
    assert flops[0] < flops[1] < flops[2]
    assert exit_flops(build_model(parse_short_name(PLAIN))) == [count_flops(build_model(parse_short_name(PLAIN)))]


# ---- training -------------------------------------------------------------------------


def test_exit_loss_is_the_weighted_sum_of_every_exits_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    logits = [torch.randn(8, 10, generator=generator) for _ in range(3)]
    y = torch.randint(0, 10, (8,), generator=generator)
    manual = sum(w * F.cross_entropy(l, y, label_smoothing=0.2) for w, l in zip((0.5, 0.3, 1.0), logits))
    assert exit_loss(logits, y, (0.5, 0.3), label_smoothing=0.2).item() == pytest.approx(manual.item(), rel=1e-6)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = write_cifar(tmp_path_factory.mktemp("cifar"), n_train_per_class=10, n_test_per_class=5)
    cfg = DataConfig(root=str(root), val_size=20)
    return cfg, load_data(cfg)


def test_the_training_loss_of_an_exit_net_is_the_weighted_sum_of_its_exits_losses(tiny_data):
    cfg, data = tiny_data
    arch = parse_short_name("R:L1 E:L1+L2 ew=0.5+0.3 w=0.125")
    recipe = Recipe(epochs=1, batch_size=len(data.train_y))  # one step: the loss of the initial weights
    result = train(arch, recipe, data, cfg, seed=4)
    model = build_model(arch, seed=4).to(memory_format=torch.channels_last).train()
    x, y = next(iter(train_batches(data, recipe.batch_size, cfg, torch.Generator().manual_seed(4))))
    every = model.forward_exits(x.contiguous(memory_format=torch.channels_last))
    ce = [F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing).item() for logits in every]
    assert result.final.train_loss == pytest.approx(0.5 * ce[0] + 0.3 * ce[1] + ce[2], rel=1e-5)


def test_a_net_without_exits_trains_on_the_plain_path(tiny_data, monkeypatch):
    cfg, data = tiny_data

    def refuse(self, x):
        raise AssertionError("forward_exits called for a net without exits")

    monkeypatch.setattr(FastResNet, "forward_exits", refuse)
    result = train(parse_short_name(PLAIN), Recipe(epochs=1, batch_size=50), data, cfg)
    assert result.status == "completed"


def test_the_exit_curve_of_a_trained_net_holds_the_operating_threshold_and_both_ends(tiny_data):
    cfg, data = tiny_data
    arch = parse_short_name("R:L1 E:L1+L2 et=0.37 w=0.125")
    result = train(arch, Recipe(epochs=1, batch_size=50), data, cfg)
    curve = exit_curve(result.model, arch, data, batch_size=64)
    thresholds = [p.threshold for p in curve.points]
    assert curve.split == "val" and thresholds == sorted(thresholds)
    assert {0.0, 0.37, math.inf} <= set(thresholds) and set(SWEEP_THRESHOLDS) <= set(thresholds)
    assert curve.at(0.0).accuracy == pytest.approx(result.final.val_acc)  # all to the final exit
    assert ExitCurve.from_json(curve.to_json()) == curve


# ---- store, objective -----------------------------------------------------------------


def test_the_migration_adds_exit_curves_to_an_existing_store(tmp_path):
    url, tables = write_old_store(tmp_path, "0003")  # a store as nas wrote it before early exits
    assert "nas_exit_curves" not in tables
    points = [{"threshold": 0.0, "accuracy": 0.5, "mean_flops": 3e6, "exit_shares": [0.0, 1.0]},
              {"threshold": math.inf, "accuracy": 0.25, "mean_flops": 1e6, "exit_shares": [1.0, 0.0]}]
    with Store.open(url) as store:  # opening upgrades it
        assert [t.id for t in store.trials()] == [7]
        store.save_exit_curve(7, "val", points)
    with Store.open(url, read_only=True) as store:
        stored = store.exit_curve(7)
    assert [(p.threshold, p.accuracy, json.loads(p.exit_shares)) for p in stored] == [
        (0.0, 0.5, [0.0, 1.0]), (math.inf, 0.25, [1.0, 0.0])]


def test_mean_inference_flops_is_an_objective_of_the_search(tmp_path):
    from nas.db.schema import Phase
    from nas.search.controller import SearchController
    from nas.trials.costs import CostCounter
    from nas.trials.experiment import open_experiment
    from nas.trials.plan import TrialPlan

    space = tmp_path / "exits.yaml"
    space.write_text(json.dumps({
        "name": "exits", "space": {"width": {"fixed": 0.125}, "exits.stages": {"choice": [[], ["L1"]]}},
        "search": {"objectives": [{"metric": "val_acc", "direction": "maximize"},
                                  {"metric": "mean_inference_flops", "direction": "minimize"}]},
    }))
    spec = load_experiment(space)
    with Store.open(f"sqlite:///{tmp_path / 'nas.db'}") as store:
        costs = CostCounter()
        controller = SearchController(spec, store, open_experiment(store, spec), f"sqlite:///{tmp_path / 'nas.db'}",
                                      costs)
        with_exit = TrialPlan(arch=parse_short_name("E:L1 w=0.125"), seed=0, phase=Phase.SEARCH,
                              last={"val_acc": 0.4, "mean_inference_flops": 1.5e6})
        plain = TrialPlan(arch=parse_short_name("base w=0.125"), seed=0, phase=Phase.SEARCH, last={"val_acc": 0.5})
        assert controller.objective_values(with_exit) == [0.4, 1.5e6]
        assert controller.objective_values(plain) == [0.5, float(costs(plain.arch)[1])]  # runs in full


def test_results_rank_on_the_stored_curves_mean_flops_at_the_exit_threshold(tmp_path):
    from nas.results import arch_results

    config = {"search": {"objectives": [{"metric": "val_acc", "direction": "maximize"},
                                        {"metric": "mean_inference_flops", "direction": "minimize"}]}}
    exit_arch, plain = parse_short_name("E:L1 et=0.4 w=0.125"), parse_short_name("base w=0.125")
    with Store.open(f"sqlite:///{tmp_path / 'nas.db'}") as store:
        experiment_id = store.ensure_experiment("exits", config_json=json.dumps(config))
        for arch, flops, acc in ((exit_arch, 9e6, 0.5), (plain, 7e6, 0.5)):
            store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), 1, int(flops))
            for seed, mean_flops in enumerate((4e6, 6e6)):
                trial_id = store.start_trial(experiment_id, arch.hash, seed, "search", epochs_planned=1,
                                             recipe_json="{}", device="cpu", code_version="test")
                store.record_epoch(trial_id, 0, train_loss=1.0, train_acc=acc, val_acc=acc, test_acc=None,
                                   epoch_seconds=1.0, cumulative_seconds=1.0)
                store.finish_trial(trial_id, "completed")
                if arch is exit_arch:
                    store.save_exit_curve(trial_id, "val", [
                        {"threshold": 0.0, "accuracy": acc, "mean_flops": flops, "exit_shares": [0.0, 1.0]},
                        {"threshold": 0.4, "accuracy": acc, "mean_flops": mean_flops, "exit_shares": [0.5, 0.5]}])
        rows = {row.arch_hash: row for row in arch_results(store, "exits", "search")}
    assert rows[exit_arch.hash].mean_inference_flops == pytest.approx(5e6)  # mean over seeds, at et=0.4
    assert rows[plain.hash].mean_inference_flops == 7e6  # no exits: every image runs the whole net
    assert rows[exit_arch.hash].rank == 0 and rows[plain.hash].rank == 1  # same accuracy, cheaper


# ---- export ---------------------------------------------------------------------------


def test_the_exported_model_has_the_exit_heads_and_leaves_early_as_nas_does(tmp_path):
    from nas.export.write import ExportSource, export

    arch = parse_short_name("R:L1+L3 E:L1+L2 ew=0.3 et=0.6 w=0.125")
    model = confident(arch, seed=5)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    source = ExportSource(experiment="exits", arch=arch, weights=weights, weights_trial=None,
                          config={}, code_version="test", metrics={})
    written = export(source, tmp_path / "out", ("py", "pt", "yaml"))
    spec = importlib.util.spec_from_file_location("exported_exits", written["py"])
    module = importlib.util.module_from_spec(spec)
    sys.modules["exported_exits"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["exported_exits"]
    net = module.load(written["pt"])
    assert module.EXIT_THRESHOLD == 0.6
    x = images(48)
    with torch.no_grad():
        every = model.forward_exits(x)
    threshold = normalized_entropy(every[0]).median().item()
    for t in (0.0, threshold, math.inf, None):
        ours = net.forward_early_exit(x) if t is None else net.forward_early_exit(x, t)
        theirs = early_exit_forward(model, x, 0.6 if t is None else t)
        assert torch.equal(ours[1], theirs[1])
        assert torch.allclose(ours[0], theirs[0], atol=1e-5)
    assert ArchConfig.from_dict(yaml.safe_load(written["yaml"].read_text())["arch"]) == arch


# ---- a search ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_search_optimises_accuracy_and_mean_inference_flops_and_stores_each_curve(tmp_path):
    import ray
    from typer.testing import CliRunner

    from nas.cli import app
    from tests.helpers import experiment_yaml

    data_root = write_cifar(tmp_path / "cifar", n_train_per_class=40, n_test_per_class=10)
    space = experiment_yaml(
        tmp_path / "exits.yaml", name="exits",
        space={"width": {"fixed": 0.125}, "L1.residual": {"fixed": 1}, "exits.stages": {"choice": [[], ["L1", "L2"]]}},
        search={"objectives": [{"metric": "val_acc", "direction": "maximize"},
                               {"metric": "mean_inference_flops", "direction": "minimize"}]},
        recipe={"epochs": 2},
    )
    db = tmp_path / "nas.db"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        result = CliRunner().invoke(app, ["launch", str(space), "--db", str(db), "--data-root", str(data_root)])
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    assert "inference MFLOPs" in result.output  # the final table shows the objective
    study = optuna.load_study(study_name="exits", storage=f"sqlite:///{db}")
    values = {t.user_attrs["arch_hash"]: t.values for t in study.trials}
    with Store.open(str(db), read_only=True) as store:
        trials = {t.arch_hash: t for t in store.trials(phase="search")}
        assert len(trials) == 2 and all(t.status == "completed" for t in trials.values())
        for arch_hash, trial in trials.items():
            arch = ArchConfig.from_json(store.get_architecture(arch_hash).config_json)
            curve = store.exit_curve(trial.id)
            if not arch.exits.stages:
                assert curve == [] and values[arch_hash][1] == store.get_architecture(arch_hash).flops
                continue
            at = [p for p in curve if p.threshold == arch.exits.threshold]
            assert values[arch_hash][1] == pytest.approx(at[0].mean_flops)
            assert curve[0].threshold == 0.0 and curve[0].accuracy == pytest.approx(trial.final_val_acc)
            assert json.loads(curve[-1].exit_shares) == [1.0, 0.0, 0.0]
