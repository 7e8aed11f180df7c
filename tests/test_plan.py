"""``harness plan``: the seeds each claim needs and their training hours at another scale."""

import numpy as np
import pytest
import yaml

from harness.cli import main
from harness.config import load_study, resolve
from harness.data import build_task
from harness.report import load_runs, paired_difference
from harness.report.plan import make_plan, plan_markdown, trained_variants
from harness.stats import seeds_needed
from harness.study import proxy_macs
from helpers import finished_runs

STUDY = {
    "name": "planned", "paper": "gsp_conv", "title": "plan",
    "data": {"dataset": "synthetic_organ", "params": {"n_cases": 4, "shape": [16, 32, 32]}},
    "model": {"name": "gsp_unet", "params": {"conv": "pointwise", "widths": [4, 4, 8, 8, 8]}},
    "variants": [{"name": "pw"}, {"name": "fcn", "params": {"conv": "conv3"}}],
    "combined": [{"name": "both", "of": ["pw", "fcn"], "rule": "mean"}],
    "train": {"patch": [16, 32, 32], "epochs": 1, "steps_per_epoch": 2, "batch_size": 1},
    "scales": {"smoke": {}, "quick": {"seeds": 4},
               "paper": {"data": {"shape": [32, 64, 64]},
                         "train": {"patch": [32, 64, 64], "batch_size": 2, "epochs": 5, "steps_per_epoch": 10}}},
    "expected": {"fcn": {"mean_dice": 80.0}, "pw": {"mean_dice": 70.0}},
    "claims": [
        {"text": "the 3D FCN beats the pointwise net", "where": "T1", "better": "fcn", "than": "pw"},
        {"text": "the pointwise net has fewer parameters", "where": "T1", "better": "pw", "than": "fcn",
         "metric": "params", "direction": "lower"},
    ],
}
STEP = {"pw": 0.2, "fcn": 0.5}  # recorded seconds per training step


def _store(tmp_path, monkeypatch):
    """Four finished quick seeds of each variant: per-case Dice with a case effect and seed noise."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    case = rng.normal(0, 4, 6)

    def result(spec):
        level, noise = (75.0 if spec.variant == "fcn" else 70.0), rng.normal(0, 3)
        per_case = [{"case": f"c{i}", "mean_dice": level + case[i] + noise + rng.normal(0, 1)} for i in range(6)]
        return {"mean_dice": float(np.mean([c["mean_dice"] for c in per_case])), "gmacs": 1.0,
                "params": 10 if spec.variant == "pw" else 100, "step_time_s": STEP[spec.variant],
                "device": "cpu"}, per_case

    finished_runs(STUDY, "quick", result)
    return load_study("s.yaml")


def test_a_plan_gives_each_claim_its_seeds_and_their_hours_at_the_paper_scale(tmp_path, monkeypatch):
    study = _store(tmp_path, monkeypatch)
    runs = load_runs(study, "quick")
    plan = make_plan(runs, "paper")
    # Hours of a seed: the recorded step time x the MACs of a training batch, paper over quick, x steps.
    quick, paper = ({s.variant: s for s in resolve(study, scale, 1)} for scale in ("quick", "paper"))
    task = build_task("synthetic_organ", n_cases=4, shape=[16, 32, 32])
    for v in ("pw", "fcn"):
        ratio = proxy_macs(paper[v], task) / proxy_macs(quick[v], task)
        assert ratio == pytest.approx(2 * 8, rel=0.05)  # twice the batch, eight times the voxels
        assert plan.hours[v] == pytest.approx(STEP[v] * ratio * 50 / 3600)
    result, cost = plan.claims.to_dict("records")
    # The seeds are the claim engine's: seeds_needed on the claim's own (case x seed) differences.
    d = paired_difference(runs.per_case, ["fcn"], ["pw"], "mean_dice", ("case", "seed"))
    assert result["seeds_paper"] == int(seeds_needed(d, 10.0))
    assert result["seeds"] == 4 and result["variants"] == "fcn, pw"
    assert result["hours_paper"] == pytest.approx(result["seeds_paper"] * (plan.hours["pw"] + plan.hours["fcn"]))
    assert cost["kind"] == "arithmetic" and cost["seeds_paper"] is None  # exact: no seed decides it
    text = plan_markdown(plan)
    assert "Assumptions: the seed and case variance measured at quick holds at paper" in text
    assert f"is decided at {result['seeds_paper']} seeds: 2 variants" in text
    assert "— (no training decides it)" in text


def test_a_combined_row_trains_its_members():
    from harness.config import StudyCfg

    study = StudyCfg.model_validate(STUDY)
    assert trained_variants(study, "both") == ["pw", "fcn"] and trained_variants(study, 70.0) == []


def test_plan_command_prints_the_plan_and_refuses_what_it_cannot_plan(tmp_path, monkeypatch, capsys):
    _store(tmp_path, monkeypatch)
    assert main(["plan", "s.yaml"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Plan: planned at paper, from its runs at quick") and "h per seed at paper" in out
    assert main(["plan", "s.yaml", "--from", "smoke"]) == 2  # nothing ran at smoke
    assert "--from: no finished runs of planned at smoke" in capsys.readouterr().err
    (tmp_path / "none.yaml").write_text(yaml.safe_dump({**STUDY, "name": "planned", "claims": []}))
    assert main(["plan", "none.yaml"]) == 2
    assert "claims: study planned declares none" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path / "..")
    assert main(["plan", str(tmp_path / "s.yaml"), "--tracking-uri", f"sqlite:///{tmp_path}/absent.db"]) == 2
    assert "no MLflow database" in capsys.readouterr().err and not (tmp_path / "absent.db").exists()
