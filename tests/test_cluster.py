"""`nas launch --address` on a real two-node Ray cluster (both nodes on this machine)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from nas.cli import app
from nas.db import Store
from tests.cifar_fixture import write_cifar
from tests.helpers import experiment_yaml

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402


@pytest.mark.slow
def test_trials_run_on_both_nodes_of_a_two_node_cluster(tmp_path):
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        data_root = write_cifar(tmp_path / "cifar", n_train_per_class=40, n_test_per_class=10)
        space = experiment_yaml(tmp_path / "cluster.yaml", name="cluster",
                                resources={"cpus_per_trial": 1, "max_concurrent": 2})
        db = tmp_path / "nas.db"
        result = CliRunner().invoke(
            app, ["launch", str(space), "--db", str(db), "--data-root", str(data_root), "--address", cluster.address]
        )
        assert result.exit_code == 0, result.output
        with Store.open(str(db), read_only=True) as store:
            trials = store.trials(phase="search")
        assert len(trials) == 4 and all(str(t.status) == "completed" for t in trials)
        nodes = {t.device.rsplit("/", 1)[-1] for t in trials}
        alive = {n["NodeID"][:8] for n in ray.nodes() if n["Alive"]}
        assert nodes == alive and len(nodes) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()
