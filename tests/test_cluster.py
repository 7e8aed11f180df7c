"""The cluster path: a study on a multi-node Ray cluster (Ray's own ``cluster_utils``, two nodes on
this machine) reached by the head's GCS address, as ``ray start --head`` prints it, with token
authentication on; and the local path: without ``--address`` a run starts an instance of its own.

Each scenario runs in a Python process of its own, as a user's command does: Ray keeps its
authentication mode in process-wide state that its public API cannot reset, and after a
token-authenticated cluster in the test process every later local start of the suite failed
("Failed to start GCS": the new GCS wanted a token the driver no longer sent)."""
import os
import subprocess
import sys

import pytest
import yaml

# One worker runs them all when the suite runs on several (pytest-xdist): the clusters start in turn.
pytestmark = pytest.mark.xdist_group("ray_cluster")

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

# Shared by the scenarios: a study file in the working folder and its trials' MLflow runs.
HEAD = """
import os, secrets, sys, yaml, ray
from ray.cluster_utils import Cluster
from harness.cli import main
from harness.tracking import Tracker
open("s.yaml", "w").write(sys.argv[1])
# The clusters' workers at normal priority, as the harness's local ones: at Ray's default
# (niceness 15) a busy machine starves them and the test crawls.
os.environ["RAY_worker_niceness"] = "0"

def trial_runs():
    client = Tracker(f"sqlite:///{os.path.abspath('mlflow.db')}").client
    exp = client.get_experiment_by_name("harness/tiny_cluster")
    return client.search_runs([exp.experiment_id], "tags.harness_role = 'trial'")
"""

TOKEN_CLUSTER = HEAD + """
# Head and worker node (1 CPU each) with token authentication, as `ray start --head` sets it up;
# the driver's environment then has the token file but no RAY_AUTH_MODE, like a user's shell.
# Ray caches the auth mode and the token: its own test helper re-reads both after each change.
from ray._private.authentication_test_utils import reset_auth_token_state
open("auth_token", "w").write(secrets.token_hex(32))
os.environ["RAY_AUTH_TOKEN_PATH"] = os.path.abspath("auth_token")
os.environ["RAY_AUTH_MODE"] = "token"
reset_auth_token_state()
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
del os.environ["RAY_AUTH_MODE"], os.environ["RAY_worker_niceness"]
reset_auth_token_state()
try:
    assert main(["run", "s.yaml", "--address", cluster.address, "-v", "0"]) == 0
    runs = trial_runs()
    keys = [r.data.tags["trial_key"] for r in runs]
    assert len(keys) == 4 and len(set(keys)) == 4, keys  # each trial exactly once
    assert all(r.info.status == "FINISHED" for r in runs)
    nodes = {r.data.tags["result.node"] for r in runs}
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2 and nodes == alive, (nodes, alive)
finally:
    ray.shutdown()
    cluster.shutdown()
"""

STAYS_LOCAL = HEAD + """
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
del os.environ["RAY_worker_niceness"]
try:
    ray.init(address=cluster.address)
    live = {n["NodeID"] for n in ray.nodes()}
    ray.shutdown()
    os.environ["RAY_ADDRESS"] = cluster.address  # as a user's shell may have it
    assert main(["run", "s.yaml", "-v", "0"]) == 0
    assert os.environ["RAY_ADDRESS"] == cluster.address  # the environment is left as it was
    nodes = {r.data.tags["result.node"] for r in trial_runs()}
    assert live and nodes and not nodes & live, (live, nodes)
finally:
    ray.shutdown()
    cluster.shutdown()
"""

PRIORITY = """
import os, ray
from harness.tune import _init_ray
_init_ray(None, 0)
assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == os.nice(0)
assert "RAY_worker_niceness" not in os.environ  # the user's environment is left as it was
ray.shutdown()
"""


def _script(code: str, cwd, *args) -> None:
    # No RAY_ variable of the test's environment leaks in: each scenario sets up its own.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    p = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


@pytest.mark.slow
def test_a_study_runs_on_every_node_of_a_cluster_reached_by_host_port(tmp_path):
    _script(TOKEN_CLUSTER, tmp_path, yaml.safe_dump(STUDY))


@pytest.mark.slow
def test_without_address_a_run_stays_local_whatever_cluster_is_live(tmp_path):
    # A live cluster on this machine, named by RAY_ADDRESS: a run with no --address starts its
    # own instance and no trial lands on the cluster.
    _script(STAYS_LOCAL, tmp_path, yaml.safe_dump({**STUDY, "seeds": 1}))


@pytest.mark.slow
def test_local_trials_run_at_the_users_priority_not_below_it(tmp_path):
    # Ray's default worker niceness (15) starves trials beside any other work on the machine.
    _script(PRIORITY, tmp_path)


@pytest.mark.slow
def test_a_command_under_another_environment_gets_workers_with_that_environment(tmp_path, monkeypatch):
    # In-process commands share the Ray instance the first one started; one run under another
    # cache folder (or plugin path) gets a new instance, or its trials would use the old folder.
    import ray

    from harness.tune import _init_ray

    cache_of = ray.remote(lambda: os.environ.get("HARNESS_CACHE"))
    nodes = []
    for name in ("a", "b", "b"):
        monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / name))
        _init_ray(None, 0)
        nodes.append(ray.get_runtime_context().get_node_id())
        assert ray.get(cache_of.remote()) == str(tmp_path / name)
    assert nodes[0] != nodes[1] == nodes[2]  # a new instance for b, then b's kept
    ray.shutdown()
