"""An experiment's results as pandas DataFrames, read from the store (`nas.api` serves them).

Five frames, each with stable column names and dtypes listed in `COLUMNS` (the table the
tests check against; ``python -c "from nas.frames import describe; print(describe())"``
prints it):

- ``experiments``: one row per experiment, as `nas list` shows them;
- ``trials``: one row per trial (a run of one architecture on one seed in one phase);
- ``epochs``: one row per trial and recorded epoch (epochs count from 0, as stored);
- ``architectures``: one row per architecture and phase: `nas.results.ArchResult`, the
  numbers `nas status` prints (95% CI, Pareto front, the race's decision), not recomputed;
- ``ablation``: one row per ablation variant: `nas.ablation.report.Contribution`.

``trials`` and ``architectures`` also hold one column per searched dimension, named by its
dotted architecture key (``L1.residual``, ``width``, ...), right after ``short_name``: the
keys the experiment's space varies, and any other key on which its architectures differ
(an ablation's variants). Their dtype follows the key's default value (int64, float64,
bool, str; a tuple such as ``exits.stages`` is joined with commas into one str).

Conventions: accuracies are fractions in [0, 1] beside the images they were measured on;
seconds are train wall-clock seconds (evaluation excluded); FLOPs are per 32x32 image;
times are aware UTC (``datetime64[us, UTC]``); a missing value is NaN / <NA> / NaT, never
"" or a sentinel. ``pareto_front`` counts from 1: 1 is the Pareto front, 2 the front without
it, and so on. Nullable integers are ``Int64``; strings are pandas's ``str``.

CSV and JSON carry values, not dtypes: `restore_dtypes` turns a frame read back with
``pandas.read_csv`` / ``pandas.read_json`` into these dtypes again (JSON keeps 15
significant digits of a float). Parquet keeps them as they are.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from nas.db import Architecture, EpochResult, Store, Trial
from nas.db.schema import Phase, TrialStatus
from nas.trials.plan import judged_accuracy

if TYPE_CHECKING:
    from nas.db import Experiment

UTC_TIME = "datetime64[us, UTC]"


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # a pandas dtype name
    doc: str


def _columns(*rows: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(*row) for row in rows)


_ARCH = (("arch_hash", "str", "the architecture's stable id (12 hex digits; nas export --arch)"),
         ("short_name", "str", "its compact name, e.g. R:L1+L3 w=0.25"))
DIMENSIONS_AFTER = "short_name"  # the searched dimensions' columns follow this one

COLUMNS: dict[str, tuple[Column, ...]] = {
    "experiments": _columns(
        ("experiment", "str", "its name"),
        ("status", "str", "running | finished | failed | interrupted"),
        ("trials", "int64", "trials of every phase and status"),
        ("completed", "int64", "trials that trained every planned epoch"),
        ("pruned", "int64", "trials stopped early by the pruner"),
        ("failed", "int64", "trials that raised"),
        ("best_accuracy", "float64", "best completed trial's accuracy (val, else test); NaN: none yet"),
        ("created_at", UTC_TIME, "when it started"),
        ("finished_at", UTC_TIME, "when its last run ended; NaT while running"),
        ("code_version", "str", "nas version that created it, e.g. 0.1.0+g1a2b3c4"),
    ),
    "trials": _columns(
        ("experiment", "str", "experiment name"),
        ("trial_id", "int64", "the trial's id in the store"),
        ("phase", "str", "train | search | confirm | ablation"),
        ("status", "str", "running | completed | pruned | failed | diverged | interrupted"),
        *_ARCH,
        ("seed", "int64", "training seed"),
        ("accuracy", "float64", "what the trial is judged by: final_val_acc, else final_test_acc"),
        ("final_train_loss", "float64", "last epoch's mean train loss"),
        ("final_train_acc", "float64", "last epoch's train accuracy"),
        ("final_val_acc", "float64", "last epoch's val accuracy; NaN without a val split"),
        ("final_val_images", "Int64", "images final_val_acc was measured on"),
        ("final_test_acc", "float64", "last epoch's test accuracy"),
        ("final_test_images", "Int64", "images final_test_acc was measured on"),
        ("best_val_acc", "float64", "best val accuracy over the recorded epochs"),
        ("train_seconds", "float64", "train wall seconds, evaluation excluded"),
        ("epochs_done", "int64", "epochs recorded"),
        ("epochs_planned", "int64", "epochs the recipe planned"),
        ("params", "int64", "trainable parameters"),
        ("flops", "int64", "forward FLOPs per image"),
        ("device", "str", "what it trained on, e.g. NVIDIA H100 80GB HBM3"),
        ("code_version", "str", "nas version that ran it"),
        ("error", "str", "why it failed or diverged"),
        ("why_pruned", "str", "why the pruning rule stopped it (nas.search.pruning.PruneReason.text)"),
        ("started_at", UTC_TIME, "when it started"),
        ("finished_at", UTC_TIME, "when it ended; NaT while running"),
    ),
    "epochs": _columns(
        ("experiment", "str", "experiment name"),
        ("trial_id", "int64", "the trial's id (trials.trial_id)"),
        ("phase", "str", "the trial's phase"),
        ("status", "str", "the trial's status"),
        *_ARCH,
        ("seed", "int64", "the trial's seed"),
        ("epoch", "int64", "from 0"),
        ("train_loss", "float64", "mean over the epoch's batches"),
        ("train_acc", "float64", "train accuracy"),
        ("val_acc", "float64", "val accuracy; NaN when not evaluated"),
        ("val_images", "Int64", "images val_acc was measured on"),
        ("test_acc", "float64", "test accuracy; NaN when not evaluated"),
        ("test_images", "Int64", "images test_acc was measured on"),
        ("epoch_seconds", "float64", "train wall seconds of this epoch"),
        ("cumulative_seconds", "float64", "train wall seconds up to and including it"),
    ),
    "architectures": _columns(
        ("experiment", "str", "experiment name"),
        ("phase", "str", "the phase its completed trials ran in (one row per phase)"),
        ("position", "int64", "its place in `nas status`, from 1 (confirm: nas export --rank)"),
        *_ARCH,
        ("seeds", "int64", "completed seeds"),
        ("accuracy_mean", "float64", "mean accuracy over seeds (val, else test)"),
        ("accuracy_ci_low", "float64", "95% CI of that mean, Student t; NaN under 2 seeds"),
        ("accuracy_ci_high", "float64", "upper end of that CI"),
        ("accuracy_sd", "float64", "sample SD over seeds (ddof 1); NaN under 2 seeds"),
        ("test_acc_mean", "float64", "mean test accuracy over seeds"),
        ("test_acc_ci_low", "float64", "its 95% CI, lower end"),
        ("test_acc_ci_high", "float64", "its 95% CI, upper end"),
        ("train_seconds_mean", "float64", "mean train seconds over seeds"),
        ("train_seconds_sd", "float64", "their SD"),
        ("params", "int64", "trainable parameters"),
        ("flops", "int64", "forward FLOPs per image"),
        ("mean_inference_flops", "float64", "FLOPs per image with early exits at its threshold"),
        ("pareto_front", "int64", "Pareto front among the phase's architectures: 1 = the front"),
        ("front_share", "float64", "share of seed bootstraps with it on the front; NaN: one seed each"),
        ("decision", "str", "the race's: best | not separated | worse; <NA>: not decided"),
        ("decision_p", "float64", "its p over the whole race (NaN for best)"),
        ("detectable_difference", "float64", "not separated: the difference (fraction) detectable at 80% power"),
        ("eval_images", "Int64", "images its accuracy was measured on (fewest over seeds)"),
        ("eval_se", "float64", "mean over seeds of one trial's binomial SE of its accuracy"),
    ),
    "ablation": _columns(
        ("experiment", "str", "experiment name"),
        ("reference_hash", "str", "the ablated architecture"),
        ("reference_name", "str", "its short name"),
        ("reference_accuracy", "float64", "its mean accuracy over the paired seeds"),
        ("change", "str", "the variant's one change, e.g. L1.residual 1 -> 0"),
        ("key", "str", "the dotted key it changes"),
        ("move", "str", "off | down | up"),
        *_ARCH,
        ("seeds", "int64", "seeds paired with the reference"),
        ("delta_accuracy", "float64", "mean of variant - reference accuracy over the paired seeds"),
        ("delta_accuracy_ci_low", "float64", "its paired-t 95% CI; NaN under 2 seeds"),
        ("delta_accuracy_ci_high", "float64", "upper end of that CI"),
        ("p", "float64", "paired t-test p of this variant alone"),
        ("study_p", "float64", "p over the whole study (every variant and look)"),
        ("matters", "bool", "study_p below 0.05: the change matters beyond seed noise"),
        ("delta_train_seconds", "float64", "mean paired difference of train seconds"),
        ("delta_params", "int64", "variant - reference parameters"),
        ("delta_flops", "int64", "variant - reference FLOPs per image"),
    ),
}
KINDS = tuple(COLUMNS)


def describe() -> str:
    """`COLUMNS` as text: one line per column, ``kind  name  dtype  doc``."""
    return "\n".join(f"{kind:<13} {c.name:<24} {c.dtype:<20} {c.doc}" for kind, cols in COLUMNS.items() for c in cols)


# ---- the frames -----------------------------------------------------------------------------


def experiments_frame(store: Store) -> pd.DataFrame:
    """One row per experiment, oldest first (`nas list`)."""
    rows = []
    for exp in store.experiments():
        trials = store.trials(experiment_id=exp.id)
        accs = [a for t in trials if t.status == TrialStatus.COMPLETED
                if (a := judged_accuracy(t.final_val_acc, t.final_test_acc)) is not None]
        rows.append({
            "experiment": exp.name, "status": exp.status, "trials": len(trials),
            **{s: sum(1 for t in trials if t.status == s) for s in ("completed", "pruned", "failed")},
            "best_accuracy": max(accs) if accs else math.nan, "created_at": exp.created_at,
            "finished_at": exp.finished_at, "code_version": exp.code_version,
        })
    return _frame("experiments", rows)


def trials_frame(store: Store, experiment: Experiment) -> pd.DataFrame:
    """One row per trial of `experiment`, in the order they started."""
    from nas.results import pruned_trials

    trials = store.trials(experiment_id=experiment.id)
    archs = _architectures(store, {t.arch_hash for t in trials})
    dims = dimensions(experiment, archs.values())
    why = {p.trial_id: p.reason.text() for p in pruned_trials(store, experiment.id) if p.reason is not None}
    rows = [{
        "experiment": experiment.name, "trial_id": t.id, "phase": t.phase, "status": t.status,
        **_arch_cells(archs[t.arch_hash], dims), "seed": t.seed,
        "accuracy": judged_accuracy(t.final_val_acc, t.final_test_acc),
        **{name: getattr(t, name) for name in (
            "final_train_loss", "final_train_acc", "final_val_acc", "final_val_images", "final_test_acc",
            "final_test_images", "best_val_acc", "train_seconds", "epochs_done", "epochs_planned",
            "device", "code_version", "error", "started_at", "finished_at")},
        "why_pruned": why.get(t.id), "params": archs[t.arch_hash].params, "flops": archs[t.arch_hash].flops,
    } for t in trials]
    return _frame("trials", rows, dims)


def epochs_frame(store: Store, experiment: Experiment) -> pd.DataFrame:
    """One row per recorded epoch of each trial of `experiment`, by trial then epoch."""
    from sqlalchemy import select

    e, t, a = EpochResult.__table__.c, Trial.__table__.c, Architecture.__table__.c
    # one query, not one per trial (a search may hold 100,000), without the per-image bits
    query = (select(t.id, t.phase, t.status, t.arch_hash, a.short_name, t.seed, e.epoch, e.train_loss, e.train_acc,
                    e.val_acc, e.val_images, e.test_acc, e.test_images, e.epoch_seconds, e.cumulative_seconds)
             .select_from(EpochResult.__table__.join(Trial.__table__, e.trial_id == t.id)
                          .join(Architecture.__table__, a.hash == t.arch_hash))
             .where(t.experiment_id == experiment.id).order_by(t.id, e.epoch))
    names = ("trial_id", "phase", "status", "arch_hash", "short_name", "seed", "epoch", "train_loss", "train_acc",
             "val_acc", "val_images", "test_acc", "test_images", "epoch_seconds", "cumulative_seconds")
    with store.engine.connect() as connection:
        rows = [{"experiment": experiment.name, **dict(zip(names, row))} for row in connection.execute(query)]
    return _frame("epochs", rows)


def architectures_frame(store: Store, experiment: Experiment) -> pd.DataFrame:
    """One row per architecture and phase (search, confirm, ablation, train: the phases with
    completed trials), each phase in `nas status` order: `nas.results.arch_results`."""
    from nas.results import arch_results

    present = {t.phase for t in store.trials(experiment_id=experiment.id, status=TrialStatus.COMPLETED)}
    results = [r for phase in (Phase.SEARCH, Phase.CONFIRM, Phase.ABLATION, Phase.TRAIN) if phase in present
               for r in arch_results(store, experiment.name, phase)]
    archs = _architectures(store, {r.arch_hash for r in results})
    dims = dimensions(experiment, archs.values())
    rows, position, phase = [], 0, None
    for r in results:
        position = position + 1 if r.phase == phase else 1
        phase = r.phase
        rows.append({
            "experiment": experiment.name, "phase": str(r.phase), "position": position,
            **_arch_cells(archs[r.arch_hash], dims), "seeds": r.seeds,
            "accuracy_mean": r.accuracy.mean, "accuracy_ci_low": r.accuracy.ci_low,
            "accuracy_ci_high": r.accuracy.ci_high, "accuracy_sd": r.accuracy.std,
            "test_acc_mean": r.test_acc.mean, "test_acc_ci_low": r.test_acc.ci_low,
            "test_acc_ci_high": r.test_acc.ci_high,
            "train_seconds_mean": r.train_seconds.mean, "train_seconds_sd": r.train_seconds.std,
            "params": r.params, "flops": r.flops, "mean_inference_flops": r.mean_inference_flops,
            "pareto_front": r.pareto_front, "front_share": r.front_share, "decision": r.group or None,
            "decision_p": r.group_p, "detectable_difference": r.group_detectable,
            "eval_images": r.eval_images, "eval_se": r.eval_se,
        })
    return _frame("architectures", rows, dims)


def ablation_frame(store: Store, experiment: Experiment) -> pd.DataFrame:
    """One row per variant of each ablation study (most recent study first), most harmful
    change first within each: `nas.ablation.report.contributions`."""
    from nas.ablation.report import ablation_references, contributions

    rows = []
    for reference in ablation_references(store, experiment.name):
        report = contributions(store, experiment.name, reference)
        for c in report.rows:
            rows.append({
                "experiment": experiment.name, "reference_hash": report.reference_hash,
                "reference_name": report.reference_name, "reference_accuracy": report.reference_accuracy.mean,
                "change": c.change, "key": c.key, "move": c.move, "arch_hash": c.arch_hash,
                "short_name": c.short_name, "seeds": len(c.seeds), "delta_accuracy": c.accuracy.mean,
                "delta_accuracy_ci_low": c.accuracy.ci_low, "delta_accuracy_ci_high": c.accuracy.ci_high,
                "p": c.accuracy.p_value, "study_p": c.p, "matters": c.matters,
                "delta_train_seconds": c.train_seconds, "delta_params": c.params, "delta_flops": c.flops,
            })
    return _frame("ablation", rows)


# ---- searched dimensions ----------------------------------------------------------------------


def dimensions(experiment: Experiment, archs) -> list[str]:
    """The dotted keys searched in `experiment`: its space's entries that are not fixed, and
    the keys on which `archs` differ; in `ArchConfig.to_flat` order."""
    defaults = _default_flat()
    config = json.loads(experiment.config_json) if experiment.config_json else {}
    searched = {key for key, entry in (config.get("space") or {}).items()
                if not (isinstance(entry, dict) and "fixed" in entry)}
    flats = [_flat(a.config_json) for a in archs]
    varied = {key for key in defaults if len({flat[key] for flat in flats}) > 1}
    return [key for key in defaults if key in searched or key in varied]


def dimension_dtype(key: str) -> str:
    """A dimension column's dtype, from the type of the key's default value."""
    default = _default_flat()[key]
    for kind, dtype in ((bool, "bool"), (int, "int64"), (float, "float64")):
        if isinstance(default, kind):
            return dtype
    return "str"


def _flat(config_json: str) -> dict[str, Any]:
    """An architecture's every key, defaults included, as cells (a tuple joined by commas)."""
    from nas.models.arch import ArchConfig

    try:
        flat = ArchConfig.from_json(config_json).to_flat()
    except Exception:  # noqa: BLE001 - a config this version cannot build: its stored keys over the defaults
        stored: dict[str, Any] = {}
        for key, value in json.loads(config_json).items():
            nested = value if isinstance(value, dict) else {None: value}
            stored.update({key if sub is None else f"{key}.{sub}": v for sub, v in nested.items()})
        flat = {**_default_flat(), **stored}
    return {k: ",".join(str(x) for x in v) if isinstance(v, (tuple, list)) else v for k, v in flat.items()}


def _default_flat() -> dict[str, Any]:
    from nas.models.arch import ArchConfig

    return ArchConfig().to_flat()


def _arch_cells(arch: Architecture, dims: list[str]) -> dict[str, Any]:
    flat = _flat(arch.config_json)
    return {"arch_hash": arch.hash, "short_name": arch.short_name, **{key: flat[key] for key in dims}}


def _architectures(store: Store, hashes: set[str]) -> dict[str, Architecture]:
    return {a.hash: a for a in store.architectures() if a.hash in hashes}


# ---- dtypes ---------------------------------------------------------------------------------


def column_dtypes(kind: str, names) -> dict[str, str]:
    """The dtype of each of `names` in a `kind` frame: `COLUMNS`'s, else a dimension's."""
    known = {c.name: c.dtype for c in COLUMNS[kind]}
    return {name: known[name] if name in known else dimension_dtype(name) for name in names}


def restore_dtypes(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    """`frame` (read back from CSV or JSON) with the dtypes `COLUMNS` gives its columns."""
    out = frame.copy()
    for name, dtype in column_dtypes(kind, frame.columns).items():
        if dtype == UTC_TIME:
            out[name] = pd.to_datetime(out[name], utc=True, format="ISO8601").astype(UTC_TIME)
        elif dtype == "str":
            out[name] = out[name].astype("str").where(out[name].notna())
        else:
            out[name] = out[name].astype(dtype)
    return out


def _frame(kind: str, rows: list[dict[str, Any]], dims: list[str] = ()) -> pd.DataFrame:
    names = [c.name for c in COLUMNS[kind]]
    if DIMENSIONS_AFTER in names and dims:
        at = names.index(DIMENSIONS_AFTER) + 1
        names[at:at] = dims
    dtypes = column_dtypes(kind, names)
    return pd.DataFrame({name: pd.Series([_none_if_nan(row[name], dtypes[name]) for row in rows],
                                         dtype=dtypes[name]) for name in names})


def _none_if_nan(value: Any, dtype: str) -> Any:
    """A NaN in a nullable integer or str column as missing (pandas refuses NaN for Int64)."""
    if dtype in ("Int64", "str") and isinstance(value, float) and math.isnan(value):
        return None
    return value
