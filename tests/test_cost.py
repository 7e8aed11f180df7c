import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.cost import UnsupportedOpError, cost_report, count_macs, measure_peak_memory
from harness.models import build_model
from harness.families.gsp_conv.group_shift import GroupShift


def test_conv_macs_are_fvcore_fma_counts():
    m = nn.Conv3d(4, 8, 3, padding=1, bias=False)
    assert count_macs(m, (1, 4, 8, 8, 8))["macs"] == 4 * 8 * 27 * 8**3


def test_trilinear_counts_eight_per_output():
    m = nn.Sequential(nn.Conv3d(2, 2, 1, bias=False), nn.Upsample(scale_factor=2, mode="trilinear"))
    by_op = count_macs(m, (1, 2, 4, 4, 4))["by_op"]
    assert by_op["upsample_trilinear3d"] == 8 * 2 * 8**3


class _Sampler(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        grid = torch.zeros(x.shape[0], 3, 4, 5, 3) + self.w
        return F.grid_sample(x, grid, align_corners=False)


def test_grid_sample_3d_counts_eight_per_output():
    # fvcore's own handle counts 4 (bilinear); trilinear sampling reads 8 neighbours.
    by_op = count_macs(_Sampler(), (2, 3, 6, 6, 6))["by_op"]
    assert by_op["grid_sampler"] == 8 * 2 * 3 * (3 * 4 * 5)


def test_group_shift_is_explicit_zero():
    m = nn.Sequential(nn.Conv3d(4, 4, 1, bias=False), GroupShift((2, 2, 2)))
    r = count_macs(m, (1, 4, 4, 4, 4))
    assert r["macs"] == 16 * 64  # the conv only; no unsupported-op error


class _Cumsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv3d(1, 1, 1)

    def forward(self, x):
        return torch.cumsum(self.c(x), dim=2)


def test_unhandled_op_is_a_failure():
    with pytest.raises(UnsupportedOpError, match="aten::cumsum"):
        count_macs(_Cumsum(), (1, 1, 2, 2, 2))


def test_cost_report_fields_and_memory_scales_with_input():
    m = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU())
    r = cost_report(m, (1, 1, 8, 16, 16), runs=2)
    assert r["params"] == 8 * 27 + 8
    assert r["macs_per_voxel"] == pytest.approx(8 * 27)
    assert r["latency_ns_per_voxel"] > 0 and r["input"] == "1x1x8x16x16"
    small, big = measure_peak_memory(m, (1, 1, 8, 16, 16)), measure_peak_memory(m, (1, 1, 32, 32, 32))
    assert big > 4 * small > 0  # the 8-channel output dominates: 8 x 4 bytes per voxel
    assert big >= 8 * 4 * 32**3


def test_training_memory_grows_with_the_batch_and_leaves_the_model_as_trained():
    from harness.cost import measure_training_memory

    model = build_model("unet3d", in_channels=1, out_channels=2).eval()
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    one, four = (measure_training_memory(model, (b, 1, 16, 32, 32)) for b in (1, 4))
    assert four > 1.5 * one > 0
    assert not model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())


PLUGIN_WITH_AN_UNCOSTED_OP = '''
import torch
from harness.registry import MODELS


@MODELS.register("cumsum_net")
class CumsumNet(torch.nn.Module):
    def __init__(self, in_channels: int = 1, out_channels: int = 1):
        super().__init__()
        self.conv = torch.nn.Conv3d(in_channels, out_channels, 3, padding=1)

    def forward(self, x):
        return self.conv(x).cumsum(2)  # aten::cumsum: no cost handle
'''


def test_a_net_the_counter_cannot_cost_is_refused_at_dry_run_naming_the_op(tmp_path, monkeypatch, capsys):
    import yaml

    from harness.cli import main

    (tmp_path / "uncosted_plugin.py").write_text(PLUGIN_WITH_AN_UNCOSTED_OP)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    study = {"name": "uncosted", "paper": "harness", "title": "t", "plugins": ["uncosted_plugin"],
             "data": {"dataset": "synthetic_organ", "params": {"n_cases": 4, "shape": [8, 16, 16]}},
             "model": {"name": "cumsum_net"}, "variants": [{"name": "v"}],
             "train": {"patch": [8, 16, 16], "epochs": 1, "steps_per_epoch": 1, "batch_size": 1},
             "scales": {"smoke": {}, "quick": {}, "paper": {}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    assert main(["run", "s.yaml", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "variant 'v' (model 'cumsum_net'): cannot be costed" in err and "aten::cumsum" in err and "COST_HANDLES.register" in err
    assert not (tmp_path / "mlflow.db").exists()


def test_latency_is_the_median_of_single_warm_runs():
    from harness.cost import measure_latency

    now = [0.0]  # a fake clock each call advances: no real time, so a loaded machine changes nothing

    class Slow(nn.Module):
        """Takes 300 ms on its first call (a cold start the warm-up must absorb), then 30, 50, 40."""

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))
            self.calls = 0

        def forward(self, x):
            now[0] += (0.3, 0.03, 0.05, 0.04)[self.calls]
            self.calls += 1
            return x

    net = Slow()
    latency = measure_latency(net, (1, 1, 2, 2, 2), warmup=1, runs=3, clock=lambda: now[0])
    assert net.calls == 4  # one warm-up, three timed
    assert latency == pytest.approx(0.04)  # the median of the warm ones; the cold call is not in it
