"""A study's finished runs from MLflow (trials, their per-case metrics, evaluations, wall time),
kept only where their configuration hash matches the study file as it stands."""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.config import StudyCfg, VariantCfg, combined_keys, resolve, spec_hash, table_rows
from harness.report.failures import mark_failed


@dataclass
class StudyRuns:
    study: StudyCfg
    scale: str
    trials: pd.DataFrame  # one row per finished trial (latest of each trial key), current config only
    failed: list[str] = field(default_factory=list)
    stale: int = 0  # finished runs of an older configuration, left out
    per_case: pd.DataFrame | None = None  # variant, seed, case, metric columns
    ran_with: list[str] = field(default_factory=list)  # studies whose trials ran in the same `harness run`
    incomplete: list[str] = field(default_factory=list)  # finished runs lacking metrics: which, and what
    extra: int = 0  # finished trials of seeds beyond those counted (``seeds``), left out
    seeds: int = 1  # the seeds counted: the study's at the scale, or --seeds
    looks: list[int] = field(default_factory=list)  # seed counts judged at by `run --until-decided`

    def params_of(self, variant: str) -> dict[str, Any]:
        """The model parameters ``variant`` ran with: logged with its run, or (no run yet) the
        study's at this scale, resolved as ``harness run`` would (scale, task and family applied)."""
        t = self.trials
        if not t.empty and "model_params" in t:
            ran = t.loc[t.variant == variant, "model_params"].dropna()
            if len(ran) and ran.iloc[0]:
                return json.loads(ran.iloc[0])
        if not hasattr(self, "_resolved"):
            self._resolved = {s.variant: s.model.params for s in resolve(self.study, self.scale, 1, check=False)}
        return self._resolved.get(variant, {})


REQUIRED = ("mean_dice", "params", "gmacs")  # every finished trial logs these


def tag_axes(v: VariantCfg) -> dict[str, str]:
    return {"variant": v.name, **v.tags}


def load_runs(study: StudyCfg, scale: str, tracking_uri: str | None = None, with_cases: bool = True,
              seeds: int | None = None) -> StudyRuns:
    """Finished trial runs of ``study`` at ``scale`` whose configuration matches the study file now,
    of its seeds at that scale (or the first ``seeds``): runs of further seeds, from a run with a
    larger ``--seeds`` or a study that has since shrunk, are counted in ``extra``, not reported."""
    from harness.session import Session, SessionOptions
    from harness.tracking import (CONFIG_HASH, FOLD, LOOKS, MODEL_PARAMS, PARENT, RUN_WITH, SEED, TRIAL_KEY,
                                  VARIANT)

    store = Session(SessionOptions(tracking_uri, writes=False)).reader  # the store checked: report, evaluate, submit
    exp = store.experiment_of(study.name)
    runs = [] if exp is None else store.runs_of(exp, "trial", scale)
    seen_seeds = 1 + max([int(r.data.tags.get(SEED, 0)) for r in runs] or [0])
    # A study run --until-decided is judged as it was run: sequentially over its looks, at the
    # seeds of the last look reached.
    last = [] if exp is None else store.runs_of(exp, "study", scale, most=1)
    looks = [int(n) for n in last[0].data.tags.get(LOOKS, "").split(",") if n] if last else []
    reached = [n for n in looks if n <= seen_seeds]
    wanted = seeds or (reached[-1] if reached else 0) or study.scales[scale].seeds or study.seeds
    folds = 1 + max([int(r.data.tags.get(FOLD, 0)) for r in runs] or [0])
    # The study's trials as it stands, without building a model or reading data: only their hashes.
    specs = resolve(study, scale, max(wanted, seen_seeds), folds, check=False)
    expected_hash = {s.key: spec_hash(s) for s in specs} | {c["key"]: c["hash"] for c in combined_keys(study, specs)}
    axes = {v.name: tag_axes(v) for v in table_rows(study)}
    rows, failed, stale, seen, incomplete, extra = [], [], 0, set(), [], set()
    for r in runs:  # newest first: the first finished run of a key is the one that counts
        key = r.data.tags.get(TRIAL_KEY)
        if expected_hash.get(key) != r.data.tags.get(CONFIG_HASH):
            stale += r.info.status == "FINISHED"
            continue
        if int(r.data.tags.get(SEED, 0)) >= wanted:
            if r.info.status == "FINISHED":
                extra.add(key)
            continue
        if r.info.status == "FAILED" and key not in seen:
            failed.append(key)
        if r.info.status != "FINISHED" or key in seen:
            continue
        seen.add(key)
        lacks = [m for m in REQUIRED if m not in r.data.metrics]
        if lacks:  # a store that lost them (or a run closed by hand): said in the report, never a traceback
            incomplete.append(f"{key} (run {r.info.run_id}) lacks {', '.join(lacks)}"
                              + ("; left out" if "mean_dice" in lacks else ""))
            if "mean_dice" in lacks:
                continue
        variant = r.data.tags[VARIANT]
        rows.append({"run_id": r.info.run_id, "key": key, "variant": variant, "seed": int(r.data.tags[SEED]),
                     "start_time": r.info.start_time, "end_time": r.info.end_time,
                     **axes.get(variant, {}), **r.data.metrics,
                     "model_params": r.data.tags.get(MODEL_PARAMS), "device": r.data.tags.get("result.device"),
                     "parent": r.data.tags.get(PARENT)})
    failed = sorted(set(failed) - seen)
    # Studies run together (`harness run A.yaml B.yaml`) share their time: the report says so.
    ran_with = sorted({name for parent in {row["parent"] for row in rows if row["parent"]}
                       for name in store.run(parent).data.tags.get(RUN_WITH, "").split(",") if name})
    trials = mark_failed(pd.DataFrame(rows), study.failed_to_train)
    return StudyRuns(study=study, scale=scale, trials=trials, failed=failed, stale=stale,
                     per_case=_per_case(store, rows) if with_cases and rows else None, ran_with=ran_with,
                     incomplete=incomplete, extra=len(extra), seeds=wanted, looks=[n for n in looks if n <= wanted])


def _per_case(store, rows: list[dict]) -> pd.DataFrame | None:
    """Every trial's per-case metrics (its ``per_case.json``), with its variant and seed."""
    frames = []
    for row in rows:
        with tempfile.TemporaryDirectory() as d:
            try:
                path = store.artifact(row["run_id"], "per_case.json", d)
            except Exception:  # noqa: BLE001  an artifact store that lost the file: no pairs for this run
                continue
            cases = pd.DataFrame(json.loads(Path(path).read_text()))
        cases["variant"], cases["seed"] = row["variant"], row["seed"]
        frames.append(cases)
    return pd.concat(frames, ignore_index=True) if frames else None


def evaluations(runs: StudyRuns, store) -> pd.DataFrame:
    """``harness evaluate`` runs in ``store`` (``harness.tracking.Store``) whose members are all
    trials shown in this report, newest first."""
    from harness.tracking import FOLD, MEMBER_RUNS, VARIANT

    if runs.trials.empty:
        return pd.DataFrame()
    found = store.runs_of(store.experiment_of(runs.study.name), "evaluation", runs.scale, finished=True)
    dice = dict(zip(runs.trials.run_id, runs.trials.mean_dice)) if "mean_dice" in runs.trials else {}
    rows = []
    for r in found:
        members = r.data.tags.get(MEMBER_RUNS, "").split(",")
        if not all(m in dice for m in members):
            continue  # evaluates trials of an older configuration
        m = r.data.metrics
        members_dice = float(np.mean([dice[x] for x in members]))
        rows.append({"variant": r.data.tags[VARIANT], "fold": r.data.tags.get(FOLD, ""),
                     "inferer": json.loads(r.data.tags["inferer"])["name"], "members": len(members),
                     "mean_dice": m.get("mean_dice"), "members' mean_dice": members_dice,
                     "Δ": m.get("mean_dice", math.nan) - members_dice, "gmacs": m.get("gmacs"),
                     "forward_passes": m.get("forward_passes"),
                     "latency_ns_per_voxel": m.get("latency_ns_per_voxel", math.nan)})
    return pd.DataFrame(rows)


def wall_time(runs: StudyRuns) -> float:
    """Seconds the study's trials ran: per ``harness run`` (parent run), its first trial's start
    to its last one's end, summed over the runs the trials come from (a resumed run, or seeds
    added on another day, add their own time, not the days between)."""
    t = runs.trials
    if t.empty or "start_time" not in t or "end_time" not in t:
        return 0.0
    g = t.assign(parent=t["parent"].fillna("") if "parent" in t else "").groupby("parent")
    return float((g.end_time.max() - g.start_time.min()).sum() / 1000)
