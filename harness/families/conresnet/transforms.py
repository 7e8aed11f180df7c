"""ConResNet's boundary-loss target (Eq. 14): signed distance maps of the label channels."""
from __future__ import annotations

from typing import Hashable, Mapping

import numpy as np
import torch
from monai.transforms import DistanceTransformEDT, MapTransform

from harness.registry import TARGETS


class SignedDistance(MapTransform):
    """phi(x) = d(x, region) - d(x, complement) per region channel (Kervadec et al. 2019):
    negative inside, positive outside, 0 on neither side of an empty or full channel.

    Distances are Euclidean in voxels (MONAI's ``DistanceTransformEDT``); with ``normalize``
    each channel is divided by its largest absolute value (ConResNet-style maps in [-1, 1]).
    Shapes: label (R, D, H, W) -> batch[key] (R, D, H, W) float32.
    """

    def __init__(self, key: str = "sdm", normalize: bool = False):
        super().__init__(["label"])
        self.key, self.normalize, self.edt = key, normalize, DistanceTransformEDT()

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        label = torch.as_tensor(np.asarray(d["label"])).float()
        inside = label > 0.5
        out = torch.zeros_like(label)
        for r in range(label.shape[0]):
            m = inside[r]
            if m.any() and not m.all():  # otherwise one of the two distances is undefined
                outside_d = torch.as_tensor(self.edt((~m)[None].float()))[0]  # > 0 outside: distance to region
                inside_d = torch.as_tensor(self.edt(m[None].float()))[0]
                phi = outside_d - inside_d
                out[r] = phi / phi.abs().max() if self.normalize else phi
        d[self.key] = out
        return d


@TARGETS.register("signed_distance")
def signed_distance(key: str = "sdm", normalize: bool = False) -> MapTransform:
    """Signed distance map of each region (boundary losses, e.g. ConResNet Eq. 14)."""
    return SignedDistance(key, normalize)
