"""What several test modules share: a tiny study, the committed study files, a trial spec
builder, Group Shift's literal equations and a Decathlon folder builder (fixtures that wrap
them are in conftest.py). Test modules import from here, never from one another."""
import itertools
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from harness.config import CostCfg, DataCfg, ModelCfg, ResourcesCfg, TrainCfg, TrialSpec

STUDIES = sorted(Path(__file__).parents[1].joinpath("studies").glob("*.yaml"))

BASE = {
    "name": "tiny",
    "paper": "gsp_conv",
    "title": "tiny",
    "data": {"dataset": "synthetic_organ", "params": {"n_cases": 4, "shape": [16, 32, 32]}},
    "model": {"name": "gsp_unet", "params": {"conv": "pointwise", "widths": [4, 4, 8, 8, 8]}},
    "variants": [{"name": "pw"}],
    "train": {"patch": [16, 32, 32], "epochs": 1, "steps_per_epoch": 1, "batch_size": 1},
    "scales": {"smoke": {}, "quick": {}, "paper": {}},
}


def spec(model="gsp_unet", params=None, data=("synthetic_organ", {"n_cases": 5, "shape": [16, 32, 32]}), **train):
    params = {"widths": [4, 8, 8, 16, 16], "insert": "CSC",
              "groups": [[2, 2, 2], [1, 2, 2], [1, 2, 2], [1, 1, 1], [1, 1, 1]]} if params is None else params
    train = {"patch": [16, 32, 32], "epochs": 2, "steps_per_epoch": 4, "batch_size": 2, **train}
    return TrialSpec(study="t", scale="smoke", key="k", variant="v", tags={}, seed=0,
                     data=DataCfg(dataset=data[0], params=data[1]), model=ModelCfg(name=model, params=params),
                     train=TrainCfg(**train), cost=CostCfg(latency=False), resources=ResourcesCfg(cpu=1))


def literal_eqs(x, groups, ratio):
    """Eqs. 1-8 voxel by voxel, written as printed in the paper."""
    N, C, D, H, W = x.shape
    gd, gh, gw = groups
    d, h, w = D // gd, H // gh, W // gw
    G = gd * gh * gw
    cs = int(ratio * C)
    cg = max(1, cs // G)
    out = x.clone()
    for c, X, Y, Z in itertools.product(range(cs), range(D), range(H), range(W)):
        cur = X // d + (Y // h) * gd + (Z // w) * gd * gh  # Eq. 2
        step = c // cg  # Eq. 3
        s = (cur + step) % G  # Eq. 4
        x2 = (s % gd) * d + X % d  # Eq. 5
        y2 = ((s % (gd * gh)) // gd) * h + Y % h  # Eq. 6
        z2 = (s // (gd * gh)) * w + Z % w  # Eq. 7
        out[:, c, x2, y2, z2] = x[:, c, X, Y, Z]  # Eqs. 1, 8
    return out


SHAPE = (24, 20, 12)  # x, y, z as stored; arrays come out (C, z, y, x)


def volumes(rng, channels: int, labels: tuple[int, ...]):
    """Images with a zero border (so foreground cropping has work) and a label map of cubes."""
    img = np.zeros((*SHAPE, channels), np.float32)
    img[2:-2, 2:-2, 1:-1] = rng.normal(100, 20, (SHAPE[0] - 4, SHAPE[1] - 4, SHAPE[2] - 2, channels))
    lab = np.zeros(SHAPE, np.uint8)
    for i, v in enumerate(labels):
        x = 4 + 6 * i  # inside the non-zero box for up to three labels
        lab[x:x + 5, 6:14, 3:9] = v
        img[x:x + 5, 6:14, 3:9] += 40.0 * (i + 1)
    return img, lab


def write_nii(path, data, spacing=(1.0, 1.0, 2.0)):
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), str(path))


def make_msd(root, n=5, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(n):
        img, lab = volumes(rng, channels, (1, 2))
        write_nii(root / "imagesTr" / f"prostate_{i:02d}.nii.gz", img if channels > 1 else img[..., 0])
        write_nii(root / "labelsTr" / f"prostate_{i:02d}.nii.gz", lab)
        training.append({"image": f"./imagesTr/prostate_{i:02d}.nii.gz", "label": f"./labelsTr/prostate_{i:02d}.nii.gz"})
    meta = {"name": "Prostate", "modality": {str(c): m for c, m in zip(range(channels), ["T2", "ADC"])},
            "labels": {"0": "background", "1": "PZ", "2": "TZ"}, "numTraining": n, "training": training}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def finished_runs(study_dict: dict, scale: str, result) -> None:
    """Write ``study_dict`` as ``s.yaml`` in the working folder and record one finished trial
    per spec at ``scale`` in its MLflow store: ``result(spec)`` gives (final numbers, per-case rows)."""
    import yaml

    from harness.config import load_study, resolve, spec_hash
    from harness.tracking import Tracker

    Path("s.yaml").write_text(yaml.safe_dump(study_dict, sort_keys=False))
    study = load_study("s.yaml")
    tracker = Tracker()
    exp = tracker.experiment(study.name)
    parent = tracker.start_parent(exp, study.name, scale, "h", {})
    for spec in resolve(study, scale):
        final, per_case = result(spec)
        tracker.finish_child(tracker.start_child(exp, parent, spec, spec_hash(spec)), final, per_case, step=1)

