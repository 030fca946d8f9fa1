"""What nas starts on this machine listens on loopback only, and stops with the command that
started it (issue 14, class 7): the local Ray of `nas launch`. Reads sockets and processes
from /proc (Linux)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas.cli.ray_reaper import descendants
from tests.cifar_fixture import write_cifar
from tests.helpers import (
    command_line,
    experiment_yaml,
    is_alive,
    is_loopback,
    kill_all,
    listening,
)

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads sockets from /proc (Linux)")

START_TIMEOUT_S = 90  # Ray starting on a busy 2-core machine
GONE_TIMEOUT_S = 30  # Ray's agents, unreaped, live 60 s after the driver (their GCS report times out)


def _wait_for(condition, timeout_s: float, what: str, *, fail: bool = True) -> None:
    """Until `condition()` holds; after `timeout_s`, fail saying `what` (or return, to let the
    caller say more)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    if fail:
        pytest.fail(f"{what} within {timeout_s} s")


# ---- the local Ray of nas launch -------------------------------------------------------------


@pytest.fixture
def running_launch(tmp_path):
    """`nas launch` (local Ray) in a child process, once a trial is training: the process."""
    data = write_cifar(tmp_path / "cifar", n_train_per_class=40, n_test_per_class=10)
    space = experiment_yaml(tmp_path / "long.yaml", name="long", recipe={"epochs": 100, "batch_size": 50},
                            resources={"cpus_per_trial": 1, "max_concurrent": 1})
    cmd = [sys.executable, "-m", "nas", "launch", str(space), "--budget", "none", "--db", str(tmp_path / "nas.db"),
           "--data-root", str(data)]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    seen: set[int] = set()

    def training() -> bool:
        assert process.poll() is None, f"nas launch exited with {process.returncode}"
        tree = descendants(process.pid)
        seen.update(tree)
        return any(command_line(pid).startswith("ray::TrialTrainable") for pid in tree)

    try:
        _wait_for(training, START_TIMEOUT_S, "no trial started")
        yield process
    finally:
        if process.poll() is None:
            seen.update(descendants(process.pid))
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        kill_all(sorted(seen))


@pytest.mark.slow
def test_the_local_ray_of_nas_launch_listens_on_loopback_only(running_launch):
    tree = [running_launch.pid, *descendants(running_launch.pid)]
    addresses = listening(tree)
    names = " ".join(command_line(pid) for pid in tree)
    assert "gcs_server" in names and "raylet" in names and "ray::TrialTrainable" in names, names
    assert len(addresses) >= 4, addresses  # GCS, raylet (2), the trial's worker, the driver, ...
    assert all(is_loopback(address) for address, _ in addresses), addresses


@pytest.mark.slow
def test_no_process_of_a_sigkilled_nas_launch_outlives_it(running_launch):
    tree = descendants(running_launch.pid)  # its local Ray, the trial's worker, the watchdog
    names = " ".join(command_line(pid) for pid in tree)
    assert "ray::DashboardAgent" in names and "ray::RuntimeEnvAgent" in names, names  # the two that outlived it
    os.kill(running_launch.pid, signal.SIGKILL)  # the driver alone, with no chance to clean up
    running_launch.wait()
    _wait_for(lambda: not any(is_alive(pid) for pid in tree), GONE_TIMEOUT_S, "", fail=False)
    left = [command_line(pid) for pid in tree if is_alive(pid)]
    assert not left, f"still running {GONE_TIMEOUT_S} s after the driver was killed: {left}"
