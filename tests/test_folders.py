"""Real-data folders (MSD, BraTS, PROMISE12) built on the fly: check, split, preprocess, train, evaluate."""
import json

import nibabel as nib
import numpy as np
import torch
import pytest
import SimpleITK as sitk

from harness.cli import main
from harness.config import CostCfg, DataCfg, ModelCfg, ResourcesCfg, TrainCfg, TrialSpec
from harness.data import build_task
from harness.data.folders import check_folder, detect_format
from harness.train import run_trial
from helpers import write_nii, volumes, make_msd




def make_brats(root, n=5, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        d = root / f"BraTS20_Training_{i:03d}"
        d.mkdir(parents=True)
        img, lab = volumes(rng, 4, (2, 1, 4))
        for c, m in enumerate(("t1", "t1ce", "t2", "flair")):
            write_nii(d / f"{d.name}_{m}.nii.gz", img[..., c])
        write_nii(d / f"{d.name}_seg.nii.gz", lab)
    return root


def make_promise12(root, n=5, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for i in range(n):
        img, lab = volumes(rng, 1, (1,))
        for name, a in ((f"Case{i:02d}.mhd", img[..., 0]), (f"Case{i:02d}_segmentation.mhd", lab)):
            im = sitk.GetImageFromArray(np.ascontiguousarray(a.transpose(2, 1, 0)))  # numpy (z, y, x)
            im.SetSpacing((0.6, 0.6, 2.0))
            sitk.WriteImage(im, str(root / name))
    return root


MAKERS = {"msd": make_msd, "brats": make_brats, "promise12": make_promise12}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # split files land in ./splits


def spec(dataset, root, **data):
    return TrialSpec(
        study="t", scale="smoke", key="k", variant="v", tags={}, seed=0,
        data=DataCfg(dataset=dataset, params={"root": str(root), **data}),
        model=ModelCfg(name="unet2d", params={"widths": [4, 4, 8, 8, 8]}),
        train=TrainCfg(patch=[8, 16, 16], epochs=1, steps_per_epoch=1, batch_size=1, optimizer="adam", lr=1e-3),
        cost=CostCfg(latency=False), resources=ResourcesCfg(cpu=1))


@pytest.mark.parametrize("fmt,regions,channels", [("msd", ("pz", "tz"), 2), ("brats", ("WT", "TC", "ET"), 4),
                                                  ("promise12", ("prostate",), 1)])
def test_each_format_loads_trains_and_evaluates_whole_volumes(tmp_path, fmt, regions, channels):
    root = MAKERS[fmt](tmp_path / fmt, **({"channels": 2} if fmt == "msd" else {}))
    assert detect_format(root) == fmt and check_folder(root, fmt) == []
    task = build_task(fmt, root=str(root))
    assert (task.in_channels, task.regions) == (channels, regions)
    case = task.train[0]
    # Stored (x, y, z) = (24, 20, 12) with a 2-voxel zero border in x, y and 1 in z: cropped, then (C, z, y, x).
    assert case.image.shape == (channels, 10, 16, 20) and case.label.shape == (len(regions), 10, 16, 20)
    fg = case.image[0] != 0
    assert abs(case.image[0][fg].mean()) < 1e-3 and abs(case.image[0][fg].std() - 1) < 1e-2  # z-score on foreground
    if fmt == "brats":  # labels 1, 2, 4 -> WT (1, 2, 4) contains TC (1, 4) contains ET (4)
        wt, tc, et = case.label.astype(bool)
        assert et.any() and (et <= tc).all() and (tc <= wt).all() and (wt & ~tc).any()
    out = run_trial(spec(fmt, root))
    assert len(out["per_case"]) == 1 and out["per_case"][0]["case"] in {c.id for c in task.val}
    for r in regions:
        assert {f"dice_{r}", f"hd95_{r}", f"sens_{r}", f"spec_{r}"} <= set(out["per_case"][0])


def test_resampling_to_a_target_spacing(tmp_path):
    root = make_msd(tmp_path / "msd")
    case = build_task("msd", root=str(root), spacing=[1.0, 2.0, 2.0]).train[0]  # (D, H, W) mm; stored 2, 1, 1
    # MONAI keeps the corner voxels' centres: 10 slices 2 mm apart span 18 mm -> 19 slices at 1 mm.
    assert case.image.shape == (1, 19, 8, 10) and case.label.shape == (2, 19, 8, 10)
    assert set(np.unique(case.label)) == {0, 1}


def test_ct_window_clips_and_scales(tmp_path):
    root = make_msd(tmp_path / "msd")
    meta = json.loads((root / "dataset.json").read_text())
    meta["modality"] = {"0": "CT"}
    (root / "dataset.json").write_text(json.dumps(meta))
    case = build_task("msd", root=str(root), crop_foreground=False, ct_window=[0, 150]).train[0]
    assert case.image.min() == 0.0 and case.image.max() == 1.0  # background 0 HU -> 0; tissue > 150 clipped to 1


def test_percentile_normalisation_clips_each_channel_to_its_foreground_percentiles(tmp_path):
    root = make_brats(tmp_path / "brats")
    case = build_task("brats", root=str(root), crop_foreground=False, normalize="percentile").train[0]
    img = case.image
    for ch in img:
        fg = ch[ch != 0]  # the voxels at or below the 1st percentile become 0 too
        assert fg.min() >= 0 and fg.max() == pytest.approx(1.0, abs=1e-6)
        assert np.isclose(fg, 1.0, atol=1e-6).mean() == pytest.approx(0.01, abs=0.005)  # the top 1% clipped to 1
    assert (img[:, 0, 0, 0] == 0).all()  # background stays 0


def test_folds_are_fixed_in_a_split_file_and_reused(tmp_path):
    root = make_msd(tmp_path / "msd", n=10)
    vals = [set(c.id for c in build_task("msd", root=str(root), fold=k).val) for k in range(5)]
    assert all(len(v) == 2 for v in vals) and set().union(*vals) == {f"prostate_{i:02d}" for i in range(10)}
    (path,) = (tmp_path / "splits").glob("*.json")
    saved = json.loads(path.read_text())
    assert saved["seed"] == 0 and len(saved["splits"]) == 5
    saved["splits"][0] = {"train": [f"prostate_{i:02d}" for i in range(1, 10)], "val": ["prostate_00"]}
    path.write_text(json.dumps(saved))  # a later run reuses the file as it stands
    assert [c.id for c in build_task("msd", root=str(root), fold=0).val] == ["prostate_00"]
    nnunet = tmp_path / "splits_final.json"  # a user's own split file, nnU-Net's plain list
    nnunet.write_text(json.dumps([{"train": ["prostate_01"], "val": ["prostate_02"]}]))
    task = build_task("msd", root=str(root), split_file=str(nnunet))
    assert [c.id for c in task.train] == ["prostate_01"] and [c.id for c in task.val] == ["prostate_02"]
    ratio = build_task("msd", root=str(root), val_fraction=0.2, folds=None)
    assert len(ratio.val) == 2 and len(ratio.train) == 8


def _break(kind, root):
    f = root / "labelsTr" / "prostate_01.nii.gz"
    if kind == "missing":
        f.unlink()
    elif kind == "shape":
        write_nii(f, np.zeros((24, 20, 10), np.uint8))
    elif kind == "affine":
        write_nii(f, np.asarray(nib.load(str(f)).dataobj), spacing=(1.0, 1.0, 3.0))
    elif kind == "labels":
        lab = np.asarray(nib.load(str(f)).dataobj).copy()
        lab[0, 0, 0] = 7
        write_nii(f, lab)
    elif kind == "truncated":
        data = (root / "imagesTr" / "prostate_01.nii.gz").read_bytes()
        (root / "imagesTr" / "prostate_01.nii.gz").write_bytes(data[: len(data) // 2])
    elif kind == "channels":
        img = root / "imagesTr" / "prostate_01.nii.gz"
        write_nii(img, np.stack([np.asarray(nib.load(str(img)).dataobj)] * 2, -1))
    elif kind == "nan":
        img = root / "imagesTr" / "prostate_01.nii.gz"
        a = np.asarray(nib.load(str(img)).dataobj).copy()
        a[5, 5, 2:10] = np.nan
        write_nii(img, a)
    elif kind in ("no list", "entry"):
        meta = json.loads((root / "dataset.json").read_text())
        if kind == "no list":
            del meta["training"]
        else:
            meta["training"][0] = {"image": meta["training"][0]["image"]}
        (root / "dataset.json").write_text(json.dumps(meta))


BROKEN = [
    ("missing", "prostate_01: " ),
    ("shape", "prostate_01: prostate_01.nii.gz has shape (24, 20, 12), its label prostate_01.nii.gz (24, 20, 10)"),
    ("affine", "prostate_01: prostate_01.nii.gz and its label prostate_01.nii.gz disagree on spacing"),
    ("labels", "prostate_01: prostate_01.nii.gz has label values [7] outside the declared [0, 1, 2]"),
    ("truncated", "prostate_01: prostate_01.nii.gz: unreadable"),
    ("channels", "prostate_01: image has 2 channel(s), the data set declares 1"),
    ("nan", "prostate_01: prostate_01.nii.gz has 8 non-finite voxel(s) (NaN or Inf); fix the file, or set "
            "data.params.nonfinite: zero"),
    ("no list", "dataset.json: unreadable (ValueError: Data list training not specified"),
    ("entry", "dataset.json: training[0]: needs 'image' and 'label'"),
]


@pytest.mark.parametrize("kind,line", BROKEN, ids=[k for k, _ in BROKEN])
def test_data_check_names_each_problem_and_exits_2(tmp_path, capsys, kind, line):
    root = make_msd(tmp_path / "msd")
    _break(kind, root)
    assert main(["data", "check", str(root)]) == 2
    out = capsys.readouterr()
    assert line in out.out, out.out
    assert len(out.out.strip().splitlines()) == 1 and "1 problem(s)" in out.err


def test_data_check_other_formats_and_a_clean_folder(tmp_path, capsys):
    brats = make_brats(tmp_path / "brats", n=2)
    next(brats.glob("*/*_flair.nii.gz")).unlink()
    assert main(["data", "check", str(brats)]) == 2
    assert "BraTS20_Training_000: no *_flair.nii(.gz) file(s)" in capsys.readouterr().out
    promise = make_promise12(tmp_path / "promise", n=2)
    (promise / "Case01_segmentation.mhd").unlink()
    assert main(["data", "check", str(promise), "--format", "promise12"]) == 2
    assert "Case01: Case01_segmentation.mhd: missing" in capsys.readouterr().out
    raw = promise / "Case00.raw"  # MetaImage whose voxel file was cut short
    raw.write_bytes(raw.read_bytes()[:100])
    assert main(["data", "check", str(promise)]) == 2
    assert "Case00: Case00.mhd: unreadable (RuntimeError: File cannot be read" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["data", "check", str(tmp_path / "empty")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err
    assert main(["data", "check", str(make_msd(tmp_path / "ok"))]) == 0
    assert "ok (msd): 5 cases, channels T2, regions pz, tz" in capsys.readouterr().out


def test_nonfinite_voxels_set_to_zero_only_when_the_study_asks(tmp_path):
    from harness.data.folders import DataFolderError, folder_task

    root = make_msd(tmp_path / "msd")
    _break("nan", root)
    with pytest.raises(DataFolderError, match="8 non-finite voxel"):
        folder_task("msd", str(root), folds=5)
    with pytest.warns(UserWarning, match="1 file\\(s\\) with NaN or Inf voxels set to 0"):
        task = folder_task("msd", str(root), folds=5, nonfinite="zero")
    assert all(np.isfinite(c.image).all() for c in task.train + task.val)


def test_run_checks_the_folder_first_and_writes_nothing(tmp_path, capsys):
    root = make_msd(tmp_path / "msd")
    _break("labels", root)
    study = {"name": "real", "paper": "harness", "title": "real", "data": {"dataset": "msd", "root": str(root)},
             "model": {"name": "unet2d"}, "variants": [{"name": "a"}], "train": {"patch": [8, 16, 16]},
             "scales": {"smoke": {}, "quick": {}, "paper": {}}, "expected": {"a": {"mean_dice": 1}}}
    (tmp_path / "s.yaml").write_text(json.dumps(study))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["run", "s.yaml"]) == 2
    assert "label values [7] outside the declared [0, 1, 2]" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no mlflow.db, splits, ray_results or reports
    _break("missing", make_msd(tmp_path / "other"))
    assert main(["run", "s.yaml", "--data-root", str(tmp_path / "other"), "--dry-run"]) == 2
    assert "prostate_01: " in capsys.readouterr().err


@pytest.mark.slow
def test_study_on_a_real_data_folder_end_to_end(tmp_path, monkeypatch):
    # `harness run` through Ray and MLflow on a Decathlon folder named with --data-root.
    from mlflow.tracking import MlflowClient

    root = make_msd(tmp_path / "Task05_Prostate", channels=2)
    study = {"name": "real_e2e", "paper": "harness", "title": "real", "data": {"dataset": "msd", "root": "/nowhere"},
             "model": {"name": "residual_dsm", "params": {"widths": [4, 4, 8, 8, 8]}}, "variants": [{"name": "a"}],
             "train": {"patch": [8, 16, 16], "epochs": 1, "steps_per_epoch": 2, "batch_size": 1},
             "cost": {"latency_runs": 1}, "scales": {"smoke": {}, "quick": {}, "paper": {}}, "expected": {"a": {"mean_dice": 1}}}
    (tmp_path / "s.yaml").write_text(json.dumps(study))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "s.yaml", "--data-root", str(root), "--folds", "2"]) == 0
    (split,) = (tmp_path / "splits").glob("msd-Task05_Prostate-2fold-seed0.json")  # beside mlflow.db
    splits = json.loads(split.read_text())["splits"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("harness/real_e2e")
    runs = sorted(client.search_runs([exp.experiment_id], "tags.harness_role = 'trial'"),
                  key=lambda r: r.data.tags["fold"])
    assert [(r.data.tags["trial_key"], r.info.status) for r in runs] == [("a#f0s0", "FINISHED"), ("a#f1s0", "FINISHED")]
    for k, run in enumerate(runs):  # each fold evaluated on its own validation cases, per case in CSV
        assert {"dice_pz", "sens_tz", "spec_pz"} <= set(run.data.metrics)
        assert run.data.params["data.params.root"] == str(root)
        csv = open(client.download_artifacts(run.info.run_id, "per_case.csv", str(tmp_path / f"f{k}"))).read()
        assert csv.splitlines()[0].startswith("case,")
        assert sorted(ln.split(",")[0] for ln in csv.splitlines()[1:]) == splits[k]["val"]
    # The report needs the same --data-root: the trials' data is part of their configuration.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["report", "s.yaml", "--data-root", str(root), "--tracking-uri", uri, "--format", "md"]) == 0
    assert "2 finished trials" in (tmp_path / "reports" / "local" / "real_e2e" / "README.md").read_text()
    assert main(["report", "s.yaml", "--tracking-uri", uri, "--format", "md"]) == 2  # /nowhere: not a folder


def test_data_root_points_a_paper_table_at_real_folders(tmp_path, capsys):
    from pathlib import Path

    from harness.config import load_study, resolve, with_data_roots

    studies = Path(__file__).parents[1] / "studies"
    root = make_msd(tmp_path / "Task05_Prostate", channels=2)
    study = load_study(studies / "dsm_table3_msd.yaml")
    table3 = with_data_roots(study, "smoke", [f"prostate={root}"])
    assert study.tasks["prostate"]["smoke"].dataset == "synthetic_depth"  # the study as loaded is left alone
    specs = {s.variant: s for s in resolve(table3, "smoke")}
    assert specs["prostate-VFN"].data.dataset == "msd" and specs["prostate-VFN"].data.params == {"root": str(root)}
    assert specs["heart-VFN"].data.dataset == "synthetic_depth"  # other tasks untouched
    brats = make_brats(tmp_path / "brats", n=5)
    table1 = with_data_roots(load_study(studies / "dsm_table1_brats20.yaml"), "smoke", [str(brats)])
    spec = resolve(table1, "smoke")[0]
    assert spec.data.dataset == "brats" and spec.data.params == {"root": str(brats)}
    # A study's data.folder: the paper's preprocessing of the real folder (ConResNet Table II's CT window).
    pancreas = with_data_roots(load_study(studies / "conres_table2_pancreas.yaml"), "paper", [str(root)])
    spec = resolve(pancreas, "paper", folds=4)[0]
    assert spec.data.dataset == "msd"
    assert spec.data.params == {"root": str(root), "ct_window": [-100, 240], "folds": 4, "fold": 0}
    assert main(["run", str(studies / "dsm_table3_msd.yaml"), "--data-root", str(root), "--dry-run"]) == 2
    assert "name one: --data-root TASK=PATH" in capsys.readouterr().err
    assert main(["run", str(studies / "dsm_table3_msd.yaml"), "--data-root", f"prostat={root}", "--dry-run"]) == 2
    assert "Did you mean 'prostate'" in capsys.readouterr().err


def test_preprocessing_in_worker_processes_matches_one_process(tmp_path, monkeypatch):
    root = make_brats(tmp_path / "brats", n=5)
    one = build_task("brats", root=str(root), workers=1).train
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache2"))  # a second, cold cache
    two = build_task("brats", root=str(root), workers=2).train
    assert [c.id for c in one] == [c.id for c in two]
    for a, b in zip(one, two):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)


def test_brats_folder_in_multi_class_mode_keeps_its_label_encoding_through_data_root(tmp_path):
    from pathlib import Path

    from harness.config import load_study, resolve, with_data_roots

    brats = make_brats(tmp_path / "brats", n=5)
    regions, classes = build_task("brats", root=str(brats)), build_task("brats", root=str(brats), labels="classes")
    assert classes.regions == ("ED", "NCR", "ET") and classes.exclusive and not regions.exclusive
    for a, b in zip(regions.train, classes.train):
        assert b.label.sum(0).max() <= 1  # exclusive classes
        assert np.array_equal(classes.merge(torch.from_numpy(b.label)[None].float())[0].numpy(), a.label)
    with pytest.raises(ValueError, match="data.labels: classes splits BraTS"):
        build_task("msd", root=str(make_msd(tmp_path / "Task05_Prostate", channels=2)), labels="classes")
    table5 = with_data_roots(load_study(Path(__file__).parents[1] / "studies" / "conres_table5_modes.yaml"), "smoke",
                             [f"binary={brats}", f"multi={brats}"])
    specs = {s.variant: s for s in resolve(table5, "smoke")}
    assert specs["conresnet"].data.params == {"root": str(brats)}
    assert specs["conresnet_multi"].data.params == {"root": str(brats), "labels": "classes"}  # the study's choice kept


def test_a_config_error_beside_a_real_folder_writes_no_split_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root = make_msd(tmp_path / "msd")
    study = {"name": "real", "paper": "harness", "title": "real", "data": {"dataset": "msd", "root": str(root)},
             "model": {"name": "unet2d", "params": {"widths": "oops"}}, "variants": [{"name": "a"}],
             "train": {"patch": [8, 16, 16]}, "scales": {"smoke": {}, "quick": {}, "paper": {}},
             "expected": {"a": {"mean_dice": 1}}}
    (tmp_path / "s.yaml").write_text(json.dumps(study))
    assert main(["run", "s.yaml", "--dry-run"]) == 2
    assert not (tmp_path / "splits").exists()  # the folder was checked and split in memory only
    task = build_task("msd", root=str(root))
    assert not (tmp_path / "splits").exists()
    task.train  # the first load fixes the split on disk
    assert len(list((tmp_path / "splits").glob("*.json"))) == 1
