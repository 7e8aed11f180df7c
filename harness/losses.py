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

import numpy as np
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceLoss
from torch import nn

from harness.contract import TrainState, classes_of, main_output
from harness.ops.context_residual import slice_residual
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
        if "points" in outputs:  # predictions at sampled points (contract): the label read there
            target = nn.functional.grid_sample(target.float(), outputs["points"].to(target.device), mode="nearest",
                                               align_corners=True)
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


class _OHEMCrossEntropy(nn.Module):
    def __init__(self, weight: Optional[Sequence[float]], keep: float, background_weight: float):
        super().__init__()
        self.keep, self.background_weight = keep, background_weight
        self.register_buffer("weight", None if weight is None else torch.tensor(weight, dtype=torch.float32))

    def fit(self, cases) -> None:
        if self.weight is not None:  # given explicitly
            return
        counts = None
        for case in cases:
            lab = np.asarray(case.label).reshape(case.label.shape[0], -1)
            c = np.concatenate([[(lab.sum(0) == 0).sum()], lab.sum(1)]).astype(np.float64)
            counts = c if counts is None else counts + c
        if counts is None:
            raise ValueError("ohem_ce: no training cases to fit the class weights on")
        w = 1.0 / np.sqrt(np.maximum(counts, 1.0))
        w = w / w.mean()
        w[0] = self.background_weight
        self.weight = torch.tensor(w, dtype=torch.float32)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target[:, 0].long()
        if self.weight is None:  # not fitted: only a trial built without data (sizing, timing) gets here
            self.weight = torch.full((logits.shape[1],), 1.0).index_fill_(0, torch.tensor([0]), self.background_weight)
        ranked = nn.functional.cross_entropy(logits, t, reduction="none").flatten()  # unweighted, as the code
        hard = ranked.topk(max(1, int(self.keep * ranked.numel()))).indices
        weighted = nn.functional.cross_entropy(logits, t, weight=self.weight.to(logits.device), reduction="none")
        return weighted.flatten()[hard].mean()


@LOSSES.register("ohem_ce")
def ohem_ce(output: str, keep: float = 0.25, weight: Optional[list[float]] = None,
            background_weight: float = 0.5) -> SegLoss:
    """Class-weighted cross-entropy with online hard example mining (OBELISK-Net, Sec. 3.4).

    The voxels are ranked by their unweighted cross-entropy; the ``keep`` fraction with the
    highest loss (the paper: top 25%) contributes the mean of its class-weighted NLL. Class
    weights, unless given (``weight``, background first): w_c = sqrt(1 / n_c) over the training
    labels, divided by their mean, then the background's set to ``background_weight`` (the
    authors' code). Softmax outputs only.
    """
    if output != "softmax":
        raise ValueError(f"train.loss: ohem_ce needs train.output softmax, got {output!r}")
    if not 0 < keep <= 1:
        raise ValueError(f"train.loss.params.keep: must be in (0, 1], got {keep}")
    return SegLoss(_OHEMCrossEntropy(weight, keep, background_weight), output)


def residual_pos_weight(target: torch.Tensor) -> torch.Tensor:
    """w_c = log(V / (V_c + 1)) per channel (Eq. 8's w_k = log(V / V_k), +1 as the authors' code):
    V the voxels of one volume, V_c the positives of channel c over the whole batch (the code).

    Shapes: target (N, C, D, H, W) -> (C,), not differentiated.
    """
    voxels = target[0, 0].numel()
    return torch.log(voxels / (target.detach().transpose(0, 1).flatten(1).sum(1) + 1))


class ConResLoss(nn.Module):
    """ConResNet's joint loss L = L_seg + L_res (Eqs. 7-9), with Table VI's boundary loss (Eq. 14).

    L_seg (Eq. 7; the authors' code): soft Dice (no squares, smoothing 1 in the denominator
    only, per volume, averaged over volumes and channels) + binary cross-entropy per region
    summed over the regions (sigmoid); under softmax, Dice over background + classes and the
    cross-entropy over classes.

    L_res (Eqs. 8-9) on the residual heads ``outputs["res"] = [full, 1/2, 1/4]`` (all at the
    input size): L_res = w_full * L^0 + lambda * (L^1 + L^2), L^i a binary cross-entropy with
    positive weight ``residual_pos_weight``, averaged over voxels and channels. The target of
    every head is |Y[s] - Y[s-1]| along the axis the model reports (``outputs["res_axis"]``,
    the view), slice 0 = 0, per label channel (Eq. 13: the foreground classes under softmax).
    A model without residual heads (the baseline) is trained on L_seg alone.

    Boundary loss (Eq. 14): L' = alpha L + (1 - alpha) L_BD, alpha = 1 - t (1 - alpha_min) / T
    with t / T the training progress, L_BD = mean(p * phi) (Kervadec et al. 2019) over the
    foreground probabilities p and the signed distance maps phi of the label channels, read
    from ``batch[boundary_key]`` (the study's ``signed_distance`` target).

    Shapes: seg (N, K, D, H, W), label and phi (N, R, D, H, W), res heads (N, R, D, H, W).
    """

    def __init__(self, output: str, lam: float, full_weight: float, boundary: bool, boundary_key: str,
                 alpha_min: float):
        super().__init__()
        self.output, self.lam, self.full_weight = output, lam, full_weight
        self.boundary, self.boundary_key, self.alpha_min = boundary, boundary_key, alpha_min
        softmax = output == "softmax"
        self.dice = DiceLoss(sigmoid=not softmax, softmax=softmax, to_onehot_y=softmax, smooth_nr=0.0, smooth_dr=1.0)

    def seg_loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.output == "softmax":
            cls = classes_of(label)
            return self.dice(logits, cls) + nn.functional.cross_entropy(logits, cls[:, 0].long())
        bce = nn.functional.binary_cross_entropy_with_logits(logits, label, reduction="none")
        return self.dice(logits, label) + bce.flatten(2).mean(2).sum(1).mean()  # mean per region, summed

    def res_loss(self, heads: Sequence[torch.Tensor], label: torch.Tensor, axis: int) -> torch.Tensor:
        target = slice_residual(label, axis)
        w = residual_pos_weight(target).view(1, -1, 1, 1, 1)
        terms = [nn.functional.binary_cross_entropy_with_logits(h, target, pos_weight=w) for h in heads]
        return self.full_weight * terms[0] + self.lam * sum(terms[1:])

    def forward(self, outputs: dict[str, Any], batch: dict[str, torch.Tensor], state: TrainState) -> torch.Tensor:
        logits, label = main_output(outputs), batch["label"].float()
        loss = self.seg_loss(logits, label)
        if "res" in outputs:
            loss = loss + self.res_loss(outputs["res"], label, outputs["res_axis"])
        if not self.boundary:
            return loss
        if self.boundary_key not in batch:
            raise KeyError(f"train.loss.params.boundary: needs the signed distance maps batch[{self.boundary_key!r}]; "
                           f"add train.targets: [{{name: signed_distance, params: {{key: {self.boundary_key}}}}}]")
        probs = torch.sigmoid(logits) if self.output == "sigmoid" else torch.softmax(logits, 1)[:, 1:]
        alpha = 1.0 - state.progress * (1.0 - self.alpha_min)
        return alpha * loss + (1.0 - alpha) * (probs * batch[self.boundary_key]).mean()


@LOSSES.register("conres")
def conres(output: str, lam: float = 0.5, full_weight: float = 1.0, boundary: bool = False,
           boundary_key: str = "sdm", alpha_min: float = 0.01) -> ConResLoss:
    """ConResNet's segmentation + context residual loss, optionally with the boundary loss
    (``ConResLoss``). ``lam`` is Eq. 9's lambda (paper: 0.5; Fig. 8 tries 0, 0.1, 0.5, 1)."""
    if lam < 0 or full_weight < 0:
        raise ValueError(f"train.loss.params: lam and full_weight must be >= 0, got {lam} and {full_weight}")
    if not 0 <= alpha_min <= 1:
        raise ValueError(f"train.loss.params.alpha_min: must be in [0, 1], got {alpha_min}")
    return ConResLoss(output, lam, full_weight, boundary, boundary_key, alpha_min)


def build_loss(spec, output: str, deep_supervision=None) -> nn.Module:
    """The study's loss (a ``ComponentCfg``), wrapped for deep supervision when asked."""
    loss = LOSSES.get(spec.name, field="train.loss.name")(output=output, **spec.params)
    if deep_supervision is None:
        return loss
    if not isinstance(loss, SegLoss):
        raise ValueError(f"train.deep_supervision: loss {spec.name!r} is not a criterion on the segmentation "
                         f"(SegLoss), so it cannot be applied per head")
    return DeepSupervision(loss, deep_supervision.output, deep_supervision.weight_mode, deep_supervision.weights,
                           deep_supervision.reduction)
