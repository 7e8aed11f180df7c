"""``harness submit``: label maps of a challenge's unlabelled cases, in its submission format.

ConResNet Table I and BraTS 2020 Table 4 are the challenge servers' scores of label maps the
teams uploaded; no local run can score them. This runs a study's ``submission.row`` on every
case of a local copy of the validation (or test) folder and writes one label map per case on
the case's own grid, ready to upload; the study's ``expected`` keeps the paper's server numbers
for reference. A trained variant is the ensemble of all its finished trials at the scale (seeds
and folds, probabilities averaged: the papers ensemble their fold models); a combined row
applies its rule to its members' ensembles (``harness.combine``: BraTS 2020's pipeline maps and
their Table 1 merge).

Each member preprocesses a case as its trials' data did (``folders._load_case``: crop to the
non-zero box, resample, normalise), infers with its trial's inferer, and its probabilities are
mapped back to the original grid through MONAI's inverse of the crop and resampling. The
output folder is written whole or not at all (a folder of its own beside it, renamed at the end).

Formats: ``brats`` (``<case>.nii.gz``, uint8 labels 0, 1, 2, 4 from the WT, TC, ET probabilities
by Sec. 2.6's reconstruction, the input's affine and header).
"""
from __future__ import annotations

import contextlib
import inspect
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.config import ConfigError, TrialSpec, load_study, table_rows
from harness.registry import COMBINERS, UnknownNameError

FORMATS = ("brats",)


def _leaves(row: str, combined: dict) -> list[str]:
    return [leaf for m in combined[row].of for leaf in (_leaves(m, combined) if m in combined else [m])] \
        if row in combined else [row]


def _prepare(chans: np.ndarray, zooms: tuple[float, ...], data_params: dict[str, Any]):
    """A case's channels (C, z, y, x) as the member's data was prepared: (tensor, invertible ops, image)."""
    from monai.data import MetaTensor
    from monai.transforms import CropForeground, Spacing

    from harness.data.folders import percentile_minmax, folder_task

    defaults = {k: p.default for k, p in inspect.signature(folder_task).parameters.items()
                if p.default is not inspect.Parameter.empty}
    prep = {k: data_params.get(k, defaults[k]) for k in ("spacing", "crop_foreground", "normalize", "ct_window")}
    img = MetaTensor(torch.from_numpy(chans.astype(np.float32)),
                     affine=torch.diag(torch.tensor([*zooms, 1.0], dtype=torch.float64)))
    ops = []
    if prep["crop_foreground"]:
        ops.append(CropForeground(select_fn=lambda x: x != 0, margin=0))
        img = ops[-1](img)
    if prep["spacing"] is not None:
        ops.append(Spacing(pixdim=prep["spacing"], mode="bilinear"))
        img = ops[-1](img)
    x = img.as_tensor()
    norm = "zscore" if prep["normalize"] == "auto" else prep["normalize"]  # BraTS is MRI: auto means z-score
    if norm == "zscore":
        from monai.transforms import NormalizeIntensity

        x = NormalizeIntensity(nonzero=True, channel_wise=True)(x)
    elif norm == "percentile":
        x = torch.stack([percentile_minmax(ch) for ch in x])
    elif norm == "ct":
        lo, hi = prep["ct_window"]
        x = ((x.clamp(lo, hi) - lo) / (hi - lo))
    return (x.as_tensor() if isinstance(x, MetaTensor) else x), ops, img  # a plain tensor for the network


@torch.no_grad()
def _member_probs(models: list, spec: TrialSpec, chans: np.ndarray, zooms, device) -> torch.Tensor:
    """One member's ensemble probabilities (1, K, z, y, x) on the case's original grid."""
    from monai.data import MetaTensor

    from harness.inferers import build_inferer

    x, ops, img = _prepare(chans, zooms, spec.data.params)
    cfg = spec.train
    inferer = build_inferer(cfg.inferer, cfg.patch, cfg.batch_size, cfg.output)
    probs = torch.stack([inferer(x[None].to(device), m).float().cpu()[0] for m in models]).mean(0)
    back = MetaTensor(probs, affine=img.affine, applied_operations=img.applied_operations)
    for op in reversed(ops):
        back = op.inverse(back)
    return torch.as_tensor(back)[None]


def run_submit(path: str, scale: str, root: str, out: str, tracking_uri: str | None, *, row: str | None = None,
               console=None) -> int:
    from rich.console import Console

    console = console or Console()
    study = load_study(path)
    if study.submission is None:
        raise ConfigError(f"{study.name}: no 'submission' section (row and format); studies with one: the "
                          f"challenge-server tables (conres_table1_brats18, brats20_table4)")
    row = row or study.submission.row
    names = [v.name for v in table_rows(study)]
    if row not in names:
        raise ConfigError(str(UnknownNameError("row", row, names, "--row")))
    out_dir = _new_folder(out)
    cases = _cases(root)
    combined = {c.name: c for c in study.combined}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    members = _members(path, study, scale, row, tracking_uri, device=device)
    outputs = {spec.train.output for _, spec, _ in members.values()}
    if outputs != {"sigmoid"}:
        raise ConfigError(f"submission format brats: needs members predicting sigmoid WT, TC, ET; got {outputs}")
    rules = {name: COMBINERS.get(c.rule.name)(**c.rule.params) for name, c in combined.items()}

    # Written into a folder of our own (a unique name beside the target), renamed at the end; on
    # any failure only what this command created is removed.
    made = [d for d in reversed(out_dir.parents) if not d.exists()]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        _write_maps(cases, members, combined, rules, row, tmp=tmp, device=device)
        (tmp / "submission.json").write_text(json.dumps({
            "study": study.name, "scale": scale, "row": row, "format": study.submission.format, "cases": len(cases),
            "members": {k: ids for k, (_, _, ids) in members.items()}}, indent=1))
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above; a file put there meanwhile makes this fail, not vanish
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(made):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    console.print(f"{out_dir}: {len(cases)} label maps ({study.submission.format} format) of {row!r}, "
                  f"{sum(len(ids) for _, _, ids in members.values())} trained models; upload them to the "
                  f"challenge's server. The paper's server numbers: harness report {path} --scale {scale}")
    return 0


def _cases(root: str) -> list:
    """The challenge's unlabelled cases under ``root``, every image header read before any
    inference: a bad file is said now, in one line."""
    import nibabel as nib

    from harness.data.folders import DataFolderError, scan_unlabelled_brats

    try:
        cases = scan_unlabelled_brats(root)
    except DataFolderError as e:
        raise ConfigError(f"--data-root: {e}") from None
    for case in cases:
        shapes = {}
        for p in case.images:
            try:
                shapes[p.name] = tuple(nib.load(str(p)).shape[:3])
            except Exception as e:  # noqa: BLE001  nibabel raises ImageFileError, OSError, EOFError ...
                raise ConfigError(f"--data-root: {p}: not a readable NIfTI header ({e})") from None
        if len(set(shapes.values())) > 1:
            raise ConfigError(f"--data-root: case {case.id}: its images differ in shape ({shapes})")
    return cases


def _members(path: str, study, scale: str, row: str, tracking_uri: str | None,
             device) -> dict[str, tuple[list, TrialSpec, list[str]]]:
    """Each trained leaf of ``row``: its seeds' models, its trial spec and their run ids."""
    from harness.evaluate import load_checkpoint
    from harness.report import load_runs
    from harness.session import Session, SessionOptions
    from harness.train import load_model

    runs = load_runs(study, scale, tracking_uri, with_cases=False)
    store = Session(SessionOptions(tracking_uri, writes=False)).reader
    combined = {c.name: c for c in study.combined}
    members = {}
    for leaf in dict.fromkeys(_leaves(row, combined)):
        ids = list(runs.trials.run_id[runs.trials.variant == leaf]) if not runs.trials.empty else []
        if not ids:
            raise ConfigError(f"{study.name}@{scale}: no finished trial of {leaf!r} (member of {row!r}); "
                              f"run 'harness run {path} --scale {scale}' first")
        ckpts = [load_checkpoint(store, i) for i in ids]
        members[leaf] = ([load_model(c, device) for c in ckpts], TrialSpec.model_validate_json(ckpts[0]["trial"]), ids)
    return members


def _new_folder(out: str) -> Path:
    """``--out`` resolved (a symlink to its target): a new folder, or an empty one; else a
    ConfigError naming what is there."""
    given = Path(out)
    target = given.resolve()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--out: {given} is a file{f' (via the link to {target})' if given.is_symlink() else ''}; "
                          f"give a new folder")
    if target.is_dir() and any(target.iterdir()):
        raise ConfigError(f"--out: {given} exists and is not empty; give a new folder")
    if given.is_symlink() and not target.exists():
        raise ConfigError(f"--out: {given} is a link to {target}, which does not exist; give a new folder")
    return target


def _write_maps(cases, members, combined, rules, row: str, tmp: Path, device) -> None:
    """Each case's label map of ``row`` into ``tmp`` (``<case>.nii.gz``); a file that cannot be
    read is a ConfigError naming it."""
    import nibabel as nib

    from harness.data.brats_labels import regions_to_labels
    from harness.data.folders import read_image

    for case in cases:
        chans, ref = [], None
        for p in case.images:
            try:
                a, _ = read_image(p)
            except RuntimeError as e:
                raise ConfigError(f"--data-root: {p}: {e}") from None
            chans.append(a)
            ref = ref or nib.load(str(p))
        zooms = tuple(float(z) for z in ref.header.get_zooms()[:3])[::-1]  # (z, y, x) as the arrays
        leaf = {k: _member_probs(models, spec, np.stack(chans), zooms, device) for k, (models, spec, _) in members.items()}

        def probs(name: str) -> torch.Tensor:
            return leaf[name] if name not in combined else rules[name]([probs(m) for m in combined[name].of], "sigmoid")

        labels = regions_to_labels(*(probs(row)[0].numpy() > 0.5))  # (z, y, x)
        img = nib.Nifti1Image(labels.transpose(2, 1, 0).astype(np.uint8), ref.affine, ref.header)
        img.set_data_dtype(np.uint8)  # the input's header says float; a label map is uint8
        nib.save(img, str(tmp / f"{case.id}.nii.gz"))
