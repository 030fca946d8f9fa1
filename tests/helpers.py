"""Helpers several test modules share (test modules never import each other)."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import signal
import socket
from pathlib import Path

import nas.dashboard
import numpy as np
import yaml

# ---- experiments ----------------------------------------------------------------------


def experiment_yaml(path: Path, **sections) -> Path:
    """A tiny experiment: 2x2 residual placements, width 0.125, 3 epochs of 40 images/class."""
    spec = {
        "name": "tiny",
        "dataset": {"val_size": 100},
        "recipe": {"epochs": 3, "batch_size": 50, "eval_batch_size": 256},
        "space": {
            "width": {"fixed": 0.125},
            "L1.residual": {"choice": [0, 1]},
            "L3.residual": {"choice": [0, 1]},
        },
        "search": {"sampler": "grid", "pruner": {"kind": "none"}},
        "confirm": {"top_k": 0, "repeats": 1},
        "resources": {"cpus_per_trial": 1, "max_concurrent": 2},
    }
    for key, value in sections.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and key != "space" else value
    path.write_text(yaml.safe_dump(spec))
    return path


# ---- invalid experiment files (tests/invalid_spaces): each names the file and the key path

# Values that once passed validation and failed only after the store was written (non-finite
# floats, counts past what the store or the dataset holds, names past the store's column).
PREWRITE_CASES = [
    ("recipe_lr_inf.yaml", None, "recipe.lr", "lr must be a finite number, but got inf"),
    ("pruner_margin_nan.yaml", None, "search.pruner.margin", "must be a finite number, but got nan"),
    ("confirm_max_seconds_inf.yaml", None, "confirm.max_seconds", "must be a finite number"),
    ("resources_cpus_nan.yaml", None, "resources.cpus_per_trial", "must be a finite number"),
    ("resources_cpus_huge.yaml", None, "resources.cpus_per_trial", "cpus_per_trial must be at most 4096"),
    ("float_range_inf.yaml", None, "space.width.float", "must be finite"),
    ("float_step_nan.yaml", None, "space.width.step", "positive number"),
    ("val_size_above_train_set.yaml", None, "dataset.val_size", "at most 49990"),
    ("val_plus_subset_above_train_set.yaml", None, "dataset.train_subset", "at most 5000 (the 50000 training images"),
    ("n_trials_huge.yaml", None, "search.n_trials", "n_trials must be at most 100000"),
    ("budget_epochs_huge.yaml", "cpu", "budgets.cpu.recipe.epochs", "at most 10000"),
    ("name_too_long.yaml", None, "name", "at most 200 characters"),
]

# (file, --budget, key path the message must name, a word of the rule)
INVALID_CASES = [
    ("unknown_top_level_key.yaml", None, "serach", "unknown top-level key"),
    ("unknown_recipe_key.yaml", None, "recipe.epoch", "unknown key"),
    ("unknown_dataset_key.yaml", None, "dataset.val_szie", "unknown key"),
    ("unknown_search_key.yaml", None, "search.ntrials", "unknown key"),
    ("unknown_confirm_key.yaml", None, "confirm.topk", "unknown key"),
    ("unknown_resources_key.yaml", None, "resources.gpus", "unknown key"),
    ("recipe_epochs_string.yaml", None, "recipe.epochs", "must be an integer"),
    ("empty_choice.yaml", None, "space.L1.residual.choice", "must not be empty"),
    ("duplicate_choices.yaml", None, "space.L1.residual.choice", "more than once"),
    ("int_low_above_high.yaml", None, "space.L1.extra.int", "low must be <= high"),
    ("float_low_above_high.yaml", None, "space.width.float", "low must be <= high"),
    ("float_log_nonpositive_low.yaml", None, "space.width.float", "log scale needs low > 0"),
    ("two_kinds.yaml", None, "space.L1.residual", "exactly one of"),
    ("no_kind.yaml", None, "space.L1.residual", "exactly one of"),
    ("unknown_stage.yaml", None, "space.L4.residual", "not an architecture field"),
    ("misspelt_arch_field.yaml", None, "space.L1.residul", "Did you mean 'L1.residual'"),
    ("unbuildable_value.yaml", None, "space.L1.residual.choice", "does not give a valid architecture"),
    ("when_unknown_key.yaml", None, "space.L2.extra.when.L3.residual", "not a key of the space"),
    ("when_impossible_value.yaml", None, "space.L2.extra.when.L1.residual", "not a possible value"),
    ("cyclic_conditions.yaml", None, "space.L2.extra.when.L1.residual", "cycle"),
    ("self_condition.yaml", None, "space.L1.residual.when.L1.residual", "itself"),
    ("unknown_sampler.yaml", None, "search.sampler", "must be one of tpe"),
    ("unknown_pruner_kind.yaml", None, "search.pruner.kind", "Did you mean 'median'"),
    ("pruner_option_typo.yaml", None, "search.pruner.n_startup_trail", "not an option"),
    ("pruner_option_wrong_type.yaml", None, "search.pruner.n_warmup_steps", "must be an integer"),
    ("patient_without_patience.yaml", None, "search.pruner.patience", "missing"),
    ("percentile_out_of_range.yaml", None, "search.pruner.percentile", "between 0 and 100"),
    ("unknown_objective_metric.yaml", None, "search.objectives[0].metric", "must be one of val_acc"),
    ("unknown_objective_direction.yaml", None, "search.objectives[0].direction", "maximize, minimize"),
    ("grid_continuous_float.yaml", None, "space.width.float", "grid sampler"),
    ("unknown_budget.yaml", "gpu", "budgets.gpu", "available budgets: cpu"),
    ("budget_unknown_section.yaml", "cpu", "budgets.cpu.optimizer", "cannot override"),
    ("budget_invalid_value.yaml", "cpu", "budgets.cpu.recipe.epochs", "at least 1"),
    ("yaml_syntax_error.yaml", None, "line 5", "invalid YAML"),
    ("duplicate_yaml_key.yaml", None, "line 4", "duplicate key 'L1.residual'"),
    ("top_level_list.yaml", None, "top level", "must be a mapping"),
    ("n_trials_zero.yaml", None, "search.n_trials", "n_trials must be at least 1, but got 0"),
    ("confirm_repeats_zero.yaml", None, "confirm.repeats", "repeats must be at least 1, but got 0"),
    ("dataset_not_cifar10.yaml", None, "dataset.name", "only cifar10"),
    ("missing_space.yaml", None, "space", "missing"),
    *PREWRITE_CASES,
]


# ---- the dashboard under Streamlit's AppTest ---------------------------------------------

APP = Path(nas.dashboard.__file__).resolve().parent / "app.py"
TIMEOUT_S = 60  # the first run imports torch (via nas.models); later runs take ~0.1 s


def figures_of(at) -> list[dict]:
    """The Plotly figures of the page, with typed arrays decoded to lists."""
    return [_decode(json.loads(chart.proto.spec)) for chart in at.get("plotly_chart")]


def _decode(obj):
    """Plotly >= 6 writes numeric arrays as ``{"dtype", "bdata"[, "shape"]}`` (base64)."""
    if isinstance(obj, dict) and "bdata" in obj and "dtype" in obj:
        array = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=obj["dtype"])
        if "shape" in obj:
            array = array.reshape([int(n) for n in str(obj["shape"]).split(",")])
        return array.tolist()
    if isinstance(obj, dict):
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def trace(at, name: str) -> dict:
    found = [t for fig in figures_of(at) for t in fig["data"] if t.get("name") == name]
    assert found, f"no trace named {name!r}"
    return found[0]


# ---- processes and the sockets they listen on (Linux /proc) ------------------------------


def free_port() -> int:
    """A TCP port nothing listens on now (the OS's pick on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening_by_inode() -> dict[int, tuple[str, int]]:
    """Every TCP socket in the LISTEN state on this machine: inode -> (address, port)."""
    found = {}
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        table = Path("/proc/net") / name
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            hex_address, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_address)  # 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found[int(fields[9])] = (socket.inet_ntop(family, raw), int(hex_port, 16))
    return found


def listening(pids: list[int]) -> set[tuple[str, int]]:
    """The (address, port) pairs the processes `pids` listen on, from /proc/net/tcp{,6} and
    their open file descriptors."""
    sockets = _listening_by_inode()
    found = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue  # ended meanwhile
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in sockets:
                found.add(sockets[int(target[8:-1])])
    return found


def listens_on(port: int) -> bool:
    """Whether any process on this machine listens on TCP `port`."""
    return any(p == port for _, p in _listening_by_inode().values())


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback (::ffff:127.0.0.1)."""
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(ip.version == 6 and ip.ipv4_mapped and ip.ipv4_mapped.is_loopback)


def is_alive(pid: int) -> bool:
    """Running (a zombie has ended, only its exit status is left)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def kill_all(pids: list[int]) -> None:
    """SIGKILL each of `pids` still running (clean-up after a test, by pid only)."""
    for pid in pids:
        if is_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def rising_recording(spec, level_of, *, seeds: int, epochs: int, val_images: int, rng_seed: int,
                     epoch_seconds: float = 1.0, seed_sd: float = 0.01):
    """A synthetic `nas.trials.recorded.Recording` of `spec`'s grid for replays: each
    architecture's val curve rises to `level_of(arch)` (plus Gaussian seed noise `seed_sd`),
    each epoch a binomial draw on `val_images` images; the per-image bits are the last epoch's.
    Seeded: the same recording every call."""
    from nas.stats import pack_correct
    from nas.trials.recorded import Recording

    archs = [spec.space.arch_from_params(point) for point in spec.space.grid()]
    rng = np.random.default_rng(rng_seed)
    k = len(archs)
    val = np.zeros((k, seeds, epochs))
    bits = np.zeros((k, seeds, (val_images + 7) // 8), dtype=np.uint8)
    for i, arch in enumerate(archs):
        for j in range(seeds):
            level = level_of(arch) + seed_sd * rng.standard_normal()
            for e in range(epochs):
                right = rng.random(val_images) < level * (0.7 + 0.1 * e)
                val[i, j, e] = right.mean()
            bits[i, j] = np.frombuffer(pack_correct(right), dtype=np.uint8)
    seconds = np.cumsum(np.full((k, seeds, epochs), epoch_seconds), axis=2)
    return Recording(tuple(a.hash for a in archs), tuple(a.short_name() for a in archs), tuple(range(100, 100 + seeds)),
                     2.0 - val, val.copy(), val, val.copy(), seconds, bits, bits.copy(), val_images, val_images,
                     np.ones((k, seeds), dtype=bool), {})
