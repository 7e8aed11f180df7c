"""Callbacks by name: hooks into the training loop at step, epoch and train end.

A callback factory takes its parameters and returns a ``Callback``. The loop calls
``on_train_start``, ``on_step_end`` after every optimiser step, ``on_epoch_end`` after every
epoch (before that epoch's validation) and ``on_train_end`` once. ``on_train_end`` may
return a module that replaces the trained model for the final evaluation, the cost report
and the saved checkpoint (SWA returns its averaged weights); it must have the same
architecture (the same state-dict keys) so that the checkpoint reloads into the registered
model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from harness.contract import TrainState
from harness.registry import CALLBACKS


@dataclass
class LoopContext:
    """What a callback may read (and, with care, change) during training.

    A procedure that trains beyond the loop (SWA cycles, a flagging run) goes through the trial's
    own parts: ``step(batch, optimizer=None)`` is one training step of the trial's loss (with
    another optimiser: that one is stepped, the trial's schedule and step count are left
    alone); ``case_losses()`` scores every training case; ``keep_cases(ids)`` narrows the
    training set. ``results`` join the trial's final numbers (strings become MLflow tags).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Any
    loader: Any
    state: TrainState
    device: torch.device
    metrics: dict[str, float] = field(default_factory=dict)  # the current epoch's numbers, logged per epoch
    base_lr: float = 0.0
    step: Optional[Callable[..., float]] = None
    case_losses: Optional[Callable[[], dict[str, float]]] = None
    keep_cases: Optional[Callable[[Sequence[str]], None]] = None
    results: dict[str, Any] = field(default_factory=dict)


class Callback:
    def on_train_start(self, ctx: LoopContext) -> None:
        pass

    def on_step_end(self, ctx: LoopContext) -> None:
        pass

    def on_epoch_end(self, ctx: LoopContext) -> None:
        pass

    def on_train_end(self, ctx: LoopContext) -> Optional[nn.Module]:
        return None


def _check_swa(start: float) -> None:
    if not 0 <= start < 1:
        raise ValueError(f"start: {start} is outside [0, 1)")


class SWA(Callback):
    """Stochastic weight averaging (Izmailov et al. 2018) with ``torch.optim.swa_utils``:
    w_swa <- (n w_swa + w) / (n + 1) at the end of every epoch from ``start`` (a fraction of
    the epochs) on; at the end BatchNorm statistics are recomputed over the training loader
    and the averaged network is what gets evaluated, costed and saved."""

    def __init__(self, start: float = 0.75):
        _check_swa(start)
        self.start, self.swa = start, None

    def on_epoch_end(self, ctx: LoopContext) -> None:
        epochs = ctx.state.total_steps // max(1, ctx.state.steps_per_epoch)
        if ctx.state.epoch + 1 > self.start * epochs:
            if self.swa is None:
                self.swa = AveragedModel(ctx.model)  # holds a copy, but averages from the first update on
            self.swa.update_parameters(ctx.model)
            ctx.metrics["swa_models"] = float(self.swa.n_averaged)

    def on_train_end(self, ctx: LoopContext) -> Optional[nn.Module]:
        if self.swa is None:
            return None
        update_bn((b["image"] for b in ctx.loader), self.swa, ctx.device)
        return self.swa.module


@CALLBACKS.register("swa", check=_check_swa)
def swa(start: float = 0.75) -> Callback:
    """Stochastic weight averaging over the last ``1 - start`` of the epochs."""
    return SWA(start)


def train_epoch(ctx: LoopContext, optimizer: Optional[torch.optim.Optimizer] = None) -> int:
    """One pass over the training loader through ``ctx.step``; returns the steps taken."""
    ctx.model.train()
    steps = 0
    for batch in ctx.loader:
        ctx.step(batch, optimizer)
        steps += 1
    return steps


