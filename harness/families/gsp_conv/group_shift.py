"""Group Shift (GS), He et al., "Group Shift Pointwise Convolution for Volumetric
Medical Image Segmentation", MICCAI 2021, Sec. 2 and Eqs. 1-8.

The volume is cut into g_d x g_h x g_w spatial groups; the first C_s channels are
cut into channel groups of C_g channels; channel group k moves every spatial group
k steps forward in the flattened group index (Eq. 2, depth index fastest), cyclic
mod g_d*g_h*g_w (Eq. 4); voxels keep their position inside the group (Eqs. 5-7).

Implementation: three exact realisations of the same permutation, the fastest kept per (shape,
groups, ratio, device, dtype), timed once on the first call (as ``cudnn.benchmark`` does);
``rows`` is not tried where the box copies' dispatch costs less than an in-cache clone:

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
- ``kernel`` (CPU, where a C compiler is at hand): the box plan's runs, every rotated W row
  written front to back, in one call of ``group_shift_kernel.c``: no dispatch per box and no
  second pass over the data. A box's rotated rows lie side by side, so where the CPU has
  AVX-512BW each 64 output bytes of them are two masked loads (from p + r and p + r - L, the
  masks periodic in p, from ``_rotation_masks``) and one store; threads come from torch's
  OpenMP team from 64 KB up. The middle and deep stages run at 1.1-3x a clone that itself
  runs at cache speed (``reports/bench``).
"""
from __future__ import annotations

import ctypes
import logging
import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness import compat
from harness.cache import cache_dir
from harness.cost import zero_cost
from harness.ops import native
from harness.registry import COST_HANDLES, OPS

log = logging.getLogger(__name__)

Box = tuple[slice, slice, slice, slice]  # channel, D, H, W


@lru_cache(maxsize=1024)  # once per layer shape: the check costs more than a deep stage's shift
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
def shift_plan(shape: tuple[int, ...], groups: tuple[int, int, int], shift_ratio: float) -> tuple[list[tuple[Box, Box]], int]:
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

    return [(view(src), view(dst)) for src, dst in shift_plan(shape, groups, shift_ratio)[0]], stride


def shift_boxes(x: torch.Tensor, groups: tuple[int, int, int], shift_ratio: float, inverse: bool) -> torch.Tensor:
    """``box``: one copy per box, issued together (``_foreach_copy_``) to keep the dispatch cost low."""
    plan, stride = _strided_plan(_shape(x), groups, shift_ratio)
    x = x.contiguous()
    out = torch.empty_like(x)
    if inverse:
        plan = [(dst, src) for src, dst in plan]
    base = x.storage_offset()  # a contiguous view into a larger buffer (a slice of cat's gradient)
    compat.foreach_copy([out.as_strided(size, stride, off) for _, (size, off) in plan],
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
    for src, dst in shift_plan((1, C, D, H, W), groups, shift_ratio)[0]:
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


def shift_rows(x: torch.Tensor, groups: tuple[int, int, int], shift_ratio: float, inverse: bool) -> torch.Tensor:
    shape = _shape(x)
    W = shape[-1]
    rows = x.reshape(-1, 1, W)
    doubled = torch.cat([rows, rows], dim=1)  # (N*R, 2, W): row r, then row r again
    windows = doubled.view(-1).as_strided((doubled.numel() - W + 1, W), (1, 1))  # every run of W
    return torch.nn.functional.embedding(_row_index(shape, groups, shift_ratio, inverse, x.device), windows).view(shape)


_KERNEL_SOURCE = Path(__file__).with_name("group_shift_kernel.c")
# -fno-tree-loop-distribute-patterns: keep the short-run loops from being turned into memcpy calls.
_KERNEL_FLAGS = ("-O3", "-shared", "-fPIC", "-pthread", "-fno-tree-loop-distribute-patterns")
_KERNEL_MERGE_MAX = 1 << 15  # runs up to 32K elements: long enough for memcpy's full speed
_KERNEL_BOX_MAX = 1 << 16  # elements per box: threads split the work at box boundaries
# Bytes a thread must have before another starts. With OpenMP, torch's team (awake after the
# previous op) made 256 KB tensors 1.4x and 1 MB ones 1.5x faster on 2 threads (125 KB: 1.1x;
# timed by hand at the deep stages' shapes, kernel alone);
# a fresh pthread per call (30-55 us, on a core that may be asleep) made 8 MB ones 1.6-2.2x
# slower and 16 MB ones 1.3-1.7x faster.
_KERNEL_BYTES_PER_THREAD = {True: 1 << 16, False: 1 << 23}  # keyed by "built with OpenMP"


@lru_cache(maxsize=1)
def load_kernel():
    """The compiled ``group_shift_kernel.c`` (``ctypes``), or None where it cannot be built.

    Built once with the system C compiler (``$CC``, else ``cc``) by ``harness.ops.native.build``
    (cached, under a file lock, a failure recorded and said once); a plain C file with no Python
    or torch headers, so it builds in under a second. With OpenMP (``-fopenmp``) where the compiler has
    it: its threads are then torch's (the loader binds ``libgomp.so.1`` to the copy torch
    loaded); else a pthread per call. ``HARNESS_GS_KERNEL=0`` turns it off.
    """
    if os.environ.get("HARNESS_GS_KERNEL", "1") == "0":
        return None
    command, cache = _kernel_command(), cache_dir()
    try:
        try:
            return _load(native.build([*command, "-fopenmp"], cache, _KERNEL_SOURCE))
        except native.BuildError:  # no OpenMP (e.g. Apple clang): pthreads
            return _load(native.build(command, cache, _KERNEL_SOURCE))
    except native.BuildError as e:  # no compiler, or it refuses the file: said once
        native.unavailable("group_shift", e)
        return None
    except OSError as e:  # built, but dlopen refuses it (e.g. a cache on a noexec mount)
        log.warning("group_shift: the compiled kernel does not load (%s); using the torch realisations", e)
        return None


def _kernel_command() -> list[str]:
    return [native.compiler(), *_KERNEL_FLAGS, str(_KERNEL_SOURCE)]


def _load(lib: Path) -> ctypes.CDLL:
    """The built kernel with its C signatures, its SIMD switched on where the CPU has it."""
    dll = ctypes.CDLL(str(lib))
    dll.gs_permute.restype = ctypes.c_int
    dll.gs_permute.argtypes = ([ctypes.c_void_p] * 3 + [ctypes.c_int64] * 4 + [ctypes.c_void_p, ctypes.c_int64]
                               + [ctypes.c_int])
    dll.gs_simd.restype = dll.gs_openmp.restype = ctypes.c_int
    dll.gs_simd.argtypes = [ctypes.c_int]
    dll.simd = bool(dll.gs_simd(1))  # rotated rows as masked 64-byte blocks where the CPU has AVX-512BW
    dll.bytes_per_thread = _KERNEL_BYTES_PER_THREAD[bool(dll.gs_openmp())]
    return dll


@lru_cache(maxsize=256)
def _kernel_boxes(chw: tuple[int, ...], groups: tuple[int, int, int], shift_ratio: float, inverse: bool) -> np.ndarray:
    """(n_boxes, 10) int64 rows (src, dst, n0, t0, n1, t1, n2, t2, len, rot) of ``group_shift_kernel.c``.

    The box plan's boxes for one sample, each a nest of runs over (C, D, H) with its W range as
    the run; the plan's two halves of a rotated W row become one box of whole rows, rotated (the
    kernel writes each output row front to back). A run that fills its level's stride absorbs
    that level (whole W rows merge their H rows, whole H planes their D planes) up to
    ``_KERNEL_MERGE_MAX`` elements; a box over ``_KERNEL_BOX_MAX`` elements is cut along its
    outer levels so threads get equal shares. Levels stay in memory order: the innermost, the
    kernel's tight loop, has the smallest stride (locality beats a longer inner loop).
    """
    C, D, H, W = chw
    strides = (D * H * W, H * W, W)
    out: list[list[int]] = []

    def emit(src: int, dst: int, levels: list[tuple[int, int]], length: int, rot: int) -> None:
        size = length
        for n, _ in levels:
            size *= n
        outer = next((i for i, (n, _) in enumerate(levels) if n > 1), None)
        if size <= _KERNEL_BOX_MAX or outer is None:
            out.append([src, dst, *(v for level in levels for v in level), length, rot])
            return
        n, t = levels[outer]
        per = max(1, _KERNEL_BOX_MAX * n // size)  # units of the outer level per piece
        for i in range(0, n, per):
            piece = list(levels)
            piece[outer] = (min(per, n - i), t)
            emit(src + i * t, dst + i * t, piece, length, rot)

    plan = iter(shift_plan((1, *chw), groups, shift_ratio)[0])
    for src, dst in plan:
        rot = 0
        if src[3] != slice(0, W):  # the first half of a rotated W row; the plan lists its other half next
            next(plan)
            rot = (src[3].start - dst[3].start) % W if not inverse else (dst[3].start - src[3].start) % W
            src, dst = (*src[:3], slice(0, W)), (*dst[:3], slice(0, W))
        if inverse:
            src, dst = dst, src
        levels = [(s.stop - s.start, t) for s, t in zip(src[:3], strides)]
        length = src[3].stop - src[3].start
        for i in (2, 1, 0):  # a run as long as the level's stride is contiguous with the next one
            n, t = levels[i]
            if rot or length != t or length * n > _KERNEL_MERGE_MAX:
                break
            length, levels[i] = length * n, (1, t)
        emit(*(sum(s.start * t for s, t in zip(box[:3], strides)) + box[3].start for box in (src, dst)), levels, length, rot)
    return np.ascontiguousarray(out, dtype=np.int64)


_KERNEL_MASK_PERIOD_MAX = 64  # rows whose block masks repeat less often (odd byte lengths) take the run copies


@lru_cache(maxsize=64)
def _rotation_masks(row_bytes: int, itemsize: int) -> np.ndarray:
    """(W, P) uint64 block masks of rows of ``row_bytes`` rotated by 0..W-1 elements (kernel).

    A box's rows lie side by side, so output byte p of a stretch of rows has row position
    q = p % L (L = ``row_bytes``) and comes from p + r if q < L - r, else from p + r - L, for a
    rotation of r bytes. Bit j of mask [rot, i] is set where byte j of the stretch's 64-byte
    block i takes the second; the pattern repeats every P = L / gcd(L, 64) blocks. Empty
    (P = 0) where P exceeds ``_KERNEL_MASK_PERIOD_MAX``.
    """
    period = row_bytes // math.gcd(row_bytes, 64)
    if period > _KERNEL_MASK_PERIOD_MAX:
        return np.zeros((0, 0), np.uint64)
    q = (64 * np.arange(period)[:, None] + np.arange(64)[None, :]) % row_bytes  # (P, 64)
    r = itemsize * np.arange(row_bytes // itemsize)[:, None, None]  # (W, 1, 1) bytes
    bits = np.packbits(q[None] >= row_bytes - r, axis=-1, bitorder="little")  # (W, P, 8)
    return np.ascontiguousarray(bits).view("<u8")[..., 0].astype(np.uint64)


@lru_cache(maxsize=256)
def _kernel_call(shape: tuple[int, ...], groups: tuple[int, int, int], shift_ratio: float, inverse: bool, itemsize: int):
    """The kernel's arguments after the two data pointers, the most threads its bytes are worth
    (the call takes the least of that and torch's thread count at the time: a trial sets its
    own), and the arrays the pointers point into (held here, so they outlive their caches)."""
    N, C, D, H, W = shape
    boxes = _kernel_boxes((C, D, H, W), groups, shift_ratio, inverse)
    masks = _rotation_masks(W * itemsize, itemsize)
    threads = max(1, N * C * D * H * W * itemsize // load_kernel().bytes_per_thread)
    args = (boxes.ctypes.data, len(boxes), N, C * D * H * W, itemsize, masks.ctypes.data, masks.shape[1])
    return args, threads, (boxes, masks)


def shift_kernel(x: torch.Tensor, groups: tuple[int, int, int], shift_ratio: float, inverse: bool) -> torch.Tensor:
    """``kernel``: all runs of the box plan in one call of the compiled kernel (CPU)."""
    # x.shape, not _shape(x): never traced here, and a torch.Size hashes as its tuple (1 us less)
    args, threads, _ = _kernel_call(x.shape, groups, shift_ratio, inverse, x.element_size())
    x = x.contiguous()
    out = torch.empty_like(x)
    load_kernel().gs_permute(x.data_ptr(), out.data_ptr(), *args, min(threads, torch.get_num_threads()))
    return out


CHOSEN_METHOD: dict[tuple, str] = {}
_DISPATCH_S = 5e-6  # bound on one box copy's fixed CPU cost (about 3 us per view pair in _foreach_copy_)
_CLONE_S_PER_ELEMENT = 1e-10  # 10^10 elements per second: a fast, in-cache clone


_APPLY = {"box": shift_boxes, "rows": shift_rows, "kernel": shift_kernel}


def _shift(x: torch.Tensor, groups: tuple[int, int, int], shift_ratio: float, inverse: bool) -> torch.Tensor:
    """The permutation of a contiguous ``x`` by the realisation kept for its key (chosen on the
    key's first call). Never under a jit trace: ``x.shape`` holds plain ints."""
    if not native.enabled():  # plain PyTorch: one slice copy per box
        return shift_boxes(x, groups, shift_ratio, inverse)
    key = (x.shape, groups, shift_ratio, x.device.type, x.dtype)
    method = CHOSEN_METHOD.get(key)
    if method is None:
        copies = len(_strided_plan(_shape(x), groups, shift_ratio)[0])
        # Dispatch below an in-cache clone: rows, moving the data twice more, cannot beat box.
        methods = ["box"] if copies * _DISPATCH_S < x.numel() * _CLONE_S_PER_ELEMENT else ["box", "rows"]
        if x.device.type == "cpu" and load_kernel() is not None:
            methods.append("kernel")
        # All give identical results; keep the fastest on this machine (once per shape).
        method = methods[0] if len(methods) == 1 else native.fastest(
            methods, lambda m: _APPLY[m](x, groups, shift_ratio, inverse),
            (lambda: torch.cuda.synchronize(x.device)) if x.is_cuda else None)
        CHOSEN_METHOD[key] = method
    return _APPLY[method](x, groups, shift_ratio, inverse)


# Group Shift is a permutation of voxels: no multiply-adds (its traced name, for fvcore).
COST_HANDLES.register("prim::PythonOp._GroupShiftFn")(zero_cost)


class _GroupShiftFn(torch.autograd.Function):
    # A permutation: the backward pass is the inverse permutation of the gradient.
    @staticmethod
    def forward(ctx, x, groups, shift_ratio):
        ctx.groups, ctx.shift_ratio = groups, shift_ratio
        # Under a jit trace (fvcore's count) the op is one node, a zero-MAC permutation: its
        # inner copies, gathers and first-call timings stay out of the graph.
        if not compat.is_tracing():
            return _shift(x.contiguous(), groups, shift_ratio, inverse=False)
        with compat.untraced():
            return _shift(x.contiguous(), groups, shift_ratio, inverse=False)

    @staticmethod
    def backward(ctx, grad):
        return _shift(grad.contiguous(), ctx.groups, ctx.shift_ratio, inverse=True), None, None


def group_shift(x: torch.Tensor, groups, shift_ratio: float = 0.5) -> torch.Tensor:
    """Group Shift of ``x`` (N, C, D, H, W) -> same shape (paper Eqs. 1-8).

    ``groups = (g_d, g_h, g_w)`` must divide (D, H, W). The first
    ``C_s = int(shift_ratio * C)`` channels are shifted in channel groups of
    ``C_g = max(1, C_s // (g_d*g_h*g_w))`` channels, group k by k spatial groups.
    """
    groups = tuple(map(int, groups))
    _check(_shape(x), groups, shift_ratio)
    if not compat.is_tracing() and not (x.requires_grad and torch.is_grad_enabled()):
        return _shift(x.contiguous(), groups, shift_ratio, inverse=False)  # no graph to record: skip autograd's wrapper
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
