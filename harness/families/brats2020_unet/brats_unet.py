"""Self-ensembled, deeply supervised 3D U-Net of the BraTS 2020 solution (Henry et al. 2020).

Architecture facts (Sec. 2.1, Fig. 2, and the authors' pipeline A, ``EquiUnet``, width 48;
docs/architectures.md):

- every conv 3^3 without bias, then the norm (GroupNorm with min(16, C) groups, or affine
  InstanceNorm: pipelines A and B), then ReLU;
- encoder, four stages of two convs: 4 -> 48 -> 48 at full size, then a 2^3 max pool before
  each of 48 -> 96 -> 96, 96 -> 192 -> 192, 192 -> 384 -> 384;
- ``bottom``: two 3^3 convs 384 -> 384 with dilation 2 (a "pseudo fifth stage" at the fourth
  stage's size), then ``bottom_2``: one conv on concat(enc4, bottom), 768 -> 192;
- decoder, trilinear x2 (align_corners) and concat with the encoder stage: 384 -> 192 -> 96,
  192 -> 96 -> 48, 96 -> 48 -> 48; a 1^3 conv 48 -> 3 with bias; sigmoid outputs (ET, TC,
  WT in the code; the harness's order is the data's regions).

23,152,563 parameters at 4 in / 3 out (GroupNorm and InstanceNorm alike).

Deep supervision (Sec. 2.2): a 1^3 conv with bias to the outputs, then trilinear upsampling to
the input size, on ``bottom`` (x8), ``bottom_2`` (x8), dec3 (x4) and dec2 (x2): +2,172
parameters (23,154,735). The heads run in training only; ``train.deep_supervision`` weighs
their losses (mean of the five in the code, sum in the paper).

Attention (Sec. 2.1, "3D attention U-Net"): CBAM (``harness.families.brats2020_unet.cbam``) after the four encoder
stages, ``bottom`` and ``bottom_2``: +53,025 parameters (23,205,588; with deep supervision
23,207,760). The skip connections carry the attended features, as in the code.

Conv MACs at 1 x 4 x 128^3: 997.8 G (999.4 G with CBAM); fvcore adds the norms, upsampling
and the gates' elementwise work (tests/test_brats_unet.py pins both).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness.families.brats2020_unet.cbam import CBAM3d
from harness.registry import MODELS

NORMS = ("group", "instance")


def brats_norm(norm: str, channels: int) -> nn.Module:
    """GroupNorm with min(16, C) groups (halved until they divide C: the code's rule) or affine
    InstanceNorm."""
    if norm == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if norm != "group":
        raise ValueError(f"model.norm: unknown {norm!r}; allowed: {', '.join(NORMS)}")
    groups = min(16, channels)
    while channels % groups:
        groups //= 2
    return nn.GroupNorm(groups, channels)


def conv_norm_relu(cin: int, cout: int, norm: str, dilation: int = 1) -> nn.Sequential:
    """3^3 conv (no bias; padding = dilation keeps the size) -> norm -> ReLU.

    Shapes: (N, cin, D, H, W) -> (N, cout, D, H, W).
    """
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
                         brats_norm(norm, cout), nn.ReLU(inplace=True))


def stage(cin: int, cmid: int, cout: int, norm: str, dilation: int = 1) -> nn.Sequential:
    """Two conv-norm-ReLU layers (the code's ``UBlock``). Shapes: (N, cin, ...) -> (N, cout, ...)."""
    return nn.Sequential(conv_norm_relu(cin, cmid, norm, dilation), conv_norm_relu(cmid, cout, norm, dilation))


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=True)


@MODELS.register("brats_unet")
class BraTSUNet(nn.Module):
    """The BraTS 2020 3D U-Net (module docstring).

    Args:
        in_channels, out_channels: image channels (4) and predicted regions (3).
        width: the first stage's width (48); stages 2-4 double it.
        norm: ``group`` (pipeline A) or ``instance`` (pipeline B).
        attention: CBAM after the encoder stages and the bottleneck (the "attention block" row
            of Table 2).
        spatial_relu: the authors' ReLU inside CBAM's spatial gate (False: original CBAM).
        reduction: CBAM's MLP ratio r (16; a narrow net needs r <= width).
        deep_supervision: the four auxiliary heads (returned in training as ``outputs["deep"]``).

    Shapes: (N, in_channels, D, H, W) -> (N, out_channels, D, H, W), D, H, W divisible by 8;
    in training with deep supervision ``{"seg": (N, K, D, H, W), "deep": 4 x (N, K, D, H, W)}``.
    """

    default_input_size = (32, 32, 32)
    # Width 16 in the efficiency landscape (its quick scale trains every family for 200 steps on
    # 2 CPU cores); the paper's width-48 net is costed at 128^3 in brats20_cost.
    landscape = {"w16": {"width": 16}, "w16_cbam": {"width": 16, "attention": True}}

    def __init__(self, in_channels: int = 4, out_channels: int = 3, width: int = 48, norm: str = "group",
                 attention: bool = False, spatial_relu: bool = True, reduction: int = 16,
                 deep_supervision: bool = False):
        super().__init__()
        if width < 2:
            raise ValueError(f"model.width: must be >= 2, got {width}")
        if attention and width < reduction:
            raise ValueError(f"model.width: CBAM's MLP (C -> C/{reduction}) needs width >= {reduction}, got {width}")
        brats_norm(norm, 1)  # fails early on an unknown norm
        f = [width * 2**i for i in range(4)]
        self.encoders = nn.ModuleList([stage(cin, c, c, norm) for cin, c in zip([in_channels, *f[:3]], f)])
        self.bottom = stage(f[3], f[3], f[3], norm, dilation=2)
        self.bottom_2 = conv_norm_relu(2 * f[3], f[2], norm)
        self.decoders = nn.ModuleList([stage(2 * f[2], f[2], f[1], norm), stage(2 * f[1], f[1], f[0], norm),
                                       stage(2 * f[0], f[0], f[0], norm)])
        self.head = nn.Conv3d(f[0], out_channels, 1)
        cbam = (lambda c: CBAM3d(c, reduction, spatial_relu, norm)) if attention else (lambda c: nn.Identity())
        self.enc_attention = nn.ModuleList([cbam(c) for c in f])
        self.bottom_attention, self.bottom_2_attention = cbam(f[3]), cbam(f[2])
        # Heads on bottom, bottom_2, dec3, dec2, upsampled x8, x8, x4, x2 to the input size.
        self.deep = nn.ModuleList([nn.Conv3d(c, out_channels, 1) for c in (f[3], f[2], f[1], f[0])]) \
            if deep_supervision else None

    def check_input(self, size: Sequence[int]) -> None:
        if any(int(s) % 8 for s in size):
            raise ValueError(f"train.patch: the U-Net pools three times, so every size must be divisible by 8; "
                             f"got {list(size)}")

    def forward(self, x: torch.Tensor):
        self.check_input(x.shape[2:])
        skips = []
        for i, (enc, att) in enumerate(zip(self.encoders, self.enc_attention)):
            x = att(enc(F.max_pool3d(x, 2) if i else x))
            skips.append(x)
        bottom = self.bottom_attention(self.bottom(x))
        y = self.bottom_2_attention(self.bottom_2(torch.cat([skips[3], bottom], dim=1)))
        feats = [bottom, y]
        for dec, skip in zip(self.decoders, reversed(skips[:3])):
            y = dec(torch.cat([skip, _up2(y)], dim=1))
            feats.append(y)
        seg = self.head(y)
        if self.deep is None or not self.training:
            return seg
        size = tuple(seg.shape[2:])
        deep = [F.interpolate(h(f), size=size, mode="trilinear", align_corners=True)
                for h, f in zip(self.deep, feats[:4])]
        return {"seg": seg, "deep": deep}
