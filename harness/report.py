"""``harness report``: a study's runs from MLflow -> the paper's table, statistics, plots.

The study file's ``layout`` says how the paper laid its table out; no per-table code:

- ``rows: <axis>`` and ``columns: <axis>`` with ``value: <metric>``: a pivot (GSP Table 2);
- ``rows: <axis>`` and ``columns: [metric, ...]``: one column per metric (ConResNet Table III);
- ``rows: <axis>``, ``columns: <axis>`` and ``value: {label: [metric, ...]}``: under each column
  label a group of metric columns (GSP Table 1: BraTS18 WT, TC, ET, mDice and PROMISE12 mDice);
- ``columns: <axis>`` alone: one row (GSP Sec. 3.2);
- ``row_params: {label: "param.path"}``: leading columns read from the variants' parameters;
- ``best: max_per_column | max_per_row | min_per_column | min_per_row``: the cell the paper bolds;
- ``baseline: <variant>``: every variant's paired difference to it, with its 95% interval over
  seeds and cases (``UNIT``).
- ``columns: <axis>`` with ``values: {label: metric}``: metrics as rows (Distill DSM Table 1); with
  ``rows: <axis>`` too, ``values: {row: {label: metric}}`` gives each row group its own metric
  rows (Distill DSM Table 3: per data set, Dice per class and HD); the row group ``"*"`` comes
  first and is shared by all rows (Distill DSM Table 2's one parameter row): each column's cell
  is the variant the paper's figure is pinned on (an ``expected`` entry for that metric).

An axis is a grid axis or a variant tag (``variant`` for the variant name). Above the table,
the study's ``claims`` are judged on the runs (``judge_claim``).
"""
from __future__ import annotations

import html as html_lib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from harness import stats as stats_
from harness.config import (EXACT_COSTS, ConfigError, StudyCfg, VariantCfg, apply_data_roots, combined_keys,
                            load_study, resolve, spec_hash, table_rows)

FORMATS = ("md", "html", "tex", "csv")


@dataclass
class StudyRuns:
    study: StudyCfg
    scale: str
    trials: pd.DataFrame  # one row per finished trial (latest of each trial key), current config only
    failed: list[str] = field(default_factory=list)
    stale: int = 0  # finished runs of an older configuration, left out
    per_case: pd.DataFrame | None = None  # variant, seed, case, metric columns
    ran_with: list[str] = field(default_factory=list)  # studies whose trials ran in the same `harness run`

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


def _tag_axes(v: VariantCfg) -> dict[str, str]:
    return {"variant": v.name, **v.tags}


def load_runs(study: StudyCfg, scale: str, tracking_uri: str | None = None, with_cases: bool = True) -> StudyRuns:
    """Finished trial runs of ``study`` at ``scale`` whose configuration matches the study file now."""
    from mlflow.tracking import MlflowClient

    from harness.tracking import PARENT, default_tracking_uri

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(tracking_uri or default_tracking_uri())
    exp = client.get_experiment_by_name(f"harness/{study.name}")
    runs = [] if exp is None else client.search_runs(
        [exp.experiment_id], f"tags.harness_role = 'trial' and tags.scale = '{scale}'", max_results=50000,
        order_by=["attributes.start_time DESC"])
    seeds = 1 + max([int(r.data.tags.get("seed", 0)) for r in runs] or [0])
    folds = 1 + max([int(r.data.tags.get("fold", 0)) for r in runs] or [0])
    # The study's trials as it stands, without building a model or reading data: only their hashes.
    specs = resolve(study, scale, seeds, folds, check=False)
    expected_hash = {s.key: spec_hash(s) for s in specs} | {c["key"]: c["hash"] for c in combined_keys(study, specs)}
    axes = {v.name: _tag_axes(v) for v in table_rows(study)}
    rows, failed, stale, seen = [], [], 0, set()
    for r in runs:  # newest first: the first finished run of a key is the one that counts
        key = r.data.tags.get("trial_key")
        if expected_hash.get(key) != r.data.tags.get("config_hash"):
            stale += r.info.status == "FINISHED"
            continue
        if r.info.status == "FAILED" and key not in seen:
            failed.append(key)
        if r.info.status != "FINISHED" or key in seen:
            continue
        seen.add(key)
        variant = r.data.tags["variant"]
        rows.append({"run_id": r.info.run_id, "key": key, "variant": variant, "seed": int(r.data.tags["seed"]),
                     "start_time": r.info.start_time, "end_time": r.info.end_time,
                     **axes.get(variant, {}), **r.data.metrics,
                     "model_params": r.data.tags.get("model_params"), "device": r.data.tags.get("result.device"),
                     "parent": r.data.tags.get(PARENT)})
    failed = sorted(set(failed) - seen)
    # Studies run together (`harness run A.yaml B.yaml`) share their time: the report says so.
    ran_with = sorted({name for parent in {row["parent"] for row in rows if row["parent"]}
                       for name in client.get_run(parent).data.tags.get("run_with", "").split(",") if name})
    trials = pd.DataFrame(rows)
    per_case = None
    if with_cases and rows:
        frames = []
        for row in rows:
            with tempfile.TemporaryDirectory() as d:
                try:
                    path = client.download_artifacts(row["run_id"], "per_case.json", d)
                except Exception:  # noqa: BLE001  an artifact store that lost the file: no pairs for this run
                    continue
                cases = pd.DataFrame(json.loads(Path(path).read_text()))
            cases["variant"], cases["seed"] = row["variant"], row["seed"]
            frames.append(cases)
        per_case = pd.concat(frames, ignore_index=True) if frames else None
    return StudyRuns(study, scale, trials, failed, stale, per_case, ran_with)


def summarise(trials: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per variant and metric: n seeds, mean, std and a 95% t confidence interval."""
    out = []
    for variant, g in (trials.groupby("variant", sort=False) if "variant" in trials else []):
        for m in metrics:
            vals = g[m].dropna().to_numpy(float) if m in g else np.array([])
            n = len(vals)
            mean = float(vals.mean()) if n else math.nan
            std = float(vals.std(ddof=1)) if n > 1 else math.nan
            half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
            out.append({"variant": variant, "metric": m, "n": n, "mean": mean, "std": std,
                        "ci_low": mean - half, "ci_high": mean + half})
    return pd.DataFrame(out, columns=["variant", "metric", "n", "mean", "std", "ci_low", "ci_high"])


# Cost metrics measured with timing noise: judged over seeds; the rest (params, MACs) are exact.
NOISY_COSTS = ("latency", "peak_mem", "train_peak_mem", "step_time")
UNIT = ("a t-interval over training seeds with a validation-case term (`harness.stats`: the seed and case "
        "parts of the paired differences, each at its own degrees of freedom, combined in quadrature; "
        "calibrated in docs/calibration.md)")


def paired_difference(df: pd.DataFrame | None, a: list[str], b: list[str] | float, metric: str,
                      unit: tuple[str, ...] = ("case", "seed")) -> np.ndarray:
    """Matrix of a - b, rows x seeds, each side averaged over its variants where all are present.

    Per-case metrics pair by (case, seed): rows are cases. Trial-level metrics (costs) pair by
    seed: one row. ``b`` may be a number (a published figure): a - b then. Empty when nothing pairs.
    """
    if df is None or df.empty or metric not in df:
        return np.empty((0, 0))

    def side(members: list[str]) -> pd.Series:
        g = df[df.variant.isin(members)].dropna(subset=[metric]).groupby(list(unit))[metric]
        return g.mean()[g.count() == len(members)]

    diff = (side(a) - (b if isinstance(b, (int, float)) else side(b))).dropna()
    if diff.empty:
        return np.empty((0, 0))
    if len(unit) == 1:
        return diff.to_numpy(float)[None, :]
    return diff.unstack("seed").dropna(axis=0, how="any").to_numpy(float)


def paired_test(df: pd.DataFrame | None, a: list[str], b: list[str] | float, metric: str,
                unit: tuple[str, ...] = ("case", "seed"), sign: float = 1.0) -> dict[str, Any]:
    """``sign`` x (a - b) over matched pairs: the mean, its 95% interval (``UNIT``) and the
    minimum detectable effect at 80% power (``detectable``; ``detectable_equal`` for a claim of
    no difference), all from ``harness.stats``.

    The interval is NaN with fewer than 2 seeds: the noise between seeds would go unsampled.
    """
    d = sign * paired_difference(df, a, b, metric, unit)
    if d.size == 0:
        return {"pairs": 0, "cases": 0, "seeds": 0, "delta": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                "detectable": math.nan, "detectable_equal": math.nan}
    parts = stats_.components(d)  # once for the interval and both detectable effects
    mean, lo, hi = stats_.interval(d, p=parts)
    return {"pairs": int(d.size), "cases": d.shape[0] if len(unit) > 1 else 0, "seeds": d.shape[1],
            "delta": float(mean), "ci_low": float(lo), "ci_high": float(hi),
            "detectable": float(stats_.detectable(d, p=parts)),
            "detectable_equal": float(stats_.detectable(d, equivalence=True, p=parts))}


def paper_effect(study: StudyCfg, claim) -> float:
    """The claim's effect in the paper's own numbers (``_paper_value``), signed as claimed; NaN
    where the paper prints no number for a side (for ``equal``: the absolute difference, or the
    difference where the claim states a magnitude; for a ratio claim: the ratio)."""
    from harness.config import claim_members

    def side(s) -> float:
        if isinstance(s, (int, float)):
            return float(s)
        vals = [_paper_value(study, v, claim.metric) for v in claim_members(study, s)]
        return float(np.mean(vals))  # NaN when any member lacks the figure

    if claim.measure == "ratio":
        return side(claim.better) / side(claim.than)
    eff = side(claim.better) - side(claim.than)
    if claim.direction == "equal":
        return eff if claim.value is not None else abs(eff)
    return -eff if claim.direction == "lower" else eff


def _paper_value(study: StudyCfg, variant: str, metric: str) -> float:
    """The paper's figure for ``variant``: ``expected``, or for ``mean_dice`` / ``mean_hd95`` where
    the paper prints only per-region figures (ConResNet's ET / WT / TC), their mean."""
    value = _expected(study, variant, metric)[0]
    if math.isnan(value) and metric in ("mean_dice", "mean_hd95"):
        prefix = metric.removeprefix("mean_") + "_"
        regions = [m for m in study.expected.get(variant, {}) if m.startswith(prefix)]
        value = float(np.mean([_expected(study, variant, m)[0] for m in regions])) if regions else math.nan
    return value


def judge_claim(runs: "StudyRuns", claim) -> dict[str, Any]:
    """reproduced / contradicted / inconclusive for one ``ClaimCfg`` on the runs at hand, with
    the design's detectable effect and a flag.

    Effect = ``better`` - ``than`` signed so that positive means "as claimed" (a ratio claim:
    ``better / than`` as it is, judged against its reference, ``ClaimCfg.reference``). Accuracy
    metrics (kept per case) pair by (case, seed); costs by seed, where parameters and MACs are
    exact (``EXACT_COSTS``: the interval is the number itself) and every other trial-level
    number (timed costs, the worst case's Dice) gets the paired t over seeds.
    Verdicts: ``harness.stats.verdict`` on the 95% interval (``UNIT``); too few seeds to sample
    their noise is inconclusive. ``detectable``: for a directional claim, the true effect the
    design would reproduce with 80% power (margin + minimum detectable effect); for ``equal``,
    the smallest margin it would show a true zero difference within. ``flag``: ``underpowered``
    when an inconclusive claim's detectable effect exceeds the paper's own (``paper_effect``;
    for ``equal``: exceeds the margin), ``borderline`` when moving the interval by a tenth of
    its half-width would change the verdict (``harness.stats.is_borderline``).
    """
    from harness.config import claim_members

    a = claim_members(runs.study, claim.better)
    b = claim.than if isinstance(claim.than, (int, float)) else claim_members(runs.study, claim.than)
    per_case = runs.per_case is not None and claim.metric in runs.per_case
    ratio = claim.measure == "ratio"
    equal = claim.direction == "equal"
    if ratio:  # exact costs (config): the ratio is a number, its log difference the same every seed
        logs = runs.trials.assign(**{claim.metric: np.log(runs.trials[claim.metric])}) \
            if claim.metric in runs.trials else runs.trials
        r = paired_test(logs, a, math.log(b) if isinstance(b, (int, float)) else b, claim.metric, ("seed",))
        r["delta"] = math.exp(r["delta"])
    else:
        r = paired_test(runs.per_case if per_case else runs.trials, a, b, claim.metric,
                        ("case", "seed") if per_case else ("seed",), sign=-1.0 if claim.direction == "lower" else 1.0)
    lo, hi = r["ci_low"], r["ci_high"]
    target = stats_.bound(claim.margin, claim.direction)  # what a directional effect must exceed
    found = r["detectable_equal"] if equal else target + r["detectable"]
    note = ""
    if r["pairs"] == 0:
        note = "no matched finished runs"
    elif not per_case and claim.metric in EXACT_COSTS:
        lo = hi = r["delta"]  # parameters and MACs are exact
        found = target if not equal else 0.0
    elif math.isnan(lo):
        note = f"not enough pairs: {r['cases']} cases x {r['seeds']} seeds (needs >= 2 seeds)" if per_case else \
            "a measurement over seeds needs >= 2 seeds"
    # The verdict reads an interval signed as claimed and centred on the claim's reference.
    ref = claim.reference
    slo, shi = (ref - hi, ref - lo) if ratio and claim.direction == "lower" else (lo - ref, hi - ref)
    verdict = str(stats_.verdict(slo, shi, claim.margin, claim.direction))
    paper = paper_effect(runs.study, claim)
    flag = ""
    if verdict == "inconclusive" and (found > claim.margin if equal else found > paper):
        flag = "underpowered"
    elif not math.isnan(lo) and stats_.is_borderline(slo, shi, claim.margin, claim.direction):
        flag = "borderline"
    name = f"{claim.metric} ratio" if ratio else claim.metric
    metric = (f"{name} = {claim.reference:g} (±{claim.margin:g})" if equal and (ratio or claim.value is not None) else
              f"{name} = (±{claim.margin:g})" if equal else
              f"{name} ≥ (−{claim.margin:g})" if claim.direction == "noninferior" else
              f"{name} < {1 - claim.margin:g}" if ratio and claim.direction == "lower" else
              f"{name} > {1 + claim.margin:g}" if ratio else name)
    return {"claim": claim.text, "where": claim.where, "source": claim.source, "id": claim_id(runs.study, claim),
            "metric": metric, "verdict": verdict, "flag": flag, "effect": r["delta"], "ci_low": lo, "ci_high": hi,
            "detectable": found, "paper": paper, "cases": r["cases"], "seeds": r["seeds"], "note": note}


def claim_id(study: StudyCfg, claim) -> str:
    """The comparison a claim judges, for counting each once (``reports/index.md``): its ``id``
    where the study gives one (the same comparison in several studies), else paper, study,
    sides and metric: two margins on one comparison (GSP Table 1's "> 0" and "> 20") are one."""
    if claim.id:
        return f"{study.paper}:{claim.id}"
    better, than = (s if isinstance(s, (str, int, float)) else json.dumps(s, sort_keys=True)
                    for s in (claim.better, claim.than))
    return f"{study.paper}:{study.name}:{better}|{than}|{claim.metric}"


CLAIM_COLUMNS = ["claim", "where", "source", "id", "metric", "verdict", "flag", "effect", "ci_low", "ci_high",
                 "detectable", "paper", "cases", "seeds", "note"]


def claims_table(runs: "StudyRuns") -> pd.DataFrame:
    return pd.DataFrame([judge_claim(runs, c) for c in runs.study.claims], columns=CLAIM_COLUMNS)


def _expected(study: StudyCfg, variant: str, metric: str) -> tuple[float, float | None]:
    e = study.expected.get(variant, {}).get(metric)
    if e is None:
        return math.nan, None
    return (float(e), None) if isinstance(e, (int, float)) else (e.value, e.tol)


def _at_paper_input(runs: StudyRuns) -> pd.DataFrame:
    """The trials with ``gmacs`` recomputed at the input the paper's figure is for, where the
    study says which (``expected.<variant>.gmacs.at``): MACs per voxel x that input's voxels."""
    t = runs.trials
    if t.empty or "macs_per_voxel" not in t:
        return t
    t = t.copy()
    for variant, metrics in runs.study.expected.items():
        e = metrics.get("gmacs")
        if getattr(e, "at", None):
            voxels = math.prod([e.at[0], *e.at[2:]])
            rows = t.variant == variant
            t.loc[rows, "gmacs"] = t.loc[rows, "macs_per_voxel"] * voxels / 1e9
    return t


def _paper_cell(study: StudyCfg, variant: str, metric: str) -> str:
    """The paper's number as printed, with its ± where the study carries it (``sd``)."""
    e = study.expected.get(variant, {}).get(metric)
    sd = getattr(e, "sd", None)
    return _fmt_paper(_expected(study, variant, metric)[0]) + (f" ± {sd:g}" if sd is not None else "")


def _param(params: dict[str, Any], path: str) -> Any:
    node: Any = params
    for part in path.split("."):
        node = node[int(part)] if isinstance(node, list) else node.get(part) if isinstance(node, dict) else None
    return tuple(node) if isinstance(node, list) else node


def _fmt(x: float, metric: str = "") -> str:
    """Ours: one decimal for percentages and distances, two below 10, thousands separators above 1e4."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if metric.startswith("spec_"):  # specificities crowd near 100%: the paper prints 5 digits
        return f"{x:.3f}"
    if abs(x) >= 1e4:
        return f"{x:,.0f}"
    if abs(x) >= 10 or x == 0:
        return f"{x:.1f}"
    return f"{x:.2f}" if abs(x) >= 0.01 else f"{x:.3g}"


def _cell(s, metric: str) -> str:
    """Mean ± sample std over seeds (and folds); no ± for a number every run shares (costs)."""
    if s.n <= 1:
        return _fmt(s.mean, metric)
    spread = f" ± {_fmt(s.std, metric)}" if s.std != 0 else ""
    return f"{_fmt(s.mean, metric)}{spread} (n={s.n})"


def _fmt_paper(x: float) -> str:
    """The paper's numbers exactly as printed (no rounding)."""
    if isinstance(x, float) and math.isnan(x):
        return "—"
    return f"{x:,.0f}" if abs(x) >= 1e4 else f"{x:g}"


def layout_values(study: StudyCfg) -> list[tuple[str, str, str]]:
    """(row group, row label, metric) of a ``values`` layout, in the paper's order."""
    lay, row_axis = study.layout, study.layout.rows
    if not row_axis:
        return [("", label, m) for label, m in lay.values.items()]
    groups = list(dict.fromkeys(_tag_axes(v).get(row_axis, "") for v in table_rows(study)))
    return [(g, label, m) for g in ["*", *groups] for label, m in lay.values.get(g, {}).items()]


def layout_metrics(study: StudyCfg) -> list[str]:
    lay = study.layout
    if lay.values is not None:
        return list(dict.fromkeys(m for _, _, m in layout_values(study)))
    if isinstance(lay.columns, list):
        return lay.columns
    return [lay.value] if isinstance(lay.value, str) else list(dict.fromkeys(m for ms in lay.value.values() for m in ms))


def _values_table(runs: StudyRuns) -> tuple[pd.DataFrame, list[str]]:
    """Metrics as rows, one column (ours, paper) per ``columns`` axis label."""
    study, lay = runs.study, runs.study.layout
    vs, row_axis, col_axis = table_rows(study), lay.rows, lay.columns
    rows = layout_values(study)
    summary = summarise(runs.trials if not runs.trials.empty else pd.DataFrame({"variant": []}),
                        layout_metrics(study))
    by = {(r.variant, r.metric): r for r in summary.itertuples()}
    cols = list(dict.fromkeys(_tag_axes(v).get(col_axis, v.name) for v in vs))
    cell = {(_tag_axes(v).get(row_axis, "") if row_axis else "", _tag_axes(v).get(col_axis, v.name)): v for v in vs}
    for v in vs:  # the shared row group: per column, the variant the paper's figure is pinned on
        c = _tag_axes(v).get(col_axis, v.name)
        if any(study.expected.get(v.name, {}).get(m) is not None for g, _, m in rows if g == "*"):
            cell.setdefault(("*", c), v)
    table = pd.DataFrame({row_axis or "": ["all" if g == "*" else g for g, _, _ in rows],
                          "metric": [label for _, label, _ in rows]})
    notes: list[str] = []
    for c in cols:
        ours, paper = [], []
        for g, _, m in rows:
            v = cell.get((g, c))
            if v is None:
                ours.append(""), paper.append("")
                continue
            s = by.get((v.name, m))
            if s is None or s.n == 0:
                failed = any(k.startswith(f"{v.name}#") for k in runs.failed)
                ours.append("— (failed)" if failed else "—")
                if failed or runs.trials.empty or not (runs.trials.variant == v.name).any():
                    notes.append(f"{v.name} / {m}: {'failed' if failed else 'no run'}")
            else:
                shared = f" ({_tag_axes(v).get(row_axis, '')})" if g == "*" else ""  # whose figure it is
                ours.append(_cell(s, m) + shared)
            paper.append(_paper_cell(study, v.name, m))
        table[f"{c} ours"], table[f"{c} paper"] = ours, paper
    if not row_axis:
        table = table.drop(columns=[""])
    return table.set_index(row_axis or "metric"), sorted(set(notes))


def layout_table(runs: StudyRuns) -> tuple[pd.DataFrame, list[str]]:
    """The paper's table: for each paper column, ours (mean ± std), the paper's value and Δ."""
    study, lay = runs.study, runs.study.layout
    if lay.values is not None:
        return _values_table(runs)
    vs = table_rows(study)
    cols_spec = lay.columns
    metric_cols = isinstance(cols_spec, list)
    value = lay.value
    metrics = layout_metrics(study)
    summary = summarise(_at_paper_input(runs), metrics) if not runs.trials.empty else summarise(
        pd.DataFrame({"variant": []}), metrics)
    by = {(r.variant, r.metric): r for r in summary.itertuples()}
    row_axis = lay.rows
    notes: list[str] = []

    def cell_variant(v: VariantCfg) -> tuple[str, str]:
        ax = _tag_axes(v)
        return (ax.get(row_axis, "") if row_axis else "", ax.get(cols_spec, v.name) if not metric_cols else "")

    row_labels = list(dict.fromkeys(cell_variant(v)[0] for v in vs))
    if metric_cols:
        col_labels, lookup = metrics, {(cell_variant(v)[0], m): (v, m) for v in vs for m in metrics}
    elif isinstance(value, str):
        col_labels = list(dict.fromkeys(cell_variant(v)[1] for v in vs))
        lookup = {cell_variant(v): (v, value) for v in vs}
    else:  # metric groups under each column label
        col_labels = [f"{a} {m}" for a in dict.fromkeys(cell_variant(v)[1] for v in vs) for m in value.get(a, [])]
        lookup = {(r, f"{a} {m}"): (v, m) for v in vs for r, a in [cell_variant(v)] for m in value.get(a, [])}
    means = pd.DataFrame(index=row_labels, columns=col_labels, dtype=float)
    table = pd.DataFrame(index=row_labels)
    for label, path in lay.row_params.items():
        first = {cell_variant(v)[0]: v for v in reversed(vs)}
        vals = [_param(runs.params_of(first[r].name), path) if r in first else None for r in row_labels]
        table[label] = ["" if v is None else str(v) for v in vals]
    for c in col_labels:
        ours, paper, delta = [], [], []
        for r in row_labels:
            hit = lookup.get((r, c))
            if hit is None:
                ours.append(""), paper.append(""), delta.append("")
                continue
            v, m = hit
            s = by.get((v.name, m))
            exp, _ = _expected(study, v.name, m)
            if s is None or s.n == 0:
                ran = not runs.trials.empty and (runs.trials.variant == v.name).any()
                measured = ran and m in runs.trials and runs.trials.loc[runs.trials.variant == v.name, m].notna().any()
                status = ("not measured at this scale" if ran and m.startswith(NOISY_COSTS) and not measured else
                          "undefined: empty masks" if ran and m.startswith(("dice", "hd95", "sens", "spec", "mean_"))
                          else "not reported by this variant" if ran else
                          "failed" if any(k.startswith(f"{v.name}#") for k in runs.failed) else "no run")
                ours.append(f"— ({status})")
                notes.append(f"{v.name} / {m}: {status}")
            else:
                at = getattr(study.expected.get(v.name, {}).get(m), "at", None)
                ours.append(_cell(s, m) + (f" (at {'x'.join(map(str, at))})" if at else ""))
                means.loc[r, c] = s.mean
            paper.append(_paper_cell(study, v.name, m))
            delta.append(_fmt(s.mean - exp) if s is not None and s.n and not math.isnan(exp) else "—")
        table[f"{c} ours"] = ours
        if any(p not in ("", "—") for p in paper):  # a column the paper has no number for shows ours only
            table[f"{c} paper"], table[f"{c} Δ"] = paper, delta
    best = lay.best
    if isinstance(best, dict):  # per column: {metric: max | min}, e.g. Dice up, cost down
        for c, how in best.items():
            if c in means and means[c].notna().any():
                r = means[c].astype(float).idxmax() if how == "max" else means[c].astype(float).idxmin()
                table.loc[r, f"{c} ours"] = f"**{table.loc[r, f'{c} ours']}**"
    elif best:
        how, _, axis = best.partition("_per_")
        along = 0 if axis == "column" else 1
        found = means.dropna(how="all", axis=1 - along)  # idxmax refuses all-missing columns/rows
        winners = (found.idxmax if how == "max" else found.idxmin)(axis=along, skipna=True) if found.size else {}
        for k, w in dict(winners).items():
            r, c = (w, k) if axis == "column" else (k, w)
            table.loc[r, f"{c} ours"] = f"**{table.loc[r, f'{c} ours']}**"
    table.index.name = row_axis or ""
    return table, notes


def stats_table(runs: StudyRuns) -> pd.DataFrame:
    """Every variant x metric with mean, std, 95% CI over seeds; with a baseline, the paired
    difference, its 95% interval (``UNIT``) and the design's minimum detectable difference."""
    lay = runs.study.layout
    summary = summarise(runs.trials, layout_metrics(runs.study))
    base = lay.baseline
    if base and not summary.empty:
        tests = [{k: v for k, v in paired_test(runs.per_case if r.variant != base else None, [r.variant], [base],
                                               r.metric).items() if k != "detectable_equal"}
                 for r in summary.itertuples()]
        summary = pd.concat([summary, pd.DataFrame(tests).add_prefix(f"vs_{base}_")], axis=1)
        summary["note"] = [
            "" if r.variant == base or math.isnan(getattr(r, f"vs_{base}_delta"))
            else "needs >= 2 seeds" if math.isnan(getattr(r, f"vs_{base}_ci_low"))
            else "within noise (95% CI spans 0)" if getattr(r, f"vs_{base}_ci_low") <= 0 <= getattr(r, f"vs_{base}_ci_high")
            else "differs (95% CI excludes 0)"
            for r in summary.itertuples()]
    return summary


COST_COLUMNS = {"params": "parameters", "gmacs": "GMACs", "latency_ns_per_voxel": "latency (ns / voxel)",
                "peak_mem_mb": "inference peak memory (MB)", "train_peak_mem_mb": "training peak memory (MB)",
                "step_time_s": "training step (s)"}


def cost_table(runs: StudyRuns) -> pd.DataFrame:
    """Each variant's cost as its trials measured it, mean over seeds: parameters and GMACs of
    inference as evaluated, latency, the inference peak and the peak of one training pass on
    the batch (``harness.cost``), and the median training step."""
    t = runs.trials
    cols = [c for c in COST_COLUMNS if c in t and t[c].notna().any()]
    if t.empty or not cols:
        return pd.DataFrame()
    agg = t.groupby("variant", sort=False)[cols].mean().reset_index()
    if "device" in t and t["device"].notna().any():  # where the measured figures come from
        agg["device"] = agg["variant"].map(t.groupby("variant")["device"].agg(lambda d: ", ".join(sorted(set(d.dropna())))))
    return agg.rename(columns=COST_COLUMNS)


def check_pinned(runs: StudyRuns) -> list[tuple[str, str]]:
    """(status, message) for every pinned number (an ``expected`` entry with ``tol``).

    status: ``ok``, ``mismatch``, ``missing`` (no finished run), ``known gap`` (a mismatch
    the study declares, with its note: reported, never hidden, but not a failure), or
    ``scaled``: a scale that changes the model (``scales.<scale>.model``, e.g. a narrower net
    at ``quick``) cannot reproduce the paper's net, so its pinned numbers are not checked there.
    """
    out = []
    scaled = runs.study.scales[runs.scale].model if runs.scale != "paper" else {}
    for variant, metrics in runs.study.expected.items():
        for metric, e in metrics.items():
            if isinstance(e, (int, float)) or e.tol is None:
                continue
            if scaled:
                paper = f"{e.value:,.0f}" if float(e.value).is_integer() else f"{e.value:,.6g}"
                out.append(("scaled", f"{variant} {metric}: paper {paper}, checked at paper scale only "
                                      f"(the {runs.scale} scale changes the model: {scaled})"))
                continue
            got = runs.trials.loc[runs.trials.variant == variant, metric].dropna() if (
                not runs.trials.empty and metric in runs.trials) else pd.Series(dtype=float)
            if got.empty:
                out.append(("missing", f"{variant} {metric}: no finished run to check (paper {e.value} ± {e.tol})"))
                continue
            def num(x: float, sign: str = "") -> str:  # whole numbers in full (parameter counts), else 6 digits
                return f"{x:{sign},.0f}" if abs(x) >= 1e4 or float(x).is_integer() else f"{x:{sign},.6g}"

            msg = (f"{variant} {metric}: ours {num(got.mean())} vs paper {num(e.value)} ± {num(e.tol)} "
                   f"(gap {num(got.mean() - e.value, '+')})" + (f"; {e.note}" if e.note else ""))
            if abs(got.mean() - e.value) <= e.tol:
                out.append(("ok", msg))
            else:
                out.append(("known gap" if e.known_gap else "mismatch", msg))
    return out


def verify(runs: StudyRuns) -> list[str]:
    """Pinned numbers our runs miss (known gaps excluded); empty when all hold."""
    return [m for status, m in check_pinned(runs) if status in ("mismatch", "missing")]


def pareto_front(df: pd.DataFrame, cost: str, acc: str) -> pd.DataFrame:
    """Points not dominated by a cheaper-or-equal, at-least-as-accurate other point."""
    pts = df.dropna(subset=[cost, acc]).sort_values([cost, acc], ascending=[True, False])
    front, best = [], -math.inf
    for _, r in pts.iterrows():
        if r[acc] > best:
            front.append(r)
            best = r[acc]
    return pd.DataFrame(front)


def plots(runs: StudyRuns, out: Path, tracking_uri: str | None = None) -> list[str]:
    """Accuracy vs cost with Pareto fronts, per-region Dice bars, learning curves (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns  # the edge: seaborn is imported only here

    files: list[str] = []
    t = runs.trials
    if t.empty:
        return files
    acc = "mean_dice"
    agg = t.groupby("variant", sort=False).mean(numeric_only=True).reset_index()
    costs = [c for c in ("gmacs", "params", "latency_ns_per_voxel", "peak_mem_mb") if c in agg]
    if acc in agg and costs:
        rows = (len(costs) + 1) // 2
        fig, axes = plt.subplots(rows, 2, figsize=(11, 4.2 * rows), squeeze=False)
        for ax in axes.flat[len(costs):]:
            ax.remove()
        for ax, c in zip(axes.flat, costs):
            sns.scatterplot(data=agg, x=c, y=acc, ax=ax, s=50)
            front = pareto_front(agg, c, acc)
            if not front.empty:
                ax.step(front[c], front[acc], where="post", color="C3", label="Pareto front")
            for _, r in agg.iterrows():
                ax.annotate(r["variant"], (r[c], r[acc]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            if c in ("params", "gmacs") and agg[c].max() > 20 * agg[c].min() > 0:
                ax.set_xscale("log")
            ax.set_xlabel({"gmacs": "GMACs", "params": "parameters", "latency_ns_per_voxel": "latency (ns / voxel)",
                           "peak_mem_mb": "peak memory (MB)"}[c])
            ax.set_ylabel("mean Dice (%)")
            ax.legend(loc="lower right", fontsize=7)
        fig.suptitle(f"{runs.study.name} @ {runs.scale}: accuracy vs cost")
        fig.tight_layout()
        fig.savefig(out / "accuracy_vs_cost.png", dpi=110)
        plt.close(fig)
        files.append("accuracy_vs_cost.png")
    files += axis_curves(runs, out)
    region_cols = [c for c in t.columns if c.startswith("dice_")]
    if region_cols:
        long = t.melt(id_vars=["variant"], value_vars=region_cols, var_name="region", value_name="dice")
        long["region"] = long["region"].str.removeprefix("dice_")
        fig, ax = plt.subplots(figsize=(max(6, 0.5 * t.variant.nunique() * len(region_cols)), 4))
        sns.barplot(data=long, x="variant", y="dice", hue="region", ax=ax, errorbar="sd")
        ax.set_ylabel("Dice (%)")
        ax.tick_params(axis="x", rotation=60, labelsize=7)
        fig.tight_layout()
        fig.savefig(out / "dice_per_region.png", dpi=110)
        plt.close(fig)
        files.append("dice_per_region.png")
    from mlflow.tracking import MlflowClient

    from harness.tracking import PARENT, default_tracking_uri

    client = MlflowClient(tracking_uri or default_tracking_uri())
    curves = []
    for r in t.itertuples():
        for m in ("train_loss", "mean_dice"):
            curves += [{"variant": r.variant, "seed": r.seed, "metric": m, "epoch": h.step, "value": h.value}
                       for h in client.get_metric_history(r.run_id, m)]
    if curves:
        cdf = pd.DataFrame(curves)
        last = cdf.groupby(["variant", "seed", "metric"]).epoch.transform("max")
        cdf = cdf[~((cdf.metric == "mean_dice") & (cdf.epoch == last) & (cdf.epoch > 0) &
                    cdf.duplicated(["variant", "seed", "metric", "value"], keep="first"))]
        g = sns.relplot(data=cdf, x="epoch", y="value", hue="variant", col="metric", kind="line",
                        facet_kws={"sharey": False}, height=3.5, legend=t.variant.nunique() <= 20)
        g.savefig(out / "learning_curves.png", dpi=110)
        plt.close(g.figure)
        files.append("learning_curves.png")
    return files


def _numeric(label: str) -> float | None:
    try:
        return float(label)
    except ValueError:
        return None


def axis_curves(runs: StudyRuns, out: Path) -> list[str]:
    """Dice and cost against each grid axis whose options are numbers (OBELISK's offset count K):
    ``<axis>_curve.png``, mean ± sd over seeds, one panel per metric (mean Dice, GMACs,
    parameters, training memory, as logged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    t, files = runs.trials, []
    for axis, options in runs.study.grid.items():
        values = {label: _numeric(str(label)) for label in options}
        if len(values) < 3 or None in values.values() or axis not in t:
            continue
        d = t[t[axis].isin(list(values))].assign(**{axis: lambda f: f[axis].map(values)})
        metrics = [m for m in ("mean_dice", "gmacs", "params", "train_peak_mem_mb") if m in d and d[m].notna().any()]
        if d.empty or not metrics:
            continue
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4), squeeze=False)
        for ax, m in zip(axes[0], metrics):
            sns.lineplot(data=d, x=axis, y=m, ax=ax, marker="o", errorbar="sd")
            if max(values.values()) > 8 * min(values.values()) > 0:
                ax.set_xscale("log", base=2)
            ax.set_title(m, fontsize=9)
        fig.suptitle(f"{runs.study.name} @ {runs.scale}: against {axis}")
        fig.tight_layout()
        fig.savefig(out / f"{axis}_curve.png", dpi=110)
        plt.close(fig)
        files.append(f"{axis}_curve.png")
    return files


def md_text(text: Any) -> str:
    """A study's own words (titles, claim texts, variant names) as Markdown text: HTML tags shown,
    not run, and a '|' that would split a table cell escaped."""
    return html_lib.escape(str(text), quote=False).replace("|", "\\|")


def _md_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Every label and text cell through ``md_text`` (the table's own ** bold marks kept)."""
    return df.rename(columns=md_text).map(lambda v: md_text(v) if isinstance(v, str) else v)


def _write_table(table: pd.DataFrame, out: Path, stem: str, formats: list[str]) -> None:
    flat = table.reset_index()
    if "md" in formats:
        (out / f"{stem}.md").write_text(_md_frame(flat).to_markdown(index=False, disable_numparse=True) + "\n")
    if "html" in formats:
        html = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", flat.to_html(index=False, escape=True))
        (out / f"{stem}.html").write_text(f"<html><head><meta charset='utf-8'></head><body>{html}</body></html>\n")
    if "tex" in formats:  # LaTeX's specials (_ % & # $ { } ~ ^ \\) escaped, then our bold and ±
        tex = flat.to_latex(index=False, escape=True).replace("±", "$\\pm$")
        tex = re.sub(r"\*\*(.+?)\*\*", r"\\textbf{\1}", tex)
        (out / f"{stem}.tex").write_text(tex)
    if "csv" in formats:
        flat.to_csv(out / f"{stem}.csv", index=False)


def evaluations(runs: StudyRuns, tracking_uri: str | None = None) -> pd.DataFrame:
    """``harness evaluate`` runs whose members are all trials shown in this report, newest first."""
    from mlflow.tracking import MlflowClient

    from harness.tracking import PARENT, default_tracking_uri

    if runs.trials.empty:
        return pd.DataFrame()
    client = MlflowClient(tracking_uri or default_tracking_uri())
    exp = client.get_experiment_by_name(f"harness/{runs.study.name}")
    found = client.search_runs([exp.experiment_id], f"tags.harness_role = 'evaluation' and tags.scale = '{runs.scale}'"
                               " and attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"])
    dice = dict(zip(runs.trials.run_id, runs.trials.mean_dice)) if "mean_dice" in runs.trials else {}
    rows = []
    for r in found:
        members = r.data.tags.get("member_runs", "").split(",")
        if not all(m in dice for m in members):
            continue  # evaluates trials of an older configuration
        m = r.data.metrics
        members_dice = float(np.mean([dice[x] for x in members]))
        rows.append({"variant": r.data.tags["variant"], "fold": r.data.tags.get("fold", ""),
                     "inferer": json.loads(r.data.tags["inferer"])["name"], "members": len(members),
                     "mean_dice": m.get("mean_dice"), "members' mean_dice": members_dice,
                     "Δ": m.get("mean_dice", math.nan) - members_dice, "gmacs": m.get("gmacs"),
                     "forward_passes": m.get("forward_passes"),
                     "latency_ns_per_voxel": m.get("latency_ns_per_voxel", math.nan)})
    return pd.DataFrame(rows)


def write_report(path: str, scale: str, formats: list[str], reports: Path = Path("reports"),
                 tracking_uri: str | None = None, data_roots: list[str] | None = None,
                 require_runs: bool = False) -> tuple[Path, list[str]]:
    """Write ``reports/<study>/`` and refresh the index; returns the folder and the verify problems.

    ``data_roots``: the run's ``--data-root`` values, so that its trials match the study as run.
    ``require_runs``: a study with no run at all at ``scale`` (finished, failed or stale) is a
    ConfigError, raised before anything is written.
    """
    study = load_study(path)
    apply_data_roots(study, scale, data_roots or [])
    runs = load_runs(study, scale, tracking_uri)
    if require_runs and runs.trials.empty and not runs.failed and not runs.stale:
        raise ConfigError(f"{study.name}@{scale}: no runs in {tracking_uri}; run `harness run {path} --scale "
                          f"{scale}` first")
    out = reports / study.name
    out.mkdir(parents=True, exist_ok=True)
    table, notes = layout_table(runs)
    _write_table(table, out, "table", formats)
    st = stats_table(runs)
    st.to_csv(out / "stats.csv", index=False)
    if not runs.trials.empty:
        runs.trials.to_csv(out / "trials.csv", index=False)
    figs = plots(runs, out, tracking_uri)
    problems = verify(runs)
    claims, wall = claims_table(runs), wall_time(runs)
    (out / "claims.json").write_text(json.dumps({"scale": scale, "engine": stats_.ENGINE, "wall_time_s": wall,
                                                 "ran_with": runs.ran_with, "claims": claims.to_dict("records")},
                                                indent=1, default=str))
    md = [f"# {md_text(study.title)}", "", md_text(study.description.strip()), ""]
    if study.deviations:
        md += ["## Deviations from the paper", "", *[f"- {md_text(d.strip())}" for d in study.deviations], ""]
    md += [f"Scale: **{scale}**. {len(runs.trials)} finished trials"
           + (f", failed: {', '.join(runs.failed)}" if runs.failed else "")
           + (f"; {runs.stale} finished runs of an older configuration left out" if runs.stale else "")
           + (f"; wall time of the study {wall / 60:.1f} min" if wall and not runs.ran_with else "")
           + (f"; its trials ran in {wall / 60:.1f} min, in one `harness run` with {len(runs.ran_with)} other "
              f"studies ({', '.join(runs.ran_with)}), whose trials shared the cores"
              if wall and runs.ran_with else "") + ".", ""]
    if not claims.empty:
        md += ["## Claims on our runs", "", claims_legend(study), "", claims_markdown(claims), ""]
    has_paper = any(str(c).endswith(" paper") for c in table.columns)
    legend = ("Each cell: ours (mean ± std over seeds), the paper's value, and ours − paper." if has_paper else
              "Each cell: ours (mean ± std over seeds); the paper prints no number for these cells.")
    md += ["## Table", "", legend, "", _md_frame(table.reset_index()).to_markdown(index=False, disable_numparse=True), ""]
    if notes:
        md += ["Missing:", ""] + [f"- {n}" for n in notes] + [""]
    md += ["## Statistics", "", st.to_markdown(index=False, floatfmt=".4g") if not st.empty else "No finished runs.", ""]
    costs = cost_table(runs)
    if not costs.empty:
        costs.to_csv(out / "cost.csv", index=False)
        md += ["## Cost", "", "Mean over seeds, as each trial measured it (`harness.cost`): GMACs of inference as "
               "evaluated (every network pass of the inferer), peak memory of that inference and of one training "
               "forward and backward pass on the training batch. CUDA: the allocator's high-water mark; CPU: the "
               "profiler's running sum of allocations minus frees.", "",
               (costs.assign(parameters=costs["parameters"].map(lambda v: f"{int(round(v)):,}"))  # not 2.209e+05
                if "parameters" in costs else costs).to_markdown(index=False, floatfmt=",.4g"), ""]
    evals = evaluations(runs, tracking_uri)
    if not evals.empty:
        evals.to_csv(out / "evaluations.csv", index=False)
        md += ["## Re-evaluations (`harness evaluate`)", "",
               "Saved weights of this study's trials evaluated again with another inferer or as an ensemble of "
               "seeds; costs as run (every view and member counted).", "",
               evals.to_markdown(index=False, floatfmt=".4g"), ""]
    pinned = check_pinned(runs)
    md += ["## Pinned numbers", ""] + ([f"- {status.upper()}: {m}" for status, m in pinned]
                                       or ["This study pins no number."]) + [""]
    md += [f"![{f}]({f})" for f in figs]
    (out / "README.md").write_text("\n".join(md) + "\n")
    write_index(reports)
    return out, problems


def claims_legend(study: StudyCfg) -> str:
    return ("Effect: `better` − `than` in the claimed direction (positive = as claimed), with its 95% interval; "
            f"unit: {UNIT}. Reproduced when the interval lies above the claimed margin, contradicted when below"
            + ("; a claim of no difference (metric `=`) is reproduced when the interval lies within ± its margin, "
               "contradicted when wholly outside" if any(c.direction == "equal" for c in study.claims) else "")
            + ("; a claim to match or beat (metric `≥ −margin`, non-inferiority) is reproduced when the interval "
               "lies above −margin, contradicted when below" if any(c.direction == "noninferior" for c in study.claims)
               else "")
            + ". Detectable: the true effect this design reproduces with 80% power (for `=`: the smallest margin it "
            "shows a true zero difference within), from the observed seed and case variance; paper: the effect in "
            "the paper's own numbers. *underpowered*: inconclusive, and the design could not have detected the "
            "paper's effect; *borderline*: a shift of a tenth of the interval's half-width would change the verdict. "
            "Source: the paper's claim, or ours (a check the paper does not state), counted apart in the index.")


def claims_markdown(claims: pd.DataFrame) -> str:
    """The claims table as the report prints it: the flag beside the verdict, the interval in one cell."""
    def num(x: float) -> str:
        return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"

    rows = [{"claim": md_text(r.claim), "where": md_text(r.where), "source": r.source, "metric": r.metric,
             "verdict": r.verdict + (f" — *{r.flag}*" if r.flag else ""), "effect": num(r.effect),
             "95% interval": "—" if math.isnan(r.ci_low) else f"{num(r.ci_low)} to {num(r.ci_high)}",
             "detectable": num(r.detectable), "paper": num(r.paper), "cases x seeds": f"{r.cases} x {r.seeds}",
             "note": r.note} for r in claims.itertuples()]
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def wall_time(runs: StudyRuns) -> float:
    """Seconds the study's trials ran: per ``harness run`` (parent run), its first trial's start
    to its last one's end, summed over the runs the trials come from (a resumed run, or seeds
    added on another day, add their own time, not the days between)."""
    t = runs.trials
    if t.empty or "start_time" not in t or "end_time" not in t:
        return 0.0
    g = t.assign(parent=t["parent"].fillna("") if "parent" in t else "").groupby("parent")
    return float((g.end_time.max() - g.start_time.min()).sum() / 1000)


def _claims_of(d: Path) -> tuple[str, bool, list[dict]]:
    """(scale, judged by the current engine, claims) of a report folder."""
    path = d / "claims.json"
    if not path.exists():
        return "", True, []
    data = json.loads(path.read_text())
    return data["scale"], data.get("engine") == stats_.ENGINE, [{**c, "study": d.name} for c in data["claims"]]


def _counts(claims: list[dict]) -> str:
    counts = pd.Series([c["verdict"] for c in claims]).value_counts() if claims else pd.Series(dtype=int)
    under = sum(c.get("flag") == "underpowered" for c in claims)
    return ", ".join(f"{n} {v}" for v, n in counts.items()) + (f" ({under} underpowered)" if under else "")


def comparisons(claims: list[dict], source: str) -> pd.DataFrame:
    """One row per distinct comparison (``claim_id``) of ``source``: within a study its first
    claim's verdict (the headline; other margins on the same comparison are in the study's
    report), across studies that share the id the common verdict, or ``mixed``."""
    rows = [c for c in claims if c.get("source", "paper") == source]
    if not rows:
        return pd.DataFrame(columns=["id", "verdict", "studies", "flag"])
    df = pd.DataFrame(rows)
    for col in ("id", "flag"):  # reports written before claims carried them
        df[col] = df[col] if col in df else None
    df["id"] = df["id"].where(df["id"].notna(), df.study + ":" + df.claim)
    df["flag"] = df["flag"].fillna("")
    first = df.groupby(["id", "study"], sort=False).first().reset_index()
    return first.groupby("id", sort=False).agg(
        verdict=("verdict", lambda v: v.iloc[0] if v.nunique() == 1 else "mixed"),
        studies=("study", lambda v: ", ".join(v)),
        flag=("flag", lambda f: "underpowered" if (f == "underpowered").all() else "")).reset_index()


def write_index(reports: Path) -> None:
    """``reports/index.md`` and ``index.html`` linking every study report present, with its
    claims' verdicts at a glance; the paper's claims and ours counted apart, each distinct
    comparison once (``comparisons``)."""
    entries, everything, older = [], [], []
    for d in sorted(p for p in reports.iterdir() if p.is_dir() and (p / "README.md").exists()):
        title = (d / "README.md").read_text().splitlines()[0].lstrip("# ")
        scale, current, claims = _claims_of(d)
        if current:
            everything += claims
        elif claims:
            older.append(d.name)
        parts = [f"{who} {_counts(c)}" for who, c in (
            ("paper's", [c for c in claims if c.get("source", "paper") == "paper"]),
            ("ours", [c for c in claims if c.get("source") == "ours"])) if c]
        entries.append((d.name, title, (f" — claims at {scale}: " + "; ".join(parts) if parts else "")
                        + ("" if current else " (judged by an earlier engine: not in the totals)")))
    totals = []
    for source, label in (("paper", "The papers' claims"), ("ours", "Our own checks")):
        comp = comparisons(everything, source)
        if len(comp):
            n = len([c for c in everything if c.get("source", "paper") == source])
            totals.append(f"- {label}: {len(comp)} distinct comparisons ({n} claim rows): "
                          f"{_counts(comp.to_dict('records'))}")
    if older:
        totals.append(f"- Not in these totals: {len(older)} reports judged by an earlier engine (a percentile "
                      f"bootstrap, too liberal at 2-3 seeds: docs/calibration.md) and not yet re-run: "
                      f"{', '.join(older)}")
    md = ["# Reports", ""]
    if totals:
        md += ["Each distinct comparison counted once: within a study by its first claim, across studies that "
               "judge the same comparison (a shared claim `id`) by their common verdict, or *mixed*.", ""]
        md += totals + [""]
    md += [f"- [{name}]({name}/README.md): {title}{v}" for name, title, v in entries]
    (reports / "index.md").write_text("\n".join(md) + "\n")
    esc = html_lib.escape
    page = ["<html><head><meta charset='utf-8'><title>harness reports</title></head><body><h1>Reports</h1>"]
    page += [f"<p>{esc(t.removeprefix('- '))}</p>" for t in totals] + ["<ul>"]
    page += [f"<li><a href='{esc(name)}/{'table.html' if (reports / name / 'table.html').exists() else 'README.md'}'>"
             f"{esc(name)}</a>: {esc(title + v)}</li>" for name, title, v in entries]
    page.append("</ul></body></html>")
    (reports / "index.html").write_text("\n".join(page) + "\n")
