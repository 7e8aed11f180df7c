"""Trilinear x2 upsampling: the compiled kernel gives PyTorch's numbers bit for bit, forward and
backward, at every kind of edge; the op falls back to F.interpolate where the kernel is not."""
import platform
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from harness.ops import native, upsample_trilinear2x
from harness.ops import upsample as up
from harness.registry import MODELS

needs_kernel = pytest.mark.skipif(up.load_kernel() is None, reason="no C compiler, or PyTorch computes without FMA here")

# Axes of 1 (both ends one element), 2, odd and even lengths; rows shorter and longer than a vector.
SHAPES = [(1, 1, 1, 1, 1), (1, 2, 1, 1, 5), (2, 3, 2, 3, 4), (1, 2, 3, 1, 2), (2, 3, 5, 6, 7), (1, 1, 4, 9, 17),
          (1, 2, 2, 4, 40)]


def _torch(x, g):
    x = x.detach().clone().requires_grad_()
    y = F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)
    y.backward(g)
    return y, x.grad


@pytest.mark.skipif(shutil.which(native.compiler()) is None or platform.machine() != "x86_64"
                    or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
                    reason="no C compiler, or not an x86 PyTorch that computes with FMA")
def test_kernel_is_in_use_where_pytorch_computes_with_fma():
    # The kernel disables itself where it would not reproduce PyTorch; here it must not have:
    # a kernel that stopped matching would otherwise only show as skipped tests.
    assert up.load_kernel() is not None


@needs_kernel
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_equals_pytorch_bit_for_bit(shape):
    x = torch.randn(shape) * 100
    g = torch.randn((*shape[:2], *(2 * s for s in shape[2:])))
    y, gx = _torch(x, g)
    assert torch.equal(up._forward(x, "kernel"), y)
    assert torch.equal(up._backward(g, x.shape, "kernel"), gx)


@needs_kernel
def test_kernel_splits_channels_over_threads_with_the_same_numbers(monkeypatch):
    x, g = torch.randn(3, 5, 4, 6, 10), torch.randn(3, 5, 8, 12, 20)
    one = up._forward(x, "kernel"), up._backward(g, x.shape, "kernel")
    monkeypatch.setattr(up, "_BYTES_PER_THREAD", 1)
    with_threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        three = up._forward(x, "kernel"), up._backward(g, x.shape, "kernel")
    finally:
        torch.set_num_threads(with_threads)
    assert all(torch.equal(a, b) for a, b in zip(one, three))


@pytest.mark.parametrize("grad", [True, False])
def test_op_equals_f_interpolate_and_keeps_a_method_per_shape(grad, monkeypatch):
    monkeypatch.setattr(up, "CHOSEN_METHOD", {})
    x = torch.randn(2, 4, 3, 4, 6, requires_grad=grad)
    g = torch.randn(2, 4, 6, 8, 12)
    y = upsample_trilinear2x(x)
    y_ref, gx_ref = _torch(x, g)
    assert torch.equal(y, y_ref)
    if grad:
        y.backward(g)
        assert torch.equal(x.grad, gx_ref)
    if up.load_kernel() is not None:  # one timed choice per direction and shape, then reused
        assert set(up.CHOSEN_METHOD) == {("forward", x.shape)} | ({("backward", g.shape)} if grad else set())
        assert set(up.CHOSEN_METHOD.values()) <= {"torch", "kernel"}


def test_trace_records_pytorchs_op_so_fvcore_counts_it():
    # Cost counts aten::upsample_trilinear3d (8 MACs per output), never an opaque Python op.
    graph = torch.jit.trace(lambda x: upsample_trilinear2x(x), torch.randn(1, 2, 2, 2, 2)).graph
    kinds = {n.kind() for n in graph.nodes()}
    assert "aten::upsample_trilinear3d" in kinds and not any(k.startswith("prim::PythonOp") for k in kinds)


def test_gsp_net_upsamples_with_the_op_and_matches_nn_upsample():
    net = MODELS.build("gsp_unet", in_channels=1, out_channels=2, widths=(4, 8, 16), insert="CSC",
                       groups=[[2, 2, 2]] * 3).eval()
    assert all(isinstance(u[0], up.Upsample2x) for u in net.up)
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        y = net(x)
        for u in net.up:
            u[0] = torch.nn.Upsample(scale_factor=2, mode="trilinear")
        assert torch.equal(net(x), y)


def test_other_dtypes_take_f_interpolate():
    x = torch.randn(1, 2, 3, 3, 3, dtype=torch.float64)
    assert torch.equal(upsample_trilinear2x(x), F.interpolate(x, scale_factor=2, mode="trilinear"))


@pytest.mark.parametrize("broken", ["turned off", "no compiler", "differs from pytorch"])
def test_without_a_usable_kernel_the_op_is_f_interpolate(broken, monkeypatch, caplog, tmp_path):
    if broken == "turned off":
        monkeypatch.setenv("HARNESS_UPSAMPLE_KERNEL", "0")
    elif broken == "no compiler":
        monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
        monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    else:
        if up.load_kernel() is None:
            pytest.skip("no kernel to compare")
        exact = up._torch_backward
        monkeypatch.setattr(up, "_torch_backward", lambda g, shape: exact(g, shape) + 1e-7)
    up.load_kernel.cache_clear()
    monkeypatch.setattr(up, "CHOSEN_METHOD", {})
    try:
        assert up.load_kernel() is None
        if broken != "turned off":
            assert "upsample:" in caplog.text
        x = torch.randn(1, 2, 2, 3, 4)
        assert torch.equal(upsample_trilinear2x(x), F.interpolate(x, scale_factor=2, mode="trilinear"))
        assert up.CHOSEN_METHOD == {}
    finally:
        up.load_kernel.cache_clear()


def test_a_failed_build_is_said_once_and_never_compiled_again(tmp_path, monkeypatch):
    bad = tmp_path / "bad.c"
    bad.write_text("this is not C\n")
    command = [native.compiler(), "-shared", "-fPIC", str(bad)]
    with pytest.raises(native.BuildError) as first:
        native.build(command, tmp_path, bad)
    assert first.value.fresh and "exited" in first.value.message and first.value.record.exists()
    ran = []
    real = subprocess.run
    monkeypatch.setattr(native.subprocess, "run", lambda cmd, *a, **k: ran.append(cmd) or real(cmd, *a, **k))
    with pytest.raises(native.BuildError) as again:  # another worker, a later run: the record answers
        native.build(command, tmp_path, bad)
    assert not again.value.fresh and again.value.message == first.value.message
    assert not [c for c in ran if "-o" in c]  # the compiler did not run again


@pytest.mark.slow
def test_workers_building_at_once_compile_once(tmp_path):
    # A stand-in compiler that counts its runs and is slow enough for the workers to overlap.
    cc = tmp_path / "cc"
    cc.write_text("#!/bin/sh\n[ \"$1\" = --version ] && { echo fake-cc 1.0; exit 0; }\n"
                  f"echo run >> {tmp_path}/runs\nsleep 1\n"
                  "while [ $# -gt 0 ]; do [ \"$1\" = -o ] && echo lib > \"$2\"; shift; done\n")
    cc.chmod(0o755)
    src = tmp_path / "k.c"
    src.write_text("int f(void) { return 1; }\n")
    code = f"from pathlib import Path; from harness.ops import native; print(native.build([{str(cc)!r}, {str(src)!r}], Path({str(tmp_path / 'cache')!r}), Path({str(src)!r})))"
    workers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    libs = {w.communicate(timeout=60)[0].strip() for w in workers}
    assert all(w.returncode == 0 for w in workers) and len(libs) == 1
    assert (tmp_path / "runs").read_text().count("run") == 1


def test_the_cache_key_holds_the_compiler_and_the_cpu(tmp_path, monkeypatch):
    src = tmp_path / "k.c"
    src.write_text("int f(void) { return 1; }\n")
    command = [native.compiler(), "-shared", "-fPIC", str(src)]
    first = native.build(command, tmp_path, src)
    assert native.build(command, tmp_path, src) == first  # cached
    monkeypatch.setattr(native, "_compiler_version", lambda cc: "another compiler 99")
    assert native.build(command, tmp_path, src) != first
    monkeypatch.setattr(native, "_cpu", lambda: "x86_64 flags : fpu sse2")
    assert len({native.build(command, tmp_path, src), first}) == 2


def test_the_cpu_layer_is_off_on_an_untested_torch(monkeypatch, caplog):
    monkeypatch.delenv("HARNESS_CPU_KERNELS", raising=False)
    assert native.enabled() == (".".join(torch.__version__.split(".")[:2]) in native.TESTED_TORCH)
    monkeypatch.setattr(torch, "__version__", "9.1.0+cpu")
    assert not native.enabled() and "tested on torch" in caplog.text and "9.1.0" in caplog.text
    monkeypatch.setenv("HARNESS_CPU_KERNELS", "1")  # asked for: on
    assert native.enabled()
    monkeypatch.setenv("HARNESS_CPU_KERNELS", "0")
    monkeypatch.setattr(torch, "__version__", f"{native.TESTED_TORCH[0]}.0")
    assert not native.enabled()


