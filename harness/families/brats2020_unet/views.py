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
