"""Claim statistics: the verdicts' false-positive rates on null designs, their power, and the
numbers of the interval on fixed inputs."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp

from harness import stats
from harness.config import StudyCfg, load_study, resolve
from harness.report import StudyRuns, claims_table
from helpers import STUDIES

REPS = 1000  # per design and noise pattern; the rates' simulation sd at 0.025 is 0.005


@pytest.mark.parametrize("heavy", [False, True], ids=["normal", "heavy-tailed"])
def test_verdicts_hold_their_false_positive_rate_on_every_null_design(heavy):
    table = stats.calibration(REPS, seed=11 if heavy else 0, heavy=heavy)
    assert len(table) == 4 * 3 * 3  # 2, 3, 5, 10 seeds x 5, 20, 50 cases x seeds / cases / mixed noise
    worst = table.set_index(["seeds", "cases", "noise"])[["P(reproduced | no effect)", "P(contradicted | no effect)"]]
    assert (worst <= 0.04).all().all(), worst[(worst > 0.04).any(axis=1)]
    # Not conservative to uselessness: where seeds dominate the rate is near its nominal 2.5%.
    assert worst.loc[(10, 50, "seeds")].min() > 0.01


def test_the_engine_before_this_one_fails_the_same_calibration():
    # The check can fail: the percentile bootstrap the reports used calls a fifth of null
    # 2-seed designs "reproduced".
    d = stats.simulate(2, 5, "seeds", REPS, seed=3)
    assert (stats._bootstrap_low(d, n_boot=500) > 0).mean() > 0.1
    assert (stats.interval(d)[1] > 0).mean() <= 0.04


def test_a_true_effect_of_three_seed_sds_at_five_seeds_is_reproduced():
    for cases in (5, 20, 50):
        sa = stats.NOISE["seeds"][0]
        _, lo, hi = stats.interval(stats.simulate(5, cases, "seeds", REPS, effect=3 * sa, seed=cases))
        assert (stats.verdict(lo, hi, 0.0, "higher") == "reproduced").mean() > 0.9


def test_minimum_detectable_effect_has_the_power_it_states():
    # A design whose true effect is its own detectable effect is reproduced about 80% of the time.
    d0 = stats.simulate(5, 24, "mixed", REPS, seed=5)
    mde = float(np.median(stats.detectable(d0)))
    _, lo, _ = stats.interval(stats.simulate(5, 24, "mixed", REPS, effect=mde, seed=6))
    assert 0.7 < (lo > 0).mean() < 0.95


def test_interval_on_fixed_numbers():
    # One row (a trial-level cost over seeds): the paired t over seeds.
    d = np.array([[1.0, 2.0, 3.0]])
    mean, lo, hi = stats.interval(d)
    assert mean == 2.0 and hi - mean == pytest.approx(sp.t.ppf(0.975, 2) * 1.0 / math.sqrt(3))
    # Two seeds of four cases: seed part MS_seed / (C S) with t_1; case part from MS_case - MS_err with t_3.
    d = np.array([[1.0, 3.0], [2.0, 4.0], [5.0, 7.0], [0.0, 2.0]])  # seed 2 = seed 1 + 2 on every case
    p = stats.components(d)
    assert p["u_seed2"] == pytest.approx(4 * 2.0 / 8)  # seed means 2, 4: MS_seed = 4 * 2 = 8
    assert p["u_case2"] == pytest.approx(2 * np.var([2, 3, 6, 1], ddof=1) / 8)  # MS_err = 0
    _, lo, hi = stats.interval(d)
    half = math.hypot(sp.t.ppf(0.975, 1) * math.sqrt(p["u_seed2"]), sp.t.ppf(0.975, 3) * math.sqrt(p["u_case2"]))
    assert (lo, hi) == (pytest.approx(3.0 - half), pytest.approx(3.0 + half))
    assert math.isnan(stats.interval(np.array([[1.0], [2.0]]))[1])  # one seed: no interval


def test_verdicts_and_borderline_on_fixed_intervals():
    v = stats.verdict(np.array([0.5, -2.0, -1.0]), np.array([2.0, -0.5, 1.0]), 0.0, "higher")
    assert list(v) == ["reproduced", "contradicted", "inconclusive"]
    assert list(stats.verdict(np.array([-0.5, 1.5]), np.array([0.5, 3.0]), 1.0, "equal")) == \
        ["reproduced", "contradicted"]
    assert stats.is_borderline(0.05, 2.05, 0.0, "higher")  # 0.05 from the bound, half-width 1
    assert not stats.is_borderline(0.5, 2.5, 0.0, "higher")
    assert stats.is_borderline(-0.95, 0.5, 1.0, "equal") and not stats.is_borderline(3.0, 3.0, 0.0, "higher")


STUDY = {
    "name": "s", "paper": "gsp_conv", "title": "t",
    "data": {"dataset": "synthetic_organ", "params": {"n_cases": 4, "shape": [16, 32, 32]}},
    "model": {"name": "gsp_unet", "params": {}},
    "variants": [{"name": "a", "params": {}}, {"name": "b", "params": {}}],
    "train": {"patch": [16, 32, 32]}, "scales": {"smoke": {}, "quick": {}, "paper": {}},
    "expected": {"a": {"mean_dice": 80.0}, "b": {"mean_dice": 79.0}},
    "claims": [{"text": "a beats b", "where": "T1", "better": "a", "than": "b"}],
}


def _runs(d: np.ndarray, study=STUDY) -> StudyRuns:
    """Per-case frames whose a - b paired differences are the matrix ``d`` (cases x seeds)."""
    rows = [{"variant": v, "seed": s, "case": f"c{c}", "mean_dice": 50.0 + (d[c, s] if v == "a" else 0.0)}
            for v in ("a", "b") for c in range(d.shape[0]) for s in range(d.shape[1])]
    per_case = pd.DataFrame(rows)
    return StudyRuns(StudyCfg.model_validate(study), "quick",
                     per_case.groupby(["variant", "seed"]).mean_dice.mean().reset_index(), per_case=per_case)


def test_judge_claim_gives_the_vectorised_verdict_on_simulated_null_designs():
    # The calibration above runs through stats.interval / verdict; judge_claim must be the same function.
    for seeds, cases, noise in ((2, 5, "seeds"), (3, 20, "mixed"), (5, 5, "cases")):
        ds = stats.simulate(seeds, cases, noise, 40, seed=seeds)
        _, lo, hi = stats.interval(ds)
        expect = stats.verdict(lo, hi, 0.0, "higher")
        got = [claims_table(_runs(d)).iloc[0] for d in ds]
        assert [g.verdict for g in got] == list(expect)
        assert [g.ci_low for g in got] == pytest.approx(list(lo))


def test_a_claim_row_states_its_detectable_effect_and_flags():
    rng = np.random.default_rng(0)
    d = 0.5 + rng.normal(0, 1, (24, 3)) + rng.normal(0, 2, (1, 3))  # paper's effect is 1 point
    row = claims_table(_runs(d)).iloc[0]
    assert row.paper == 1.0 and row.verdict == "inconclusive" and row.detectable > 1.0
    assert row.flag == "underpowered" and row.source == "paper" and row.id == "gsp_conv:s:a|b|mean_dice"
    # Same noise, a huge effect: reproduced, with the detectable effect unchanged (same spread).
    big = claims_table(_runs(d + 100)).iloc[0]
    assert big.verdict == "reproduced" and big.flag == "" and big.detectable == pytest.approx(row.detectable)
    # An interval ending a hair above the bound is borderline.
    lo = row.ci_low
    edge = claims_table(_runs(d - lo + 0.01 * (row.ci_high - row.ci_low))).iloc[0]
    assert edge.verdict == "reproduced" and edge.flag == "borderline"
    ours = claims_table(_runs(d, {**STUDY, "claims": [{**STUDY["claims"][0], "source": "ours", "id": "ab"}]})).iloc[0]
    assert ours.source == "ours" and ours.id == "gsp_conv:ab"


def _validation_cases(data) -> int:
    """A synthetic data set's validation count from its parameters, without generating it."""
    import inspect

    from harness.registry import DATASETS

    defaults = {k: p.default for k, p in inspect.signature(DATASETS.get(data.dataset)).parameters.items()}
    params = {**defaults, **data.params}
    return params["val_cases"] or max(1, round(params["val_fraction"] * params["n_cases"]))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_quick_designs_have_the_seeds_and_validation_cases_their_accuracy_claims_need(path):
    # Issue: case noise must not dominate (>= 24 validation cases) and seeds are the unit (>= 3).
    study = load_study(path)
    per_case = [c for c in study.claims if not c.metric.startswith(("params", "gmacs", "macs", "latency", "peak",
                                                                    "train_peak", "step_time", "forward"))]
    if not per_case:
        pytest.skip("no accuracy claim")
    specs = resolve(study, "quick", check=False)
    assert len({s.seed for s in specs}) >= 3
    assert min(_validation_cases(s.data) for s in specs) >= 24


def test_equivalence_and_published_figure_claims_state_what_the_paper_says():
    rng = np.random.default_rng(2)
    d = rng.normal(0, 0.3, (24, 5)) + rng.normal(0, 0.2, (1, 5))  # no difference, little noise
    equal = {**STUDY, "claims": [{"text": "a ~ b", "where": "T2", "better": "a", "than": "b", "direction": "equal",
                                  "margin": 1.0}]}
    row = claims_table(_runs(d, equal)).iloc[0]
    assert row.verdict == "reproduced" and row.paper == 1.0 and 0 < row.detectable < 1.0  # |80 - 79|
    tight = {**equal, "claims": [{**equal["claims"][0], "margin": 0.05}]}  # a margin below what 5 seeds resolve
    row = claims_table(_runs(d, tight)).iloc[0]
    assert row.verdict == "inconclusive" and row.flag == "underpowered" and row.detectable > 0.05
    # Against a published number: the paper's effect is its own figure for `better` minus that number.
    fig = {**STUDY, "claims": [{"text": "a reaches 60", "where": "T3", "better": "a", "than": 60.0}]}
    assert claims_table(_runs(d, fig)).iloc[0].paper == 20.0


def test_a_noninferiority_claim_holds_above_minus_its_margin():
    assert list(stats.verdict(np.array([-0.9, -3.0, -1.5]), np.array([2.0, -1.2, 0.5]), 1.0, "noninferior")) == \
        ["reproduced", "contradicted", "inconclusive"]
    assert stats.is_borderline(-0.95, 1.05, 1.0, "noninferior")  # -0.95 is 0.05 above the bound -1
    rng = np.random.default_rng(4)
    d = -0.5 + rng.normal(0, 0.3, (24, 5)) + rng.normal(0, 0.2, (1, 5))  # a half point worse
    ni = {**STUDY, "claims": [{"text": "a matches b", "where": "T1", "better": "a", "than": "b",
                               "direction": "noninferior", "margin": 2.0}]}
    row = claims_table(_runs(d, ni)).iloc[0]
    assert row.verdict == "reproduced" and row.metric == "mean_dice ≥ (−2)" and -2 < row.ci_low < -0.5
    assert row.detectable == pytest.approx(-2 + float(stats.detectable(d)))  # the true effect it detects
    assert claims_table(_runs(d - 5, ni)).iloc[0].verdict == "contradicted"
    with pytest.raises(Exception, match="non-inferiority claim .* needs a margin > 0"):
        StudyCfg.model_validate({**ni, "claims": [{**ni["claims"][0], "margin": 0}]})


def test_the_papers_mean_dice_is_the_mean_of_its_regions_where_it_prints_only_those():
    regions = {**STUDY, "expected": {"a": {"dice_ET": 80.0, "dice_WT": 90.0}, "b": {"dice_ET": 79.0, "dice_WT": 88.0}}}
    d = np.random.default_rng(0).normal(0, 1, (24, 3))
    assert claims_table(_runs(d, regions)).iloc[0].paper == pytest.approx(1.5)


# Central claims of the papers (issue: every central claim declared), by study and a piece of
# the claim text, with the kind the paper's wording calls for.
CENTRAL = [
    ("dsm_table1_brats20", "comparable to the 3D U-Net", "noninferior"),
    ("dsm_table2_alpha", "heart: alpha 1 brings not much", "equal"),
    ("dsm_table2_alpha", "hippocampus: alpha 1 brings not much", "equal"),
    ("dsm_table2_alpha", "prostate: alpha 1 brings not much", "equal"),
    ("obelisk_table3_visceral", "without augmentation, the original OBELISK beats the all-conv U-Net", "higher"),
    ("obelisk_table3_visceral", "Hybrid OBELISK+CNN ++ beats the original OBELISK ++", "higher"),
    ("obelisk_table3_visceral", "on par with the much bigger global-FC U-Net", "equal"),
    ("obelisk_table4_tcia", "lean U-Net of the hybrid's parameter count", "higher"),
    ("obelisk_table4_tcia", "global-FC U-Net perform similarly well", "equal"),
    ("conres_table4_views", "sagittal view is comparable to the axial", "equal"),
    ("conres_table4_views", "coronal view is comparable to the axial", "equal"),
    ("conres_table3_ablation", "Table III: by 1.21 / 0.62 / 2.25", "higher"),
    ("conres_table2_pancreas", "ConResNet beats our baseline in mean Dice on Pancreas-CT", "higher"),
    ("gsp_gs_vs_nogs_promise12", "Group Shift lifts the pointwise FCN by a large margin", "higher"),
    ("gsp_gs_vs_nogs_promise12", "the pointwise FCN is only slightly worse than the 3D FCN", "noninferior"),
    ("gsp_table1", "BraTS18: the pointwise FCN without GS is only slightly worse", "noninferior"),
    ("gsp_brats18_insert_positions", "comparable or even better performance than the 3D FCN", "noninferior"),
    ("dsm_table3_msd", "hippocampus: Distill DSM performs comparably", "noninferior"),
    ("dsm_table3_msd", "pancreas: Distill DSM performs comparably", "noninferior"),
    ("brats20_procedures", "TTA rotating only in the axial plane", "higher"),
    # Stated magnitudes, judged at them (measure: ratio of exact costs).
    ("dsm_table1_brats20", "about 28% of the 3D U-Net's parameters", "equal", "ratio"),
    ("obelisk_table3_visceral", "reduces the parameters ten-fold", "equal", "ratio"),
    ("obelisk_table4_tcia", "about a quarter of the all-conv U-Net's parameters", "equal", "ratio"),
    ("conres_table7_cost", "slightly more parameters than the baseline (+2.66%", "equal", "ratio"),
    ("conres_table7_cost", "more computation than the baseline (+18.64%)", "equal", "ratio"),
]


@pytest.mark.parametrize("study,text,direction,measure", [c if len(c) == 4 else (*c, "difference") for c in CENTRAL],
                         ids=lambda x: str(x)[:40])
def test_central_claims_are_declared_with_the_kind_their_wording_needs(study, text, direction, measure):
    claims = [c for c in load_study(STUDIES[0].parent / f"{study}.yaml").claims if text in c.text]
    assert len(claims) == 1 and claims[0].direction == direction and claims[0].source == "paper"
    assert claims[0].measure == measure


# Figures the text does not state, read off the paper's tables or said of something else (GSP's
# "27x" is of one convolution): declared as our readings, counted apart from the paper's claims.
READINGS = [("gsp_table1", "about 1/27 of the 3D FCN's parameters"),
            ("obelisk_table3_visceral", "about a seventh of the all-conv U-Net's parameters")]


@pytest.mark.parametrize("study,text", READINGS, ids=lambda x: str(x)[:40])
def test_figures_the_text_does_not_state_are_declared_as_readings(study, text):
    claims = [c for c in load_study(STUDIES[0].parent / f"{study}.yaml").claims if text in c.text]
    assert len(claims) == 1 and claims[0].source == "reading"


@pytest.mark.parametrize("direction", ["equal", "noninferior"])
def test_equivalence_and_noninferiority_hold_their_rate_at_the_margin(direction):
    # The least favourable truth: the difference sits exactly on the margin's edge (+m for a
    # claim of no difference, -m for "matches or beats"); "reproduced" must stay rare.
    m = 2.0
    edge = m if direction == "equal" else -m
    for seeds, cases, noise in ((2, 5, "seeds"), (3, 24, "mixed"), (5, 50, "cases"), (10, 20, "seeds")):
        _, lo, hi = stats.interval(stats.simulate(seeds, cases, noise, REPS, effect=edge, seed=seeds + cases))
        assert (stats.verdict(lo, hi, m, direction) == "reproduced").mean() <= 0.04


def test_seeds_needed_meets_the_closed_form_and_gives_the_power_it_states():
    # Seed noise only (one case): S' is the first n with (t_.975,n-1 + t_.8,n-1) sd / sqrt(n) <= effect,
    # which for large n is the normal formula ((z_.975 + z_.8) sd / effect)^2.
    rng = np.random.default_rng(1)
    d = rng.normal(0, 1, (1, 400))
    sd = d.std(ddof=1)
    n = stats.seeds_needed(d, 0.1)
    t = lambda k: (sp.t.ppf(0.975, k - 1) + sp.t.ppf(0.8, k - 1)) * sd / math.sqrt(k)  # noqa: E731
    assert t(n) <= 0.1 < t(n - 1)
    assert abs(n - ((sp.norm.ppf(0.975) + sp.norm.ppf(0.8)) * sd / 0.1) ** 2) < 5
    # At that many seeds a true effect of 0.1 is reproduced about 80% of the time.
    small = stats.seeds_needed(d, 1.0)
    sims = rng.normal(1.0, sd, (4000, 1, int(small)))
    _, lo, _ = stats.interval(sims)
    assert 0.75 < (lo > 0).mean() < 0.9
    # A case part alone above the effect: no number of seeds decides it; an effect at the bound: never.
    cases = rng.normal(0, 1, (20, 1)) * 5 + rng.normal(0, 0.1, (20, 4))
    assert math.isinf(stats.seeds_needed(cases, 0.5)) and math.isinf(stats.seeds_needed(d, 0.0))


def test_a_claim_row_states_the_seeds_its_effects_need():
    rng = np.random.default_rng(0)
    d = 0.5 + rng.normal(0, 1, (24, 3)) + rng.normal(0, 2, (1, 3))  # paper's effect is 1 point, margin 0
    row = claims_table(_runs(d)).iloc[0]
    parts = stats.components(d)
    assert row.seeds_needed_paper == stats.seeds_needed(d, 1.0, p=parts) > 3
    assert row.seeds_needed_observed == stats.seeds_needed(d, row.effect, p=parts)
    assert claims_table(_runs(d - 10)).iloc[0].seeds_needed_observed == "never"  # observed on the wrong side


def _runs_ab(a: np.ndarray, b: np.ndarray, study=STUDY) -> StudyRuns:
    """Per-case Dice of variants a and b (cases x seeds each), failures marked by the study's rule."""
    from harness.report.failures import mark_failed

    rows = [{"variant": v, "seed": s, "case": f"c{c}", "mean_dice": x[c, s]}
            for v, x in (("a", a), ("b", b)) for c in range(x.shape[0]) for s in range(x.shape[1])]
    per_case = pd.DataFrame(rows)
    cfg = StudyCfg.model_validate(study)
    trials = mark_failed(per_case.groupby(["variant", "seed"]).mean_dice.mean().reset_index(), cfg.failed_to_train)
    return StudyRuns(cfg, "quick", trials, per_case=per_case)


def test_a_seed_that_did_not_train_is_flagged_and_the_claim_judged_again_without_it():
    from harness.report.failures import failure_table, upper_bound

    rng = np.random.default_rng(3)
    a = 85 + rng.normal(0, 1, (24, 5))
    b = 80 + rng.normal(0, 1, (24, 5))
    a[:, 1] = 5 + rng.normal(0, 1, 24)  # seed 1 of a: a net stuck at the background
    runs = _runs_ab(a, b)
    assert runs.trials.set_index(["variant", "seed"]).failed_to_train.to_dict() == {
        ("a", s): s == 1 for s in range(5)} | {("b", s): False for s in range(5)}
    table = failure_table(runs.trials).set_index("variant")
    assert table.loc["a", "failed to train"] == 1 and table.loc["a", "failed seeds"] == "1"
    assert table.loc["b", "failure rate ruled out (95%)"] == f"above {1 - 0.05 ** (1 / 5):.0%}"  # 0 of 5: 45%
    assert upper_bound(0, 3) == pytest.approx(1 - 0.05 ** (1 / 3)) and upper_bound(1, 5) == pytest.approx(
        sp.beta.ppf(0.95, 2, 4))
    row = claims_table(runs).iloc[0]
    assert row.failed_seeds == {"better": [1], "than": []}
    assert row.verdict == "inconclusive" and row.verdict_trained == "reproduced"  # the failed seed hid a 5-point gain
    assert "failed to train (better side: seed 1); on the 4 seeds where both trained: reproduced" in row.note


def test_most_seeds_stuck_at_the_background_are_flagged_though_the_median_is_one_of_them():
    from harness.report.failures import below_median

    # ConResNet on Pancreas-CT at quick: four of five seeds near a Dice of 0, the median 0.7.
    trials = pd.DataFrame({"variant": ["c"] * 5 + ["b"] * 5, "seed": list(range(5)) * 2,
                           "mean_dice": [0.7, 0.0, 0.07, 1.8, 33.6, 42.2, 25.4, 11.3, 18.1, 34.3]})
    flagged = trials[below_median(trials)]
    assert flagged.set_index("variant").seed.groupby(level=0).apply(list).to_dict() == {"c": [0, 1, 2, 3], "b": [2]}
    assert not below_median(trials, floor=0.0)[trials.variant.eq("c")].iloc[[0, 3]].any()  # the median alone misses them


def test_the_verdict_on_trained_seeds_holds_its_rate_on_failure_prone_null_designs():
    # Both variants fail to train at 15% of seeds (a Dice of 10 instead of 80), equal otherwise:
    # the verdict on the seeds where both trained (failures found by the rule, not known) calls
    # "reproduced" at most at the engine's rate. (A mean-based verdict where only one variant
    # fails, at equal means, is called 19-53% of the time at 10-3 seeds: few seeds rarely show a
    # rare failure; the report's failure-rate bound says what they cannot rule out.)
    from harness.report.failures import below_median

    rng = np.random.default_rng(0)
    for seeds in (3, 5, 7):
        called = 0
        for _ in range(600):
            case = rng.normal(0, 4, (20, 1))
            sides = []
            for _v in "ab":
                x = 80 + case + rng.normal(0, 2, (1, seeds)) + rng.normal(0, 3, (20, seeds))
                f = rng.random(seeds) < 0.15
                x[:, f] = 10 + rng.normal(0, 3, (20, f.sum()))
                sides.append(x)
            trials = pd.DataFrame([{"variant": v, "seed": s, "mean_dice": x[:, s].mean()}
                                   for v, x in zip("ab", sides) for s in range(seeds)])
            keep = sorted(set(range(seeds)) - set(trials[below_median(trials)].seed))
            if len(keep) >= 2:
                _, lo, _ = stats.interval((sides[0] - sides[1])[:, keep])
                called += lo > 0
        assert called / 600 <= 0.04, (seeds, called / 600)


@pytest.mark.parametrize("noise", list(stats.NOISE))
def test_adding_seeds_until_decided_holds_the_false_positive_rate(noise):
    # Looks after 3, 5, 7 and 10 seeds: the spending rule stays at the nominal rate where the
    # naive re-test (the fixed interval after each look) does not; a large effect stops early
    # (at 3 seeds the first look spends 0.03%: only an effect that dwarfs t_2 there stops at once).
    null = stats.simulate(10, 20, noise, 2000, seed=11)
    v, used = stats.sequential_verdict(null, [3, 5, 7, 10])
    assert (v == "reproduced").mean() <= 0.04 and (v == "contradicted").mean() <= 0.04
    if noise == "seeds":
        assert (stats.naive_sequential(null, [3, 5, 7, 10]) == "reproduced").mean() > 0.05
    assert sum(stats.spending([3, 5, 7, 10])) == pytest.approx(0.05)
    big, used = stats.sequential_verdict(stats.simulate(10, 20, noise, 200, effect=30, seed=12), [3, 5, 7, 10])
    assert (big == "reproduced").all() and (used <= 5).all()
    one, n = stats.sequential_verdict(null[0], [1, 3, 5, 7, 10, 12])  # looks outside 2..10 dropped
    assert one in ("reproduced", "contradicted", "inconclusive") and n in (3, 5, 7, 10)
