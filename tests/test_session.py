"""The session every command opens: its paths, its run locks, its parent runs and its settings."""
import os

import pytest

from harness.config import ConfigError
from harness.session import QUIET, Session, SessionOptions, environment


def test_paths_sit_beside_the_store(tmp_path):
    s = Session(SessionOptions(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}", writes=False))
    assert s.ray_storage == tmp_path / "a" / "ray_results"
    assert s.journal("efficient3d-seed1") == str(tmp_path / "a" / "optuna" / "efficient3d-seed1.journal")
    assert not (tmp_path / "a").exists()  # nothing is created by a reading session


def test_a_reading_session_refuses_a_missing_store_without_creating_it(tmp_path):
    with pytest.raises(ConfigError, match=r"no MLflow database at .*absent.db: nothing has run here; run it first"):
        Session(SessionOptions(f"sqlite:///{tmp_path / 'absent.db'}", writes=False, must_exist="run it first"))
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_store_is_refused_when_the_session_is_made(tmp_path):
    (tmp_path / "mlflow.db").write_bytes(b"SQLite format 3\x00" + bytes(200))
    with pytest.raises(ConfigError, match="not a readable MLflow database"):
        Session(SessionOptions(f"sqlite:///{tmp_path / 'mlflow.db'}"))


def test_a_lock_is_held_for_the_session_and_names_its_holder(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    opts = SessionOptions(uri, writes=False, locks=(("s@smoke", "s@smoke"), ("search-x", "search x")))
    with Session(opts):
        with pytest.raises(ConfigError, match=rf"search x is being run already by pid {os.getpid()} on .* since "):
            with Session(SessionOptions(uri, writes=False, locks=(("search-x", "search x"),))):
                pass
        # The first lock of a refused session is not left held: it was not taken.
        with pytest.raises(ConfigError, match="s@smoke is being run already"):
            with Session(SessionOptions(uri, writes=False, locks=(("other", "other"), ("s@smoke", "s@smoke")))):
                pass
        with Session(SessionOptions(uri, writes=False, locks=(("other", "other"),))):
            pass  # released by the refused session above
    with Session(opts):  # released on close
        pass


def test_an_interrupted_session_ends_its_open_parents_and_resume_reopens_them(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(KeyboardInterrupt):
        with Session(SessionOptions(uri, verbose=0)) as s:
            exp = s.tracker.experiment("x")
            parent, done = s.parent(exp, "x", "smoke", "h1", {})
            assert done is None
            child = s.tracker.client.create_run(exp, tags={"mlflow.parentRunId": parent, "trial_key": "v#s0"})
            s.tracker.client.set_terminated(child.info.run_id, "FINISHED")
            raise KeyboardInterrupt
    with Session(SessionOptions(uri, verbose=0)) as s:
        assert s.tracker.client.get_run(parent).info.status == "KILLED"
        again, done = s.parent(exp, "x", "smoke", "h1", {}, found=s.tracker.find_parent(exp, "smoke", "h1"))
        assert again == parent and done == {"v#s0"}  # the finished trial is not redone
        assert s.tracker.client.get_run(parent).info.status == "RUNNING"
        s.end(parent, "FINISHED")
    assert Session(SessionOptions(uri)).reader.run(parent).info.status == "FINISHED"


def test_settings_hold_for_the_block_and_a_users_own_value_stays(monkeypatch):
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    monkeypatch.setenv("KINETO_LOG_LEVEL", "2")
    before = dict(os.environ)
    with environment(QUIET):
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
        assert os.environ["KINETO_LOG_LEVEL"] == "2"
    assert dict(os.environ) == before


@pytest.mark.slow
def test_importing_the_harness_changes_no_environment():
    import subprocess
    import sys

    # The dependencies first: Ray sets RAY_CLIENT_MODE as it imports.
    code = ("import os, json, ray, ray.tune, torch, monai, mlflow, optuna; before = dict(os.environ); "
            "import harness.cli, harness.tune, harness.report, harness.search, harness.study; "
            "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
