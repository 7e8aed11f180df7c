"""A segmentation task: channels and regions known up front, cases loaded on first use.

Cases live in a disk cache as one ``.npy`` pair per case and are memory-mapped, so a
paper-scale data set costs disk, not RAM, and a random crop reads only its voxels.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from harness.cache import cache_dir


@dataclass
class Case:
    """One volume: image (C, D, H, W) float32; label (R, D, H, W) uint8, one channel per region."""

    id: str
    image: np.ndarray
    label: np.ndarray


@dataclass
class Task:
    """``in_channels`` and ``regions`` need no data; ``train``/``val`` load the cases once.

    ``regions`` are the label channels a model learns. ``evaluate`` maps the names metrics are
    reported under to unions of those channels (BraTS in multi-class mode learns the exclusive
    classes NCR, ED, ET and is judged on WT = all three, TC = NCR + ET, ET); by default each
    region is evaluated as itself.
    """

    name: str
    in_channels: int
    regions: tuple[str, ...]
    exclusive: bool = True  # regions never overlap, so softmax over background + regions is possible
    load: Callable[[], dict[str, list[Case]]] = field(repr=False, default=lambda: {"train": [], "val": []})
    evaluate: dict[str, tuple[int, ...]] | None = None
    _split: dict[str, list[Case]] | None = field(default=None, repr=False)

    @property
    def eval_regions(self) -> dict[str, tuple[int, ...]]:
        """{reported name: label channels whose union it is}."""
        return self.evaluate or {name: (i,) for i, name in enumerate(self.regions)}

    def merge(self, masks: torch.Tensor) -> torch.Tensor:
        """Binary region masks (N, R, ...) -> evaluation masks (N, E, ...), each the union of its channels."""
        if self.evaluate is None:
            return masks
        return torch.stack([masks[:, list(ch)].amax(1) for ch in self.evaluate.values()], 1)

    def _cases(self) -> dict[str, list[Case]]:
        if self._split is None:
            self._split = self.load()
        return self._split

    @property
    def train(self) -> list[Case]:
        return self._cases()["train"]

    @property
    def val(self) -> list[Case]:
        return self._cases()["val"]


def sweep_stale(folder: Path) -> None:
    """Remove ``<entry>.<pid>.tmp`` folders whose writing process is gone (killed mid-write: a
    kill skips ``cached``'s own clean-up)."""
    for tmp in folder.glob("*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2] if tmp.name.count(".") >= 2 else ""
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def check_disk(folder: Path, need: float, what: str) -> None:
    """Refuse, before writing, ``need`` bytes that the file system of ``folder`` (or of its
    nearest existing parent) cannot hold: an OSError(ENOSPC) naming the folder, which the CLI
    prints in one line."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need > free:
        raise OSError(errno.ENOSPC, f"{what} needs about {need / 2**30:.2f} GiB in the data cache but its disk has "
                                    f"{free / 2**30:.2f} GiB free; free space or point HARNESS_CACHE elsewhere",
                      str(folder))


def case_bytes(shape: Sequence[int], channels: int, regions: int) -> int:
    """A cached case's bytes: a float32 image of ``channels`` and a uint8 label of ``regions``."""
    return int(np.prod(shape)) * (4 * channels + regions)


def cached(name: str, params: dict, make: Callable[[], Iterator[Case]], nbytes: float | None = None,
           count: int | None = None) -> list[Case]:
    """Cases from the cache keyed by name and params; ``make()`` yields them on a miss.

    Written case by case into a temporary folder that is renamed into place when
    complete, so concurrent or interrupted writers never leave a partial cache; the folder is
    removed on any exit, and folders of killed writers at the next write (``sweep_stale``).
    The disk is checked before writing: against ``nbytes`` when the cases' size is known up
    front (synthetic sets), else against the first case's size times ``count`` (folders, whose
    resampling decides the size).
    """
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / f"{name}-{key}"
    if not (path / "ids.json").exists():
        if nbytes is not None:
            check_disk(path.parent, nbytes, f"{name} ({count or '?'} cases)")
        sweep_stale(path.parent)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            ids = []
            for case in make():
                if not ids and nbytes is None and count:  # the rest are about as large as the first
                    check_disk(tmp, (case.image.nbytes + case.label.nbytes) * count, f"{name} ({count} cases)")
                np.save(tmp / f"{case.id}_img.npy", case.image)
                np.save(tmp / f"{case.id}_lab.npy", case.label)
                ids.append(case.id)
            (tmp / "ids.json").write_text(json.dumps(ids))
            tmp.rename(path)
        except OSError as e:
            if e.errno == errno.ENOSPC or not (path / "ids.json").exists():
                raise
            # another process finished first: its copy is identical
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # on any exit: a failed or interrupted write leaves nothing
    ids = json.loads((path / "ids.json").read_text())
    return [Case(i, np.load(path / f"{i}_img.npy", mmap_mode="c"), np.load(path / f"{i}_lab.npy", mmap_mode="c"))
            for i in ids]


def split_ids(ids: list[str], folds: int | None, val_fraction: float | None, seed: int) -> list[dict[str, list[str]]]:
    """Seeded splits over sorted case ids: one ratio split (``val_fraction``), else ``folds`` folds,
    each {"train": [...], "val": [...]} in id order. Synthetic sets and folder split files alike."""
    ordered = sorted(ids)
    perm = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
    if val_fraction is not None:
        n_val = max(1, round(val_fraction * len(ordered)))
        return [{"train": sorted(perm[n_val:]), "val": sorted(perm[:n_val])}]
    parts = np.array_split(np.array(perm, dtype=object), folds)
    return [{"train": sorted(i for j, p in enumerate(parts) if j != k for i in p), "val": sorted(parts[k])}
            for k in range(folds)]


def split_cases(cases: list[Case], val_fraction: float, seed: int) -> dict[str, list[Case]]:
    """Seeded ratio split over sorted case ids (the papers' 8:2 split; ``split_ids``)."""
    by_id = {c.id: c for c in cases}
    split = split_ids(list(by_id), None, val_fraction, seed)[0]
    return {part: [by_id[i] for i in ids] for part, ids in split.items()}


def check_shape(shape) -> None:
    """A synthetic volume's (D, H, W): three positive whole numbers (ValueError naming the field)."""
    if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"data.shape: must be three positive whole sizes (D, H, W), got {list(shape)}")


# Offset of a held-out validation set's generator seed from the training set's: its cases are
# new draws of the same distribution.
HELD_OUT_SEED = 1_000_003


def held_out_or_split(name: str, params: dict, make: Callable[[int, int, str], Iterator[Case]], n_cases: int,
                      val_cases: int, val_fraction: float, seed: int, nbytes: int | None = None) -> dict[str, list[Case]]:
    """A synthetic data set's train / val cases. ``val_cases`` 0: the seeded ratio split of
    ``n_cases`` (``split_cases``); otherwise all ``n_cases`` train and ``val_cases`` more, drawn
    by ``make(count, generator seed, id prefix)`` from another seed, validate: a validation set
    as large as the claims' statistics need (case noise averaged out) without growing the
    training set, ids prefixed ``val_``. ``nbytes``: one case's cached size (``case_bytes``),
    checked against the disk before any case is made."""
    train = cached(name, params, lambda: make(n_cases, seed, ""), nbytes and nbytes * n_cases, n_cases)
    if not val_cases:
        return split_cases(train, val_fraction, seed)
    val = cached(name, {**params, "n": val_cases, "held_out": seed + HELD_OUT_SEED},
                 lambda: make(val_cases, seed + HELD_OUT_SEED, "val_"), nbytes and nbytes * val_cases, val_cases)
    return {"train": train, "val": val}


def check_split(n_cases: int, val_fraction: float, val_cases: int = 0) -> None:
    """Raise ValueError (naming the field) before any data is generated."""
    if isinstance(n_cases, bool) or not isinstance(n_cases, int):
        raise ValueError(f"data.n_cases: must be a whole number, got {n_cases!r}")
    if isinstance(val_cases, bool) or not isinstance(val_cases, int) or val_cases < 0:
        raise ValueError(f"data.val_cases: must be a whole number >= 0 (0: split n_cases by val_fraction), "
                         f"got {val_cases!r}")
    if val_cases and n_cases >= 1:
        return  # every generated case trains
    if isinstance(val_fraction, (bool, str)):
        raise ValueError(f"data.val_fraction: must be a number, got {val_fraction!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction: {val_fraction} is outside (0, 1)")
    if n_cases - max(1, round(val_fraction * n_cases)) < 1:
        raise ValueError(f"data.n_cases: {n_cases} cases leave nothing to train on (val_fraction {val_fraction})")


LABELS = ("regions", "classes")


def _peel(label: np.ndarray) -> np.ndarray:
    inside = np.asarray(label).astype(bool)
    out = inside.copy()
    out[:-1] &= ~inside[1:]
    return out.astype(np.uint8)


def nested_as_classes(task: Task, classes: Sequence[str]) -> Task:
    """A task of nested regions (outer first: BraTS WT > TC > ET) as exclusive classes.

    Class i = region i minus region i + 1 (BraTS: ED = WT - TC, NCR = TC - ET, ET), so softmax
    over background + classes applies (ConResNet's multi-class mode, Table V); metrics stay on
    the nested regions, region i = classes i..R-1 (``Task.evaluate``).
    """
    if len(classes) != len(task.regions):
        raise ValueError(f"{task.name}: {len(task.regions)} nested regions need as many class names, "
                         f"got {list(classes)}")

    def load() -> dict[str, list[Case]]:
        return {part: [Case(c.id, c.image, _peel(c.label)) for c in cases] for part, cases in task.load().items()}

    k = len(task.regions)
    return Task(f"{task.name} (classes)", task.in_channels, tuple(classes), exclusive=True, load=load,
                evaluate={name: tuple(range(i, k)) for i, name in enumerate(task.regions)})
