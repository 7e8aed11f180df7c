import math

import numpy as np
import pytest
import torch

from harness.config import ConfigError, CostCfg, DataCfg, ModelCfg, ResourcesCfg, TrainCfg, TrialSpec, check_train
from harness.data.task import Case, Task
from harness.train import evaluate, run_trial


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
            "peak_mem_mb", "train_peak_mem_mb"} <= set(out)
    assert out["train_peak_mem_mb"] > out["peak_mem_mb"] > 0  # a training pass on the batch keeps activations
    assert len(out["per_case"]) == 1 and out["per_case"][0]["case"].startswith("brats_")
    assert 0 <= out["mean_dice"] <= 100
    assert out["mean_dice"] == pytest.approx(sum(out[f"dice_{r}"] for r in ("WT", "TC", "ET")) / 3)


def test_trial_is_deterministic_on_cpu():
    a, b = [], []
    ra = run_trial(spec(), report=lambda m, e: a.append(m["train_loss"]))
    rb = run_trial(spec(), report=lambda m, e: b.append(m["train_loss"]))
    assert a == b and repr(ra["per_case"]) == repr(rb["per_case"])  # repr: NaN == NaN


def test_cost_is_measured_once_per_architecture_and_time_is_accounted(monkeypatch):
    import harness.train

    calls = []
    real = harness.train.cost_report
    monkeypatch.setattr(harness.train, "cost_report", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(harness.train, "_COSTS", {})
    first = run_trial(spec())
    second = run_trial(spec().model_copy(update={"seed": 1}))  # another seed: same architecture, same cost
    assert len(calls) == 1 and second["latency_ns_per_voxel"] == first["latency_ns_per_voxel"]
    widened = spec().model_copy(update={"model": ModelCfg(name="gsp_unet", params={
        **spec().model.params, "widths": [4, 4, 8, 8, 16]})})
    third = run_trial(widened)
    assert len(calls) == 2 and third["params"] > first["params"]
    # Where the trial's time went, phase by phase.
    parts = [first[f"time_{k}_s"] for k in ("build", "train", "evaluate", "cost")]
    assert all(p >= 0 for p in parts) and first["time_train_s"] > 0 and first["time_evaluate_s"] > 0


def test_diverging_trial_raises():
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        run_trial(spec(lr=1e30))


class _Fixed(torch.nn.Module):
    """Predicts a fixed mask (logits +-10) whatever the input: known confusion counts."""

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("logits", mask.float() * 20 - 10)

    def forward(self, x):
        return self.logits.expand(x.shape[0], *self.logits.shape)


def test_evaluate_counts_sensitivity_specificity_and_empty_conventions():
    ref = np.zeros((2, 4, 8, 8), np.uint8)
    ref[0, :, :4] = 1  # region a: 128 voxels; region b: empty
    pred = torch.zeros(2, 4, 8, 8, dtype=torch.bool)
    pred[0, :, :2] = True  # 64 true positives, no false positive
    pred[0, 0, 6] = True  # 8 false positives
    task = Task("t", 1, ("a", "b"), load=lambda: {"train": [], "val": [Case("c0", np.zeros((1, 4, 8, 8), np.float32), ref)]})
    out = evaluate(_Fixed(pred), task, TrainCfg(patch=[4, 8, 8], batch_size=1), torch.device("cpu"))
    assert out["sens_a"] == pytest.approx(100 * 64 / 128)
    assert out["spec_a"] == pytest.approx(100 * 120 / 128)
    assert out["dice_a"] == pytest.approx(100 * 2 * 64 / (72 + 128))
    assert out["dice_b"] == 100.0 and math.isnan(out["sens_b"]) and out["spec_b"] == 100.0  # both empty
    assert out["hd95_b"] == 0.0  # BraTS convention: both empty is a perfect 0
    from monai.metrics import HausdorffDistanceMetric

    alone = HausdorffDistanceMetric(percentile=95)(pred[None, :1].float(), torch.from_numpy(ref[None, :1]).float())
    assert out["hd95_a"] == pytest.approx(float(alone)) and out["hd95_a"] > 0  # region a's own distance
    # A region the net misses (or invents) scores the volume's diagonal, never drops out of the mean.
    missed = evaluate(_Fixed(torch.zeros_like(pred)), task, TrainCfg(patch=[4, 8, 8], batch_size=1),
                      torch.device("cpu"))
    assert missed["hd95_a"] == pytest.approx(math.sqrt(4 ** 2 + 8 ** 2 + 8 ** 2)) and missed["hd95_b"] == 0.0
    assert missed["mean_hd95"] == pytest.approx(missed["hd95_a"] / 2) and missed["mean_hd95"] > out["mean_hd95"]
    # Worst and best case (Table II's min / max Dice): a second case the net gets right.
    easy = Case("c1", np.zeros((1, 4, 8, 8), np.float32), pred.numpy().astype(np.uint8))
    two = Task("t", 1, ("a", "b"), load=lambda: {"train": [], "val": [task.val[0], easy]})
    both = evaluate(_Fixed(pred), two, TrainCfg(patch=[4, 8, 8], batch_size=1), torch.device("cpu"))
    assert both["min_dice"] == pytest.approx(out["mean_dice"]) and both["max_dice"] == pytest.approx(100.0)
    assert both["min_dice"] < both["mean_dice"] < both["max_dice"]


def test_augmentations_by_name_keep_shapes_and_binary_labels():
    from harness.data import build_task
    from harness.registry import AUGMENTATIONS
    from harness.train import make_loader

    assert {"flip", "scale_intensity", "shift_intensity", "affine"} <= set(AUGMENTATIONS.names())
    task = build_task("synthetic_brats", n_cases=4, shape=[16, 32, 32])
    cfg = TrainCfg(patch=[16, 32, 32], batch_size=2, steps_per_epoch=3, augment=AUGMENTATIONS.names())
    plain = TrainCfg(patch=[16, 32, 32], batch_size=2, steps_per_epoch=3, augment=False)
    aug, ref = (next(iter(make_loader(task, c, 0, torch.device("cpu")))) for c in (cfg, plain))
    assert aug["image"].shape == ref["image"].shape == (2, 4, 16, 32, 32) and aug["label"].shape == (2, 3, 16, 32, 32)
    assert set(torch.unique(aug["label"]).tolist()) <= {0, 1} and not torch.equal(aug["image"], ref["image"])
    assert [a.name for a in TrainCfg(patch=[8, 8, 8], augment=True).augment] == ["flip"]
    with pytest.raises(ConfigError, match="unknown augmentation 'afine'. Did you mean 'affine'"):
        check_train(TrainCfg(patch=[8, 8, 8], augment=["afine"]), "train")
