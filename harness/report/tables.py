"""The paper's table in the paper's layout, ours beside the paper's numbers; the statistics and cost
tables; the pinned-number check (``--verify``); markdown, HTML, LaTeX and CSV.

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

An axis is a grid axis or a variant tag (``variant`` for the variant name)."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from harness.config import StudyCfg, VariantCfg, table_rows
from harness.metrics import is_measured, shown
from harness.report.claims import expected_value, md_text, paired_test, summarise
from harness.report.runs import StudyRuns, tag_axes

FORMATS = ("md", "html", "tex", "csv")


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
    return _fmt_paper(expected_value(study, variant, metric)[0]) + (f" ± {sd:g}" if sd is not None else "")


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
    groups = list(dict.fromkeys(tag_axes(v).get(row_axis, "") for v in table_rows(study)))
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
    cols = list(dict.fromkeys(tag_axes(v).get(col_axis, v.name) for v in vs))
    cell = {(tag_axes(v).get(row_axis, "") if row_axis else "", tag_axes(v).get(col_axis, v.name)): v for v in vs}
    for v in vs:  # the shared row group: per column, the variant the paper's figure is pinned on
        c = tag_axes(v).get(col_axis, v.name)
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
                shared = f" ({tag_axes(v).get(row_axis, '')})" if g == "*" else ""  # whose figure it is
                ours.append(_cell(s, m) + shared)
            paper.append(_paper_cell(study, v.name, m))
        table[f"{c} ours"], table[f"{c} paper"] = ours, paper
    if not row_axis:
        table = table.drop(columns=[""])
    return table.set_index(row_axis or "metric"), sorted(set(notes))


def _why_empty(runs: StudyRuns, variant: str, m: str) -> str:
    """Why a cell of the table has no number of ours."""
    ran = not runs.trials.empty and (runs.trials.variant == variant).any()
    measured = ran and m in runs.trials and runs.trials.loc[runs.trials.variant == variant, m].notna().any()
    return ("not measured at this scale" if ran and is_measured(m) and not measured else
            "undefined: empty masks" if ran and m.startswith(("dice", "hd95", "sens", "spec", "mean_"))
            else "not reported by this variant" if ran else
            "failed" if any(k.startswith(f"{variant}#") for k in runs.failed) else "no run")


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
        ax = tag_axes(v)
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
            exp, _ = expected_value(study, v.name, m)
            if s is None or s.n == 0:
                status = _why_empty(runs, v.name, m)
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
    _bold_best(table, means, lay.best)
    table.index.name = row_axis or ""
    return table, notes


def _bold_best(table: pd.DataFrame, means: pd.DataFrame, best) -> None:
    """The layout's ``best`` cells in bold, as the paper marks them: per column {metric: max |
    min} (Dice up, cost down), or ``max_per_column`` / ``min_per_row`` and the like."""
    if isinstance(best, dict):
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


def stats_table(runs: StudyRuns) -> pd.DataFrame:
    """Every variant x metric with mean, std, 95% CI over seeds; with a baseline, the paired
    difference, its 95% interval (``UNIT``) and the design's minimum detectable difference."""
    lay = runs.study.layout
    summary = summarise(runs.trials, layout_metrics(runs.study))
    if not summary.empty:  # a cell the layout has but no variant fills (PROMISE12 has no WT): no row
        summary = summary[summary.n > 0].reset_index(drop=True)
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


def cost_table(runs: StudyRuns) -> pd.DataFrame:
    """Each variant's cost as its trials measured it, mean over seeds: parameters and GMACs of
    inference as evaluated, latency, the inference peak and the peak of one training pass on
    the batch (``harness.cost``), and the median training step."""
    t = runs.trials
    labels = {m.name: m.label for m in shown("table")}  # the catalogue's costs for this table, a plugin's too
    cols = [c for c in labels if c in t and t[c].notna().any()]
    if t.empty or not cols:
        return pd.DataFrame()
    agg = t.groupby("variant", sort=False)[cols].mean().reset_index()
    if "device" in t and t["device"].notna().any():  # where the measured figures come from
        agg["device"] = agg["variant"].map(t.groupby("variant")["device"].agg(lambda d: ", ".join(sorted(set(d.dropna())))))
    return agg.rename(columns=labels)


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


def md_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Every label and text cell through ``md_text`` (the table's own ** bold marks kept)."""
    return df.rename(columns=md_text).map(lambda v: md_text(v) if isinstance(v, str) else v)


def write_table(table: pd.DataFrame, out: Path, stem: str, formats: list[str]) -> None:
    flat = table.reset_index()
    if "md" in formats:
        (out / f"{stem}.md").write_text(md_frame(flat).to_markdown(index=False, disable_numparse=True) + "\n")
    if "html" in formats:
        html = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", flat.to_html(index=False, escape=True))
        (out / f"{stem}.html").write_text(f"<html><head><meta charset='utf-8'></head><body>{html}</body></html>\n")
    if "tex" in formats:  # LaTeX's specials (_ % & # $ { } ~ ^ \\) escaped, then our bold and ±
        tex = flat.to_latex(index=False, escape=True).replace("±", "$\\pm$")
        tex = re.sub(r"\*\*(.+?)\*\*", r"\\textbf{\1}", tex)
        (out / f"{stem}.tex").write_text(tex)
    if "csv" in formats:
        flat.to_csv(out / f"{stem}.csv", index=False)
