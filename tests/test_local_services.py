"""What nas starts on this machine listens on loopback only, and stops with the command that
started it (issue 14, class 7): the dashboard's Streamlit server and the local Ray of
`nas launch`. Reads sockets and processes from /proc (Linux)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nas.cli import app
from nas.cli.ray_reaper import descendants
from nas.db import Store
from tests.cifar_fixture import write_cifar
from tests.helpers import (
    command_line,
    experiment_yaml,
    free_port,
    is_alive,
    is_loopback,
    kill_all,
    listening,
    listens_on,
)

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads sockets from /proc (Linux)")

START_TIMEOUT_S = 90  # Streamlit or Ray starting on a busy 2-core machine
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


# ---- nas dashboard ---------------------------------------------------------------------------


@pytest.fixture
def dashboard(tmp_path):
    """`nas dashboard` on an empty store and a free port, serving: (process, port)."""
    db = tmp_path / "nas.db"
    Store.open(str(db)).close()
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "nas", "dashboard", "--db", str(db), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def healthy() -> bool:
        assert process.poll() is None, f"nas dashboard exited with {process.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                return response.read().strip() == b"ok"
        except OSError:
            return False

    tree = []
    try:
        _wait_for(healthy, START_TIMEOUT_S, "the dashboard did not answer")
        tree = [process.pid, *descendants(process.pid)]
        yield process, port
    finally:
        kill_all([*tree, *descendants(process.pid)])
        process.wait()


def test_nas_dashboard_listens_on_loopback_only_by_default(dashboard):
    process, port = dashboard
    addresses = listening([process.pid, *descendants(process.pid)])
    assert port in {p for _, p in addresses}, addresses
    assert all(is_loopback(address) for address, _ in addresses), addresses


def test_sigterm_stops_nas_dashboard_and_its_server(dashboard):
    process, port = dashboard
    tree = [process.pid, *descendants(process.pid)]
    process.send_signal(signal.SIGTERM)  # to the command only, as a supervisor or `kill` does
    code = process.wait(timeout=30)
    left = [pid for pid in tree if is_alive(pid)]
    assert not left, [command_line(pid) for pid in left]
    assert not listens_on(port)
    assert code == 0  # Streamlit's clean stop


@pytest.mark.parametrize(("host", "warned"), [(None, False), ("127.0.0.1", False), ("localhost", False),
                                              ("0.0.0.0", True)])
def test_dashboard_host_other_than_loopback_warns_that_it_has_no_authentication(tmp_path, monkeypatch, host,
                                                                                warned):
    served = {}
    monkeypatch.setattr("nas.dashboard.serve.serve", lambda url, port, address: served.update(address=address))
    db = tmp_path / "nas.db"
    Store.open(str(db)).close()
    result = CliRunner().invoke(app, ["dashboard", "--db", str(db), *(["--host", host] if host else [])])
    assert result.exit_code == 0, result.output
    assert served["address"] == (host or "127.0.0.1")
    assert ("has no authentication" in result.output) == warned, result.output


def test_a_dashboard_host_that_is_no_address_is_refused_in_one_line(tmp_path):
    db = tmp_path / "nas.db"
    Store.open(str(db)).close()
    result = CliRunner().invoke(app, ["dashboard", "--db", str(db), "--host", "no-such-host.invalid"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --host no-such-host.invalid: not an address to listen on")


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
