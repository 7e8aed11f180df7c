"""Residual 3D U-Net: the Distill DSM paper's 3D baseline (Table 1: 4,288,208 parameters).

Architecture facts (``docs/architectures.md``; the authors used ellisdg/3DUnetCNN's ``UNet``):
pre-activation residual blocks (Myronenko 2018) of 2 x [GroupNorm(8) -> ReLU -> 3x3x3 conv
without bias] plus the identity (a bias-free 1x1x1 projection when widths differ); encoder
widths ``base * 2**i`` with ``encoder_blocks`` blocks per level and a stride-2 3x3x3 conv
between levels; the decoder runs one block per level *before* upsampling, on the concatenated
width, then a 1x1x1 conv to the skip's width, trilinear x2 and concat(up, skip); the last
level's block reduces 2*base -> base; a bias-free 1x1x1 head. Base 8, [2, 2, 2, 2, 2], 4 in,
3 out: exactly 4,288,208 parameters.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from harness.ops.upsample import upsample_trilinear2x
from harness.registry import MODELS


def _norm(channels: int) -> nn.GroupNorm:
    # 8 groups, or one group per channel when 8 does not divide (the reference's rule).
    return nn.GroupNorm(8 if channels >= 8 and channels % 8 == 0 else channels, channels)


class ResidualBlock3D(nn.Module):
    """x + conv(relu(gn(conv(relu(gn(x)))))) (Myronenko 2018, Fig. 1's green block).

    Args:
        in_channels, out_channels: widths; a 1x1x1 projection carries the identity when they differ.

    Shapes: (N, in_channels, D, H, W) -> (N, out_channels, D, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            _norm(in_channels), nn.ReLU(inplace=False), nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
            _norm(out_channels), nn.ReLU(inplace=True), nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
        )
        self.skip = nn.Conv3d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


def _stack(n: int, cin: int, cout: int, dropout: float = 0.0) -> nn.Sequential:
    blocks = [ResidualBlock3D(cin if i == 0 else cout, cout) for i in range(n)]
    if dropout:
        blocks.insert(1, nn.Dropout3d(dropout))  # after the first block, as in the reference
    return nn.Sequential(*blocks)


@MODELS.register("unet3d")
class ResidualUNet3D(nn.Module):
    """Residual 3D U-Net (module docstring).

    Args:
        in_channels, out_channels: image channels and predicted regions.
        base_width: width of the first level; doubled per level.
        encoder_blocks: residual blocks per encoder level (its length sets the depth).
        dropout: Dropout3d after the first encoder block (the reference encoder's default 0.2).

    Shapes: (N, in_channels, D, H, W) -> (N, out_channels, D, H, W); D, H, W divisible by
    2**(levels-1).
    """

    default_input_size = (16, 32, 32)
    landscape = {"default": {}}

    def __init__(self, in_channels: int = 4, out_channels: int = 3, base_width: int = 8,
                 encoder_blocks: Sequence[int] = (2, 2, 2, 2, 2), dropout: float = 0.2):
        super().__init__()
        w = [base_width * 2**i for i in range(len(encoder_blocks))]
        self.encoder = nn.ModuleList()
        self.down = nn.ModuleList()
        cin = in_channels
        for i, n in enumerate(encoder_blocks):
            self.encoder.append(_stack(n, cin, w[i], dropout if i == 0 else 0.0))
            if i < len(w) - 1:
                self.down.append(nn.Conv3d(w[i], w[i], 3, stride=2, padding=1, bias=False))
            cin = w[i]
        # Decoder, bottom up: block at the incoming width, then 1x1x1 to the skip's width.
        self.dec_blocks = nn.ModuleList()
        self.dec_proj = nn.ModuleList()
        width = w[-1]
        for i in reversed(range(len(w) - 1)):
            self.dec_blocks.append(ResidualBlock3D(width, width))
            self.dec_proj.append(nn.Conv3d(width, w[i], 1, bias=False))
            width = 2 * w[i]  # concat(up, skip)
        self.last = ResidualBlock3D(width, w[0])
        self.head = nn.Conv3d(w[0], out_channels, 1, bias=False)

    def check_input(self, spatial: Sequence[int]) -> None:
        f = 2 ** len(self.down)
        if any(s % f for s in spatial):
            raise ValueError(f"patch {tuple(spatial)}: every side must be divisible by {f}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x)
            if i < len(self.down):
                skips.append(x)
                x = self.down[i](x)
        for block, proj in zip(self.dec_blocks, self.dec_proj):
            x = proj(block(x))
            x = upsample_trilinear2x(x)  # F.interpolate(scale_factor=2, mode="trilinear"), bit for bit
            x = torch.cat([x, skips.pop()], dim=1)
        return self.head(self.last(x))
