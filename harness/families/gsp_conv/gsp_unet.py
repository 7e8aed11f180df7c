"""The tiny 3D U-Net of GSP-Conv (He et al., MICCAI 2021, Sec. 3 and Fig. 2).

The paper's supplement (exact widths) is not available; ``docs/architectures.md``
gives the best reading: 5 stages of a "Conv Block" (two convs + norm + ReLU),
max-pool down, trilinear up, concat skips. With widths (16, 32, 64, 128, 256),
pointwise convs, 4 inputs and 3 outputs this is 220,915 parameters (paper: 0.25M
for CSC+Dec); the gap is reported, not hidden.

Variants (Table 1, Table 2, Sec. 3.2):
- ``conv="conv3"``: the 3D FCN baseline (all 3x3x3).
- ``conv="pointwise"``: pointwise FCN; with ``insert=None`` the no-GS baseline.
- ``insert`` in CSC | CCS | CSCS | CSCSUpShift places Group Shift per Fig. 2.
- ``gs_in`` encoder | decoder | both: which blocks get Group Shift.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from harness.models.blocks import ConvNormAct
from harness.families.gsp_conv.group_shift import GroupShift
from harness.ops.upsample import Upsample2x
from harness.registry import MODELS, UnknownNameError

INSERTS = ("CSC", "CCS", "CSCS", "CSCSUpShift")
CONVS = {"conv3": 3, "pointwise": 1}
GS_IN = ("encoder", "decoder", "both")
UPSAMPLES = ("trilinear", "nearest", "transpose")


class GSPBlock(nn.Sequential):
    """Fig. 2 "Conv Block": ``n_convs`` x ConvNormAct with Group Shift inserted.

    CSC shifts after the first conv, CCS after the last, CSCS (and CSCSUpShift)
    after every conv. ``insert=None`` gives a plain block.

    Shapes: (N, in_channels, D, H, W) -> (N, out_channels, D, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, n_convs: int = 2,
                 insert: str | None = None, groups: Sequence[int] = (1, 1, 1), shift_ratio: float = 0.5,
                 norm: str = "batch"):
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers.append(ConvNormAct(in_channels if i == 0 else out_channels, out_channels, kernel_size, norm))
            last = i == n_convs - 1
            if insert in ("CSCS", "CSCSUpShift") or (insert == "CSC" and i == 0 and not last) or (
                insert == "CCS" and last
            ):
                layers.append(GroupShift(groups, shift_ratio))
        super().__init__(*layers)


@MODELS.register("gsp_unet")
class GSPUNet(nn.Module):
    """Tiny 3D U-Net with pointwise / 3x3x3 convs and Group Shift.

    Args:
        in_channels, out_channels: image channels and predicted channels (regions).
        widths: channels per stage (its length is the number of stages).
        conv: ``conv3`` (3D FCN) or ``pointwise``.
        insert: Group Shift position (``INSERTS``) or None for no shift.
        groups: spatial groups (g_d, g_h, g_w) per stage, one triple per stage.
        shift_ratio: C_s / C in (0, 1].
        gs_in: ``encoder``, ``decoder`` or ``both``.
        convs_per_block: convolutions per Conv Block.
        upsample: ``trilinear``, ``nearest`` or ``transpose`` (learned, 2x2x2).
        norm: ``batch``, ``instance``, ``group`` or ``none``.

    Shapes: (N, in_channels, D, H, W) -> (N, out_channels, D, H, W), with D, H, W
    divisible by 2**(len(widths)-1) and each stage's size by its groups.
    """

    default_input_size = (16, 32, 32)  # smallest useful (D, H, W) for the default 5 stages (timm-style metadata)
    # Configurations in the efficiency landscape (``landscape: true`` studies); groups fit any
    # patch divisible by 32 (stage 5 at 1/16 is then even along every axis).
    landscape = {
        "fcn3d": {"conv": "conv3"},
        "pointwise": {"conv": "pointwise"},
        "csc_dec": {"conv": "pointwise", "insert": "CSC", "gs_in": "decoder",
                    "groups": [[2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]},
    }

    def __init__(self, in_channels: int = 4, out_channels: int = 3, widths: Sequence[int] = (16, 32, 64, 128, 256),
                 conv: str = "pointwise", insert: str | None = None, groups: Sequence[Sequence[int]] | None = None,
                 shift_ratio: float = 0.5, gs_in: str = "both", convs_per_block: int = 2,
                 upsample: str = "trilinear", norm: str = "batch"):
        super().__init__()
        if conv not in CONVS:
            raise UnknownNameError("conv", conv, list(CONVS), "model.conv")
        if insert is not None and insert not in INSERTS:
            raise UnknownNameError("insert position", insert, list(INSERTS), "model.insert")
        if gs_in not in GS_IN:
            raise UnknownNameError("gs_in", gs_in, list(GS_IN), "model.gs_in")
        if upsample not in UPSAMPLES:
            raise UnknownNameError("upsample", upsample, list(UPSAMPLES), "model.upsample")
        if not 0.0 < shift_ratio <= 1.0:
            raise ValueError(f"model.shift_ratio: {shift_ratio} is outside (0, 1]")
        n = len(widths)
        groups = [tuple(g) for g in groups] if groups is not None else [(1, 1, 1)] * n
        if len(groups) != n or any(len(g) != 3 for g in groups):
            raise ValueError(f"model.groups: need {n} triples (one per stage), got {groups}")
        self.widths, self.groups = tuple(widths), groups
        k = CONVS[conv]
        enc_ins = insert if gs_in in ("encoder", "both") else None
        dec_ins = insert if gs_in in ("decoder", "both") else None

        def block(cin, cout, stage, ins):
            return GSPBlock(cin, cout, k, convs_per_block, ins, groups=groups[stage], shift_ratio=shift_ratio, norm=norm)

        self.encoder = nn.ModuleList(
            block(in_channels if i == 0 else widths[i - 1], widths[i], i, enc_ins) for i in range(n)
        )
        self.pool = nn.MaxPool3d(2)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in reversed(range(n - 1)):
            ups: list[nn.Module] = [
                nn.ConvTranspose3d(widths[i + 1], widths[i + 1], 2, stride=2) if upsample == "transpose"
                else Upsample2x() if upsample == "trilinear"  # nn.Upsample's numbers, bit for bit, faster on CPU
                else nn.Upsample(scale_factor=2, mode=upsample)
            ]
            if dec_ins == "CSCSUpShift":
                ups.append(GroupShift(groups[i], shift_ratio))
            self.up.append(nn.Sequential(*ups))
            self.decoder.append(block(widths[i + 1] + widths[i], widths[i], i, dec_ins))
        self.head = nn.Conv3d(widths[0], out_channels, 1)

    def stage_sizes(self, spatial: Sequence[int]) -> list[tuple[int, ...]]:
        return [tuple(s // 2**i for s in spatial) for i in range(len(self.widths))]

    def check_input(self, spatial: Sequence[int]) -> None:
        """Raise ValueError naming the stage when ``spatial`` (D, H, W) cannot be used."""
        f = 2 ** (len(self.widths) - 1)
        if any(s % f for s in spatial):
            raise ValueError(f"patch size {tuple(spatial)} must be divisible by {f} ({len(self.widths)} stages)")
        uses_gs = any(isinstance(m, GroupShift) for m in self.modules())
        for i, (size, g) in enumerate(zip(self.stage_sizes(spatial), self.groups)):
            if uses_gs and any(s % gi for s, gi in zip(size, g)):
                raise ValueError(
                    f"model.groups: stage {i + 1} groups {g} do not divide its feature size {size} "
                    f"(patch {tuple(spatial)}); each group count must divide D, H, W of its stage"
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, enc in enumerate(self.encoder):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.decoder):
            x = dec(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)
