"""Statistics and claims: per-variant summaries, the paired test over (case, seed) (``UNIT``;
``harness.stats``), each claim's verdict on our runs, and the index's count of distinct comparisons."""
from __future__ import annotations

import html as html_lib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from harness import stats as stats_
from harness.config import StudyCfg
from harness.metrics import is_exact
from harness.report.failures import failed_seeds
from harness.report.runs import StudyRuns


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
    value = expected_value(study, variant, metric)[0]
    if math.isnan(value) and metric in ("mean_dice", "mean_hd95"):
        prefix = metric.removeprefix("mean_") + "_"
        regions = [m for m in study.expected.get(variant, {}) if m.startswith(prefix)]
        value = float(np.mean([expected_value(study, variant, m)[0] for m in regions])) if regions else math.nan
    return value


def judge_claim(runs: "StudyRuns", claim) -> dict[str, Any]:
    """reproduced / contradicted / inconclusive for one ``ClaimCfg`` on the runs at hand, with
    the design's detectable effect and a flag.

    Effect = ``better`` - ``than`` signed so that positive means "as claimed" (a ratio claim:
    ``better / than`` as it is, judged against its reference, ``ClaimCfg.reference``). Accuracy
    metrics (kept per case) pair by (case, seed); costs by seed, where parameters and MACs are
    exact (``harness.metrics``: the interval is the number itself) and every other trial-level
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
    r = _paired(runs, claim, a, b)
    lo, hi = r["ci_low"], r["ci_high"]
    target = stats_.bound(claim.margin, claim.direction)  # what a directional effect must exceed
    found = r["detectable_equal"] if equal else target + r["detectable"]
    note = ""
    if r["pairs"] == 0:
        note = "no matched finished runs"
    elif not per_case and is_exact(claim.metric):
        lo = hi = r["delta"]  # parameters and MACs are exact
        found = target if not equal else 0.0
    elif math.isnan(lo):
        note = f"not enough pairs: {r['cases']} cases x {r['seeds']} seeds (needs >= 2 seeds)" if per_case else \
            "a measurement over seeds needs >= 2 seeds"
    # The verdict reads an interval signed as claimed and centred on the claim's reference.
    ref = claim.reference
    slo, shi = (ref - hi, ref - lo) if ratio and claim.direction == "lower" else (lo - ref, hi - ref)
    verdict = str(stats_.verdict(slo, shi, claim.margin, claim.direction))
    judged = not ratio and not math.isnan(lo) and not (not per_case and is_exact(claim.metric))
    d = (-1.0 if claim.direction == "lower" else 1.0) * paired_difference(
        runs.per_case if per_case else runs.trials, a, b, claim.metric,
        ("case", "seed") if per_case else ("seed",)) if judged else None
    looks = [n for n in runs.looks if n <= r["seeds"]]
    if judged and looks:  # seeds added until decided (--until-decided): the error spent over the looks
        v, used = stats_.sequential_verdict(d - ref, looks, claim.margin, claim.direction)
        verdict = str(v)
        note = "; ".join(filter(None, [note, f"judged over looks at {', '.join(map(str, looks))} seeds with the "
                                             f"error spent across them: {verdict} at {int(used)} seeds"]))
    paper = paper_effect(runs.study, claim)
    underpowered = verdict == "inconclusive" and (found > claim.margin if equal else found > paper)
    flag = "underpowered" if underpowered else "borderline" if not math.isnan(lo) and stats_.is_borderline(
        slo, shi, claim.margin, claim.direction) else ""
    needed = _seeds_needed(claim, d, {"paper": paper, "observed": r["delta"]}, target) if judged else \
        {"paper": None, "observed": None}
    # Seeds a side failed to train at (harness.report.failures): said, and the claim judged again
    # on the seeds where both sides trained (pairs by seed, so a failed seed leaves both sides).
    failed = {"better": failed_seeds(runs.trials, a),
              "than": [] if isinstance(b, (int, float)) else failed_seeds(runs.trials, b)}
    exact = ratio or (not per_case and is_exact(claim.metric))
    trained, said = _on_trained_seeds(runs, claim, (a, b), failed) if not exact and r["pairs"] else ("", "")
    note = "; ".join(filter(None, [note, said]))
    return {"claim": claim.text, "where": claim.where, "source": claim.source, "id": claim_id(runs.study, claim),
            "kind": claim.kind if claim.kind != "result" else "arithmetic" if exact else "result",
            "metric": _metric_label(claim), "verdict": verdict, "flag": flag, "effect": r["delta"], "ci_low": lo, "ci_high": hi,
            "detectable": found, "paper": paper, "cases": r["cases"], "seeds": r["seeds"],
            "seeds_needed_paper": needed["paper"], "seeds_needed_observed": needed["observed"],
            "failed_seeds": failed, "verdict_trained": trained, "note": note}


def _paired(runs: "StudyRuns", claim, a: list[str], b) -> dict[str, Any]:
    """``paired_test`` of the claim's sides: per (case, seed) for a per-case metric, per seed
    otherwise; a ratio claim on log values, its ``delta`` the ratio."""
    per_case = runs.per_case is not None and claim.metric in runs.per_case
    if claim.measure == "ratio":  # exact costs (config): the ratio is a number, its log difference the same every seed
        logs = runs.trials.assign(**{claim.metric: np.log(runs.trials[claim.metric])}) \
            if claim.metric in runs.trials else runs.trials
        r = paired_test(logs, a, math.log(b) if isinstance(b, (int, float)) else b, claim.metric, ("seed",))
        r["delta"] = math.exp(r["delta"])
        return r
    return paired_test(runs.per_case if per_case else runs.trials, a, b, claim.metric,
                       ("case", "seed") if per_case else ("seed",), sign=-1.0 if claim.direction == "lower" else 1.0)


def _seeds_needed(claim, d: np.ndarray, effects: dict[str, float], target: float) -> dict[str, Any]:
    """Seeds for 80% power at each true effect of ``effects`` (the paper's, the observed), from
    the claim's own case x seed differences ``d``: a number, "never" (the effect is not beyond
    the bound the verdict turns on), "> MOST_SEEDS", or None."""
    equal = claim.direction == "equal"
    needed: dict[str, Any] = {at: None for at in effects}
    for at, effect in effects.items():
        if not math.isnan(effect):  # the true effect's distance beyond the bound the verdict turns on
            beyond = claim.margin - abs(effect) if equal else effect - target
            n = stats_.seeds_needed(d, beyond, equivalence=equal, most=MOST_SEEDS)
            needed[at] = ("never" if not beyond > 0 else f"> {MOST_SEEDS}" if math.isinf(n) else
                          None if math.isnan(n) else int(n))
    return needed


def _on_trained_seeds(runs: "StudyRuns", claim, sides: tuple, failed: dict[str, list[int]]) -> tuple[str, str]:
    """The verdict on the seeds where both sides trained, and the note saying which failed;
    ("", "") when none failed."""
    gone = sorted(set(failed["better"]) | set(failed["than"]))
    if not gone:
        return "", ""
    per_case = runs.per_case is not None and claim.metric in runs.per_case
    source = runs.per_case if per_case else runs.trials
    t = paired_test(source[~source.seed.isin(gone)], *sides, claim.metric, ("case", "seed") if per_case else ("seed",),
                    sign=-1.0 if claim.direction == "lower" else 1.0)
    tlo, thi = (t["ci_low"] - claim.reference, t["ci_high"] - claim.reference)
    trained = str(stats_.verdict(tlo, thi, claim.margin, claim.direction))
    which = "; ".join(f"{side} side: seed{'s' if len(v) > 1 else ''} {', '.join(map(str, v))}"
                      for side, v in failed.items() if v)
    return trained, f"failed to train ({which}); on the {t['seeds']} seeds where both trained: {trained}"


def _metric_label(claim) -> str:
    """The claim's metric and bound as the report's table shows it."""
    ratio, equal = claim.measure == "ratio", claim.direction == "equal"
    name = f"{claim.metric} ratio" if ratio else claim.metric
    return (f"{name} = {claim.reference:g} (±{claim.margin:g})" if equal and (ratio or claim.value is not None) else
            f"{name} = (±{claim.margin:g})" if equal else
            f"{name} ≥ (−{claim.margin:g})" if claim.direction == "noninferior" else
            f"{name} < {1 - claim.margin:g}" if ratio and claim.direction == "lower" else
            f"{name} > {1 + claim.margin:g}" if ratio else name)


def claim_id(study: StudyCfg, claim) -> str:
    """The comparison a claim judges, for counting each once (``reports/index.md``): its ``id``
    where the study gives one (the same comparison in several studies), else paper, study,
    sides and metric: two margins on one comparison (GSP Table 1's "> 0" and "> 20") are one."""
    if claim.id:
        return f"{study.paper}:{claim.id}"
    better, than = (s if isinstance(s, (str, int, float)) else json.dumps(s, sort_keys=True)
                    for s in (claim.better, claim.than))
    return f"{study.paper}:{study.name}:{better}|{than}|{claim.metric}"


# The most seeds ``seeds_needed`` looks at: beyond it a claim is out of any training budget.
MOST_SEEDS = 1000
CLAIM_COLUMNS = ["claim", "where", "source", "id", "kind", "metric", "verdict", "flag", "effect", "ci_low", "ci_high",
                 "detectable", "paper", "cases", "seeds", "seeds_needed_paper", "seeds_needed_observed", "failed_seeds",
                 "verdict_trained", "note"]


def claims_table(runs: "StudyRuns") -> pd.DataFrame:
    return pd.DataFrame([judge_claim(runs, c) for c in runs.study.claims], columns=CLAIM_COLUMNS)


def expected_value(study: StudyCfg, variant: str, metric: str) -> tuple[float, float | None]:
    e = study.expected.get(variant, {}).get(metric)
    if e is None:
        return math.nan, None
    return (float(e), None) if isinstance(e, (int, float)) else (e.value, e.tol)


def md_text(text: Any) -> str:
    """A study's own words (titles, claim texts, variant names) as Markdown text: HTML tags shown,
    not run, and a '|' that would split a table cell escaped."""
    return html_lib.escape(str(text), quote=False).replace("|", "\\|")


VERDICT_LEGEND = (
    "Effect: `better` − `than` in the claimed direction (positive = as claimed), in the metric's unit, with its "
    f"95% interval: {UNIT}. A claim that one beats the other is **reproduced** when the interval lies above the "
    "claimed margin, **contradicted** when below, **inconclusive** otherwise; a claim of no difference (metric `=`) "
    "is reproduced when the interval lies within ± its margin, contradicted when wholly outside; a claim to match "
    "or beat (metric `≥ −margin`, non-inferiority) is reproduced when the interval lies above −margin, "
    "contradicted when below. Detectable: the true effect the design reproduces with 80% power (for `=`: the "
    "smallest margin within which it shows a true zero difference), from the observed seed and case variance; "
    "paper: the effect in the paper's own numbers. *underpowered*: inconclusive, and the design could not have "
    "detected the paper's effect; *borderline*: a shift of a tenth of the interval's half-width would change "
    "the verdict. Seeds for 80% power: the seeds (these validation cases kept) at which the design would "
    "decide the claim with 80% power were the true effect the paper's, or ours (`harness.stats.seeds_needed`, "
    "from the observed seed variance); *never*: the effect lies at or beyond the claim's own bound, so no "
    "number of seeds reproduces it; *> 1000*: out of any budget, or only more cases would help. Add seeds "
    "to a design only with a rule that accounts for looking again (re-testing after each seed inflates the "
    "false-positive rate). Source: the paper's claim, or ours (a check the paper does not state), counted apart.")


def reading_guide() -> str:
    """The one line each report carries; the legend itself is once, in the index."""
    return ("How to read it: each claim is judged on these runs by a 95% interval over seeds and validation "
            "cases (docs/calibration.md); verdicts, flags and columns are explained under "
            "[Reading the verdicts](../index.md#reading-the-verdicts).")


def claims_markdown(claims: pd.DataFrame) -> str:
    """The claims table as the report prints it: the flag beside the verdict, the interval in one cell."""
    def num(x: float) -> str:
        return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"

    rows = [{"claim": md_text(r.claim), "where": md_text(r.where), "source": r.source, "metric": r.metric,
             "verdict": r.verdict + (f" — *{r.flag}*" if r.flag else ""), "effect": num(r.effect),
             "95% interval": "—" if math.isnan(r.ci_low) else f"{num(r.ci_low)} to {num(r.ci_high)}",
             "detectable": num(r.detectable), "paper": num(r.paper), "cases x seeds": f"{r.cases} x {r.seeds}",
             "seeds for 80% power (paper / ours)": f"{_count(getattr(r, 'seeds_needed_paper', None))} / "
                                                  f"{_count(getattr(r, 'seeds_needed_observed', None))}",
             "note": r.note} for r in claims.itertuples()]
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def _count(n: Any) -> str:
    return "—" if n is None or (isinstance(n, float) and math.isnan(n)) else str(n)


def claims_of(d: Path) -> tuple[str, bool, list[dict]]:
    """(scale, judged by the current engine, claims) of a report folder."""
    path = d / "claims.json"
    if not path.exists():
        return "", True, []
    data = json.loads(path.read_text())
    return data["scale"], data.get("engine") == stats_.ENGINE, [{**c, "study": d.name} for c in data["claims"]]


def claim_counts(claims: list[dict]) -> str:
    counts = pd.Series([c["verdict"] for c in claims]).value_counts() if claims else pd.Series(dtype=int)
    under = sum(c.get("flag") == "underpowered" for c in claims)
    return ", ".join(f"{n} {v}" for v, n in counts.items()) + (f" ({under} underpowered)" if under else "")


def comparisons(claims: list[dict], source: str) -> pd.DataFrame:
    """One row per distinct comparison (``claim_id``) of ``source``: within a study its first
    claim's verdict (the headline; other margins on the same comparison are in the study's
    report), across studies that share the id the common verdict, or ``mixed``."""
    rows = [c for c in claims if c.get("source", "paper") == source]
    if not rows:
        return pd.DataFrame(columns=["id", "verdict", "studies", "flag", "kind"])
    df = pd.DataFrame(rows)
    for col in ("id", "flag", "kind"):  # reports written before claims carried them
        df[col] = df[col] if col in df else None
    df["id"] = df["id"].where(df["id"].notna(), df.study + ":" + df.claim)
    df["flag"] = df["flag"].fillna("")
    # Reports written before claims carried their kind: exact costs by their metric, else results.
    metric = df["metric"] if "metric" in df else pd.Series("", index=df.index)
    df["kind"] = df["kind"].where(df["kind"].notna(), metric.map(
        lambda m: "arithmetic" if is_exact(str(m).split(" ")[0]) else "result"))
    first = df.groupby(["id", "study"], sort=False).first().reset_index()
    return first.groupby("id", sort=False).agg(
        verdict=("verdict", lambda v: v.iloc[0] if v.nunique() == 1 else "mixed"),
        studies=("study", lambda v: ", ".join(v)),
        flag=("flag", lambda f: "underpowered" if (f == "underpowered").all() else ""),
        kind=("kind", "first")).reset_index()


# The index's headline and what it counts apart, in order (``ClaimCfg.kind`` and exact costs).
KINDS = {"result": "trained results (the headline)", "arithmetic": "arithmetic on exact costs (no training)",
         "identity": "identities that hold by construction (not verdicts on training)",
         "convention": "counting conventions that differ from the paper's (both counts in the report)"}


def kind_counts(comp: pd.DataFrame, level: float = stats_.LEVEL) -> list[str]:
    """The index's lines for one scale and source: each kind's verdicts, and for trained results
    how many decided verdicts chance alone would give (each side 2.5% of null comparisons)."""
    lines = []
    for kind, label in KINDS.items():
        part = comp[comp.kind == kind]
        if part.empty:
            continue
        line = f"{label}: {len(part)}: {claim_counts(part.to_dict('records'))}"
        if kind == "result":
            line += (f"; were every one of these comparisons null, about {len(part) * (1 - level) / 2:.1f} would "
                     f"read reproduced and as many contradicted by chance")
        lines.append(line)
    return lines


def undecided(study: StudyCfg, scale: str, seeds: int, tracking_uri: str | None = None) -> list[str]:
    """The claims of ``study`` still inconclusive on its first ``seeds`` seeds (``run --until-decided``)."""
    from harness.report.runs import load_runs

    claims = claims_table(load_runs(study, scale, tracking_uri, seeds=seeds))
    return [c.claim for c in claims.itertuples() if c.verdict == "inconclusive"]
