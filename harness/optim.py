"""Optimisers and learning-rate schedules by name.

An optimiser factory takes ``params`` (parameter groups), ``lr`` and ``weight_decay``
(injected from ``train.lr`` / ``train.weight_decay``, which searches sample) plus its own
parameters. A schedule factory takes ``optimizer`` and ``total_steps`` (injected) plus its
own, and is stepped once per optimiser step.

``train.param_groups`` gives some parameters their own settings, e.g. OBELISK's offsets:
``[{match: "offset", lr_scale: 10}]`` (regular expression on the parameter's name; the first
group that matches takes it; the rest keep the study's settings).
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import torch
from torch import nn

from harness.registry import OPTIMIZERS, SCHEDULES

OPTIMIZER_INJECTED = ("params", "lr", "weight_decay")
SCHEDULE_INJECTED = ("optimizer", "total_steps")


@OPTIMIZERS.register("sgd")
def sgd(params, lr: float, weight_decay: float, momentum: float = 0.9, nesterov: bool = False):
    """SGD with momentum (GSP-Conv Sec. 3: lr 0.01, momentum 0.9)."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


@OPTIMIZERS.register("adam")
def adam(params, lr: float, weight_decay: float, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8):
    """Adam (Distill DSM: lr 1e-3)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps)


@OPTIMIZERS.register("adamw")
def adamw(params, lr: float, weight_decay: float, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8):
    """AdamW (decoupled weight decay)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps)


@SCHEDULES.register("poly")
def poly(optimizer, total_steps: int, power: float = 0.9):
    """lr * (1 - step / total) ** power (GSP-Conv Sec. 3, nnU-Net)."""
    return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=total_steps, power=power)


@SCHEDULES.register("constant")
def constant(optimizer, total_steps: int):
    """The learning rate as given, throughout (Distill DSM's Adam)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


@SCHEDULES.register("cosine")
def cosine(optimizer, total_steps: int, eta_min: float = 0.0):
    """Cosine annealing from lr to ``eta_min`` over the run."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=eta_min)


def _check_flat(flat: float) -> None:
    if not 0 <= flat < 1:
        raise ValueError(f"train.schedule.params.flat: {flat} is outside [0, 1)")


@SCHEDULES.register("flat_cosine", check=_check_flat)
def flat_cosine(optimizer, total_steps: int, flat: float = 0.5):
    """lr for the first ``flat`` of the run, then cosine annealing to 0 over the rest: BraTS
    2020's pipeline A (Henry et al. Sec. 2.5, "a cosine decay after 100 epochs" of 200).
    PyTorch's ``SequentialLR`` of ``ConstantLR`` (factor 1) and ``CosineAnnealingLR``."""
    _check_flat(flat)
    start = int(flat * total_steps)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - start))
    if start == 0:
        return cosine
    hold = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=start)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [hold, cosine], milestones=[start])


def _check_exponential(gamma: float, every: int) -> None:
    if not 0 < gamma <= 1 or int(every) != every or every < 1:
        raise ValueError(f"train.schedule.params: need 0 < gamma <= 1 and a positive integer every, "
                         f"got gamma={gamma}, every={every}")


@SCHEDULES.register("exponential", check=_check_exponential)
def exponential(optimizer, total_steps: int, gamma: float = 0.99, every: int = 1):
    """lr * gamma ** (step // every) (PyTorch's ``StepLR``): OBELISK-Net's ExponentialLR(0.99)
    per epoch is ``every`` = the study's steps per epoch."""
    _check_exponential(gamma, every)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(every), gamma=gamma)


def param_groups(model: nn.Module, lr: float, weight_decay: float, groups: list[Any]) -> list[dict]:
    """Parameter groups from ``train.param_groups`` (``ParamGroupCfg``); unmatched go last."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    taken: set[str] = set()
    out = []
    for i, g in enumerate(groups):
        pattern = re.compile(g.match)
        params = [p for n, p in named if n not in taken and pattern.search(n)]
        taken |= {n for n, _ in named if pattern.search(n)}
        if not params:
            raise ValueError(f"train.param_groups[{i}].match: {g.match!r} matches no parameter of the model")
        out.append({"params": params, "lr": lr * g.lr_scale,
                    "weight_decay": weight_decay if g.weight_decay is None else g.weight_decay})
    rest = [p for n, p in named if n not in taken]
    if rest:
        out.append({"params": rest, "lr": lr, "weight_decay": weight_decay})
    return out


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """The study's optimiser over the model's parameters (``cfg``: a ``TrainCfg``)."""
    params = param_groups(model, cfg.lr, cfg.weight_decay, cfg.param_groups) if cfg.param_groups else model.parameters()
    return OPTIMIZERS.get(cfg.optimizer.name, field="train.optimizer.name")(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, **cfg.optimizer.params)


def build_schedule(optimizer: torch.optim.Optimizer, cfg, total_steps: int):
    return SCHEDULES.get(cfg.schedule.name, field="train.schedule.name")(optimizer, total_steps=total_steps,
                                                                         **cfg.schedule.params)
