"""Volumetric Fusion Net (Xia et al. 2018), the Distill DSM paper's Table 3 comparison.

Three 2D U-Nets segment the volume slice by slice along the axial (D), coronal (H) and
sagittal (W) axes; a light 3D net fuses the image with the three views' probability maps.
Xia et al. train the 2D nets first and the fusion net on their frozen outputs; here the
whole net trains end to end from the one loss on the fused output (one training loop for
every model). Neither the Distill DSM paper nor docs/architectures.md gives VFN's layer widths,
so the parts are ours: the Table 1 2D U-Net per view and a residual 3D U-Net (base 8, one
block per level, 4 levels) as the fusion net.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from harness.families.distill_dsm.unet2d import UNet2D
from harness.families.distill_dsm.unet3d import ResidualUNet3D
from harness.registry import MODELS

# Permutation bringing each view's slicing axis to D, and its inverse.
_VIEWS = {"axial": (0, 1, 2, 3, 4), "coronal": (0, 1, 3, 2, 4), "sagittal": (0, 1, 4, 2, 3)}


def _inverse(p: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted(range(len(p)), key=p.__getitem__))


@MODELS.register("vfn")
class VFN(nn.Module):
    """Three view-wise 2D U-Nets + a 3D fusion net.

    Args:
        in_channels, out_channels: image channels and predicted regions.
        widths: the 2D U-Nets' widths (Table 1's 16, 32, 64, 128, 128 by default).
        fusion_width, fusion_blocks: the 3D fusion net's base width and blocks per level.

    Shapes: (N, in_channels, D, H, W) -> (N, out_channels, D, H, W); every side divisible
    by 16 (each side is some view's in-plane side).
    """

    default_input_size = (32, 32, 32)
    landscape = {"default": {}}

    def __init__(self, in_channels: int = 4, out_channels: int = 3, widths: Sequence[int] = (16, 32, 64, 128, 128),
                 fusion_width: int = 8, fusion_blocks: Sequence[int] = (1, 1, 1, 1)):
        super().__init__()
        self.views = nn.ModuleDict({v: UNet2D(in_channels, out_channels, widths) for v in _VIEWS})
        self.fusion = ResidualUNet3D(in_channels + 3 * out_channels, out_channels, fusion_width, fusion_blocks,
                                     dropout=0.0)

    def check_input(self, spatial: Sequence[int]) -> None:
        f = 2 ** len(self.views["axial"].down)
        if any(s % f for s in spatial):
            raise ValueError(f"patch {tuple(spatial)}: every side must be divisible by {f} (one view's plane)")
        self.fusion.check_input(spatial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = []
        for name, net in self.views.items():
            p = _VIEWS[name]
            probs.append(torch.sigmoid(net(x.permute(p)).permute(_inverse(p))))
        return self.fusion(torch.cat([x, *probs], dim=1))
