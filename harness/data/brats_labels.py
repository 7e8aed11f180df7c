"""BraTS label maps and region masks: the challenge's encoding (BraTS 2018-2020).

Labels: 0 background, 1 necrotic / non-enhancing tumour core (NCR/NET), 2 peritumoral oedema
(ED), 4 enhancing tumour (ET). Evaluated regions: WT = {1, 2, 4}, TC = {1, 4}, ET = {4}
(``harness.data.folders.BRATS_REGIONS``, used here too).

Reconstruction from three thresholded region channels (Henry et al. 2020, Sec. 2.6:
"NonEnhancing = TC - ET; edema = WT - TC"): ET -> 4, TC and not ET -> 1, WT and not TC -> 2,
in that order of precedence, so a voxel a net puts in ET but not in TC or WT is still ET (the
authors' code); what the challenge scores from a submitted map (``harness submit``).
"""
from __future__ import annotations

import numpy as np

from harness.data.folders import BRATS_REGIONS

LABELS = (0, 1, 2, 4)


def check_labels(name: str, labels: np.ndarray) -> None:
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
    check_labels("", labels)
    return np.stack([np.isin(labels, values) for values in BRATS_REGIONS.values()]).astype(np.uint8)
