"""One command's hold on its stores: the session every command (``run``, ``search``,
``evaluate``, ``submit``, ``report``, ``plan``) opens, and the only place that checks the store,
takes run locks and opens the tracker.

A command is a short script over it: ``Session(options)`` (the store is checked: a damaged one is
refused in one line before Ray starts or anything is written) -> resolve its own inputs ->
``with session:`` (locks held, tracker open, parent runs found or started) -> execute -> close
(locks released; a parent run left open by an exception is ended FAILED, or KILLED on Ctrl-C,
which ``--resume`` reopens as before). A killed process holds nothing: the OS drops its locks.

Paths, from the tracking URI (``sqlite:///DIR/mlflow.db`` by default): the database, ``DIR/ray_results``
(Ray Tune's trial storage), ``DIR/optuna/NAME.journal`` (a search's Optuna journal) and
``DIR/.harness/locks`` (the run locks); a non-sqlite store keeps them under the working folder.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from harness.config import ConfigError

# Log and progress settings every command runs under (and its Ray workers), restored on exit:
# the profiler's start/stop lines, MLflow's artifact progress bars.
QUIET = {"KINETO_LOG_LEVEL": "5", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


@contextmanager
def environment(settings: dict[str, str]) -> Iterator[None]:
    """``settings`` in ``os.environ`` for the block (a variable the user set is left as set),
    then as before: nothing changes the environment at import or for good."""
    added = {k: v for k, v in settings.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@dataclass(frozen=True)
class SessionOptions:
    """What a command asks of its session.

    tracking_uri: the MLflow store (None: ``sqlite:///mlflow.db`` in the working folder).
    locks: (name, what) pairs held while the session is open: one runner per study at a scale
        (``NAME@SCALE``) or per search (``search-NAME``); ``what`` names it in the refusal.
    writes: False for a command that only reads (report, plan): the store is checked, never created.
    must_exist: refuse a store that does not exist yet (a reader would otherwise create it empty).
    verbose: 2 shows MLflow's own log lines.
    """
    tracking_uri: str | None = None
    locks: tuple[tuple[str, str], ...] = ()
    writes: bool = True
    must_exist: str | None = None
    verbose: int = 1


class Session:
    """The stores of one command; see the module docstring. ``tracker`` (writing sessions) and
    ``reader`` are open inside ``with``; ``reader`` outside it too, for a reading command."""

    def __init__(self, options: SessionOptions):
        from harness.tracking import check_store, default_tracking_uri, sqlite_path

        self.options = options
        self.uri = options.tracking_uri or default_tracking_uri()
        db = sqlite_path(self.uri)
        self.database = db
        self.root = db.parent if db is not None else Path(".")
        check_store(self.uri)  # before Ray starts and before anything is written
        if options.must_exist and db is not None and not db.exists():
            raise ConfigError(f"--tracking-uri: no MLflow database at {db}: nothing has run here; "
                              f"{options.must_exist}")
        self.tracker = None
        self._held: list = []
        self._parents: list[str] = []

    @property
    def ray_storage(self) -> Path:
        """Ray Tune's trial storage (state and final checkpoints) beside the store."""
        return self.root / "ray_results"

    def journal(self, name: str) -> str:
        """The Optuna journal of search ``name`` beside the store."""
        return str(self.root / "optuna" / f"{name}.journal")

    @property
    def reader(self):
        """The store to read (``harness.tracking.Store``): the tracker inside ``with``, else a
        reader that never creates the store."""
        from harness.tracking import Store

        return self.tracker if self.tracker is not None else Store(self.uri)

    def __enter__(self) -> Session:
        from harness.tracking import Tracker, hold_lock

        try:
            for name, what in self.options.locks:
                self._held.append(hold_lock(self.uri, name, what))
            if self.options.writes:
                self.tracker = Tracker(self.uri, self.options.verbose)
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, kind, error, tb) -> None:
        try:
            if kind is not None and self.tracker is not None:
                for run_id in self._parents:  # an interrupted command's parent, reopened by --resume
                    self.tracker.end(run_id, "KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")
        finally:
            self._release()

    def _release(self) -> None:
        for held in reversed(self._held):
            held.close()
        self._held.clear()

    def parent(self, exp_id: str, name: str, scale: str, chash: str, tags: dict[str, str],
               found=None) -> tuple[str, set[str] | None]:
        """The parent run of this execution: ``found`` (``Tracker.find_parent``'s run) reopened
        (its RUNNING children closed KILLED; returns the trial keys it finished), or, without one,
        a new run of configuration ``chash`` at ``scale`` (returns None for the keys)."""
        if found is not None:
            run_id = found.info.run_id
            done = self.tracker.reopen_parent(exp_id, run_id)
        else:
            run_id, done = self.tracker.start_parent(exp_id, name, scale, chash, tags), None
        self._parents.append(run_id)
        return run_id, done

    def end(self, run_id: str, status: str) -> None:
        """Close a parent run (FINISHED, FAILED or KILLED)."""
        self.tracker.end(run_id, status)
        self._parents.remove(run_id)
