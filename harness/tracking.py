"""MLflow bookkeeping: one parent run per study execution, one child run per trial.

Only the driver process writes (sqlite allows one writer at a time); trials send
their numbers through Ray Tune's results. A study execution is identified by
(study, scale, config hash), which is how ``--resume`` finds it again.
"""
from __future__ import annotations

import csv
import json
import os
import platform
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock, Timeout
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from harness import compat
from harness.config import TrialSpec

# The run schema: every tag name the harness reads back, here and nowhere else.
PARENT = "mlflow.parentRunId"
ROLE = "harness_role"  # study (a parent run), trial (a child: trained, or a combined row), evaluation
TRIAL_KEY = "trial_key"  # variant#sSEED[/fFOLD]: what a resume and the report match on
CONFIG_HASH = "config_hash"  # of the trial's resolved configuration: a changed study's runs are stale
VARIANT, SEED, FOLD = "variant", "seed", "fold"  # a trial's place in the study (fold: k-fold splits only)
MODEL_PARAMS = "model_params"  # a trial's model parameters as run (JSON): what the report's tables show
RUN_WITH = "run_with"  # a parent's: the studies whose trials ran in the same `harness run`
LOOKS = "until_decided_looks"  # a parent's: the seed counts `run --until-decided` judged at
MEMBER_RUNS = "member_runs"  # an evaluation's: the trial runs it ensembles
FAILED_TO_TRAIN = "failed_to_train"  # a trial's: true / false by the study's rule (harness.report.failures)


class Store:
    """Reads the tracking store (``report``, ``evaluate``, ``submit``, ``plan``) and never creates
    one: with ``Tracker`` (which writes), the only holder of an MLflow client."""

    def __init__(self, uri: str | None = None):
        self.uri = uri or default_tracking_uri()
        self.client = MlflowClient(self.uri)

    def experiment_of(self, study: str) -> str | None:
        """The MLflow experiment of a study (or ``search-NAME``), or None where nothing ran."""
        exp = self.client.get_experiment_by_name(f"harness/{study}")
        return None if exp is None else exp.experiment_id

    def runs_of(self, exp_id: str, role: str, scale: str, finished: bool = False, most: int = 50000) -> list:
        """Runs of one role (``ROLE``: study, trial, evaluation) at one scale, newest first."""
        where = f"tags.{ROLE} = '{role}' and tags.scale = '{scale}'" + (" and attributes.status = 'FINISHED'"
                                                                         if finished else "")
        return self.client.search_runs([exp_id], where, max_results=most,
                                       order_by=["attributes.start_time DESC"])

    def runs(self, exp_id: str | None, role: str, scale: str, finished: bool = False,
             most: int = 50000) -> pd.DataFrame:
        """``runs_of`` as one frame, newest first, in ``mlflow.search_runs``'s layout: ``run_id``,
        ``status``, ``start_time`` / ``end_time`` (ms), then ``metrics.NAME``, ``params.NAME`` and
        ``tags.NAME`` (NaN / None where a run lacks one). Built from this store's client:
        ``mlflow.search_runs`` reads the process's global tracking URI, not this store's."""
        found = [] if exp_id is None else self.runs_of(exp_id, role, scale, finished=finished, most=most)
        return pd.DataFrame([{"run_id": r.info.run_id, "status": r.info.status, "start_time": r.info.start_time,
                              "end_time": r.info.end_time, **{f"metrics.{k}": v for k, v in r.data.metrics.items()},
                              **{f"params.{k}": v for k, v in r.data.params.items()},
                              **{f"tags.{k}": v for k, v in r.data.tags.items()}} for r in found],
                            columns=None if found else ["run_id", "status", "start_time", "end_time"])

    def run(self, run_id: str):
        return self.client.get_run(run_id)

    def artifact(self, run_id: str, path: str, folder: str) -> str:
        """The run's artifact ``path`` downloaded into ``folder``; its local path."""
        return self.client.download_artifacts(run_id, path, folder)

    def history(self, run_id: str, metric: str) -> list:
        """Every logged value of ``metric`` (``.step``, ``.value``)."""
        return self.client.get_metric_history(run_id, metric)


def column(frame: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    """A ``Store.runs`` frame's column ``name`` (``tags.seed``, ``metrics.gmacs``), ``default`` for
    the runs that lack it (and for all where none has it)."""
    found = frame[name] if name in frame else pd.Series(None, index=frame.index, dtype=object)
    return found.where(found.notna(), default)


def default_tracking_uri() -> str:
    return f"sqlite:///{Path('mlflow.db').resolve()}"


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> dict[str, str]:
    import monai
    import torch

    return {"env.python": platform.python_version(), "env.torch": torch.__version__, "env.monai": monai.__version__,
            "env.cuda": str(torch.cuda.is_available()), "env.host": platform.node(), "env.platform": platform.platform()}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if not isinstance(v, str) else v
    return out


def numeric(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI; None for any other store."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def check_store(uri: str | None) -> None:
    """Refuse a damaged sqlite tracking store in one line (ConfigError), before Ray starts and
    before MLflow would print a long traceback: unreadable, or a schema that is not MLflow's
    newest (half-created, or older: MLflow would fail on it). A missing or empty file is a new
    store; every command that opens the store calls this."""
    from harness.config import ConfigError

    path = sqlite_path(uri or default_tracking_uri())
    if path is None or not path.exists() or path.stat().st_size == 0:
        return
    aside = f"move it aside (mv {path} {path}.broken) to start a new one, or pass --tracking-uri"
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            problem = con.execute("PRAGMA quick_check").fetchone()[0]
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = (con.execute("SELECT version_num FROM alembic_version").fetchone() or [None])[0] \
                if "alembic_version" in tables else None
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        problem, tables, version = str(e), set(), None
    if problem != "ok":
        raise ConfigError(f"{path}: not a readable MLflow database ({problem}); {aside}")
    if not tables:
        return  # an empty database: MLflow creates its schema
    head = compat.mlflow_schema_head()
    if version is None or "runs" not in tables:
        raise ConfigError(f"{path}: an MLflow database whose schema was never completed (a command killed "
                          f"while creating it?); {aside}")
    if version != head:
        raise ConfigError(f"{path}: MLflow schema {version}, this MLflow needs {head}; upgrade it "
                          f"(mlflow db upgrade sqlite:///{path}, after a copy) or {aside}")


class Held:
    """A run lock held (``hold_lock``) until ``close()``; a killed holder's lock is freed by the OS."""

    def __init__(self, lock: FileLock):
        self._lock = lock

    def close(self) -> None:
        self._lock.release()


def hold_lock(uri: str | None, name: str, what: str) -> Held:
    """An exclusive lock on ``name`` (a study at a scale, a search) beside the tracking store,
    held until the returned lock is closed (or the process ends: a killed holder never leaves a
    stale lock). Taken already: ConfigError naming the holder (pid, host, since), which each
    holder writes beside its lock. ``harness.session`` is the one caller."""
    from harness.config import ConfigError

    db = sqlite_path(uri or default_tracking_uri())
    folder = (db.parent if db is not None else Path(".")) / ".harness" / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.lock"
    lock = FileLock(path, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = path.with_suffix(".holder")
        who = (holder.read_text().strip() if holder.exists() else "") or "another process"
        raise ConfigError(f"{what} is being run already by {who} (lock {path}); wait for it to end, or stop "
                          f"it first (the lock goes with its process)") from None
    path.with_suffix(".holder").write_text(f"pid {os.getpid()} on {platform.node()} since "
                                           f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
    return Held(lock)


def _create_store(path: Path) -> None:
    """MLflow's schema in ``.<name>.<pid>.creating`` beside ``path``, renamed over it when whole;
    files of that kind left by killed processes are removed first (the caller holds the lock)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for old in path.parent.glob(f".{path.name}.*.creating"):
        old.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.creating")
    try:
        store = SqlAlchemyStore(f"sqlite:///{tmp}", str(tmp.parent / "mlartifacts"))
        store.engine.dispose()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Tracker(Store):
    """Writes the store: experiments, parent and child runs, their metrics and artifacts; a new
    store is created whole (see ``__init__``). Only the driver writes."""

    def __init__(self, uri: str | None = None, verbose: int = 1):  # no super().__init__: the client waits for the store
        self.uri = uri or default_tracking_uri()
        if verbose < 2:  # MLflow's schema migrations log INFO lines on every new database
            import logging

            for name in ("mlflow", "alembic"):
                logging.getLogger(name).setLevel(logging.WARNING)
        path = sqlite_path(self.uri)
        if path is None:
            self.client = MlflowClient(self.uri)
            return
        # Two runs started together would both create (or migrate) the schema ("table datasets
        # already exists"): the store is checked and created under a file lock. A new store's
        # schema is made in a file of this process and renamed into place, so a kill at any
        # instant leaves no store or a whole one (MLflow takes seconds to create it).
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(path.with_name(path.name + ".lock"), thread_local=False):
            check_store(self.uri)
            if not path.exists() or path.stat().st_size == 0:
                _create_store(path)
            self.client = MlflowClient(self.uri)

    def experiment(self, study: str) -> str:
        found = self.experiment_of(study)
        if found is not None:
            return found
        artifacts = None
        if self.uri.startswith("sqlite:///"):  # keep artifacts beside the database, not in cwd/mlruns
            artifacts = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts" / study).resolve().as_uri()
        return self.client.create_experiment(f"harness/{study}", artifact_location=artifacts)

    def find_parent(self, exp_id: str, scale: str, chash: str | None = None):
        """The newest parent run at ``scale`` (of configuration ``chash`` where given), or None."""
        runs = self.client.search_runs([exp_id], filter_string=(
            f"tags.{ROLE} = 'study' and tags.scale = '{scale}'" + (f" and tags.{CONFIG_HASH} = '{chash}'"
                                                                   if chash else "")),
            order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0] if runs else None

    def tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def end(self, run_id: str, status: str) -> None:
        """FINISHED, FAILED or KILLED."""
        self.client.set_terminated(run_id, status)

    def start_parent(self, exp_id: str, study: str, scale: str, chash: str, extra: dict[str, str]) -> str:
        tags = {ROLE: "study", "study": study, "scale": scale, CONFIG_HASH: chash,
                "git_commit": git_commit(), "mlflow.runName": f"{study}@{scale}", **environment(), **extra}
        return self.client.create_run(exp_id, tags=tags).info.run_id

    def reopen_parent(self, exp_id: str, parent_id: str) -> set[str]:
        """Resume a study's or search's parent run: children left RUNNING (their driver was killed)
        are closed as KILLED, kept for the record; the parent runs again. Returns the trial keys
        that finished, which a resume does not redo."""
        done = set()
        for run in self.children(exp_id, parent_id):
            if run.info.status == "FINISHED":
                done.add(run.data.tags.get(TRIAL_KEY))
            elif run.info.status == "RUNNING":
                self.client.set_terminated(run.info.run_id, "KILLED")
        self.client.update_run(parent_id, status="RUNNING")
        return done

    def finished_trials(self, exp_id: str, scale: str, hashes: dict[str, str]) -> set[str]:
        """Trial keys finished in any earlier run of the study at ``scale`` with the configuration
        ``hashes`` gives them (key -> config hash): a resume with more seeds (a new parent run)
        trains only the seeds not yet trained."""
        runs = self.runs(exp_id, "trial", scale, finished=True)
        if runs.empty:
            return set()
        keys = runs[f"tags.{TRIAL_KEY}"]
        return set(keys[keys.map(hashes) == runs[f"tags.{CONFIG_HASH}"]])

    def children(self, exp_id: str, parent_id: str):
        return self.client.search_runs([exp_id], filter_string=f"tags.`{PARENT}` = '{parent_id}'", max_results=50000)

    def start_child(self, exp_id: str, parent_id: str, spec: TrialSpec, chash: str) -> str:
        tags = {PARENT: parent_id, ROLE: "trial", "study": spec.study, "scale": spec.scale,
                TRIAL_KEY: spec.key, VARIANT: spec.variant, SEED: str(spec.seed),
                **({FOLD: str(spec.fold)} if spec.fold is not None else {}), CONFIG_HASH: chash,
                "git_commit": git_commit(), "mlflow.runName": spec.key, **environment(),
                MODEL_PARAMS: json.dumps(spec.model.params),  # what the report's tables show, as run
                **{f"tag.{k}": v for k, v in spec.tags.items()}}
        run_id = self.client.create_run(exp_id, tags=tags).info.run_id
        params = flatten(spec.model_dump(exclude={"study", "scale", "key", "tags"}))
        self.client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
        return run_id

    def start_evaluation(self, exp_id: str, parent_id: str | None, tags: dict[str, str]) -> str:
        """A re-evaluation of saved weights (``harness evaluate``), beside the study's trials."""
        tags = {ROLE: "evaluation", "git_commit": git_commit(), **environment(), **tags,
                **({PARENT: parent_id} if parent_id else {})}
        return self.client.create_run(exp_id, tags=tags).info.run_id

    def start_combined(self, exp_id: str, parent_id: str, study: str, scale: str, row: dict[str, Any],
                       members: list[str]) -> str:
        """A combined row's evaluation (``harness.combine``), tagged as a trial so the report counts it."""
        tags = {PARENT: parent_id, ROLE: "trial", "study": study, "scale": scale, TRIAL_KEY: row["key"],
                VARIANT: row["variant"], SEED: str(row["seed"]),
                **({FOLD: str(row["fold"])} if row["fold"] is not None else {}), CONFIG_HASH: row["hash"],
                "git_commit": git_commit(), "mlflow.runName": row["key"], **environment(),
                "combined_of": ",".join(members), "rule": row["rule"].model_dump_json(),
                **{f"tag.{k}": v for k, v in row["tags"].items()}}
        return self.client.create_run(exp_id, tags=tags).info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, ts, step) for k, v in metrics.items()])

    def finish_child(self, run_id: str, final: dict[str, Any], per_case: list[dict] | None, step: int) -> None:
        """Final numbers and per-case metrics, then FINISHED (a trial without weights to log)."""
        self.log_final(run_id, final, per_case, step)
        self.client.set_terminated(run_id, "FINISHED")

    def log_weights(self, run_id: str, path: str) -> None:
        """The final weights as artifact ``checkpoint/model.pt`` (their size is the trial's ``checkpoint_bytes``)."""
        self.client.log_artifact(run_id, path, "checkpoint")

    def log_final(self, run_id: str, final: dict[str, Any], per_case: list[dict] | None, step: int) -> None:
        # Logged one step after the last epoch so that MLflow's latest value is the final one.
        self.log_metrics(run_id, numeric(final), step=step)
        tags = [RunTag(f"result.{k}", str(v)) for k, v in final.items() if isinstance(v, str)]
        if tags:
            self.client.log_batch(run_id, tags=tags)
        if per_case is not None:  # JSON for the report's paired tests, CSV for spreadsheets
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "per_case.json")
                with open(path, "w") as f:
                    json.dump(per_case, f, indent=1)
                self.client.log_artifact(run_id, path)
                if per_case:
                    path = os.path.join(d, "per_case.csv")
                    with open(path, "w", newline="") as f:
                        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in per_case for k in row)))
                        writer.writeheader()
                        writer.writerows(per_case)
                    self.client.log_artifact(run_id, path)

    def fail_child(self, run_id: str, error: str) -> None:
        self.client.set_tag(run_id, "error", error[-5000:])
        self.client.set_terminated(run_id, "FAILED")
