"""Trilinear x2 upsampling (``align_corners=False``), the decoders' upsampling of the GSP-Conv nets
(He et al. 2021, Fig. 1: "trilinear up") and of the 3D U-Net, with a faster CPU realisation.

Along each axis of n inputs, output o reads s = max(0, (o + 0.5) / 2 - 0.5): o = 2i mixes
0.25 x[i-1] + 0.75 x[i], o = 2i + 1 mixes 0.75 x[i] + 0.25 x[i+1], with the ends clamped; the
3D value is that mix along W, then H, then D.

``(N, C, D, H, W) -> (N, C, 2D, 2H, 2W)``, the same numbers as
``F.interpolate(x, scale_factor=2, mode="trilinear")`` bit for bit: on CPU float32 the compiled
``upsample_kernel.c`` computes PyTorch's own operations in PyTorch's order (its forward as a
separable nest, each W row and each H plane upsampled once rather than per output; its backward
as a gather per input element, vectorised along W rows). Why: PyTorch's CPU kernels were a fifth
or more of a GSP training step (what the kernel buys: ``harness bench``, docs/performance.md).
Each direction keeps, per shape, the faster of the two (timed once on the first call, as
``cudnn.benchmark`` does); either gives the same bits. The
kernel is used only after it has reproduced PyTorch bit for bit on this machine (PyTorch
computes with FMA where the CPU has it; a build without would differ in the last bit).
Elsewhere (CUDA, other dtypes, under a jit trace, so that fvcore counts
``aten::upsample_trilinear3d``) the op is ``F.interpolate``.
"""
from __future__ import annotations

import ctypes
import logging
import os
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from harness.cache import cache_dir
from harness.ops import native
from harness.registry import OPS

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("upsample_kernel.c")
_FLAGS = ("-O3", "-shared", "-fPIC")
_BYTES_PER_THREAD = 1 << 16  # as Group Shift's kernel: torch's OpenMP team from 64 KB of output


@lru_cache(maxsize=1)
def load_kernel():
    """The compiled ``upsample_kernel.c``, or None where it cannot be built or does not
    reproduce PyTorch's numbers here. ``HARNESS_UPSAMPLE_KERNEL=0`` turns it off."""
    if os.environ.get("HARNESS_UPSAMPLE_KERNEL", "1") == "0":
        return None
    command = [native.compiler(), *_FLAGS, str(_SOURCE)]
    try:
        try:
            lib = native.build([*command, "-fopenmp", "-lm"], cache_dir(), _SOURCE)
        except native.BuildError:  # no OpenMP (e.g. Apple clang): one thread
            lib = native.build([*command, "-lm"], cache_dir(), _SOURCE)
        dll = ctypes.CDLL(str(lib))
    except native.BuildError as e:
        native.unavailable("upsample", e)
        return None
    except OSError as e:  # built, but dlopen refuses it (e.g. a cache on a noexec mount)
        log.warning("upsample: the compiled kernel does not load (%s); using PyTorch's", e)
        return None
    for fn in (dll.up_forward, dll.up_backward):
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 4 + [ctypes.c_int]
    if not _reproduces_torch(dll):
        log.warning("upsample: the compiled kernel differs from PyTorch's in the last bit on this machine; using PyTorch's")
        return None
    return dll


def _reproduces_torch(dll) -> bool:
    """Forward and backward equal PyTorch's bit for bit on a volume with every kind of edge
    (axes of 1, 2 and odd lengths)."""
    gen = torch.Generator().manual_seed(0)
    for shape in [(2, 3, 5, 6, 7), (1, 2, 1, 2, 17), (1, 1, 3, 1, 1)]:
        x = torch.randn(shape, generator=gen)
        g = torch.randn((*shape[:2], *(2 * s for s in shape[2:])), generator=gen)
        if not (torch.equal(_run(dll.up_forward, x, g.shape, x.shape[2:]), _torch_forward(x))
                and torch.equal(_run(dll.up_backward, g, x.shape, x.shape[2:]), _torch_backward(g, x.shape))):
            return False
    return True


def _run(fn, src: torch.Tensor, out_shape, volume) -> torch.Tensor:
    """``fn`` (up_forward or up_backward) from ``src`` into a new tensor of ``out_shape``;
    ``volume`` is the input's (D, H, W)."""
    out = torch.empty(out_shape, dtype=src.dtype)
    upsampled_bytes = 8 * src.shape[0] * src.shape[1] * volume.numel() * src.element_size()
    threads = max(1, min(torch.get_num_threads(), upsampled_bytes // _BYTES_PER_THREAD))
    if fn(src.data_ptr(), out.data_ptr(), src.shape[0] * src.shape[1], *volume, threads) != 0:
        raise MemoryError("upsample kernel: no memory for its work buffers")
    return out


def _torch_forward(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)


def _torch_backward(g: torch.Tensor, in_shape) -> torch.Tensor:
    return torch.ops.aten.upsample_trilinear3d_backward(g, list(g.shape[2:]), list(in_shape), False, 2.0, 2.0, 2.0)


def _forward(x: torch.Tensor, method: str) -> torch.Tensor:
    if method == "kernel":
        return _run(load_kernel().up_forward, x, (*x.shape[:2], *(2 * s for s in x.shape[2:])), x.shape[2:])
    return _torch_forward(x)


def _backward(g: torch.Tensor, in_shape, method: str) -> torch.Tensor:
    if method == "kernel":
        return _run(load_kernel().up_backward, g, in_shape, in_shape[2:])
    return _torch_backward(g, in_shape)


CHOSEN_METHOD: dict[tuple, str] = {}


def _method(direction: str, t: torch.Tensor, run) -> str:
    key = (direction, t.shape)
    if key not in CHOSEN_METHOD:
        CHOSEN_METHOD[key] = native.fastest(["torch", "kernel"], run)
    return CHOSEN_METHOD[key]


class _Upsample2x(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.in_shape = x.shape
        x = x.contiguous()
        return _forward(x, _method("forward", x, lambda m: _forward(x, m)))

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous()
        return _backward(g, ctx.in_shape, _method("backward", g, lambda m: _backward(g, ctx.in_shape, m)))


def upsample_trilinear2x(x: torch.Tensor) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=2, mode="trilinear")`` of ``x`` (N, C, D, H, W) ->
    (N, C, 2D, 2H, 2W), by the faster realisation on CPU float32 (module docstring)."""
    if (not native.enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling() or x.device.type != "cpu"
            or x.dtype != torch.float32 or x.dim() != 5 or x.numel() == 0 or load_kernel() is None):
        return _torch_forward(x)
    if not (x.requires_grad and torch.is_grad_enabled()):
        x = x.contiguous()
        return _forward(x, _method("forward", x, lambda m: _forward(x, m)))  # no graph: skip autograd's wrapper
    return _Upsample2x.apply(x)


@OPS.register("upsample_trilinear2x")
class Upsample2x(nn.Module):
    """``nn.Upsample(scale_factor=2, mode="trilinear")`` by :func:`upsample_trilinear2x`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_trilinear2x(x)
