"""What reproduces a result: the code version and the device it ran on."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

from typing import TYPE_CHECKING

from nas._version import __version__
from nas.errors import ConfigError, shown

if TYPE_CHECKING:
    import torch  # imported where used: a Ray worker or the driver records code versions without it


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``0.1.0+g1a2b3c4`` (``-dirty`` with uncommitted changes), or the bare version
    when nas is not running from a git checkout."""
    version = __version__
    repo = Path(__file__).resolve().parent.parent
    if not (repo / ".git").exists():
        return version
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=7", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{sha}{'-dirty' if dirty else ''}"


def default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str | None) -> torch.device:
    """The device `--device` names (None: `default_device`), checked before anything runs.

    Raises:
        ConfigError: not a cpu or cuda device torch knows, or a CUDA device this machine lacks.
    """
    import torch

    if not name:
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"--device {shown(name)}: not a device; use cpu, cuda or cuda:N.") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {shown(name)}: nas trains on cpu or cuda only; use cpu, cuda or cuda:N.")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {shown(name)}: no CUDA device is available here; use --device cpu.")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {shown(name)}: this machine has {count} CUDA device(s), "
                              f"cuda:0 to cuda:{count - 1}; choose one of them.")
    return device


def device_name(device: torch.device | str, threads: int | None = None) -> str:
    """A human-readable name that tells timings apart: GPU model, or CPU model and threads."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = threads or torch.get_num_threads()
    return f"cpu: {_cpu_model()} x{threads} threads"


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or os.name
