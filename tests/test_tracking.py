"""The MLflow store: created once when two runs start together; a damaged one said in one line."""
import subprocess
import sys

import pytest
import yaml

from harness.cli import main


@pytest.mark.slow
def test_two_processes_create_one_store_together(tmp_path):
    # Both would create MLflow's schema ("table datasets already exists"): the lock serialises it.
    code = "from harness.tracking import Tracker; t = Tracker(); print(t.experiment('x'))"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-2000:] for _, e in outs]
    assert len({o.strip() for o, _ in outs}) == 1  # one experiment, found or created by each


def test_a_damaged_store_is_refused_in_one_line_before_ray_starts(tmp_path, monkeypatch, capsys, tiny_study):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(tiny_study, sort_keys=False))
    (tmp_path / "mlflow.db").write_bytes(b"SQLite format 3\x00" + bytes(200))  # a header, then nothing
    import harness.tune

    def no_ray(*a, **k):
        raise AssertionError("Ray started")

    monkeypatch.setattr(harness.tune, "check_capacity", no_ray)
    assert main(["run", "s.yaml"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'mlflow.db'}: not a readable MLflow database" in err and "mv " in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "s.yaml"]


def test_a_study_run_twice_at_once_is_refused_naming_the_holder(tmp_path, monkeypatch, capsys, tiny_study):
    # Two `--resume`s at once would each train every trial left: the second exits 2, and the
    # lock goes with its holder (closing it, as a process ending does, frees it).
    from harness.tracking import hold_lock

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(tiny_study, sort_keys=False))
    held = hold_lock(None, f"{tiny_study['name']}@smoke", "first")
    import harness.tune

    monkeypatch.setattr(harness.tune, "check_capacity", lambda *a, **k: None)  # the lock is taken after it
    assert main(["run", "s.yaml", "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{tiny_study['name']}@smoke is being run already by pid " in err and "since" in err
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store is touched
    held.close()
    again = hold_lock(None, f"{tiny_study['name']}@smoke", "second")  # free once its holder is gone
    again.close()



CREATE = "import sys; from harness.tracking import Tracker; Tracker(sys.argv[1])"


@pytest.mark.slow
@pytest.mark.parametrize("after", [0.5, 1.5, 2.5, 3.5, 4.5, 6.0])
def test_a_store_killed_while_its_schema_is_created_is_absent_or_whole(tmp_path, monkeypatch, capsys, after):
    # Killed at chosen instants of its creation (import, schema, rename): whatever the instant,
    # every later command either works on the store or says one line; none meets half a schema.
    import signal
    import time

    from harness.tracking import Tracker, check_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    p = subprocess.Popen([sys.executable, "-c", CREATE, uri])
    time.sleep(after)
    p.send_signal(signal.SIGKILL)
    p.wait()
    check_store(uri)  # absent or whole: no ConfigError
    Tracker(uri).experiment("after_a_kill")  # and the next command uses it (or creates it whole)
    leftovers = [f.name for f in tmp_path.iterdir() if f.name.endswith(".creating")]
    assert not leftovers


def test_a_half_created_or_older_store_is_one_line_in_every_command(tmp_path, monkeypatch, capsys, tiny_study):
    import sqlite3

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(tiny_study))
    with sqlite3.connect(tmp_path / "mlflow.db") as db:  # what a kill during MLflow's own creation left
        db.execute("CREATE TABLE trace_info (id TEXT)")
    for argv in (["run", "s.yaml"], ["report", "s.yaml"], ["evaluate", "s.yaml"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "schema was never completed" in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_runs_as_one_frame_in_mlflow_search_runs_layout(tmp_path):
    """``Store.runs``: one role at one scale, newest first, a column per metric / param / tag with
    NaN (metrics) or None (tags) where a run lacks it; no experiment gives the empty frame."""
    import math

    from harness.tracking import ROLE, Store, Tracker, column

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, verbose=0)
    exp = tracker.experiment("frame")
    made = []
    for i, (role, scale, metrics) in enumerate([("trial", "smoke", {"mean_dice": 70.0}),
                                                ("trial", "smoke", {"mean_dice": 80.0, "gmacs": 1.5}),
                                                ("trial", "quick", {"mean_dice": 90.0}),
                                                ("study", "smoke", {})]):
        run = tracker.client.create_run(exp, start_time=1000 + i, tags={ROLE: role, "scale": scale, "seed": str(i)})
        for name, value in metrics.items():
            tracker.client.log_metric(run.info.run_id, name, value)
        tracker.client.log_param(run.info.run_id, "lr", str(i))
        made.append(run.info.run_id)
    tracker.client.set_terminated(made[1], "FINISHED")

    frame = Store(uri).runs(exp, "trial", "smoke")
    assert list(frame.run_id) == [made[1], made[0]]  # newest first, other scales and roles left out
    assert list(frame.columns[:4]) == ["run_id", "status", "start_time", "end_time"]
    assert list(frame["metrics.mean_dice"]) == [80.0, 70.0]
    assert frame["metrics.gmacs"].iloc[0] == 1.5 and math.isnan(frame["metrics.gmacs"].iloc[1])
    assert list(frame["params.lr"]) == ["1", "0"] and list(frame["tags.seed"]) == ["1", "0"]
    assert list(column(frame, "tags.fold", "-")) == ["-", "-"]  # a tag no run has: the default for each
    assert list(Store(uri).runs(exp, "trial", "smoke", finished=True).run_id) == [made[1]]
    empty = Store(uri).runs(None, "trial", "smoke")
    assert empty.empty and list(empty.columns) == ["run_id", "status", "start_time", "end_time"]
