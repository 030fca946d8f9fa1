"""`nas launch --address` (and `nas ablate --address`) on real Ray clusters on this machine: two
nodes from ray.cluster_utils, and a head started the way a user starts one, `ray start --head`,
which turns token authentication on when it finds a token (Ray 2.60)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from nas.db import Store

from nas.cli.ray_reaper import descendants
from tests.cifar_fixture import write_cifar
from tests.helpers import experiment_yaml, free_port, kill_all
from ray.cluster_utils import Cluster


@pytest.mark.slow
def test_trials_run_on_both_nodes_of_a_two_node_cluster(tmp_path):
    # nas runs in its own process, as a user runs it: Ray keeps a process's authentication
    # mode in C++ state that its config refresh does not reach, so a process whose local Ray
    # (an earlier test's) turned token mode on cannot then drive a cluster without it (its
    # workers' calls are refused: "Missing authorization header").
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        data_root = write_cifar(tmp_path / "cifar", n_train_per_class=40, n_test_per_class=10)
        space = experiment_yaml(tmp_path / "cluster.yaml", name="cluster",
                                resources={"cpus_per_trial": 1, "max_concurrent": 2})
        db = tmp_path / "nas.db"
        env = {key: value for key, value in os.environ.items() if key not in RAY_VARIABLES}
        result = _nas(env, "launch", str(space), "--db", str(db), "--data-root", str(data_root),
                      "--address", cluster.address)
        assert result.returncode == 0, result.stdout + result.stderr
        with Store.open(str(db), read_only=True) as store:
            trials = store.trials(phase="search")
        assert len(trials) == 4 and all(str(t.status) == "completed" for t in trials)
        nodes = {t.device.rsplit("/", 1)[-1] for t in trials}
        alive = {node.node_id[:8] for node in cluster.list_all_nodes()}
        assert nodes == alive and len(nodes) == 2
    finally:
        cluster.shutdown()


# ---- a head started with `ray start --head` ----------------------------------------------------

RAY_CLI = Path(sys.executable).parent / "ray"
HEAD_START_TIMEOUT_S = 120  # `ray start --head` on a busy 2-core machine
RAY_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


@pytest.fixture(scope="module")
def token_head(tmp_path_factory):
    """A head from `ray start --head --block` (its own temp dir and free ports; its own HOME,
    holding a token from `ray get-auth-token --generate`, as a user's would): (address, env)."""
    folder = tmp_path_factory.mktemp("head")
    env = {key: value for key, value in os.environ.items() if key not in RAY_VARIABLES}
    env["HOME"] = str(folder / "home")
    subprocess.run([str(RAY_CLI), "get-auth-token", "--generate"], env=env, check=True, capture_output=True,
                   timeout=120)
    temp_dir = tempfile.mkdtemp(prefix="nas-head-", dir="/tmp")  # short: Ray's socket paths have a limit
    port = free_port()
    log = folder / "head.log"
    with open(log, "w") as out:
        head = subprocess.Popen(
            [str(RAY_CLI), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
             "--include-dashboard=false", "--dashboard-agent-listen-port", str(free_port()),
             "--disable-usage-stats", "--temp-dir", temp_dir],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    tree = [head.pid]
    try:
        deadline = time.monotonic() + HEAD_START_TIMEOUT_S
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        assert "Token authentication is enabled" in log.read_text(), log.read_text()
        tree += descendants(head.pid)
        yield f"127.0.0.1:{port}", env
    finally:
        # This head only, never `ray stop` (it stops every Ray of this user on the machine).
        # SIGTERM to `ray start` alone: it drains and stops its processes (a SIGTERM to all of
        # them at once leaves it waiting 30 s for a drain that cannot finish).
        tree += descendants(head.pid)
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        kill_all(tree)
        head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def launched_on_head(token_head, tmp_path_factory):
    """A tiny experiment launched on the head: (completed process, db, data root)."""
    address, env = token_head
    folder = tmp_path_factory.mktemp("on-head")
    data = write_cifar(folder / "cifar", n_train_per_class=20, n_test_per_class=5)
    space = experiment_yaml(folder / "onhead.yaml", name="onhead", recipe={"epochs": 1},
                            space={"width": {"fixed": 0.125}, "L1.residual": {"choice": [0, 1]}})
    db = folder / "nas.db"
    result = _nas(env, "launch", str(space), "--budget", "none", "--address", address, "--db", str(db),
                  "--data-root", str(data))
    return result, db, data


def _nas(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas", *args], env=env, capture_output=True, text=True, check=False,
                          timeout=600)


@pytest.mark.slow
def test_launch_joins_a_ray_start_head_with_the_token_ray_start_found(launched_on_head):
    result, db, _ = launched_on_head
    assert result.returncode == 0, result.stdout + result.stderr
    with Store.open(str(db), read_only=True) as store:
        trials = store.trials(phase="search")
    assert len(trials) == 2 and all(str(t.status) == "completed" for t in trials), result.stdout


@pytest.mark.slow
def test_ablate_joins_a_ray_start_head_with_its_token(token_head, launched_on_head):
    address, env = token_head
    launch, db, data = launched_on_head
    assert launch.returncode == 0, launch.stdout + launch.stderr
    result = _nas(env, "ablate", "onhead", "--repeats", "3", "--address", address, "--db", str(db),
                  "--data-root", str(data))
    assert result.returncode == 0, result.stdout + result.stderr
    with Store.open(str(db), read_only=True) as store:
        runs = store.trials(phase="ablation")
    assert runs and all(str(t.status) == "completed" for t in runs), result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setting", "named"),
    [({"HOME": "no-home"}, "requires its auth token and none was found here"),
     ({"RAY_AUTH_TOKEN": "not-the-token"}, "requires its auth token and it refused the token found here"),
     ({"RAY_AUTH_MODE": "disabled"}, "requires token authentication, but RAY_AUTH_MODE=disabled here")],
    ids=["no-token", "wrong-token", "auth-disabled-here"],
)
def test_a_token_the_head_would_refuse_is_named_in_one_line_before_anything_is_written(token_head, tmp_path,
                                                                                       setting, named):
    address, env = token_head
    env = {**env, **setting}
    if setting.get("HOME"):
        env["HOME"] = str(tmp_path / "home")  # no ~/.ray/auth_token there
    space = experiment_yaml(tmp_path / "x.yaml")
    data = write_cifar(tmp_path / "cifar", n_train_per_class=20, n_test_per_class=5)
    db = tmp_path / "nas.db"
    result = _nas(env, "launch", str(space), "--budget", "none", "--address", address, "--db", str(db),
                  "--data-root", str(data))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --address {address}: the Ray cluster there "), lines
    assert named in lines[0]
    assert not db.exists()
