"""A segmentation task: cases (image, region masks), a fixed split, a disk cache."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass
class Case:
    """One volume: image (C, D, H, W) float32; label (R, D, H, W) uint8, one channel per region."""

    id: str
    image: np.ndarray
    label: np.ndarray


@dataclass
class Task:
    name: str
    in_channels: int
    regions: tuple[str, ...]
    train: list[Case] = field(default_factory=list)
    val: list[Case] = field(default_factory=list)


def cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))


def cached(name: str, params: dict, make: Callable[[], list[Case]]) -> list[Case]:
    """Load ``make()``'s cases from the cache, keyed by name and params; write atomically."""
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / f"{name}-{key}.npz"
    if path.exists():
        with np.load(path) as z:
            ids = [str(i) for i in z["ids"]]
            return [Case(i, z[f"img_{i}"], z[f"lab_{i}"]) for i in ids]
    cases = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    arrays = {"ids": np.array([c.id for c in cases])}
    for c in cases:
        arrays[f"img_{c.id}"], arrays[f"lab_{c.id}"] = c.image, c.label
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # concurrent writers: last rename wins, both files identical
    return cases


def split_cases(cases: list[Case], val_fraction: float, seed: int) -> dict[str, list[Case]]:
    """Seeded ratio split over sorted case ids (the papers' 8:2 split)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction: {val_fraction} is outside (0, 1)")
    ordered = sorted(cases, key=lambda c: c.id)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    n_val = max(1, round(val_fraction * len(ordered)))
    if n_val >= len(ordered):
        raise ValueError(f"data.n_cases: {len(ordered)} cases leave nothing to train on")
    val = {int(i) for i in perm[:n_val]}
    return {"train": [c for i, c in enumerate(ordered) if i not in val],
            "val": [c for i, c in enumerate(ordered) if i in val]}
