"""OBELISK-Net's augmentation: a random affine matrix about the identity (the authors' code)."""
from __future__ import annotations

from typing import Hashable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import MapTransform, RandomizableTransform

from harness.registry import AUGMENTATIONS


class RandMatrixAffined(RandomizableTransform, MapTransform):
    """Resample with theta = [I | 0] + N(0, std^2) on all 12 entries, in ``affine_grid``'s
    normalised coordinates (OBELISK-Net's "++" augmentation, the authors' training code).

    The image is read trilinearly with border padding, the label with nearest neighbours, so
    labels stay binary. Shapes: image (C, D, H, W), label (R, D, H, W), unchanged.
    """

    def __init__(self, keys: list[str], std: float = 0.075, prob: float = 1.0, align_corners: bool = True):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.std, self.align_corners = std, align_corners

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        theta = torch.eye(3, 4) + torch.as_tensor(self.R.normal(0.0, self.std, (3, 4)), dtype=torch.float32)
        for i, key in enumerate(self.keys):
            x = torch.as_tensor(np.asarray(d[key]), dtype=torch.float32)[None]
            grid = F.affine_grid(theta[None], list(x.shape), align_corners=self.align_corners)
            image = i == 0  # keys are (image, label)
            y = F.grid_sample(x, grid, mode="bilinear" if image else "nearest",
                              padding_mode="border" if image else "zeros", align_corners=self.align_corners)[0]
            d[key] = y if image else y.to(torch.as_tensor(np.asarray(d[key])).dtype)
        return d


@AUGMENTATIONS.register("matrix_affine")
def matrix_affine(keys: list[str], std: float = 0.075, prob: float = 1.0) -> list:
    """OBELISK-Net's "++": every sample resampled by I + N(0, ``std``^2) on all 12 affine entries."""
    return [RandMatrixAffined(keys, std=std, prob=prob)]
