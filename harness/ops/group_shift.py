"""Group Shift (GS), He et al., "Group Shift Pointwise Convolution for Volumetric
Medical Image Segmentation", MICCAI 2021, Sec. 2 and Eqs. 1-8.

The volume is cut into g_d x g_h x g_w spatial groups; the first C_s channels are
cut into channel groups of C_g channels; channel group k moves every spatial group
k steps forward in the flattened group index (Eq. 2, depth index fastest), cyclic
mod g_d*g_h*g_w (Eq. 4); voxels keep their position inside the group (Eqs. 5-7).

Implementation: a shift of the flattened group index by j is a mixed-radix add
(digits a, b, c over g_d, g_h, g_w). Splitting the source by the two carries
turns it into at most 8 box copies per channel group, each box being a run of
whole W rows (a W-row is rotated by whole groups, so its copies stay long and
contiguous). Every element is read once and written once, as in ``x.clone()``.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from harness.registry import OPS

Box = tuple[slice, slice, slice, slice]  # channel, D, H, W


def _check(shape: tuple[int, ...], groups: tuple[int, int, int], shift_ratio: float) -> None:
    if len(shape) != 5:
        raise ValueError(f"group_shift expects (N, C, D, H, W), got shape {tuple(shape)}")
    if len(groups) != 3 or any(int(g) != g or g < 1 for g in groups):
        raise ValueError(f"groups must be three positive integers (g_d, g_h, g_w), got {groups}")
    if not 0.0 < shift_ratio <= 1.0:
        raise ValueError(f"shift_ratio must be in (0, 1], got {shift_ratio}")
    for axis, size, g in zip("DHW", shape[2:], groups):
        if size % g:
            raise ValueError(
                f"group_shift: {axis}={size} is not divisible by its group count {g} "
                f"(groups={tuple(groups)}, input spatial size {tuple(shape[2:])})"
            )


@lru_cache(maxsize=256)
def _plan(shape: tuple[int, ...], groups: tuple[int, int, int], shift_ratio: float) -> tuple[list[tuple[Box, Box]], int]:
    """Box copies (src, dst) that realise Eqs. 2-8 for this shape; also returns C_s."""
    _, C, D, H, W = shape
    gd, gh, gw = groups
    d, h, w = D // gd, H // gh, W // gw
    G = gd * gh * gw
    c_s = int(shift_ratio * C)
    c_g = max(1, c_s // G)
    copies: list[tuple[Box, Box]] = []
    full = (slice(0, D), slice(0, H), slice(0, W))
    # Channels whose step is 0 mod G, and the kept channels [C_s, C), do not move.
    identity = [(0, min(c_g, c_s))] if c_s else []
    for k in range(1, -(-c_s // c_g)):
        c0, c1 = k * c_g, min((k + 1) * c_g, c_s)
        j = k % G
        if j == 0:
            identity.append((c0, c1))
            continue
        ch = slice(c0, c1)
        ja, jb, jc = j % gd, (j // gd) % gh, j // (gd * gh)
        for carry1 in (0, 1):  # a' = a + ja - carry1*gd
            a0, a1 = (0, gd - ja) if carry1 == 0 else (gd - ja, gd)
            if a0 >= a1:
                continue
            da = ja - carry1 * gd
            t = jb + carry1
            for carry2 in (0, 1):  # b' = b + t - carry2*gh
                b0, b1 = (0, gh - t) if carry2 == 0 else (gh - t, gh)
                if b0 >= b1:
                    continue
                db = t - carry2 * gh
                u = (jc + carry2) % gw  # rotation of each W row by u groups
                src_d, dst_d = slice(a0 * d, a1 * d), slice((a0 + da) * d, (a1 + da) * d)
                src_h, dst_h = slice(b0 * h, b1 * h), slice((b0 + db) * h, (b1 + db) * h)
                if u == 0:
                    copies.append(((ch, src_d, src_h, full[2]), (ch, dst_d, dst_h, full[2])))
                else:
                    r = u * w
                    copies.append(((ch, src_d, src_h, slice(0, W - r)), (ch, dst_d, dst_h, slice(r, W))))
                    copies.append(((ch, src_d, src_h, slice(W - r, W)), (ch, dst_d, dst_h, slice(0, r))))
    if c_s < C:
        identity.append((c_s, C))
    merged: list[tuple[int, int]] = []
    for c0, c1 in sorted(identity):
        if merged and merged[-1][1] == c0:
            merged[-1] = (merged[-1][0], c1)
        else:
            merged.append((c0, c1))
    for c0, c1 in merged:
        box = (slice(c0, c1), *full)
        copies.append((box, box))
    return copies, c_s


def _apply(x: torch.Tensor, copies: list[tuple[Box, Box]], inverse: bool) -> torch.Tensor:
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for src, dst in copies:
        if inverse:
            src, dst = dst, src
        out[(slice(None), *dst)].copy_(x[(slice(None), *src)])
    return out


class _GroupShiftFn(torch.autograd.Function):
    # A permutation: the backward pass is the inverse permutation of the gradient.
    @staticmethod
    def forward(ctx, x, groups, shift_ratio):
        copies, _ = _plan(tuple(x.shape), groups, shift_ratio)
        ctx.copies = copies
        return _apply(x, copies, inverse=False)

    @staticmethod
    def backward(ctx, grad):
        return _apply(grad.contiguous(), ctx.copies, inverse=True), None, None


def group_shift(x: torch.Tensor, groups, shift_ratio: float = 0.5) -> torch.Tensor:
    """Group Shift of ``x`` (N, C, D, H, W) -> same shape (paper Eqs. 1-8).

    ``groups = (g_d, g_h, g_w)`` must divide (D, H, W). The first
    ``C_s = int(shift_ratio * C)`` channels are shifted in channel groups of
    ``C_g = max(1, C_s // (g_d*g_h*g_w))`` channels, group k by k spatial groups.
    """
    groups = tuple(int(g) for g in groups)
    _check(tuple(x.shape), groups, shift_ratio)
    return _GroupShiftFn.apply(x, groups, float(shift_ratio))


@OPS.register("group_shift")
class GroupShift(nn.Module):
    """Parameter-free Group Shift layer (He et al. 2021, Eqs. 2-8).

    Args:
        groups: spatial groups (g_d, g_h, g_w) along (D, H, W).
        shift_ratio: fraction of channels shifted, C_s = int(shift_ratio * C), in (0, 1].

    Shapes: (N, C, D, H, W) -> (N, C, D, H, W).
    """

    def __init__(self, groups, shift_ratio: float = 0.5):
        super().__init__()
        self.groups = tuple(int(g) for g in groups)
        if not 0.0 < shift_ratio <= 1.0:
            raise ValueError(f"shift_ratio must be in (0, 1], got {shift_ratio}")
        self.shift_ratio = float(shift_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_shift(x, self.groups, self.shift_ratio)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, shift_ratio={self.shift_ratio}"
