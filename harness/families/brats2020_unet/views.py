"""BraTS 2020's test-time augmentation views (Sec. 2.6), a registered view set of ``tta``."""
from __future__ import annotations

from harness.inferers import View
from harness.registry import VIEW_SETS


# BraTS 2020 (Henry et al., Sec. 2.6): 16 views, a flip along one axis (or none) x 0/90/180/270
# degree rotations in the axial plane; the authors' src/tta.py enumerates the same 16. Only 12
# are distinct (flip H + k turns = flip W + (k + 2) turns), so 4 weigh twice in the mean, as
# in the authors' code. Their revert, rot90(flip(y), -k), is no inverse for flip H/W with an
# odd k (4 views); ``View.inverse`` rotates back first (tests/test_inferers.py).
@VIEW_SETS.register("brats2020")
def brats2020() -> list[View]:
    """16 views: no flip or a flip along D, H or W, then 0-3 quarter turns in the axial plane."""
    return [View(f, r) for f in (None, 2, 3, 4) for r in range(4)]


# "We used flips, and 90-180-270 rotations only in the axial plane, as rotation in other planes
# led to worse performance on the local validation set" (Sec. 2.6): the set they turned down,
# the flips with 1-3 quarter turns in each of the three planes (axial, coronal, sagittal).
@VIEW_SETS.register("brats2020_all_planes")
def brats2020_all_planes() -> list[View]:
    """40 views: no flip or a flip along D, H or W, then none or 1-3 quarter turns in the axial
    (H, W), coronal (D, W) or sagittal (D, H) plane."""
    turns = [(0, (3, 4))] + [(r, p) for p in ((3, 4), (2, 4), (2, 3)) for r in (1, 2, 3)]
    return [View(f, r, p) for f in (None, 2, 3, 4) for r, p in turns]
