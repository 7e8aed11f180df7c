"""Does Group Shift help at quick scale? The measurements behind ``docs/gs_at_quick.md``.

    python docs/analysis/gs_at_quick.py --run     # train the budget sweep (about 12 min on 2 cores)
    python docs/analysis/gs_at_quick.py           # measure receptive fields, read the runs, write the doc

1. Receptive field: which input voxels the centre output voxel depends on (a non-zero gradient;
   eval mode, so batch statistics do not couple every voxel), for the three nets of
   ``studies/gsp_gs_vs_nogs_promise12.yaml`` at its quick widths and crop, 3 fresh inits each.
2. Budget: the study at quick (240 SGD steps, 5 seeds) and the same recipe at half and twice the
   steps (3 seeds each; ``--run`` writes those two studies under ``.harness/analysis/`` and runs
   them with ``harness run``): final validation Dice per net and the paired GS - no GS gain.
3. Learning curves of the quick study's runs (validation Dice per epoch where logged).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
STUDY = ROOT / "studies" / "gsp_gs_vs_nogs_promise12.yaml"
OUT = ROOT / ".harness" / "analysis"
BUDGETS = {"half": 3, "double": 12}  # epochs of 40 steps (quick: 6)


def budget_study(label: str, epochs: int) -> Path:
    raw = yaml.safe_load(STUDY.read_text())
    raw["name"] = f"{raw['name']}_{label}"
    quick = raw["scales"]["quick"]
    quick["train"] = {**quick["train"], "epochs": epochs, "val_every": epochs}
    quick["seeds"] = 3
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def receptive_field(model: torch.nn.Module, shape: tuple[int, ...], inits: int = 3) -> dict[str, float]:
    """Share of input voxels with a non-zero gradient of the centre output voxel, and the extent
    (voxels) of that set along depth and in-plane."""
    seen = np.zeros(shape, bool)
    for k in range(inits):
        torch.manual_seed(k)
        for m in model.modules():
            if hasattr(m, "reset_parameters") and m is not model:
                m.reset_parameters()
        model.eval()  # running statistics: batch statistics would couple every voxel to every other
        x = torch.randn(1, 1, *shape, requires_grad=True)
        d, h, w = (s // 2 for s in shape)
        model(x)[0, 0, d, h, w].backward()
        seen |= (x.grad[0, 0].abs() > 0).numpy()
    idx = np.argwhere(seen)
    return {"share": float(seen.mean()), "depth": int(np.ptp(idx[:, 0]) + 1), "in_plane": int(np.ptp(idx[:, 1]) + 1)}


def context_curve(radii=(0, 1, 2, 4, 8, 16), cases: int = 8) -> dict[int, float]:
    """How much context the task rewards: the best Dice (%) of one threshold on the image
    averaged over a box of radius r (in depth at most 7: 16 slices), per r, over training
    cases of the quick data."""
    import torch.nn.functional as F

    from harness.config import load_study, resolve
    from harness.data import build_task

    spec = resolve(load_study(STUDY), "quick", seeds=1, check=False)[0]
    task = build_task(spec.data.dataset, **{**spec.data.params, "n_cases": cases, "val_cases": 0})
    out = {}
    for r in radii:
        scores = []
        for case in task.train:
            img = torch.from_numpy(case.image)[None]
            rd = min(r, (img.shape[2] - 1) // 2)  # the crop's 16 slices bound the box in depth
            smooth = F.avg_pool3d(img, (2 * rd + 1, 2 * r + 1, 2 * r + 1), stride=1, padding=(rd, r, r),
                                  count_include_pad=False)[0, 0].numpy() if r else img[0, 0].numpy()
            ref = case.label[0].astype(bool)
            best = 0.0
            for q in np.quantile(smooth, np.linspace(0.3, 0.97, 25)):
                pred = smooth > q
                best = max(best, 2 * (pred & ref).sum() / (pred.sum() + ref.sum()))
            scores.append(best)
        out[r] = round(100 * float(np.mean(scores)), 1)
    return out


def runs_of(study_path: Path) -> tuple[object, object]:
    from harness.config import load_study
    from harness.report import load_runs

    runs = load_runs(load_study(study_path), "quick")
    return runs.trials, runs.per_case


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", action="store_true", help="train the half and double budget studies first")
    args = ap.parse_args()
    paths = {label: budget_study(label, e) for label, e in BUDGETS.items()}
    if args.run:
        for path in paths.values():
            subprocess.run(["harness", "run", str(path), "--scale", "quick"], check=True, cwd=ROOT)
        return
    sys.path.insert(0, str(ROOT))
    from harness.config import load_study, resolve
    from harness.models import build_model
    from harness.report import paired_test

    specs = {s.variant: s for s in resolve(load_study(STUDY), "quick", seeds=1, check=False)}
    shape = tuple(specs["pointwise"].train.patch)
    rf = {name: receptive_field(build_model(s.model.name, in_channels=1, out_channels=1, **s.model.params), shape)
          for name, s in specs.items()}
    budgets = {}
    for label, path in [("half", paths["half"]), ("quick", STUDY), ("double", paths["double"])]:
        trials, cases = runs_of(path)
        if trials.empty:
            continue
        row = {"dice": trials.groupby("variant").mean_dice.agg(["mean", "std", "count"]).round(2).to_dict("index")}
        for a, b in (("pointwise_gs", "pointwise"), ("fcn3d", "pointwise_gs")):
            r = paired_test(cases, [a], [b], "mean_dice")
            row[f"{a} - {b}"] = {k: round(r[k], 2) for k in ("delta", "ci_low", "ci_high")}
        budgets[label] = row
    print(json.dumps({"crop": shape, "receptive_field": rf, "context_curve": context_curve(), "budgets": budgets},
                     indent=1))


if __name__ == "__main__":
    main()
