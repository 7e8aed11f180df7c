"""One training trial, top to bottom: data -> model -> SGD/poly loop -> evaluation -> cost.

``run_trial(spec, report)`` is all the tuner calls; ``report(metrics, epoch)`` is
how per-epoch numbers leave the loop (to Ray Tune, and from there to MLflow).
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.metrics.confusion_matrix import compute_confusion_matrix_metric, get_confusion_matrix
from monai.transforms import (Compose, EnsureTyped, RandAffined, RandFlipd, RandScaleIntensityd,
                              RandShiftIntensityd, RandSpatialCropd, SpatialPadd)
from monai.utils import set_determinism

from harness.config import TrainCfg, TrialSpec
from harness.cost import cost_report
from harness.data import Task, build_task
from harness.losses import build_loss
from harness.models import build_model

Report = Callable[[dict[str, float], int], None]


def pick_device(gpu: float) -> torch.device:
    return torch.device("cuda") if gpu > 0 and torch.cuda.is_available() else torch.device("cpu")


# The papers' augmentations (MONAI), applied after the random crop, by the names
# config.AUGMENTATIONS allows; ranges are the usual nnU-Net-style ones.
AUGMENTATIONS: dict[str, Callable[[list[str]], list]] = {
    "flip": lambda keys: [RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(3)],
    "scale_intensity": lambda keys: [RandScaleIntensityd(keys[:1], factors=0.1, prob=0.5)],
    "shift_intensity": lambda keys: [RandShiftIntensityd(keys[:1], offsets=0.1, prob=0.5)],
    # Rotation up to 15 degrees and scaling 0.85-1.15; labels nearest so they stay binary.
    "affine": lambda keys: [RandAffined(keys, prob=0.2, rotate_range=[0.26] * 3, scale_range=[0.15] * 3,
                                        mode=("bilinear", "nearest"), padding_mode="zeros")],
}


def make_loader(task: Task, cfg: TrainCfg, seed: int, device: torch.device) -> DataLoader:
    keys = ["image", "label"]
    xforms = [SpatialPadd(keys, cfg.patch), RandSpatialCropd(keys, cfg.patch, random_size=False)]
    for name in cfg.augment:
        xforms += AUGMENTATIONS[name](keys)
    # Plain tensors into the model: MetaTensor's per-op metadata tracking costs time in every layer.
    xforms.append(EnsureTyped(keys, track_meta=False))
    transform = Compose(xforms).set_random_state(seed)
    ds = Dataset([{"image": c.image, "label": c.label} for c in task.train], transform)
    # Fixed number of iterations per epoch (nnU-Net style), sampling cases with replacement.
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=cfg.steps_per_epoch * cfg.batch_size,
                                             generator=torch.Generator().manual_seed(seed))
    return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                      pin_memory=device.type == "cuda", drop_last=False)


def make_optimizer(model: torch.nn.Module, cfg: TrainCfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_step(model, batch, loss_fn, opt, sched, scaler, device, amp: bool) -> float:
    x = batch["image"].to(device, non_blocking=True)
    y = batch["label"].to(device, non_blocking=True).float()
    with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
        out = model(x)
        loss = loss_fn(out if isinstance(out, (list, tuple)) else [out], y)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite training loss ({loss.item()})")
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    sched.step()
    return loss.item()


@torch.no_grad()
def evaluate(model, task: Task, cfg: TrainCfg, device: torch.device) -> dict[str, Any]:
    """Sliding-window inference over whole validation volumes; metrics kept per case.

    Dice, sensitivity and specificity are in percent. Empty sets: Dice is 100 when
    prediction and reference are both empty (0 when only one is); sensitivity is NaN when
    the reference is empty and specificity NaN when it fills the volume; HD95 (voxels) is
    NaN when either is empty. NaNs are left out of the means.
    """
    model.eval()
    dice_m = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    hd_m = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")

    def predictor(x):
        out = model(x)
        return out[0] if isinstance(out, (list, tuple)) else out

    per_case = []
    for case in task.val:
        x = torch.from_numpy(case.image)[None].to(device)
        with torch.autocast(device.type, enabled=cfg.amp and device.type == "cuda"):
            logits = sliding_window_inference(x, cfg.patch, cfg.batch_size, predictor, overlap=cfg.sw_overlap)
        pred = (torch.sigmoid(logits.float()) > 0.5).float().cpu()
        ref = torch.from_numpy(case.label)[None].float()
        dice = dice_m(pred, ref)[0].tolist()
        with np.errstate(all="ignore"):
            hd = [float("nan") if (p.sum() == 0 or r.sum() == 0) else float(hd_m(p[None, None], r[None, None])[0, 0])
                  for p, r in zip(pred[0], ref[0])]
        confusion = get_confusion_matrix(pred, ref, include_background=True)  # MONAI: NaN where 0/0
        sens = compute_confusion_matrix_metric("sensitivity", confusion)[0].tolist()
        spec = compute_confusion_matrix_metric("specificity", confusion)[0].tolist()
        row = {"case": case.id}
        for name, d, h, se, sp in zip(task.regions, dice, hd, sens, spec):
            row[f"dice_{name}"] = 100.0 * d
            row[f"hd95_{name}"] = h
            row[f"sens_{name}"] = 100.0 * se
            row[f"spec_{name}"] = 100.0 * sp
        row["mean_dice"] = float(np.mean([row[f"dice_{n}"] for n in task.regions]))  # pairs for the report's tests
        per_case.append(row)
    model.train()
    out: dict[str, Any] = {}
    for name in task.regions:
        out[f"dice_{name}"] = float(np.mean([r[f"dice_{name}"] for r in per_case]))
        for m in ("hd95", "sens", "spec"):
            vals = [r[f"{m}_{name}"] for r in per_case if not math.isnan(r[f"{m}_{name}"])]
            out[f"{m}_{name}"] = float(np.mean(vals)) if vals else float("nan")
    out["mean_dice"] = float(np.mean([out[f"dice_{n}"] for n in task.regions]))
    hds = [out[f"hd95_{n}"] for n in task.regions if not math.isnan(out[f"hd95_{n}"])]
    out["mean_hd95"] = float(np.mean(hds)) if hds else float("nan")
    out["per_case"] = per_case
    return out


def run_trial(spec: TrialSpec, report: Report = lambda m, e: None, threads: int | None = None) -> dict[str, Any]:
    """Train and evaluate one trial; returns final metrics, per-case metrics and cost."""
    # Each trial owns its CPU share; torch would otherwise grab every core per trial.
    torch.set_num_threads(max(1, int(threads or spec.resources.cpu)))
    set_determinism(seed=spec.seed)
    device = pick_device(spec.resources.gpu)
    cfg = spec.train

    task = build_task(spec.data.dataset, **spec.data.params)
    model = build_model(spec.model.name, in_channels=task.in_channels, out_channels=len(task.regions),
                        **spec.model.params).to(device)
    loss_fn = build_loss(cfg.loss)
    opt = make_optimizer(model, cfg)
    total = cfg.epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=total, power=cfg.poly_power)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")
    loader = make_loader(task, cfg, spec.seed, device)

    final: dict[str, Any] = {}
    step_times: list[float] = []
    for epoch in range(cfg.epochs):
        model.train()
        losses = []
        t0 = time.perf_counter()
        for batch in loader:
            losses.append(train_step(model, batch, loss_fn, opt, sched, scaler, device, cfg.amp))
        step_times.append((time.perf_counter() - t0) / max(1, len(losses)))
        metrics: dict[str, Any] = {"train_loss": float(np.mean(losses)), "lr": sched.get_last_lr()[0],
                                   "step_time_s": step_times[-1]}
        if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs:
            final = evaluate(model, task, cfg, device)
            metrics.update({k: v for k, v in final.items() if k != "per_case"})
        report(metrics, epoch)

    cost_input = spec.cost.input or [1, task.in_channels, *cfg.patch]
    cost = cost_report(model, cost_input, latency=spec.cost.latency, runs=spec.cost.latency_runs)
    final.update({k: v for k, v in cost.items() if k != "macs_by_op"})
    final["step_time_s"] = float(np.median(step_times))
    final["device"] = str(device)
    return final
