"""OBELISK: one binary extremely large and inflecting sparse kernel (Heinrich et al., "OBELISK-Net:
Fewer layers to solve 3D multi-organ segmentation with sparse deformable convolutions", MedIA 2019).

A kernel of K elements whose spatial offsets S_k = (S_x, S_y, S_z) are learned in continuous
coordinates (Sec. 2, Eqs. 1-3 in 3D): the input I is read at every output location p of a
sampling grid shifted by each offset with trilinear interpolation (8 neighbours),

    unary:   F_k(p) = I(p + S_k)                    (one offset per coefficient)
    binary:  F_k(p) = I(p + S_k^a) - I(p + S_k^b)   (two offsets, their difference),

for every input channel c, giving C * K features per location (channel index c * K + k, as
the authors' ``view``); the filter coefficients W of Eq. 2 are the 1x1x1 convolution that
follows (in the models, not here). This is ``im2col`` with a continuous, learned layout (Fig. 1).

Conventions, from the authors' code (docs/architectures.md):
- coordinates are ``grid_sample``'s normalised [-1, 1], ordered (x, y, z) = (W, H, D);
- offsets have shape (1, K, 1, P, 3), P = 1 (unary) or 2 (binary), initialised N(0, sigma^2)
  with sigma = 0.05 (Sec. 2: 0.02 to 0.1 gave almost identical results);
- zero padding (no gradient from samples outside the volume, Sec. 2);
- ``align_corners=True``: the code ran on PyTorch < 1.3, whose default it was, and its regular
  grids are ``linspace(-1, 1, n)``;
- "Rand. Offsets" (Table 3): offsets drawn once and frozen (a buffer here, so they are saved
  with the weights but neither trained nor counted as parameters).

The sampling grid is an argument of ``forward``: a regular coarse grid (``regular_grid``) for
dense prediction, or any set of points (the original net's sparse training, Table 2).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.registry import OPS


def regular_grid(size, align_corners: bool = True, device=None) -> torch.Tensor:
    """A regular (D', H', W') grid of sampling points in [-1, 1], shape (1, D', H', W', 3), (x, y, z) last.

    With ``align_corners=True`` the points along an axis are ``linspace(-1, 1, n)`` (the corners
    of the input's first and last voxels), as the authors' code builds them.
    """
    size = tuple(int(s) for s in size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"regular_grid: size must be three positive integers (D', H', W'), got {size}")
    theta = torch.eye(3, 4, device=device).unsqueeze(0)
    return F.affine_grid(theta, [1, 1, *size], align_corners=align_corners)


def coarse_size(size, stride: int) -> tuple[int, int, int]:
    """Grid size at 1/stride of ``size``, rounding up as the code's repeated ``(n + 1) // 2``."""
    return tuple(math.ceil(s / stride) for s in size)


@OPS.register("obelisk")
class Obelisk(nn.Module):
    """Sparse deformable sampling with K learned 3D offsets (module docstring, Eqs. 1-3).

    Args:
        offsets: K, the number of kernel elements (Sec. 5: "at least around 500 are needed").
        binary: two offsets per element and their difference (the original net) or one (unary).
        learn_offsets: False freezes the offsets after their random draw ("Rand. Offsets").
        init_std: sigma of the offsets' normal initialisation, in normalised coordinates.
        align_corners: ``grid_sample``'s convention (the authors' code: True).

    Shapes: x (B, C, D, H, W) and grid (1 or B, D', H', W', 3) -> (B, C * K, D', H', W').
    A grid of random points, (1 or B, S, 1, 1, 3), gives (B, C * K, S, 1, 1).
    """

    def __init__(self, offsets: int, binary: bool = False, learn_offsets: bool = True, init_std: float = 0.05,
                 align_corners: bool = True):
        super().__init__()
        if int(offsets) != offsets or offsets < 1:
            raise ValueError(f"obelisk: offsets must be a positive integer, got {offsets}")
        if not init_std > 0:
            raise ValueError(f"obelisk: init_std must be > 0, got {init_std}")
        self.k, self.binary, self.align_corners = int(offsets), bool(binary), bool(align_corners)
        init = torch.randn(1, self.k, 1, 2 if binary else 1, 3) * init_std
        if learn_offsets:
            self.offsets = nn.Parameter(init)
        else:
            self.register_buffer("offsets", init)

    def forward(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or grid.dim() != 5 or grid.shape[-1] != 3:
            raise ValueError(f"obelisk expects x (B, C, D, H, W) and grid (B, D', H', W', 3), "
                             f"got {tuple(x.shape)} and {tuple(grid.shape)}")
        B, C = x.shape[:2]
        out = grid.shape[1:4]
        points = grid.reshape(grid.shape[0], 1, -1, 1, 3) + self.offsets.to(grid.dtype)  # (1|B, K, S, P, 3)
        v = F.grid_sample(x, points.expand(B, -1, -1, -1, -1), mode="bilinear", padding_mode="zeros",
                          align_corners=self.align_corners)  # (B, C, K, S, P): trilinear for 5D input
        v = v[..., 0] - v[..., 1] if self.binary else v[..., 0]
        return v.reshape(B, C * self.k, *out)

    def extra_repr(self) -> str:
        learned = isinstance(self.offsets, nn.Parameter)
        return f"offsets={self.k}, binary={self.binary}, learn_offsets={learned}, align_corners={self.align_corners}"
