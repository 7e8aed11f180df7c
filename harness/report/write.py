"""``harness report``: a study's runs -> its report folder (claims, table, statistics, plots), and
the index of every report."""
from __future__ import annotations

import html as html_lib
import json
import os
import shutil
import tempfile
from pathlib import Path

from harness import stats as stats_
from harness.config import ConfigError, load_study, with_data_roots
from harness.report.claims import (VERDICT_LEGEND, claims_of, claim_counts, claims_markdown, claims_table, comparisons,
                                   kind_counts, md_text, reading_guide)
from harness.report.failures import failure_table
from harness.report.plots import LOADED, plots
from harness.report.runs import evaluations, load_runs, wall_time
from harness.report.tables import md_frame, write_table, check_pinned, cost_table, layout_table, stats_table, verify


def write_report(path: str, scale: str, formats: list[str], reports: Path = Path("reports"),
                 tracking_uri: str | None = None, data_roots: list[str] | None = None,
                 require_runs: bool = False, seeds: int | None = None) -> tuple[Path, list[str]]:
    """Write ``reports/<study>/`` and refresh the index; returns the folder and the verify problems.

    ``data_roots``: the run's ``--data-root`` values, so that its trials match the study as run.
    ``require_runs``: a study with no run at all at ``scale`` (finished, failed or stale) is a
    ConfigError, raised before anything is written.
    """
    study = load_study(path)
    study = with_data_roots(study, scale, data_roots or [])
    runs = load_runs(study, scale, tracking_uri, seeds=seeds)
    if require_runs and runs.trials.empty and not runs.failed and not runs.stale and not runs.extra:
        raise ConfigError(f"{study.name}@{scale}: no runs in {tracking_uri}; run `harness run {path} --scale "
                          f"{scale}` first")
    final = reports / study.name
    reports.mkdir(parents=True, exist_ok=True)
    # Written into a folder of our own, then moved file by file: a failure leaves no half report,
    # and files of the folder that this report does not write are left alone.
    out = Path(tempfile.mkdtemp(prefix=f".{study.name}.", suffix=".partial", dir=reports))
    try:
        problems = _write(study, scale, runs, formats, out, tracking_uri=tracking_uri)
        final.mkdir(exist_ok=True)
        for f in out.iterdir():
            os.replace(f, final / f.name)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    write_index(reports)
    return final, problems


def _write(study, scale: str, runs, formats: list[str], out: Path, tracking_uri: str | None) -> list[str]:
    """The report's files into ``out``; returns the verify problems."""
    from harness.tracking import Store

    store = Store(tracking_uri)  # checked by load_runs: the curves and re-evaluations read it again
    table, notes = layout_table(runs)
    write_table(table, out, "table", formats)
    st = stats_table(runs)
    st.to_csv(out / "stats.csv", index=False)
    if not runs.trials.empty:
        runs.trials.to_csv(out / "trials.csv", index=False)
    figs = plots(runs, out, store)
    problems = verify(runs)
    claims, wall = claims_table(runs), wall_time(runs)
    (out / "claims.json").write_text(json.dumps({"scale": scale, "engine": stats_.ENGINE, "wall_time_s": wall,
                                                 "ran_with": runs.ran_with, "claims": claims.to_dict("records")},
                                                indent=1, default=str))
    md = [f"# {md_text(study.title)}", "", md_text(study.description.strip()), ""]
    if study.deviations:
        md += ["## Deviations from the paper", "", *[f"- {md_text(d.strip())}" for d in study.deviations], ""]
    md += [_runs_line(runs, scale, wall), ""]
    if not claims.empty:
        md += ["## Claims on our runs", "", reading_guide(), "", claims_markdown(claims), ""]
    has_paper = any(str(c).endswith(" paper") for c in table.columns)
    legend = ("Each cell: ours (mean ± std over seeds), the paper's value, and ours − paper." if has_paper else
              "Each cell: ours (mean ± std over seeds); the paper prints no number for these cells.")
    md += ["## Table", "", legend, "", md_frame(table.reset_index()).to_markdown(index=False, disable_numparse=True), ""]
    if notes:
        md += ["Missing:", ""] + [f"- {n}" for n in notes] + [""]
    md += ["## Statistics", "", st.to_markdown(index=False, floatfmt=".4g") if not st.empty else "No finished runs.", ""]
    md += _failures_section(study, runs)
    costs = cost_table(runs)
    if not costs.empty:
        costs.to_csv(out / "cost.csv", index=False)
        md += ["## Cost", "", "Mean over seeds, as each trial measured it (`harness.cost`): GMACs of inference as "
               "evaluated (every network pass of the inferer), peak memory of that inference and of one training "
               "forward and backward pass on the training batch. CUDA: the allocator's high-water mark; CPU: the "
               "profiler's running sum of allocations minus frees." + _load_note(runs), "",
               (costs.assign(parameters=costs["parameters"].map(lambda v: "—" if v != v else f"{int(round(v)):,}"))
                if "parameters" in costs else costs).to_markdown(index=False, floatfmt=",.4g"), ""]
    evals = evaluations(runs, store)
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
    return problems


def _runs_line(runs, scale: str, wall: float | None) -> str:
    """What the report counts: trials finished, failed, left out, and the study's wall time."""
    return (f"Scale: **{scale}**. {len(runs.trials)} finished trials"
            + (f", failed: {', '.join(runs.failed)}" if runs.failed else "")
            + (f"; {runs.stale} finished runs of an older configuration left out" if runs.stale else "")
            + (f"; incomplete runs: {'; '.join(runs.incomplete)}" if runs.incomplete else "")
            + (f"; the store holds {runs.extra} more finished trial(s) of seeds beyond the {runs.seeds} counted "
               f"(`harness report --seeds N` counts them)" if runs.extra else "")
            + (f"; wall time of the study {wall / 60:.1f} min" if wall and not runs.ran_with else "")
            + (f"; its trials ran in {wall / 60:.1f} min, in one `harness run` with {len(runs.ran_with)} other "
               f"studies ({', '.join(runs.ran_with)}), whose trials shared the cores"
               if wall and runs.ran_with else "") + ".")


def _failures_section(study, runs) -> list[str]:
    """The seeds that did not train, by the study's rule (none: no section)."""
    failures = failure_table(runs.trials)
    if failures.empty:
        return []
    rule = study.failed_to_train
    return ["## Seeds that did not train", "",
            f"Rule `{rule.name}`{' ' + json.dumps(rule.params) if rule.params else ''} (`harness.report.failures`); "
            "a claim touching a failed seed says so and is judged again on the seeds where both sides trained. "
            "The last column: the failure rate these seeds rule out (one-sided 95%; a rarer failure would "
            "go unseen at this many seeds).", "", failures.to_markdown(index=False), ""]


SCALE_ORDER = ("quick", "paper", "smoke")  # the headline first; smoke (plumbing) last


def _load_note(runs) -> str:
    """A sentence when latency was measured beside other work (``load_per_core`` above
    ``LOADED``: more runnable processes than cores), which reads it high."""
    t = runs.trials
    if "load_per_core" not in t or not (t.load_per_core > LOADED).any():
        return ""
    loaded = t[t.load_per_core > LOADED]
    return (f" Latency of {len(loaded)} of {len(t)} trials was measured beside other work (1-minute load up to "
            f"{loaded.load_per_core.max():.1f} per core; 1 is the trials' own), so it reads high: compare "
            f"latencies measured on an idle machine (`harness cost`).")


def _plain(markdown: str) -> str:
    """A Markdown line's text as the reader sees it (``md_text``'s entities and ``\\|`` undone),
    to be escaped once for HTML: escaping the Markdown escaped it twice (``&amp;lt;``)."""
    return html_lib.unescape(markdown.replace("\\|", "|"))


def write_index(reports: Path) -> None:
    """``reports/index.md`` and ``index.html`` linking every study report present, with its
    claims' verdicts at a glance; each scale counted apart (a smoke run's verdicts test the
    plumbing, not the papers), the paper's claims and ours apart, each distinct comparison once
    (``comparisons``); the verdict legend that every report links to."""
    entries, by_scale, older = [], {}, []
    for d in sorted(p for p in reports.iterdir() if p.is_dir() and (p / "README.md").exists()):
        title = (d / "README.md").read_text().splitlines()[0].lstrip("# ")
        scale, current, claims = claims_of(d)
        if current:
            by_scale.setdefault(scale, []).extend(claims)
        elif claims:
            older.append(d.name)
        parts = [f"{who} {claim_counts(c)}" for who, c in (
            ("paper's", [c for c in claims if c.get("source", "paper") == "paper"]),
            ("ours", [c for c in claims if c.get("source") == "ours"])) if c]
        entries.append((d.name, title, (f" — claims at {scale}: " + "; ".join(parts) if parts else "")
                        + ("" if current else " (judged by an earlier engine: not in the totals)")))
    totals = []
    for scale in sorted(by_scale, key=lambda s: SCALE_ORDER.index(s) if s in SCALE_ORDER else len(SCALE_ORDER)):
        everything = by_scale[scale]
        for source, label in (("paper", "the papers' claims"), ("reading", "our readings of the papers' tables"),
                              ("ours", "our own checks")):
            comp = comparisons(everything, source)
            if len(comp):
                n = len([c for c in everything if c.get("source", "paper") == source])
                totals.append(f"- At {scale} scale, {label}: {len(comp)} distinct comparisons ({n} claim rows): "
                              f"{claim_counts(comp.to_dict('records'))}")
                totals += [f"  - {line}" for line in kind_counts(comp)]
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
    md += ["", "## Reading the verdicts", "", VERDICT_LEGEND]
    _replace(reports / "index.md", "\n".join(md) + "\n")
    esc = html_lib.escape
    page = ["<html><head><meta charset='utf-8'><title>harness reports</title></head><body><h1>Reports</h1>"]
    page += [f"<p>{esc(_plain(t.strip().removeprefix('- ')))}</p>" for t in totals] + ["<ul>"]
    page += [f"<li><a href='{esc(name)}/{'table.html' if (reports / name / 'table.html').exists() else 'README.md'}'>"
             f"{esc(name)}</a>: {esc(_plain(title + v))}</li>" for name, title, v in entries]
    page.append("</ul></body></html>")
    _replace(reports / "index.html", "\n".join(page) + "\n")


def _replace(path: Path, text: str) -> None:
    """``path`` written whole: a file of this process beside it (the usual permissions, which
    ``NamedTemporaryFile``'s 0600 would not give), renamed over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
