"""BraTS 2020's augmentation (Sec. 2.4, the authors' code)."""
from __future__ import annotations

from typing import Hashable, Mapping

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform

from harness.registry import AUGMENTATIONS


def _check(prob: float, scale: float, noise: float, drop_channel: float) -> None:
    for name, v in (("prob", prob), ("drop_channel", drop_channel)):
        if not 0 <= v <= 1:
            raise ValueError(f"{name}: {v} is outside [0, 1]")
    if scale < 0 or noise < 0:
        raise ValueError(f"scale and noise must be >= 0, got {scale} and {noise}")


class BraTS2020Augmentd(RandomizableTransform, MapTransform):
    """Pipeline A's augmentation (Henry et al. Sec. 2.4; the authors' ``DataAugmenter``), one
    draw gating all of it: with probability ``prob``

        x <- s x, s ~ U(1 - scale, 1 + scale)                      (one factor for all channels)
        x_c <- x_c + N(0, (noise * std(x_c[x_c > 0]))^2)            (per-channel noise level)
        x_c <- 0 for one random c, with probability ``drop_channel``
        x, y <- flip_a(transpose_{i,j}(x)), y likewise                (random axis pair i, j; axis a)

    The code transposes and flips the network's input and reverts its output; transforming
    image and label together gives the same voxelwise loss. A transpose needs two equal-sized
    axes: on a non-cubic patch only equal-sized pairs are drawn (none: flip only).

    Shapes: image (C, D, H, W), label (R, D, H, W), kept (cubic patches) or permuted alike.
    """

    def __init__(self, keys: list[str], prob: float = 0.8, scale: float = 0.1, noise: float = 0.1,
                 drop_channel: float = 0.2, transpose: bool = True):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        _check(prob, scale, noise, drop_channel)
        self.scale, self.noise, self.drop_channel, self.transpose = scale, noise, drop_channel, transpose

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        image_key, label_key = self.keys
        x = torch.as_tensor(np.asarray(d[image_key]), dtype=torch.float32).clone()
        x *= float(self.R.uniform(1 - self.scale, 1 + self.scale))
        for c in range(x.shape[0]):
            fg = x[c][x[c] > 0]
            std = float(fg.std()) if fg.numel() > 1 else 0.0
            x[c] += torch.as_tensor(self.R.normal(0.0, 1.0, x[c].shape), dtype=torch.float32) * (self.noise * std)
        if self.R.uniform() < self.drop_channel:
            x[int(self.R.randint(x.shape[0]))] = 0
        y = torch.as_tensor(np.asarray(d[label_key]))
        if self.transpose:
            sizes = x.shape[1:]
            pairs = [(i, j) for i in range(3) for j in range(i + 1, 3) if sizes[i] == sizes[j]]
            if pairs:
                i, j = pairs[int(self.R.randint(len(pairs)))]
                x, y = x.transpose(1 + i, 1 + j), y.transpose(1 + i, 1 + j)
            a = 1 + int(self.R.randint(3))
            x, y = x.flip(a), y.flip(a)
        d[image_key], d[label_key] = x.contiguous(), y.contiguous()
        return d


@AUGMENTATIONS.register("brats2020", check=_check)
def brats2020(keys: list[str], prob: float = 0.8, scale: float = 0.1, noise: float = 0.1, drop_channel: float = 0.2,
              transpose: bool = True) -> list:
    """BraTS 2020 pipeline A: intensity scale, noise at 0.1 x each channel's std, a dropped
    channel (0.8 x 0.2 = 16%), a transpose of two spatial axes and a flip (``BraTS2020Augmentd``)."""
    return [BraTS2020Augmentd(keys, prob, scale, noise, drop_channel, transpose=transpose)]
