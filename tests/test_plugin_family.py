"""A toy family registered from outside harness/ runs through `harness run`, then its saved
weights are re-evaluated (`harness evaluate`) without retraining."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from harness.cli import main

pytestmark = pytest.mark.slow
PLUGIN = Path(__file__).parent / "plugins" / "toy_family.py"

STUDY = {
    "name": "toy_family", "paper": "harness", "title": "a family from outside harness/",
    "plugins": ["toy_family"],
    "data": {"dataset": "synthetic_organ", "params": {"n_cases": 4, "shape": [8, 16, 16]}},
    "model": {"name": "toy_two_heads"},
    "variants": [{"name": "toy"}],
    "train": {"patch": [8, 16, 16], "epochs": 2, "steps_per_epoch": 2, "batch_size": 2,
              "loss": {"name": "toy_edge_loss", "params": {"edge_weight": 0.5}}, "targets": ["toy_edge"],
              "callbacks": ["toy_all_foreground"], "inferer": "toy_flip_tta", "optimizer": "adam", "lr": 0.001},
    "cost": {"latency_runs": 1},
    # The plugin's own metric (harness.metrics), judged like a built-in one.
    "claims": [{"text": "the toy spends under 100 J", "where": "test", "better": "toy", "than": 100.0,
                "metric": "toy_energy_j", "direction": "lower"}],
    "seeds": 2,
    "scales": {"smoke": {}, "quick": {}, "paper": {}},
}


def trial_runs(client, role="trial"):
    exp = client.get_experiment_by_name("harness/toy_family")
    return client.search_runs([exp.experiment_id], f"tags.harness_role = '{role}'")


def test_outside_family_runs_saves_weights_and_reevaluates(tmp_path, monkeypatch, capsys):
    shutil.copy(PLUGIN, tmp_path / "toy_family.py")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(STUDY))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-m", "harness.cli", "run", "s.yaml", "-v", "0"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = trial_runs(client)
    assert sorted(r.data.tags["trial_key"] for r in runs) == ["toy#s0", "toy#s1"]
    for r in runs:
        m = r.data.metrics
        assert r.info.status == "FINISHED"
        # The callback's all-foreground model is what was evaluated and costed.
        assert m["sens_organ"] == 100.0 and m["spec_organ"] == 0.0 and m["toy_swapped"] == 1.0
        assert m["forward_passes"] == 2  # the plugin's two-view TTA, as run
        local = client.download_artifacts(r.info.run_id, "checkpoint/model.pt", str(tmp_path / r.info.run_id))
        assert os.path.getsize(local) == m["checkpoint_bytes"] > 0
        ckpt = torch.load(local, weights_only=True)
        assert ckpt["model"] == "toy_two_heads" and float(ckpt["state_dict"]["seg.bias"][0]) == 10.0

    # Re-evaluation: the trial's own inferer reproduces its Dice from the saved weights; another
    # inferer and an ensemble of the two seeds are costed as run.
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["evaluate", "s.yaml", "--inferer", "{name: ttaa}"]) == 2  # did you mean 'tta'; nothing written
    assert not trial_runs(client, "evaluation")
    capsys.readouterr()
    assert main(["evaluate", "s.yaml"]) == 0
    out = capsys.readouterr().out  # progress as it goes: a line per evaluation, then its Dice
    assert "[1/2] toy" in out and "[2/2] toy" in out and out.count("    Dice ") == 2
    assert main(["evaluate", "s.yaml", "--inferer", "{name: tta, params: {views: mirror}}", "--ensemble", "seeds"]) == 0
    evals = trial_runs(client, "evaluation")
    by_trial = {r.data.metrics["mean_dice"] for r in runs}
    own = [e for e in evals if e.data.tags["ensemble"] == "none"]
    assert len(own) == 2 and {e.data.metrics["mean_dice"] for e in own} == by_trial
    (ens,) = [e for e in evals if e.data.tags["ensemble"] == "seeds"]
    assert ens.data.metrics["members"] == 2 and ens.data.metrics["forward_passes"] == 2 * 4
    assert ens.data.metrics["gmacs"] == pytest.approx(4 * runs[0].data.metrics["gmacs"], rel=1e-9)
    assert set(ens.data.tags["member_runs"].split(",")) == {r.info.run_id for r in runs}
    # Started as the trials are (Tracker): under the study's parent run, with the commit and environment.
    parent = runs[0].data.tags["mlflow.parentRunId"]
    assert all(e.data.tags["mlflow.parentRunId"] == parent and "git_commit" in e.data.tags
               and "env.torch" in e.data.tags for e in evals)
    assert main(["report", "s.yaml", "--format", "md"]) == 0
    text = (tmp_path / "reports" / "local" / "toy_family" / "README.md").read_text()
    assert "## Re-evaluations" in text and "| tta " in text and "toy_flip_tta" in text
    _plugin_metric_reported_judged_and_searched(tmp_path, runs)

    # A checkpoint does not choose what is imported: trained with a plugin the study on the
    # command line does not name, it is skipped, and a --variant named but skipped exits 1.
    capsys.readouterr()
    (ckpt_file,) = tmp_path.glob(f"**/{runs[0].info.run_id}/artifacts/checkpoint/model.pt")
    ckpt = torch.load(ckpt_file, weights_only=True)
    torch.save({**ckpt, "trial": json.dumps({**json.loads(ckpt["trial"]), "plugins": ["evil_module"]})}, ckpt_file)
    assert main(["evaluate", "s.yaml", "--variant", "toy"]) == 1
    out = capsys.readouterr().out
    assert "trained with plugins ['evil_module'] that s.yaml does not name" in out and "--variant toy" in out
    # A damaged file is said to be damaged (not torch's advice to unpickle it unsafely).
    ckpt_file.write_bytes(b"not a checkpoint")
    assert main(["evaluate", "s.yaml", "--variant", "toy"]) == 1
    out = capsys.readouterr().out
    assert f"the checkpoint of run {runs[0].info.run_id} is damaged or not a harness checkpoint" in out
    assert "weights_only" not in out


def _plugin_metric_reported_judged_and_searched(tmp_path, runs):
    # The plugin registered toy_energy_j in the metric catalogue and its callback reported it.
    from harness.config import ConfigError
    from harness.search import Space

    assert all(r.data.metrics["toy_energy_j"] == 10.0 for r in runs)  # |seg.bias| summed, one channel
    folder = tmp_path / "reports" / "local" / "toy_family"
    (claim,) = json.loads((folder / "claims.json").read_text())["claims"]
    assert claim["metric"] == "toy_energy_j" and claim["verdict"] == "reproduced" and claim["effect"] == 90.0
    assert claim["kind"] == "result"  # measured, not arithmetic
    assert "toy energy (J)" in (folder / "README.md").read_text()  # the cost table's column
    space = {"name": "toy_search", "study": "s.yaml", "scale": "smoke", "knobs": {"width": {"choice": [4, 8]}},
             "objectives": [{"metric": "mean_dice", "mode": "max"}, {"metric": "toy_energy_j", "mode": "min"}],
             "trials": 2}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    assert [o.metric for o in Space(tmp_path / "space.yaml").cfg.objectives] == ["mean_dice", "toy_energy_j"]
    space["objectives"][1]["metric"] = "toy_energy"
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    with pytest.raises(ConfigError, match="objectives: unknown metric 'toy_energy'. Did you mean 'toy_energy_j'"):
        Space(tmp_path / "space.yaml")
