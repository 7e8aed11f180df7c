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
    from harness.tracking import CONFIG_HASH, FOLD, LOOKS, RUN_WITH, SEED, TRIAL_KEY, column

    store = Session(SessionOptions(tracking_uri, writes=False)).reader  # the store checked: report, evaluate, submit
    exp = store.experiment_of(study.name)
    runs = store.runs(exp, "trial", scale)  # newest first
    key, seed = column(runs, f"tags.{TRIAL_KEY}"), column(runs, f"tags.{SEED}", 0).astype(int)
    seen_seeds = 1 + int(seed.max()) if len(runs) else 1
    # A study run --until-decided is judged as it was run: sequentially over its looks, at the
    # seeds of the last look reached.
    last = column(store.runs(exp, "study", scale, most=1), f"tags.{LOOKS}", "")
    looks = [int(n) for n in (last.iloc[0] if len(last) else "").split(",") if n]
    reached = [n for n in looks if n <= seen_seeds]
    wanted = seeds or (reached[-1] if reached else 0) or study.scales[scale].seeds or study.seeds
    folds = 1 + int(column(runs, f"tags.{FOLD}", 0).astype(int).max()) if len(runs) else 1
    # The study's trials as it stands, without building a model or reading data: only their hashes.
    specs = resolve(study, scale, max(wanted, seen_seeds), folds, check=False)
    expected_hash = {s.key: spec_hash(s) for s in specs} | {c["key"]: c["hash"] for c in combined_keys(study, specs)}
    current, finished = key.map(expected_hash) == column(runs, f"tags.{CONFIG_HASH}"), runs.status == "FINISHED"
    counted = current & (seed < wanted)
    # The first finished run of a key (the newest) is the one that counts.
    done = runs[counted & finished]
    done = done[~key[done.index].duplicated()]
    failed = sorted(set(key[counted & (runs.status == "FAILED")]) - set(key[done.index]))
    done, incomplete = _complete(done)
    rows = _trial_rows(done, axes={v.name: tag_axes(v) for v in table_rows(study)})
    # Studies run together (`harness run A.yaml B.yaml`) share their time: the report says so.
    ran_with = sorted({name for parent in set(rows.get("parent", pd.Series(dtype=object)).dropna())
                       for name in store.run(parent).data.tags.get(RUN_WITH, "").split(",") if name})
    return StudyRuns(study=study, scale=scale, trials=mark_failed(rows, study.failed_to_train), failed=failed,
                     stale=int((finished & ~current).sum()),
                     per_case=_per_case(store, rows) if with_cases and not rows.empty else None, ran_with=ran_with,
                     incomplete=incomplete, extra=key[current & finished & (seed >= wanted)].nunique(), seeds=wanted,
                     looks=[n for n in looks if n <= wanted])


def _complete(done: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``done`` without the runs that lack Dice, and a line per run lacking a ``REQUIRED`` metric (a
    store that lost them, or a run closed by hand): said in the report, never a traceback."""
    from harness.tracking import TRIAL_KEY, column

    lacks = {m: column(done, f"metrics.{m}").isna() for m in REQUIRED}
    incomplete = [f"{r[f'tags.{TRIAL_KEY}']} (run {r.run_id}) lacks {', '.join(m for m in REQUIRED if lacks[m][i])}"
                  + ("; left out" if lacks["mean_dice"][i] else "")
                  for i, r in done.iterrows() if any(lacks[m][i] for m in REQUIRED)]
    return done[~lacks["mean_dice"]], incomplete


def _trial_rows(done: pd.DataFrame, axes: dict[str, dict[str, str]]) -> pd.DataFrame:
    """One row per counted trial: its run, key, variant and seed, times, the variant's axes, the
    metrics it logged, its model parameters as run, device and parent run."""
    from harness.tracking import MODEL_PARAMS, PARENT, SEED, TRIAL_KEY, VARIANT

    def tag(run: dict, name: str):
        return None if pd.isna(run.get(f"tags.{name}")) else run[f"tags.{name}"]

    return pd.DataFrame([{"run_id": r["run_id"], "key": r[f"tags.{TRIAL_KEY}"], "variant": r[f"tags.{VARIANT}"],
                          "seed": int(r[f"tags.{SEED}"]), "start_time": r["start_time"], "end_time": r["end_time"],
                          **axes.get(r[f"tags.{VARIANT}"], {}),
                          **{k[len("metrics."):]: v for k, v in r.items() if k.startswith("metrics.") and pd.notna(v)},
                          "model_params": tag(r, MODEL_PARAMS), "device": tag(r, "result.device"),
                          "parent": tag(r, PARENT)}
                         for r in done.to_dict("records")])


def _per_case(store, rows: pd.DataFrame) -> pd.DataFrame | None:
    """Every trial's per-case metrics (its ``per_case.json``), with its variant and seed."""
    frames = []
    for row in rows.to_dict("records"):
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
    found = store.runs(store.experiment_of(runs.study.name), "evaluation", runs.scale, finished=True)
    dice = dict(zip(runs.trials.run_id, runs.trials.mean_dice)) if "mean_dice" in runs.trials else {}
    rows = []
    for _, r in found.iterrows():
        members = (r.get(f"tags.{MEMBER_RUNS}") or "").split(",")
        if not all(m in dice for m in members):
            continue  # evaluates trials of an older configuration
        members_dice = float(np.mean([dice[x] for x in members]))
        rows.append({"variant": r[f"tags.{VARIANT}"], "fold": r.get(f"tags.{FOLD}") or "",
                     "inferer": json.loads(r["tags.inferer"])["name"], "members": len(members),
                     "mean_dice": r.get("metrics.mean_dice", math.nan), "members' mean_dice": members_dice,
                     "Δ": r.get("metrics.mean_dice", math.nan) - members_dice, "gmacs": r.get("metrics.gmacs"),
                     "forward_passes": r.get("metrics.forward_passes"),
                     "latency_ns_per_voxel": r.get("metrics.latency_ns_per_voxel", math.nan)})
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
