"""BraTS label maps and region masks (Henry et al. 2020, Sec. 2.6 and Table 1).

BraTS labels: 0 background, 1 necrotic / non-enhancing tumour core (NCR/NET), 2 peritumoral
oedema (ED), 4 enhancing tumour (ET). Evaluated regions: WT = {1, 2, 4}, TC = {1, 4},
ET = {4} (``harness.data.folders.BRATS_REGIONS``, used here too).

Reconstruction from three thresholded region channels (Sec. 2.6, "NonEnhancing = TC - ET;
edema = WT - TC"): ET -> 4, TC and not ET -> 1, WT and not TC -> 2, in that order of
precedence, so a voxel the net puts in ET but not in TC or WT is still ET (the authors' code).

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

from harness.data.folders import BRATS_REGIONS
from harness.registry import COMBINERS

LABELS = (0, 1, 2, 4)


def _check(name: str, labels: np.ndarray) -> None:
    bad = set(np.unique(labels).tolist()) - set(LABELS)
    if bad:
        raise ValueError(f"label map {name}holds {sorted(bad)}; BraTS labels are {list(LABELS)}")


def regions_to_labels(wt: np.ndarray, tc: np.ndarray, et: np.ndarray) -> np.ndarray:
    """Binary WT, TC, ET masks (same shape) -> a BraTS label map (uint8 with 0, 1, 2, 4)."""
    wt, tc, et = (np.asarray(m).astype(bool) for m in (wt, tc, et))
    if not wt.shape == tc.shape == et.shape:
        raise ValueError(f"region masks differ in shape: WT {wt.shape}, TC {tc.shape}, ET {et.shape}")
    labels = np.zeros(wt.shape, np.uint8)
    labels[wt & ~tc] = 2
    labels[tc & ~et] = 1
    labels[et] = 4
    return labels


def labels_to_regions(labels: np.ndarray) -> np.ndarray:
    """A BraTS label map -> (3, ...) binary WT, TC, ET masks; fails on a label outside 0, 1, 2, 4."""
    labels = np.asarray(labels)
    _check("", labels)
    return np.stack([np.isin(labels, values) for values in BRATS_REGIONS.values()]).astype(np.uint8)


def merge_labels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Table 1's merge of pipeline A's and pipeline B's label maps (module docstring)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: A {a.shape}, B {b.shape}")
    _check("A ", a)
    _check("B ", b)
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


def _as_regions(maps) -> "torch.Tensor":
    import torch

    return torch.from_numpy(np.stack([labels_to_regions(m) for m in maps])).float()


@COMBINERS.register("brats_labels")
def brats_labels():
    """Sec. 2.6's first step as a combined row's rule: the members' probabilities averaged (a
    pipeline's ensemble; one member: that model), thresholded at 0.5 and reconstructed into a
    label map (ET; NCR = TC - ET; oedema = WT - TC), returned as its WT, TC, ET masks: what
    the challenge scores from a submitted label map (a voxel in ET but not in TC counts in TC)."""

    def rule(probs, output: str):
        import torch

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
