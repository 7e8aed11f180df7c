"""``harness bench``: speed targets measured as ratios within one run (machines are noisy).

Beside the package, not in it: it times the families' ops and nets by name, which the core never
names (``harness bench`` loads this file from the checkout).

1. Group Shift forward vs ``x.clone()`` of the same tensor at every stage of the GSP nets at
   the papers' crops: both read and write every element once, so clone is the floor. Target:
   <= 1.2x a clone plus one dispatch (30 us). And Group Shift's share of a GSP training step.
2. The harness's training step (the trial as ``build_trial`` makes it: data loader, loss,
   poly schedule, grad scaler) vs a bare PyTorch loop over one fixed batch of the same
   model. Target: >= 0.95x.
3. Distill DSM Table 1's wall time per voxel: each net's inference vs the 2D U-Net's on
   the same input (4 x 16 x 128 x 128 BraTS-like slab), beside the paper's V100 ratios.
4. OBELISK vs strided convs, forward + backward, as the OBELISK paper's efficiency paragraph
   (Sec. 5) sets them up: on 8 x 144^3 features, two strided 3^3 convs (8->32, 32->64) vs an
   OBELISK layer with 128 offsets on the 36^3 grid and a 1x1 conv 8*128->64. Paper (GTX 1080
   Ti): about 10 ms vs 20 ms, ratio about 2.
5. BraTS 2020 U-Net at the quick scale's size (width 8, 32 x 64 x 64, deep supervision), one
   training step (forward + backward): with CBAM (r = 8) vs without, beside their MAC ratio;
   and the time per case at batch 1 vs batch 2, where PyTorch's CPU convolution leaves oneDNN
   for its slow path at batch 1 (N C D H <= 20480).
6. 3D convolutions at batch 1 on the CPU, forward + backward: ``F.conv3d`` (PyTorch's backend
   rule) vs ``harness.ops.conv.conv3d`` (oneDNN), at the feature maps of a small 3D U-Net; and at
   batch 2 with few channels, where ``conv3d`` runs the backward on channels-last copies.
7. The CPU layer (``harness.ops``, Group Shift's kernel; ``HARNESS_CPU_KERNELS=0`` turns it off)
   on the quick set: every quick study's training compute, a training step of each distinct
   configuration timed with the layer and without, alternated, times its steps, summed over its
   trials (``harness bench --cpu-layer``, also part of the full bench; ``cpu_layer.md``).
Timings alternate between the two sides so that drift hits both equally.
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch
from monai.losses import DiceLoss

from harness.config import ConfigError, CostCfg, DataCfg, ModelCfg, ResourcesCfg, TrainCfg, TrialSpec
from harness.data import build_task
from harness.models import build_model
from harness.families.gsp_conv.group_shift import group_shift
from harness.families.obelisk_net.obelisk_op import Obelisk, regular_grid
from harness.ops import conv3d, onednn_convs, upsample_trilinear2x
from harness.train import build_trial, make_loader, train_step


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _alternate(fa, fb, rounds: int, device) -> tuple[float, float, float]:
    """Median seconds of fa and fb, measured alternately after one warm-up each, and the
    median of the per-round ratios fa/fb (pairs taken moments apart cancel slow drift)."""
    fa(), fb()
    ta, tb = [], []
    for _ in range(rounds):
        for f, ts in ((fa, ta), (fb, tb)):
            _sync(device)
            t0 = time.perf_counter()
            f()
            _sync(device)
            ts.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb), statistics.median(a / b for a, b in zip(ta, tb))


# The GSP nets at the papers' crops (Sec. 3): PROMISE12 Table 2's best groups (ProSGv3) at
# 16x128x128, and the BraTS18 groups of Sec. 3.2 at 160^3 (see gsp_brats18_insert_positions),
# CSC in encoder and decoder. Group Shift sees every stage's feature map of these.
GS_NETS = {
    "promise12_ProSGv3": ({"in_channels": 1, "out_channels": 1, "insert": "CSC",
                           "groups": [[2, 2, 2], [1, 4, 4], [1, 4, 4], [1, 8, 8], [1, 8, 8]]}, (16, 128, 128)),
    "brats18_sec3.2": ({"in_channels": 4, "out_channels": 3, "insert": "CSC",
                        "groups": [[2, 2, 2], [2, 2, 2], [2, 2, 2], [4, 4, 4], [5, 5, 5]]}, (160, 160, 160)),
}
# The shapes of issue 16's table (the deep stages where a copy per channel group hurt most).
GS_EXTRA = [((2, 32, 32, 32, 32), (1, 8, 8)), ((4, 64, 16, 32, 32), (1, 4, 4)), ((4, 128, 8, 16, 16), (1, 8, 8)),
            ((4, 256, 4, 8, 8), (1, 4, 4)), ((1, 256, 5, 5, 5), (5, 5, 5))]
GS_DISPATCH_S = 30e-6  # target: group_shift <= 1.2 x clone + one dispatch


def gs_shapes(net: str) -> list[tuple[tuple[int, ...], tuple[int, int, int]]]:
    """(C, D, H, W) and groups of every distinct Group Shift input of ``net`` (one forward, meta tensors)."""
    from harness.families.gsp_conv.group_shift import GroupShift

    params, patch = GS_NETS[net]
    model = build_model("gsp_unet", **params)
    seen: list = []

    def hook(module, inputs):
        key = (tuple(inputs[0].shape[1:]), module.groups)
        if key not in seen:
            seen.append(key)
        return (inputs[0],)

    for m in model.modules():
        if isinstance(m, GroupShift):
            m.register_forward_pre_hook(hook)
            m.forward = lambda x: x  # shapes only: nothing is shifted on the meta device
    with torch.device("meta"):
        model.to("meta")(torch.empty(1, params["in_channels"], *patch, device="meta"))
    return seen


def bench_group_shift(device: torch.device, quick: bool) -> list[dict]:
    """Group Shift forward vs ``x.clone()`` at every stage of the GSP nets at the papers' crops.

    The op keeps whichever of its exact realisations is fastest per shape (families/gsp_conv/group_shift.py);
    each is timed here too, so the table shows why (``kernel``: CPU, where it could be built).
    """
    from harness.families.gsp_conv.group_shift import (CHOSEN_METHOD, load_kernel, shift_boxes, shift_kernel, shift_plan,
                                                       shift_rows)

    cases = []
    for net in (["promise12_ProSGv3"] if quick else list(GS_NETS)):
        for chw, groups in gs_shapes(net):
            for batch in ((1,) if quick else (1, 4)):
                cases.append((net, (batch, *chw), groups))
    cases += [("issue 16", shape, groups) for shape, groups in (GS_EXTRA[2:] if quick else GS_EXTRA)]
    rows = []
    for net, shape, groups in cases:
        x = torch.randn(shape, device=device)
        rounds = 3 if quick else (5 if x.numel() > 2**24 else 20)
        t_gs, t_clone, ratio = _alternate(lambda: group_shift(x, groups), lambda: x.clone(), rounds, device)
        copies = shift_plan(shape, groups, 0.5)[0]
        t_box, _, _ = _alternate(lambda: shift_boxes(x, groups, 0.5, False), lambda: None, rounds, device)
        t_rows, _, _ = _alternate(lambda: shift_rows(x, groups, 0.5, False), lambda: None, rounds, device)
        t_kernel = (_alternate(lambda: shift_kernel(x, groups, 0.5, False), lambda: None, rounds, device)[0]
                    if device.type == "cpu" and load_kernel() is not None else float("nan"))
        rows.append({"device": str(device), "net": net, "shape": "x".join(map(str, shape)), "groups": list(groups),
                     "method": CHOSEN_METHOD[(shape, groups, 0.5, device.type, x.dtype)], "box_copies": len(copies),
                     "group_shift_ms": 1e3 * t_gs, "clone_ms": 1e3 * t_clone, "box_ms": 1e3 * t_box,
                     "rows_ms": 1e3 * t_rows, "kernel_ms": 1e3 * t_kernel, "ratio": ratio, "excess_us": 1e6 * (t_gs - t_clone),
                     "meets_target": t_gs <= 1.2 * t_clone + GS_DISPATCH_S})
        del x
    return rows


def bench_gs_share(device: torch.device, quick: bool) -> list[dict]:
    """Group Shift's share of a GSP training step (forward + backward + SGD step): the same net
    with its GroupShift layers replaced by identities, timed alternately."""
    from harness.families.gsp_conv.group_shift import GroupShift

    out = []
    for net in (["promise12_ProSGv3"] if quick else list(GS_NETS)):
        params, patch = GS_NETS[net]
        batch = 1 if quick else 2
        if quick:
            patch = (16, 64, 64)
            params = {**params, "widths": [8, 16, 32, 64, 128], "groups": [[2, 2, 2], [1, 4, 4], [1, 4, 4], [1, 4, 4], [1, 2, 2]]}
        elif net.startswith("brats"):
            patch = (80, 80, 80)  # a 160^3 batch takes minutes per step on CPU; stage 5 is 5^3 at 80^3 too
            params = {**params, "groups": [[2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [5, 5, 5]]}
        model = build_model("gsp_unet", **params).to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        x = torch.randn(batch, params["in_channels"], *patch, device=device)
        shifts = [m for m in model.modules() if isinstance(m, GroupShift)]

        def step(active: bool):
            def run():
                for m in shifts:
                    m.forward = GroupShift.forward.__get__(m) if active else (lambda t: t)
                with torch.autocast(device.type, enabled=device.type == "cuda"):
                    loss = model(x).float().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return run

        t_gs, t_id, ratio = _alternate(step(True), step(False), 3 if quick else 10, device)
        out.append({"device": str(device), "net": net, "input": "x".join(map(str, (batch, params["in_channels"], *patch))),
                    "step_s": t_gs, "step_without_gs_s": t_id, "gs_share": 1 - 1 / ratio, "gs_layers": len(shifts)})
    return out


# The GSP nets' decoder upsampling inputs: Table 2 (PROMISE12) at its quick scale and at the
# paper's crop, Table 3 (BraTS18) at its quick scale: (net, input of one step, model params).
UP_NETS = {
    "promise12 quick": ((1, 1, 16, 128, 128), {"in_channels": 1, "out_channels": 1, "widths": [8, 16, 32, 64, 128]}),
    "promise12 paper crop": ((1, 1, 16, 128, 128), {"in_channels": 1, "out_channels": 1}),
    "brats18 quick": ((2, 4, 32, 64, 64), {"in_channels": 4, "out_channels": 3}),
}
UP_GROUPS = [[2, 2, 2], [1, 4, 4], [1, 4, 4], [1, 2, 2], [1, 1, 1]]  # divide every stage of the three inputs


def bench_upsample(quick: bool) -> tuple[list[dict], list[dict]]:
    """Trilinear x2 (``harness.ops.upsample``) on CPU: PyTorch's kernels / the compiled one, forward
    and backward, at every decoder stage of the GSP nets (identical numbers; the op keeps the
    faster per shape and direction), and a GSP training step with PyTorch's upsampling / with the op."""
    from harness.ops import upsample as up

    if up.load_kernel() is None:
        return [], []
    cpu, rows, steps = torch.device("cpu"), [], []
    for net, (shape, params) in list(UP_NETS.items())[: 1 if quick else None]:
        model = build_model("gsp_unet", **params, insert="CSC", groups=UP_GROUPS)
        inputs = []
        for u in model.up:
            u.register_forward_pre_hook(lambda m, i: inputs.append(tuple(i[0].shape)))
        with torch.device("meta"):
            model.to("meta")(torch.empty(shape, device="meta"))
        for in_shape in inputs:
            x = torch.randn(in_shape)
            g = torch.randn(*in_shape[:2], *(2 * s for s in in_shape[2:]))
            rounds = 3 if quick else 10
            f_torch, f_kernel, f_ratio = _alternate(lambda: up._forward(x, "torch"), lambda: up._forward(x, "kernel"), rounds, cpu)
            b_torch, b_kernel, b_ratio = _alternate(lambda: up._backward(g, x.shape, "torch"),
                                                    lambda: up._backward(g, x.shape, "kernel"), rounds, cpu)
            upsample_trilinear2x(x.requires_grad_()).backward(g)  # the op's own choice for this shape
            rows.append({"net": net, "input": "x".join(map(str, in_shape)), "forward_torch_ms": 1e3 * f_torch,
                         "forward_kernel_ms": 1e3 * f_kernel, "forward_speedup": f_ratio,
                         "backward_torch_ms": 1e3 * b_torch, "backward_kernel_ms": 1e3 * b_kernel, "backward_speedup": b_ratio,
                         "kept": f"{up.CHOSEN_METHOD[('forward', x.shape)]} / {up.CHOSEN_METHOD[('backward', g.shape)]}"})
        model = build_model("gsp_unet", **params, insert="CSC", groups=UP_GROUPS).train()  # the meta one is spent
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        x = torch.randn(shape)

        def step(ours: bool):
            def run():
                for u in model.up:
                    u[0] = up.Upsample2x() if ours else torch.nn.Upsample(scale_factor=2, mode="trilinear")
                loss = model(x).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return run

        t_torch, t_ours, ratio = _alternate(step(False), step(True), 3 if quick else 10, cpu)
        steps.append({"net": net, "input": "x".join(map(str, shape)), "step_torch_upsample_s": t_torch,
                      "step_s": t_ours, "speedup": ratio})
    return rows, steps


def bench_train_step(device: torch.device, patch: list[int], rounds: int) -> dict:
    """Harness vs bare loop at one patch size (quick scale 16x64x64, paper 16x128x128)."""
    params = dict(widths=[8, 16, 32, 64, 128], insert="CSC",
                  groups=[[2, 2, 2], [1, 4, 4], [1, 4, 4], [1, 8, 8], [1, 8, 8]] if patch[1] >= 128 else
                  [[2, 2, 2], [1, 4, 4], [1, 4, 4], [1, 4, 4], [1, 2, 2]])
    spec = TrialSpec(study="bench", scale="bench", key="bench", variant="bench", tags={}, seed=0,
                     data=DataCfg(dataset="synthetic_organ", params={"n_cases": 6, "shape": patch, "seed": 0}),
                     model=ModelCfg(name="gsp_unet", params=params),
                     train=TrainCfg(patch=patch, batch_size=2, epochs=1, steps_per_epoch=1000, lr=0.01, amp=True),
                     cost=CostCfg(), resources=ResourcesCfg(cpu=torch.get_num_threads(), gpu=1.0 if device.type == "cuda" else 0.0))

    # Harness side: the trial exactly as ``harness run`` builds it (loader, loss, schedule, scaler).
    torch.manual_seed(0)
    trial = build_trial(spec, device=device)
    trial.model.train()
    batches = iter(trial.loader)

    def harness_step():
        train_step(trial, next(batches))

    # Bare side: the same architecture, one fixed batch already on the device, plain loss and SGD.
    torch.manual_seed(0)
    bm = build_model("gsp_unet", in_channels=1, out_channels=1, **params).to(device).train()
    b_opt = torch.optim.SGD(bm.parameters(), lr=0.01, momentum=0.9)
    fixed = next(iter(make_loader(trial.task, spec.train, 1, device)))
    bx = torch.as_tensor(fixed["image"]).as_subclass(torch.Tensor).to(device)
    by = torch.as_tensor(fixed["label"]).as_subclass(torch.Tensor).to(device).float()
    bare_loss = DiceLoss(sigmoid=True)

    def bare_step():
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            loss = bare_loss(bm(bx), by)
        b_opt.zero_grad(set_to_none=True)
        loss.backward()
        b_opt.step()

    t_h, t_b, slowdown = _alternate(harness_step, bare_step, rounds, device)

    # Making a batch of samples: the harness's metadata-free dataset vs MONAI's default
    # (MetaTensor bookkeeping in every transform), same cases and transforms.
    from monai.data import Dataset

    plain = trial.loader.dataset
    meta = Dataset(plain.data, plain.transform)
    batch = range(spec.train.batch_size)
    t_plain, t_meta, _ = _alternate(lambda: [plain[i] for i in batch], lambda: [meta[i] for i in batch], rounds, device)
    return {"device": str(device), "model": "gsp_unet", "params": params, "batch": spec.train.batch_size,
            "patch": patch, "harness_step_s": t_h, "bare_step_s": t_b, "throughput_ratio": 1 / slowdown,
            "samples_ms_per_batch": 1e3 * t_plain, "samples_ms_per_batch_with_metadata": 1e3 * t_meta,
            "target": 0.95, "meets_target": 1 / slowdown >= 0.95}


def bench_throughput(study_path: str = "studies/obelisk_offsets.yaml", scale: str = "smoke") -> dict:
    """Trials per hour of one study: ``harness run`` (Ray Tune, MLflow, checkpoints) with one
    and with two trials at a time, against the same trials in a plain Python loop
    (``run_trial`` one after the other, no Ray, no MLflow). Run at 1 and at 3 seeds, so that
    the study's fixed cost (start-up, Ray, MLflow) and the cost per trial come apart."""
    import subprocess
    import sys
    import tempfile

    from harness.config import load_study, resolve
    from harness.train import run_trial

    study = load_study(study_path)
    threads = torch.get_num_threads()
    specs = resolve(study, scale, seeds=3)
    t0 = time.perf_counter()
    phases = [run_trial(s, threads=threads) for s in specs]
    out = {"study": study.name, "scale": scale, "threads": threads, "variants": len(resolve(study, scale, seeds=1)),
           "plain_loop_s_per_trial": (time.perf_counter() - t0) / len(specs),
           "phase_s": {k: statistics.mean(p[f"time_{k}_s"] for p in phases) for k in ("build", "train", "evaluate", "cost")}}

    def harness_run(seeds: int, cpus: float) -> float:
        with tempfile.TemporaryDirectory() as d:
            cmd = [sys.executable, "-c", "import sys; from harness.cli import main; sys.exit(main(sys.argv[1:]))",
                   "run", str(Path(study_path).resolve()), "--scale", scale, "--seeds", str(seeds),
                   "--cpus-per-trial", str(cpus), "--tracking-uri", f"sqlite:///{d}/mlflow.db",
                   "--storage", f"{d}/ray", "-v", "0"]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"harness run failed: {done.stderr[-2000:]}")
            return time.perf_counter() - t0

    n1, n3 = out["variants"], 3 * out["variants"]
    t1, t3 = harness_run(1, threads), harness_run(3, threads)
    t3_two = harness_run(3, max(1, threads // 2))
    per_trial = (t3 - t1) / (n3 - n1)
    out.update(harness_1_seed_s=t1, harness_3_seeds_s=t3, harness_3_seeds_two_at_a_time_s=t3_two,
               harness_s_per_trial=per_trial, harness_fixed_s=t1 - n1 * per_trial, trials=n3,
               trials_per_hour={"plain loop": 3600 / out["plain_loop_s_per_trial"], "harness, 1 at a time": 3600 * n3 / t3,
                                "harness, 2 at a time": 3600 * n3 / t3_two,
                                "harness, 1 at a time, fixed cost excluded": 3600 / per_trial})
    return out


# Distill DSM Table 1, wall time per voxel (s) on a V100.
DSM_PAPER_S_PER_VOXEL = {"unet2d": 7.9498e-7, "residual_dsm": 8.1726e-7, "unet3d": 8.6517e-7, "distill_dsm": 8.2641e-7}


def bench_dsm_wall_time(device: torch.device, quick: bool) -> list[dict]:
    shape = (1, 4, 16, 64, 64) if quick else (1, 4, 16, 128, 128)
    x = torch.randn(shape, device=device)
    voxels = x[0, 0].numel()
    nets = {n: build_model(n, **({"alpha": 0.5} if n == "distill_dsm" else {})).to(device).eval()
            for n in DSM_PAPER_S_PER_VOXEL}
    rows = []
    with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda"):
        for name, net in nets.items():
            t, t_ref, ratio = _alternate(lambda: net(x), lambda: nets["unet2d"](x), 3 if quick else 10, device)
            paper = DSM_PAPER_S_PER_VOXEL[name]
            rows.append({"device": str(device), "shape": "x".join(map(str, shape)), "model": name,
                         "ns_per_voxel": 1e9 * t / voxels, "ratio_vs_unet2d": ratio,
                         "paper_ns_per_voxel": 1e9 * paper, "paper_ratio": paper / DSM_PAPER_S_PER_VOXEL["unet2d"]})
    return rows


def bench_obelisk(device: torch.device, quick: bool) -> dict:
    size = 48 if quick else 144
    x = torch.randn(1, 8, size, size, size, device=device, requires_grad=True)
    convs = onednn_convs(torch.nn.Sequential(torch.nn.Conv3d(8, 32, 3, stride=2, padding=1),
                                             torch.nn.Conv3d(32, 64, 3, stride=2, padding=1))).to(device)
    obelisk, linear = Obelisk(128).to(device), torch.nn.Conv3d(8 * 128, 64, 1).to(device)
    grid = regular_grid((size // 4,) * 3, device=device)

    def conv_pass():
        convs(x).sum().backward()

    def obelisk_pass():
        linear(obelisk(x, grid)).sum().backward()

    t_ob, t_conv, ratio = _alternate(obelisk_pass, conv_pass, 3 if quick else 10, device)
    return {"device": str(device), "input": f"1x8x{size}^3", "grid": f"{size // 4}^3", "obelisk_ms": 1e3 * t_ob,
            "convs_ms": 1e3 * t_conv, "ratio": ratio, "paper_ratio": 2.0}


def bench_brats(device: torch.device, quick: bool) -> dict:
    from harness.cost import count_macs

    shape = (4, 32, 64, 64)
    nets = {name: build_model("brats_unet", width=8, deep_supervision=True, reduction=8, attention=att).to(device)
            for name, att in (("plain", False), ("cbam", True))}

    def step(net, batch):
        x = torch.randn(batch, *shape, device=device)

        def run():
            out = net.train()(x)
            sum(h.float().mean() for h in [out["seg"], *out["deep"]]).backward()
        return run

    rounds = 2 if quick else 10
    t_cbam, t_plain, cbam_ratio = _alternate(step(nets["cbam"], 2), step(nets["plain"], 2), rounds, device)
    t_b1, t_b2, b_ratio = _alternate(step(nets["plain"], 1), step(nets["plain"], 2), rounds, device)
    macs = {n: count_macs(m, [1, *shape])["macs"] for n, m in nets.items()}
    # CBAM's spatial gate conv (2 -> 1, 7^3) forward + backward in the two memory layouts
    # (harness.families.brats2020_unet.cbam moves it to channels-last on CPU).
    conv = torch.nn.Conv3d(2, 1, 7, padding=3, bias=False).to(device)
    maps = torch.randn(2, 2, *shape[1:], device=device, requires_grad=True)

    def gate(layout):
        return lambda: conv(maps.contiguous(memory_format=layout)).sum().backward()
    t_ncdhw, t_cl, gate_ratio = _alternate(gate(torch.contiguous_format), gate(torch.channels_last_3d), rounds, device)
    return {"device": str(device), "input": "x".join(map(str, shape)), "plain_step_s": t_plain, "cbam_step_s": t_cbam,
            "cbam_time_ratio": cbam_ratio, "cbam_macs_ratio": macs["cbam"] / macs["plain"],
            "batch1_step_s": t_b1, "batch2_step_s": t_b2, "per_case_batch1_vs_batch2": 2 * b_ratio,
            "gate_ncdhw_ms": 1e3 * t_ncdhw, "gate_channels_last_ms": 1e3 * t_cl, "gate_ncdhw_vs_channels_last": gate_ratio}


# Batch-1 feature maps (C_in, C_out, kernel, D, H, W) of a 3D U-Net at 16x128x128 (widths 8-64)
# and at 32x64x64, where PyTorch's rule (N C D H <= 20480) leaves oneDNN.
CONV_SHAPES = [(1, 8, 3, 16, 128, 128), (8, 8, 3, 16, 128, 128), (16, 16, 3, 8, 64, 64), (32, 32, 3, 4, 32, 32),
               (64, 64, 3, 2, 16, 16), (8, 8, (1, 3, 3), 16, 128, 128), (4, 8, 3, 32, 64, 64)]


def bench_conv3d(device: torch.device, quick: bool) -> list[dict]:
    """Forward + backward of one batch-1 convolution: ``F.conv3d`` / ``harness.ops.conv.conv3d``."""
    rows = []
    for cin, cout, k, d, h, w in CONV_SHAPES[:3] if quick else CONV_SHAPES:
        k = (k,) * 3 if isinstance(k, int) else k
        x = torch.randn(1, cin, d, h, w, device=device, requires_grad=True)
        weight = torch.randn(cout, cin, *k, device=device, requires_grad=True)
        pad = [kk // 2 for kk in k]
        t_torch, t_ours, ratio = _alternate(lambda: torch.nn.functional.conv3d(x, weight, padding=pad).sum().backward(),
                                            lambda: conv3d(x, weight, padding=pad).sum().backward(),
                                            2 if quick else 5, device)
        rows.append({"device": str(device), "conv": f"{cin}->{cout}, {'x'.join(map(str, k))}",
                     "input": f"1x{cin}x{d}x{h}x{w}", "torch_ms": 1e3 * t_torch, "harness_ms": 1e3 * t_ours,
                     "ratio": ratio})
    return rows


# Batch-2 training convolutions (C_in, C_out, kernel, D, H, W) whose backward harness.ops.conv runs
# in channels-last: the 3D FCN's and 3D U-Net's first stages at the quick crops, a 16 -> 8 decoder
# conv, and CBAM's 7^3 spatial gate (2 -> 1).
CL_BACKWARD_SHAPES = [(8, 8, 3, 32, 64, 64), (4, 8, 3, 32, 64, 64), (24, 8, 3, 32, 64, 64), (16, 8, 3, 32, 48, 48),
                      (2, 1, 7, 32, 48, 48)]


def bench_conv3d_channels_last(device: torch.device, quick: bool) -> list[dict]:
    """Forward + backward of one batch-2 convolution with few channels: ``F.conv3d`` /
    ``harness.ops.conv.conv3d`` (the same forward, the backward on channels-last copies)."""
    rows = []
    for cin, cout, k, d, h, w in CL_BACKWARD_SHAPES[:2] if quick else CL_BACKWARD_SHAPES:
        x = torch.randn(2, cin, d, h, w, device=device, requires_grad=True)
        weight = torch.randn(cout, cin, k, k, k, device=device, requires_grad=True)
        t_torch, t_ours, ratio = _alternate(lambda: torch.nn.functional.conv3d(x, weight, padding=k // 2).sum().backward(),
                                            lambda: conv3d(x, weight, padding=k // 2).sum().backward(),
                                            2 if quick else 5, device)
        rows.append({"device": str(device), "conv": f"{cin}->{cout}, {k}x{k}x{k}", "input": f"2x{cin}x{d}x{h}x{w}",
                     "torch_ms": 1e3 * t_torch, "harness_ms": 1e3 * t_ours, "ratio": ratio})
    return rows


# One reference study per family: a paper-scale training step of its first variant on a GPU.
PAPER_STEP_STUDIES = ["gsp_table3_brats18", "dsm_table1_brats20", "obelisk_table3_visceral", "conres_table3_ablation",
                      "brats20_table2"]


def bench_paper_steps(device: torch.device, steps: int = 3) -> list[dict]:
    """A paper-scale training step of each family (its study's first variant: the paper's patch,
    batch and recipe, AMP as trials run), as ``harness run --dry-run`` measures it: seconds per
    step after a warm-up, and the peak memory of a step (the allocator's high-water mark, weights
    and optimiser state included). CUDA only: on 2 CPU cores one step takes minutes and tens of
    GB. A study that fails (out of memory, say) gives a row with its error, and the rest go on."""
    from harness.config import load_study, resolve
    from harness.study import measure_step_time

    rows = []
    for name in PAPER_STEP_STUDIES:
        spec = resolve(load_study(f"studies/{name}.yaml"), "paper", 1, None)[0]
        row = {"device": str(device), "study": name, "trial": spec.key, "model": spec.model.name,
               "batch": spec.train.batch_size, "patch": spec.train.patch, "amp": spec.train.amp}
        try:
            task = build_task(spec.data.dataset, **spec.data.params)  # channels and regions; no case is read
            row["step_s"] = measure_step_time(spec, task, steps=steps, device=device)
            row["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        except Exception as e:  # noqa: BLE001  one family's failure is a row, not the end of the bench
            row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
        torch.cuda.empty_cache()
        rows.append(row)
    return rows


def bench_cpu_layer(paths: list[str] | None = None, scale: str = "quick", rounds: int = 3) -> dict:
    """Training compute (s, 2 threads) of every quick study with the CPU layer on and off: per
    distinct configuration one trial is built (the convolution route is chosen at build, the
    switch is read at every call), a warm-up step each way (the layer races its realisations on
    its first call), then ``rounds`` steps alternated; step time x steps, summed over trials."""
    import glob
    import os

    from harness.config import config_hash, import_plugins, load_study, resolve
    from harness.study import random_batch

    root = Path(__file__).resolve().parents[1] / "studies"
    before = os.environ.get("HARNESS_CPU_KERNELS")

    def step(t, batch, on: bool):
        os.environ["HARNESS_CPU_KERNELS"] = "1" if on else "0"
        train_step(t, batch)

    rows = []
    try:
        for path in paths or sorted(glob.glob(str(root / "*.yaml"))):
            study = load_study(path)
            import_plugins(study.plugins)
            specs = resolve(study, scale)
            tasks, times, on_s, off_s = {}, {}, 0.0, 0.0
            for spec in specs:
                dkey = config_hash(spec.data.model_dump())
                if dkey not in tasks:
                    tasks[dkey] = build_task(spec.data.dataset, **spec.data.params)
                mkey = config_hash([spec.model.model_dump(), spec.train.model_dump(), dkey])
                if mkey not in times:
                    t = build_trial(spec, task=tasks[dkey], loader=False)
                    batch = random_batch(spec, tasks[dkey])
                    times[mkey] = _alternate(lambda: step(t, batch, True), lambda: step(t, batch, False), rounds,
                                             t.device)[:2]
                steps = spec.train.epochs * spec.train.steps_per_epoch
                on_s += steps * times[mkey][0]
                off_s += steps * times[mkey][1]
            rows.append({"study": study.name, "trials": len(specs), "configurations": len(times),
                         "train_min_on": on_s / 60, "train_min_off": off_s / 60, "speedup": off_s / on_s})
    finally:
        if before is None:
            os.environ.pop("HARNESS_CPU_KERNELS", None)
        else:
            os.environ["HARNESS_CPU_KERNELS"] = before
    on, off = sum(r["train_min_on"] for r in rows), sum(r["train_min_off"] for r in rows)
    return {"threads": torch.get_num_threads(), "torch": torch.__version__, "studies": rows,
            "total_min_on": on, "total_min_off": off, "speedup": off / on}


def _cpu_layer_md(r: dict) -> list[str]:
    lines = ["## The CPU layer on the quick set: training compute with it / without (HARNESS_CPU_KERNELS=0)", "",
             f"Every quick study's training steps (step time x steps, summed over its trials; validation, cost and "
             f"start-up not included), {r['threads']} threads, torch {r['torch']}; each distinct configuration's step "
             f"timed both ways, alternated (median of the rounds). Total: **{r['total_min_on']:.0f} min with the "
             f"layer, {r['total_min_off']:.0f} min without: {r['speedup']:.2f}x**.", "",
             "| study | trials | configurations | train min, layer on | train min, off | off / on |", "|---|---|---|---|---|---|"]
    lines += [f"| {s['study']} | {s['trials']} | {s['configurations']} | {s['train_min_on']:.1f} | "
              f"{s['train_min_off']:.1f} | **{s['speedup']:.2f}** |" for s in r["studies"]]
    return lines


def run_cpu_layer(out: Path) -> int:
    """``harness bench --cpu-layer``: section 7 alone, into ``cpu_layer.json`` and ``cpu_layer.md``."""
    result = bench_cpu_layer()
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu_layer.json").write_text(json.dumps(result, indent=1))
    lines = ["# harness bench --cpu-layer", ""] + _cpu_layer_md(result)
    (out / "cpu_layer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def run_bench(out: Path, quick: bool = False, device: str = "all") -> int:
    from rich.console import Console

    console = Console()
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device: cuda, but no CUDA device is available here (allowed: all, cpu, cuda)")
    devices = ([torch.device("cpu")] if device in ("all", "cpu") else []) + (
        [torch.device("cuda")] if device in ("all", "cuda") and torch.cuda.is_available() else [])
    result = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "cpu_threads": torch.get_num_threads(), "processor": platform.processor(),
                          "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
              "quick": quick, "group_shift": [], "gs_share": [], "train_step": [], "dsm_wall_time": [], "obelisk": [], "brats": [],
              "conv3d": [], "conv3d_channels_last": []}
    for device in devices:
        result["group_shift"] += bench_group_shift(device, quick)
        result["gs_share"] += bench_gs_share(device, quick)
        for patch in ([[16, 64, 64]] if quick else [[16, 64, 64], [16, 128, 128]]):
            result["train_step"].append(bench_train_step(device, patch, 4 if quick else 25))
        result["dsm_wall_time"] += bench_dsm_wall_time(device, quick)
        result["obelisk"].append(bench_obelisk(device, quick))
        result["brats"].append(bench_brats(device, quick))
        if device.type == "cpu":  # the rule and the route are the CPU's; CUDA runs cuDNN
            result["conv3d"] += bench_conv3d(device, quick)
            result["conv3d_channels_last"] += bench_conv3d_channels_last(device, quick)
            result["upsample"], result["upsample_step"] = bench_upsample(quick)  # CUDA: the op is F.interpolate
        if device.type == "cuda":
            result["paper_steps"] = bench_paper_steps(device)
    if not quick and any(d.type == "cpu" for d in devices):  # minutes of Ray and MLflow (CPU trials): full bench only
        result["throughput"] = bench_throughput()
        result["cpu_layer"] = bench_cpu_layer()
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    lines = ["# harness bench", "", f"Machine: {json.dumps(result['machine'])}", "",
             "## Group Shift forward / x.clone() (target: <= 1.2 x clone + 30 us)", "",
             "Every Group Shift input of the GSP nets at the papers' crops (CSC, encoder and decoder), batch 1 "
             "and 4, and issue 16's shapes. `method` is the realisation the op keeps for that shape (the fastest "
             "of `box`, one copy per box of whole W rows, `rows`, one gather of rotated W rows, and `kernel`, "
             "every run in one call of the compiled C kernel; `rows` is not tried where `box` dispatches little). Times under "
             "0.1 ms, and outputs over 32 MB (above glibc's mmap threshold every fresh output page-faults, the "
             "clone's too), are noisy on a shared 2-core machine: read the ratios, not single cells.", "",
             "| device | net | shape | groups | method | box copies | box ms | rows ms | kernel ms | group_shift ms | "
             "clone ms | ratio (median of pairs) | excess us | meets |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['device']} | {r['net']} | {r['shape']} | {tuple(r['groups'])} | {r['method']} | {r['box_copies']} | "
              f"{r['box_ms']:.3f} | {r['rows_ms']:.3f} | {r['kernel_ms']:.3f} | {r['group_shift_ms']:.3f} | {r['clone_ms']:.3f} | "
              f"**{r['ratio']:.2f}** | {r['excess_us']:.0f} | {'yes' if r['meets_target'] else 'no'} |"
              for r in result["group_shift"]]
    lines += ["", "## Group Shift's share of a GSP training step (forward + backward + SGD)", "",
              "| device | net | input | GS layers | step s | step s, GS as identity | GS share |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['device']} | {r['net']} | {r['input']} | {r['gs_layers']} | {r['step_s']:.3f} | "
              f"{r['step_without_gs_s']:.3f} | **{100 * r['gs_share']:.1f}%** |" for r in result["gs_share"]]
    lines += ["", "## Training step: bare PyTorch loop / harness (target >= 0.95)", "",
              "| device | patch | batch | harness s/step | bare s/step | throughput ratio (median of pairs) | "
              "samples ms/batch | with MONAI metadata |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['device']} | {r['patch']} | {r['batch']} | {r['harness_step_s']:.4f} | {r['bare_step_s']:.4f} | "
              f"**{r['throughput_ratio']:.3f}** | {r['samples_ms_per_batch']:.2f} | "
              f"{r['samples_ms_per_batch_with_metadata']:.2f} |" for r in result["train_step"]]
    lines += ["", "## Distill DSM Table 1: wall time per voxel, each net / 2D U-Net (paper: V100)", "",
              "| device | input | model | ns / voxel | ratio vs 2D U-Net (median of pairs) | paper ns / voxel | paper ratio |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['device']} | {r['shape']} | {r['model']} | {r['ns_per_voxel']:.0f} | **{r['ratio_vs_unet2d']:.2f}** | "
              f"{r['paper_ns_per_voxel']:.0f} | {r['paper_ratio']:.2f} |" for r in result["dsm_wall_time"]]
    lines += ["", "## OBELISK (128 offsets + 1x1) / two strided 3^3 convs, forward + backward (paper: about 2)", "",
              "| device | input | grid | OBELISK ms | convs ms | ratio (median of pairs) | paper ratio |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['device']} | {r['input']} | {r['grid']} | {r['obelisk_ms']:.1f} | {r['convs_ms']:.1f} | "
              f"**{r['ratio']:.2f}** | {r['paper_ratio']:.1f} |" for r in result["obelisk"]]
    lines += ["", "## BraTS 2020 U-Net (width 8, deep supervision), one training step", "",
              "| device | input | plain s | CBAM s | CBAM time ratio | CBAM MAC ratio | batch 1 s | batch 2 s | "
              "time per case, batch 1 / batch 2 | CBAM gate conv NCDHW ms | channels-last ms | NCDHW / channels-last |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['device']} | {r['input']} | {r['plain_step_s']:.3f} | {r['cbam_step_s']:.3f} | "
              f"**{r['cbam_time_ratio']:.2f}** | {r['cbam_macs_ratio']:.3f} | {r['batch1_step_s']:.3f} | "
              f"{r['batch2_step_s']:.3f} | **{r['per_case_batch1_vs_batch2']:.2f}** | {r['gate_ncdhw_ms']:.1f} | "
              f"{r['gate_channels_last_ms']:.1f} | **{r['gate_ncdhw_vs_channels_last']:.2f}** |" for r in result["brats"]]
    lines += ["", "## 3D convolution at batch 1, forward + backward: PyTorch's rule / harness.ops.conv (CPU)", "",
              "PyTorch leaves oneDNN for `slow_conv3d` where N C D H <= 20480 (a rule written for 2D); "
              "`harness.ops.conv` hands those (but 1x1x1 kernels) to oneDNN in every registered model.", "",
              "| device | conv | input | F.conv3d ms | harness conv3d ms | ratio (median of pairs) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['device']} | {r['conv']} | {r['input']} | {r['torch_ms']:.1f} | {r['harness_ms']:.1f} | "
              f"**{r['ratio']:.2f}** |" for r in result.get("conv3d", [])]
    lines += ["", "## 3D convolution at batch 2 with few channels, forward + backward: dense layout / harness.ops.conv (CPU)", "",
              "oneDNN's backward on dense NCDHW tensors with fewer than 16 input channels is slow; `harness.ops.conv` "
              "runs it on channels-last copies where 2 <= C_in <= 24 and min(C_in, C_out) < 16 (the forward is "
              "F.conv3d's).", "",
              "| device | conv | input | F.conv3d ms | harness conv3d ms | ratio (median of pairs) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['device']} | {r['conv']} | {r['input']} | {r['torch_ms']:.1f} | {r['harness_ms']:.1f} | "
              f"**{r['ratio']:.2f}** |" for r in result.get("conv3d_channels_last", [])]
    if result.get("upsample"):
        lines += ["", "## Trilinear x2, forward and backward: PyTorch's CPU kernels / harness.ops.upsample's (CPU)", "",
                  "The decoder upsampling inputs of the GSP nets; both give the same numbers bit for bit, and the op "
                  "keeps the faster per shape and direction (`kept`: forward / backward).", "",
                  "| net | input | forward PyTorch ms | forward kernel ms | speed-up | backward PyTorch ms | "
                  "backward kernel ms | speed-up | kept |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['net']} | {r['input']} | {r['forward_torch_ms']:.2f} | {r['forward_kernel_ms']:.2f} | "
                  f"**{r['forward_speedup']:.1f}** | {r['backward_torch_ms']:.2f} | {r['backward_kernel_ms']:.2f} | "
                  f"**{r['backward_speedup']:.1f}** | {r['kept']} |" for r in result["upsample"]]
        lines += ["", "A GSP training step (forward + backward + SGD, CSC) with PyTorch's upsampling / with the op:", "",
                  "| net | input | step s, PyTorch's upsampling | step s | speed-up (median of pairs) |", "|---|---|---|---|---|"]
        lines += [f"| {r['net']} | {r['input']} | {r['step_torch_upsample_s']:.3f} | {r['step_s']:.3f} | **{r['speedup']:.2f}** |"
                  for r in result["upsample_step"]]
    if result.get("paper_steps"):
        lines += ["", "## A paper-scale training step of each family (CUDA)", "",
                  "| device | study | trial | model | batch | patch | AMP | step s | peak memory MB |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['device']} | {r['study']} | {r['trial']} | {r['model']} | {r['batch']} | "
                  f"{'x'.join(map(str, r['patch']))} | "
                  + (f"{r['amp']} | **{r['step_s']:.3f}** | {r['peak_mem_mb']:.0f} |" if "error" not in r
                     else f"- | failed: {r['error']} | - |") for r in result["paper_steps"]]
    if "throughput" in result:
        r = result["throughput"]
        lines += ["", f"## Trials per hour: {r['study']} @ {r['scale']}, {r['trials']} trials ({r['variants']} variants x 3 "
                  f"seeds), {r['threads']} threads", "",
                  f"`harness run` has a fixed cost of {r['harness_fixed_s']:.1f} s per study (start-up, Ray, MLflow, the "
                  f"first worker) and {r['harness_s_per_trial']:.2f} s per trial (from 1 and 3 seeds); the same trial "
                  f"takes {r['plain_loop_s_per_trial']:.2f} s in a plain loop (mean s: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in r["phase_s"].items()) + ").", "",
                  "| how | trials / hour |", "|---|---|"]
        lines += [f"| {how} | **{v:.0f}** |" for how, v in r["trials_per_hour"].items()]
    if "cpu_layer" in result:
        lines += [""] + _cpu_layer_md(result["cpu_layer"])
    (out / "README.md").write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines))
    return 0
