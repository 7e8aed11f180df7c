"""Training-time transforms by name (MONAI): augmentations and label-derived targets.

Both run in the data pipeline, after the random crop: augmentations first, then targets,
so that a target always matches the augmented label and no loss rebuilds it per step.

- An augmentation factory takes ``keys`` (injected: image and label) and its parameters,
  and returns a list of MONAI dictionary transforms.
- A target factory takes its parameters and returns one MONAI dictionary transform that
  adds ``batch[key]`` computed from ``batch["label"]`` (R, D, H, W); the transform's ``key``
  attribute names it.
"""
from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (DistanceTransformEDT, MapTransform, RandAffined, RandFlipd, RandomizableTransform,
                              RandScaleIntensityd, RandShiftIntensityd)

from harness.registry import AUGMENTATIONS, TARGETS

AUGMENT_INJECTED = ("keys",)


@AUGMENTATIONS.register("flip")
def flip(keys: list[str], prob: float = 0.5, axes: Sequence[int] = (0, 1, 2)) -> list:
    """Mirror along each spatial axis with probability ``prob`` (independently)."""
    return [RandFlipd(keys, prob=prob, spatial_axis=a) for a in axes]


@AUGMENTATIONS.register("scale_intensity")
def scale_intensity(keys: list[str], factors: float = 0.1, prob: float = 0.5) -> list:
    """image * (1 + f), f ~ U(-factors, factors)."""
    return [RandScaleIntensityd(keys[:1], factors=factors, prob=prob)]


@AUGMENTATIONS.register("shift_intensity")
def shift_intensity(keys: list[str], offsets: float = 0.1, prob: float = 0.5) -> list:
    """image + o, o ~ U(-offsets, offsets)."""
    return [RandShiftIntensityd(keys[:1], offsets=offsets, prob=prob)]


@AUGMENTATIONS.register("affine")
def affine(keys: list[str], prob: float = 0.2, rotate: float = 0.26, scale: float = 0.15) -> list:
    """Rotation up to ``rotate`` rad (15 degrees) and scaling 1 +- ``scale`` per axis; labels
    nearest so they stay binary."""
    return [RandAffined(keys, prob=prob, rotate_range=[rotate] * 3, scale_range=[scale] * 3,
                        mode=("bilinear", "nearest"), padding_mode="zeros")]


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
        for name, v in (("prob", prob), ("drop_channel", drop_channel)):
            if not 0 <= v <= 1:
                raise ValueError(f"{name}: {v} is outside [0, 1]")
        if scale < 0 or noise < 0:
            raise ValueError(f"scale and noise must be >= 0, got {scale} and {noise}")
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


@AUGMENTATIONS.register("brats2020")
def brats2020(keys: list[str], prob: float = 0.8, scale: float = 0.1, noise: float = 0.1, drop_channel: float = 0.2,
              transpose: bool = True) -> list:
    """BraTS 2020 pipeline A: intensity scale, noise at 0.1 x each channel's std, a dropped
    channel (0.8 x 0.2 = 16%), a transpose of two spatial axes and a flip (``BraTS2020Augmentd``)."""
    return [BraTS2020Augmentd(keys, prob, scale, noise, drop_channel, transpose)]


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
