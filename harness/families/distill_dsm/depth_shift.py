"""Depth shift between the 2D slices of a volume (Distill DSM, Maheshwari et al.; TSM, Lin et al. 2019).

Slice-wise 2D nets see a volume (N, C, T, H, W) folded to (N*T, C, H, W). These ops
unfold the slice axis again, move information one slice forward / backward within
each volume (never across volumes), and zero-pad at the first and last slice.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.registry import OPS


def _to_volumes(x: torch.Tensor, slices: int) -> torch.Tensor:
    if x.shape[0] % slices:
        raise ValueError(f"batch of {x.shape[0]} slices is not a whole number of {slices}-slice volumes")
    return x.view(x.shape[0] // slices, slices, *x.shape[1:])


def shift_slices(x: torch.Tensor, slices: int, step: int) -> torch.Tensor:
    """Move every slice ``step`` positions along the slice axis (+1: slice t goes to t+1), zero-filled.

    Shapes: (N*T, C, H, W) -> (N*T, C, H, W).
    """
    v = _to_volumes(x, slices)
    pad = (0, 0) * (v.dim() - 2)  # pad only the slice axis (dim 1)
    if step > 0:
        v = F.pad(v[:, : slices - step], pad + (step, 0))
    elif step < 0:
        v = F.pad(v[:, -step:], pad + (0, -step))
    return v.reshape(x.shape)


@OPS.register("residual_dsm")
class ResidualDSM(nn.Module):
    """Residual depth shift (TSM, Lin et al. 2019): ``x + shift(x)``, parameter-free.

    The first ``fraction/2`` of the channels come from slice t+1, the next ``fraction/2``
    from slice t-1, the rest are zero in the shifted branch; the identity is added back.

    Shapes: (N*T, C, H, W) -> (N*T, C, H, W).
    """

    def __init__(self, in_channels: int, fraction: float = 0.25):
        super().__init__()
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.fold = max(1, int(in_channels * fraction / 2))

    def forward(self, x: torch.Tensor, slices: int) -> torch.Tensor:
        f = self.fold
        shifted = torch.cat([shift_slices(x[:, :f], slices, -1), shift_slices(x[:, f:2 * f], slices, +1),
                             torch.zeros_like(x[:, 2 * f:])], dim=1)
        return x + shifted


@OPS.register("distill_dsm")
class DistillDSM(nn.Module):
    """Distill DSM (Sec. 3, Fig. 2): from the last ``alpha*C`` channels of slice i, 3x3 convs
    distil R_i (alpha*C/2, kept), F_i (alpha*C/4, sent to slice i+1) and B_i (alpha*C/4, sent
    to slice i-1); slice i's output is [untouched channels, R_i, F_{i-1}, B_{i+1}], zeros at the ends.

    Extra parameters: 9*(alpha*C)^2 + alpha*C.
    Shapes: (N*T, C, H, W) -> (N*T, C, H, W).
    """

    def __init__(self, in_channels: int, alpha: float = 0.25):
        super().__init__()
        a = int(round(alpha * in_channels))
        if not 0.0 < alpha <= 1.0 or a % 4:
            raise ValueError(f"alpha*C must be a positive multiple of 4 (alpha={alpha}, C={in_channels})")
        self.keep = in_channels - a
        self.retain = nn.Conv2d(a, a // 2, 3, padding=1)
        self.forward_ = nn.Conv2d(a, a // 4, 3, padding=1)
        self.backward_ = nn.Conv2d(a, a // 4, 3, padding=1)

    def forward(self, x: torch.Tensor, slices: int) -> torch.Tensor:
        part = x[:, self.keep:]
        return torch.cat([x[:, : self.keep], self.retain(part),
                          shift_slices(self.forward_(part), slices, +1),
                          shift_slices(self.backward_(part), slices, -1)], dim=1)
