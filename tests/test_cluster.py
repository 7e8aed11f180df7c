"""The cluster path: a study on a multi-node Ray cluster (Ray's own ``cluster_utils``, two nodes on
this machine) reached by the head's GCS address, as ``ray start --head`` prints it, with token
authentication on."""
import os
import secrets

import pytest
import ray
import yaml
from ray.cluster_utils import Cluster

from harness.cli import main
from harness.tracking import Tracker

STUDY = {
    "name": "tiny_cluster", "paper": "gsp_conv", "title": "tiny",
    "data": {"dataset": "synthetic_organ", "params": {"n_cases": 4, "shape": [16, 32, 32]}},
    "model": {"name": "gsp_unet", "params": {"conv": "pointwise", "widths": [4, 4, 8, 8, 8]}},
    "variants": [{"name": "a"}, {"name": "b", "params": {"conv": "conv3"}}],
    "seeds": 2,
    "train": {"patch": [16, 32, 32], "epochs": 1, "steps_per_epoch": 2, "batch_size": 1},
    "cost": {"latency": False},
    "resources": {"cpu": 1},
    "scales": {"smoke": {}, "quick": {}, "paper": {}},
}


@pytest.fixture
def token_cluster(tmp_path, monkeypatch):
    """Head and worker node (1 CPU each) with token authentication, as `ray start --head` sets it up;
    the driver's environment then has the token file but no RAY_AUTH_MODE, like a user's shell."""
    if ray.is_initialized():
        ray.shutdown()
    # Ray caches the auth mode and the token: its own test helper re-reads both after each change.
    from ray._private.authentication_test_utils import reset_auth_token_state

    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    reset_auth_token_state()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    monkeypatch.delenv("RAY_AUTH_MODE")
    reset_auth_token_state()
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        # Leave Ray as the next test expects it: no auth mode set (harness set it for the
        # explicit address), the default token path, no cached token of this cluster.
        os.environ.pop("RAY_AUTH_MODE", None)
        monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
        reset_auth_token_state()


@pytest.mark.slow
def test_a_study_runs_on_every_node_of_a_cluster_reached_by_host_port(token_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(STUDY))
    assert main(["run", "s.yaml", "--address", token_cluster.address, "-v", "0"]) == 0
    client = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}").client
    exp = client.get_experiment_by_name("harness/tiny_cluster")
    runs = client.search_runs([exp.experiment_id], "tags.harness_role = 'trial'")
    keys = [r.data.tags["trial_key"] for r in runs]
    assert len(keys) == 4 and len(set(keys)) == 4  # each trial exactly once
    assert all(r.info.status == "FINISHED" for r in runs)
    nodes = {r.data.tags["result.node"] for r in runs}
    assert len(nodes) == 2 and nodes == {n["NodeID"] for n in ray.nodes() if n["Alive"]}
