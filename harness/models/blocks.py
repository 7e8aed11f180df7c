"""Shared building blocks (MONAI style: channels first, shapes in docstrings)."""
from __future__ import annotations

from torch import nn

from harness.registry import UnknownNameError

NORMS = ("batch", "instance", "group", "none")


def make_norm(norm: str, channels: int) -> nn.Module:
    """3D normalisation by name; ``group`` uses min(8, C) groups."""
    if norm == "batch":
        return nn.BatchNorm3d(channels)
    if norm == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if norm == "none":
        return nn.Identity()
    raise UnknownNameError("norm", norm, list(NORMS))


class ConvNormAct(nn.Sequential):
    """Conv3d (no bias: the norm has one) -> norm -> ReLU.

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: 1 (pointwise) or 3 (3x3x3, padding 1).
        norm: one of ``NORMS``.

    Shapes: (N, in_channels, D, H, W) -> (N, out_channels, D, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, norm: str = "batch"):
        super().__init__(
            nn.Conv3d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=norm == "none"),
            make_norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )
