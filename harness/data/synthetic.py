"""Synthetic 3D tasks generated from a seed (no download): the embedded default.

Both tasks are built so that the papers' ablations mean something:
- ``synthetic_organ`` (PROMISE12 analogue): one large smooth object whose mean
  intensity differs from the background by less than the voxel noise, plus
  smaller distractor blobs of the same intensity. A single voxel cannot tell
  organ from background; averaging a neighbourhood (3x3x3 convs, or Group Shift
  reaching distant voxels) and knowing the object's extent can.
- ``synthetic_brats`` (BraTS analogue): 4 channels (T1, T1ce, T2, FLAIR), small
  nested regions WT > TC > ET with modality-specific contrast; targets are the
  three evaluated regions WT, TC, ET as binary channels.
- ``synthetic_abdomen`` (OBELISK's TCIA / VISCERAL analogue): eight mutually exclusive organs
  in one CT-like volume, laid out as in an abdomen (jittered per case), of different size,
  shape and contrast: large bright liver, medium kidney and spleen, a heterogeneous stomach,
  a small dark gallbladder, and small low-contrast elongated pancreas, esophagus and duodenum,
  so that per-organ Dice differs as in OBELISK-Net's Table 4.
- ``synthetic_depth`` (for slice-wise nets, Distill DSM): spheres to segment among
  one-slice-thick discs of the same intensity and in-plane size. Inside a single
  slice a disc looks exactly like a sphere's cross-section; only the neighbouring
  slices tell them apart.
- ``synthetic_marker`` (ours, for Group Shift): two identical blobs, of which only the one with
  a dark marker 44-56 voxels away in-plane is labelled. Locally a target looks exactly like a
  distractor; only context a spatial group away tells them apart.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from harness.data.task import (LABELS, Case, Task, case_bytes, check_shape, check_split, held_out_or_split,
                               nested_as_classes)
from harness.registry import DATASETS


def _smooth_field(gen: torch.Generator, shape, coarse: int = 4, channels: int = 1) -> torch.Tensor:
    """Low-frequency random field in [-1, 1]-ish: random coarse grid, trilinear up."""
    grid = torch.randn(1, channels, coarse, coarse, coarse, generator=gen)
    return F.interpolate(grid, size=tuple(shape), mode="trilinear", align_corners=True)[0]


def _coords(shape) -> torch.Tensor:
    axes = [torch.linspace(-1, 1, s) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))  # (3, D, H, W)


def _blob(gen, coords, centre, radii, wobble: float) -> torch.Tensor:
    """Ellipsoid whose surface is displaced by a smooth random field."""
    r = sum(((coords[i] - centre[i]) / radii[i]) ** 2 for i in range(3)).sqrt()
    return r + wobble * _smooth_field(gen, coords.shape[1:], coarse=3)[0] < 1.0


def _rand(gen, lo, hi, n=3):
    return (lo + (hi - lo) * torch.rand(n, generator=gen)).tolist()


@DATASETS.register("synthetic_organ")
def synthetic_organ(n_cases: int = 20, shape=(16, 128, 128), seed: int = 0, contrast: float = 0.6,
                    noise: float = 1.0, distractors: int = 3, val_fraction: float = 0.2, val_cases: int = 0) -> Task:
    """Large-organ task, 1 channel, 1 region ("organ"); see module docstring."""

    check_split(n_cases, val_fraction, val_cases)
    check_shape(shape)

    def make(n: int, gen_seed: int, prefix: str):
        gen = torch.Generator().manual_seed(gen_seed)
        coords = _coords(shape)
        for i in range(n):
            organ = _blob(gen, coords, _rand(gen, -0.15, 0.15), _rand(gen, 0.55, 0.75), wobble=0.15)
            img = 0.5 * _smooth_field(gen, shape, coarse=5)[0]  # bias field
            img += contrast * organ.float()
            for _ in range(distractors):  # same contrast, smaller: size and shape must decide
                d = _blob(gen, coords, _rand(gen, -0.8, 0.8), _rand(gen, 0.08, 0.18), wobble=0.05) & ~organ
                img += contrast * d.float()
            img += noise * torch.randn(shape, generator=gen)
            yield Case(f"{prefix}organ_{i:03d}", img[None].numpy().astype(np.float32), organ[None].numpy().astype(np.uint8))

    params = dict(n=n_cases, shape=list(shape), seed=seed, c=contrast, s=noise, k=distractors)
    return Task("synthetic_organ", in_channels=1, regions=("organ",),
                load=lambda: held_out_or_split("synthetic_organ", params, make, n_cases, val_cases, val_fraction=val_fraction, seed=seed,
                                               nbytes=case_bytes(shape, 1, 1)))


@DATASETS.register("synthetic_brats")
def synthetic_brats(n_cases: int = 20, shape=(64, 64, 64), seed: int = 0, noise: float = 0.35,
                    val_fraction: float = 0.2, val_cases: int = 0, tumour_scale: float = 1.0, contrast: float = 1.0,
                    labels: str = "regions") -> Task:
    """Nested-tumour task, 4 channels (T1, T1ce, T2, FLAIR), regions WT, TC, ET.

    ``tumour_scale`` multiplies the radii of the whole tumour, core and necrosis (a small
    volume needs larger regions for TC and the enhancing rim to span more than a voxel or
    two); ``contrast`` multiplies every lesion's intensity change in every channel.
    ``labels: classes`` trains on the exclusive classes ED, NCR, ET (softmax, multi-class
    mode) and still evaluates WT, TC, ET (``nested_as_classes``).
    """
    check_split(n_cases, val_fraction, val_cases)
    check_shape(shape)
    if labels not in LABELS:
        raise ValueError(f"data.labels: unknown {labels!r}; allowed: {', '.join(LABELS)}")
    if tumour_scale <= 0 or contrast <= 0:
        raise ValueError(f"tumour_scale and contrast must be > 0, got {tumour_scale} and {contrast}")
    k = tumour_scale

    def make(n: int, gen_seed: int, prefix: str):
        gen = torch.Generator().manual_seed(gen_seed)
        coords = _coords(shape)
        for i in range(n):
            brain = _blob(gen, coords, [0, 0, 0], [0.9, 0.9, 0.9], wobble=0.05)
            c = _rand(gen, -0.35, 0.35)
            wt = _blob(gen, coords, c, _rand(gen, 0.25 * k, 0.4 * k), wobble=0.2) & brain
            tc = _blob(gen, coords, c, _rand(gen, 0.13 * k, 0.2 * k), wobble=0.15) & wt
            core = _blob(gen, coords, c, _rand(gen, 0.05 * k, 0.09 * k), wobble=0.1) & tc  # necrosis
            et = tc & ~core  # enhancing rim around the necrotic core
            tissue = 0.3 * _smooth_field(gen, shape, coarse=6, channels=4) + 1.0
            img = tissue * brain.float()
            wtf, tcf, etf, cf = (m.float() for m in (wt, tc, et, core))
            img[0] -= contrast * 0.3 * tcf  # T1: core slightly dark
            img[1] += contrast * (1.2 * etf - 0.4 * cf)  # T1ce: enhancing rim bright, necrosis dark
            img[2] += contrast * (0.8 * wtf - 0.3 * tcf)  # T2: oedema bright
            img[3] += contrast * (0.9 * (wtf - tcf) + 0.4 * tcf)  # FLAIR: whole tumour bright
            img += noise * torch.randn(img.shape, generator=gen)
            label = torch.stack([wt, tc, et])
            yield Case(f"{prefix}brats_{i:03d}", img.numpy().astype(np.float32), label.numpy().astype(np.uint8))

    params = dict(n=n_cases, shape=list(shape), seed=seed, s=noise)
    if (tumour_scale, contrast) != (1.0, 1.0):  # keeps the cache key of the default task
        params.update(k=tumour_scale, c=contrast)
    task = Task("synthetic_brats", in_channels=4, regions=("WT", "TC", "ET"), exclusive=False,
                load=lambda: held_out_or_split("synthetic_brats", params, make, n_cases, val_cases, val_fraction=val_fraction, seed=seed,
                                               nbytes=case_bytes(shape, 4, 3)))
    return nested_as_classes(task, ("ED", "NCR", "ET")) if labels == "classes" else task


@DATASETS.register("synthetic_depth")
def synthetic_depth(n_cases: int = 20, shape=(16, 64, 64), seed: int = 0, objects: int = 4, noise: float = 0.3,
                    val_fraction: float = 0.2, val_cases: int = 0, in_channels: int = 1, regions=("sphere",)) -> Task:
    """Depth-context task (module docstring), shaped like a real task by ``in_channels`` and ``regions``.

    Region k's spheres and its look-alike discs share an intensity signature: level
    1 + ((k + c) mod R) in channel c (R regions), so regions differ in brightness and, with
    several channels, in contrast between channels (as PZ and TZ do between T2 and ADC).
    """
    check_split(n_cases, val_fraction, val_cases)
    check_shape(shape)
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    regions = tuple(regions)
    if not regions or len(set(regions)) != len(regions):
        raise ValueError(f"regions must be distinct names, at least one, got {list(regions)}")
    D, H, W = shape
    R = len(regions)

    def make(n: int, gen_seed: int, prefix: str):
        gen = torch.Generator().manual_seed(gen_seed)
        z, y, x = torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in shape), indexing="ij")
        for i in range(n):
            spheres = torch.zeros(shape, dtype=torch.long)  # 0 background, k + 1 region k
            discs = torch.zeros(shape, dtype=torch.long)
            for k in range(6 * objects * R):  # five discs per sphere: as many disc voxels as sphere voxels
                region = 1 + (k // 6) % R
                r = float(3 + 3 * torch.rand(1, generator=gen))
                cz = float(r + (D - 2 * r) * torch.rand(1, generator=gen))
                cy, cx = (float(r + (s - 2 * r) * torch.rand(1, generator=gen)) for s in (H, W))
                if k % 6 == 0:  # a sphere: its cross-sections shrink away from the centre slice
                    spheres[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 < r**2] = region
                else:  # a disc one slice thick, as wide as a sphere's largest cross-section
                    discs[(z == round(cz)) & ((y - cy) ** 2 + (x - cx) ** 2 < r**2)] = region
            objects_map = torch.where(spheres > 0, spheres, discs)
            img = torch.zeros((in_channels, *shape))
            for c in range(in_channels):
                for k in range(R):
                    img[c][objects_map == k + 1] = 1 + (k + c) % R
            img += noise * torch.randn(img.shape, generator=gen)
            label = torch.stack([spheres == k + 1 for k in range(R)])
            yield Case(f"{prefix}depth_{i:03d}", img.numpy().astype(np.float32), label.numpy().astype(np.uint8))

    params = dict(n=n_cases, shape=list(shape), seed=seed, k=objects, s=noise, c=in_channels, r=list(regions))
    return Task("synthetic_depth", in_channels=in_channels, regions=regions,
                load=lambda: held_out_or_split("synthetic_depth", params, make, n_cases, val_cases, val_fraction=val_fraction, seed=seed,
                                               nbytes=case_bytes(shape, in_channels, len(regions))))


@DATASETS.register("synthetic_marker")
def synthetic_marker(n_cases: int = 20, shape=(16, 128, 128), seed: int = 0, noise: float = 0.5,
                     distance=(44, 56), val_fraction: float = 0.2, val_cases: int = 0) -> Task:
    """Group-context task (module docstring), 1 channel, 1 region ("target"); ours, not a paper's.

    Each case holds two blobs of one appearance (in-plane radii 16-22 voxels, depth radius 5-7
    slices, +1 over the background): the target and the distractor. A dark marker (-1; 4
    slices x 14 x 14 voxels) lies in the target's centre slice at an in-plane distance drawn
    from ``distance`` (voxels, any direction) from its centre, at least 64 voxels from the
    distractor's, so the rule is unambiguous. A net that sees no farther than the marker
    distance can only guess (at best segmenting both blobs: Dice about 67); Group Shift's
    stage-1 shift on 128 in-plane voxels is 64, its later stages' 16-32, combined through the
    pyramid (docs/gs_at_quick.md).
    """
    check_split(n_cases, val_fraction, val_cases)
    check_shape(shape)
    lo, hi = (float(d) for d in distance)
    D, H, W = shape
    if not 0 < lo <= hi or hi > min(H, W) - 30:  # blob and marker each keep clear of the border
        raise ValueError(f"distance must be [lo, hi] with 0 < lo <= hi <= the in-plane size less 30 "
                         f"({min(H, W) - 30}), got {list(distance)}")

    def layout(gen):
        """Centres (z, y, x) of target, distractor and marker: rejection sampling."""
        u = lambda a, b: float(a + (b - a) * torch.rand(1, generator=gen))  # noqa: E731
        dist = lambda p, q: math.hypot(p[1] - q[1], p[2] - q[2])  # noqa: E731
        for _ in range(10000):
            target, other = ((u(6, D - 6), u(20, H - 20), u(20, W - 20)) for _ in range(2))
            a, d = u(0, 2 * math.pi), u(lo, hi)
            marker = (target[0], target[1] + d * math.sin(a), target[2] + d * math.cos(a))
            if (8 <= marker[1] <= H - 8 and 8 <= marker[2] <= W - 8 and dist(target, other) >= 48
                    and dist(marker, other) > 64):
                return target, other, marker
        raise ValueError(f"synthetic_marker: no layout fits {list(shape)} at distance {list(distance)}; "
                         f"use a larger volume")

    def make(n: int, gen_seed: int, prefix: str):
        gen = torch.Generator().manual_seed(gen_seed)
        z, y, x = torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in shape), indexing="ij")
        for i in range(n):
            target, other, (mz, my, mx) = layout(gen)
            img = 0.3 * _smooth_field(gen, shape, coarse=4)[0]
            blobs = []
            for cz, cy, cx in (target, other):
                rz, ry, rx = 5 + 2 * float(torch.rand(1, generator=gen)), *_rand(gen, 16, 22, 2)
                blobs.append(((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1)
                img += blobs[-1].float()
            img -= (((z - mz).abs() < 2) & ((y - my).abs() < 7) & ((x - mx).abs() < 7)).float()
            img += noise * torch.randn(shape, generator=gen)
            yield Case(f"{prefix}marker_{i:03d}", img[None].numpy().astype(np.float32),
                       (blobs[0] & ~blobs[1])[None].numpy().astype(np.uint8))

    params = dict(n=n_cases, shape=list(shape), seed=seed, s=noise, d=[lo, hi])
    return Task("synthetic_marker", in_channels=1, regions=("target",),
                load=lambda: held_out_or_split("synthetic_marker", params, make, n_cases, val_cases, val_fraction=val_fraction, seed=seed,
                                               nbytes=case_bytes(shape, 1, 1)))


# name: (centre (z, y, x) in [-1, 1], radii, intensity above background, kind) per organ, in the
# data set's label order. Tubes run along z (esophagus) or bend in-plane (duodenum); "low" organs
# differ from the background by about a third of the noise.
TCIA = {
    "spleen": ((0.0, -0.15, 0.6), (0.4, 0.3, 0.22), 0.9, "blob"),
    "pancreas": ((0.1, 0.2, 0.05), (0.15, 0.1, 0.4), 0.35, "blob"),
    "kidney": ((0.15, 0.35, 0.5), (0.35, 0.2, 0.17), 1.1, "blob"),
    "gallbladder": ((0.1, 0.1, -0.35), (0.18, 0.14, 0.12), -0.7, "blob"),
    "esophagus": ((0.0, -0.4, 0.1), (0.9, 0.08, 0.08), 0.4, "tube"),
    "liver": ((-0.1, -0.1, -0.45), (0.7, 0.6, 0.5), 0.8, "blob"),
    "stomach": ((-0.15, -0.2, 0.25), (0.35, 0.3, 0.3), 0.5, "blob"),
    "duodenum": ((0.25, 0.3, -0.1), (0.12, 0.1, 0.3), 0.3, "bend"),
}
# VISCERAL's seven structures (OBELISK-Net Table 3): paired kidneys and psoas muscles (long,
# low-contrast, along z beside the spine), a dark bladder low in the volume.
VISCERAL = {
    "liver": ((-0.2, -0.1, -0.45), (0.5, 0.55, 0.45), 0.8, "blob"),
    "spleen": ((-0.25, -0.05, 0.6), (0.3, 0.25, 0.2), 0.9, "blob"),
    "bladder": ((0.75, -0.2, 0.0), (0.18, 0.22, 0.25), -0.5, "blob"),
    "kidney_left": ((0.0, 0.4, 0.45), (0.3, 0.16, 0.14), 1.1, "blob"),
    "kidney_right": ((0.0, 0.4, -0.45), (0.3, 0.16, 0.14), 1.1, "blob"),
    "psoas_left": ((0.35, 0.5, 0.2), (0.55, 0.1, 0.1), 0.35, "tube"),
    "psoas_right": ((0.35, 0.5, -0.2), (0.55, 0.1, 0.1), 0.35, "tube"),
}
LAYOUTS = {"tcia": TCIA, "visceral": VISCERAL}


@DATASETS.register("synthetic_abdomen")
def synthetic_abdomen(n_cases: int = 20, shape=(48, 48, 48), seed: int = 0, noise: float = 0.8,
                      jitter: float = 0.08, val_fraction: float = 0.2, val_cases: int = 0, layout: str = "tcia",
                      regions=None) -> Task:
    """Multi-organ task, 1 channel, exclusive organs (module docstring): ``layout`` ``tcia`` (8
    organs, ``TCIA``) or ``visceral`` (7 structures, ``VISCERAL``). ``regions``: the organs to
    label (default: all); the others stay in the image, unlabelled neighbours (ConResNet
    Table II's pancreas among the abdomen's organs).

    Organs are painted largest first, a smaller one overwriting a larger where they meet (as
    a gallbladder lies in the liver's fossa), so labels never overlap and every organ shows. Each case jitters every centre by U(-jitter, jitter) and every
    radius by +-20%; the stomach carries its own smooth texture; a bias field and Gaussian noise
    of std ``noise`` cover the volume.
    """
    check_split(n_cases, val_fraction, val_cases)
    check_shape(shape)
    if layout not in LAYOUTS:
        raise ValueError(f"layout: unknown {layout!r}; allowed: {', '.join(LAYOUTS)}")
    organs = LAYOUTS[layout]
    regions = tuple(organs) if regions is None else tuple(regions)
    unknown = [r for r in regions if r not in organs]
    if unknown or not regions or len(set(regions)) != len(regions):
        raise ValueError(f"regions: {list(regions)} must be distinct organs of layout {layout!r}, at least one; "
                         f"allowed: {', '.join(organs)}")
    names = list(organs)

    def make(n: int, gen_seed: int, prefix: str):
        gen = torch.Generator().manual_seed(gen_seed)
        coords = _coords(shape)
        for i in range(n):
            labels = torch.zeros(shape, dtype=torch.long)
            img = 0.4 * _smooth_field(gen, shape, coarse=4)[0]
            body = _blob(gen, coords, [0, 0, 0], [1.1, 0.85, 0.95], wobble=0.05)
            img += 0.5 * body.float()
            for k, (centre, radii, level, kind) in sorted(enumerate(organs.values()),
                                                           key=lambda o: -math.prod(o[1][1])):
                c = [m + d for m, d in zip(centre, _rand(gen, -jitter, jitter))]
                r = [m * f for m, f in zip(radii, _rand(gen, 0.8, 1.2))]
                if kind == "bend":  # an arc in the axial plane: the centre line curves along x
                    bent = coords.clone()
                    bent[1] = coords[1] - 0.8 * (coords[2] - c[2]) ** 2
                    mask = _blob(gen, bent, c, r, wobble=0.1)
                else:
                    mask = _blob(gen, coords, c, r, wobble=0.1 if kind == "blob" else 0.03)
                mask &= body
                labels[mask] = k + 1
            for k, (name, (_, _, level, _)) in enumerate(organs.items()):
                m = (labels == k + 1).float()
                texture = 0.3 * _smooth_field(gen, shape, coarse=8)[0] if name == "stomach" else 0.0  # contents
                img += m * (level + texture)
            img += noise * torch.randn(shape, generator=gen)
            label = torch.stack([labels == names.index(r) + 1 for r in regions])
            yield Case(f"{prefix}abdomen_{i:03d}", img[None].numpy().astype(np.float32), label.numpy().astype(np.uint8))

    params = dict(n=n_cases, shape=list(shape), seed=seed, s=noise, j=jitter, layout=repr(organs))
    if regions != tuple(organs):  # keeps the cache key of the all-organ task
        params["r"] = list(regions)
    return Task("synthetic_abdomen", in_channels=1, regions=regions,
                load=lambda: held_out_or_split("synthetic_abdomen", params, make, n_cases, val_cases, val_fraction=val_fraction, seed=seed,
                                               nbytes=case_bytes(shape, 1, len(regions))))
