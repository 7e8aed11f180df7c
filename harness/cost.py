"""Cost of a model: parameters, GMACs (fvcore), latency per voxel, peak memory.

Convention: fvcore counts one fused multiply-add as one "flop", so its totals
are MACs; we label them GMACs. Every op a model emits must have a handle in
``COST_HANDLES`` (counted, or explicitly zero for pure data movement); an op without one
makes ``count_macs`` raise rather than silently under-count. The common aten ops are
registered here; a family or a plugin registers its own by the traced op's name,
``@COST_HANDLES.register("aten::prelu")`` on an fvcore handle ``(inputs, outputs) -> count``.

Inference procedures are costed as run: given an inferer, ``cost_report`` runs it once on
the cost input, records every network pass it makes (a 16-view TTA makes 16) and sums
fvcore's count of each; latency and peak memory are measured on the inferer too. The
inferer's own arithmetic (activation, averaging views) is not counted: it is a few
operations per output voxel against thousands in the network.
"""
from __future__ import annotations

import contextlib
import copy
from collections import Counter
import os
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import elementwise_flop_counter, get_shape
from torch import nn

from harness.registry import COST_HANDLES


class UnsupportedOpError(RuntimeError):
    pass


def _per_output(scale: float):
    return elementwise_flop_counter(0, scale)


def _grid_sampler(inputs, outputs) -> int:
    # Bilinear reads 4 neighbours per output value, trilinear (5D) reads 8.
    out = get_shape(outputs[0])
    n = 1
    for s in out:
        n *= s
    return n * (8 if len(out) == 5 else 4)


def zero_cost(inputs, outputs) -> int:
    """The handle of an op without multiply-adds (a permutation, a copy), for ``COST_HANDLES``."""
    return 0


# Counted ops: one MAC-equivalent per output element unless noted.
_COUNTED = {
    "aten::upsample_trilinear3d": _per_output(8),  # 8 neighbours per output (fvcore's bilinear uses 4)
    "aten::upsample_bilinear2d": _per_output(4),
    "aten::grid_sampler": _grid_sampler,
    # A regular sampling grid (an affine grid): each coordinate is a 3-term dot product plus bias.
    "aten::affine_grid_generator": _per_output(3),
    "aten::add": _per_output(1), "aten::add_": _per_output(1),
    "aten::sub": _per_output(1), "aten::sub_": _per_output(1), "aten::rsub": _per_output(1),
    "aten::mul": _per_output(1), "aten::mul_": _per_output(1),
    "aten::div": _per_output(1), "aten::div_": _per_output(1),
    "aten::sigmoid": _per_output(1), "aten::sigmoid_": _per_output(1),
    "aten::tanh": _per_output(1), "aten::softmax": _per_output(1), "aten::abs": _per_output(1),
    # Activations with a multiply per value (as sigmoid above), common in MONAI and timm nets.
    "aten::prelu": _per_output(1), "aten::gelu": _per_output(1), "aten::silu": _per_output(1),
    "aten::silu_": _per_output(1), "aten::elu": _per_output(1), "aten::elu_": _per_output(1),
    "aten::hardswish": _per_output(1), "aten::softplus": _per_output(1), "aten::log_softmax": _per_output(1),
    "aten::avg_pool3d": elementwise_flop_counter(1, 0), "aten::avg_pool2d": elementwise_flop_counter(1, 0),
    "aten::adaptive_avg_pool3d": elementwise_flop_counter(1, 0),
    "aten::mean": elementwise_flop_counter(1, 0), "aten::sum": elementwise_flop_counter(1, 0),
    # Weight standardisation (ConResNet): per weight element, not per voxel.
    "aten::var": elementwise_flop_counter(1, 0), "aten::sqrt": _per_output(1),
}
# Explicit zeros: data movement, comparisons and activations without multiply-adds.
_ZERO = [
    "aten::max_pool3d", "aten::max_pool2d", "aten::upsample_nearest3d", "aten::upsample_nearest2d",
    "aten::relu", "aten::relu_", "aten::leaky_relu", "aten::leaky_relu_", "aten::cat", "aten::roll",
    "aten::index", "aten::index_select", "aten::copy_", "aten::slice", "aten::narrow", "aten::empty_like",
    "aten::pad", "aten::constant_pad_nd", "aten::reshape", "aten::view", "aten::permute", "aten::contiguous",
    "aten::flip", "aten::dropout", "aten::feature_dropout", "aten::zeros_like", "aten::clone",
    "aten::eye", "aten::expand", "aten::select", "aten::view_as", "aten::flatten", "aten::stack",
    "aten::amax",  # a max over a dimension: comparisons (as max pooling)
]
for _op, _handle in {**_COUNTED, **{op: zero_cost for op in _ZERO}}.items():
    COST_HANDLES.register(_op)(_handle)


@contextlib.contextmanager
def _quiet_stderr():
    """The CPU profiler's C++ side prints start/stop lines on fd 2; keep them off the user's console."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, Any]:
    """MACs of one forward pass at ``input_shape`` (N, C, D, H, W), by operator, as run.

    fvcore counts the traced graph, from which the tracer prunes work whose result the output
    does not use (DynUNet's deep-supervision heads still run in evaluation, kept in a list
    outside the graph). Leaf modules with weights that ran but count nothing in the graph are
    counted alone at their recorded inputs and added (``untraced_macs``): the cost is that of
    the forward pass as executed. Raises UnsupportedOpError naming any op that has no handle.
    """
    model = model.eval()
    x = torch.zeros(*input_shape, device=next(model.parameters()).device)
    ran: dict[str, list[tuple[int, ...]]] = {}
    weighted = [(name, m) for name, m in model.named_modules()
                if not list(m.children()) and any(True for _ in m.parameters(recurse=False))]
    handles = [m.register_forward_hook(lambda m, i, o, name=name: ran.setdefault(name, []).append(tuple(i[0].shape)))
               for name, m in weighted if name]
    try:
        with torch.no_grad():
            fca = FlopCountAnalysis(model, x).set_op_handle(**{op: COST_HANDLES.get(op) for op in COST_HANDLES.names()})
            fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            total = fca.total()
            unsupported = dict(fca.unsupported_ops())
            by_module = fca.by_module()
    finally:
        for h in handles:
            h.remove()
    if unsupported:
        raise UnsupportedOpError(
            f"{type(model).__name__}: no cost handle for {unsupported}; register one: "
            f"@COST_HANDLES.register(OP) (harness.registry) on a function (inputs, outputs) -> MACs, "
            f"harness.cost.zero_cost for an op without multiply-adds"
        )
    by_op = {k: int(v) for k, v in fca.by_operator().items()}
    untraced = 0
    modules = dict(weighted)
    for name, shapes in ran.items():
        if by_module.get(name, 0) == 0:  # ran, but pruned from the traced graph
            for shape in shapes:
                alone = count_macs(modules[name], shape)
                untraced += alone["macs"]
                for op, n in alone["by_op"].items():
                    by_op[op] = by_op.get(op, 0) + n
    return {"macs": int(total) + untraced, "by_op": by_op, "untraced_macs": untraced}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _runner(model: nn.Module, inferer) -> Callable[[torch.Tensor], Any]:
    """One inference as evaluation runs it: the inferer over the network, or a bare forward."""
    return model if inferer is None else (lambda x: inferer(x, model))


def measure_latency(model: nn.Module, input_shape: Sequence[int], warmup: int = 2, runs: int = 5,
                    inferer=None, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median wall time (s) of ``runs`` warm inferences (no grad, eval mode; ``clock`` injectable
    for tests). Timed by hand:
    ``torch.utils.benchmark.Timer.timeit`` runs two warm-up calls of its own per call, so a
    median of single runs would cost three times the runs, and its mean of many is not the
    median the reports state."""
    model = model.eval()
    device = next(model.parameters()).device
    x = torch.randn(*input_shape, device=device)
    run = _runner(model, inferer)
    times = []
    with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda"):
        for i in range(warmup + runs):
            _sync(device)
            t0 = clock()
            run(x)
            _sync(device)
            if i >= warmup:
                times.append(clock() - t0)
    return statistics.median(times)


def _peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes allocated while ``fn`` runs. CUDA: the allocator's high-water mark above the
    baseline (under autocast, as trials run). CPU: the running sum of the profiler's per-op
    allocations minus frees, in time order."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with torch.autocast("cuda"):
            fn()
        _sync(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    with _quiet_stderr(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                 profile_memory=True) as prof:
        fn()
    running = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        running += e.self_cpu_memory_usage  # exclusive, so nested ops are not counted twice
        peak = max(peak, running)
    return int(peak)


def measure_peak_memory(model: nn.Module, input_shape: Sequence[int], inferer=None) -> int:
    """Peak bytes allocated during one inference (``_peak_bytes``)."""
    model = model.eval()
    device = next(model.parameters()).device
    x = torch.randn(*input_shape, device=device)
    run = _runner(model, inferer)
    with torch.no_grad():
        return _peak_bytes(lambda: run(x), device)


def measure_training_memory(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Peak bytes of one training forward and backward pass on ``input_shape`` (the trial's
    batch), on a copy of the model so that its norm statistics stay as trained. Parameters are
    not counted; activations, gradients and workspace are. The loss is the sum of the means of
    every output tensor (segmentation and auxiliary heads), so every head's graph is kept.
    """
    from harness.contract import as_outputs

    net = copy.deepcopy(model).train()
    device = next(net.parameters()).device
    x = torch.randn(*input_shape, device=device)

    def step():
        outs = as_outputs(net(x)).values()
        heads = [t for o in outs for t in (o if isinstance(o, (list, tuple)) else [o]) if isinstance(t, torch.Tensor)]
        sum(h.float().mean() for h in heads).backward()

    return _peak_bytes(step, device)


def inference_macs(model: nn.Module, input_shape: Sequence[int], inferer) -> dict[str, Any]:
    """MACs of one inference of ``inferer`` on an ``input_shape`` volume: every network pass it
    makes, as run, each counted by fvcore (and each failing on an unhandled op)."""
    from harness.inferers import Ensemble

    if isinstance(inferer, Ensemble):  # every member through the inner inferer (members may differ)
        parts = [inference_macs(m, input_shape, inferer.inferer) for m in inferer.members]
    else:
        model = model.eval()
        calls: list[tuple[int, ...]] = []

        def network(x: torch.Tensor) -> torch.Tensor:
            calls.append(tuple(x.shape))
            return model(x)

        with torch.no_grad():
            inferer(torch.zeros(*input_shape, device=next(model.parameters()).device), network)
        per_shape = {shape: count_macs(model, shape) for shape in set(calls)}
        parts = [{**per_shape[shape], "forward_passes": shape[0]} for shape in calls]
    by_op: Counter = Counter()
    for p in parts:
        by_op.update(p["by_op"])  # update, not +: ops counted as 0 stay listed
    return {"macs": sum(p["macs"] for p in parts), "by_op": dict(by_op),
            "forward_passes": sum(p["forward_passes"] for p in parts)}


def cost_report(model: nn.Module, input_shape: Sequence[int], latency: bool = True, runs: int = 5,
                inferer=None, train_shape: Sequence[int] | None = None,
                say: Callable[[str], None] = lambda what: None) -> dict[str, Any]:
    """Parameters, model size, GMACs, latency per voxel and peak memory at ``input_shape``.

    With ``inferer`` every figure is that of the inference procedure (``forward_passes``
    network passes); without, of one forward pass. With ``train_shape`` (and ``latency``, the
    switch for every measured figure) also ``train_peak_mem_mb``: the peak of one training
    forward and backward pass on that batch (``measure_training_memory``). ``say(what)`` is told
    each step as it starts (a long paper-size count shows what it is doing). The measured
    figures come with ``load_per_core``: the 1-minute load average per core when they were
    taken (above 1, other work shared the cores and latency reads high).
    """
    voxels = 1
    for s in input_shape[2:]:
        voxels *= int(s)
    voxels *= int(input_shape[0])
    say(f"counting MACs at {'x'.join(map(str, input_shape))}")
    macs = count_macs(model, input_shape) if inferer is None else inference_macs(model, input_shape, inferer)
    out: dict[str, Any] = {
        "input": "x".join(str(int(s)) for s in input_shape),
        "params": count_params(model),
        # Weights and buffers as saved, in 10^6 bytes (ConResNet Table VII: 18.8M fp32 -> 75.2 MB).
        "size_mb": sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6,
        "gmacs": macs["macs"] / 1e9,
        "macs_per_voxel": macs["macs"] / voxels,
        "forward_passes": macs.get("forward_passes", int(input_shape[0])),
        "macs_by_op": macs["by_op"],
    }
    if latency:
        say(f"timing {runs} inferences")
        lat = measure_latency(model, input_shape, runs=runs, inferer=inferer)
        out.update(latency_s=lat, latency_ns_per_voxel=lat / voxels * 1e9, load_per_core=load_per_core(),
                   device=str(next(model.parameters()).device))
        say("measuring inference memory")
        out["peak_mem_mb"] = measure_peak_memory(model, input_shape, inferer) / 2**20
        if train_shape is not None:
            say(f"measuring training memory at {'x'.join(map(str, train_shape))}")
            out["train_peak_mem_mb"] = measure_training_memory(model, train_shape) / 2**20
    return out


def load_per_core() -> float:
    """The 1-minute load average per core (runnable processes per core): about 1 or less on a
    machine doing only this; above, latency was measured beside other work."""
    return os.getloadavg()[0] / (os.cpu_count() or 1)
