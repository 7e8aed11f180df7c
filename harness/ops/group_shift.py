"""Group Shift (GS), He et al., "Group Shift Pointwise Convolution for Volumetric
Medical Image Segmentation", MICCAI 2021, Sec. 2 and Eqs. 1-8.

The volume is cut into g_d x g_h x g_w spatial groups; the first C_s channels are
cut into channel groups of C_g channels; channel group k moves every spatial group
k steps forward in the flattened group index (Eq. 2, depth index fastest), cyclic
mod g_d*g_h*g_w (Eq. 4); voxels keep their position inside the group (Eqs. 5-7).

Implementation: two exact realisations of the same permutation, chosen per (shape, groups,
ratio, device, dtype) on the first call: ``box`` outright when its copies' dispatch costs less
than an in-cache clone of the data, otherwise the faster of the two, timed once (as
``cudnn.benchmark`` does):

- ``box``: a shift of the flattened group index by j is a mixed-radix add (digits a, b, c
  over g_d, g_h, g_w). Splitting the source by the two carries turns it into at most 8 box
  copies per channel group, each box a run of whole W rows (a W row is rotated by whole
  groups, so its copies stay long and contiguous). Every element is read and written once,
  as in ``x.clone()``, but each copy is a dispatch: fastest for large tensors, few groups.
- ``rows``: every output W row is a rotation of one input W row, i.e. a run of W elements
  of the input with every row written twice side by side. So one copy doubles the rows and
  one gather (``embedding``) over the overlapping length-W windows of that buffer fetches all
  rows: two dispatches whatever the number of channel groups (the deep stages, where the
  box plan issues hundreds of tiny copies).
"""
from __future__ import annotations

import time
from functools import lru_cache

import numpy as np
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


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape)  # plain ints: a jit trace hands out traced sizes


@lru_cache(maxsize=256)
def _strided_plan(shape: tuple[int, ...], groups: tuple[int, int, int], shift_ratio: float):
    """The box copies as (size, storage offset) pairs of views of a contiguous ``shape`` tensor."""
    stride = torch.empty(shape, device="meta").stride()

    def view(box: Box) -> tuple[list[int], int]:
        return [shape[0], *(s.stop - s.start for s in box)], sum(s.start * st for s, st in zip(box, stride[1:]))

    return [(view(src), view(dst)) for src, dst in _plan(shape, groups, shift_ratio)[0]], stride


def _apply(x: torch.Tensor, groups: tuple[int, int, int], shift_ratio: float, inverse: bool) -> torch.Tensor:
    """``box``: one copy per box, issued together (``_foreach_copy_``) to keep the dispatch cost low."""
    plan, stride = _strided_plan(_shape(x), groups, shift_ratio)
    x = x.contiguous()
    out = torch.empty_like(x)
    if inverse:
        plan = [(dst, src) for src, dst in plan]
    base = x.storage_offset()  # a contiguous view into a larger buffer (a slice of cat's gradient)
    torch._foreach_copy_([out.as_strided(size, stride, off) for _, (size, off) in plan],
                         [x.as_strided(size, stride, base + off) for (size, off), _ in plan])
    return out


@lru_cache(maxsize=256)
def _row_starts(chw: tuple[int, ...], groups: tuple[int, int, int], shift_ratio: float, inverse: bool) -> np.ndarray:
    """(C*D*H,) int64: where output row i starts in one sample's row-doubled buffer (R, 2, W).

    The box plan applied to element indices (in NumPy, so a jit trace records none of it), so
    both methods are the same map.
    """
    C, D, H, W = chw
    source, index = np.empty((C, D, H, W), np.int64), np.arange(C * D * H * W).reshape(C, D, H, W)
    for src, dst in _plan((1, C, D, H, W), groups, shift_ratio)[0]:
        if inverse:
            src, dst = dst, src
        source[dst] = index[src]
    first = source.reshape(C * D * H, W)[:, 0]  # flat source index of each output row's first element
    return (first // W) * (2 * W) + first % W


@lru_cache(maxsize=256)
def _row_index(shape: tuple[int, ...], groups: tuple[int, int, int], shift_ratio: float, inverse: bool,
               device: torch.device) -> torch.Tensor:
    N, C, D, H, W = shape
    starts = _row_starts(shape[1:], groups, shift_ratio, inverse)
    index = np.arange(N)[:, None] * (C * D * H * 2 * W) + starts[None, :]
    return torch.from_numpy(index.reshape(-1)).to(device)


def _apply_rows(x: torch.Tensor, groups: tuple[int, int, int], shift_ratio: float, inverse: bool) -> torch.Tensor:
    shape = _shape(x)
    W = shape[-1]
    rows = x.reshape(-1, 1, W)
    doubled = torch.cat([rows, rows], dim=1)  # (N*R, 2, W): row r, then row r again
    windows = doubled.view(-1).as_strided((doubled.numel() - W + 1, W), (1, 1))  # every run of W
    return torch.nn.functional.embedding(_row_index(shape, groups, shift_ratio, inverse, x.device), windows).view(shape)


_METHOD: dict[tuple, str] = {}
_DISPATCH_S = 5e-6  # bound on one box copy's fixed CPU cost (about 3 us per view pair in _foreach_copy_)
_CLONE_S_PER_ELEMENT = 1e-10  # 10^10 elements per second: a fast, in-cache clone


def _faster(fa, fb, x: torch.Tensor, rounds: int = 3) -> bool:
    """Whether ``fa`` is faster than ``fb``: medians of alternated runs after a warm-up of each."""
    times: tuple[list[float], list[float]] = ([], [])
    for r in range(rounds + 1):
        for f, ts in zip((fa, fb), times):
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            t0 = time.perf_counter()
            f()
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            if r:
                ts.append(time.perf_counter() - t0)
    return sorted(times[0])[rounds // 2] <= sorted(times[1])[rounds // 2]


def _shift(x: torch.Tensor, groups: tuple[int, int, int], shift_ratio: float, inverse: bool) -> torch.Tensor:
    key = (_shape(x), groups, shift_ratio, x.device.type, x.dtype)
    method = _METHOD.get(key)
    if method is None:
        copies = len(_strided_plan(key[0], groups, shift_ratio)[0])
        if copies * _DISPATCH_S < x.numel() * _CLONE_S_PER_ELEMENT:
            method = "box"  # dispatch below an in-cache clone: rows, moving the data twice more, cannot win
        else:  # both give identical results; keep the faster on this machine (once per shape)
            method = "box" if _faster(lambda: _apply(x, groups, shift_ratio, inverse),
                                      lambda: _apply_rows(x, groups, shift_ratio, inverse), x) else "rows"
        _METHOD[key] = method
    if method == "box":
        return _apply(x, groups, shift_ratio, inverse)
    return _apply_rows(x, groups, shift_ratio, inverse)


class _GroupShiftFn(torch.autograd.Function):
    # A permutation: the backward pass is the inverse permutation of the gradient.
    @staticmethod
    def forward(ctx, x, groups, shift_ratio):
        ctx.groups, ctx.shift_ratio = groups, shift_ratio
        # Under a jit trace (fvcore's count) the op is one node, a zero-MAC permutation: its
        # inner copies, gathers and first-call timings stay out of the graph.
        tracing = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)
        try:
            return _shift(x.contiguous(), groups, shift_ratio, inverse=False)
        finally:
            torch._C._set_tracing_state(tracing)

    @staticmethod
    def backward(ctx, grad):
        return _shift(grad.contiguous(), ctx.groups, ctx.shift_ratio, inverse=True), None, None


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
