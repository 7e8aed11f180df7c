"""Seeds that did not train: a rule marks each finished trial, the report flags them.

A seed that does not train (a net stuck at the background, a diverged run) skews a variant's
mean, and a verdict on the mean is then called far above its nominal rate. The rule is
registered (``TRAINING_FAILURES``) and chosen by the study (``failed_to_train``); the default,
``below_median``, is the audit's: a trial whose mean Dice is below ``fraction`` (0.6) of the
median over its variant's seeds (``dsm_table1``'s 2D U-Net seed 1 at 33.8 against a median of
82.8), or below ``floor`` (5 points) whatever the median: where most seeds are stuck at the
background the median is one of them (ConResNet on Pancreas-CT at quick: Dice 0.7, 0, 0.07,
1.8 and 33.6, median 0.7). A rule takes the study's trials (one row per trial: ``variant``, ``seed``, its metrics)
and returns a boolean Series aligned with them.

What a variant's seeds can rule out: with k of S seeds failed, the one-sided 95% Clopper-Pearson
upper bound of the failure rate (``1 - 0.05 ** (1 / S)`` when none failed: 3 clean seeds rule
out a failure rate above 63%, 10 above 26%). A rare failure that the seeds did not show is not
seen by any interval; this bound says how rare it must be.
"""
from __future__ import annotations

import pandas as pd
from scipy import stats

from harness.registry import TRAINING_FAILURES

LEVEL = 0.95


@TRAINING_FAILURES.register("below_median")
def below_median(trials: pd.DataFrame, fraction: float = 0.6, floor: float = 5.0) -> pd.Series:
    """Mean Dice below ``fraction`` of the median over the variant's seeds, or below ``floor``."""
    median = trials.groupby("variant")["mean_dice"].transform("median")
    return (trials["mean_dice"] < fraction * median) | (trials["mean_dice"] < floor)


def mark_failed(trials: pd.DataFrame, rule) -> pd.DataFrame:
    """``trials`` with a ``failed_to_train`` column from the study's rule (a ``ComponentCfg``)."""
    if trials.empty or "mean_dice" not in trials:
        return trials
    flags = TRAINING_FAILURES.get(rule.name, field="failed_to_train.name")(trials, **rule.params)
    return trials.assign(failed_to_train=flags.astype(bool).to_numpy())


def upper_bound(failed: int, seeds: int, level: float = LEVEL) -> float:
    """One-sided ``level`` upper bound of the failure rate after ``failed`` of ``seeds`` (Clopper-Pearson)."""
    return 1.0 if failed >= seeds else float(stats.beta.ppf(level, failed + 1, seeds - failed))


def failure_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per variant: its seeds, the seeds that failed to train and the failure rate they rule out."""
    if trials.empty or "failed_to_train" not in trials:
        return pd.DataFrame()
    rows = []
    for variant, g in trials.groupby("variant", sort=False):
        failed = sorted(int(s) for s in g.loc[g.failed_to_train, "seed"])
        rows.append({"variant": variant, "seeds": len(g), "failed to train": len(failed),
                     "failed seeds": ", ".join(map(str, failed)) or "—",
                     "failure rate ruled out (95%)": f"above {upper_bound(len(failed), len(g)):.0%}"})
    return pd.DataFrame(rows)


def failed_seeds(trials: pd.DataFrame, members: list[str]) -> list[int]:
    """Seeds at which any of ``members`` failed to train."""
    if trials.empty or "failed_to_train" not in trials:
        return []
    hit = trials[trials.variant.isin(members) & trials.failed_to_train]
    return sorted({int(s) for s in hit.seed})


def tag_failures(study, scale: str, tracking_uri: str | None = None) -> int:
    """Write each finished trial's ``failed_to_train`` (``true`` / ``false``) on its MLflow run,
    as the study's rule judges it over the seeds run so far (``harness run`` after its trials:
    a seed added later may move a variant's median, and the next run writes the tags again).
    Returns the trials marked failed."""
    from harness.report.runs import load_runs
    from harness.session import Session, SessionOptions
    from harness.tracking import FAILED_TO_TRAIN

    trials = load_runs(study, scale, tracking_uri, with_cases=False).trials
    if trials.empty or "failed_to_train" not in trials:
        return 0
    with Session(SessionOptions(tracking_uri)) as session:
        for run_id, failed in zip(trials.run_id, trials.failed_to_train):
            session.tracker.tag(run_id, FAILED_TO_TRAIN, str(bool(failed)).lower())
    return int(trials.failed_to_train.sum())
