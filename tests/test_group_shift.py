"""Group Shift against hand-worked cases of Eqs. 2-8 and a literal per-voxel transcription."""
import importlib
import itertools
import subprocess

import numpy as np
import pytest
import torch

from harness.cache import cache_dir
from harness.families.gsp_conv.group_shift import GroupShift, group_shift
from harness.families.gsp_conv.group_shift import CHOSEN_METHOD, shift_boxes, shift_kernel, shift_rows, load_kernel
from harness.ops import native
from helpers import literal_eqs

needs_kernel = pytest.mark.skipif(load_kernel() is None, reason="no C compiler: the kernel realisation is not built")
METHODS = ["box", "rows", pytest.param("kernel", marks=needs_kernel)]
gs_module = importlib.import_module("harness.families.gsp_conv.group_shift")  # the module (harness.families.gsp_conv.group_shift is also the function)





def test_hand_worked_2x2_in_plane():
    # groups (1,2,2), one voxel per group, C=4, ratio 1 -> C_s=4, C_g=1, channel c moves c groups.
    # Group index (Eq. 2) over (y, z): (0,0)->0, (1,0)->1, (0,1)->2, (1,1)->3.
    x = torch.zeros(1, 4, 1, 2, 2)
    a, b, c, d = 1.0, 2.0, 3.0, 4.0  # at (y,z) = (0,0), (0,1), (1,0), (1,1)
    for ch in range(4):
        x[0, ch, 0] = torch.tensor([[a, b], [c, d]])
    y = group_shift(x, (1, 2, 2), shift_ratio=1.0)[0, :, 0]
    assert torch.equal(y[0], torch.tensor([[a, b], [c, d]]))  # step 0
    # step 1: group 0 (a) -> 1 = (1,0); 1 (c) -> 2 = (0,1); 2 (b) -> 3 = (1,1); 3 (d) -> 0 = (0,0)
    assert torch.equal(y[1], torch.tensor([[d, c], [a, b]]))
    # step 2: 0 -> 2, 1 -> 3, 2 -> 0, 3 -> 1
    assert torch.equal(y[2], torch.tensor([[b, a], [d, c]]))
    # step 3: 0 -> 3, 1 -> 0, 2 -> 1, 3 -> 2
    assert torch.equal(y[3], torch.tensor([[c, d], [b, a]]))


def test_hand_worked_depth_halves_and_kept_channels():
    # groups (2,1,1), C=8, ratio 0.5: C_s=4, C_g=2: channels 0,1 step 0; 2,3 swap depth halves; 4..7 kept.
    x = torch.arange(8 * 4, dtype=torch.float32).reshape(1, 8, 4, 1, 1)
    y = group_shift(x, (2, 1, 1), 0.5)
    assert torch.equal(y[:, :2], x[:, :2])
    assert torch.equal(y[:, 2:4, :2], x[:, 2:4, 2:])
    assert torch.equal(y[:, 2:4, 2:], x[:, 2:4, :2])
    assert torch.equal(y[:, 4:], x[:, 4:])


def test_voxels_keep_their_position_inside_the_group():
    # Eqs. 5-7: x' mod d == x mod d. With groups (1,1,2) and W=6 (w=3), a row is rotated by 3.
    x = torch.arange(6, dtype=torch.float32).reshape(1, 1, 1, 1, 6).repeat(1, 2, 1, 1, 1)
    y = group_shift(x, (1, 1, 2), 1.0)
    assert y[0, 1, 0, 0].tolist() == [3, 4, 5, 0, 1, 2]


@pytest.mark.parametrize("groups", [(2, 2, 2), (1, 2, 2), (2, 1, 3), (3, 2, 1), (1, 1, 4), (2, 3, 2), (1, 1, 1)])
@pytest.mark.parametrize("C,ratio", [(1, 1.0), (3, 0.5), (8, 0.5), (13, 1.0), (24, 0.25), (40, 0.5)])
def test_matches_literal_equations(groups, C, ratio):
    if int(ratio * C) == 0:
        pytest.skip("nothing shifted")
    x = torch.randn(2, C, groups[0] * 2, groups[1] * 1, groups[2] * 2)
    expected = literal_eqs(x, groups, ratio)
    assert torch.equal(group_shift(x, groups, ratio), expected)
    # Every realisation (the op keeps whichever is fastest per shape) is the same map and inverse.
    applies = [shift_boxes, shift_rows] + ([shift_kernel] if load_kernel() is not None else [])
    for apply in applies:
        assert torch.equal(apply(x, groups, ratio, inverse=False), expected), apply.__name__
        assert torch.equal(apply(expected, groups, ratio, inverse=True), x), apply.__name__


@pytest.mark.parametrize("method", METHODS)
def test_a_contiguous_view_into_a_larger_buffer(method, monkeypatch):
    # Batch 1, channels 2..4 of a bigger tensor: contiguous, but its storage starts mid-buffer, as
    # the gradient reaching CSCSUpShift's shift does (a slice of torch.cat's gradient).
    big = torch.randn(1, 6, 2, 4, 4)
    view = big[:, 2:4]
    assert view.is_contiguous() and view.storage_offset() > 0
    monkeypatch.setitem(CHOSEN_METHOD, (tuple(view.shape), (2, 2, 2), 1.0, "cpu", torch.float32), method)
    assert torch.equal(group_shift(view, (2, 2, 2), 1.0), literal_eqs(view.clone(), (2, 2, 2), 1.0))
    # And through autograd: the gradient arrives as a slice of cat's gradient.
    x = torch.randn(1, 2, 2, 4, 4, requires_grad=True)
    w = torch.randn(1, 6, 2, 4, 4)
    (torch.cat([torch.zeros(1, 2, 2, 4, 4), group_shift(x, (2, 2, 2), 1.0), torch.zeros(1, 2, 2, 4, 4)], 1) * w).sum().backward()
    expected = torch.zeros_like(x)
    for c, d, h, ww in itertools.product(range(2), range(2), range(4), range(4)):  # d out[i] / d x[j]
        one = torch.zeros_like(x)
        one[0, c, d, h, ww] = 1
        expected[0, c, d, h, ww] = (literal_eqs(one, (2, 2, 2), 1.0) * w[:, 2:4]).sum()
    assert torch.equal(x.grad, expected)


@pytest.mark.parametrize("method", METHODS)
def test_is_a_permutation_and_gradcheck(method, monkeypatch):
    x = torch.randn(1, 6, 4, 4, 2, dtype=torch.float64, requires_grad=True)
    for groups, ratio in [((2, 2, 1), 0.5), ((1, 2, 2), 1.0)]:
        monkeypatch.setitem(CHOSEN_METHOD, (tuple(x.shape), groups, ratio, "cpu", torch.float64), method)
    y = group_shift(x, (2, 2, 1), 0.5)
    assert torch.equal(torch.sort(y.flatten())[0], torch.sort(x.flatten())[0])
    assert torch.autograd.gradcheck(lambda t: group_shift(t, (2, 2, 1), 0.5), (x,))
    assert torch.autograd.gradcheck(lambda t: group_shift(t, (1, 2, 2), 1.0), (x,))


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.complex64])
def test_kernel_moves_whole_elements_of_any_dtype(dtype):
    # Byte-generic: runs of 1 to 16 bytes per element, rotated rows included ((1,1,4): w=2 of W=8).
    x = (torch.randn(2, 12, 4, 4, 8) * 50).to(dtype)
    for groups in [(2, 2, 2), (1, 1, 4), (1, 4, 4)]:
        assert torch.equal(shift_kernel(x, groups, 0.5, inverse=False), shift_boxes(x, groups, 0.5, inverse=False))
        assert torch.equal(shift_kernel(shift_boxes(x, groups, 0.5, False), groups, 0.5, inverse=True), x)


def _kernel_builds():
    """Every build of the kernel this machine can make, with and without its SIMD rows."""
    if load_kernel() is None:
        return []
    out = []
    for openmp in (True, False):
        command = gs_module._kernel_command() + (["-fopenmp"] if openmp else [])
        try:
            lib = native.build(command, cache_dir(), gs_module._KERNEL_SOURCE)
        except subprocess.SubprocessError:
            continue
        for simd in (True, False):
            out.append(pytest.param(lib, simd, id=f"{'openmp' if openmp else 'pthread'}-{'simd' if simd else 'scalar'}"))
    return out


@needs_kernel
@pytest.mark.parametrize("lib, simd", _kernel_builds())
def test_kernel_cuts_boxes_and_splits_them_over_threads(lib, simd, monkeypatch):
    # The paper-scale path on a small tensor: boxes cut to at most 16 elements (along C, D and H,
    # with whole-row runs merged first) and shared by 3 threads must still give Eqs. 1-8 exactly,
    # from OpenMP's threads and from pthreads, with rows rotated in registers and without.
    dll = gs_module._load(lib)
    if simd and not dll.simd:
        pytest.skip("this CPU has no AVX-512BW")
    dll.gs_simd(int(simd))
    dll.bytes_per_thread = 1
    monkeypatch.setattr(gs_module, "load_kernel", lambda: dll)
    monkeypatch.setattr(gs_module, "_KERNEL_BOX_MAX", 16)
    for f in (gs_module._kernel_boxes, gs_module._kernel_call):
        f.cache_clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        x, nested = torch.randn(3, 10, 4, 6, 4), False
        for groups, ratio in [((2, 2, 2), 0.5), ((1, 3, 2), 1.0), ((4, 1, 1), 0.5)]:
            boxes = gs_module._kernel_boxes((10, 4, 6, 4), groups, ratio, False)
            big = boxes[:, 2] * boxes[:, 4] * boxes[:, 6] * boxes[:, 8] > 16
            assert big.any() and (boxes[big][:, [2, 4, 6]] == 1).all()  # only a single (merged) run exceeds it: runs are never cut
            nested |= bool((boxes[:, [2, 4, 6]] > 1).any())
            assert gs_module._kernel_call(tuple(x.shape), groups, ratio, False, 4)[1] >= 3  # so the call takes torch's 3
            assert torch.equal(shift_kernel(x, groups, ratio, inverse=False), literal_eqs(x, groups, ratio))
        assert nested  # the cut left nests of several runs too
    finally:
        dll.gs_simd(1)  # the library is shared with the op (dlopen returns one handle per path)
        torch.set_num_threads(threads)
        for f in (gs_module._kernel_boxes, gs_module._kernel_call):
            f.cache_clear()


@needs_kernel
@pytest.mark.parametrize("lib, simd", _kernel_builds())
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_kernel_rotates_rows_of_every_length_in_and_out_of_registers(lib, simd, dtype, monkeypatch):
    # Rows of 2-65 elements (4 to 520 bytes), every rotation by whole groups. The SIMD path reads
    # stretches of side-by-side rows as 64-byte blocks with periodic masks: a box of whole H
    # planes (groups (1, 1, gw): one stretch over both D planes), lines of 3-9 of the 12 rows
    # ((2, 3, gw): channel k moves by k groups, so boxes end mid-plane), blocks ending mid-row and
    # stretches shorter than a block. Rows of 65 elements repeat their masks every 65 blocks, over
    # _KERNEL_MASK_PERIOD_MAX: they take the run copies. Against the box realisation (tested
    # against Eqs. 1-8 above), which has no rows at all.
    dll = gs_module._load(lib)
    if simd and not dll.simd:
        pytest.skip("this CPU has no AVX-512BW")
    dll.gs_simd(int(simd))
    monkeypatch.setattr(gs_module, "load_kernel", lambda: dll)
    gs_module._kernel_call.cache_clear()
    try:
        for W, gw in [(2, 2), (5, 5), (8, 4), (12, 6), (16, 8), (20, 4), (24, 8), (32, 8), (40, 5), (65, 5)]:
            x = torch.randn(2, 2 * gw, 2, 12, W).to(dtype)
            for groups in [(1, 1, gw), (2, 3, gw)]:
                shifted = shift_kernel(x, groups, 1.0, inverse=False)
                assert torch.equal(shifted, shift_boxes(x, groups, 1.0, inverse=False)), (W, groups)
                assert torch.equal(shift_kernel(shifted, groups, 1.0, inverse=True), x), (W, groups)
        assert gs_module._rotation_masks(65 * x.element_size(), x.element_size()).size == 0
    finally:
        dll.gs_simd(1)
        gs_module._kernel_call.cache_clear()


def test_rotation_masks_pick_the_wrapped_bytes():
    # Rows of 10 floats (40 bytes) rotated by 2 elements: bytes 32-39 of each row come from the
    # row's start, i.e. from p + r - L; the pattern repeats every 40 / gcd(40, 64) = 5 blocks.
    masks = gs_module._rotation_masks(40, 4)
    assert masks.shape == (10, 5) and not masks[0].any()
    bits = np.unpackbits(masks[2].view(np.uint8), bitorder="little").reshape(5, 64)
    p = np.arange(5 * 64).reshape(5, 64)
    assert np.array_equal(bits, (p % 40 >= 32).astype(np.uint8))


@pytest.mark.parametrize("broken", ["no compiler", "library will not load"])
def test_without_a_usable_kernel_the_op_falls_back_to_torch(broken, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    if broken == "no compiler":
        monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    else:  # e.g. a cache on a noexec mount: the build succeeds, dlopen refuses it

        def refuse(path, *a, **k):
            raise OSError(f"{path}: failed to map segment from shared object")

        monkeypatch.setattr(gs_module.ctypes, "CDLL", refuse)
    monkeypatch.setattr(gs_module, "CHOSEN_METHOD", {})
    load_kernel.cache_clear()
    try:
        assert load_kernel() is None
        assert ("no compiled kernel" if broken == "no compiler" else "does not load") in caplog.text
        x = torch.randn(1, 8, 2, 4, 4)
        assert torch.equal(group_shift(x, (2, 2, 2), 0.5), literal_eqs(x, (2, 2, 2), 0.5))
        assert "kernel" not in gs_module.CHOSEN_METHOD.values()
    finally:
        load_kernel.cache_clear()


@pytest.mark.parametrize("shape,groups,axis", [((1, 4, 6, 8, 8), (4, 2, 2), "D=6"), ((1, 4, 8, 6, 8), (2, 4, 2), "H=6"),
                                               ((1, 4, 8, 8, 10), (1, 1, 4), "W=10")])
def test_indivisible_size_is_a_clear_error(shape, groups, axis):
    with pytest.raises(ValueError, match=f"{axis} is not divisible by its group count"):
        group_shift(torch.zeros(shape), groups)


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.5])
def test_shift_ratio_outside_unit_interval(ratio):
    with pytest.raises(ValueError, match=r"shift_ratio must be in \(0, 1\]"):
        group_shift(torch.zeros(1, 4, 2, 2, 2), (1, 1, 2), ratio)
    with pytest.raises(ValueError, match="shift_ratio"):
        GroupShift((1, 1, 2), ratio)


def test_module_matches_function_and_non_contiguous_input():
    m = GroupShift((2, 2, 2), 0.5)
    x = torch.randn(2, 8, 4, 4, 4).transpose(2, 4)  # non-contiguous view
    assert torch.equal(m(x), literal_eqs(x.contiguous(), (2, 2, 2), 0.5))
    assert "groups=(2, 2, 2)" in repr(m)


@needs_kernel
def test_kernel_keeps_its_plan_alive_when_the_plan_cache_is_cleared():
    # The kernel reads its boxes through a raw pointer: the array must live as long as the pointer.
    import gc

    x = torch.randn(2, 8, 4, 4, 4)
    expected = literal_eqs(x, (2, 2, 2), 0.5)
    assert torch.equal(shift_kernel(x, (2, 2, 2), 0.5, inverse=False), expected)
    gs_module._kernel_boxes.cache_clear()
    gc.collect()
    _ = [np.full(4096, -1, dtype=np.int64) for _ in range(64)]  # reuse any freed memory with garbage
    assert torch.equal(shift_kernel(x, (2, 2, 2), 0.5, inverse=False), expected)


def test_the_fastest_realisation_is_kept_with_more_rounds_for_quick_ones():
    # A fake clock that each run advances by its method's cost: the policy is tested without
    # real time, so a loaded machine cannot change the outcome.
    def timed(fast: float, slow: float, mid: float) -> tuple[str, dict]:
        calls = {"box": 0, "rows": 0, "kernel": 0}
        seconds = {"box": slow, "rows": fast, "kernel": mid}
        now = [0.0]

        def run(name):
            calls[name] += 1
            now[0] += seconds[name]

        return native.fastest(["box", "rows", "kernel"], run, clock=lambda: now[0]), calls

    # Quick realisations (a round of 1.6 ms): int(50 / 1.6) = 31 rounds, capped at 15.
    best, calls = timed(0.0001, 0.001, 0.0005)
    assert best == "rows" and calls == {"box": 16, "rows": 16, "kernel": 16}
    # A round of 5 ms: 10 rounds fit the 50 ms budget, after the warm-up.
    best, calls = timed(0.001, 0.0025, 0.0015)
    assert best == "rows" and calls == {"box": 11, "rows": 11, "kernel": 11}
    # Slow ones (a round of 90 ms): the minimum of 3 rounds after the warm-up.
    best, calls = timed(0.02, 0.04, 0.03)
    assert best == "rows" and calls == {"box": 4, "rows": 4, "kernel": 4}


def test_the_least_time_wins_not_the_median():
    # One method is usually slower but once fastest: interference only slows a run, so the
    # least of its runs is its speed.
    costs = {"a": iter([0.01] + [0.002] * 3), "b": iter([0.01, 0.001] + [0.05] * 2)}
    now = [0.0]

    def run(name):
        now[0] += next(costs[name])

    assert native.fastest(["a", "b"], run, clock=lambda: now[0]) == "b"


@needs_kernel
def test_kernel_threads_follow_torchs_count_at_call_time(monkeypatch):
    # Only the bound from the tensor's bytes is cached per shape: a shape first met under 1 thread
    # (a test, a trial's set_num_threads) must still get 2 when torch has 2.
    dll, seen = load_kernel(), []

    class Spy:
        bytes_per_thread = 1

        def gs_permute(self, *args):
            seen.append(args[-1])
            return dll.gs_permute(*args)

    monkeypatch.setattr(gs_module, "load_kernel", lambda: Spy())
    gs_module._kernel_call.cache_clear()
    threads = torch.get_num_threads()
    x = torch.randn(1, 8, 2, 4, 4)
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            assert torch.equal(shift_kernel(x, (2, 2, 2), 0.5, inverse=False), shift_boxes(x, (2, 2, 2), 0.5, inverse=False))
    finally:
        torch.set_num_threads(threads)
        gs_module._kernel_call.cache_clear()
    assert seen == [1, 2]
