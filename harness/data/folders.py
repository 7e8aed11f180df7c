"""Real data sets from the user's disk: Decathlon (MSD), BraTS and PROMISE12 folders.

Each format has a scanner (folder -> channels, regions, allowed label values, case files),
a checker (``check_folder``: every problem as one line, before anyone spends GPU hours) and
a registered data set whose cases are preprocessed once, as the papers describe, and cached
as memory-mapped arrays (``task.cached``): read (MONAI's LoadImage for NIfTI, SimpleITK for
MetaImage), crop to the image's non-zero bounding box, resample to a target spacing, then
normalise (z-score over the foreground per channel, the BraTS 2020 percentile clip and min-max,
or CT window clipping and scaling).
Random crops and augmentation happen in training (``train.make_loader``).

Arrays are (C, D, H, W) with D the slice axis (NIfTI/ITK z), so slice-wise nets see axial
slices. Targets are one binary channel per region: MSD's labels 1..K, BraTS's evaluated
regions WT (1, 2, 4), TC (1, 4), ET (4), PROMISE12's prostate.

Folds are fixed in a split file (nnU-Net's ``splits_final.json`` idea): k folds, or one ratio
split, over sorted case ids from a seed, written once under ``splits/`` (beside mlflow.db and
reports/) and reused by every later run; a user may name their own.
"""
from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from harness.cache import cache_dir
from harness.data.task import LABELS, Case, Task, cached, nested_as_classes, split_ids
from harness.registry import DATA_COMMANDS, DATASETS

BRATS_MODALITIES = ("t1", "t1ce", "t2", "flair")
# BraTS labels: 1 necrotic/non-enhancing core, 2 oedema, 4 enhancing tumour; the evaluated regions:
BRATS_REGIONS = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}
NORMALIZE = ("auto", "zscore", "percentile", "ct", "none")


class DataFolderError(ValueError):
    """A folder that cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, root: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"data folder {root}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


@dataclass
class CaseFiles:
    id: str
    images: list[Path]  # one file per channel, or one 4D file holding every channel
    label: Path | None  # None: an unlabelled case (a challenge's validation or test set)


@dataclass
class Layout:
    """What a folder holds, known from its file names and metadata alone."""

    format: str
    channels: list[str]
    regions: tuple[str, ...]
    label_values: set[int]
    cases: list[CaseFiles]
    to_regions: Callable[[np.ndarray], np.ndarray]  # integer label map -> (R, ...) uint8
    ct: bool = False
    problems: list[str] | None = None  # files missing at scan time


def _region_name(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def _regions_of(label: np.ndarray, values: Sequence[Sequence[int]]) -> np.ndarray:
    return np.stack([np.isin(label, v) for v in values]).astype(np.uint8)


def _one_hot(values: Sequence[Sequence[int]]) -> Callable[[np.ndarray], np.ndarray]:
    # A partial of a module-level function, not a closure: a Layout must pickle into worker processes.
    return functools.partial(_regions_of, values=[tuple(v) for v in values])


def scan_msd(root: Path) -> Layout:
    """A Decathlon task folder through its ``dataset.json`` (modalities, labels, training list)."""
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise DataFolderError(str(root), [f"{meta_path}: missing (every Decathlon task has a dataset.json)"])
    from monai.data import load_decathlon_datalist, load_decathlon_properties

    try:
        meta = load_decathlon_properties(meta_path, ["modality", "labels"])
        modalities = [meta["modality"][k] for k in sorted(meta["modality"], key=int)]
        labels = {int(k): v for k, v in meta["labels"].items()}
        training = load_decathlon_datalist(meta_path, is_segmentation=True, data_list_key="training", base_dir=root)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataFolderError(str(root), [f"{meta_path}: unreadable ({type(e).__name__}: {e}); needs "
                                          "'modality', 'labels' and 'training'"]) from None
    fg = sorted(k for k in labels if k != 0)
    cases, problems = [], []
    for i, entry in enumerate(training):  # MONAI's list: paths made absolute under the task folder
        if not isinstance(entry, dict) or not {"image", "label"} <= set(entry):
            problems.append(f"{meta_path}: training[{i}]: needs 'image' and 'label' (got {entry!r:.80})")
            continue
        img, lab = Path(entry["image"]), Path(entry["label"])
        cid = img.name.split(".")[0]
        missing = [p for p in (img, lab) if not p.is_file()]
        problems += [f"{cid}: {p}: missing (listed in dataset.json)" for p in missing]
        if not missing:
            cases.append(CaseFiles(cid, [img], lab))
    return Layout("msd", modalities, tuple(_region_name(labels[k]) for k in fg), set(labels), cases,
                  to_regions=_one_hot([(k,) for k in fg]), ct=any(m.upper() == "CT" for m in modalities), problems=problems)


def scan_brats(root: Path) -> Layout:
    """A BraTS 2018/2020 folder: one folder per case with *_t1, *_t1ce, *_t2, *_flair, *_seg NIfTI files."""
    cases, problems = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        found = {}
        for key in (*BRATS_MODALITIES, "seg"):
            hits = sorted(d.glob(f"*_{key}.nii*"))
            if len(hits) != 1:
                problems.append(f"{d.name}: {'no' if not hits else 'several'} *_{key}.nii(.gz) file(s)")
            else:
                found[key] = hits[0]
        if len(found) == 5:
            cases.append(CaseFiles(d.name, [found[m] for m in BRATS_MODALITIES], found["seg"]))
    if not cases and not problems:
        problems.append(f"{root}: no case folders (expected one folder per case with *_t1/_t1ce/_t2/_flair/_seg)")
    return Layout("brats", list(BRATS_MODALITIES), tuple(BRATS_REGIONS), {0, 1, 2, 4}, cases,
                  to_regions=_one_hot(list(BRATS_REGIONS.values())), problems=problems)


def scan_promise12(root: Path) -> Layout:
    """PROMISE12: ``CaseNN.mhd`` with ``CaseNN_segmentation.mhd`` beside it."""
    cases, problems = [], []
    for img in sorted(root.glob("Case[0-9]*.mhd")):
        if img.stem.endswith("_segmentation"):
            continue
        lab = img.with_name(f"{img.stem}_segmentation.mhd")
        if not lab.is_file():
            problems.append(f"{img.stem}: {lab.name}: missing")
            continue
        cases.append(CaseFiles(img.stem, [img], lab))
    if not cases and not problems:
        problems.append(f"{root}: no CaseNN.mhd files")
    return Layout("promise12", ["T2"], ("prostate",), {0, 1}, cases, to_regions=_one_hot([(1,)]), problems=problems)


SCANNERS = {"msd": scan_msd, "brats": scan_brats, "promise12": scan_promise12}


def scan_unlabelled_brats(root: str | Path) -> list[CaseFiles]:
    """A BraTS validation or test folder: one folder per case with *_t1, *_t1ce, *_t2, *_flair
    NIfTI files and no segmentation (the challenge scores it). DataFolderError lists every problem."""
    root = Path(root)
    if not root.is_dir():
        raise DataFolderError(str(root), [f"{root}: not a folder"])
    cases, problems = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        found = {m: sorted(d.glob(f"*_{m}.nii*")) for m in BRATS_MODALITIES}
        bad = [m for m, hits in found.items() if len(hits) != 1]
        if bad:
            problems += [f"{d.name}: {'no' if not found[m] else 'several'} *_{m}.nii(.gz) file(s)" for m in bad]
        else:
            cases.append(CaseFiles(d.name, [found[m][0] for m in BRATS_MODALITIES], None))
    if not cases and not problems:
        problems.append(f"{root}: no case folders (expected one folder per case with *_t1/_t1ce/_t2/_flair)")
    if problems:
        raise DataFolderError(str(root), problems)
    return cases


def scan(root: str | Path, fmt: str) -> Layout:
    if fmt not in SCANNERS:
        raise ValueError(f"--format: {fmt!r} is not a data format; allowed: {', '.join(SCANNERS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataFolderError(str(root), [f"{root}: not a folder"])
    return SCANNERS[fmt](root)


def _is_nifti(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


def read_image(path: Path) -> tuple[np.ndarray, tuple]:
    """Voxels as (z, y, x) or (C, z, y, x), and the geometry of the spatial axes.

    NIfTI goes through MONAI's ``LoadImage`` with its nibabel reader, which fails on a truncated
    gzip stream (SimpleITK quietly returns the voxels it got), in the file's own dtype and
    orientation; MetaImage and the rest through SimpleITK (MONAI's ITK reader needs the ``itk``
    package, which the harness does not install). Any failure to read is a ``RuntimeError``
    naming the cause.
    """
    try:
        if _is_nifti(path):
            from monai.transforms import LoadImage

            img = LoadImage(reader="NibabelReader", image_only=True, dtype=None)(str(path))  # (x, y, z[, c])
            data, affine = img.numpy(), img.affine.numpy()
            zooms = tuple(float(z) for z in img.meta["pixdim"][1:4])
            rot = affine[:3, :3] / np.asarray(zooms)
            arr = data.transpose(2, 1, 0) if data.ndim == 3 else data.transpose(3, 2, 1, 0)
            return arr, (tuple(data.shape[:3]), zooms, tuple(affine[:3, 3].tolist()), rot.ravel().tolist())
        import SimpleITK as sitk

        img = sitk.ReadImage(str(path))
        n = img.GetDimension()
        direction = np.asarray(img.GetDirection()).reshape(n, n)[:3, :3].ravel().tolist()
        return sitk.GetArrayFromImage(img), (img.GetSize()[:3], img.GetSpacing()[:3], img.GetOrigin()[:3], direction)
    except Exception as e:  # noqa: BLE001  every reader error (EOF, zlib, ITK, header) means: unreadable
        lines = str(e).strip().splitlines() or [""]
        itk = [re.sub(r"^ITK ERROR: \w+\(0x[0-9a-f]+\): ", "", ln) for ln in lines if "ITK ERROR" in ln]
        raise RuntimeError(f"{type(e).__name__}: {(itk or lines)[-1][:160]}") from e


def _close(a: Sequence[float], b: Sequence[float], tol: float = 1e-3) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol * max(1.0, abs(x), abs(y)) for x, y in zip(a, b))


def _check_case(layout: Layout, c: CaseFiles) -> list[str]:
    out, read = [], []
    for p in [*c.images, c.label]:
        try:
            read.append(read_image(p))
        except RuntimeError as e:
            out.append(f"{c.id}: {p.name}: unreadable ({e})")
    if out:
        return out
    *chans, (label, geom) = read
    for p, (a, _) in zip(c.images, chans):
        bad = int(a.size - np.count_nonzero(np.isfinite(a))) if np.issubdtype(a.dtype, np.floating) else 0
        if bad:  # z-scoring would spread them over the whole case
            out.append(f"{c.id}: {p.name} has {bad} {NONFINITE} (NaN or Inf); fix the file, or set "
                       f"data.params.nonfinite: zero to train with them set to 0")
    n_chan = sum(a.shape[0] if a.ndim == 4 else 1 for a, _ in chans)
    if n_chan != len(layout.channels):
        out.append(f"{c.id}: image has {n_chan} channel(s), the data set declares {len(layout.channels)}")
    size, spacing, origin, direction = geom
    for p, (_, (s2, sp2, o2, d2)) in zip(c.images, chans):
        if tuple(s2) != tuple(size):
            out.append(f"{c.id}: {p.name} has shape {tuple(s2)}, its label {c.label.name} {tuple(size)}")
        elif not (_close(sp2, spacing) and _close(o2, origin) and _close(d2, direction)):
            out.append(f"{c.id}: {p.name} and its label {c.label.name} disagree on spacing/origin/direction "
                       f"({tuple(sp2)} vs {tuple(spacing)}, origin {tuple(o2)} vs {tuple(origin)})")
    bad = sorted(set(np.unique(label).astype(int).tolist()) - layout.label_values)
    if bad:
        out.append(f"{c.id}: {c.label.name} has label values {bad} outside the declared {sorted(layout.label_values)}")
    return out


def _stats_key(layout: Layout) -> str:
    """Changes when any file of the folder changes (name, size, modification time)."""
    files = {p for c in layout.cases for p in (*c.images, c.label)}
    files |= {q for p in files if p.suffix == ".mhd" for q in p.parent.glob(f"{p.stem}.*raw")}  # voxel files
    files = sorted(files)
    return hashlib.sha1(json.dumps([(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]).encode()
                        ).hexdigest()[:16]


NONFINITE = "non-finite voxel(s)"


def check_folder(root: str | Path, fmt: str, nonfinite: str = "refuse") -> list[str]:
    """Every problem of a folder, one line each (empty: usable). Cached until a file changes.
    ``nonfinite: zero``: NaN or Inf voxels are not a problem (the loader sets them to 0)."""
    try:
        layout = scan(root, fmt)
    except DataFolderError as e:
        return e.problems
    # Files missing at scan time, then the complete cases' own problems (cached per file state;
    # v2: since non-finite voxels are checked).
    key = cache_dir() / "checks" / f"v2-{fmt}-{_stats_key(layout)}.json"
    if key.exists():
        found = json.loads(key.read_text())
    else:
        found = [p for c in layout.cases for p in _check_case(layout, c)]
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_text(json.dumps(found))
    if nonfinite == "zero":
        found = [p for p in found if NONFINITE not in p]
    return list(layout.problems or []) + found


def _load_case(layout: Layout, c: CaseFiles, spacing: Sequence[float] | None, crop_foreground: bool,
               normalize: str, ct_window: Sequence[float]) -> Case:
    from monai.data import MetaTensor
    from monai.transforms import CropForeground, NormalizeIntensity, ScaleIntensityRange, Spacing

    chans = []
    for p in c.images:
        a = read_image(p)[0].astype(np.float32)  # (z, y, x) or (C, z, y, x)
        # Non-finite voxels reach here only under data.nonfinite: zero (check_folder refuses them).
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        chans += list(a) if a.ndim == 4 else [a]
    ref, (_, (sx, sy, sz), _, _) = read_image(c.label)
    image = np.stack(chans)  # (C, D, H, W), D = z
    label = layout.to_regions(ref)  # (R, D, H, W)
    both = MetaTensor(torch.from_numpy(np.concatenate([image, label.astype(np.float32)])),
                      affine=torch.diag(torch.tensor([sz, sy, sx, 1.0], dtype=torch.float64)))
    if crop_foreground:  # the image's non-zero box (MRI background is 0), applied to image and label alike
        both = CropForeground(select_fn=lambda x: x != 0, channel_indices=list(range(len(chans))), margin=0)(both)
    n = len(chans)
    img, lab = both[:n], both[n:]
    if spacing is not None:
        img = Spacing(pixdim=spacing, mode="bilinear")(img)
        lab = Spacing(pixdim=spacing, mode="nearest")(lab)
    if normalize == "ct":  # clip to the window, scale to [0, 1]
        img = ScaleIntensityRange(a_min=ct_window[0], a_max=ct_window[1], b_min=0.0, b_max=1.0, clip=True)(img)
    elif normalize == "zscore":  # mean/std over the foreground (non-zero voxels) per channel
        img = NormalizeIntensity(nonzero=True, channel_wise=True)(img)
    elif normalize == "percentile":  # BraTS 2020 pipeline A (percentile_minmax), metadata kept
        img = img.clone().copy_(torch.stack([percentile_minmax(ch) for ch in img.as_tensor()]))
    return Case(c.id, np.asarray(img.as_tensor(), dtype=np.float32), (np.asarray(lab.as_tensor()) > 0.5).astype(np.uint8))


def percentile_minmax(x: torch.Tensor) -> torch.Tensor:
    """Clip one channel to the 1st and 99th percentiles of its non-zero voxels, scale to [0, 1]
    (Henry et al. Sec. 2.3, pipeline A); background (0) stays 0."""
    fg = x[x != 0]
    if fg.numel() == 0:
        return x
    lo, hi = np.percentile(fg.numpy(), [1, 99])
    out = (x.clamp(float(lo), float(hi)) - float(lo)) / max(float(hi - lo), 1e-8)
    return torch.where(x != 0, out, torch.zeros_like(x))


def split_file_for(fmt: str, root: Path, folds: int | None, val_fraction: float | None, seed: int) -> Path:
    kind = f"{folds}fold" if val_fraction is None else f"ratio{val_fraction:g}"
    return Path("splits") / f"{fmt}-{root.name}-{kind}-seed{seed}.json"


def load_split(path: Path, ids: list[str], folds: int | None, val_fraction: float | None, seed: int,
               fold: int, write: bool = True) -> dict[str, list[str]]:
    """The fold's train/val ids, from the split file (written on first use, then reused).

    ``write=False`` makes and checks the split without writing it: a study is validated before
    anything lands on disk, and the file is written when the cases are first loaded.
    """
    if path.exists():
        raw = json.loads(path.read_text())
        splits = raw["splits"] if isinstance(raw, dict) else raw  # ours, or nnU-Net's plain list
    else:
        if val_fraction is None and folds > len(ids):
            raise ValueError(f"data.folds: {folds} folds need at least as many cases; the folder has {len(ids)}")
        splits = split_ids(ids, folds, val_fraction, seed)
    if write and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"seed": seed, "folds": folds, "val_fraction": val_fraction,
                                   "case_ids": sorted(ids), "splits": splits}, indent=1))
        tmp.replace(path)
    if not 0 <= fold < len(splits):
        raise ValueError(f"data.fold: {fold} is outside the split file's folds 0..{len(splits) - 1} ({path})")
    unknown = sorted(set(splits[fold]["train"] + splits[fold]["val"]) - set(ids))
    if unknown:
        raise ValueError(f"data.split_file: {path} names cases the folder lacks: {unknown[:5]}"
                         f"{' ...' if len(unknown) > 5 else ''}")
    return splits[fold]


def _load_all(layout: Layout, prep: dict, workers: int) -> Iterator[Case]:
    """Preprocessed cases in folder order; several worker processes when asked and worth it."""
    if workers <= 1 or len(layout.cases) < 2:
        yield from (_load_case(layout, c, **prep) for c in layout.cases)
        return
    # spawn, not fork: the parent may hold torch/OpenMP threads that a forked child would inherit locked.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(functools.partial(_load_case, layout, **prep), layout.cases)


def folder_task(fmt: str, root: str, fold: int = 0, folds: int | None = 5, val_fraction: float | None = None,
                seed: int = 0, split_file: str | None = None, spacing: Sequence[float] | None = None,
                crop_foreground: bool = True, normalize: str = "auto",
                ct_window: Sequence[float] = (-1000.0, 1000.0), workers: int | None = None,
                labels: str = "regions", nonfinite: str = "refuse") -> Task:
    """A registered folder data set: checked, split, preprocessed lazily (module docstring).

    ``nonfinite``: ``refuse`` (a case with NaN or Inf voxels is a problem of the folder) or
    ``zero`` (those voxels set to 0 before normalisation, with a warning). A case smaller than
    the patch on an axis is zero-padded to it (``harness.train.sample_transforms``).

    ``workers``: processes for the one-off preprocessing (default: up to 8 CPUs, one per 8 cases).
    ``labels: classes`` (BraTS only) trains on the exclusive classes ED, NCR, ET and evaluates
    the nested regions WT, TC, ET (multi-class mode; ``task.nested_as_classes``).
    """
    if labels not in LABELS:
        raise ValueError(f"data.labels: unknown {labels!r}; allowed: {', '.join(LABELS)}")
    if labels == "classes" and fmt != "brats":
        raise ValueError(f"data.labels: classes splits BraTS's nested regions; {fmt} regions are already exclusive")
    if normalize not in NORMALIZE:
        raise ValueError(f"data.normalize: {normalize!r} is not allowed; choose from {', '.join(NORMALIZE)}")
    if val_fraction is not None and not 0 < val_fraction < 1:
        raise ValueError(f"data.val_fraction: {val_fraction} is outside (0, 1)")
    if val_fraction is None and (folds is None or folds < 2):
        raise ValueError(f"data.folds: {folds} must be >= 2 (or give data.val_fraction for one ratio split)")
    if spacing is not None and (len(spacing) != 3 or min(spacing) <= 0):
        raise ValueError(f"data.spacing: {list(spacing)} must be three positive sizes (D, H, W) in mm")
    if len(ct_window) != 2 or ct_window[0] >= ct_window[1]:
        raise ValueError(f"data.ct_window: {list(ct_window)} must be [low, high] with low < high")
    if workers is not None and workers < 1:
        raise ValueError(f"data.workers: {workers} must be >= 1")
    if nonfinite not in ("refuse", "zero"):
        raise ValueError(f"data.nonfinite: {nonfinite!r} is not allowed; choose from refuse, zero")
    problems = check_folder(root, fmt, nonfinite)
    if problems:
        raise DataFolderError(root, problems)
    if nonfinite == "zero":
        zeroed = [p for p in check_folder(root, fmt) if NONFINITE in p]
        if zeroed:
            warnings.warn(f"data.nonfinite: zero: {len(zeroed)} file(s) with NaN or Inf voxels set to 0 "
                          f"(first: {zeroed[0].split(';')[0]})", stacklevel=2)
    layout = scan(root, fmt)
    if normalize == "auto":
        normalize = "ct" if layout.ct else "zscore"
    ids = [c.id for c in layout.cases]
    split_path = Path(split_file) if split_file else split_file_for(fmt, Path(root), folds, val_fraction, seed)
    split = load_split(split_path.resolve(), ids, folds, val_fraction, seed, fold=fold, write=False)
    prep = dict(spacing=list(spacing) if spacing else None, crop_foreground=crop_foreground, normalize=normalize,
                ct_window=list(ct_window))
    n_workers = workers or min(8, os.cpu_count() or 1, max(1, len(layout.cases) // 8))

    def load() -> dict[str, list[Case]]:
        by_id = {c.id: c for c in cached(f"{fmt}-{Path(root).name}",
                                         {"root": str(Path(root).resolve()), "files": _stats_key(layout), **prep,
                                          "finite": 1},  # cases cached since NaN/Inf voxels are zeroed
                                         lambda: _load_all(layout, prep, n_workers),
                                         count=len(layout.cases))}
        load_split(split_path.resolve(), ids, folds, val_fraction, seed, fold=fold)  # fixed on disk at first use
        return {part: [by_id[i] for i in split[part]] for part in ("train", "val")}

    value_sets = [set(v) for v in layout.to_regions.keywords["values"]]
    exclusive = all(not (a & b) for i, a in enumerate(value_sets) for b in value_sets[i + 1:])  # BraTS: nested
    task = Task(f"{fmt}:{Path(root).name}", in_channels=len(layout.channels), regions=layout.regions,
                exclusive=exclusive, load=load)
    return nested_as_classes(task, ("ED", "NCR", "ET")) if labels == "classes" else task


# One registered data set per format; the parameters are ``folder_task``'s after ``fmt``.
for _fmt in SCANNERS:
    DATASETS.register(_fmt)(functools.partial(folder_task, _fmt))


def detect_format(root: str | Path) -> str | None:
    """The format a folder looks like: dataset.json (MSD), CaseNN.mhd (PROMISE12), case folders (BraTS)."""
    root = Path(root)
    if (root / "dataset.json").is_file():
        return "msd"
    if any(root.glob("Case[0-9]*.mhd")):
        return "promise12"
    if root.is_dir() and any(d.is_dir() and any(d.glob("*_seg.nii*")) for d in root.iterdir()):
        return "brats"
    return None


def _data_check_arguments(parser) -> None:
    parser.add_argument("root")
    parser.add_argument("--format", default=None, choices=["msd", "brats", "promise12"],
                        help="default: detected from the folder")


def data_check_command(args) -> int:
    """Missing files, shape/affine disagreements, bad labels, unreadable files: one line each."""
    import sys

    if not Path(args.root).is_dir():
        print(f"error: {args.root}: not a folder", file=sys.stderr)
        return 2
    fmt = args.format or detect_format(args.root)
    if fmt is None:
        print(f"error: {args.root}: cannot tell the format (no dataset.json, CaseNN.mhd or BraTS case folders); "
              f"pass --format {{{','.join(SCANNERS)}}}", file=sys.stderr)
        return 2
    problems = check_folder(args.root, fmt)
    for line in problems:
        print(line)
    if problems:
        print(f"{args.root}: {len(problems)} problem(s) ({fmt})", file=sys.stderr)
        return 2
    layout = scan(args.root, fmt)
    print(f"{args.root}: ok ({fmt}): {len(layout.cases)} cases, channels {', '.join(layout.channels)}, "
          f"regions {', '.join(layout.regions)}")
    return 0


DATA_COMMANDS.register("check")((_data_check_arguments, data_check_command))
