"""Losses by name (MONAI). Targets are binary region channels, so outputs go through a sigmoid."""
from __future__ import annotations

from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceLoss
from torch import nn

from harness.registry import LOSSES


@LOSSES.register("dice")
def dice() -> nn.Module:
    """Soft Dice (Milletari et al. 2016), the GSP-Conv training loss."""
    return DiceLoss(sigmoid=True)


@LOSSES.register("dice_ce")
def dice_ce() -> nn.Module:
    """Dice + binary cross-entropy."""
    return DiceCELoss(sigmoid=True)


def build_loss(name: str) -> nn.Module:
    # Multi-output nets (deep supervision, residual heads) return a list, main output
    # first; DeepSupervisionLoss resizes the target to each head.
    return DeepSupervisionLoss(LOSSES.get(name, field="train.loss")(), weight_mode="exp")
