"""The MLflow store: created once when two runs start together; a damaged one said in one line."""
import subprocess
import sys

import yaml

from harness.cli import main
from test_config import BASE


def test_two_processes_create_one_store_together(tmp_path):
    # Both would create MLflow's schema ("table datasets already exists"): the lock serialises it.
    code = "from harness.tracking import Tracker; t = Tracker(); print(t.experiment('x'))"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-2000:] for _, e in outs]
    assert len({o.strip() for o, _ in outs}) == 1  # one experiment, found or created by each


def test_a_damaged_store_is_refused_in_one_line_before_ray_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(BASE, sort_keys=False))
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


def test_a_study_run_twice_at_once_is_refused_naming_the_holder(tmp_path, monkeypatch, capsys):
    # Two `--resume`s at once would each train every trial left: the second exits 2, and the
    # lock goes with its holder (closing it, as a process ending does, frees it).
    from harness.tracking import hold_lock

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(BASE, sort_keys=False))
    held = hold_lock(None, f"{BASE['name']}@smoke", "first")
    import harness.tune

    monkeypatch.setattr(harness.tune, "check_capacity", lambda *a, **k: None)  # the lock is taken after it
    assert main(["run", "s.yaml", "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{BASE['name']}@smoke is being run already by pid " in err and "since" in err
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store is touched
    held.close()
    again = hold_lock(None, f"{BASE['name']}@smoke", "second")  # free once its holder is gone
    again.close()

