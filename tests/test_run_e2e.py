"""End to end through Ray Tune and MLflow: failures recorded, kill + --resume exact."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

TINY = {
    "name": "tiny_e2e",
    "paper": "gsp_conv",
    "title": "tiny",
    "data": {"dataset": "synthetic_organ", "params": {"n_cases": 4, "shape": [16, 32, 32]}},
    "model": {"name": "gsp_unet", "params": {"conv": "pointwise", "widths": [4, 4, 8, 8, 8],
                                             "groups": [[2, 2, 2], [1, 2, 2], [1, 2, 2], [1, 1, 1], [1, 1, 1]]}},
    "variants": [{"name": "pw"}, {"name": "csc", "params": {"insert": "CSC"}}],
    "train": {"patch": [16, 32, 32], "epochs": 2, "steps_per_epoch": 2, "batch_size": 2},
    "cost": {"latency_runs": 1},
    "scales": {"smoke": {}, "quick": {}, "paper": {}},
    "expected": {"pw": {"mean_dice": 65.5}},
}

pytestmark = pytest.mark.slow
PLUGINS = Path(__file__).parent / "plugins"


def harness(args, cwd, plugins=False, **kw):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if plugins:  # the study imports a plugin from tests/plugins
        env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def runs(tmp_path, study="tiny_e2e"):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"harness/{study}")
    return client.search_runs([exp.experiment_id], "tags.harness_role = 'trial'") if exp else []


def finished_by_key(rs):
    out = {}
    for r in rs:
        if r.info.status == "FINISHED":
            out.setdefault(r.data.tags["trial_key"], []).append(r.info.run_id)
    return out


def ended_keys_raw(tmp_path):
    """Trial keys whose run ended (finished or failed): a read-only peek while the driver writes
    (an MlflowClient here would race its schema migration)."""
    try:
        with sqlite3.connect(f"file:{tmp_path / 'mlflow.db'}?mode=ro", uri=True, timeout=1) as db:
            return {k for (k,) in db.execute("select t.value from runs r join tags t on r.run_uuid = t.run_uuid "
                                             "where t.key = 'trial_key' and r.status in ('FINISHED', 'FAILED')")}
    except sqlite3.OperationalError:  # not created yet, or mid-migration
        return set()


def test_failed_trial_is_recorded_and_the_study_goes_on(tmp_path):
    study = {**TINY, "variants": TINY["variants"] + [{"name": "diverge", "train": {"lr": 1e30}}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    p = harness(["run", "s.yaml"], tmp_path)  # the default verbosity: a line per trial
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 1, out
    rs = runs(tmp_path)
    status = {r.data.tags["trial_key"]: r.info.status for r in rs}
    assert status == {"pw#s0": "FINISHED", "csc#s0": "FINISHED", "diverge#s0": "FAILED"}, out
    failed = next(r for r in rs if r.info.status == "FAILED")
    assert "non-finite training loss" in failed.data.tags["error"]
    done = next(r for r in rs if r.data.tags["trial_key"] == "csc#s0")
    m = done.data.metrics
    assert m["gmacs"] > 0 and m["params"] > 0 and 0 <= m["mean_dice"] <= 100 and "latency_ns_per_voxel" in m
    assert m["time_train_s"] > 0 and m["train_peak_mem_mb"] > 0
    assert done.data.params["model.params.insert"] == "CSC" and done.data.tags["git_commit"]
    assert "diverge#s0" in out and "failed" in out
    # Readable output: one line per settled trial with its whole key, no Ray status tables or
    # token notices, and a closing line naming the MLflow run and the report command.
    progress = [ln for ln in out.splitlines() if ln.startswith("[")]
    assert len(progress) == 3 and any("FAILED diverge#s0" in ln for ln in progress), out
    assert all(("/3]" in ln and "running" in ln) for ln in progress)
    assert "Trial status" not in out and "Token authentication" not in out and len(out.splitlines()) < 12, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("tiny_e2e@smoke: 2/3 trials finished") and "Report: harness report s.yaml" in last


def test_kill_midway_then_resume_gives_one_finished_run_per_trial(tmp_path):
    # v1-v3 wait at a gate (tests/plugins/gate.py) until the test opens it, so the kill lands
    # while they are in flight, however fast or loaded the machine; v0 finishes first: it has the
    # most steps, and trials start longest first, however few run at once.
    gate = tmp_path / "gate_open"
    held = {"callbacks": [{"name": "test_gate", "params": {"file": str(gate)}}]}
    study = {**TINY, "plugins": ["gate"], "expected": {},
             "variants": [{"name": f"v{i}", "params": {"insert": ins}, "train": held if i else {"steps_per_epoch": 8}}
                          for i, ins in enumerate(["CSC", "CCS", "CSCS", "CSCSUpShift"])]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    p = harness(["run", "s.yaml", "-v", "0"], tmp_path, start_new_session=True, plugins=True)
    # Polled until a trial has ended, however slow the machine (v0 failing would otherwise leave
    # the held trials waiting for ever).
    while p.poll() is None and not ended_keys_raw(tmp_path):
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)  # the driver, its Ray instance and the trials
    p.wait()
    before = finished_by_key(runs(tmp_path))
    assert sorted(before) == ["v0#s0"]

    gate.touch()
    r = harness(["run", "s.yaml", "--resume", "-v", "0"], tmp_path, plugins=True)
    out = r.communicate(timeout=600)[0]
    assert r.returncode == 0, out
    assert "1 of 4 trials finished" in out
    after = finished_by_key(runs(tmp_path))
    assert sorted(after) == ["v0#s0", "v1#s0", "v2#s0", "v3#s0"]
    assert all(len(ids) == 1 for ids in after.values()), after
    assert after["v0#s0"] == before["v0#s0"]  # the finished trial was not redone
    statuses = {x.info.status for x in runs(tmp_path)}
    assert statuses <= {"FINISHED", "KILLED"}


def test_tune_crash_marks_in_flight_trials_failed_and_the_study_goes_on(tmp_path, monkeypatch):
    # Ray can raise out of Tuner.fit (e.g. its OOM killer hitting an actor as it starts).
    import harness.tune as ht
    from harness.study import RunOptions, run_studies

    calls = []

    def fake_run_trials(specs, tracker, parents, chash, address, storage, board, verbose=1):
        writer = ht.MlflowWriter(tracker, parents, lambda cfg: None, board)
        calls.append([s.key for s in specs])
        for i, s in enumerate(specs):
            writer.run_ids[s.trial_id] = tracker.start_child(*parents[s.study], s, chash[s.trial_id])
            if len(calls) == 1 and i == 1:  # second trial in flight when Tune dies
                writer.abort("OutOfMemoryError: 2 worker(s) were killed")
                writer.crashed = True
                return writer
            tracker.finish_child(writer.run_ids[s.trial_id], {"mean_dice": 50.0}, [], step=1)
            writer.finished.append(s.trial_id)
        return writer

    monkeypatch.setattr(ht, "run_trials", fake_run_trials)
    monkeypatch.chdir(tmp_path)
    study = {**TINY, "variants": [{"name": f"v{i}"} for i in range(4)], "expected": {}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    assert run_studies(["s.yaml"], RunOptions("smoke", verbose=0)) == 1
    assert calls == [["v0#s0", "v1#s0", "v2#s0", "v3#s0"], ["v2#s0", "v3#s0"]]
    status = {r.data.tags["trial_key"]: r.info.status for r in runs(tmp_path)}
    assert status == {"v0#s0": "FINISHED", "v1#s0": "FAILED", "v2#s0": "FINISHED", "v3#s0": "FINISHED"}
    assert "OutOfMemoryError" in next(r for r in runs(tmp_path) if r.info.status == "FAILED").data.tags["error"]


MARK_PLUGIN = '''
import os
from harness.callbacks import Callback
from harness.registry import CALLBACKS


class Mark(Callback):
    """Writes a line per training start; with die, its first start kills the worker process."""

    def __init__(self, path: str, die: bool):
        self.path, self.die = path, die

    def on_train_start(self, ctx):
        first = not os.path.exists(self.path)
        with open(self.path, "a") as f:
            f.write("start\\n")
        if self.die and first:
            os._exit(1)  # as Ray's OOM monitor kills a worker: no exception, the process is gone


@CALLBACKS.register("mark_start")
def mark_start(path: str, die: bool = False) -> Callback:
    return Mark(path, die)
'''


def test_a_dead_worker_is_retried_and_a_raising_trial_is_not(tmp_path):
    (tmp_path / "mark_plugin.py").write_text(MARK_PLUGIN)

    def mark(name, die=False):
        return [{"name": "mark_start", "params": {"path": str(tmp_path / f"{name}.starts"), "die": die}}]

    study = {**TINY, "plugins": ["mark_plugin"], "expected": {},
             "variants": [{"name": "killed", "train": {"callbacks": mark("killed", die=True)}},
                          {"name": "diverge", "train": {"lr": 1e30, "callbacks": mark("diverge")}}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-m", "harness.cli", "run", "s.yaml"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    rs = {r.data.tags["trial_key"]: r for r in runs(tmp_path)}
    assert {k: r.info.status for k, r in rs.items()} == {"killed#s0": "FINISHED", "diverge#s0": "FAILED"}, out
    # The killed worker's trial started twice and finished on its second start, in the same MLflow run.
    assert (tmp_path / "killed.starts").read_text().count("start") == 2
    assert rs["killed#s0"].data.tags["worker_retries"] == "1" and rs["killed#s0"].data.metrics["mean_dice"] >= 0
    assert "retry  killed#s0: its worker died (attempt 2 of 3)" in p.stdout
    # The trial that raised was not run again: the same recipe and seed would raise again.
    assert (tmp_path / "diverge.starts").read_text().count("start") == 1
    assert "non-finite training loss" in rs["diverge#s0"].data.tags["error"] and "worker_retries" not in rs["diverge#s0"].data.tags


def test_studies_run_together_keep_their_own_runs_reports_and_resume(tmp_path, monkeypatch, capsys):
    # Two studies with the same trial keys in one `harness run`: one Ray run, each trial a child
    # of its own study's parent, each study closed and reported on its own, and --resume of the
    # pair reruns only what did not finish (b's diverging trial).
    a = {**TINY, "name": "tiny_a", "variants": [{"name": "pw"}], "expected": {}}
    b = {**TINY, "name": "tiny_b", "variants": [{"name": "pw"}, {"name": "diverge", "train": {"lr": 1e30}}],
         "expected": {}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(a))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(b))
    p = harness(["run", "a.yaml", "b.yaml"], tmp_path)
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 1, out
    ra, rb = runs(tmp_path, "tiny_a"), runs(tmp_path, "tiny_b")
    assert {r.data.tags["trial_key"]: r.info.status for r in ra} == {"pw#s0": "FINISHED"}, out
    assert {r.data.tags["trial_key"]: r.info.status for r in rb} == {"pw#s0": "FINISHED", "diverge#s0": "FAILED"}, out
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent_a, parent_b = (client.get_run(rs[0].data.tags["mlflow.parentRunId"]) for rs in (ra, rb))
    assert parent_a.data.tags["study"] == "tiny_a" and parent_a.data.tags["run_with"] == "tiny_b"
    assert parent_a.info.status == "FINISHED" and parent_b.info.status == "FAILED"
    assert parent_b.data.tags["trials_failed"] == "diverge#s0" and parent_a.data.tags["trials_failed"] == ""
    progress = [ln for ln in out.splitlines() if ln.startswith("[")]
    assert len(progress) == 3 and all("/3]" in ln for ln in progress), out
    assert any("FAILED tiny_b/diverge#s0" in ln for ln in progress), out  # named with their study
    closing = [ln for ln in out.splitlines() if "trials finished" in ln]
    assert closing[0].startswith("tiny_a@smoke: 1/1") and closing[1].startswith("tiny_b@smoke: 1/2"), out

    # The report and the resume in this process (the first run above is the user's command).
    from harness.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["report", "a.yaml", "--out", "rep"]) == 0
    assert "in one `harness run` with 1 other studies (tiny_b)" in (tmp_path / "rep" / "tiny_a" / "README.md").read_text()

    capsys.readouterr()
    assert main(["run", "a.yaml", "b.yaml", "--resume", "-v", "0"]) == 1
    out = capsys.readouterr().out
    assert "Resuming tiny_a@smoke: 1 of 1 trials finished, 0 to run." in out
    assert "Resuming tiny_b@smoke: 1 of 2 trials finished, 1 to run." in out
    assert len(finished_by_key(runs(tmp_path, "tiny_a"))["pw#s0"]) == 1  # not redone
    assert sorted(r.data.tags["trial_key"] for r in runs(tmp_path, "tiny_b")) == ["diverge#s0", "diverge#s0", "pw#s0"]


def test_until_decided_adds_seeds_in_batches_trains_each_once_and_the_report_judges_as_run(tmp_path, monkeypatch):
    # A claim smoke cannot decide (2 training steps): looks at 2 and 3 seeds, seeds 0-1 then 2
    # alone (the first two are kept from the earlier look), then the report judges sequentially.
    study = {**TINY, "train": {**TINY["train"], "epochs": 1},
             "claims": [{"text": "CSC beats pointwise", "where": "T1", "better": "csc", "than": "pw"}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    p = harness(["run", "s.yaml", "--until-decided", "--max-seeds", "3", "-v", "0"], tmp_path)
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out
    assert "tiny_e2e@smoke: looks at 2, 3 seeds until every claim is decided" in out
    assert "after 2 seeds: 1 claim(s) undecided: CSC beats pointwise" in out
    assert "Resuming tiny_e2e@smoke: 4 of 6 trials finished in earlier runs, 2 to run." in out
    done = finished_by_key(runs(tmp_path))
    assert sorted(done) == ["csc#s0", "csc#s1", "csc#s2", "pw#s0", "pw#s1", "pw#s2"]
    assert all(len(ids) == 1 for ids in done.values()), done  # each seed trained once
    import pandas as pd

    from harness.report.failures import below_median

    # Each finished trial carries the study's failure rule's mark, over every seed of its variant.
    finished = [r for r in runs(tmp_path) if r.info.status == "FINISHED"]
    frame = pd.DataFrame({"variant": [r.data.tags["variant"] for r in finished],
                          "mean_dice": [r.data.metrics["mean_dice"] for r in finished]})
    assert [r.data.tags["failed_to_train"] for r in finished] == [str(f).lower() for f in below_median(frame)]
    from harness.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["report", "s.yaml", "--format", "md"]) == 0
    readme = (tmp_path / "reports" / "local" / "tiny_e2e" / "README.md").read_text()
    assert "judged over looks at 2, 3 seeds with the error spent across them" in readme
