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

from typing import Sequence

from monai.transforms import RandAffined, RandFlipd, RandScaleIntensityd, RandShiftIntensityd

from harness.registry import AUGMENTATIONS

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


