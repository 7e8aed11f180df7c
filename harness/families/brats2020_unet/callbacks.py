"""BraTS 2020's training procedures: self-ensembling (Sec. 2.5) and patient removal (Sec. 2.6)."""
from __future__ import annotations

import copy
import time
from typing import Optional

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from harness.callbacks import Callback, LoopContext, train_epoch
from harness.registry import CALLBACKS


def _check_self_ensemble(cycles: int, cycle_epochs: int, every: int, lr_factor: float, t_max: Optional[int]) -> None:
    for name, v in (("cycles", cycles), ("cycle_epochs", cycle_epochs), ("every", every)):
        if v < 1:
            raise ValueError(f"{name}: must be >= 1, got {v}")
    if every > cycle_epochs:
        raise ValueError(f"every: {every} is longer than a cycle ({cycle_epochs} epochs): no snapshot would be taken")
    if lr_factor <= 0:
        raise ValueError(f"lr_factor: must be > 0, got {lr_factor}")
    if t_max is not None and t_max < 1:
        raise ValueError(f"t_max: must be >= 1, got {t_max}")


class SelfEnsemble(Callback):
    """BraTS 2020 self-ensembling (Henry et al. Sec. 2.5; the authors' ``train.py``), a fast-SWA
    variant (Athiwaratkun et al. 2019) run after training:

        w_avg = (1 / S) sum_s w_s,  S = 1 + cycles * floor(cycle_epochs / every)

    w_1 is the final model; then ``cycles`` cycles of ``cycle_epochs`` epochs, each with a fresh
    Adam (no weight decay) at ``lr_factor`` x the trial's lr and cosine annealing over ``t_max``
    epochs (stepped per epoch; the code's T_max = cycle_epochs + 10, so the lr never reaches 0),
    a snapshot every ``every`` epochs. Weights are averaged by ``torch.optim.swa_utils``;
    BatchNorm statistics are recomputed over the training loader (GroupNorm and InstanceNorm
    keep none). The averaged model is evaluated, costed and saved.

    The code's defaults: 5 cycles of 30 epochs, a snapshot every 3: 51 snapshots, 150 epochs on
    top of 200 (the paper's text says the same schedule).
    """

    def __init__(self, cycles: int = 5, cycle_epochs: int = 30, every: int = 3, lr_factor: float = 0.5,
                 t_max: Optional[int] = None):
        _check_self_ensemble(cycles, cycle_epochs, every, lr_factor, t_max)
        self.cycles, self.cycle_epochs, self.every, self.lr_factor = cycles, cycle_epochs, every, lr_factor
        self.t_max = cycle_epochs + 10 if t_max is None else t_max

    def on_train_end(self, ctx: LoopContext) -> Optional[nn.Module]:
        t0 = time.perf_counter()
        model = ctx.model
        avg = AveragedModel(model)
        avg.update_parameters(model)  # the final model is the first snapshot
        steps = 0
        for _ in range(self.cycles):
            opt = torch.optim.Adam(model.parameters(), lr=ctx.base_lr * self.lr_factor, weight_decay=0.0)
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.t_max)
            for epoch in range(self.cycle_epochs):
                steps += train_epoch(ctx, opt)
                cosine.step()
                if (epoch + 1) % self.every == 0:
                    avg.update_parameters(model)
        update_bn((b["image"] for b in ctx.loader), avg, ctx.device)
        ctx.results.update({"swa_snapshots": float(avg.n_averaged), "swa_steps": float(steps),
                            "swa_time_s": time.perf_counter() - t0})
        return avg.module


@CALLBACKS.register("self_ensemble", check=_check_self_ensemble)
def self_ensemble(cycles: int = 5, cycle_epochs: int = 30, every: int = 3, lr_factor: float = 0.5,
                  t_max: Optional[int] = None) -> Callback:
    """BraTS 2020 self-ensembling: snapshots of SWA cycles after training, averaged (``SelfEnsemble``)."""
    return SelfEnsemble(cycles, cycle_epochs, every, lr_factor, t_max)


def _check_patient_removal(fraction: float, count: Optional[int]) -> None:
    if count is not None and count < 1:
        raise ValueError(f"count: must be >= 1, got {count}")
    if count is None and not 0 < fraction < 1:
        raise ValueError(f"fraction: {fraction} is outside (0, 1)")


class PatientRemoval(Callback):
    """Patient removal (Henry et al. Sec. 2.6, Table 2 "+ Patients removal"): a flagging run
    trains the trial's recipe once; each training case is scored by its loss under the trained
    model (``LoopContext.case_losses``); the ``fraction`` (or ``count``) with the highest loss
    are dropped; the trial then trains again from its initial weights, optimiser and schedule
    on the cases left. The removed ids are logged (``result.removed_cases``).

    The paper flags cases from earlier runs and gives no number; the flagging run here is the
    same recipe and seed, and the amount is the study's choice. Training costs twice the steps.
    """

    def __init__(self, fraction: float = 0.05, count: Optional[int] = None):
        _check_patient_removal(fraction, count)
        self.fraction, self.count = fraction, count

    def on_train_start(self, ctx: LoopContext) -> None:
        t0 = time.perf_counter()
        saved = [copy.deepcopy(x.state_dict()) for x in (ctx.model, ctx.optimizer, ctx.schedule)]
        epochs = ctx.state.total_steps // max(1, ctx.state.steps_per_epoch)
        for _ in range(epochs):
            train_epoch(ctx)
        losses = ctx.case_losses()
        n = self.count if self.count is not None else max(1, round(self.fraction * len(losses)))
        if n >= len(losses):
            raise ValueError(f"patient_removal: removing {n} of {len(losses)} training cases leaves none")
        removed = sorted(losses, key=lambda k: (-losses[k], k))[:n]
        for x, state in zip((ctx.model, ctx.optimizer, ctx.schedule), saved):
            x.load_state_dict(state)
        ctx.state.step = 0
        ctx.keep_cases([k for k in losses if k not in removed])
        ctx.results.update({"removed_cases": ",".join(removed), "removed_count": float(n),
                            "removed_loss_min": min(losses[k] for k in removed),
                            "kept_loss_max": max((v for k, v in losses.items() if k not in removed)),
                            "flagging_time_s": time.perf_counter() - t0})


@CALLBACKS.register("patient_removal", check=_check_patient_removal)
def patient_removal(fraction: float = 0.05, count: Optional[int] = None) -> Callback:
    """Drop the training cases whose loss stays highest after a flagging run, then train again."""
    return PatientRemoval(fraction, count)
