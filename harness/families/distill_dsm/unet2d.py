"""Slice-wise 2D U-Net and its depth-shift variants (Distill DSM paper, Table 1).

The volume (N, C, T, H, W) is folded to (N*T, C, H, W), segmented slice by slice and
unfolded again, so the 2D nets plug into the 3D pipeline. Architecture facts from the
authors' code (``docs/architectures.md``): blocks of 2 x [3x3 conv with bias, BatchNorm, ReLU],
stem 16 then 32, 64, 128, 128 with max pooling; up blocks bilinear x2, concat(skip, up),
conv C_in -> C_in/2, conv -> C_out (256->64, 128->32, 64->16, 32->16); 1x1 head.
With 4 inputs and 3 outputs: 1,082,211 parameters. A depth module (Residual DSM or
Distill DSM) sits between the two convs of every encoder block but the stem and of every
up block: channel counts 32, 64, 128, 128, 128, 64, 32, 16.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness.families.distill_dsm.depth_shift import DistillDSM, ResidualDSM
from harness.registry import MODELS


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SliceBlock(nn.Module):
    """conv -> [depth module] -> conv. Shapes: (N*T, C_in, H, W) -> (N*T, C_out, H, W)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, depth: nn.Module | None = None):
        super().__init__()
        self.conv1, self.depth, self.conv2 = _conv(in_channels, mid_channels), depth, _conv(mid_channels, out_channels)

    def forward(self, x: torch.Tensor, slices: int) -> torch.Tensor:
        x = self.conv1(x)
        if self.depth is not None:
            x = self.depth(x, slices)
        return self.conv2(x)


@MODELS.register("unet2d")
class UNet2D(nn.Module):
    """2D U-Net applied slice by slice to a volume.

    Args:
        in_channels, out_channels: image channels and predicted regions.
        widths: stem width, then one per pooling level (default 16, 32, 64, 128, 128).

    Shapes: (N, in_channels, T, H, W) -> (N, out_channels, T, H, W); H, W divisible by 16.
    """

    default_input_size = (8, 32, 32)
    landscape = {"default": {}}

    def __init__(self, in_channels: int = 4, out_channels: int = 3, widths: Sequence[int] = (16, 32, 64, 128, 128)):
        super().__init__()
        w = list(widths)
        self.stem = SliceBlock(in_channels, w[0], w[0])
        self.down = nn.ModuleList(SliceBlock(w[i], w[i + 1], w[i + 1], self.depth_module(w[i + 1], i))
                                  for i in range(len(w) - 1))
        self.up = nn.ModuleList()
        below = w[-1]
        for i in reversed(range(len(w) - 1)):
            cin = w[i] + below  # concat(skip, upsampled)
            below = w[i - 1] if i > 0 else w[0]
            self.up.append(SliceBlock(cin, cin // 2, below, self.depth_module(cin // 2, len(w) - 1 + len(self.up))))
        self.head = nn.Conv2d(w[0], out_channels, 1)

    def depth_module(self, channels: int, position: int) -> nn.Module | None:
        """Depth module at ``position``: 0..3 encoder blocks (shallow to deep), 4..7 up blocks (deep to shallow)."""
        return None  # the plain 2D U-Net exchanges nothing between slices

    def check_input(self, spatial: Sequence[int]) -> None:
        f = 2 ** len(self.down)
        if spatial[1] % f or spatial[2] % f:
            raise ValueError(f"patch {tuple(spatial)}: H and W must be divisible by {f}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = x.shape
        y = x.transpose(1, 2).reshape(n * t, c, h, w)
        skips = [self.stem(y, t)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2), t))
        y = skips.pop()
        for block in self.up:
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            y = block(torch.cat([skips.pop(), y], dim=1), t)
        y = self.head(y)
        return y.reshape(n, t, -1, h, w).transpose(1, 2)


def _check_blocks(blocks: Sequence[int] | None, widths: Sequence[int]) -> None:
    n = 2 * (len(widths) - 1)
    if blocks is not None and any(not 0 <= b < n for b in blocks):
        raise ValueError(f"blocks {list(blocks)}: module positions are 0..{n - 1} "
                         f"(0..{n // 2 - 1} encoder blocks, {n // 2}..{n - 1} up blocks)")


@MODELS.register("residual_dsm")
class ResidualDSMUNet(UNet2D):
    """2D U-Net with Residual DSM (TSM) between the convs: parameter-free, same count as UNet2D.

    ``blocks``: module positions that get the shift (default all; see ``depth_module``).
    """

    landscape = {"default": {}}

    def __init__(self, in_channels: int = 4, out_channels: int = 3, widths: Sequence[int] = (16, 32, 64, 128, 128),
                 fraction: float = 0.25, blocks: Sequence[int] | None = None):
        _check_blocks(blocks, widths)
        self.fraction, self.blocks = fraction, blocks
        super().__init__(in_channels, out_channels, widths)

    def depth_module(self, channels: int, position: int) -> nn.Module | None:
        return ResidualDSM(channels, self.fraction) if self.blocks is None or position in self.blocks else None


@MODELS.register("distill_dsm")
class DistillDSMUNet(UNet2D):
    """2D U-Net with Distill DSM (ratio ``alpha``) between the convs (Distill DSM, Sec. 3).

    ``blocks``: module positions that get Distill DSM (default all, as in the paper).
    """

    landscape = {"alpha_0.25": {"alpha": 0.25}, "alpha_1": {"alpha": 1.0}}

    def __init__(self, in_channels: int = 4, out_channels: int = 3, widths: Sequence[int] = (16, 32, 64, 128, 128),
                 alpha: float = 0.25, blocks: Sequence[int] | None = None):
        _check_blocks(blocks, widths)
        self.alpha, self.blocks = alpha, blocks
        super().__init__(in_channels, out_channels, widths)

    def depth_module(self, channels: int, position: int) -> nn.Module | None:
        return DistillDSM(channels, self.alpha) if self.blocks is None or position in self.blocks else None
