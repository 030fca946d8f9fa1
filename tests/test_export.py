"""`nas export`: standalone model.py, weights, ONNX and config.yaml of a confirmed architecture.

The store is written directly (no Ray): an experiment as `nas launch` records it, and two
confirm seeds of a network trained for real on tiny data, the best one's weights kept.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nas.cli import app
from nas.data.config import DataConfig
from nas.data.tensors import load_data
from nas.db import Store
from nas.errors import ConfigError
from nas.config.experiment import load_experiment
from nas.export import standalone, write
from nas.export.write import ExportSource, check_against_nas, export, load_module, render_model
from nas.models import ArchConfig, build_model, count_flops, count_params, parse_short_name, unit_channels
from nas.training.loop import train
from nas.training.recipe import Recipe
from tests.cifar_fixture import write_cifar

runner = CliRunner()
# torch.onnx's exporter needs onnx and onnxscript; without them the export leaves ONNX out.
HAS_ONNX = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxscript"))
WINNER = "R:L1+L3 w=0.125"
EXPERIMENT = "exported"
# One architecture per kind of block and drop, each kind somewhere: extra layers, residual
# blocks (PadChannels shortcuts under the pyramid schedule, depth dropout's 1x1 shortcuts),
# fractal and clique blocks, deformable convs (v1, v2 mask), early exits.
EVERY_KIND = [
    "base w=0.125",
    "R:L1x2+L3 X:L2 pyr w=0.125",
    "R:L1+L3 dd=0.5 pyr w=0.125",
    "R:L2 F3:L2 D:L2 w=0.125",
    "R:L1 Dm:L1+L3 sd=0.2 w=0.125",
    "F2:L1+L3 dp=0.1 dpg=0.5 pyr w=0.125",
    "R:L1+L2 wd=0.1 w=0.125",
    "R:L1+L3 C3:L2 w=0.125",
    "R:L2 F2:L2 C4:L2 Dm:L2 pyr w=0.125",
    "R:L1+L3 E:L1+L2 ew=0.3 et=0.6 w=0.125",
    # the training tricks that change the network (nas.models.tricks)
    "R:L1+L3 w=0.125 t.activation=celu t.pool_before_bn=true t.freeze_bn_scale=true t.whiten=true t.tta=flip",
    "R:L2 E:L1 w=0.125 t.activation=gelu t.ghost_batch=16 t.tta=flip_translate",
]
EVERY_TRICK = ("t.activation=celu t.celu_alpha=0.3 t.pool_before_bn=true t.ghost_batch=10 t.freeze_bn_scale=true "
               "t.whiten=true t.ema_decay=0.9 t.lookahead=0.8 t.bias_lr=8 t.alternating_flip=true t.tta=flip_translate")
HOSTILE = 'x"""; import os; os.system("echo pwned") #'


def _experiment_yaml(path: Path, name: str) -> Path:
    """A tiny experiment: 2x2 residual placements, width 0.125, 3 epochs, one confirm race of 2 seeds."""
    import yaml

    spec = {
        "name": name,
        "dataset": {"val_size": 100},
        "recipe": {"epochs": 3, "batch_size": 50, "eval_batch_size": 256},
        "space": {"width": {"fixed": 0.125}, "L1.residual": {"choice": [0, 1]}, "L3.residual": {"choice": [0, 1]}},
        "search": {"sampler": "grid", "pruner": {"kind": "none"}},
        "confirm": {"top_k": 1, "repeats": 2},
        "resources": {"cpus_per_trial": 1, "max_concurrent": 2},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def _record(store: Store, experiment_id: int, arch: ArchConfig, seed: int, phase: str, result) -> int:
    trial_id = store.start_trial(experiment_id, arch.hash, seed, phase, epochs_planned=len(result.epochs),
                                 recipe_json="{}", device=result.device, code_version="test")
    for m in result.epochs:
        store.record_epoch(trial_id, m.epoch, train_loss=m.train_loss, train_acc=m.train_acc, val_acc=m.val_acc,
                           test_acc=m.test_acc, epoch_seconds=m.epoch_seconds,
                           cumulative_seconds=m.cumulative_seconds)
    store.finish_trial(trial_id, "completed")
    return trial_id


def _upsert(store: Store, arch: ArchConfig) -> None:
    model = build_model(arch)
    store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), count_params(model), count_flops(model))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_cifar(tmp_path_factory.mktemp("cifar"), n_train_per_class=40, n_test_per_class=10)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """A store holding experiment EXPERIMENT with WINNER confirmed on two seeds (best kept),
    plus an architecture that only ran in the search; returns the paths and the trained net."""
    folder = tmp_path_factory.mktemp("export")
    spec = load_experiment(_experiment_yaml(folder / "exp.yaml", EXPERIMENT))
    db = folder / "nas.db"
    arch = parse_short_name(WINNER)
    data_cfg = DataConfig(root=str(data_root), val_size=100)
    data = load_data(data_cfg)
    recipe = Recipe(epochs=2, batch_size=50)
    results = {seed: train(arch, recipe, data, data_cfg, seed=seed) for seed in (10_000, 10_001)}
    best_seed = max(results, key=lambda s: (results[s].final.val_acc, -s))
    unconfirmed = parse_short_name("R:L1 w=0.125")
    with Store.open(str(db)) as store:
        exp_id = store.ensure_experiment(EXPERIMENT, config_json=json.dumps(spec.resolved(), sort_keys=True),
                                         space_yaml=spec.source_text, code_version="0.1.0+gtest")
        _upsert(store, arch)
        _upsert(store, unconfirmed)
        for seed, result in results.items():
            trial_id = _record(store, exp_id, arch, seed, "confirm", result)
            if seed == best_seed:
                buffer = io.BytesIO()
                torch.save({k: v.detach().cpu() for k, v in result.model.state_dict().items()}, buffer)
                store.save_weights(trial_id, buffer.getvalue())
        _record(store, exp_id, unconfirmed, 0, "search", train(unconfirmed, Recipe(epochs=1, batch_size=50), data,
                                                                  data_cfg, seed=0))
    model = results[best_seed].model.cpu().eval()
    return {"db": db, "arch": arch, "model": model, "unconfirmed": unconfirmed, "folder": folder,
            "best_seed": best_seed}


@pytest.fixture(scope="module")
def exported(trained):
    """`nas export EXPERIMENT --rank 1 --out DIR` with every format (ONNX when it can be made)."""
    out = trained["folder"] / "winner"
    formats = "py,pt,onnx,yaml" if HAS_ONNX else "py,pt,yaml"
    result = runner.invoke(app, ["export", EXPERIMENT, "--rank", "1", "--out", str(out), "--db", str(trained["db"]),
                                 "--format", formats])
    assert result.exit_code == 0, result.output
    return out


def _images(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_export_writes_the_four_files_inside_out(exported):
    expected = ["config.yaml", "model.onnx", "model.py", "weights.pt"] if HAS_ONNX else \
        ["config.yaml", "model.py", "weights.pt"]
    assert sorted(p.name for p in exported.iterdir()) == expected


def test_model_py_imports_only_torch_and_the_stdlib(exported):
    tree = ast.parse((exported / "model.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"torch"}, imported


def test_model_py_in_a_fresh_interpreter_without_nas_reproduces_the_trained_logits(trained, exported, tmp_path):
    x = _images()
    torch.save(x, tmp_path / "x.pt")
    site_packages = Path(torch.__file__).resolve().parent.parent
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        # -S: no site processing, so the editable install of nas is not on the path; torch
        # is found by adding its folder alone.
        sys.path.append({str(site_packages)!r})
        sys.path.insert(0, {str(exported)!r})
        try:
            import nas
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("nas is importable here: " + str(nas.__file__))
        import torch
        import model
        net = model.load()
        with torch.no_grad():
            torch.save(net(torch.load({str(tmp_path / "x.pt")!r}, weights_only=True)), {str(tmp_path / "y.pt")!r})
        print("loaded", model.__file__)
    """))
    done = subprocess.run([sys.executable, "-I", "-S", str(script)], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": os.environ.get("PATH", "")}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(exported / "model.py") in done.stdout
    with torch.no_grad():
        expected = trained["model"](x)
    got = torch.load(tmp_path / "y.pt", weights_only=True)
    assert (got - expected).abs().max().item() <= 1e-5


def test_weights_pt_is_a_state_dict_of_nas_network_loaded_with_weights_only(trained, exported):
    state = torch.load(exported / "weights.pt", weights_only=True)
    net = build_model(trained["arch"])
    net.load_state_dict(state)  # strict: every key and shape
    reference = trained["model"].state_dict()
    assert all(torch.equal(state[k], reference[k].cpu()) for k in reference)


def test_the_onnx_model_gives_the_same_logits_in_onnxruntime(trained, exported):
    if not HAS_ONNX:
        pytest.skip("torch.onnx needs the onnx and onnxscript packages (pip install onnx onnxscript)")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    x = _images(5)  # another batch size than the export's: the batch axis is dynamic
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    with torch.no_grad():
        expected = trained["model"](x)
    assert (got - expected).abs().max().item() <= 1e-4


def test_config_yaml_has_the_arch_recipe_dataset_metrics_and_provenance(trained, exported):
    import yaml

    config = yaml.safe_load((exported / "config.yaml").read_text())
    assert ArchConfig.from_dict(config["arch"]).hash == trained["arch"].hash == config["hash"]
    assert config["recipe"]["epochs"] == 3 and config["dataset"]["val_size"] == 100
    assert config["experiment"] == EXPERIMENT and config["code_version"] == "0.1.0+gtest"
    metrics = config["metrics"]
    assert metrics["phase"] == "confirm" and metrics["seeds"] == 2
    low, high = metrics["accuracy"]["ci95"]
    assert low <= metrics["accuracy"]["mean"] <= high
    assert metrics["weights_seed"] == trained["best_seed"]


def test_nas_train_with_the_exported_config_rebuilds_the_same_architecture(trained, exported, data_root, tmp_path):
    db = tmp_path / "retrain.db"
    result = runner.invoke(app, ["train", "--arch", str(exported / "config.yaml"), "--epochs", "1",
                                 "--db", str(db), "--data-root", str(data_root)])
    assert result.exit_code == 0, result.output
    with Store.open(str(db), read_only=True) as store:
        (trial,) = store.trials()
    assert trial.arch_hash == trained["arch"].hash
    assert json.loads(trial.recipe_json)["dataset"]["val_size"] == 100


def test_export_refuses_to_overwrite_without_force(trained, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text("mine")
    args = ["export", EXPERIMENT, "--rank", "1", "--out", str(out), "--db", str(trained["db"]), "--format", "py,yaml"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--force" in result.output
    assert (out / "config.yaml").read_text() == "mine" and not (out / "model.py").exists()
    result = runner.invoke(app, [*args, "--force"])
    assert result.exit_code == 0, result.output
    assert (out / "config.yaml").read_text() != "mine"


def test_export_refuses_a_file_that_resolves_outside_out(trained, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside.py"
    outside.write_text("keep me")
    (out / "model.py").symlink_to(outside)
    result = runner.invoke(app, ["export", EXPERIMENT, "--rank", "1", "--out", str(out), "--db", str(trained["db"]),
                                 "--format", "py", "--force"])
    assert result.exit_code == 2 and "outside --out" in result.output
    assert outside.read_text() == "keep me"


def test_an_architecture_without_kept_weights_exits_2_saying_to_run_the_confirm_phase(trained, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", EXPERIMENT, "--arch", trained["unconfirmed"].hash, "--out", str(out),
                                 "--db", str(trained["db"])])
    assert result.exit_code == 2 and "confirm phase" in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rank", "1", "--arch", "abc"], "exactly one of --rank"),
        ([], "exactly one of --rank"),
        (["--rank", "2"], "between 1 and 1"),
        (["--rank", "1", "--format", "py,tflite"], "'tflite' is not a format"),
        (["--arch", "0123456789ab"], "no trial of this architecture"),
    ],
)
def test_bad_export_input_exits_2_and_writes_nothing(trained, tmp_path, args, needle):
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", EXPERIMENT, *args, "--out", str(out), "--db", str(trained["db"])])
    assert result.exit_code == 2 and needle in result.output, result.output
    assert not out.exists()


def test_an_unknown_experiment_or_a_missing_store_exits_2(trained, tmp_path):
    result = runner.invoke(app, ["export", "nope", "--rank", "1", "--out", str(tmp_path / "o"),
                                 "--db", str(trained["db"])])
    assert result.exit_code == 2 and "no experiment named 'nope'" in result.output
    missing = tmp_path / "missing.db"
    result = runner.invoke(app, ["export", EXPERIMENT, "--rank", "1", "--out", str(tmp_path / "o"),
                                 "--db", str(missing)])
    assert result.exit_code == 2 and not missing.exists()


def _perturbed_state(arch: ArchConfig) -> dict[str, torch.Tensor]:
    """nas's weights moved off their init: BN statistics, deformable offsets and masks too."""
    return {k: v + 0.1 * torch.randn(v.shape, generator=torch.Generator().manual_seed(i)) if v.is_floating_point()
            else v for i, (k, v) in enumerate(build_model(arch, seed=3).state_dict().items())}


def _shapes(net: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.mark.parametrize("short_name", EVERY_KIND)
def test_the_generated_network_has_nas_keys_and_logits_for_every_kind_of_block(short_name):
    arch = parse_short_name(short_name)
    module = load_module(render_model(arch))
    assert check_against_nas(arch, module, _perturbed_state(arch)) <= 1e-5
    assert _shapes(module.Net()) == _shapes(build_model(arch))


@pytest.mark.parametrize("short_name", EVERY_KIND)
def test_standalone_net_has_the_keys_shapes_and_logits_of_nas_network(short_name):
    arch = parse_short_name(short_name)
    reference = build_model(arch).eval()
    net = standalone.Net(arch=arch.to_dict(), plan=unit_channels(arch)).eval()
    assert _shapes(net) == _shapes(reference)
    state = _perturbed_state(arch)
    reference.load_state_dict(state)
    net.load_state_dict(state)
    x = _images(8)
    with torch.no_grad():
        assert (net(x) - reference(x)).abs().max().item() <= 1e-5
        for ours, theirs in zip(net.forward_exits(x), reference.forward_exits(x), strict=True):
            assert (ours - theirs).abs().max().item() <= 1e-5
    if arch.exits.stages:
        from nas.models.exits import early_exit_forward

        logits, taken = net.forward_early_exit(x)
        expected_logits, expected_taken = early_exit_forward(reference, x, arch.exits.threshold)
        assert torch.equal(taken, expected_taken) and torch.allclose(logits, expected_logits, atol=1e-5)


def test_model_py_of_every_kind_of_block_reproduces_nas_logits_in_a_fresh_interpreter_without_nas(tmp_path):
    x = _images()
    torch.save(x, tmp_path / "x.pt")
    expected = []
    for i, short_name in enumerate(EVERY_KIND):
        arch = parse_short_name(short_name)
        state = _perturbed_state(arch)
        source = ExportSource(experiment="kinds", arch=arch, weights=state, weights_trial=None, config={},
                              code_version="test", metrics={})
        export(source, tmp_path / f"m{i}", ("py", "pt"))
        reference = build_model(arch).eval()
        reference.load_state_dict(state)
        with torch.no_grad():
            expected.append(reference.forward_exits(x))  # the side exits' logits, then the final exit's
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import importlib.util, sys
        sys.path.append({str(Path(torch.__file__).resolve().parent.parent)!r})  # torch's folder, nothing else
        import torch
        x = torch.load({str(tmp_path / "x.pt")!r}, weights_only=True)
        for i in range({len(EVERY_KIND)}):
            spec = importlib.util.spec_from_file_location(f"model{{i}}", {str(tmp_path)!r} + f"/m{{i}}/model.py")
            model = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(model)
            with torch.no_grad():
                torch.save(model.load().forward_exits(x), {str(tmp_path)!r} + f"/y{{i}}.pt")
        print(sorted(name for name in sys.modules if name == "nas" or name.startswith("nas.")))
    """))
    done = subprocess.run([sys.executable, "-I", "-S", str(script)], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": os.environ.get("PATH", "")}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "[]"
    for i, short_name in enumerate(EVERY_KIND):
        got = torch.load(tmp_path / f"y{i}.pt", weights_only=True)
        assert len(got) == len(expected[i]), short_name
        for ours, theirs in zip(got, expected[i]):
            assert (ours - theirs).abs().max().item() <= 1e-5, short_name


def test_a_network_trained_with_every_trick_exports_the_logits_it_was_measured_with(data_root, tmp_path):
    """Fresh interpreter, torch only: model.py's forward and forward_tta give the trained
    (averaged) network's logits, plain and under the test-time augmentation it was measured
    with; config.yaml names the same architecture for `nas train --arch`."""
    from nas.cli.train import read_arch_spec
    from nas.training.tta import tta_logits

    arch = parse_short_name(f"R:L1+L3 w=0.125 {EVERY_TRICK}")
    data_cfg = DataConfig(root=str(data_root), val_size=100)
    result = train(arch, Recipe(epochs=2, batch_size=50), load_data(data_cfg), data_cfg, seed=0)
    model = result.model.cpu().eval()
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    source = ExportSource(experiment="tricks", arch=arch, weights=weights, weights_trial=None,
                          config={"recipe": {"epochs": 2, "batch_size": 50}}, code_version="test", metrics={})
    out = tmp_path / "out"
    export(source, out, ("py", "pt", "yaml"))
    x = _images()
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.append({str(Path(torch.__file__).resolve().parent.parent)!r})  # torch's folder, nothing else
        sys.path.insert(0, {str(out)!r})
        import torch
        import model
        net = model.load()
        x = torch.load({str(tmp_path / "x.pt")!r}, weights_only=True)
        with torch.no_grad():
            torch.save([net(x), net.forward_tta(x)], {str(tmp_path / "y.pt")!r})
        print(model.TTA, sorted(name for name in sys.modules if name == "nas" or name.startswith("nas.")))
    """))
    done = subprocess.run([sys.executable, "-I", "-S", str(script)], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": os.environ.get("PATH", "")}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "flip_translate []"
    plain, augmented = torch.load(tmp_path / "y.pt", weights_only=True)
    with torch.no_grad():
        assert (plain - model(x)).abs().max().item() <= 1e-5
        assert (augmented - tta_logits(model, x, "flip_translate")).abs().max().item() <= 1e-5
    assert torch.equal(weights["whiten.weight"], torch.load(out / "weights.pt")["whiten.weight"])
    spec = read_arch_spec(str(out / "config.yaml"))
    assert spec.arch == arch and spec.recipe == {"epochs": 2, "batch_size": 50}
    assert "forward_tta" in load_module((out / "model.py").read_text()).PROVENANCE["tricks"]


def test_standalone_py_imports_with_torch_alone(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import importlib.util, sys
        sys.path.append({str(Path(torch.__file__).resolve().parent.parent)!r})  # torch's folder, nothing else
        spec = importlib.util.spec_from_file_location("standalone", {standalone.__file__!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.Net()(module.normalize(module.torch.zeros(1, 3, 32, 32, dtype=module.torch.uint8)))
        print(sorted(name for name in sys.modules if name == "nas" or name.startswith("nas.")))
    """))
    done = subprocess.run([sys.executable, "-I", "-S", str(script)], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": os.environ.get("PATH", "")}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "[]"


def test_the_constants_model_py_carries_are_nas_own():
    from nas.data.config import CIFAR10_MEAN, CIFAR10_STD
    from nas.models.arch import DEFAULT_EXIT_THRESHOLD, DROP_KINDS, STAGES
    from nas.models.builder import LOGIT_SCALE, NUM_CLASSES

    assert (standalone.MEAN, standalone.STD) == (CIFAR10_MEAN, CIFAR10_STD)
    assert (standalone.LOGIT_SCALE, standalone.NUM_CLASSES) == (LOGIT_SCALE, NUM_CLASSES)
    assert standalone.DEFAULT_EXIT_THRESHOLD == standalone.EXIT_THRESHOLD == DEFAULT_EXIT_THRESHOLD
    assert (standalone.DROP_KINDS, standalone.STAGES) == (DROP_KINDS, STAGES)


def test_standalone_py_as_it_stands_is_the_plain_backbone():
    assert standalone.ARCH == ArchConfig().to_dict() and standalone.PLAN == unit_channels(ArchConfig())
    assert _shapes(standalone.Net()) == _shapes(build_model(ArchConfig()))


def test_a_plan_that_does_not_fit_the_architecture_is_refused():
    with pytest.raises(ValueError, match=r"PLAN\['L1'\] has 1 units"):
        standalone.Net(arch={"L1": {"residual": 1}})


def test_model_py_is_standalone_py_verbatim_but_for_its_data():
    source = Path(standalone.__file__).read_text()
    generated = render_model(parse_short_name("R:L1 F2:L2 E:L1 pyr w=0.125"), experiment="e", code_version="v")
    assert generated != source
    blank = {"ARCH": {}, "PLAN": {}, "PROVENANCE": {}}
    assert write.fill_data(generated, blank) == write.fill_data(source, blank)


@pytest.mark.parametrize("name", [HOSTILE, 'a\n"""\nimport os\n"""', "back\\slash\\\"\"\"\\", "'''\r\u2028#"])
def test_a_hostile_experiment_name_ends_up_as_data(tmp_path, name):
    arch = parse_short_name("R:L1 w=0.125")
    version = name + "\n'''"
    source = ExportSource(experiment=name, arch=arch, weights=None, weights_trial=None, config={},
                          code_version=version, metrics={})
    written = export(source, tmp_path / "out", ("py", "yaml"))
    tree = ast.parse(written["py"].read_text())
    reference = ast.parse(Path(standalone.__file__).read_text())
    assert [write._defined_names(n) for n in tree.body] == [write._defined_names(n) for n in reference.body]
    (provenance,) = [n.value for n in tree.body if write._assigned_name(n) == "PROVENANCE"]
    assert ast.literal_eval(provenance)["experiment"] == name
    assert ast.literal_eval(provenance)["code_version"] == version
    done = subprocess.run([sys.executable, "-I", "-c", "import runpy, sys; runpy.run_path(sys.argv[1])",
                           str(written["py"])], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    module = write.load_module(written["py"].read_text())
    assert module.PROVENANCE["experiment"] == name and module.PROVENANCE["code_version"] == version
    import yaml

    assert yaml.safe_load(written["yaml"].read_text())["experiment"] == name


@pytest.mark.parametrize("existing", [False, True])
def test_a_model_py_that_fails_its_check_as_written_leaves_nothing(tmp_path, monkeypatch, existing):
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "model.py").write_text("kept\n")
    checks = []

    def check_filled(result, source, values):  # the first check passes, the one on the written file fails
        checks.append(result)
        if len(checks) > 1:
            raise RuntimeError("the written model.py is not what was generated")

    monkeypatch.setattr(write, "check_filled", check_filled)
    source = ExportSource(experiment=HOSTILE, arch=parse_short_name("R:L1 w=0.125"), weights=None,
                          weights_trial=None, config={}, code_version="v", metrics={})
    with pytest.raises(RuntimeError, match="written model.py"):
        export(source, out, ("py", "yaml"), force=True)
    assert len(checks) == 2
    if existing:
        assert sorted(p.name for p in out.iterdir()) == ["model.py"] and (out / "model.py").read_text() == "kept\n"
    else:
        assert not out.exists()


def test_generation_fails_loudly_when_a_data_assignment_it_fills_is_missing(monkeypatch):
    source = Path(standalone.__file__).read_text()
    (plan,) = [n for n in ast.parse(source).body if write._assigned_name(n) == "PLAN"]
    lines = source.splitlines(keepends=True)
    without = "".join(lines[:plan.lineno - 1] + lines[plan.end_lineno:])
    monkeypatch.setattr(write, "_standalone_source", lambda: without)
    with pytest.raises(RuntimeError, match="no top-level assignment of PLAN"):
        render_model(parse_short_name("R:L1 w=0.125"))


def test_only_plain_data_is_written_into_model_py():
    with pytest.raises(RuntimeError, match="finite numbers only"):
        write.fill_data("ARCH = {}\n", {"ARCH": {"width": float("inf")}})
    with pytest.raises(RuntimeError, match="plain data"):
        write.fill_data("ARCH = {}\n", {"ARCH": {"width": object()}})


def test_a_field_the_exporter_does_not_know_is_refused_by_name(monkeypatch):
    monkeypatch.setattr(write, "SUPPORTED_FIELDS", write.SUPPORTED_FIELDS - {"L2.fractal"})
    with pytest.raises(ConfigError, match="nas export does not support L2.fractal yet"):
        render_model(parse_short_name("F2:L2 w=0.125"))


def test_onnx_without_its_packages_exits_2_before_anything_is_written(trained, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", EXPERIMENT, "--rank", "1", "--out", str(out), "--db", str(trained["db"])])
    assert result.exit_code == 2 and "pip install onnxscript" in result.output
    assert not out.exists()


def test_export_has_help_that_reads_like_documentation():
    result = runner.invoke(app, ["export", "--help"])
    assert result.exit_code == 0 and "--rank" in result.output and "weights_only" in result.output


def test_model_py_says_what_it_is_and_where_it_came_from(trained, exported):
    tree = ast.parse((exported / "model.py").read_text())
    data = {write._assigned_name(n): ast.literal_eval(n.value) for n in tree.body if write._assigned_name(n) in
            write.DATA_NAMES}
    arch = trained["arch"]
    assert data["ARCH"] == arch.to_dict() and data["PLAN"] == unit_channels(arch)
    provenance = data["PROVENANCE"]
    assert (provenance["experiment"], provenance["code_version"]) == (EXPERIMENT, "0.1.0+gtest")
    assert (provenance["hash"], provenance["short_name"]) == (arch.hash, arch.short_name())
    assert f"seed {trained['best_seed']}" in provenance["weights"]
