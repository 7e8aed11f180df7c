import json
from pathlib import Path

import pytest
import yaml

from harness.cli import main

from helpers import BASE


def test_dry_run_lists_trials_and_compute_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    study = {**BASE, "variants": [{"name": "pw"}, {"name": "csc", "params": {
        "insert": "CSC", "groups": [[2, 2, 2], [1, 2, 2], [1, 2, 2], [1, 1, 1], [1, 1, 1]]}}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    assert main(["run", "s.yaml", "--dry-run", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    for key in ("pw#s0", "pw#s1", "csc#s0", "csc#s1", "4 trials", "Total training compute"):
        assert key in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_dry_run_sizes_the_rest_when_a_variant_diverges_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    study = {**BASE, "variants": [{"name": "pw"}, {"name": "diverge", "train": {"lr": 1e30}}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    assert main(["run", "s.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "diverges" in out and "diverge#s0: non-finite training loss" in out and "Total training compute" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_several_studies_are_all_validated_and_sized_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({**BASE, "name": "study_a", "variants": [{"name": "pw"}]}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({**BASE, "name": "study_b", "variants": [{"name": "csc", "params": {
        "insert": "CSC", "groups": [[2, 2, 2], [1, 2, 2], [1, 2, 2], [1, 1, 1], [1, 1, 1]]}}]}))
    assert main(["run", "a.yaml", "b.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "study_a @ smoke: 1 trials" in out and "study_b @ smoke: 1 trials" in out and "csc#s0" in out
    # A bad second study, the same study twice, a data root for several: exit 2, nothing written.
    bad = {**BASE, "name": "study_c", "variants": [{"name": "pw", "params": {"no_such_param": 1}}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(bad))
    for argv, message in ((["a.yaml", "c.yaml"], "no_such_param"),
                          (["a.yaml", "a.yaml"], "names study 'study_a' again"),
                          (["a.yaml", "b.yaml", "--data-root", str(tmp_path)], "--data-root: 2 studies given"),
                          (["a.yaml", "missing.yaml"], "study: file 'missing.yaml' does not exist")):
        assert main(["run", *argv]) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml", "b.yaml", "c.yaml"]


def test_cost_command_json_for_model_and_study(capsys):
    assert main(["cost", "gsp_unet", "--input", "1x4x16x32x32", "--json", "--no-latency"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["params"] == 220_915 and row["input"] == "1x4x16x32x32" and row["gmacs"] > 0
    assert main(["cost", "studies/gsp_shift_ratio_promise12.yaml", "--scale", "smoke", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["Cs_half", "Cs_all"] and rows[0]["latency_ns_per_voxel"] > 0
    assert rows[0]["gmacs"] == rows[1]["gmacs"]  # the shift ratio costs nothing
    # Training memory (one forward + backward on the study's batch) beside the inference peak.
    assert rows[0]["train_peak_mem_mb"] > rows[0]["peak_mem_mb"] > 0


def test_cost_command_prints_whole_numbers_when_piped_and_progress_on_stderr(capsys):
    # capsys's stdout is not a terminal: tab-separated, nothing cut to a width.
    assert main(["cost", "studies/gsp_shift_ratio_promise12.yaml", "--scale", "smoke", "--no-latency"]) == 0
    captured = capsys.readouterr()
    header, *rows = [ln.split("\t") for ln in captured.out.strip().splitlines()]
    assert header[:3] == ["name", "input", "params"] and [r[0] for r in rows] == ["Cs_half", "Cs_all"]
    assert all(r[2].isdigit() for r in rows) and "…" not in captured.out
    assert "costing Cs_half at 1x1x" in captured.err


def test_cost_of_a_study_named_without_its_file_defaults_to_quick(capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # studies/ of the checkout
    assert main(["cost", "gsp_shift_ratio_promise12", "--json", "--no-latency"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert [r["name"] for r in rows] == ["Cs_half", "Cs_all"] and rows[0]["input"] == "1x1x16x128x128"  # the quick patch
    assert "costed at the quick scale's input" in captured.err and "the paper's nets and inputs are" in captured.err
    assert main(["cost", "gsp_shift_ratio_promise1"]) == 2  # a typo: the model is unknown, the study close
    assert "Or a study; did you mean studies/gsp_shift_ratio_promise12.yaml?" in capsys.readouterr().err


def test_cost_command_bad_input(capsys):
    assert main(["cost", "gsp_unet", "--param", "insert=CSC", "--param", "groups=[[3,3,3],[1,1,1],[1,1,1],[1,1,1],[1,1,1]]",
                 "--input", "1x4x16x32x32"]) == 2
    assert "stage 1 groups (3, 3, 3) do not divide its feature size (16, 32, 32)" in capsys.readouterr().err
    assert main(["cost", "gsp_net"]) == 2
    assert "Did you mean 'gsp_unet'" in capsys.readouterr().err


def test_bench_writes_ratios(tmp_path):
    from harness.families.gsp_conv.group_shift import load_kernel as gs_kernel

    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "bench.json").read_text())
    gs = [r for r in res["group_shift"] if r["net"] == "promise12_ProSGv3"]
    # Every Group Shift input of the PROMISE12 net at its 16x128x128 crop, stage by stage.
    assert [(r["shape"], r["groups"]) for r in gs] == [
        ("1x16x16x128x128", [2, 2, 2]), ("1x32x8x64x64", [1, 4, 4]), ("1x64x4x32x32", [1, 4, 4]),
        ("1x128x2x16x16", [1, 8, 8]), ("1x256x1x8x8", [1, 8, 8])]
    assert all(r["ratio"] > 0 and r["method"] in ("box", "rows", "kernel") for r in res["group_shift"])
    # The op keeps the fastest realisation, and the kernel's time is in the table where it exists.
    assert all(r["kernel_ms"] > 0 for r in res["group_shift"]) or not gs_kernel()
    assert res["gs_share"][0]["gs_layers"] == 9 and res["gs_share"][0]["step_s"] > 0
    assert res["train_step"][0]["throughput_ratio"] > 0 and res["train_step"][0]["patch"] == [16, 64, 64]
    assert res["train_step"][0]["samples_ms_per_batch"] > 0 and res["train_step"][0]["samples_ms_per_batch_with_metadata"] > 0
    assert "Group Shift forward / x.clone()" in (tmp_path / "README.md").read_text()
    # Trilinear x2 at each decoder stage of the PROMISE12 quick net (8 to 128 channels), where the kernel builds.
    from harness.ops.upsample import load_kernel as up_kernel

    if up_kernel() is not None:
        assert [r["input"] for r in res["upsample"]] == ["1x128x1x8x8", "1x64x2x16x16", "1x32x4x32x32", "1x16x8x64x64"]
        assert all(r["forward_speedup"] > 0 and r["backward_speedup"] > 0 for r in res["upsample"])
        assert all(set(r["kept"].split(" / ")) <= {"torch", "kernel"} for r in res["upsample"])
        assert res["upsample_step"][0]["step_s"] > 0 and "Trilinear x2" in (tmp_path / "README.md").read_text()
    dsm = {r["model"]: r for r in res["dsm_wall_time"]}
    assert set(dsm) == {"unet2d", "residual_dsm", "unet3d", "distill_dsm"}
    assert dsm["unet3d"]["paper_ratio"] == pytest.approx(8.6517 / 7.9498) and dsm["unet2d"]["ns_per_voxel"] > 0
    ob = res["obelisk"][0]
    assert ob["grid"] == "12^3" and ob["obelisk_ms"] > 0 and ob["convs_ms"] > 0 and ob["ratio"] > 0
    assert "OBELISK (128 offsets + 1x1) / two strided" in (tmp_path / "README.md").read_text()
    br = res["brats"][0]
    assert br["cbam_step_s"] > 0 and br["plain_step_s"] > 0 and br["per_case_batch1_vs_batch2"] > 0
    assert 1.05 < br["cbam_macs_ratio"] < 1.07  # at width 8 the 7^3 gates add 5.9% (0.2% at width 48)
    assert "BraTS 2020 U-Net (width 8" in (tmp_path / "README.md").read_text()
    conv = res["conv3d"]
    assert [r["input"] for r in conv] == ["1x1x16x128x128", "1x8x16x128x128", "1x16x8x64x64"]
    assert all(r["torch_ms"] > 0 and r["harness_ms"] > 0 for r in conv)
    assert "3D convolution at batch 1" in (tmp_path / "README.md").read_text()
    cl = res["conv3d_channels_last"]
    assert [r["input"] for r in cl] == ["2x8x32x64x64", "2x4x32x64x64"]
    assert all(r["torch_ms"] > 0 and r["harness_ms"] > 0 for r in cl)
    assert "3D convolution at batch 2 with few channels" in (tmp_path / "README.md").read_text()


def test_list_names_every_registry_with_its_built_in_components(capsys, tmp_path, monkeypatch):
    from harness.cli import main

    assert main(["list"]) == 0
    out = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert {"models", "losses", "optimizers", "schedules", "augmentations", "targets", "inferers", "callbacks",
            "studies (studies)"} <= set(out)
    assert "tta" in out["inferers"] and "swa" in out["callbacks"] and "signed_distance" in out["targets"]
    assert "poly" in out["schedules"] and "adamw" in out["optimizers"]
    assert "brats20_table2.yaml" in out["studies (studies)"]
    # Elsewhere: the studies beside the package, never an empty line.
    monkeypatch.chdir(tmp_path)
    assert main(["list"]) == 0
    studies = [line for line in capsys.readouterr().out.splitlines() if line.startswith("studies")]
    assert len(studies) == 1 and "gsp_table1.yaml" in studies[0] and str(tmp_path) not in studies[0]


def test_cli_scales_are_the_schema_scales():
    from harness import cli, config

    assert cli.SCALES == config.SCALES


@pytest.mark.slow
def test_a_missing_study_or_space_is_reported_before_the_heavy_imports(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from harness.cli import main; rc = main([sys.argv[1], 'missing.yaml']); "
            "print(sorted(m for m in ('torch', 'monai', 'mlflow', 'ray') if m in sys.modules)); sys.exit(rc)")
    for cmd, kind in (("run", "study"), ("report", "study"), ("search", "space")):
        p = subprocess.run([sys.executable, "-c", code, cmd], cwd=tmp_path, capture_output=True, text=True)
        assert p.returncode == 2 and f"error: {kind}: file 'missing.yaml' does not exist" in p.stderr
        assert p.stdout.strip() == "[]", p.stdout  # nothing heavy was imported
    assert sorted(x.name for x in tmp_path.iterdir()) == []


def test_a_study_named_without_its_folder_or_mistyped_gets_the_file_it_meant(capsys):
    # As `harness list` names them: the closest file under studies/ (search_spaces/), exit 2.
    for argv, meant in ((["run", "gsp_table1"], "studies/gsp_table1.yaml"),
                        (["report", "gsp_tabel2_promise12.yaml"], "studies/gsp_table2_promise12.yaml"),
                        (["search", "gsp"], "search_spaces/gsp.yaml")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.strip().endswith(f"does not exist; did you mean {meant}?"), err
    assert main(["run", "zzz.yaml"]) == 2 and "did you mean" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_study_that_breaks_the_schema_is_reported_before_the_heavy_imports(tmp_path):
    import subprocess
    import sys

    study = yaml.safe_load(open("studies/gsp_table1.yaml"))
    study["train"]["lr"] = float("inf")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    space = {"name": "x", "study": "s.yaml", "scale": "smoke", "knobs": {}, "objectives": [], "bogus": 1}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    code = ("import sys; from harness.cli import main; rc = main(sys.argv[1:]); "
            "print(sorted(m for m in ('torch', 'monai', 'mlflow', 'ray') if m in sys.modules)); sys.exit(rc)")
    for args, message in ((["run", "s.yaml"], "train.lr"), (["report", "s.yaml"], "train.lr"),
                          (["cost", "s.yaml"], "train.lr"), (["search", "space.yaml"], "bogus")):
        p = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True)
        assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert p.stdout.strip() == "[]", p.stdout  # nothing heavy was imported
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.yaml", "space.yaml"]


def test_bench_cpu_layer_times_each_configuration_both_ways_and_restores_the_switch(monkeypatch):
    import importlib.util
    import os

    path = Path(__file__).parents[1] / "benchmarks" / "bench.py"
    spec = importlib.util.spec_from_file_location("bench_under_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setenv("HARNESS_CPU_KERNELS", "1")
    seen = []
    real = bench.train_step
    monkeypatch.setattr(bench, "train_step", lambda t, b: seen.append(os.environ["HARNESS_CPU_KERNELS"]) or real(t, b))
    res = bench.bench_cpu_layer([str(Path(__file__).parents[1] / "studies" / "gsp_table3_brats18.yaml")], "smoke", 1)
    (row,) = res["studies"]
    assert row["study"] == "gsp_table3_brats18" and row["trials"] == row["configurations"] == 1  # smoke: one seed
    assert row["train_min_on"] > 0 and row["train_min_off"] > 0 and res["speedup"] == pytest.approx(
        row["train_min_off"] / row["train_min_on"])
    assert seen == ["1", "0"] * 2  # a warm-up each way, then one alternated round
    assert os.environ["HARNESS_CPU_KERNELS"] == "1"  # the switch as it was


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA device is present")
def test_bench_on_cuda_without_a_gpu_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    assert main(["bench", "--device", "cuda", "--out", str(tmp_path / "bench")]) == 2
    assert "--device: cuda, but no CUDA device is available here" in capsys.readouterr().err
    assert not (tmp_path / "bench").exists()


def test_cost_and_list_see_a_plugin_family_given_by_plugin(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "plugins"))
    assert main(["cost", "toy_two_heads", "--plugin", "toy_family", "--input", "1x1x8x16x16", "--json",
                 "--no-latency", "--out-channels", "1"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["name"] == "toy_two_heads" and row["params"] > 0 and row["gmacs"] > 0
    assert main(["list", "models", "--plugin", "toy_family"]) == 0
    assert "toy_two_heads" in capsys.readouterr().out
    assert main(["list", "models", "--plugin", "no_such_plugin_module"]) == 2
    assert "plugins: cannot import 'no_such_plugin_module'" in capsys.readouterr().err


@pytest.mark.slow
def test_an_unwritable_cache_or_an_overlong_name_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").write_text("a file where the cache folder must be")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(BASE))
    assert main(["run", "s.yaml", "-v", "0"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Not a directory" in err and "HARNESS_CACHE" in err
    assert not (tmp_path / "mlflow.db").exists()
    (tmp_path / "long.yaml").write_text(yaml.safe_dump({**BASE, "name": "x" * 101}))
    assert main(["run", "long.yaml"]) == 2
    assert "name: String should have at most 100 characters" in capsys.readouterr().err
