"""`nas export`: one architecture of an experiment as files that need only torch.

    store -> the architecture (--rank K of the confirm results: 1 = the race's best, or --arch HASH)
          -> model.py     nas/export/standalone.py, its data filled in for that network
          -> weights.pt   the best confirm seed's state_dict (torch.load(weights_only=True))
          -> model.onnx   the same network through torch.onnx
          -> config.yaml  arch, recipe, dataset, metrics, experiment, code version:
                          `nas train --arch config.yaml` retrains it

model.py is `nas.export.standalone` copied verbatim, with only the values of its data
assignments (ARCH, PLAN, PROVENANCE) replaced, located by parsing the module with `ast`.
The values are literals made here from plain data, so a string from the store (an
experiment's name, a code version) can only ever be a string in the file. PLAN comes from
nas's own builder (`unit_channels`), so the width schedule is computed in one place. Before
anything is written the result is parsed and compared with the module statement by
statement, then built, loaded with the weights and checked against nas's own network.

Every file goes inside --out; an existing file is only replaced with --force.
"""

from __future__ import annotations

import ast
import io
import json
import math
import os
import types
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import yaml

from nas.db import Store
from nas.errors import ConfigError
from nas.export import standalone
from nas.export.notes import exits_note, training_note, tricks_note
from nas.models import STAGES, ArchConfig, build_model, unit_channels
from nas.models.tricks import TricksConfig

FORMATS = {"py": "model.py", "pt": "weights.pt", "onnx": "model.onnx", "yaml": "config.yaml"}
CHECK_TOLERANCE = 1e-5  # max |logit difference| between the generated network and nas's
ONNX_OPSET = 18
# The ArchConfig fields the standalone module builds; anything else new is refused by name.
SUPPORTED_FIELDS = {
    "width", "width_schedule", "deformable_mask", "drop.kind", "drop.rate", "drop.global_share",
    "exits.stages", "exits.weights", "exits.threshold",
    *(f"{stage}.{name}" for stage in STAGES for name in ("extra", "residual", "fractal", "clique", "deformable")),
    *(f"tricks.{f.name}" for f in fields(TricksConfig)),  # built in (or in the weights, or forward_tta)
}
DATA_NAMES = ("ARCH", "PLAN", "PROVENANCE")  # the top-level assignments of standalone.py filled in
# What model.py promises its users (docs/commands.md, tests); the check refuses a module without them.
PUBLIC_NAMES = {"Net", "normalize", "load", "MEAN", "STD", "LOGIT_SCALE", "EXIT_THRESHOLD", "TTA", *DATA_NAMES}


# ----------------------------------------------------------------------------- what to export


@dataclass(frozen=True)
class ExportSource:
    """One architecture of an experiment, with what the files need."""

    experiment: str
    arch: ArchConfig
    weights: dict[str, torch.Tensor] | None  # the kept state_dict (best confirm seed), if any
    weights_trial: Any  # the Trial row the weights come from, or None
    config: dict[str, Any]  # the experiment's resolved config (recipe, dataset, ...)
    code_version: str | None
    metrics: dict[str, Any]


def parse_formats(text: str) -> tuple[str, ...]:
    """``"py,onnx"`` -> ("py", "onnx"); ConfigError naming an unknown format."""
    items = [item.strip().lower() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"--format: give one or more of {', '.join(FORMATS)}, comma-separated.")
    for item in items:
        if item not in FORMATS:
            raise ConfigError(
                f"--format: {item!r} is not a format; choose from {', '.join(FORMATS)} (comma-separated)."
            )
    return tuple(dict.fromkeys(items))


def select(store: Store, experiment: str, *, rank: int | None = None, arch_hash: str | None = None,
           need_weights: bool = True) -> ExportSource:
    """The architecture `--rank` or `--arch` names, with its weights.

    `--rank` counts the confirmed architectures as `nas status` lists them (`arch_results`):
    1 is the confirm race's best, then those not separated from it, then the worse ones, each group
    by Pareto rank (then the first objective).

    Raises:
        ConfigError: no such experiment, rank or architecture; or `need_weights` and no
            weights were kept for it (only the confirm phase keeps them).
    """
    from nas.results import arch_results
    from nas.trials.experiment import require_experiment

    found = require_experiment(store, experiment)
    confirmed = arch_results(store, experiment, "confirm")
    if rank is not None:
        if not confirmed:
            raise ConfigError(
                f"--rank {rank}: experiment {experiment!r} has no confirmed architectures; run its confirm "
                "phase (`nas launch` with confirm.top_k > 0) or name one with --arch HASH."
            )
        if not 1 <= rank <= len(confirmed):
            raise ConfigError(f"--rank must be between 1 and {len(confirmed)} (the confirmed architectures "
                              f"of {experiment!r}), but got {rank}.")
        arch_hash = confirmed[rank - 1].arch_hash
    trials = [t for t in store.trials(experiment_id=found.id) if t.arch_hash == arch_hash]
    if not trials:
        known = ", ".join(r.arch_hash for r in confirmed[:5])
        raise ConfigError(
            f"--arch {arch_hash}: no trial of this architecture in experiment {experiment!r}"
            + (f"; its confirmed architectures are {known}." if known else ".")
        )
    arch = ArchConfig.from_json(store.get_architecture(arch_hash).config_json)
    check_supported(arch)
    kept = [store.get_trial(i) for i in store.trials_with_weights(found.id)]
    kept = [t for t in kept if t.arch_hash == arch_hash]
    kept.sort(key=lambda t: t.seed)  # the first confirm seed (`keep_first_seed_weights`)
    weights = None
    if kept:
        state = torch.load(io.BytesIO(store.load_weights(kept[0].id)), map_location="cpu", weights_only=True)
        weights = {k: v.contiguous() for k, v in state.items()}
    elif need_weights:
        raise ConfigError(
            f"architecture {arch.short_name()} ({arch_hash}) of {experiment!r} has no kept weights: only the "
            "confirm phase keeps them (the first seed of each confirmed architecture). Run the confirm phase "
            "(`nas launch` with confirm.top_k > 0, which resumes the experiment), export a confirmed "
            "architecture (--rank K), or export --format py,yaml only."
        )
    config = json.loads(found.config_json) if found.config_json else {}
    return ExportSource(
        experiment=experiment, arch=arch, weights=weights, weights_trial=kept[0] if kept else None,
        config=config, code_version=found.code_version, metrics=_metrics(store, experiment, arch_hash),
    )


def check_supported(arch: ArchConfig) -> None:
    """ConfigError naming the first field of `arch` the standalone module cannot build yet."""
    defaults = ArchConfig().to_flat()
    for key, value in arch.to_flat().items():
        if key not in SUPPORTED_FIELDS and value != defaults.get(key):
            raise ConfigError(f"nas export does not support {key} yet (the architecture sets {key}={value!r}).")
    if arch.drop.kind not in standalone.DROP_KINDS:
        raise ConfigError(f"nas export does not support drop.kind {arch.drop.kind} yet.")


def _metrics(store: Store, experiment: str, arch_hash: str) -> dict[str, Any]:
    """Mean, std and 95% CI over the confirm seeds (else the search seeds) of one architecture."""
    from nas.results import arch_results

    for phase in ("confirm", "search"):
        row = next((r for r in arch_results(store, experiment, phase) if r.arch_hash == arch_hash), None)
        if row is not None:
            break
    if row is None:
        return {}

    def summary(s) -> dict[str, Any]:
        return {"mean": _num(s.mean), "std": _num(s.std), "ci95": [_num(s.ci_low), _num(s.ci_high)]}

    return {
        "phase": row.phase, "seeds": row.seeds, "accuracy": summary(row.accuracy),
        "test_acc": summary(row.test_acc), "train_seconds": summary(row.train_seconds),
        "params": row.params, "flops": row.flops, "pareto_rank": row.rank,
        # evaluation noise of one seed: the images its accuracy was measured on, its binomial SE
        "eval_images": row.eval_images, "eval_se": _num(row.eval_se),
    }


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


# ----------------------------------------------------------------------------- model.py


def render_model(arch: ArchConfig, *, experiment: str = "", code_version: str | None = None,
                 weights_note: str = "") -> str:
    """The source of model.py for `arch`: standalone.py with its data filled in."""
    return fill_data(_standalone_source(), model_values(arch, experiment, code_version, weights_note))


def model_values(arch: ArchConfig, experiment: str, code_version: str | None, weights_note: str) -> dict[str, Any]:
    """What model.py holds as data: strings from the store enter it only as literals of these."""
    check_supported(arch)
    provenance = {
        "short_name": arch.short_name(),
        "hash": arch.hash,
        "experiment": experiment,
        "code_version": code_version,
        "weights": weights_note,
        "training": training_note(arch),
        "exits": exits_note(arch),
        "tricks": tricks_note(arch),
    }
    return {"ARCH": arch.to_dict(), "PLAN": unit_channels(arch), "PROVENANCE": provenance}


def _standalone_source() -> str:
    return Path(standalone.__file__).read_text(encoding="utf-8")


def fill_data(source: str, values: dict[str, Any]) -> str:
    """`source` with the value of each top-level assignment ``NAME = ...`` in `values`
    replaced by a literal of the given value; every other byte is kept.

    Raises:
        RuntimeError: a name has no top-level assignment (or more than one) in `source`, a
            value is not plain data, or the result is not `source` statement by statement
            but for those values (bugs in nas export, never silently ignored).
    """
    tree = ast.parse(source)
    spans = {}
    for node in tree.body:
        name = _assigned_name(node)
        if name in values:
            if name in spans:
                raise RuntimeError(f"standalone.py assigns {name} twice at the top level; nas export fills in one.")
            spans[name] = node.value
    missing = [name for name in values if name not in spans]
    if missing:
        raise RuntimeError(f"standalone.py has no top-level assignment of {', '.join(missing)} for nas export "
                           "to fill in (a bug in nas export: the module and the writer disagree).")
    # ast positions are (1-based line, UTF-8 byte column): splice the encoded text, last first.
    data = source.encode("utf-8")
    starts = [0]
    for line in data.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    for name, node in sorted(spans.items(), key=lambda item: -item[1].lineno):
        begin = starts[node.lineno - 1] + node.col_offset
        end = starts[node.end_lineno - 1] + node.end_col_offset
        data = data[:begin] + _literal(values[name]).encode("utf-8") + data[end:]
    result = data.decode("utf-8")
    check_filled(result, source, values)
    return result


def check_filled(result: str, source: str, values: dict[str, Any]) -> None:
    """RuntimeError unless `result` parses, defines the names `source` defines (PUBLIC_NAMES
    among them), has every other statement of `source` unchanged, and holds `values`."""
    try:
        got = ast.parse(result)
    except SyntaxError as err:
        raise RuntimeError(f"the generated model.py does not parse: {err} (a bug in nas export).") from None
    want = ast.parse(source)
    names = [_defined_names(node) for node in got.body]
    if names != [_defined_names(node) for node in want.body]:
        raise RuntimeError(f"the generated model.py defines {names}, not what standalone.py defines "
                           "(a bug in nas export).")
    absent = PUBLIC_NAMES - set().union(*names)
    if absent:
        raise RuntimeError(f"standalone.py does not define {', '.join(sorted(absent))}, which model.py promises.")
    for ours, theirs in zip(got.body, want.body):
        name = _assigned_name(ours)
        if name in values:
            if ast.literal_eval(ours.value) != values[name]:
                raise RuntimeError(f"the generated model.py's {name} does not read back as the value given.")
        elif ast.dump(ours) != ast.dump(theirs):
            raise RuntimeError(f"the generated model.py differs from standalone.py at line {ours.lineno} "
                               "outside its data (a bug in nas export).")


def _assigned_name(node: ast.stmt) -> str | None:
    """NAME of a top-level ``NAME = value`` or ``NAME: type = value``, else None."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return node.target.id
    return None


def _defined_names(node: ast.stmt) -> set[str]:
    """The module-level names one top-level statement binds."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return set()


def _literal(value: Any, indent: str = "") -> str:
    """`value` as Python source, one entry per line for a dict: plain data only (dicts with
    str keys, lists, tuples, str, int, finite float, bool, None), checked to read back equal."""
    if isinstance(value, dict) and value:
        inner = indent + "    "
        items = "".join(f"{inner}{_inline(k)}: {_inline(v)},\n" for k, v in value.items())
        text = "{\n" + items + indent + "}"
    else:
        text = _inline(value)
    if ast.literal_eval(text) != value:
        raise RuntimeError(f"{value!r} does not read back from its literal {text!r} (a bug in nas export).")
    return text


def _inline(value: Any) -> str:
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)  # a str's repr is a literal of exactly that string, whatever it holds
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RuntimeError(f"{value} has no literal; nas export writes finite numbers only.")
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_inline(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return "{" + ", ".join(f"{_inline(k)}: {_inline(v)}" for k, v in value.items()) + "}"
    raise RuntimeError(f"nas export writes plain data into model.py, not {type(value).__name__} {value!r}.")


def load_module(source: str, name: str = "nas_exported_model") -> types.ModuleType:
    """Execute generated model.py source as a module (no file needed)."""
    module = types.ModuleType(name)
    module.__file__ = "model.py"
    exec(compile(source, "model.py", "exec"), module.__dict__)  # noqa: S102 - our own generated code
    return module


def check_against_nas(arch: ArchConfig, module: types.ModuleType, weights: dict[str, torch.Tensor] | None) -> float:
    """Load the same weights into the generated `Net` and nas's network; the max |logit
    difference| on a random batch in eval mode. Raises RuntimeError (a bug) if the
    state_dicts differ in keys or shapes or the logits differ by more than CHECK_TOLERANCE."""
    from nas.training.tta import tta_logits

    reference = build_model(arch, seed=0).eval()
    if weights is not None:
        reference.load_state_dict(weights)
    else:
        weights = {k: v.detach().clone() for k, v in reference.state_dict().items()}
    exported = module.Net().eval()
    ours = {k: tuple(v.shape) for k, v in exported.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    if ours != theirs:
        missing, extra = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
        raise RuntimeError(f"generated model.py for {arch.short_name()} does not match nas's network: "
                           f"missing {missing[:5]}, unexpected {extra[:5]} (a bug in nas export).")
    exported.load_state_dict(weights)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (exported(x) - reference(x)).abs().max().item()
        if arch.exits.stages:  # every exit's logits, not only the final one
            pairs = zip(exported.forward_exits(x), reference.forward_exits(x))
            diff = max(diff, *((ours - theirs).abs().max().item() for ours, theirs in pairs))
        if arch.tricks.tta != "none":  # the logits the accuracy was measured on
            diff = max(diff, (exported.forward_tta(x) - tta_logits(reference, x, arch.tricks.tta)).abs().max().item())
    if not diff <= CHECK_TOLERANCE:
        raise RuntimeError(f"generated model.py for {arch.short_name()} gives logits {diff:.2e} away from "
                           "nas's network (a bug in nas export).")
    return diff


# ----------------------------------------------------------------------------- config.yaml


def render_config(source: ExportSource) -> str:
    """config.yaml: what `nas train --arch config.yaml` reads (arch, recipe, dataset), plus
    where it came from and how well it did."""
    arch = source.arch
    dataset = {k: v for k, v in (source.config.get("dataset") or {}).items() if k not in ("name", "root")}
    data: dict[str, Any] = {
        "arch": arch.to_dict(),
        "hash": arch.hash,
        "short_name": arch.short_name(),
        "recipe": source.config.get("recipe") or {},
        "dataset": dataset,
        "metrics": {**source.metrics, **_weights_info(source)},
        "experiment": source.experiment,
        "code_version": source.code_version,
    }
    header = (
        f"# {arch.short_name()} ({arch.hash}), exported by `nas export` from experiment {source.experiment!r}.\n"
        "# Retrain it: nas train --arch config.yaml  (the data root comes from --data-root or $NAS_DATA_DIR)\n"
        "# metrics: accuracy is val accuracy (test when there is no val split); ci95 is the 95% CI of the\n"
        "# mean over the seeds; eval_se is one seed's binomial standard error, sqrt(p(1-p)/n) on the\n"
        "# eval_images it was measured on (null: not recorded); weights.pt holds the weights of the\n"
        "# first confirm seed (a fixed seed, not the most accurate: weights_val_acc is one draw).\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False)


def _weights_info(source: ExportSource) -> dict[str, Any]:
    trial = source.weights_trial
    if trial is None:
        return {}
    return {"weights_seed": trial.seed, "weights_trial": trial.id,
            "weights_val_acc": _num(trial.final_val_acc) if trial.final_val_acc is not None else None,
            "weights_test_acc": _num(trial.final_test_acc) if trial.final_test_acc is not None else None}


# ----------------------------------------------------------------------------- writing


def target_paths(out: Path, formats: tuple[str, ...], *, force: bool) -> dict[str, Path]:
    """Where each format goes, checked before anything is written.

    Raises:
        ConfigError: --out is a file, a target resolves outside --out (a symlink), a
            target is a folder, or a target exists and not `force`.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder; choose a folder.")
    root = out.resolve()
    targets, existing = {}, []
    for fmt in formats:
        path = out / FORMATS[fmt]
        resolved = path.resolve()
        if resolved.parent != root or path.is_symlink():
            raise ConfigError(
                f"refusing to write {path}: it resolves to {resolved}, outside --out {root} "
                "(a symlink?); remove it or choose another --out."
            )
        if path.is_dir():
            raise ConfigError(f"{path} is a folder; remove it or choose another --out.")
        if path.exists():
            existing.append(path.name)
        targets[fmt] = path
    if existing and not force:
        raise ConfigError(
            f"--out {out}: {', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
            "pass --force to overwrite, or choose another --out."
        )
    return targets


def export(source: ExportSource, out: Path, formats: tuple[str, ...], *, force: bool = False) -> dict[str, Path]:
    """Write the requested files into `out` (created if needed); returns them by format."""
    targets = target_paths(out, formats, force=force)
    note = ""
    if source.weights_trial is not None:
        note = f"seed {source.weights_trial.seed}, the first confirm seed"
    values = model_values(source.arch, source.experiment, source.code_version, note)
    model_source = fill_data(_standalone_source(), values)
    module = load_module(model_source)
    check_against_nas(source.arch, module, source.weights)
    payloads: dict[str, bytes] = {}  # every file is made before the first is written
    if "py" in targets:
        payloads["py"] = model_source.encode("utf-8")
    if "pt" in targets:
        buffer = io.BytesIO()
        torch.save(source.weights, buffer)
        payloads["pt"] = buffer.getvalue()
    if "yaml" in targets:
        payloads["yaml"] = render_config(source).encode()
    if "onnx" in targets:
        net = module.Net().eval()
        net.load_state_dict(source.weights)
        payloads["onnx"] = to_onnx(net)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    temps = {fmt: targets[fmt].with_name(f".{targets[fmt].name}.tmp") for fmt in payloads}
    try:  # each file to a temporary beside it, model.py checked as written, then all renamed
        for fmt, data in payloads.items():
            temps[fmt].write_bytes(data)
        if "py" in temps:
            check_filled(temps["py"].read_text(encoding="utf-8"), _standalone_source(), values)
        for fmt in payloads:
            os.replace(temps[fmt], targets[fmt])
    finally:  # on failure nothing is left: no temporary, no folder made for it
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        if created and not any(out.iterdir()):
            out.rmdir()
    return targets


def check_onnx_available() -> None:
    """ConfigError unless torch.onnx's exporter can run (it needs onnx and onnxscript)."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"--format onnx needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''}: "
            f"pip install {' '.join(missing)}, or leave onnx out of --format."
        )


def to_onnx(net: torch.nn.Module) -> bytes:
    """The network as an ONNX model (opset ONNX_OPSET), input "images" (B, 3, 32, 32), any B."""
    import logging
    import tempfile
    import warnings

    batch = torch.export.Dim("batch", min=1)
    quiet = logging.getLogger("torch.onnx")  # it logs each optional op it skips
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="nas-onnx-") as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = os.path.join(folder, "model.onnx")
        try:
            torch.onnx.export(
                net, (torch.zeros(2, 3, 32, 32),), path, input_names=["images"], output_names=["logits"],
                dynamic_shapes={"x": {0: batch}}, opset_version=ONNX_OPSET, external_data=False,
                dynamo=True, verbose=False,
            )
        finally:
            quiet.setLevel(level)
        with open(path, "rb") as f:
            return f.read()
