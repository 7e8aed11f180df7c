"""harness submit: a challenge-server study's row written as submission-format label maps of
unlabelled cases, on each case's own grid; bad input refused before anything is written."""
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).parents[1]


def make_validation(root: Path, n: int = 2) -> Path:
    """BraTS validation case folders: four modalities, no segmentation, a zero border, 1x1x1 mm
    for one case and an anisotropic, shifted grid for the other."""
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"BraTS20_Validation_{i:03d}"
        d.mkdir(parents=True)
        shape = (30 + 2 * i, 28, 18)
        affine = np.diag([1.0, 1.0 + 0.2 * i, 1.0 + i, 1.0])
        affine[:3, 3] = [-5.0 * i, 3.0, 7.0]
        for m in ("t1", "t1ce", "t2", "flair"):
            a = np.zeros(shape, np.float32)
            a[3:-3, 2:-2, 1:-1] = rng.normal(1.0, 0.3, (shape[0] - 6, shape[1] - 4, shape[2] - 2))
            nib.save(nib.Nifti1Image(a, affine), str(d / f"{d.name}_{m}.nii.gz"))
    return root


def harness(cwd, *args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("study", ["brats20_table4", "conres_table1_brats18"])
def test_a_challenge_study_writes_one_brats_label_map_per_case_on_its_grid(tmp_path, monkeypatch, capsys, study):
    from harness.cli import main

    val = make_validation(tmp_path / "val")
    path = str(ROOT / "studies" / f"{study}.yaml")
    monkeypatch.chdir(tmp_path)
    assert main(["run", path, "--scale", "smoke", "--seeds", "1", "-v", "0"]) == 0

    def submit(out):  # the command's own exit code and lines, without a start-up each
        capsys.readouterr()
        code = main(["submit", path, "--scale", "smoke", "--data-root", str(val), "--out", out])
        return code, capsys.readouterr().err

    code, err = submit("sub")
    assert code == 0, err
    for case in sorted(val.iterdir()):
        ref = nib.load(str(next(case.glob("*_t1.nii.gz"))))
        out = nib.load(str(tmp_path / "sub" / f"{case.name}.nii.gz"))
        labels = np.asarray(out.dataobj)
        assert labels.shape == ref.shape and np.allclose(out.affine, ref.affine)
        assert set(np.unique(labels).tolist()) <= {0, 1, 2, 4} and labels.dtype == np.uint8
        assert not labels[:3].any() and not labels[-3:].any(), "a label outside the cropped brain box"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == sorted(
        [f"{c.name}.nii.gz" for c in val.iterdir()] + ["submission.json"])
    # The folder is written whole or not at all, and never over an earlier submission.
    code, err = submit("sub")
    assert code == 2 and "exists and is not empty" in err and "Traceback" not in err
    if study != "brats20_table4":
        return
    # Only what the command made is ever removed: a user's "<out>.partial" folder stays.
    (tmp_path / "keep.partial").mkdir()
    (tmp_path / "keep.partial" / "data.txt").write_text("precious")
    code, err = submit("keep")
    assert code == 0, err
    assert (tmp_path / "keep.partial" / "data.txt").read_text() == "precious" and (tmp_path / "keep" / "submission.json").exists()
    # --out naming a file; a link to an empty folder (written through it); a truncated image.
    (tmp_path / "afile").write_text("x")
    code, err = submit("afile")
    assert code == 2 and "--out: afile is a file" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    code, err = submit("link")
    assert code == 0, err
    assert (tmp_path / "empty" / "submission.json").exists() and (tmp_path / "link").is_symlink()
    image = next(val.glob("*/*_flair.nii.gz"))
    image.write_bytes(image.read_bytes()[:-200])  # truncated: its header reads, its voxels do not
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = submit("sub2")
    assert code == 2 and "Traceback" not in err and image.name in err, err
    assert len(err.strip().splitlines()) == 1 and sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.slow
def test_bad_submission_input_is_refused_with_the_field(tmp_path, monkeypatch, capsys):
    from harness.cli import main

    val = make_validation(tmp_path / "val", n=1)
    next(val.glob("*/*_t2.nii.gz")).unlink()
    path = str(ROOT / "studies" / "brats20_table4.yaml")
    r = harness(tmp_path, "submit", path, "--scale", "smoke", "--data-root", str(val), "--out", "sub")  # as a user runs it
    assert r.returncode == 2 and "--data-root" in r.stderr and "no *_t2.nii(.gz)" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    monkeypatch.chdir(tmp_path)
    assert main(["submit", path, "--scale", "smoke", "--data-root", str(val), "--out", "sub", "--row", "mergd"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean" in err and "merged" in err, err
    assert main(["submit", str(ROOT / "studies" / "brats20_table3.yaml"), "--scale", "smoke",
                 "--data-root", str(val), "--out", "sub"]) == 2
    err = capsys.readouterr().err
    assert "no 'submission' section" in err, err
    assert not (tmp_path / "sub").exists() and not (tmp_path / "mlflow.db").exists()
