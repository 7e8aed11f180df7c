"""ConResNet's joint segmentation + context residual loss (Eqs. 7-9) and boundary loss (Eq. 14)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from monai.losses import DiceLoss
from torch import nn

from harness.contract import TrainState, classes_of, main_output
from harness.families.conresnet.context_residual import slice_residual
from harness.registry import LOSSES


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


def _check(lam: float, full_weight: float, alpha_min: float) -> None:
    if lam < 0 or full_weight < 0:
        raise ValueError(f"train.loss.params: lam and full_weight must be >= 0, got {lam} and {full_weight}")
    if not 0 <= alpha_min <= 1:
        raise ValueError(f"train.loss.params.alpha_min: must be in [0, 1], got {alpha_min}")


@LOSSES.register("conres", check=_check)
def conres(output: str, lam: float = 0.5, full_weight: float = 1.0, boundary: bool = False,
           boundary_key: str = "sdm", alpha_min: float = 0.01) -> ConResLoss:
    """ConResNet's segmentation + context residual loss, optionally with the boundary loss
    (``ConResLoss``). ``lam`` is Eq. 9's lambda (paper: 0.5; Fig. 8 tries 0, 0.1, 0.5, 1)."""
    _check(lam, full_weight, alpha_min)
    return ConResLoss(output, lam, full_weight, boundary, boundary_key, alpha_min=alpha_min)
