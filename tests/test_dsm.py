"""Distill DSM family: exact parameter counts (ARCHITECTURES.md) and slice-exchange semantics."""
import pytest
import torch

from harness.cost import count_macs, count_params
from harness.models import build_model
from harness.ops import DistillDSM, ResidualDSM, shift_slices


@pytest.mark.parametrize("name,kw,expected", [
    ("unet2d", dict(in_channels=4, out_channels=3), 1_082_211),
    ("residual_dsm", dict(in_channels=4, out_channels=3), 1_082_211),
    ("distill_dsm", dict(alpha=1.0, in_channels=2, out_channels=2), 1_619_330),
    ("distill_dsm", dict(alpha=0.5, in_channels=1, out_channels=2), 1_216_266),
    ("distill_dsm", dict(alpha=0.25, in_channels=2, out_channels=2), 1_115_606),
])
def test_parameter_counts_match_the_paper(name, kw, expected):
    assert count_params(build_model(name, **kw)) == expected


def test_unet2d_conv_macs_per_voxel_match_the_hand_count():
    # ARCHITECTURES.md: summing MACs per full-resolution pixel over the convs gives 38,640 (paper: 38,662).
    by_op = count_macs(build_model("unet2d"), (1, 4, 4, 64, 64))["by_op"]
    assert by_op["conv"] / (4 * 64 * 64) == 38_640


def test_shift_slices_stays_inside_each_volume_and_zero_pads():
    x = torch.arange(2 * 3, dtype=torch.float32).view(6, 1, 1, 1)  # 2 volumes x 3 slices: 0 1 2 | 3 4 5
    assert shift_slices(x, 3, +1).flatten().tolist() == [0, 0, 1, 0, 3, 4]
    assert shift_slices(x, 3, -1).flatten().tolist() == [1, 2, 0, 4, 5, 0]
    with pytest.raises(ValueError, match="whole number of 4-slice volumes"):
        shift_slices(x, 4, 1)


def test_residual_dsm_adds_shifted_channels_back():
    x = torch.randn(2 * 4, 8, 3, 3)  # 2 volumes x 4 slices, 8 channels: 1 from t+1, 1 from t-1
    y = ResidualDSM(8, fraction=0.25)(x, 4)
    v, w = x.view(2, 4, 8, 3, 3), y.view(2, 4, 8, 3, 3)
    assert torch.equal(w[:, :3, 0], v[:, :3, 0] + v[:, 1:, 0]) and torch.equal(w[:, 3, 0], v[:, 3, 0])
    assert torch.equal(w[:, 1:, 1], v[:, 1:, 1] + v[:, :3, 1]) and torch.equal(w[:, 0, 1], v[:, 0, 1])
    assert torch.equal(w[:, :, 2:], v[:, :, 2:])


def test_distill_dsm_output_layout():
    torch.manual_seed(0)
    m = DistillDSM(16, alpha=0.5)  # 8 channels distilled: R 4, F 2, B 2
    x = torch.randn(3, 16, 5, 5)  # one volume of 3 slices
    y = m(x, 3)
    part = x[:, 8:]
    assert torch.equal(y[:, :8], x[:, :8])
    assert torch.allclose(y[:, 8:12], m.retain(part))
    f, b = m.forward_(part), m.backward_(part)
    assert torch.allclose(y[1:, 12:14], f[:2]) and torch.equal(y[0, 12:14], torch.zeros_like(y[0, 12:14]))
    assert torch.allclose(y[:2, 14:16], b[1:]) and torch.equal(y[2, 14:16], torch.zeros_like(y[2, 14:16]))
    with pytest.raises(ValueError, match="multiple of 4"):
        DistillDSM(16, alpha=0.1)


def test_slice_models_do_not_mix_volumes_of_a_batch():
    # Changing volume 1 must leave volume 0's prediction untouched (BatchNorm in eval mode).
    for name in ("unet2d", "residual_dsm", "distill_dsm"):
        m = build_model(name, in_channels=1, out_channels=1).eval()
        x = torch.randn(2, 1, 4, 32, 32)
        x2 = x.clone()
        x2[1] = torch.randn_like(x2[1])
        with torch.no_grad():
            assert torch.allclose(m(x)[0], m(x2)[0])


@pytest.mark.parametrize("name,sees_neighbours", [("unet2d", False), ("residual_dsm", True), ("distill_dsm", True)])
def test_depth_modules_pass_information_between_slices(name, sees_neighbours):
    torch.manual_seed(0)
    m = build_model(name, in_channels=1, out_channels=1).eval()
    x = torch.randn(1, 1, 4, 32, 32)
    x2 = x.clone()
    x2[0, 0, 0] = torch.randn(32, 32)  # change slice 0 only
    with torch.no_grad():
        changed = not torch.allclose(m(x)[0, :, 1], m(x2)[0, :, 1])
    assert changed == sees_neighbours
