"""BraTS 2020's label maps of a pipeline's ensemble and their two-pipeline merge (Sec. 2.6,
Table 1), as combined-row rules and a data command; the label encoding itself is the BraTS
format's (``harness.data.brats_labels``: 0, 1 NCR, 2 ED, 4 ET; Sec. 2.6's reconstruction).

Two-pipeline merge (Table 1): model A's ET and NCR (4, 1) are kept; where A says background
or oedema (0, 2) and B says oedema or background, B's label is taken; otherwise A's:

    A \\ B   0  1  2  4
    0        0  0  2  0
    1        1  1  1  1
    2        0  2  2  2
    4        4  4  4  4
"""
from __future__ import annotations

import numpy as np
import torch

from harness.data.brats_labels import check_labels, labels_to_regions, regions_to_labels
from harness.data.folders import BRATS_REGIONS
from harness.registry import COMBINERS, DATA_COMMANDS

def merge_labels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Table 1's merge of pipeline A's and pipeline B's label maps (module docstring)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: A {a.shape}, B {b.shape}")
    check_labels("A ", a)
    check_labels("B ", b)
    out = a.copy()
    swap = np.isin(a, (0, 2)) & np.isin(b, (0, 2))
    out[swap] = b[swap]
    return out


def _label_maps(probs, output: str, n: int | None, rule: str):
    """Members' sigmoid WT, TC, ET probabilities -> their label maps per case, (members, N, ...)."""
    if (n is not None and len(probs) != n) or output != "sigmoid" or any(p.shape[1] != len(BRATS_REGIONS)
                                                                          for p in probs):
        raise ValueError(f"rule {rule}: needs {n or 'one or more'} member(s) of sigmoid {', '.join(BRATS_REGIONS)} "
                         f"probabilities, got {len(probs)} of {output} with {[p.shape[1] for p in probs]} channels")
    return [[regions_to_labels(*case) for case in p.numpy() > 0.5] for p in probs]


def _as_regions(maps) -> torch.Tensor:
    return torch.from_numpy(np.stack([labels_to_regions(m) for m in maps])).float()


@COMBINERS.register("brats_labels")
def brats_labels():
    """Sec. 2.6's first step as a combined row's rule: the members' probabilities averaged (a
    pipeline's ensemble; one member: that model), thresholded at 0.5 and reconstructed into a
    label map (ET; NCR = TC - ET; oedema = WT - TC), returned as its WT, TC, ET masks: what
    the challenge scores from a submitted label map (a voxel in ET but not in TC counts in TC)."""

    def rule(probs, output: str):
        mean = torch.stack(list(probs)).mean(0)
        return _as_regions(_label_maps([mean], output, 1, "brats_labels")[0])

    return rule


@COMBINERS.register("brats_merge")
def brats_merge():
    """Table 1's merge as a combined row's rule (``harness.combine``): the first member is
    pipeline A, the second pipeline B, each (N, 3, D, H, W) sigmoid probabilities of WT, TC, ET
    (this order, ``BRATS_REGIONS``), thresholded at 0.5 and reconstructed into label maps
    (``regions_to_labels``, Sec. 2.6), merged, and returned as 0/1 region masks."""

    def rule(probs, output: str):
        a, b = _label_maps(probs, output, 2, "brats_merge")
        return _as_regions([merge_labels(x, y) for x, y in zip(a, b)])

    return rule


def _merge_labels_arguments(parser) -> None:
    parser.add_argument("a", help="pipeline A's label map (NIfTI)")
    parser.add_argument("b", help="pipeline B's label map (NIfTI, same grid)")
    parser.add_argument("--out", required=True, help="the merged label map (.nii or .nii.gz)")


def merge_labels_command(args) -> int:
    """BraTS 2020 Table 1: merge pipeline A's and pipeline B's label maps (NIfTI) into one."""
    import sys
    from pathlib import Path

    import nibabel as nib

    for name in ("a", "b"):
        if not Path(getattr(args, name)).is_file():
            print(f"error: {name.upper()}: file {getattr(args, name)!r} does not exist", file=sys.stderr)
            return 2
    out = Path(args.out)
    if not out.name.endswith((".nii", ".nii.gz")):
        print(f"error: --out: {args.out!r} is not a NIfTI name (.nii or .nii.gz)", file=sys.stderr)
        return 2
    try:
        a, b = nib.load(args.a), nib.load(args.b)
        la, lb = np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)
        if not np.allclose(a.affine, b.affine, atol=1e-3):
            raise ValueError("A and B have different affines (voxel grids); resample one onto the other first")
        merged = merge_labels(la.astype(np.int16), lb.astype(np.int16)).astype(np.uint8)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(merged, a.affine, a.header), str(out))
    print(f"{out}: {int((merged != la).sum())} voxels taken from B (Table 1), labels "
          + ", ".join(f"{v}: {int((merged == v).sum())}" for v in (0, 1, 2, 4)))
    return 0


DATA_COMMANDS.register("merge-labels")((_merge_labels_arguments, merge_labels_command))
