"""Run a study's trials on Ray Tune (the edge of the package: ray is imported here only).

Trials run anywhere Ray puts them; results come back to the driver, whose
callback is the only MLflow writer. A trial's final weights travel as a Ray Tune
checkpoint (Ray persists it under the run's storage path; a multi-node cluster needs that
path on shared storage) and the driver logs them to MLflow. ``--resume`` asks MLflow which
trials of this study execution already finished and launches only the others.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from harness import compat
from harness.config import TrialSpec
from harness.pareto import constraint_values
from harness.progress import Board
from harness.session import environment
from harness.tracking import Tracker, numeric
from harness.train import CHECKPOINT, run_trial


# A trial whose worker process dies (Ray's OOM monitor, a lost node) is started again this many
# times; a trial that raises is final at once (the same recipe and seed would raise again).
WORKER_RETRIES = 2
# For the length of a fit: the classic reporter, which honours our metric columns (the newer
# output engine prints whole configs); a search's per-epoch results carry the loss (and Dice on
# validation epochs) before its objectives, which arrive with the final one.
TUNE_SETTINGS = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"}


def _trainable(config: dict[str, Any], specs: dict[str, dict]) -> None:
    try:
        _report_trial(TrialSpec.model_validate(specs[config["trial"]]))
    except Exception:  # noqa: BLE001  reported as the trial's outcome, so Ray retries only dead workers
        tune.report({"final": 1, "trial_error": traceback.format_exc()[-5000:]})


def _search_trainable(config: dict[str, Any], spec_for: Callable[[dict, str], TrialSpec], rungs: list[int],
                      rung_cases: int | None, rung_cost: bool) -> None:
    # spec_for is the search space's (pickled to the worker): tune needs no import of search.
    _report_trial(spec_for(config, f"trial_{tune.get_context().get_trial_id()}"), rungs, rung_cases, rung_cost)


class MlflowWriter(tune.Callback):
    """Driver-side MLflow writer: child run per trial, per-epoch metrics, weights, final status.

    A trial's final result arrives first (metrics, per-case numbers), then its checkpoint; the
    run is marked FINISHED once the weights are logged (or, should no checkpoint come, when
    Tune completes the trial). Trials are named by ``trial_id`` (study/key): one writer serves
    several studies run together, each trial a child of its own study's parent run.
    """

    def __init__(self, tracker: Tracker, parents: dict[str, tuple[str, str]],
                 spec_for: Callable[[Any], tuple[TrialSpec, str]], board: Board):
        """``parents`` maps a study's name to its MLflow (experiment id, parent run id);
        ``spec_for(trial)`` gives the Ray trial's spec and its config hash; ``board`` shows the
        trials' progress (a live table or a line per settled trial)."""
        self.tracker, self.parents, self.spec_for, self.board = tracker, parents, spec_for, board
        self.keys: dict[str, str] = {}  # Ray trial id -> trial_id (study/key)
        self.run_ids: dict[str, str] = {}  # trial_id -> MLflow run id
        self.finished: list[str] = []
        self.failed: list[str] = []
        self.stopped: list[str] = []  # stopped at a rung by the search's scheduler
        self.awaiting_weights: set[str] = set()  # final result logged, checkpoint not yet
        self.retries: dict[str, int] = {}  # trial_id -> times its worker died and it started again
        self.crashed = False  # Tune raised instead of reporting the trial
        self.error = ""  # what it raised
        self.dice: dict[str, float] = {}

    def _progress(self, key: str, outcome: str, why: str = "") -> None:
        dice = f"Dice {self.dice[key]:.1f}" if key in self.dice and outcome == "done" else ""
        self.board.settle(key, outcome, dice, why)

    def _key(self, trial) -> str:
        if trial.trial_id not in self.keys:
            spec, chash = self.spec_for(trial)
            key = spec.trial_id
            self.keys[trial.trial_id] = key
            self.run_ids[key] = self.tracker.start_child(*self.parents[spec.study], spec, chash)
            if key not in self.board.trials:  # a search's trials are known only when proposed
                self.board.plan(key, trial_label(spec, len(self.parents) > 1),
                                spec.train.epochs * spec.train.steps_per_epoch, spec.train.epochs)
        return self.keys[trial.trial_id]

    def _run_id(self, trial) -> str:
        return self.run_ids[self._key(trial)]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_id(trial)
        self.board.start(self._key(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self._run_id(trial)
        if result.get("beat"):  # progress for the display only; nothing is logged
            self.board.beat(self._key(trial), int(result["beat_step"]), int(result["beat_epoch"]),
                            result.get("beat_loss"), float(result["beat_train_s"]), build_s=float(result["beat_build_s"]),
                            steps=int(result["beat_steps"]))
        elif result.get("trial_error"):
            self._fail(trial, result["trial_error"])
        elif result.get("final"):
            strings = json.loads(result.get("strings_json", "{}"))
            metrics = {k: v for k, v in numeric(result).items()
                       if not _is_ray_key(k) and k not in ("final", "epoch", "final_step")}
            self.tracker.log_final(run_id, {**metrics, **strings}, json.loads(result["per_case_json"]),
                                   step=int(result["final_step"]))
            self.awaiting_weights.add(self._key(trial))
            spec = self.board.trials[self._key(trial)]
            # The trial's own account of its training time: the ETA's time outside steps is the rest.
            self.board.beat(self._key(trial), spec.steps, spec.epochs - 1, metrics.get("train_loss"),
                            float(metrics.get("time_train_s", 0.0)), build_s=float(metrics.get("time_build_s", 0.0)))
            if "mean_dice" in metrics:
                self.dice[self._key(trial)] = metrics["mean_dice"]
        else:
            metrics = {k: v for k, v in numeric(result).items() if not _is_ray_key(k) and k != "epoch"}
            self.tracker.log_metrics(run_id, metrics, step=int(result["epoch"]))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        key = self._key(trial)
        if key not in self.awaiting_weights:
            return
        with checkpoint.as_directory() as d:
            self.tracker.log_weights(self.run_ids[key], os.path.join(d, CHECKPOINT))
        self._finish(key)

    def _finish(self, key: str) -> None:
        self.awaiting_weights.discard(key)
        self.tracker.end(self.run_ids[key], "FINISHED")
        self.finished.append(key)
        self._progress(key, "done")

    def _fail(self, trial, err: str) -> None:
        self.tracker.fail_child(self._run_id(trial), err or "trial raised (no error file)")
        self.failed.append(self._key(trial))
        last = [ln.strip() for ln in err.strip().splitlines() if ln.strip()][-1:] or ["no error file"]
        self._progress(self._key(trial), "FAILED", last[0][:160])

    def on_trial_error(self, iteration, trials, trial, **info):
        # Its worker died more than WORKER_RETRIES times (a trial's own exception comes as a result).
        err = ""
        if trial.error_file and os.path.exists(trial.error_file):
            err = Path(trial.error_file).read_text()
        self._fail(trial, err)

    def on_trial_recover(self, iteration, trials, trial, **info):
        # Its worker died (e.g. killed by Ray's OOM monitor): Tune starts it again from scratch;
        # the run keeps the epochs' metrics of both attempts and counts the retries.
        key = self._key(trial)
        self.retries[key] = self.retries.get(key, 0) + 1
        self.tracker.tag(self.run_ids[key], "worker_retries", str(self.retries[key]))
        self.board.start(key)
        self.board.note(f"    retry  {self.board.trials[key].label}: its worker died "
                        f"(attempt {self.retries[key] + 1} of {WORKER_RETRIES + 1})")

    def on_trial_complete(self, iteration, trials, trial, **info):
        key = self._key(trial)
        if key in self.awaiting_weights:  # the result came, the checkpoint did not: keep the numbers, say so
            self.tracker.tag(self.run_ids[key], "checkpoint", "missing")
            self._finish(key)
        if key not in self.finished + self.failed + self.stopped:  # stopped at a rung (ASHA)
            self.tracker.tag(self.run_ids[key], "stopped_early", "true")
            self.tracker.end(self.run_ids[key], "KILLED")
            self.stopped.append(key)
            self._progress(key, "stopped")

    def abort(self, error: str) -> None:
        """Tune itself raised: close every started trial that has no outcome yet as FAILED."""
        self.error = error
        for key, run_id in self.run_ids.items():
            if key not in self.finished + self.failed + self.stopped:
                self.tracker.fail_child(run_id, f"Ray Tune stopped with: {error}")
                self.failed.append(key)


_RAY_KEYS = {"timestamp", "training_iteration", "time_this_iter_s", "time_total_s", "pid", "time_since_restore",
             "iterations_since_restore", "done", "trial_id", "date", "hostname", "node_ip", "config",
             "checkpoint_dir_name", "should_checkpoint", "experiment_tag"}


@contextmanager
def _tune_logs(verbose: int):
    """Below -v 2 Tune's own log lines (a failed trial's traceback, slow-callback warnings) are
    off: the writer prints a line per trial and MLflow keeps each error in full."""
    logger = logging.getLogger("ray.tune")
    level = logger.level
    if verbose < 2:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _is_ray_key(k: str) -> bool:
    return k in _RAY_KEYS or k.startswith("config/")


_started_with: tuple | None = None  # (address, workers' environment) of the Ray instance this process started


def _init_ray(address: str | None, verbose: int) -> None:
    env = {"HARNESS_CACHE": os.environ.get("HARNESS_CACHE", str(Path.home() / ".cache" / "harness")),
           "RAY_CHDIR_TO_TRIAL_DIR": "0", "PYTHONWARNINGS": "ignore", "KINETO_LOG_LEVEL": "5",
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
           # The CPU layer's switches and compiler reach the workers of a cluster too.
           **{k: os.environ[k] for k in ("HARNESS_CPU_KERNELS", "HARNESS_GS_KERNEL", "HARNESS_UPSAMPLE_KERNEL", "CC")
              if k in os.environ},
           # A study's plugins (families outside harness/) import on the workers as on the driver.
           **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {})}
    if address and address not in ("auto", "local") and not address.startswith("ray://"):
        # Ray 2.60's `ray start --head` turns token authentication on and saves the token; ray.init
        # presents it for 'auto' but not for an explicit HOST:PORT, which the head then refuses
        # (InvalidAuthToken). Do what 'auto' does: token mode when a token is at hand and
        # RAY_AUTH_MODE is unset (a token-mode driver joins a cluster without authentication too).
        compat.ray_token_auth(verbose)
    global _started_with
    if ray.is_initialized() and _started_with not in (None, (address, env)):
        # This process started the instance for a command under another environment (another
        # cache folder, plugin path or address): its workers would run this one with the old.
        ray.shutdown()
    if not ray.is_initialized():
        _started_with = (address, env)
        # Without --address a run is local: a fresh instance of its own ("local"), never a cluster
        # that RAY_ADDRESS or a `ray start` on this machine would otherwise hand ray.init.
        saved = os.environ.pop("RAY_ADDRESS", None) if not address else None
        # Ray starts its workers at niceness 15, below the driver: on a machine busy with other
        # work the trials, which are the work here, then got 3% of a core beside a plain loop.
        # A local instance's workers run at the user's own priority (RAY_worker_niceness if set).
        nice = None if address or "RAY_worker_niceness" in os.environ else "0"
        if nice is not None:
            os.environ["RAY_worker_niceness"] = nice
        try:
            # Ray's own warnings (its token-authentication notice on every local start) only with -v 2.
            ray.init(address=address or "local", include_dashboard=False,
                     logging_level=logging.WARNING if verbose > 1 else logging.ERROR,
                     runtime_env={"env_vars": env}, log_to_driver=verbose > 1)
        finally:
            if saved is not None:
                os.environ["RAY_ADDRESS"] = saved
            if nice is not None:
                os.environ.pop("RAY_worker_niceness", None)


def check_capacity(address: str | None, cpu: float, gpu: float, verbose: int = 1,
                   memory: tuple[str, float] | None = None) -> None:
    """Start (or join) Ray and refuse a trial no node can hold, before anything is written: Ray
    would keep it PENDING forever, or the kernel kill it. ``memory``: (trial, estimated training
    bytes) of the hungriest CPU trial (``harness.study.estimate_train_memory``), refused when
    no node's memory holds it. A wrong ``--address`` fails here too, in one line."""
    from harness.config import ConfigError

    if address and address not in ("auto", "local") and not ray.is_initialized():
        # Ray retries an unreachable GCS for minutes; a closed port is refused in a second.
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=3).close()
        except (OSError, ValueError) as e:
            raise ConfigError(f"--address: nothing answers at {address!r} "
                              f"({getattr(e, 'strerror', None) or e}); give 'auto', HOST:PORT of the head's "
                              f"GCS or ray://HOST:10001") from None
    try:
        _init_ray(address, verbose)
    except Exception as e:  # noqa: BLE001  Ray raises ConnectionError, RuntimeError, ValueError ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--address: cannot start or reach Ray at {address or 'a new local instance'!r}: "
                          f"{first}") from None
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for kind, need in (("cpu", cpu), ("gpu", gpu)):
        most = max((n.get(kind.upper(), 0.0) for n in nodes), default=0.0)
        if need > most:
            raise ConfigError(f"resources.{kind}: {need:g} per trial, but the largest Ray node offers {most:g} "
                              f"{kind.upper()}s ({len(nodes)} node(s)); lower it (or --{kind}s-per-trial) or add nodes")
    if memory is not None:
        most = max((n.get("memory", 0.0) for n in nodes), default=0.0)
        if most and memory[1] > most:
            raise ConfigError(f"{memory[0]}: a training step needs about {memory[1] / 2**30:.1f} GiB (estimated: "
                              f"weights, gradients, Adam and the activations of its batch and patch), but the "
                              f"largest Ray node has {most / 2**30:.1f} GiB for tasks; lower train.batch_size or "
                              f"train.patch, or run it on a GPU (resources.gpu)")
    warning = packing_warning(cpu, max((n.get("CPU", 0.0) for n in nodes), default=0.0))
    if warning:
        print(warning, file=sys.stderr)


def packing_warning(cpu: float, node_cpus: float) -> str | None:
    """What a fractional ``resources.cpu`` does: Ray packs ``node_cpus / cpu`` trials on a node,
    each a process holding its data, model and optimiser (15 trials on 2 cores were OOM-killed
    by Ray's monitor), none of them faster for it (a trial's torch keeps at least 1 thread)."""
    if cpu >= 1 or node_cpus <= 0:
        return None
    return (f"warning: resources.cpu {cpu:g} packs up to {int(node_cpus / cpu)} trials at once on a node of "
            f"{node_cpus:g} CPUs, each holding its own data and model in memory and none running faster for it "
            f"(torch uses at least 1 thread a trial); expect memory pressure and killed workers. 1 or more is "
            f"what this harness is tested at.")


def _report_trial(spec: TrialSpec, rungs: list[int] = (), rung_cases: int | None = None, rung_cost: bool = True) -> None:
    with tempfile.TemporaryDirectory() as d:
        # Beats carry no "epoch": schedulers and the MLflow writer read only the epochs' results.
        final = run_trial(spec, report=lambda m, epoch: tune.report({**numeric(m), "epoch": epoch}),
                          checkpoint_dir=Path(d), rungs=rungs, rung_cases=rung_cases, rung_cost=rung_cost,
                          beat=lambda b: tune.report({"beat": 1, **{f"beat_{k}": v for k, v in b.items()}}))
        per_case = final.pop("per_case", [])
        final["node"] = ray.get_runtime_context().get_node_id()  # which machine ran it (tag result.node)
        # Logged one step after the last epoch, so that MLflow's latest value is the final one.
        tune.report({**numeric(final), "final": 1, "final_step": spec.train.epochs + 1,
                     "per_case_json": json.dumps(per_case),
                     "strings_json": json.dumps({k: v for k, v in final.items() if isinstance(v, str)})},
                    checkpoint=tune.Checkpoint.from_directory(d))


def trial_label(spec: TrialSpec, with_study: bool = False) -> str:
    """A trial as progress lines name it: a search's by its Optuna number (as ``pareto.md``
    numbers it), its model and knobs; a study's by its key (with its study when several run)."""
    if "optuna_trial" in spec.tags:
        return f"t{spec.tags['optuna_trial']} {spec.model.name}" + (f" {spec.tags['knobs']}" if spec.tags.get("knobs") else "")
    return spec.trial_id if with_study else spec.key


def slots_for(cpu: float, gpu: float) -> int:
    """Trials the Ray cluster runs at once with these per-trial resources."""
    total = ray.cluster_resources()
    fits = [int(total.get(k, 0.0) // need) for k, need in (("CPU", cpu), ("GPU", gpu)) if need > 0]
    return max(1, min(fits, default=1))


def run_trials(specs: list[TrialSpec], tracker: Tracker, parents: dict[str, tuple[str, str]], chash: dict[str, str],
               address: str | None, storage: str | Path, board: Board, verbose: int = 1) -> MlflowWriter:
    """Launch ``specs`` (of one study or several) as Ray Tune trials, in the order given; returns
    the writer with the finished and failed ``trial_id``s. ``parents``: study -> (experiment id,
    parent run id); ``chash``: trial_id -> config hash; ``board``: where progress shows."""
    _init_ray(address, verbose)
    board.slots = slots_for(max(s.resources.cpu for s in specs), max(s.resources.gpu for s in specs))
    by_id = {s.trial_id: s for s in specs}
    for s in specs:
        board.plan(s.trial_id, trial_label(s, len(parents) > 1), s.train.epochs * s.train.steps_per_epoch,
                   s.train.epochs)
    writer = MlflowWriter(tracker, parents, lambda t: (by_id[t.config["trial"]], chash[t.config["trial"]]), board)
    # Trials carry only their id; the specs travel once through Ray's object store. Studies run
    # together may ask for different resources: each trial gets its own.
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, specs={i: s.model_dump() for i, s in by_id.items()}),
        lambda config: tune.PlacementGroupFactory([{"CPU": by_id[config["trial"]].resources.cpu,
                                                    "GPU": by_id[config["trial"]].resources.gpu}]))
    reporter = tune.CLIReporter(metric_columns={"epoch": "epoch", "train_loss": "loss", "mean_dice": "Dice%"},
                                parameter_columns={"trial": "trial"}, max_report_frequency=15)
    studies = list(dict.fromkeys(s.study for s in specs))
    # A trial's actor runs the next trial: no new process, no second import of torch and MONAI
    # (about 6 s per trial on 2 cores, longer than a smoke trial's training).
    return _fit(trainable, tune.TuneConfig(num_samples=1, reuse_actors=True), writer, reporter, verbose, storage=storage,
                name=f"{studies[0] if len(studies) == 1 else f'{len(studies)}-studies'}-{specs[0].scale}",
                max_failures=WORKER_RETRIES, param_space={"trial": tune.grid_search(list(by_id))})


def _fit(trainable, tune_config, writer: MlflowWriter, reporter, verbose: int, storage: str | Path, name: str,
         max_failures: int, param_space: dict | None = None) -> MlflowWriter:
    """One Ray Tune run of ``trainable`` (the study's trials, or a search's), ``writer`` its MLflow
    callback; if Tune itself raises, the in-flight trials are recorded as failed and the writer
    says it crashed (the caller goes on with the rest)."""
    tuner = tune.Tuner(
        trainable, param_space=param_space, tune_config=tune_config,
        run_config=tune.RunConfig(
            name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=_storage_path(storage),
            # -v 1: the writer's line per trial; -v 2: Ray's status tables and trial logs too.
            callbacks=[writer], verbose=verbose if verbose > 1 else 0,
            progress_reporter=reporter if verbose > 1 else None,
            failure_config=tune.FailureConfig(max_failures=max_failures, fail_fast=False)),
    )
    try:
        with environment(TUNE_SETTINGS), _tune_logs(verbose):
            tuner.fit()
    except Exception as e:  # noqa: BLE001  e.g. Ray's OOM killer hitting a trial actor while it starts
        writer.abort(f"{type(e).__name__}: {e}")
        writer.crashed = True
    return writer


def _storage_path(storage: str | Path) -> str:
    """Ray's storage for trial state and checkpoints: a local folder, or a URI (s3://, gs://)."""
    return storage if isinstance(storage, str) and "://" in storage else str(Path(storage).resolve())


class FreshOptunaSearch(OptunaSearch):
    """Ray Tune's OptunaSearch that never trains a configuration the Optuna study already holds
    (complete, running now, or failed in training): a repeat is told PRUNED (no values, so NSGA-II's population and
    ``trials.csv`` keep the first) and the sampler is asked again. A resumed NSGA-II restarts
    from its seed and would re-propose its first generation; this way it moves on to new points.
    After ``REDRAWS`` repeats in a row the space is taken as exhausted and the search ends.
    Reads OptunaSearch's private trial map and study through ``harness.compat``."""

    REDRAWS = 100
    bounds: list = []  # the space's constraints, (metric, min, max)

    def suggest(self, trial_id: str):
        for _ in range(self.REDRAWS):
            config = super().suggest(trial_id)
            if not isinstance(config, dict):
                return config
            asked, study = compat.searcher_trial(self, trial_id), compat.searcher_study(self)
            # Complete, running, trained and failed (a failure is final: the same
            # configuration would fail again) or stopped at a rung (its rung results stand,
            # and the sampler has them); a trial left by a dead runner was not trained.
            held = {json.dumps(t.params, sort_keys=True) for t in study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL, TrialState.PRUNED))
                    if t.number != asked.number and (t.state in (TrialState.COMPLETE, TrialState.RUNNING)
                                                     or "trial_time_s" in t.user_attrs)}
            if json.dumps(asked.params, sort_keys=True) not in held:
                return config
            study.tell(asked, state=TrialState.PRUNED)
            compat.searcher_forget(self, trial_id)
        return Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        # Only a trial's final result carries its objectives: one stopped at a rung is PRUNED
        # (its rung numbers are no final score), one that raised is FAIL. The trial's own
        # time (Ray's, from its start) is kept for the hypervolume-against-trial-time figure.
        asked = compat.searcher_trial(self, trial_id)
        if asked is not None and result:
            asked.set_user_attr("trial_time_s", float(result.get("time_total_s", 0.0)))
            if "time_cpu_s" in result:
                asked.set_user_attr("trial_cpu_s", float(result["time_cpu_s"]))
            if "epoch" in result:
                asked.set_user_attr("epochs", int(result["epoch"]) + 1)
            if self.bounds and result.get("final") and not result.get("trial_error"):
                # Stored before tell: the sampler's constraints_func reads them there.
                asked.set_user_attr("constraints", constraint_values(self.bounds, numeric(result)))
        if result and result.get("trial_error"):
            result, error = None, True
        elif result and not result.get("final"):
            result = None
        super().on_trial_complete(trial_id, result, error)


RUNG = "rung_"  # an Optuna trial's user attribute per rung it reached: {"values": [...], "costs": [...]}


class CostAwareHalving(FIFOScheduler):
    """Cost-aware asynchronous successive halving: at each rung (epochs from 1, ``rungs``) a
    trial goes on while ``harness.pareto.continues_at_rung`` holds: its rung accuracy ranks in
    the top 1/eta of the trials at that rung that cost no more than it does, and not over
    ``cost_band`` times less. The exact costs
    (exact-cost objectives, ``harness.metrics``) are counted in the driver (``space.exact_costs``), the others
    come with the rung's result. Each rung result is written to the Optuna trial
    (``rung_<epoch>``), so a resumed search ranks against every rung reached before.
    Ray Tune's ASHAScheduler ranks one metric only; MO-ASHA ranks the exact cost as if noisy."""

    def __init__(self, space, searcher, study, rungs: list[int]):
        from harness.metrics import is_exact

        super().__init__()
        self.space, self.searcher, self.eta = space, searcher, space.cfg.scheduler.reduction_factor
        self.exact = [o for o in space.cfg.objectives if is_exact(o.metric)]
        self.trained = [o for o in space.cfg.objectives if not is_exact(o.metric)]
        self.records: dict[int, dict[int, tuple[list[float], list[float]]]] = {r: {} for r in rungs}
        for t in study.get_trials(deepcopy=False):  # what earlier runs of this search reached
            for r in rungs:
                if f"{RUNG}{r}" in t.user_attrs:
                    at = t.user_attrs[f"{RUNG}{r}"]
                    self.records[r][t.number] = (at["values"], at["costs"])

    def on_trial_result(self, tune_controller, trial, result):
        from harness.pareto import continues_at_rung

        epoch = int(result["epoch"]) + 1 if "epoch" in result and not result.get("final") else None
        asked = compat.searcher_trial(self.searcher, trial.trial_id)
        if epoch not in self.records or asked is None:
            return TrialScheduler.CONTINUE
        missing = [o.metric for o in self.trained if o.metric not in result]
        if missing:
            raise RuntimeError(f"rung result of {trial.trial_id} lacks objectives {missing}")
        known = self.space.exact_costs(trial.config)
        values, costs = [float(result[o.metric]) for o in self.trained], [known[o.metric] for o in self.exact]
        self.records[epoch][asked.number] = (values, costs)
        asked.set_user_attr(f"{RUNG}{epoch}", {"values": values, "costs": costs})
        go = continues_at_rung(self.records[epoch], asked.number, [o.mode for o in self.trained],
                               [o.mode for o in self.exact], self.eta, band=self.space.cfg.scheduler.cost_band)
        return TrialScheduler.CONTINUE if go else TrialScheduler.STOP


def run_search_trials(space, study, storage, n: int, tracker: Tracker, exp_id: str, parent_id: str,
                      address: str | None, storage_dir: str | Path, board: Board, verbose: int = 1) -> MlflowWriter:
    """Run ``n`` more trials of an Optuna study through Ray Tune's OptunaSearch.

    ``space`` is duck-typed (``harness.search.Space``): ``cfg``, ``study``, ``define_by_run``,
    ``spec_for(config, name)`` and ``rungs()``.
    """
    from harness.config import spec_hash

    _init_ray(address, verbose)
    cfg = space.cfg
    metrics = [o.metric for o in cfg.objectives]
    modes = [o.mode for o in cfg.objectives]
    single = len(metrics) == 1
    import optuna

    # OptunaSearch reopens the study run_search has just created or resumed; Optuna would log
    # "Using an existing study" on a fresh search.
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        searcher = FreshOptunaSearch(space=space.define_by_run, metric=metrics[0] if single else metrics,
                                mode=modes[0] if single else modes, sampler=study.sampler, study_name=cfg.name,
                                storage=storage)
    finally:
        optuna.logging.set_verbosity(level)
    searcher.bounds = cfg.bounds()

    def spec_for(trial):
        spec = space.spec_for(trial.config, f"trial_{trial.trial_id}")
        chash = spec_hash(spec)
        # The Optuna trial behind the Ray trial (OptunaSearch keeps the map), so that a row of
        # pareto.md (its "trial" column) leads to its MLflow run (tag.optuna_trial).
        asked = compat.searcher_trial(searcher, trial.trial_id)
        if asked is not None:
            knobs = " ".join(f"{k}={v}" for k, v in trial.config.items() if str(v) != spec.model.name)
            # optuna_params: the point as Optuna holds it, so a lost journal is rebuilt from MLflow.
            spec = spec.model_copy(update={"tags": {**spec.tags, "optuna_trial": str(asked.number),
                                                    "knobs": knobs[:80],
                                                    "optuna_params": json.dumps(asked.params, sort_keys=True)}})
        return spec, chash

    res = space.study.resources
    board.slots = slots_for(res.cpu, res.gpu)
    writer = MlflowWriter(tracker, {space.study.name: (exp_id, parent_id)}, spec_for, board)
    rungs = space.rungs()
    scheduler = CostAwareHalving(space, searcher, study, rungs) if rungs else None
    # A trial measures its cost before training only for a measured cost objective (latency):
    # the scheduler counts the exact ones itself.
    from harness.metrics import is_measured

    rung_cost = any(is_measured(o.metric) for o in cfg.objectives)
    trainable = tune.with_resources(tune.with_parameters(_search_trainable, spec_for=space.spec_for, rungs=rungs,
                                                         rung_cases=cfg.scheduler.rung_cases, rung_cost=rung_cost),
                                    {"cpu": res.cpu, "gpu": res.gpu})
    reporter = tune.CLIReporter(metric_columns={m: m for m in metrics}, max_report_frequency=15)
    return _fit(trainable, tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=n, reuse_actors=True),
                writer, reporter, verbose, storage=storage_dir, name=f"search-{cfg.name}", max_failures=0)
