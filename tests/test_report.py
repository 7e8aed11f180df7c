"""Report: layout engine, statistics, --verify, and a report built from real MLflow runs."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from harness.cli import main
from harness.config import ConfigError, StudyCfg, load_study, resolve
from harness.contract import out_channels
from harness.cost import cost_report, count_params
from harness.data import build_task
from harness.models import build_model
from harness.report import StudyRuns, check_pinned, layout_table, paired_test, pareto_front, summarise, verify
from helpers import STUDIES
from harness.tracking import Tracker

GRID = {
    "name": "grid", "paper": "gsp_conv", "title": "Grid table",
    "data": {"dataset": "synthetic_organ", "params": {"n_cases": 4, "shape": [16, 32, 32]}},
    "model": {"name": "gsp_unet", "params": {"widths": [4, 4, 8, 8, 8], "insert": "CSC"}},
    "grid": {"sg": {"A": {"groups": [[2, 2, 2]] + [[1, 1, 1]] * 4}, "B": {"groups": [[1, 2, 2]] + [[1, 1, 1]] * 4}},
             "ip": {"CSC": {"insert": "CSC"}, "CCS": {"insert": "CCS"}}},
    "variants": [{"name": "fcn", "params": {"conv": "conv3", "insert": None}, "tags": {"sg": "3D FCN", "ip": "CSC"}}],
    "train": {"patch": [16, 32, 32], "epochs": 1, "steps_per_epoch": 1, "batch_size": 1},
    "scales": {"smoke": {}, "quick": {}, "paper": {}},
    "expected": {"A-CSC": {"mean_dice": 80.0}, "B-CCS": {"mean_dice": 85.0},
                 "fcn": {"params": {"value": 1000, "tol": 10}}},
    "layout": {"rows": "sg", "columns": "ip", "value": "mean_dice", "best": "max_per_column",
               "row_params": {"Stage 1": "groups.0"}, "baseline": "fcn"},
}


def trials(rows):
    return pd.DataFrame([{"variant": v, "seed": s, "mean_dice": d, "params": p} for v, s, d, p in rows])


def test_layout_engine_pivots_into_the_papers_table():
    study = StudyCfg.model_validate(GRID)
    t = trials([("A-CSC", 0, 70.0, 10), ("A-CSC", 1, 74.0, 10), ("A-CCS", 0, 60.0, 10), ("B-CSC", 0, 50.0, 10),
                ("B-CCS", 0, 90.0, 10), ("fcn", 0, 75.0, 2000)])
    table, notes = layout_table(StudyRuns(study, "smoke", t, failed=[]))
    assert list(table.index) == ["3D FCN", "A", "B"]  # explicit variants first, then the grid
    assert list(table.columns) == ["Stage 1", "CSC ours", "CSC paper", "CSC Δ", "CCS ours", "CCS paper", "CCS Δ"]
    assert table.loc["A", "Stage 1"] == "(2, 2, 2)" and table.loc["B", "Stage 1"] == "(1, 2, 2)"
    assert table.loc["A", "CSC ours"] == "72.0 ± 2.83 (n=2)"  # mean ± sample std over seeds
    assert table.loc["A", "CSC paper"] == "80" and table.loc["A", "CSC Δ"] == "-8.00"
    assert table.loc["3D FCN", "CSC ours"] == "**75.0**"  # best in the CSC column, bold as the paper marks it
    assert table.loc["B", "CCS ours"] == "**90.0**" and table.loc["B", "CCS Δ"] == "5.00"
    assert table.loc["3D FCN", "CCS ours"] == "" and not notes


def test_gmacs_are_compared_at_the_input_the_papers_figure_is_for():
    # GSP Table 3: ours costed at 1x4x160^3 (the (5,5,5) groups need it), the paper's 7.91 G at
    # 128^3: the cell is recomputed there from MACs per voxel, so the difference is like for like.
    study = StudyCfg.model_validate({**GRID, "layout": {"rows": "variant", "columns": ["gmacs", "macs_per_voxel"]},
                                     "expected": {"fcn": {"gmacs": {"value": 7.91, "at": [1, 4, 128, 128, 128]}}}})
    t = pd.DataFrame([{"variant": "fcn", "seed": 0, "gmacs": 12.94, "macs_per_voxel": 3158.25},
                      {"variant": "A-CSC", "seed": 0, "gmacs": 12.94, "macs_per_voxel": 3158.25}])
    table, _ = layout_table(StudyRuns(study, "smoke", t, failed=[]))
    assert table.loc["fcn", "gmacs ours"] == "6.62 (at 1x4x128x128x128)" and table.loc["fcn", "gmacs Δ"] == "-1.29"
    assert table.loc["A-CSC", "gmacs ours"] == "12.9"  # no paper input declared: as costed
    with pytest.raises(ValueError, match=r"gmacs.ExpectedValue.at\n  Value error, must be five positive sizes"):
        StudyCfg.model_validate({**GRID, "expected": {"fcn": {"gmacs": {"value": 7.91, "at": [4, 128, 128, 128]}}}})


def test_layout_says_what_is_missing_or_failed():
    study = StudyCfg.model_validate(GRID)
    table, notes = layout_table(StudyRuns(study, "smoke", trials([("A-CSC", 0, 70.0, 10)]), failed=["B-CCS#s0"]))
    assert table.loc["B", "CCS ours"] == "— (failed)" and table.loc["B", "CSC ours"] == "— (no run)"
    assert "B-CCS / mean_dice: failed" in notes and table.loc["B", "CCS paper"] == "85"
    empty, notes = layout_table(StudyRuns(study, "smoke", pd.DataFrame(), failed=[]))
    assert len(notes) == 5 and (empty.filter(like="ours") != "").sum().sum() == 5


def test_statistics_on_known_inputs():
    s = summarise(trials([("a", 0, 1.0, 0), ("a", 1, 2.0, 0), ("a", 2, 3.0, 0), ("b", 0, 5.0, 0)]), ["mean_dice"])
    a = s.set_index("variant").loc["a"]
    assert a["n"] == 3 and a["mean"] == 2.0 and a["std"] == 1.0
    assert a["ci_high"] - a["mean"] == pytest.approx(4.302653 / 3**0.5, rel=1e-5)  # t(0.975, 2) * s / sqrt(n)
    assert math.isnan(s.set_index("variant").loc["b", "std"])
    cases = pd.DataFrame([{"variant": v, "seed": 0, "case": f"c{i}", "dice": d}
                          for i in range(8) for v, d in (("x", 50 + i), ("y", 40 + i + (i % 2)))])
    r = paired_test(cases, ["x"], ["y"], "dice")
    # 8 cases of one seed: the mean difference, but no interval (training noise is not sampled),
    # where a Wilcoxon test over the 8 pooled pairs would have said p = 0.008.
    assert r["pairs"] == 8 and r["delta"] == pytest.approx(9.5) and math.isnan(r["ci_low"])
    two = pd.concat([cases, cases.assign(seed=1, dice=cases.dice + 0.5)])
    r = paired_test(two, ["x"], ["y"], "dice")
    assert (r["cases"], r["seeds"], r["delta"]) == (8, 2, pytest.approx(9.5)) and 9 < r["ci_low"] < r["ci_high"] < 10


CLAIMS = {**GRID, "claims": [
    {"text": "A-CSC beats B-CSC", "where": "Table 2", "better": "A-CSC", "than": "B-CSC"},
    {"text": "CSC beats CCS on average over SG", "where": "Table 2", "better": {"ip": "CSC"}, "than": {"ip": "CCS"}},
    {"text": "fcn beats A-CSC by 20 points", "where": "Table 1", "better": "fcn", "than": "A-CSC", "margin": 20},
    {"text": "A-CSC has fewer parameters", "where": "Table 3", "better": "A-CSC", "than": "fcn", "metric": "params",
     "direction": "lower"},
]}


def _cases(effects: dict[str, float], seeds=3, cases=6):
    """Per-case Dice: variant offset + a case effect shared by all variants + seed noise."""
    import numpy as np

    rng = np.random.default_rng(1)
    case_fx, seed_fx = rng.normal(0, 5, cases), rng.normal(0, 0.5, (seeds, len(effects)))
    return pd.DataFrame([{"variant": v, "seed": s, "case": f"c{c}", "mean_dice": 60 + e + case_fx[c] + seed_fx[s, i]}
                         for i, (v, e) in enumerate(effects.items()) for s in range(seeds) for c in range(cases)])


def _judged(claims: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The claims judged on ``_cases`` of known effects (fcn 1,000 parameters, the others 50)."""
    from harness.report import claims_table

    per_case = _cases({"A-CSC": 10, "A-CCS": 0, "B-CSC": 2, "B-CCS": 3, "fcn": 15})
    t = per_case.groupby(["variant", "seed"]).mean_dice.mean().reset_index().assign(
        params=lambda d: d.variant.map(lambda v: 1000 if v == "fcn" else 50))
    study = StudyCfg.model_validate({**CLAIMS, "claims": claims})
    return claims_table(StudyRuns(study, "smoke", t, per_case=per_case)).set_index("claim"), per_case


def test_claims_are_judged_with_cases_and_seeds_resampled():
    from harness.report import claims_table

    study = StudyCfg.model_validate(CLAIMS)
    per_case = _cases({"A-CSC": 10, "A-CCS": 0, "B-CSC": 2, "B-CCS": 3, "fcn": 15})
    t = per_case.groupby(["variant", "seed"]).mean_dice.mean().reset_index().assign(
        params=lambda d: d.variant.map(lambda v: 1000 if v == "fcn" else 50))
    c = claims_table(StudyRuns(study, "smoke", t, per_case=per_case)).set_index("claim")
    held = c.loc["A-CSC beats B-CSC"]
    assert held.verdict == "reproduced" and held.effect == pytest.approx(8, abs=1) and (held.cases, held.seeds) == (6, 3)
    assert held.ci_low > 0 and held.ci_high > held.effect
    # Every variant tagged ip=CSC (the 3D FCN row too): (10 + 2 + 15) / 3 - (0 + 3) / 2 = 7.5.
    assert c.loc["CSC beats CCS on average over SG"].verdict == "reproduced"
    assert c.loc["CSC beats CCS on average over SG"].effect == pytest.approx(7.5, abs=0.6)
    margin = c.loc["fcn beats A-CSC by 20 points"]  # true direction (+5), but far short of the claimed 20
    assert margin.verdict == "contradicted" and margin.ci_high < 20
    cost = c.loc["A-CSC has fewer parameters"]
    assert cost.verdict == "reproduced" and cost.effect == cost.ci_low == 950  # exact numbers, no interval
    # One seed: not enough pairs to judge, whatever the effect.
    one = claims_table(StudyRuns(study, "smoke", t[t.seed == 0], per_case=per_case[per_case.seed == 0]))
    row = one.set_index("claim").loc["A-CSC beats B-CSC"]
    assert row.verdict == "inconclusive" and "not enough pairs: 6 cases x 1 seeds" in row.note
    # An effect inside the noise is inconclusive.
    noisy = claims_table(StudyRuns(study, "smoke", t, per_case=_cases({"A-CSC": 0.1, "A-CCS": 0, "B-CSC": 0,
                                                                       "B-CCS": 0, "fcn": 0})))
    assert noisy.set_index("claim").loc["A-CSC beats B-CSC"].verdict == "inconclusive"


def test_a_claim_against_a_published_figure_of_a_net_not_trained():
    claims = [{"text": "A-CSC has under 100 parameters", "where": "T3", "better": "A-CSC", "than": 100,
               "metric": "params", "direction": "lower"},
              {"text": "fcn has under 100 parameters", "where": "T3", "better": "fcn", "than": 100,
               "metric": "params", "direction": "lower"},
              {"text": "A-CSC reaches 5 Dice", "where": "T3", "better": "A-CSC", "than": 5.0}]
    c, per_case = _judged(claims)
    assert c.loc["A-CSC has under 100 parameters"].verdict == "reproduced"
    assert c.loc["A-CSC has under 100 parameters"].effect == 50  # 100 - 50, exact
    assert c.loc["fcn has under 100 parameters"].verdict == "contradicted"
    dice = c.loc["A-CSC reaches 5 Dice"]  # per case against the number, cases and seeds resampled
    mean = per_case[per_case.variant == "A-CSC"].mean_dice.mean()
    assert dice.verdict == "reproduced" and dice.effect == pytest.approx(mean - 5) and dice.ci_low > 0


def test_a_claim_of_no_difference_holds_inside_its_margin_and_fails_outside():
    from harness.report import claims_table

    claims = [{"text": "B-CSC ~ B-CCS", "where": "T2", "better": "B-CSC", "than": "B-CCS", "direction": "equal",
               "margin": 1.0},
              {"text": "A-CSC ~ A-CCS", "where": "T2", "better": "A-CSC", "than": "A-CCS", "direction": "equal",
               "margin": 1.0},
              {"text": "B-CSC ~ A-CSC within 9", "where": "T2", "better": "B-CSC", "than": "A-CSC",
               "direction": "equal", "margin": 9.0}]
    study = StudyCfg.model_validate({**CLAIMS, "claims": claims})
    per_case = _cases({"A-CSC": 10, "A-CCS": 0, "B-CSC": 3.1, "B-CCS": 3, "fcn": 15})
    t = per_case.groupby(["variant", "seed"]).mean_dice.mean().reset_index()
    c = claims_table(StudyRuns(study, "smoke", t, per_case=per_case)).set_index("claim")
    assert c.loc["B-CSC ~ B-CCS"].verdict == "reproduced" and -1 < c.loc["B-CSC ~ B-CCS"].ci_low
    assert c.loc["A-CSC ~ A-CCS"].verdict == "contradicted" and c.loc["A-CSC ~ A-CCS"].ci_low > 1
    assert c.loc["B-CSC ~ A-CSC within 9"].verdict == "reproduced"  # -6.9, inside +-9
    assert c.loc["B-CSC ~ B-CCS"].metric == "mean_dice = (±1)"

def test_a_claim_of_a_magnitude_is_judged_at_it_not_at_its_sign():
    """ "28% of the parameters", "+18.64% computation", "by nearly 4 points": a ratio of exact costs
    or a difference, within the margin of the stated value; the sign alone is not enough."""
    def ratio(text, better, than, value, margin, **kw):
        return {"text": text, "where": "T7", "better": better, "than": than, "metric": "params",
                "measure": "ratio", "margin": margin, **({"direction": "equal", "value": value} if value else kw)}

    claims = [ratio("A-CSC has about 5% of fcn's", "A-CSC", "fcn", 0.05, 0.01),
              ratio("A-CSC has about 28% of fcn's", "A-CSC", "fcn", 0.28, 0.05),  # fewer, but not 28%
              ratio("fcn has +1900% over A-CSC", "fcn", "A-CSC", 20.0, 0.5),
              ratio("A-CSC has under half of fcn's", "A-CSC", "fcn", None, 0.5, direction="lower"),
              ratio("A-CSC has under 3% of fcn's", "A-CSC", "fcn", None, 0.97, direction="lower"),
              ratio("A-CSC has about 50 of a published 1000", "A-CSC", 1000.0, 0.05, 0.001),
              {"text": "fcn beats A-CSC by about 5 points", "where": "T2", "better": "fcn", "than": "A-CSC",
               "direction": "equal", "value": 5.0, "margin": 2.0},
              {"text": "fcn beats A-CSC by about 15 points", "where": "T2", "better": "fcn", "than": "A-CSC",
               "direction": "equal", "value": 15.0, "margin": 2.0}]
    c, _ = _judged(claims)
    assert c.loc["A-CSC has about 5% of fcn's"].verdict == "reproduced"
    assert c.loc["A-CSC has about 5% of fcn's"].effect == pytest.approx(0.05)  # the ratio as it is, exact
    assert c.loc["A-CSC has about 5% of fcn's"].metric == "params ratio = 0.05 (±0.01)"
    assert c.loc["A-CSC has about 28% of fcn's"].verdict == "contradicted"
    assert c.loc["fcn has +1900% over A-CSC"].verdict == "reproduced"
    assert c.loc["A-CSC has under half of fcn's"].verdict == "reproduced"
    assert c.loc["A-CSC has under half of fcn's"].metric == "params ratio < 0.5"
    assert c.loc["A-CSC has under 3% of fcn's"].verdict == "contradicted"
    assert c.loc["A-CSC has about 50 of a published 1000"].verdict == "reproduced"
    about5, about15 = c.loc["fcn beats A-CSC by about 5 points"], c.loc["fcn beats A-CSC by about 15 points"]
    assert about5.verdict == "reproduced" and about5.metric == "mean_dice = 5 (±2)"
    assert about15.verdict == "contradicted" and about15.effect == pytest.approx(5, abs=1)
    for bad, msg in [({"measure": "ratio"}, "measure: ratio is for an exact cost"),
                     ({"value": 3.0, "margin": 1.0}, "value: a stated magnitude"),
                     ({"measure": "ratio", "metric": "params", "direction": "equal", "value": -1.0, "margin": 0.1},
                      "a ratio is > 0")]:
        with pytest.raises(Exception, match=msg):
            StudyCfg.model_validate({**CLAIMS, "claims": [{"text": "x", "where": "T", "better": "fcn",
                                                           "than": "A-CSC", **bad}]})

    with pytest.raises(Exception, match="needs a margin > 0"):
        StudyCfg.model_validate({**CLAIMS, "claims": [{**claims[0], "margin": 0}]})


def test_claims_must_name_variants_the_study_has():
    from harness.config import check_layout

    bad = StudyCfg.model_validate({**CLAIMS, "claims": [{"text": "x", "where": "T1", "better": "A-CSX", "than": "fcn"}]})
    with pytest.raises(ConfigError, match="claims\\[0\\].better: unknown variant 'A-CSX'. Did you mean 'A-CSC'"):
        check_layout(bad)
    tags = StudyCfg.model_validate({**CLAIMS, "claims": [{"text": "x", "where": "T1", "better": {"ip": "CSS"},
                                                          "than": "fcn"}]})
    with pytest.raises(ConfigError, match="no variant has tags"):
        check_layout(tags)


def test_pareto_front():
    df = pd.DataFrame({"variant": list("abcd"), "gmacs": [1, 2, 3, 4], "mean_dice": [50, 40, 70, 65]})
    assert list(pareto_front(df, "gmacs", "mean_dice").variant) == ["a", "c"]


def test_verify_flags_pinned_numbers_outside_tolerance():
    study = StudyCfg.model_validate(GRID)
    assert verify(StudyRuns(study, "smoke", trials([("fcn", 0, 75.0, 1005)]))) == []
    (problem,) = verify(StudyRuns(study, "smoke", trials([("fcn", 0, 75.0, 2000)])))
    assert "fcn params: ours 2,000 vs paper 1,000 ± 10 (gap +1,000)" in problem, problem
    assert "no finished run" in verify(StudyRuns(study, "smoke", trials([("A-CSC", 0, 75.0, 1)])))[0]
    declared = StudyCfg.model_validate({**GRID, "expected": {"fcn": {"params": {
        "value": 1000, "tol": 10, "known_gap": True, "note": "supplement missing"}}}})
    runs = StudyRuns(declared, "smoke", trials([("fcn", 0, 75.0, 2000)]))
    assert verify(runs) == [] and check_pinned(runs)[0][0] == "known gap" and "supplement missing" in check_pinned(runs)[0][1]


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_pinned_numbers_of_every_study_hold_or_are_declared_gaps(path):
    # Pinned numbers are costs; measure them at the study's paper-scale cost input without training.
    study = load_study(path)
    pinned = {v for v, ms in study.expected.items() if any(not isinstance(e, (int, float)) and e.tol is not None
                                                           for e in ms.values())}
    if not pinned:
        pytest.skip("no pinned numbers")
    metrics = {m for ms in study.expected.values() for m, e in ms.items()
               if not isinstance(e, (int, float)) and e.tol is not None}
    rows = []
    for spec in resolve(study, "paper"):
        if spec.variant in pinned:
            task = build_task(spec.data.dataset, **spec.data.params)
            model = build_model(spec.model.name, in_channels=task.in_channels, input_size=spec.train.patch,
                                out_channels=out_channels(len(task.regions), spec.train.output), **spec.model.params)
            shape = spec.cost.input or [1, task.in_channels, *spec.train.patch]
            # Parameters need no forward pass (a paper-sized one takes seconds to minutes on CPU).
            cost = ({"params": count_params(model)} if metrics <= {"params"} else cost_report(model, shape, latency=False))
            rows.append({"variant": spec.variant, "seed": spec.seed, **cost})
    runs = StudyRuns(study, "paper", pd.DataFrame(rows))
    assert verify(runs) == [], verify(runs)
    assert all(status in ("ok", "known gap") for status, _ in check_pinned(runs))


def test_report_from_mlflow_runs_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = {**GRID, "deviations": ["Crop: 32^3 instead of the paper's 128^3, to fit a laptop."]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    study = load_study("s.yaml")
    tracker = Tracker()
    exp = tracker.experiment(study.name)
    parent = tracker.start_parent(exp, study.name, "smoke", "h", {})
    from harness.config import spec_hash

    dices = {"A-CSC": 70.0, "A-CCS": 60.0, "B-CSC": 50.0, "B-CCS": 90.0, "fcn": 75.0}
    for spec in resolve(study, "smoke"):
        dice = dices[spec.variant]
        run = tracker.start_child(exp, parent, spec, spec_hash(spec))
        tracker.log_metrics(run, {"train_loss": 0.5, "mean_dice": dice - 5}, step=0)
        per_case = [{"case": f"c{i}", "mean_dice": dice + i, "dice_organ": dice + i} for i in range(3)]
        tracker.finish_child(run, {"mean_dice": dice, "dice_organ": dice, "gmacs": 1 + dice / 100,
                                   "params": 1000 if spec.variant == "fcn" else 50, "latency_ns_per_voxel": 3.0,
                                   "peak_mem_mb": 20.0, "train_peak_mem_mb": 100.0 + dice, "device": "cpu"},
                             per_case, step=1)
    import harness.config.checks
    import harness.models

    def no_build(*a, **k):
        raise AssertionError("the report built a model")

    for module, name in ((harness.config.checks, "build_checked_model"), (harness.models, "build_model")):
        monkeypatch.setattr(module, name, no_build)  # runs are found from their stored hashes
    assert main(["report", "s.yaml", "--format", "md,html,tex,csv", "--verify"]) == 0
    out = tmp_path / "reports" / "local" / "grid"
    for f in ("README.md", "table.md", "table.html", "table.tex", "table.csv", "trials.csv", "stats.csv",
              "accuracy_vs_cost.png", "dice_per_region.png", "learning_curves.png", "seeds.png"):
        assert (out / f).exists(), f
    table = (out / "table.md").read_text()
    assert "**90.0**" in table and "| A " in table
    # The Cost section: both memory peaks beside parameters and GMACs, where they were measured.
    cost = pd.read_csv(out / "cost.csv").set_index("variant")
    assert cost.loc["B-CCS", "training peak memory (MB)"] == 190.0 and cost.loc["fcn", "parameters"] == 1000
    assert cost.loc["fcn", "inference peak memory (MB)"] == 20.0 and cost.loc["fcn", "device"] == "cpu"
    readme = (out / "README.md").read_text()
    assert "## Cost" in readme
    assert "## Deviations from the paper\n\n- Crop: 32^3 instead of the paper's 128^3, to fit a laptop." in readme
    st = pd.read_csv(out / "stats.csv").set_index("variant")
    assert st.loc["B-CCS", "vs_fcn_delta"] == pytest.approx(15.0) and st.loc["B-CCS", "vs_fcn_pairs"] == 3
    assert "[grid](grid/README.md)" in (tmp_path / "reports" / "local" / "index.md").read_text()
    assert "grid/table.html" in (tmp_path / "reports" / "local" / "index.html").read_text()
    # A pinned number outside its tolerance fails --verify.
    GRID2 = {**GRID, "expected": {"fcn": {"params": {"value": 500, "tol": 1}}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(GRID2, sort_keys=False))
    assert main(["report", "s.yaml", "--verify"]) == 1
    assert "MISMATCH fcn params: ours 1,000 vs paper 500" in capsys.readouterr().out
    # A store that lost a run's metrics: the report says which run lacks what and goes on.
    import sqlite3

    runs = {r.data.tags["trial_key"]: r.info.run_id for r in tracker.client.search_runs(
        [exp], "tags.harness_role = 'trial'")}
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute("DELETE FROM metrics WHERE run_uuid = ?", (runs["A-CSC#s0"],))
        db.execute("DELETE FROM latest_metrics WHERE run_uuid = ?", (runs["A-CSC#s0"],))
        db.execute("DELETE FROM latest_metrics WHERE run_uuid = ? AND key = 'params'", (runs["B-CCS#s0"],))
        db.execute("DELETE FROM metrics WHERE run_uuid = ? AND key = 'params'", (runs["B-CCS#s0"],))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    assert main(["report", "s.yaml"]) == 0
    readme = (out / "README.md").read_text()
    assert f"A-CSC#s0 (run {runs['A-CSC#s0']}) lacks mean_dice, params, gmacs; left out" in readme
    assert f"B-CCS#s0 (run {runs['B-CCS#s0']}) lacks params" in readme
    # A failure while writing leaves the earlier report as it was, and no half-written folder.
    import harness.report.write

    before = {f.name: f.read_bytes() for f in out.iterdir()}
    monkeypatch.setattr(harness.report.write, "plots", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["report", "s.yaml"])
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []


def test_row_params_show_what_each_variant_ran_with():
    # The variant of another family and the scale's widths: the table shows the parameters of the
    # run (logged with it), or without a run those resolved at the scale, never the study's base.
    study = StudyCfg.model_validate({**GRID, "scales": {"smoke": {"model": {"widths": [2, 2, 2, 2, 2]}}, "quick": {}, "paper": {}},
                                     "variants": [{"name": "fcn", "model": "unet3d", "params": {"base": 4},
                                                   "tags": {"sg": "3D U-Net", "ip": "CSC"}}],
                                     "layout": {**GRID["layout"], "row_params": {"w": "widths", "base": "base"}}})
    t = trials([("A-CSC", 0, 70.0, 10)]).assign(model_params=json.dumps({"widths": [9, 9, 9, 9, 9]}))
    table, _ = layout_table(StudyRuns(study, "smoke", t))
    assert table.loc["A", "w"] == "(9, 9, 9, 9, 9)"  # as logged with the run
    assert table.loc["B", "w"] == "(2, 2, 2, 2, 2)"  # no run: the smoke scale's widths
    assert table.loc["3D U-Net", "base"] == "4" and table.loc["3D U-Net", "w"] == ""  # its own family's


def test_report_bad_format_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(GRID, sort_keys=False))
    assert main(["report", "s.yaml", "--format", "md,pdf"]) == 2
    assert "pdf not allowed" in capsys.readouterr().err and not (tmp_path / "reports").exists()


VALUES = {
    "name": "values", "paper": "distill_dsm", "title": "Metrics as rows",
    "data": {"dataset": "synthetic_depth", "params": {"n_cases": 4, "shape": [16, 32, 32]}},
    "model": {"name": "unet2d"},
    "tasks": {t: {s: {"dataset": "synthetic_depth", "params": {"n_cases": 4, "shape": [16, 32, 32], "regions": r}}
                  for s in ("smoke", "quick", "paper")} for t, r in (("heart", ["la"]), ("hippo", ["ant", "post"]))},
    "grid": {"task": {"heart": {"task": "heart"}, "hippo": {"task": "hippo"}},
             "net": {"2D": {"model": "unet2d"}, "DSM": {"model": "distill_dsm"}}},
    "train": {"patch": [16, 32, 32]},
    "scales": {"smoke": {}, "quick": {}, "paper": {}},
    "expected": {"heart-2D": {"dice_la": {"value": 90.25, "sd": 0.4}, "spec_la": 99.97}, "hippo-DSM": {"dice_post": 87.86}},
    "layout": {"rows": "task", "columns": "net",
               "values": {"heart": {"Dice": "dice_la", "Specificity": "spec_la"},
                          "hippo": {"Dice 1": "dice_ant", "Dice 2": "dice_post"}}},
}


def test_values_layout_puts_metrics_in_rows_per_row_group():
    study = StudyCfg.model_validate(VALUES)
    t = pd.DataFrame([{"variant": "heart-2D", "seed": s, "dice_la": d, "spec_la": 99.9712} for s, d in ((0, 80), (1, 84))]
                     + [{"variant": "hippo-DSM", "seed": 0, "dice_ant": 70.0, "dice_post": 60.0}])
    table, notes = layout_table(StudyRuns(study, "smoke", t, failed=["heart-DSM#s0"]))
    flat = table.reset_index()
    assert list(flat.columns) == ["task", "metric", "2D ours", "2D paper", "DSM ours", "DSM paper"]
    assert flat[["task", "metric"]].values.tolist() == [["heart", "Dice"], ["heart", "Specificity"],
                                                        ["hippo", "Dice 1"], ["hippo", "Dice 2"]]
    # Ours ± over seeds beside the paper's ± as printed (Distill DSM Tables 2 and 3).
    assert flat.loc[0, "2D ours"] == "82.0 ± 2.83 (n=2)" and flat.loc[0, "2D paper"] == "90.25 ± 0.4"
    assert flat.loc[1, "2D ours"] == "99.971 (n=2)" and flat.loc[1, "2D paper"] == "99.97"  # specificity: 3 decimals
    assert flat.loc[3, "DSM ours"] == "60.0" and flat.loc[3, "DSM paper"] == "87.86"
    assert flat.loc[0, "DSM ours"] == "— (failed)" and flat.loc[2, "2D ours"] == "—"
    assert notes == ["heart-DSM / dice_la: failed", "heart-DSM / spec_la: failed",
                     "hippo-2D / dice_ant: no run", "hippo-2D / dice_post: no run"]


def test_values_layout_shares_one_row_across_groups_from_the_variant_the_paper_pinned():
    # Distill DSM Table 2 prints one parameter row for all tasks, each alpha counted with another
    # task's channels: the "*" group takes each column's cell from the variant pinned there.
    values = {**VALUES["layout"]["values"], "*": {"Parameters": "params"}}
    expected = {**VALUES["expected"], "heart-DSM": {"params": {"value": 1216266, "tol": 0}},
                "hippo-2D": {"params": {"value": 1082211, "tol": 0}}}
    study = StudyCfg.model_validate({**VALUES, "expected": expected, "layout": {**VALUES["layout"], "values": values}})
    t = pd.DataFrame([{"variant": v, "seed": 0, "params": p} for v, p in
                      (("heart-2D", 1082194), ("hippo-2D", 1082211), ("heart-DSM", 1216266), ("hippo-DSM", 1216283))])
    flat = layout_table(StudyRuns(study, "smoke", t, failed=[]))[0].reset_index()
    assert flat[["task", "metric"]].values.tolist()[0] == ["all", "Parameters"]  # first, once
    assert flat.loc[0, "2D ours"] == "1,082,211 (hippo)" and flat.loc[0, "2D paper"] == "1,082,211"
    assert flat.loc[0, "DSM ours"] == "1,216,266 (heart)" and flat.loc[0, "DSM paper"] == "1,216,266"
    assert "Parameters" not in flat.metric.iloc[1:].tolist()
    bad = {**VALUES["layout"], "values": {**VALUES["layout"]["values"], "hipo": {"Dice": "dice_ant"}}}
    with pytest.raises(ConfigError, match=r"layout.values: unknown label of axis 'task' 'hipo'. Did you mean 'hippo'\?"):
        load_study_dict({**VALUES, "layout": bad})


def test_metric_groups_under_each_column_label():
    # GSP Table 1: BraTS18 WT, TC, ET, mDice beside PROMISE12 mDice, one row per net.
    layout = {"rows": "net", "columns": "task", "best": "max_per_column",
              "value": {"hippo": ["dice_ant", "mean_dice"], "heart": ["mean_dice"]}}
    study = StudyCfg.model_validate({**VALUES, "expected": {"heart-DSM": {"mean_dice": 92.35}}, "layout": layout})
    t = pd.DataFrame([{"variant": v, "seed": 0, "dice_ant": a, "mean_dice": d} for v, a, d in
                      (("heart-2D", None, 80.0), ("heart-DSM", None, 90.0), ("hippo-2D", 70.0, 65.0),
                       ("hippo-DSM", 60.0, 66.0))])
    table, notes = layout_table(StudyRuns(study, "smoke", t, failed=[]))
    assert list(table.index) == ["2D", "DSM"]
    assert list(table.columns) == ["heart mean_dice ours", "heart mean_dice paper", "heart mean_dice Δ",
                                   "hippo dice_ant ours", "hippo mean_dice ours"]  # the paper's order of groups
    assert table.loc["DSM", "heart mean_dice ours"] == "**90.0**" and table.loc["DSM", "heart mean_dice Δ"] == "-2.35"
    assert table.loc["2D", "hippo dice_ant ours"] == "**70.0**" and table.loc["DSM", "hippo mean_dice ours"] == "**66.0**"
    assert not notes
    with pytest.raises(ConfigError, match=r"layout.value: unknown label of axis 'task' 'prostate'"):
        load_study_dict({**VALUES, "layout": {**layout, "value": {"prostate": ["mean_dice"]}}})


def load_study_dict(d):
    from harness.config import check_layout

    study = StudyCfg.model_validate(d)
    check_layout(study)
    return study


def test_report_of_a_study_with_no_current_runs_says_so(tmp_path, monkeypatch):
    # Every run stale (the study changed since) or none at all: an empty table, not a crash.
    from harness.report import write_report

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(VALUES, sort_keys=False))
    out, problems = write_report("s.yaml", "smoke", ["md"], tmp_path / "reports",
                                 f"sqlite:///{tmp_path / 'mlflow.db'}")
    text = (out / "README.md").read_text()
    assert "0 finished trials" in text and "No finished runs." in text and problems == []


def test_numeric_grid_axes_get_dice_and_cost_curves(tmp_path):
    from harness.report import StudyRuns, axis_curves

    study = StudyCfg.model_validate({**GRID, "grid": {"K": {"64": {"widths": [4] * 5}, "128": {"widths": [8] * 5},
                                                            "256": {"widths": [16] * 5}}, "ip": GRID["grid"]["ip"]},
                                     "variants": [], "expected": {}, "layout": {"rows": "K", "columns": "ip"}})
    t = pd.DataFrame([{"variant": f"{k}-CSC", "seed": s, "K": k, "ip": "CSC", "mean_dice": 50 + s + int(k) / 64,
                       "gmacs": int(k) / 100} for k in ("64", "128", "256") for s in (0, 1)])
    files = axis_curves(StudyRuns(study, "smoke", t), tmp_path)
    assert files == ["K_curve.png"] and (tmp_path / "K_curve.png").stat().st_size > 0  # ip is not numeric


def test_pinned_numbers_are_not_checked_at_a_scale_that_changes_the_model():
    study = load_study(STUDIES[0].parent / "conres_table3_ablation.yaml")
    rows = pd.DataFrame([{"variant": "baseline", "seed": 0, "params": 1_175_995},
                         {"variant": "residual", "seed": 0, "params": 1_192_132},
                         {"variant": "conresnet", "seed": 0, "params": 1_192_132}])
    quick = check_pinned(StudyRuns(study, "quick", rows))
    assert [s for s, _ in quick] == ["scaled"] * 3
    assert "paper 18,783,715, checked at paper scale only (the quick scale changes the model: {'width': 8})" in quick[0][1]
    paper = dict((m.split(":")[0], s) for s, m in check_pinned(StudyRuns(study, "paper", rows)))
    assert paper["baseline params"] == "mismatch"  # at paper scale a narrower net is a failure


def test_model_size_is_the_saved_weights_in_megabytes():
    net = build_model("conresnet", in_channels=4, out_channels=3, mapping=False, attention=False)
    report = cost_report(net, [1, 4, 16, 32, 32], latency=False)
    assert report["size_mb"] == pytest.approx(18_783_715 * 4 / 1e6)  # GroupNorm has no buffers


def test_report_without_runs_exits_2_and_creates_no_database(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(GRID, sort_keys=False))
    assert main(["report", "s.yaml"]) == 2
    assert "no MLflow database at" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # no mlflow.db, no reports/
    Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")  # a database holding no run of this study
    assert main(["report", "s.yaml"]) == 2
    assert "no runs in sqlite:///" in capsys.readouterr().err and not (tmp_path / "reports").exists()


def test_index_counts_each_comparison_once_and_ours_apart(tmp_path):
    from harness.report import write_index
    from harness.stats import ENGINE

    def study(name, claims, engine=ENGINE, scale="quick"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "README.md").write_text(f"# {name} <title>\n")
        (tmp_path / name / "claims.json").write_text(json.dumps({"scale": scale, "engine": engine, "claims": claims}))

    def claim(text, verdict, id, source="paper", flag=""):
        return {"claim": text, "verdict": verdict, "id": id, "source": source, "flag": flag}

    # GSP Table 1's "> 20 points" and "> 0" judge one comparison: counted once, by the first (headline).
    study("t1", [claim("by 20", "inconclusive", "p:t1:a|b|dice", flag="underpowered"),
                 claim("by 0", "reproduced", "p:t1:a|b|dice"), claim("fewer MACs", "reproduced", "p:t1:a|b|gmacs")])
    # ConResNet vs baseline judged in two studies: agreeing verdicts count once, disagreeing ones as mixed.
    study("t3", [claim("conres vs base", "reproduced", "conres:cb"), claim("views", "reproduced", "conres:v")])
    study("t4", [claim("axial vs base", "reproduced", "conres:cb"), claim("views", "inconclusive", "conres:v"),
                 claim("our check", "contradicted", "x:ours", source="ours")])
    study("old", [claim("bootstrapped", "reproduced", "o:x")], engine=None)  # before this engine: listed apart
    # A smoke run tests the plumbing: its verdicts are counted apart, never in the quick totals.
    study("plumbing", [claim("conres vs base", "contradicted", "conres:cb"), claim("s", "reproduced", "s:1")],
          scale="smoke")
    write_index(tmp_path)
    md = (tmp_path / "index.md").read_text()
    assert "- At quick scale, the papers' claims: 4 distinct comparisons (7 claim rows): 2 reproduced, " \
           "1 inconclusive, 1 mixed (1 underpowered)" in md, md
    assert "- At quick scale, our own checks: 1 distinct comparisons (1 claim rows): 1 contradicted" in md
    assert "- At smoke scale, the papers' claims: 2 distinct comparisons (2 claim rows): 1 contradicted, " \
           "1 reproduced" in md
    assert md.index("At quick scale") < md.index("At smoke scale")
    assert "## Reading the verdicts" in md and md.count("*underpowered*: inconclusive") == 1
    assert "t4/README.md): t4 <title> — claims at quick: paper's 1 reproduced, 1 inconclusive; ours 1 contradicted" in md
    assert "Not in these totals: 1 reports judged by an earlier engine" in md and md.count("bootstrap") == 1
    html = (tmp_path / "index.html").read_text()
    assert "t4 &lt;title&gt;" in html and "<title>\n" not in html.split("</title>", 1)[1]
    # A title as the report writes it (Markdown-escaped) is escaped once in HTML, not twice.
    from harness.report import md_text

    study("escaped", [])
    (tmp_path / "escaped" / "README.md").write_text(f"# {md_text('a <b> & c|d')}\n")
    write_index(tmp_path)
    html = (tmp_path / "index.html").read_text()
    assert "a &lt;b&gt; &amp; c|d" in html and "&amp;lt;" not in html


def test_a_studys_own_words_are_escaped_for_each_format(tmp_path):
    from harness.report import claims_markdown, md_text
    from harness.report.tables import write_table

    assert md_text("<script>alert(1)</script> a|b") == "&lt;script&gt;alert(1)&lt;/script&gt; a\\|b"
    table = pd.DataFrame({"net": ["<b>x</b>|y", "a_b 50%"], "Dice ours": ["**90.0 ± 1.0**", "80.0"]}).set_index("net")
    write_table(table, tmp_path, "t", ["md", "html", "tex"])
    md = (tmp_path / "t.md").read_text()
    assert "&lt;b&gt;x&lt;/b&gt;\\|y" in md and "<b>" not in md and "**90.0 ± 1.0**" in md
    assert "&lt;b&gt;x&lt;/b&gt;|y" in (tmp_path / "t.html").read_text()  # inside a cell, | is plain text in HTML
    tex = (tmp_path / "t.tex").read_text()
    assert "a\\_b 50\\%" in tex and "\\textbf{90.0 $\\pm$ 1.0}" in tex
    row = {"claim": "x | <i>y</i>", "where": "T1", "source": "paper", "metric": "mean_dice", "verdict": "reproduced",
           "flag": "", "effect": 1.0, "ci_low": 0.5, "ci_high": 1.5, "detectable": 1.0, "paper": 2.0, "cases": 24,
           "seeds": 3, "note": ""}
    assert "x \\| &lt;i&gt;y&lt;/i&gt;" in claims_markdown(pd.DataFrame([row]))


def test_wall_time_sums_each_run_and_skips_the_days_between():
    from harness.report import wall_time

    day = 86_400_000
    t = pd.DataFrame({"variant": ["a", "b", "a"], "seed": [0, 0, 1], "parent": ["p1", "p1", "p2"],
                      "start_time": [0, 60_000, day], "end_time": [120_000, 180_000, day + 30_000]})
    study = StudyCfg.model_validate(GRID)
    assert wall_time(StudyRuns(study, "quick", t, failed=[])) == 180 + 30  # not a day and more


def test_accuracy_plot_draws_a_front_per_task_and_labels_that_do_not_overlap():
    import matplotlib.pyplot as plt

    from harness.report.plots import accuracy_figure

    rng = np.random.default_rng(0)
    rows = []
    for task in ("BraTS18", "PROMISE12"):  # a cluster of near-identical nets per task, a cost spanning 100x
        for i in range(8):
            rows.append({"variant": f"{task}-net{i}", "mean_dice": 60 + i + rng.normal(0, 0.3),
                         "gmacs": 0.05 * 1.9**i, "params": 1e4 * 1.9**i, "peak_mem_mb": 10 + 0.1 * i})
    trials = pd.DataFrame(rows)
    fig = accuracy_figure(trials, {r["variant"]: r["variant"].split("-")[0] for r in rows}, "t @ quick")
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        fronts = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
        assert len(fronts) == 2  # one per task, never one across both
        assert len({ln.get_color() for ln in fronts}) == 2
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        assert boxes and all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
        frame = ax.get_window_extent(renderer)
        assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)
    assert fig.axes[0].get_xscale() == "log"  # GMACs span 90x
    assert fig.legends and not any(ax.get_legend() for ax in fig.axes)  # the legend sits outside the panels
    plt.close(fig)


def test_latency_measured_beside_other_work_is_said():
    from types import SimpleNamespace

    from harness.report.write import _load_note

    quiet = SimpleNamespace(trials=pd.DataFrame({"load_per_core": [1.0, 1.1]}))
    busy = SimpleNamespace(trials=pd.DataFrame({"load_per_core": [1.0, 3.2, 2.0]}))
    assert _load_note(quiet) == "" and _load_note(SimpleNamespace(trials=pd.DataFrame({"x": [1]}))) == ""
    assert "Latency of 2 of 3 trials was measured beside other work (1-minute load up to 3.2 per core" in _load_note(busy)


def test_a_report_counts_the_studys_seeds_and_says_what_else_the_store_holds(tmp_path, monkeypatch):
    from harness.config import spec_hash
    from harness.report import load_runs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**GRID, "seeds": 2}, sort_keys=False))
    study = load_study("s.yaml")
    tracker = Tracker()
    exp = tracker.experiment(study.name)
    parent = tracker.start_parent(exp, study.name, "smoke", "h", {})
    for spec in resolve(study, "smoke", seeds=3):  # a run with --seeds 3 (or a study that shrank since)
        run = tracker.start_child(exp, parent, spec, spec_hash(spec))
        tracker.finish_child(run, {"mean_dice": 50.0 + spec.seed, "params": 10.0, "gmacs": 1.0}, [], step=1)
    runs = load_runs(study, "smoke", with_cases=False)
    assert sorted(set(runs.trials.seed)) == [0, 1] and runs.extra == 5 and runs.seeds == 2
    assert sorted(set(load_runs(study, "smoke", with_cases=False, seeds=3).trials.seed)) == [0, 1, 2]
    assert main(["report", "s.yaml"]) == 0
    readme = (tmp_path / "reports" / "local" / "grid" / "README.md").read_text()
    assert "the store holds 5 more finished trial(s) of seeds beyond the 2 counted" in readme


@pytest.mark.slow
def test_a_read_only_reports_folder_or_working_directory_is_one_line(tmp_path, monkeypatch, capsys, read_only):
    # The store holds a study's runs; reports/ cannot be written: one line naming it, exit 2.
    from helpers import finished_runs

    monkeypatch.chdir(tmp_path)
    finished_runs(GRID, "smoke", lambda spec: ({"mean_dice": 50.0, "dice_organ": 50.0, "gmacs": 1.0, "params": 50},
                                              [{"case": "c0", "mean_dice": 50.0, "dice_organ": 50.0}]))
    (tmp_path / "reports").mkdir()
    read_only(tmp_path / "reports")
    assert main(["report", "s.yaml", "--format", "md"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Permission denied" in err and str(tmp_path / "reports") in err, err
    assert list((tmp_path / "reports").iterdir()) == []
    # A read-only working directory: a run says so in one line and writes nothing there.
    other = tmp_path / "ro"
    other.mkdir()
    (other / "s.yaml").write_text(yaml.safe_dump(GRID, sort_keys=False))
    monkeypatch.chdir(other)
    read_only(other)
    assert main(["run", "s.yaml", "--scale", "smoke", "-v", "0"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Permission denied" in err and str(other) in err, err
    assert sorted(p.name for p in other.iterdir()) == ["s.yaml"]


def test_the_index_counts_trained_results_apart_from_arithmetic_identities_and_conventions(tmp_path):
    from harness.report import write_index
    from harness.stats import ENGINE

    def claim(text, verdict, kind=None, metric="mean_dice", source="paper"):
        return {"claim": text, "verdict": verdict, "id": text, "source": source, "flag": "", "metric": metric,
                **({"kind": kind} if kind else {})}

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "README.md").write_text("# s\n")
    claims = [claim("a beats b", "reproduced", "result"), claim("c beats b", "inconclusive", "result"),
              claim("fewer params", "reproduced", "arithmetic", "params"),
              claim("older report, fewer MACs", "reproduced", None, "gmacs"),  # no kind: told by its metric
              claim("merge keeps ET", "reproduced", "identity"), claim("FLOPs per voxel", "contradicted", "convention"),
              claim("read off the table", "inconclusive", "result", source="reading")]
    (tmp_path / "s" / "claims.json").write_text(json.dumps({"scale": "quick", "engine": ENGINE, "claims": claims}))
    write_index(tmp_path)
    md = (tmp_path / "index.md").read_text()
    assert ("  - trained results (the headline): 2: 1 reproduced, 1 inconclusive; were every one of these "
            "comparisons null, about 0.1 would read reproduced and as many contradicted by chance") in md, md
    assert "  - arithmetic on exact costs (no training): 2: 2 reproduced" in md
    assert "  - identities that hold by construction (not verdicts on training): 1: 1 reproduced" in md
    assert "  - counting conventions that differ from the paper's (both counts in the report): 1: 1 contradicted" in md
    assert "- At quick scale, our readings of the papers' tables: 1 distinct comparisons (1 claim rows): 1 inconclusive" in md
