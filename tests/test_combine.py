"""Combined rows (harness.combine): rules, validation, and a study that trains two variants and
evaluates their combination as a row the report, claims and --resume treat as a trial."""

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from harness.config import ConfigError, StudyCfg, check_layout, combined_keys, resolve, table_rows
from harness.families.brats2020_unet.labels import merge_labels, regions_to_labels
from harness.registry import COMBINERS

TINY = {
    "name": "tiny_combined",
    "paper": "brats2020_unet",
    "title": "tiny",
    "data": {"dataset": "synthetic_brats", "params": {"n_cases": 5, "val_cases": 2, "shape": [16, 32, 32]}},
    "model": {"name": "brats_unet", "params": {"width": 4, "reduction": 4}},
    "variants": [{"name": "a"}, {"name": "b", "params": {"norm": "instance"}, "train": {"lr": 0.002}}],
    "combined": [{"name": "ab", "of": ["a", "b"], "rule": "mean"},
                 {"name": "merged", "of": ["ab", "b"], "rule": "brats_merge", "tags": {"row": "merged"}}],
    "train": {"patch": [16, 32, 32], "epochs": 1, "steps_per_epoch": 2, "batch_size": 1, "lr": 0.003,
              "inferer": "whole_volume"},
    "cost": {"latency": False},
    "scales": {"smoke": {}, "quick": {}, "paper": {}},
    "seeds": 2,
    "claims": [{"text": "the merge beats a", "where": "test", "better": "merged", "than": "a"}],
}


def study(**over) -> StudyCfg:
    s = StudyCfg.model_validate({**TINY, **over})
    check_layout(s)
    return s


def test_mean_rule_averages_and_the_brats_rules_rebuild_and_merge_label_maps():
    a, b = torch.rand(1, 3, 2, 4, 4), torch.rand(1, 3, 2, 4, 4)
    assert torch.allclose(COMBINERS.get("mean")()([a, b], "sigmoid"), (a + b) / 2)
    assert torch.allclose(COMBINERS.get("mean")(weights=[3, 1])([a, b], "sigmoid"), (3 * a + b) / 4)
    # A voxel the net puts in ET but not in TC or WT is ET, hence in TC and WT (Sec. 2.6).
    p = torch.zeros(1, 3, 1, 1, 2)
    p[0, 2, 0, 0, 0] = 0.9  # ET only
    p[0, 0, 0, 0, 1] = 0.9  # WT only: oedema
    out = COMBINERS.get("brats_labels")()([p], "sigmoid")
    assert out[0, :, 0, 0, 0].tolist() == [1, 1, 1] and out[0, :, 0, 0, 1].tolist() == [1, 0, 0]
    # Table 1 on every pair of labels: the rule's regions are those of merge_labels' map.
    masks = {0: (0, 0, 0), 1: (1, 1, 0), 2: (1, 0, 0), 4: (1, 1, 1)}
    la, lb = np.array([[x for x in (0, 1, 2, 4) for _ in range(4)]]), np.array([[0, 1, 2, 4] * 4])
    pa = torch.tensor([[masks[v][k] for v in la[0]] for k in range(3)], dtype=torch.float)[None, :, None, None]
    pb = torch.tensor([[masks[v][k] for v in lb[0]] for k in range(3)], dtype=torch.float)[None, :, None, None]
    merged = COMBINERS.get("brats_merge")()([pa, pb], "sigmoid")[0, :, 0, 0].numpy()
    assert regions_to_labels(*merged).tolist() == merge_labels(la[0], lb[0]).tolist()
    with pytest.raises(ValueError, match="brats_merge: needs 2 member"):
        COMBINERS.get("brats_merge")()([pa], "sigmoid")
    with pytest.raises(ValueError, match="sigmoid WT, TC, ET"):
        COMBINERS.get("brats_labels")()([torch.rand(1, 2, 1, 1, 1)], "softmax")


@pytest.mark.parametrize("combined,match", [
    ([{"name": "ab", "of": ["a", "c"], "rule": "mean"}], r"combined\[0\]\.of: unknown variant .*'c'"),
    ([{"name": "ab", "of": ["a", "merged"], "rule": "mean"}, {"name": "merged", "of": ["a", "b"], "rule": "mean"}],
     r"combined\[0\]\.of: unknown .*'merged'"),  # members come first: no cycles
    ([{"name": "ab", "of": ["a", "b"], "rule": "maen"}], r"combined\[0\]\.rule.*'maen'.*Did you mean.*mean"),
    ([{"name": "ab", "of": ["a", "b"], "rule": {"name": "mean", "params": {"weight": [1, 2]}}}],
     r"unknown parameter of combiner 'mean' 'weight'.*Did you mean.*weights"),
    ([{"name": "a", "of": ["a", "b"], "rule": "mean"}], r"combined\[0\]\.name: 'a' is already a variant"),
    ([{"name": "ab", "of": ["a", "a"], "rule": "mean"}], r"names a member twice"),
])
def test_combined_rows_are_validated_with_the_field_and_did_you_mean(combined, match):
    with pytest.raises(ConfigError, match=match):
        study(combined=combined, claims=[])


def test_combined_rows_are_rows_for_layout_and_claims_and_hash_their_members():
    s = study()
    assert [v.name for v in table_rows(s)] == ["a", "b", "ab", "merged"]
    specs = resolve(s, "smoke", check=False)
    keys = combined_keys(s, specs)
    assert [k["key"] for k in keys] == ["ab#s0", "ab#s1", "merged#s0", "merged#s1"]
    assert keys[2]["of"] == ["ab#s0", "b#s0"] and keys[2]["seed"] == 0
    # A member retrained with another recipe makes every row above it stale.
    other = study(variants=[TINY["variants"][0], {**TINY["variants"][1], "train": {"lr": 0.001}}])
    again = {k["key"]: k["hash"] for k in combined_keys(other, resolve(other, "smoke", check=False))}
    assert all(again[k["key"]] != k["hash"] for k in keys)
    with pytest.raises(ConfigError, match=r"claims\[0\]\.better: unknown variant 'merge'.*Did you mean.*merged"):
        study(claims=[{**TINY["claims"][0], "better": "merge"}])


@pytest.mark.slow
def test_a_study_evaluates_its_combined_rows_after_training_and_resume_keeps_them(tmp_path, monkeypatch, capsys):
    from harness.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(TINY))
    assert main(["run", "s.yaml", "-v", "0"]) == 0
    assert "8/8 trials finished" in capsys.readouterr().out
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("harness/tiny_combined")
    runs = {x.data.tags["trial_key"]: x for x in client.search_runs([exp.experiment_id], "tags.harness_role = 'trial'")}
    assert sorted(runs) == ["a#s0", "a#s1", "ab#s0", "ab#s1", "b#s0", "b#s1", "merged#s0", "merged#s1"]
    m = runs["merged#s1"]
    assert m.data.tags["combined_of"].split(",") == [runs[k].info.run_id for k in ("a#s1", "b#s1", "b#s1")]
    # Costed as run: the merge infers a, b (for the ensemble) and b again.
    assert m.data.metrics["params"] == runs["a#s1"].data.metrics["params"] + 2 * runs["b#s1"].data.metrics["params"]
    assert m.data.metrics["gmacs"] == pytest.approx(runs["a#s1"].data.metrics["gmacs"]
                                                    + 2 * runs["b#s1"].data.metrics["gmacs"])
    assert 0 <= m.data.metrics["mean_dice"] <= 100
    assert main(["run", "s.yaml", "--resume", "-v", "0"]) == 0
    out = capsys.readouterr().out
    assert "4 of 4 trials finished, 0 to run" in out and "8/8 trials finished" in out, out
    again = client.search_runs([exp.experiment_id], "tags.harness_role = 'trial'")
    assert len(again) == 8, "a resumed study redid a finished trial or combined row"
    assert main(["report", "s.yaml", "--scale", "smoke", "--out", "reports"]) == 0
    import pandas as pd

    trials = pd.read_csv(tmp_path / "reports" / "tiny_combined" / "trials.csv")
    assert sorted(trials.groupby("variant").size().items()) == [("a", 2), ("ab", 2), ("b", 2), ("merged", 2)]
    (claim,) = yaml.safe_load((tmp_path / "reports" / "tiny_combined" / "claims.json").read_text())["claims"]
    assert claim["claim"] == "the merge beats a" and (claim["cases"], claim["seeds"]) == (2, 2)
