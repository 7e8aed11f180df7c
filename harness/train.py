"""One training trial, top to bottom: build -> loop (with callbacks) -> evaluate -> save -> cost.

``build_trial(spec)`` is the one place a trial's parts are made from its spec (model, loss,
optimiser, schedule, loader, callbacks, inferer); ``harness run``, ``--dry-run`` and
``harness bench`` all use it, so they cannot silently differ. ``run_trial(spec, report)`` is
all the tuner calls; ``report(metrics, epoch)`` is how per-epoch numbers leave the loop (to
Ray Tune, and from there to MLflow).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Optional

import numpy as np
import torch
from monai.data import DataLoader, Dataset, get_track_meta, set_track_meta
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.metrics.confusion_matrix import compute_confusion_matrix_metric, get_confusion_matrix
from monai.transforms import CenterSpatialCropd, Compose, EnsureTyped, RandSpatialCropd, SpatialPadd
from monai.utils import set_determinism
from torch import nn

from harness.callbacks import Callback, LoopContext
from harness.config import TrainCfg, TrialSpec, import_plugins
from harness.contract import TrainState, as_outputs, out_channels, regions_of
from harness.cost import cost_report
from harness.data import Task, build_task
from harness.inferers import Ensemble, Inferer, build_inferer
from harness.losses import build_loss
from harness.models import build_model
from harness.optim import build_optimizer, build_schedule
from harness.outputs import adapt
from harness.registry import AUGMENTATIONS, CALLBACKS, TARGETS

Report = Callable[[dict[str, float], int], None]
CHECKPOINT = "model.pt"
BEAT_S = 3.0  # seconds between a trial's progress beats (after its first step): the live display's pace


def pick_device(gpu: float) -> torch.device:
    return torch.device("cuda") if gpu > 0 and torch.cuda.is_available() else torch.device("cpu")


def sample_transforms(cfg: TrainCfg, seed: int, random: bool = True) -> Compose:
    """Random crop, the study's augmentations, then its label-derived targets (MONAI).
    ``random=False``: the centre crop and no augmentation (scoring a training case)."""
    keys = ["image", "label"]
    xforms = [SpatialPadd(keys, cfg.patch),
              RandSpatialCropd(keys, cfg.patch, random_size=False) if random else CenterSpatialCropd(keys, cfg.patch)]
    for a in cfg.augment if random else []:
        xforms += AUGMENTATIONS.get(a.name)(keys=keys, **a.params)
    targets = [TARGETS.get(t.name)(**t.params) for t in cfg.targets]
    # Plain tensors into the model: MetaTensor's per-op metadata tracking costs time in every layer.
    xforms += [*targets, EnsureTyped(keys + [x.key for x in targets], track_meta=False)]
    return Compose(xforms).set_random_state(seed)


class PlainDataset(Dataset):
    """MONAI ``Dataset`` whose transforms run on plain tensors (``set_track_meta(False)`` while
    a sample is made, in whichever process makes it). Training needs no metadata, and MONAI's
    MetaTensor bookkeeping was 3/4 of the loading time (``harness bench``, training-step table:
    4.2 -> 1.0 ms per batch of two 16x64x64 crops with flips on 2 cores)."""

    def __getitem__(self, index):
        was = get_track_meta()
        set_track_meta(False)
        try:
            return super().__getitem__(index)
        finally:
            set_track_meta(was)


def make_loader(task: Task, cfg: TrainCfg, seed: int, device: torch.device) -> DataLoader:
    ds = PlainDataset([{"image": c.image, "label": c.label, "id": c.id} for c in task.train], sample_transforms(cfg, seed))
    # Fixed number of iterations per epoch (nnU-Net style), sampling cases with replacement.
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=cfg.steps_per_epoch * cfg.batch_size,
                                             generator=torch.Generator().manual_seed(seed))
    return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                      pin_memory=device.type == "cuda", drop_last=False)


@dataclass
class Trial:
    """Everything one trial trains with, built from its spec by ``build_trial``."""

    spec: TrialSpec
    task: Task
    device: torch.device
    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Any
    scaler: torch.amp.GradScaler
    loader: Optional[DataLoader]
    callbacks: list[Callback]
    inferer: Inferer
    state: TrainState

    @property
    def amp(self) -> bool:
        return self.spec.train.amp and self.device.type == "cuda"

    def context(self) -> LoopContext:
        return LoopContext(self.model, self.optimizer, self.schedule, self.loader, self.state, device=self.device,
                           base_lr=self.spec.train.lr,
                           step=lambda batch, optimizer=None: train_step(self, batch, optimizer),
                           case_losses=lambda: case_losses(self), keep_cases=lambda ids: keep_cases(self, ids))


def trial_model(spec: TrialSpec, task: Task) -> nn.Module:
    """The trial's network, sized for its task (channels, regions) and patch."""
    cfg = spec.train
    model = build_model(spec.model.name, in_channels=task.in_channels, input_size=cfg.patch, output=cfg.output,
                        out_channels=out_channels(len(task.regions), cfg.output), cpu_conv_route=cfg.cpu_conv_route,
                        **spec.model.params)
    return adapt(model, cfg.outputs.name, cfg.outputs.params)  # the net's output convention -> the contract


def build_trial(spec: TrialSpec, task: Task | None = None, device: torch.device | None = None,
                loader: bool = True) -> Trial:
    """Model, loss, optimiser, schedule, scaler, loader, callbacks and inferer of ``spec``.

    The order is fixed (model first after the data) so that a seed gives the same weights.
    ``loader=False`` skips the data (sizing a trial needs no cases).
    """
    import_plugins(spec.plugins)
    cfg = spec.train
    device = device or pick_device(spec.resources.gpu)
    task = task or build_task(spec.data.dataset, **spec.data.params)
    model = trial_model(spec, task).to(device)
    loss_fn = build_loss(cfg.loss, cfg.output, cfg.deep_supervision, cfg.aux_losses).to(device)
    if loader and hasattr(loss_fn, "fit"):  # statistics of the training labels (class weights)
        loss_fn.fit(task.train)
    optimizer = build_optimizer(model, cfg)
    total = cfg.epochs * cfg.steps_per_epoch
    schedule = build_schedule(optimizer, cfg, total)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")
    return Trial(spec, task, device, model, loss_fn, optimizer=optimizer, schedule=schedule, scaler=scaler,
                 loader=make_loader(task, cfg, spec.seed, device) if loader else None,
                 callbacks=[CALLBACKS.get(c.name)(**c.params) for c in cfg.callbacks],
                 inferer=build_inferer(cfg.inferer, cfg.patch, cfg.batch_size, cfg.output),
                 state=TrainState(total_steps=total, steps_per_epoch=cfg.steps_per_epoch))


def train_step(t: Trial, batch: dict[str, Any], optimizer: torch.optim.Optimizer | None = None) -> float:
    """One optimiser step on ``batch`` (image, label, derived targets); returns the loss.

    With ``optimizer`` (a procedure's own, e.g. SWA cycles) that one is stepped and the trial's
    schedule and step count stay where training left them.
    """
    batch = {k: v.to(t.device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    batch["label"] = batch["label"].float()
    with torch.autocast(t.device.type, enabled=t.amp):
        loss = t.loss_fn(as_outputs(t.model(batch["image"])), batch, t.state)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite training loss ({loss.item()})")
    opt = optimizer or t.optimizer
    opt.zero_grad(set_to_none=True)
    t.scaler.scale(loss).backward()
    t.scaler.step(opt)
    t.scaler.update()
    if optimizer is None:
        t.schedule.step()
        t.state.step += 1
    return loss.item()


@torch.no_grad()
def case_losses(t: Trial) -> dict[str, float]:
    """The training loss of each training case on its centre patch-sized crop, the model as
    trained (a copy in training mode, so auxiliary heads are scored and no norm statistics move).

    What patient removal ranks (Henry et al. Sec. 2.6: "cases with high training loss at the
    end of the training procedure").
    """
    crop = sample_transforms(t.spec.train, t.spec.seed, random=False)
    model = copy.deepcopy(t.model).train()
    kept = {d["id"] for d in t.loader.dataset.data}
    out = {}
    for case in t.task.train:
        if case.id not in kept:
            continue
        d = crop({"image": case.image, "label": case.label})
        batch = {k: v[None].to(t.device) for k, v in d.items()}
        batch["label"] = batch["label"].float()
        with torch.autocast(t.device.type, enabled=t.amp):
            out[case.id] = float(t.loss_fn(as_outputs(model(batch["image"])), batch, t.state))
    return out


def keep_cases(t: Trial, ids) -> None:
    """Train on the cases ``ids`` only from now on (the sampler draws from what is left)."""
    ids = set(ids)
    unknown = ids - {d["id"] for d in t.loader.dataset.data}
    if unknown:
        raise ValueError(f"keep_cases: no training cases {sorted(unknown)}")
    if not ids:
        raise ValueError("keep_cases: no training case would be left")
    t.loader.dataset.data = [d for d in t.loader.dataset.data if d["id"] in ids]


def hd95(pred: torch.Tensor, ref: torch.Tensor) -> list[float]:
    """HD95 in voxels of each region of binary masks (1, E, D, H, W): MONAI's
    ``HausdorffDistanceMetric`` over all regions at once, then the BraTS convention where a set
    is empty (MONAI gives NaN or inf there): 0 when both are, the volume's diagonal when one is
    (``evaluate``)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # MONAI warns for each empty set; the convention below decides
        dist = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(pred, ref)[0]
    diagonal = float(math.sqrt(sum(s * s for s in pred.shape[2:])))
    out = []
    for d, p, r in zip(dist.tolist(), pred[0], ref[0]):
        empty_p, empty_r = not bool(p.any()), not bool(r.any())
        out.append(0.0 if empty_p and empty_r else diagonal if empty_p or empty_r else float(d))
    return out


@torch.no_grad()
def evaluate(model: nn.Module | list[nn.Module], task: Task, cfg: TrainCfg, device: torch.device,
             inferer: Inferer | None = None) -> dict[str, Any]:
    """The inferer over each whole validation volume; metrics kept per case. A list of models
    is evaluated as an ensemble (each through the inferer, probabilities averaged).

    Dice, sensitivity and specificity are in percent. Empty sets: Dice is 100 when
    prediction and reference are both empty (0 when only one is); sensitivity is NaN when
    the reference is empty and specificity NaN when it fills the volume; NaNs are left out of
    the means. HD95 (voxels) follows the BraTS challenge's convention for empty sets: 0 when
    both are empty, the volume's diagonal (the largest distance it holds) when only one is, so
    that a net which misses a region scores its worst distance instead of dropping out of the
    mean (which would make missing a region look better than finding it roughly).
    """
    inferer = inferer or build_inferer(cfg.inferer, cfg.patch, cfg.batch_size, cfg.output)
    models = model if isinstance(model, list) else [model]
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    if len(models) > 1:
        inferer = Ensemble(inferer, models)
    names = list(task.eval_regions)  # what metrics are reported under (Task.evaluate)
    per_case = []
    for case in task.val:
        x = torch.from_numpy(case.image)[None].to(device)
        with torch.autocast(device.type, enabled=cfg.amp and device.type == "cuda"):
            probs = inferer(x, models[0])
        # Metrics on the task's evaluation regions (unions of label channels, e.g. BraTS WT/TC/ET
        # from the classes a multi-class net predicts).
        pred = task.merge(regions_of(probs.float(), cfg.output).cpu())
        ref = task.merge(torch.from_numpy(case.label)[None].float())
        per_case.append(case_metrics(case.id, pred, ref, names))
    for m, training in zip(models, was_training):
        m.train(training)
    return summarise_cases(per_case, names)


def case_metrics(case_id: str, pred: torch.Tensor, ref: torch.Tensor, names: list[str]) -> dict[str, Any]:
    """One case's metrics (``evaluate``'s conventions) from binary masks (1, E, D, H, W) of the
    evaluation regions ``names``."""
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(pred, ref)[0].tolist()
    hd = hd95(pred, ref)
    confusion = get_confusion_matrix(pred, ref, include_background=True)  # MONAI: NaN where 0/0
    sens = compute_confusion_matrix_metric("sensitivity", confusion)[0].tolist()
    spec = compute_confusion_matrix_metric("specificity", confusion)[0].tolist()
    row: dict[str, Any] = {"case": case_id}
    for name, d, h, se, sp in zip(names, dice, hd, sens, spec):
        row[f"dice_{name}"] = 100.0 * d
        row[f"hd95_{name}"] = h
        row[f"sens_{name}"] = 100.0 * se
        row[f"spec_{name}"] = 100.0 * sp
    row["mean_dice"] = float(np.mean([row[f"dice_{n}"] for n in names]))  # pairs for the report's tests
    row["mean_hd95"] = float(np.mean([row[f"hd95_{n}"] for n in names]))
    return row


def summarise_cases(per_case: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Means over cases (NaNs left out), the worst and best case, and ``per_case`` itself."""
    out: dict[str, Any] = {}
    for name in names:
        out[f"dice_{name}"] = float(np.mean([r[f"dice_{name}"] for r in per_case]))
        for m in ("hd95", "sens", "spec"):
            vals = [r[f"{m}_{name}"] for r in per_case if not math.isnan(r[f"{m}_{name}"])]
            out[f"{m}_{name}"] = float(np.mean(vals)) if vals else float("nan")
    out["mean_dice"] = float(np.mean([out[f"dice_{n}"] for n in names]))
    out["mean_hd95"] = float(np.mean([out[f"hd95_{n}"] for n in names]))
    # The worst and best case (pancreas papers' "min / max Dice", ConResNet Table II).
    out["min_dice"] = float(min(r["mean_dice"] for r in per_case))
    out["max_dice"] = float(max(r["mean_dice"] for r in per_case))
    out["per_case"] = per_case
    return out


def save_checkpoint(path: Path, model: nn.Module, t: Trial) -> int:
    """The final weights and what rebuilds them; loadable with ``torch.load(weights_only=True)``.

    Fails if the weights do not fit the registered model (a callback that swapped in another
    architecture), so that every saved checkpoint reloads. Returns the file size in bytes.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = {"format": "harness-checkpoint-1", "model": t.spec.model.name,
            "in_channels": t.task.in_channels, "out_channels": out_channels(len(t.task.regions), t.spec.train.output),
            "regions": list(t.task.regions), "output": t.spec.train.output, "trial": t.spec.model_dump_json(),
            "state_dict": state}
    load_model(ckpt)  # raises if the weights do not fit
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path.stat().st_size


def load_model(ckpt: dict | str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The registered model of a checkpoint (a dict or a ``model.pt`` path) with its weights, in eval mode.

    The model must be registered already: a checkpoint never chooses what is imported (its
    stored plugin list is data from a file); the study given on the command line imports its
    plugins (``harness evaluate``)."""
    if not isinstance(ckpt, dict):
        ckpt = torch.load(ckpt, map_location="cpu", weights_only=True)
    spec = TrialSpec.model_validate_json(ckpt["trial"])
    model = build_model(ckpt["model"], in_channels=ckpt["in_channels"], out_channels=ckpt["out_channels"],
                        input_size=spec.train.patch, output=spec.train.output,
                        cpu_conv_route=spec.train.cpu_conv_route, **spec.model.params)
    adapt(model, spec.train.outputs.name, spec.train.outputs.params)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"checkpoint weights do not fit model {ckpt['model']!r}: {str(e)[:500]}") from None
    return model.to(device).eval()


_COSTS: dict[str, dict[str, Any]] = {}


def trial_cost(t: Trial, evaluated: nn.Module) -> dict[str, Any]:
    """Cost of the trial's architecture: inference as evaluated (the trial's inferer on one
    cost-input-sized window) and, with latency on, the peak memory of a training pass on the
    batch (what the OBELISK paper's memory figures measure).

    Measured once per architecture in a process: seeds of a variant differ only in weights,
    and Ray Tune hands one worker trial after trial (``reuse_actors``).
    """
    spec, cfg = t.spec, t.spec.train
    key = json.dumps([spec.model.model_dump(), spec.data.model_dump(), spec.cost.model_dump(), cfg.patch, cfg.output,
                      cfg.batch_size, cfg.inferer.model_dump(), [c.model_dump() for c in cfg.callbacks],
                      type(evaluated).__name__, str(t.device)], sort_keys=True, default=str)
    if key not in _COSTS:
        _COSTS[key] = cost_as_run(spec, cfg, t.task.in_channels, [evaluated])
    return dict(_COSTS[key])


def cost_as_run(spec: TrialSpec, cfg: TrainCfg, in_channels: int, models: list[nn.Module],
                train_memory: bool = True) -> dict[str, Any]:
    """Inference cost as run: the inferer ``cfg.inferer`` (every TTA view) on one window of
    ``spec.cost.input`` (else one patch), each model of an ensemble counted; with
    ``train_memory`` and latency on, the peak memory of a training pass on the batch too.
    A trial's cost (``trial_cost``) and a re-evaluation's (``harness.evaluate``) both."""
    cost_input = spec.cost.input or [1, in_channels, *cfg.patch]
    window = build_inferer(cfg.inferer, cost_input[2:], cost_input[0], cfg.output)
    cost = cost_report(models[0], cost_input, latency=spec.cost.latency, runs=spec.cost.latency_runs,
                       inferer=Ensemble(window, models) if len(models) > 1 else window,
                       train_shape=[cfg.batch_size, in_channels, *cfg.patch] if train_memory else None)
    return {k: v for k, v in cost.items() if k != "macs_by_op"}


def _train_epoch(t: Trial, ctx: LoopContext, after_step: Callable[[list[float], float], None]
                 ) -> tuple[list[float], float]:
    """One epoch's training steps, the callbacks after each; returns the losses and the seconds
    it took. ``after_step(losses, seconds so far)``."""
    t.model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    for batch in t.loader:
        losses.append(train_step(t, batch))
        for cb in t.callbacks:
            cb.on_step_end(ctx)
        after_step(losses, time.perf_counter() - t0)
    return losses, time.perf_counter() - t0


class _Pulse:
    """``run_trial``'s ``beat``: the loop's progress after the first step, then every ``BEAT_S``
    seconds of ``clock``; ``epoch`` and ``train_s`` (the epochs before this one) kept by the loop."""

    def __init__(self, beat: Callable[[dict[str, float]], None] | None, clock: Callable[[], float], steps: int,
                 build_s: float):
        self.beat, self.clock, self.steps, self.build_s = beat, clock, steps, build_s
        self.done, self.epoch, self.train_s, self.last = 0, 0, 0.0, None

    def __call__(self, losses: list[float], seconds: float) -> None:
        self.done += 1
        if self.beat is None or (self.last is not None and self.clock() - self.last < BEAT_S):
            return
        self.last = self.clock()
        self.beat({"step": self.done, "steps": self.steps, "epoch": self.epoch, "loss": float(np.mean(losses)),
                   "train_s": self.train_s + seconds, "build_s": self.build_s})


def run_trial(spec: TrialSpec, report: Report = lambda m, e: None, threads: int | None = None,
              checkpoint_dir: Path | None = None, rungs: Collection[int] = (),
              rung_cases: int | None = None, beat: Callable[[dict[str, float]], None] | None = None,
              clock: Callable[[], float] = time.perf_counter, rung_cost: bool = True) -> dict[str, Any]:
    """Train and evaluate one trial; returns final metrics, per-case metrics and cost.

    With ``checkpoint_dir`` the final weights (those evaluated: a callback may have replaced
    the model) are saved there as ``model.pt``. ``time_{build,train,evaluate,cost}_s`` say
    where the trial's time went (build: data and model; cost: saving, cost and memory).

    ``rungs``: epochs (counted from 1) at which a multi-fidelity scheduler decides whether the
    trial goes on. The trial validates there too (on its first ``rung_cases`` validation cases
    only, when given: a rung needs a ranking, not the final score); with ``rung_cost`` the
    architecture's cost is measured before training and sent with those epochs' numbers (a
    scheduler that ranks by a measured cost, latency say; exact costs it counts itself).
    Every epoch's numbers carry ``time_cpu_s``, the trial's CPU time so far: what a search
    paid for it, which other work on a busy machine does not inflate as it does wall time.

    ``beat(progress)``: the loop's progress (``step``, ``steps``, ``epoch``, ``loss``, ``train_s``,
    ``build_s``) after the first step and then every ``BEAT_S`` seconds, for a live display and
    its ETA; nothing is logged from it.
    """
    # Each trial owns its CPU share; torch would otherwise grab every core per trial.
    torch.set_num_threads(max(1, int(threads or spec.resources.cpu)))
    cpu0 = time.process_time()
    set_determinism(seed=spec.seed)
    start = time.perf_counter()
    t = build_trial(spec)
    phase = {"build": time.perf_counter() - start, "evaluate": 0.0}  # where the trial's time goes
    cfg = t.spec.train
    ctx = t.context()
    rungs = set(rungs)
    early_cost = trial_cost(t, t.model) if rungs and rung_cost else {}  # the cache serves the end's call
    rung_task = (dataclasses.replace(t.task, _split={"train": t.task.train, "val": t.task.val[:rung_cases]})
                 if rungs and rung_cases else t.task)
    for cb in t.callbacks:
        cb.on_train_start(ctx)

    final: dict[str, Any] = {}
    evaluated = t.model
    step_times: list[float] = []
    start = time.perf_counter()
    pulse = _Pulse(beat, clock, cfg.epochs * cfg.steps_per_epoch, phase["build"])
    for epoch in range(cfg.epochs):
        t.state.epoch = pulse.epoch = epoch
        losses, seconds = _train_epoch(t, ctx, pulse)
        pulse.train_s += seconds
        step_times.append(seconds / max(1, len(losses)))
        ctx.metrics = {"train_loss": float(np.mean(losses)), "lr": t.schedule.get_last_lr()[0],
                       "step_time_s": step_times[-1], "time_cpu_s": time.process_time() - cpu0}
        for cb in t.callbacks:
            cb.on_epoch_end(ctx)
        last = epoch + 1 == cfg.epochs
        if last:  # a callback may hand over the model to evaluate, cost and save (SWA)
            for cb in t.callbacks:
                evaluated = cb.on_train_end(ctx) or evaluated
        rung = epoch + 1 in rungs and not last
        if (epoch + 1) % cfg.val_every == 0 or last or rung:
            t_eval = time.perf_counter()
            final = evaluate(evaluated if last else t.model, rung_task if rung else t.task, cfg, t.device, t.inferer)
            phase["evaluate"] += time.perf_counter() - t_eval
            ctx.metrics.update({k: v for k, v in final.items() if k != "per_case"})
            if rung:
                ctx.metrics.update({k: v for k, v in early_cost.items() if isinstance(v, (int, float))})
        report(dict(ctx.metrics), epoch)
    phase["train"] = time.perf_counter() - start - phase["evaluate"]
    start = time.perf_counter()
    if checkpoint_dir is not None:
        final["checkpoint_bytes"] = save_checkpoint(Path(checkpoint_dir) / CHECKPOINT, evaluated, t)
    final.update(trial_cost(t, evaluated))
    phase["cost"] = time.perf_counter() - start
    return {**final, "step_time_s": float(np.median(step_times)), **{f"time_{k}_s": v for k, v in phase.items()},
            "time_cpu_s": time.process_time() - cpu0, "device": str(t.device),
            **ctx.results}  # what the procedures report (removed cases, SWA snapshots)
