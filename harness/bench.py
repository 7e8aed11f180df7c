"""``harness bench``: speed targets measured as ratios within one run (machines are noisy).

1. Group Shift forward vs ``x.clone()`` of the same tensor: both read and write every
   element once, so clone is the floor. Target: <= 1.2x.
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

from harness.config import CostCfg, DataCfg, ModelCfg, ResourcesCfg, TrainCfg, TrialSpec
from harness.models import build_model
from harness.ops import Obelisk, group_shift, regular_grid
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


def bench_group_shift(device: torch.device, quick: bool) -> list[dict]:
    shape = (2, 32, 32, 32, 32) if quick else (2, 32, 64, 64, 64)
    x = torch.randn(shape, device=device)
    rows = []
    for groups in [(2, 2, 2), (1, 4, 4), (1, 8, 8)]:
        t_gs, t_clone, ratio = _alternate(lambda: group_shift(x, groups), lambda: x.clone(), 5 if quick else 30,
                                          device)
        rows.append({"device": str(device), "shape": "x".join(map(str, shape)), "groups": list(groups),
                     "group_shift_ms": 1e3 * t_gs, "clone_ms": 1e3 * t_clone, "ratio": ratio,
                     "target": 1.2, "meets_target": ratio <= 1.2})
    return rows


def bench_train_step(device: torch.device, quick: bool) -> dict:
    patch = [16, 64, 64] if quick else [16, 128, 128]
    params = dict(widths=[8, 16, 32, 64, 128], insert="CSC",
                  groups=[[2, 2, 2], [1, 4, 4], [1, 4, 4], [1, 8, 8], [1, 8, 8]] if not quick else
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

    t_h, t_b, slowdown = _alternate(harness_step, bare_step, 4 if quick else 25, device)
    return {"device": str(device), "model": "gsp_unet", "params": params, "batch": spec.train.batch_size,
            "patch": patch, "harness_step_s": t_h, "bare_step_s": t_b, "throughput_ratio": 1 / slowdown,
            "target": 0.95, "meets_target": 1 / slowdown >= 0.95}


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
    convs = torch.nn.Sequential(torch.nn.Conv3d(8, 32, 3, stride=2, padding=1),
                                torch.nn.Conv3d(32, 64, 3, stride=2, padding=1)).to(device)
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
    return {"device": str(device), "input": "x".join(map(str, shape)), "plain_step_s": t_plain, "cbam_step_s": t_cbam,
            "cbam_time_ratio": cbam_ratio, "cbam_macs_ratio": macs["cbam"] / macs["plain"],
            "batch1_step_s": t_b1, "batch2_step_s": t_b2, "per_case_batch1_vs_batch2": 2 * b_ratio}


def run_bench(out: Path, quick: bool = False) -> int:
    from rich.console import Console

    console = Console()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    result = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "cpu_threads": torch.get_num_threads(), "processor": platform.processor(),
                          "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
              "quick": quick, "group_shift": [], "train_step": [], "dsm_wall_time": [], "obelisk": [], "brats": []}
    for device in devices:
        result["group_shift"] += bench_group_shift(device, quick)
        result["train_step"].append(bench_train_step(device, quick))
        result["dsm_wall_time"] += bench_dsm_wall_time(device, quick)
        result["obelisk"].append(bench_obelisk(device, quick))
        result["brats"].append(bench_brats(device, quick))
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    lines = ["# harness bench", "", f"Machine: {json.dumps(result['machine'])}", "",
             "## Group Shift forward / x.clone() (target <= 1.2)", "",
             "| device | shape | groups | group_shift ms (median) | clone ms (median) | ratio (median of pairs) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['device']} | {r['shape']} | {tuple(r['groups'])} | {r['group_shift_ms']:.2f} | "
              f"{r['clone_ms']:.2f} | **{r['ratio']:.2f}** |" for r in result["group_shift"]]
    lines += ["", "## Training step: bare PyTorch loop / harness (target >= 0.95)", "",
              "| device | patch | batch | harness s/step | bare s/step | throughput ratio (median of pairs) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['device']} | {r['patch']} | {r['batch']} | {r['harness_step_s']:.4f} | {r['bare_step_s']:.4f} | "
              f"**{r['throughput_ratio']:.3f}** |" for r in result["train_step"]]
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
              "time per case, batch 1 / batch 2 |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['device']} | {r['input']} | {r['plain_step_s']:.3f} | {r['cbam_step_s']:.3f} | "
              f"**{r['cbam_time_ratio']:.2f}** | {r['cbam_macs_ratio']:.3f} | {r['batch1_step_s']:.3f} | "
              f"{r['batch2_step_s']:.3f} | **{r['per_case_batch1_vs_batch2']:.2f}** |" for r in result["brats"]]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines))
    return 0
