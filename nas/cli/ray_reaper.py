"""Kill what a driver's local Ray leaves behind when the driver dies without shutting it down.

`nas launch` and `nas ablate` without --address start Ray inside the driver process. Ray
ties its GCS and raylet to the driver (PR_SET_PDEATHSIG), but not the raylet's two agents:
after a SIGKILL of the driver (or a SIGTERM, which Python does not turn into a clean
shutdown), Ray 2.60's dashboard agent and runtime-env agent see the raylet gone, then try to
report that to the GCS, gone too, for 60 s (`publish_error_to_driver`'s timeout), and ignore
SIGTERM meanwhile. A clean exit (Ctrl-C, the end of a run) leaves nothing.

This watchdog, a child of the driver, notes the Ray processes under the driver (their pid and
start time), and SIGKILLs those still alive as soon as its stdin reads end-of-file: the
driver holds the pipe's other end, so that happens however the driver ends. Linux only (it
reads /proc). Run as ``python -P ray_reaper.py DRIVER_PID RAY_PACKAGE_DIR``; it imports only
the standard library.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from pathlib import Path

PROC = Path("/proc")
FAST_POLL_S = 1.0  # how often the tree is read while Ray starts its processes
SLOW_POLL_S = 10.0  # afterwards: later processes are trial workers, which die with the raylet
FAST_FOR_S = 60.0


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 onwards), or None."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # gone, or not ours to read


def _start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot): a pid with another start time is
    another process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def descendants(pid: int) -> list[int]:
    """Every process under `pid` (children, their children, ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _is_ray(pid: int, ray_dir: str) -> bool:
    """A Ray process: a worker or agent (titled ``ray::...``) or a program or script from Ray's
    package (gcs_server, raylet, the dashboard head, the monitors)."""
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return argv[0].startswith("ray::") or any(arg.startswith(ray_dir + os.sep) for arg in argv[:3])


def watch(driver: int, ray_dir: str, stdin_fd: int = 0) -> list[int]:
    """Note the driver's Ray processes until `stdin_fd` reads end-of-file, then SIGKILL those
    still alive; the pids killed."""
    seen: dict[int, int] = {}
    started = time.monotonic()
    while True:
        interval = FAST_POLL_S if time.monotonic() - started < FAST_FOR_S else SLOW_POLL_S
        readable, _, _ = select.select([stdin_fd], [], [], interval)
        if readable and not os.read(stdin_fd, 4096):
            break  # the driver is gone
        for pid in descendants(driver):
            if pid not in seen and pid != os.getpid() and _is_ray(pid, ray_dir):
                start = _start_time(pid)
                if start is not None:
                    seen[pid] = start
    killed = []
    for pid, start in seen.items():
        if _start_time(pid) == start:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass  # ended meanwhile
    return killed


def start(ray_dir: str) -> None:
    """Start the watchdog for this process's local Ray (Linux; elsewhere nothing happens).

    The pipe's write end stays open in this process, unused, until it exits; it is
    close-on-exec, so no program Ray starts holds it open. Spawned without a Popen object,
    which would warn when collected while the watchdog runs (as it should).
    """
    if not (PROC / "self" / "stat").exists():
        return
    read_end, _write_end = os.pipe()
    # -P: not this folder on sys.path, so no module here can stand in for a library one.
    argv = [sys.executable, "-P", __file__, str(os.getpid()), ray_dir]
    os.posix_spawn(sys.executable, argv, os.environ,
                   file_actions=[(os.POSIX_SPAWN_DUP2, read_end, 0),
                                 (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
    os.close(read_end)


if __name__ == "__main__":
    # Ctrl-C in a terminal reaches the whole process group; the watchdog must outlive the
    # driver's shutdown to check what it left.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(int(sys.argv[1]), sys.argv[2])
