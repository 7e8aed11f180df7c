"""Losses by name (MONAI), on the loss contract of ``harness.contract``.

A registered loss factory takes its own parameters plus ``output`` (``sigmoid`` or
``softmax``, injected from ``train.output``) and returns a module called as
``loss(outputs, batch, state)``. Most losses are a criterion on the segmentation and the
label: ``SegLoss`` adapts a MONAI loss to the contract. A loss that needs more (auxiliary
outputs, a derived target such as a signed distance map, the training progress) reads it
from ``outputs``, ``batch`` and ``state``.

A loss that needs statistics of the training labels (class weights) has a ``fit(cases)``
method; the trial calls it once with the training cases before the first step.

Deep supervision is a wrapper a study asks for (``train.deep_supervision``), not part of
every loss: ``DeepSupervision`` applies a ``SegLoss``'s criterion to the segmentation and
to each auxiliary head of a named output, the target resized to each head (MONAI's
``DeepSupervisionLoss``).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceLoss
from torch import nn

from harness.contract import TrainState, classes_of, main_output
from harness.registry import LOSSES

INJECTED = ("output",)


class SegLoss(nn.Module):
    """``criterion(segmentation logits, target)``; target = the label's region channels
    (sigmoid) or its class indices (softmax).

    Shapes: logits (N, K, D, H, W); label (N, R, D, H, W) with K = R (sigmoid) or R + 1 (softmax).
    """

    def __init__(self, criterion: nn.Module, output: str):
        super().__init__()
        self.criterion, self.output = criterion, output

    def target(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        label = batch["label"]
        return label if self.output == "sigmoid" else classes_of(label)

    def forward(self, outputs: dict[str, Any], batch: dict[str, torch.Tensor], state: TrainState) -> torch.Tensor:
        target = self.target(batch)
        if "target_at" in outputs:  # predictions elsewhere than the label's voxels (contract)
            target = outputs["target_at"](target)
        return self.criterion(main_output(outputs), target)

    def fit(self, cases) -> None:
        if hasattr(self.criterion, "fit"):
            self.criterion.fit(cases)


class DeepSupervision(nn.Module):
    """sum_i w_i * L(head_i, resize(target)), heads = [segmentation, *outputs[key]], divided by
    the number of heads when ``reduction`` is ``mean``.

    ``weight_mode`` as MONAI: ``exp`` (w_i = max(0.5**i, 0.0625)), ``two`` (1, 0.5, 0.5, ...),
    ``same``; or explicit ``weights``. BraTS 2020 (Henry et al. Sec. 2.2): ``same``, and
    ``sum`` as the paper says or ``mean`` as the authors' code does.
    """

    def __init__(self, base: SegLoss, key: str = "deep", weight_mode: str = "exp",
                 weights: Optional[Sequence[float]] = None, reduction: str = "sum"):
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"deep_supervision.reduction: unknown {reduction!r}; allowed: sum, mean")
        self.base, self.key, self.reduction = base, key, reduction
        self.ds = DeepSupervisionLoss(base.criterion, weight_mode=weight_mode, weights=weights)

    def forward(self, outputs: dict[str, Any], batch: dict[str, torch.Tensor], state: TrainState) -> torch.Tensor:
        if self.key not in outputs:
            raise KeyError(f"deep_supervision: the model has no output {self.key!r} (it returned {list(outputs)})")
        heads = [main_output(outputs), *outputs[self.key]]
        loss = self.ds(heads, self.base.target(batch))
        return loss / len(heads) if self.reduction == "mean" else loss

    def fit(self, cases) -> None:
        self.base.fit(cases)


@LOSSES.register("dice")
def dice(output: str, include_background: bool = True, squared_pred: bool = False, smooth: float = 1e-5,
         batch: bool = False) -> SegLoss:
    """Soft Dice (Milletari et al. 2016), the GSP-Conv and Distill DSM training loss.

    1 - (2 sum(p t) + smooth) / (sum p^k + sum t^k + smooth) per channel, k = 2 with
    ``squared_pred``, sums over each sample (or over the whole batch with ``batch``), mean over
    channels. The BraTS 2020 loss (Henry et al. Eq. 2, the authors' ``EDiceLoss``) is
    ``squared_pred: true, smooth: 1, batch: true``.
    """
    return SegLoss(DiceLoss(sigmoid=output == "sigmoid", softmax=output == "softmax", to_onehot_y=output == "softmax",
                            include_background=include_background, squared_pred=squared_pred,
                            smooth_nr=smooth, smooth_dr=smooth, batch=batch), output)


@LOSSES.register("dice_ce")
def dice_ce(output: str, lambda_dice: float = 1.0, lambda_ce: float = 1.0,
            include_background: bool = True) -> SegLoss:
    """Dice + cross-entropy (binary per region under sigmoid, over classes under softmax)."""
    return SegLoss(DiceCELoss(sigmoid=output == "sigmoid", softmax=output == "softmax",
                              to_onehot_y=output == "softmax", include_background=include_background,
                              lambda_dice=lambda_dice, lambda_ce=lambda_ce), output)


class _CrossEntropy(nn.Module):
    def __init__(self, output: str, weight: Optional[Sequence[float]]):
        super().__init__()
        self.output = output
        self.register_buffer("weight", None if weight is None else torch.tensor(weight, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.output == "softmax":
            return nn.functional.cross_entropy(logits, target[:, 0].long(), weight=self.weight)
        w = None if self.weight is None else self.weight.view(1, -1, *[1] * (logits.dim() - 2))
        return nn.functional.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=w)


@LOSSES.register("ce")
def ce(output: str, weight: Optional[list[float]] = None) -> SegLoss:
    """Cross-entropy over classes (softmax; ``weight`` per class, background first) or binary
    cross-entropy per region (sigmoid; ``weight`` is the positive weight per region)."""
    return SegLoss(_CrossEntropy(output, weight), output)


class AuxLosses(nn.Module):
    """``loss + sum_k w_k * outputs[k]``: a net's own scalar loss outputs (SegResNetVAE's
    ``vae_loss``, the L2 and KL terms of Myronenko 2018 Eq. 1, weighted 0.1 there) added with
    the study's weights (``train.aux_losses``)."""

    def __init__(self, loss: nn.Module, weights: dict[str, float]):
        super().__init__()
        self.loss, self.weights = loss, dict(weights)

    def forward(self, outputs, batch, state):
        missing = [k for k in self.weights if k not in outputs]
        if missing:
            raise KeyError(f"train.aux_losses: the model has no output {missing} (it returned {list(outputs)})")
        return self.loss(outputs, batch, state) + sum(w * outputs[k].float().mean() for k, w in self.weights.items())


def build_loss(spec, output: str, deep_supervision=None, aux_losses: dict[str, float] | None = None) -> nn.Module:
    """The study's loss (a ``ComponentCfg``), wrapped for deep supervision and the net's own
    weighted loss outputs when asked."""
    loss = LOSSES.get(spec.name, field="train.loss.name")(output=output, **spec.params)
    if deep_supervision is not None:
        if not isinstance(loss, SegLoss):
            raise ValueError(f"train.deep_supervision: loss {spec.name!r} is not a criterion on the segmentation "
                             f"(SegLoss), so it cannot be applied per head")
        loss = DeepSupervision(loss, deep_supervision.output, deep_supervision.weight_mode, deep_supervision.weights,
                               deep_supervision.reduction)
    return AuxLosses(loss, aux_losses) if aux_losses else loss
