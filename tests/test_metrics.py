"""The metric catalogue: one entry a metric, read by tables, plots, claims, combined rows, search
objectives and the cost command (a plugin's metric end to end: tests/test_plugin_family.py)."""
import pytest

from harness.metrics import Metric, exact_names, is_exact, is_measured, metric, register_metric, shown
from harness.registry import UnknownNameError


def test_a_region_family_answers_for_each_region_and_an_unknown_name_gets_did_you_mean():
    assert metric("dice_WT") is metric("dice_liver") is metric("dice_")
    assert metric("dice_WT").level == "case" and metric("hd95_ET").direction == "min"
    with pytest.raises(UnknownNameError, match=r"claims\[0\].metric: unknown metric 'mean_dce'. Did you mean "
                                                r"'mean_dice'"):
        metric("mean_dce", field="claims[0].metric")
    with pytest.raises(UnknownNameError, match="unknown metric 'dice'"):
        metric("dice")  # a family's stem without its region


def test_exact_costs_are_counted_and_measured_ones_are_not():
    assert exact_names() == ["params", "gmacs", "size_mb", "macs_per_voxel", "forward_passes", "checkpoint_bytes"]
    assert is_exact("gmacs") and not is_exact("latency_ns_per_voxel") and not is_exact("no_such_metric")
    assert is_measured("peak_mem_mb") and is_measured("step_time_s") and not is_measured("mean_dice")


def test_each_place_reads_its_metrics_from_the_catalogue():
    # The built-ins first, in the catalogue's order (a plugin imported earlier in the process adds its own after).
    assert [m.name for m in shown("plot")][:4] == ["params", "gmacs", "latency_ns_per_voxel", "peak_mem_mb"]
    assert [m.name for m in shown("curve")][:4] == ["mean_dice", "params", "gmacs", "train_peak_mem_mb"]
    assert {m.name: m.label for m in shown("table")}["train_peak_mem_mb"] == "training peak memory (MB)"


def test_an_ensembles_cost_adds_up_as_the_catalogue_says():
    from harness.combine import combined_cost

    members = [{"gmacs": 2.0, "params": 10, "peak_mem_mb": 30.0, "latency_s": 0.5, "device": "cpu"},
               {"gmacs": 3.0, "params": 20, "peak_mem_mb": 50.0, "latency_s": 0.25, "device": "cpu"}]
    assert combined_cost(members) == {"gmacs": 5.0, "params": 30, "peak_mem_mb": 50.0, "latency_s": 0.75,
                                      "device": "cpu"}


def test_a_bad_entry_is_refused_and_a_name_registers_once():
    with pytest.raises(ValueError, match="shown: \\['plots'\\] not among cost, table, plot, curve"):
        Metric("x", "min", "", "x", "cost", shown=frozenset({"plots"}))
    with pytest.raises(ValueError, match="only a cost is exact"):
        Metric("x", "max", "%", "x", "accuracy", exact=True)
    with pytest.raises(ValueError, match="metric 'gmacs' is registered twice"):
        register_metric(Metric("gmacs", "min", "", "GMACs", "cost"))


def test_a_claim_on_an_unknown_metric_is_refused_when_the_study_loads(tmp_path):
    import yaml

    from harness.config import ConfigError, load_study

    study = {"name": "s", "paper": "p", "title": "t",
             "data": {"dataset": "synthetic_organ", "params": {"n_cases": 4, "shape": [8, 16, 16]}},
             "model": {"name": "gsp_unet"}, "variants": [{"name": "a"}, {"name": "b"}],
             "train": {"patch": [8, 16, 16]}, "scales": {"smoke": {}, "quick": {}, "paper": {}},
             "claims": [{"text": "a beats b", "where": "Table 1", "better": "a", "than": "b", "metric": "mean_dic"}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    with pytest.raises(ConfigError, match=r"claims\[0\].metric: unknown metric 'mean_dic'. Did you mean 'mean_dice'"):
        load_study(tmp_path / "s.yaml")
    study["claims"][0] |= {"metric": "latency_s", "measure": "ratio", "direction": "lower"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    with pytest.raises(ConfigError, match="measure: ratio is for an exact cost, one of params, gmacs"):
        load_study(tmp_path / "s.yaml")
