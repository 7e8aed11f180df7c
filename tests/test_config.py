"""Bad input: one clear message naming the field, exit code 2, nothing written."""
import contextlib
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.config import ConfigError, StudyCfg, load_study, resolve, variants
from helpers import BASE, STUDIES




def write(tmp_path, study, name="s.yaml"):
    p = tmp_path / name
    p.write_text(study if isinstance(study, str) else yaml.safe_dump(study))
    return p


def with_(path, value, base=BASE):
    out = yaml.safe_load(yaml.safe_dump(base))
    node = out
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.stem)
@pytest.mark.parametrize("scale", ["smoke", "quick", "paper"])
def test_shipped_studies_validate(study, scale):
    s = load_study(study)
    specs = resolve(s, scale)
    assert specs and len({t.key for t in specs}) == len(specs)
    assert s.expected or s.landscape or s.paper == "harness", "every paper study carries the paper's numbers"


@pytest.mark.parametrize("study", [p for p in STUDIES if p.stem.startswith(("gsp_", "dsm_"))], ids=lambda p: p.stem)
@pytest.mark.parametrize("scale", ["smoke", "quick", "paper"])
def test_gsp_and_dsm_trials_train_without_augmentation_as_their_papers_do(study, scale):
    # GSP-Conv Sec. 3 states random cropping only, Distill DSM Sec. 4.2 names no augmentation:
    # no trial may inherit the harness's default flips.
    for spec in resolve(load_study(study), scale):
        assert spec.train.augment == [], (spec.key, spec.train.augment)


def test_grid_expands_to_product_with_tags():
    s = load_study(Path(__file__).parents[1] / "studies" / "gsp_table2_promise12.yaml")
    vs = variants(s)
    assert len(vs) == 16 and vs[0].name == "ProSGv1-CSC" and vs[0].tags == {"sg": "ProSGv1", "ip": "CSC"}
    assert vs[0].params["groups"][2] == [2, 4, 4] and vs[0].params["insert"] == "CSC"


CASES = [
    ("name: [unclosed", "malformed YAML"),
    (with_(["bogus"], 1), "bogus: unknown key. Allowed: name, paper, title,"),
    (with_(["train", "lr_rate"], 1), "train.lr_rate: unknown key. Allowed: output, loss, deep_supervision, optimizer, lr,"),
    (with_(["clams"], [{"text": "x" * 200}]), "clams: unknown key. Did you mean 'claims'? Allowed: name, paper"),
    (with_(["model", "name"], "gsp_unte"), "model.name: unknown model 'gsp_unte'. Did you mean 'gsp_unet'"),
    (with_(["data", "dataset"], "synthetic_organs"), "data.dataset: unknown dataset 'synthetic_organs'. Did you mean"),
    (with_(["train", "loss"], "dicece"), "train.loss.name: unknown loss 'dicece'. Did you mean 'dice_ce'"),
    (with_(["model", "params", "shift_ratio"], 1.5), "shift_ratio: 1.5 is outside (0, 1]"),
    (with_(["model", "params", "shift_ratio"], 0), "shift_ratio: 0 is outside (0, 1]"),
    (with_(["model", "params", "insrt"], "CSC"), "unknown parameter of model 'gsp_unet' 'insrt'. Did you mean 'insert'"),
    (with_(["model", "params", "insert"], "CSCs"), "model.insert: unknown insert position 'CSCs'"),
    (with_(["model", "params"], {"insert": "CSC", "groups": [[2, 2, 2]] * 4 + [[2, 3, 2]]}),
     "stage 5 groups (2, 3, 2) do not divide its feature size (1, 2, 2)"),
    (with_(["train", "patch"], [16, 32]), "train.patch: Value error, must be three positive sizes"),
    (with_(["train", "lr"], -1), "train.lr: Input should be greater than 0"),
    (with_(["scales"], {"smoke": {}}), "missing ['paper', 'quick']"),
    (with_(["expected"], {"pww": {"mean_dice": 1}}), "expected: unknown variant 'pww'. Did you mean 'pw'"),
    (with_(["model", "params", "in_channels"], 3), "in_channels is set by the data set"),
    (with_(["data", "params", "n_case"], 3), "data.params: unknown parameter of data set 'synthetic_organ' 'n_case'"),
    (with_(["data", "params", "n_cases"], 1), "data: data.n_cases: 1 cases leave nothing to train on"),
    (with_(["layout"], {"rows": "variant", "colums": ["mean_dice"]}), "layout.colums: unknown key. Did you mean 'columns', 'values'?"),
    (with_(["layout"], {"rows": "varient"}), "layout.rows: unknown axis 'varient'. Did you mean 'variant'"),
    (with_(["layout"], {"columns": "variant", "best": "max_per_colum"}), "layout.best"),
    (with_(["layout"], {"baseline": "pww"}), "layout.baseline: unknown variant 'pww'. Did you mean 'pw'"),
    (with_(["layout"], {"columns": ["mean_dice"], "values": {"Dice": "mean_dice"}}), "values puts metrics in rows"),
    (with_(["train", "loss"], {"name": "dice", "params": {"smoth": 1}}),
     "train.loss.params: unknown parameter of loss 'dice' 'smoth'. Did you mean 'smooth'"),
    (with_(["train", "poly_power"], 0.9), "train.poly_power is now a component parameter: write schedule"),
    (with_(["plugins"], ["no_such_family"]), "plugins: cannot import 'no_such_family'"),
    (with_(["plugins"], ["../../etc/passwd"]), "plugins: '../../etc/passwd' is not a module name"),
    (with_(["plugins"], [""]), "plugins: '' is not a module name"),
    (with_(["plugins"], ["os"]), "plugins: 'os' registered no component"),
    (with_(["train", "lr"], float("inf")), "train.lr: inf is not a finite number"),
    (with_(["data", "params", "shape"], [16, float("nan"), 32]), "data.params.shape.1: nan is not a finite number"),
    (with_(["train", "epochs"], True), "train.epochs: must be a whole number, not a boolean (got True)"),
    (with_(["train", "lr"], "1e-2"), "train.lr: must be a number, not a string (write it without quotes) (got '1e-2')"),
    (with_(["train", "amp"], "yes"), "train.amp: must be true or false (got 'yes')"),
    (with_(["seeds"], "3"), "seeds: must be a whole number, not a string"),
    (with_(["data", "params", "shape"], [0, 32, 32]), "data.shape: must be three positive whole sizes (D, H, W), got [0,"),
    (with_(["data", "params", "n_cases"], "4"),
     "data.params.n_cases: must be a whole number, not a string (write it without quotes) (got '4')"),
    (with_(["scales", "smoke"], {"model": {"widths": ["a", 16, 32, 64, 128]}}),
     "model.params.widths.0: Input should be a valid integer, unable to parse string as an integer (got 'a'"),
    (with_(["train", "loss"], {"name": "dice", "params": {"smooth": "1"}}),
     "train.loss.params.smooth: must be a number, not a string (write it without quotes) (got '1')"),
    (with_(["cost"], {"input": [1, 16, 32, 32]}), "cost.input: Value error, must be five positive sizes (N, C, D, H, W)"),
    (with_(["grid"], {"net": {}}), "grid.net: an axis needs at least one option"),
    (yaml.safe_dump(BASE) + "name: again\n", "duplicate key 'name' (first at line"),
    # A YAML alias bomb (under 1 KB, 9^9 values expanded) is refused before it is built.
    (yaml.safe_dump(BASE) + "bomb0: &b0 [1, 2, 3, 4, 5, 6, 7, 8, 9]\n" + "".join(
        f"bomb{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 9)}]\n" for i in range(1, 10)),
     "malformed YAML: its aliases expand to more than 100,000 values"),
    (with_(["train", "augment"], "yes"), "train.augment: Value error, must be true, false or a list of augmentations"),
    (with_(["train", "augment"], [{"nam": "flip"}]), "train.augment.0.nam: unknown key. Did you mean 'name'? Allowed: name, params. (got 'flip')"),
    (with_(["scales", "smoke"], {"train": {"epochs": 0}}), "train.epochs: Input should be greater than or equal to 1"),
    (with_(["expected"], {"pw": {"params": {"valu": 3}}}), "expected.pw.params.valu: unknown key. Did you mean 'value'?"),
    (with_(["train", "patch"], [16, 64, 32]), "train.patch [16, 64, 32] is larger than the synthetic volume "
                                              "data.shape [16, 32, 32] (H 64 > 32)"),
    (with_(["variants"], [{"name": "pw", "train": {"callbacks+": "swa"}}]),
     "callbacks+: appends a list to the list 'callbacks'"),
    (with_(["claims"], [{"text": "x", "where": "T", "better": "pw", "than": 1, "direction": "equal"}]),
     "margin: a claim of no difference (direction: equal) needs a margin > 0"),
]


@pytest.mark.parametrize("study,message", CASES, ids=[m[:30] for _, m in CASES])
def test_bad_study_exits_2_with_field_message_and_writes_nothing(tmp_path, monkeypatch, capsys, study, message):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, study)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # no mlflow.db, no ray_results, no reports


def test_study_that_is_not_utf8_exits_2_naming_the_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = yaml.safe_dump(BASE).replace("title: tiny", "title: caf\xe9")
    (tmp_path / "s.yaml").write_bytes(text.encode("latin-1"))  # one Latin-1 byte in the title
    line = text[:text.index("caf")].count("\n") + 1
    assert main(["run", "s.yaml"]) == 2
    assert f"s.yaml: line {line}: byte 0xe9 is not UTF-8; save the study as UTF-8 text" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_missing_study_file_and_scale(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "nope.yaml"]) == 2
    assert "study: file 'nope.yaml' does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["run", "nope.yaml", "--scale", "huge"])
    assert e.value.code == 2


def test_resolve_applies_scale_then_variant(tmp_path):
    study = with_(["scales", "smoke"], {"train": {"epochs": 3}, "model": {"widths": [4, 4, 4, 4, 4]}})
    study["variants"] = [{"name": "pw"}, {"name": "slow", "train": {"lr": 0.5}, "params": {"widths": [2, 2, 2, 2, 2]}}]
    specs = resolve(load_study(write(tmp_path, study)), "smoke", seeds=2)
    assert [s.key for s in specs] == ["pw#s0", "pw#s1", "slow#s0", "slow#s1"]
    assert specs[0].train.epochs == 3 and specs[0].model.params["widths"] == [4, 4, 4, 4, 4]
    assert specs[2].train.lr == 0.5 and specs[2].model.params["widths"] == [2, 2, 2, 2, 2]
    with pytest.raises(ConfigError, match="--scale"):
        resolve(load_study(write(tmp_path, study)), "medium")


def test_landscape_study_takes_every_registered_family(monkeypatch):
    from torch import nn

    from harness.registry import MODELS

    class Tiny(nn.Module):  # a family "added later": one registration, nothing else
        landscape = {"small": {"width": 2}}

        def __init__(self, in_channels=1, out_channels=1, width=4):
            super().__init__()
            self.conv = nn.Conv3d(in_channels, out_channels, 1)

    monkeypatch.setitem(MODELS._items, "tiny_family", Tiny)
    study = load_study(Path(__file__).parents[1] / "studies" / "landscape_organ.yaml")
    specs = {s.variant: s for s in resolve(study, "smoke")}
    assert {"gsp_unet.fcn3d", "gsp_unet.pointwise", "gsp_unet.csc_dec", "tiny_family.small"} <= set(specs)
    assert specs["tiny_family.small"].model.name == "tiny_family"
    assert specs["tiny_family.small"].model.params == {"width": 2}
    assert specs["tiny_family.small"].tags == {"family": "tiny_family", "config": "small"}


TASKS = {
    "a": {"smoke": {"dataset": "synthetic_depth", "params": {"n_cases": 4, "shape": [16, 32, 32]}},
          "quick": {"dataset": "synthetic_depth", "params": {"n_cases": 4, "shape": [16, 32, 32]}},
          "paper": {"dataset": "synthetic_depth", "params": {"n_cases": 4, "shape": [16, 64, 64]},
                    "train": {"patch": [16, 64, 64]}}},
    "b": {"smoke": {"dataset": "synthetic_depth", "params": {"n_cases": 4, "shape": [16, 32, 32], "in_channels": 2,
                                                             "regions": ["x", "y"]}},
          "quick": {"dataset": "synthetic_depth", "params": {"n_cases": 4, "in_channels": 2, "regions": ["x", "y"]}},
          "paper": {"dataset": "synthetic_depth", "params": {"n_cases": 4, "in_channels": 2, "regions": ["x", "y"]}}},
}


def test_tasks_give_each_variant_its_data_and_grid_options_pick_models(tmp_path):
    study = {**BASE, "tasks": TASKS, "variants": [],
             "grid": {"task": {"A": {"task": "a"}, "B": {"task": "b"}},
                      "net": {"2d": {"model": "unet2d"}, "dsm": {"model": "distill_dsm", "alpha": 0.5},
                              "gsp": {"train": {"lr": 0.5}}}}}
    s = load_study(write(tmp_path, yaml.safe_dump(study, sort_keys=False)))  # grid axes keep their order
    specs = {x.variant: x for x in resolve(s, "smoke")}
    assert len(specs) == 6 and specs["B-dsm"].model.name == "distill_dsm"
    assert specs["B-dsm"].model.params == {"alpha": 0.5} and specs["B-dsm"].tags == {"task": "B", "net": "dsm"}
    assert specs["B-dsm"].data.params["in_channels"] == 2 and specs["A-2d"].data.params["shape"] == [16, 32, 32]
    assert specs["A-gsp"].model.name == "gsp_unet" and specs["A-gsp"].train.lr == 0.5
    paper = {x.variant: x for x in resolve(s, "paper")}
    assert paper["A-2d"].train.patch == [16, 64, 64] and paper["B-2d"].train.patch == [16, 32, 32]


@pytest.mark.parametrize("change,message", [
    (lambda s: s["grid"]["task"].update(C={"task": "c"}), "task: unknown task of variant 'C' 'c'. Known: a, b"),
    (lambda s: s["tasks"]["a"].pop("paper"), "tasks.a: missing ['paper']"),
    (lambda s: s["tasks"]["b"]["smoke"]["params"].update(regions=["x", "x"]), "tasks.b.smoke: data: regions must be"),
])
def test_bad_tasks_exit_2(tmp_path, monkeypatch, capsys, change, message):
    monkeypatch.chdir(tmp_path)
    study = yaml.safe_load(yaml.safe_dump({**BASE, "tasks": TASKS, "variants": [],
                                           "grid": {"task": {"A": {"task": "a"}}}}))
    change(study)
    assert main(["run", str(write(tmp_path, study))]) == 2
    assert message in capsys.readouterr().err


def test_folds_expand_folder_data_sets_only(tmp_path, monkeypatch):
    from helpers import make_msd

    monkeypatch.chdir(tmp_path)  # the split file is written under ./splits

    root = make_msd(tmp_path / "Task05", n=6)
    study = {**BASE, "tasks": {"real": {s: {"dataset": "msd", "root": str(root)} for s in ("smoke", "quick", "paper")},
                               "synth": TASKS["a"]},
             "variants": [{"name": "r", "task": "real"}, {"name": "s", "task": "synth"}],
             "model": {"name": "unet2d"}, "scales": {"smoke": {"folds": 3}, "quick": {}, "paper": {}}}
    s = load_study(write(tmp_path, study))
    specs = resolve(s, "smoke", seeds=2)
    real = [x for x in specs if x.variant == "r"]
    assert [x.key for x in real] == ["r#f0s0", "r#f0s1", "r#f1s0", "r#f1s1", "r#f2s0", "r#f2s1"]
    assert [(x.fold, x.seed, x.data.params["fold"], x.data.params["folds"]) for x in real[2:4]] == [(1, 0, 1, 3),
                                                                                                  (1, 1, 1, 3)]
    assert [x.key for x in specs if x.variant == "s"] == ["s#s0", "s#s1"]  # synthetic: one split, seeds only
    assert len(resolve(s, "paper")) == 2 and len(resolve(s, "paper", folds=5)) == 6


def test_a_bad_value_under_a_union_reads_as_one_mistake(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, with_(["expected"], {"pw": {"params": {"valu": 3}}}))
    assert main(["run", "s.yaml"]) == 2
    err = capsys.readouterr().err
    assert "ExpectedValue" not in err and ".float" not in err and "valid number" not in err, err
    write(tmp_path, with_(["expected"], {"pw": {"params": "many"}}))
    assert main(["run", "s.yaml"]) == 2
    err = capsys.readouterr().err
    assert "expected.pw.params: Input should be a valid number" in err and "value: required" not in err, err


@pytest.mark.slow
def test_a_trial_no_ray_node_can_hold_exits_2_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, with_(["resources"], {"cpu": 100}))
    assert main(["run", "s.yaml", "-v", "0"]) == 2
    err = capsys.readouterr().err
    assert "resources.cpu: 100 per trial, but the largest Ray node offers" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # no mlflow.db, no parent run


def test_an_unreachable_ray_address_exits_2_in_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys):
    import ray

    if ray.is_initialized():  # an earlier test's local instance would stand in for the address
        ray.shutdown()
    monkeypatch.chdir(tmp_path)
    write(tmp_path, BASE)
    assert main(["run", "s.yaml", "--address", "127.0.0.1:1", "-v", "0"]) == 2
    err = capsys.readouterr().err
    assert "--address: nothing answers at '127.0.0.1:1'" in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


@pytest.mark.parametrize("change,message", [
    ((["name"], ".."), "name: String should match pattern"),
    ((["grid"], {"../../../tmp/x": {"a": {}}}), "grid: axis '../../../tmp/x' is not a plain name"),
])
def test_names_that_become_paths_are_plain_names(tmp_path, monkeypatch, capsys, change, message):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, with_(*change))
    assert main(["run", str(path)]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


@pytest.mark.parametrize("argv,message", [
    (["run", "S", "--seeds", "0"], "argument --seeds: '0' is not a whole number >= 1"),
    (["run", "S", "--seeds", "-1"], "argument --seeds: '-1' is not a whole number >= 1"),
    (["run", "S", "--data-root", "/nonexistent/x"], "error: --data-root: '/nonexistent/x' does not exist"),
    (["run", "S", "--data-root", "BraTS18=/nonexistent/x"], "error: --data-root: '/nonexistent/x' does not exist"),
    (["cost", "gsp_unet", "--param", "conv=[unclosed"], "argument --param: conv: '[unclosed' is not a YAML value"),
])
def test_bad_command_line_values_exit_2_in_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, BASE)
    with pytest.raises(SystemExit) if "argument" in message else contextlib.nullcontext() as raised:
        rc = main([str(path) if a == "S" else a for a in argv])
    assert (raised.value.code if raised else rc) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_a_study_naming_only_its_model_has_one_default_variant():
    study = StudyCfg.model_validate({k: v for k, v in BASE.items() if k not in ("variants", "grid")})
    assert [v.name for v in study.variants] == [BASE["model"]["name"]]
    assert [s.key for s in resolve(study, "smoke")] == [f"{BASE['model']['name']}#s0"]
