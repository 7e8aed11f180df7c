"""OBELISK-Net's loss: class-weighted cross-entropy with online hard example mining (Sec. 3.4)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from harness.losses import SegLoss
from harness.registry import LOSSES


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


def _check(output: str, keep: float) -> None:
    if output != "softmax":
        raise ValueError(f"train.loss: ohem_ce needs train.output softmax, got {output!r}")
    if not 0 < keep <= 1:
        raise ValueError(f"train.loss.params.keep: must be in (0, 1], got {keep}")


@LOSSES.register("ohem_ce", check=_check)
def ohem_ce(output: str, keep: float = 0.25, weight: Optional[list[float]] = None,
            background_weight: float = 0.5) -> SegLoss:
    """Class-weighted cross-entropy with online hard example mining (OBELISK-Net, Sec. 3.4).

    The voxels are ranked by their unweighted cross-entropy; the ``keep`` fraction with the
    highest loss (the paper: top 25%) contributes the mean of its class-weighted NLL. Class
    weights, unless given (``weight``, background first): w_c = sqrt(1 / n_c) over the training
    labels, divided by their mean, then the background's set to ``background_weight`` (the
    authors' code). Softmax outputs only.
    """
    _check(output, keep)
    return SegLoss(_OHEMCrossEntropy(weight, keep, background_weight), output)
