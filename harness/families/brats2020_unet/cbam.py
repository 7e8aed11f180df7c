"""CBAM, the Convolutional Block Attention Module (Woo et al., ECCV 2018), in 3D.

A channel gate then a spatial gate (Woo et al., Eqs. 1-3):

    M_c(F) = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))          (Eq. 2), F' = M_c(F) * F
    M_s(F') = sigmoid(f_7x7x7([max_c F'; mean_c F']))              (Eq. 3), F'' = M_s(F') * F'

The MLP is C -> C/r -> C with biases and a ReLU between (shared by both pools, r = 16).
The spatial branch ``f`` is the 7^3 conv 2 -> 1 without bias followed by a norm; the BraTS
2020 authors' code (``src/models/layers.py``, ``BasicConv``) also puts a ReLU after that norm,
so their gate sigmoid(relu(.)) lies in [0.5, 1) and never suppresses a voxel below half.
``spatial_relu`` chooses: True = the authors' code, False = original CBAM.

Parameters per module: 2 C^2/r + C/r + C (MLP) + 686 (conv) + 2 (a one-channel affine norm);
six modules at widths 48, 96, 192, 384, 384, 192 add 53,025 (docs/architectures.md).
"""
from __future__ import annotations

import torch
from torch import nn

from harness.registry import OPS


def gate_norm(norm: str) -> nn.Module:
    """The spatial gate's norm on its single channel: GroupNorm(1, 1) (the authors' group norm
    rule gives one group to one channel) or affine InstanceNorm."""
    if norm == "group":
        return nn.GroupNorm(1, 1)
    if norm == "instance":
        return nn.InstanceNorm3d(1, affine=True)
    raise ValueError(f"model.norm: unknown {norm!r}; allowed: group, instance")


@OPS.register("cbam")
class CBAM3d(nn.Module):
    """Channel then spatial attention (module docstring, Woo et al. Eqs. 2-3).

    Args:
        channels: C; must be >= ``reduction`` so the MLP keeps a hidden unit.
        reduction: r, the MLP's bottleneck ratio (16).
        spatial_relu: ReLU between the spatial gate's norm and its sigmoid (the BraTS 2020 code).
        norm: the spatial gate's norm, ``group`` or ``instance``.

    Shapes: (N, C, D, H, W) -> (N, C, D, H, W).
    """

    def __init__(self, channels: int, reduction: int = 16, spatial_relu: bool = True, norm: str = "group"):
        super().__init__()
        if channels < reduction:
            raise ValueError(f"CBAM: {channels} channels leave no hidden unit at reduction {reduction}")
        hidden = channels // reduction
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        self.spatial = nn.Sequential(nn.Conv3d(2, 1, 7, padding=3, bias=False), gate_norm(norm),
                                     *([nn.ReLU(inplace=True)] if spatial_relu else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        pooled = torch.stack([x.mean(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))])  # (2, N, C)
        x = x * torch.sigmoid(self.mlp(pooled).sum(0)).view(n, c, 1, 1, 1)
        maps = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)  # [max; mean] (code order)
        if maps.device.type == "cpu":
            # The same sums, another kernel: in NCDHW PyTorch's CPU conv computes this conv's input
            # gradient (1 -> 2 channels, 7^3) on a slow path; in channels-last oneDNN does. Forward +
            # backward at 2 x 2 x 32 x 64 x 64 on 2 threads: about 3.5x faster (harness bench, BraTS
            # 2020 section, gate columns).
            maps = maps.contiguous(memory_format=torch.channels_last_3d)
        return x * torch.sigmoid(self.spatial(maps))
