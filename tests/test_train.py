
import pytest

from harness.config import CostCfg, DataCfg, ModelCfg, ResourcesCfg, TrainCfg, TrialSpec
from harness.train import run_trial


def spec(**train):
    return TrialSpec(
        study="t", scale="smoke", key="k", variant="v", tags={}, seed=0,
        data=DataCfg(dataset="synthetic_brats", params={"n_cases": 4, "shape": [16, 32, 32]}),
        model=ModelCfg(name="gsp_unet", params={"widths": [4, 4, 8, 8, 8], "insert": "CSC",
                                                "groups": [[2, 2, 2], [1, 2, 2], [1, 2, 2], [1, 1, 1], [1, 1, 1]]}),
        train=TrainCfg(patch=[16, 32, 32], epochs=2, steps_per_epoch=2, batch_size=2, **train),
        cost=CostCfg(latency_runs=1), resources=ResourcesCfg(cpu=1))


def test_trial_reports_per_epoch_and_per_case_metrics_with_cost():
    seen = []
    out = run_trial(spec(), report=lambda m, e: seen.append((e, m)))
    assert [e for e, _ in seen] == [0, 1]
    assert seen[0][1]["lr"] > seen[1][1]["lr"]  # poly decay
    assert {"dice_WT", "dice_TC", "dice_ET", "mean_dice", "hd95_WT", "params", "gmacs", "latency_ns_per_voxel",
            "peak_mem_mb"} <= set(out)
    assert len(out["per_case"]) == 1 and out["per_case"][0]["case"].startswith("brats_")
    assert 0 <= out["mean_dice"] <= 100
    assert out["mean_dice"] == pytest.approx(sum(out[f"dice_{r}"] for r in ("WT", "TC", "ET")) / 3)


def test_trial_is_deterministic_on_cpu():
    a, b = [], []
    ra = run_trial(spec(), report=lambda m, e: a.append(m["train_loss"]))
    rb = run_trial(spec(), report=lambda m, e: b.append(m["train_loss"]))
    assert a == b and repr(ra["per_case"]) == repr(rb["per_case"])  # repr: NaN == NaN


def test_diverging_trial_raises():
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        run_trial(spec(lr=1e30))
