"""Distill DSM family: exact parameter counts (docs/architectures.md) and slice-exchange semantics."""
import pytest
import torch

from harness.cost import count_macs, count_params
from harness.models import build_model
from harness.families.distill_dsm.depth_shift import DistillDSM, ResidualDSM, shift_slices


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
    # docs/architectures.md: summing MACs per full-resolution pixel over the convs gives 38,640 (paper: 38,662).
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


def test_3d_unet_baseline_parameter_count_matches_the_paper():
    # Distill DSM Table 1 / docs/architectures.md: residual 3D U-Net, base 8, [2, 2, 2, 2, 2], 4 in / 3 out.
    assert count_params(build_model("unet3d", in_channels=4, out_channels=3)) == 4_288_208


def test_distill_dsm_blocks_choose_module_positions():
    # Extra parameters per module: 9 (aC)^2 + aC (three 3x3 convs with bias, docs/architectures.md).
    base = count_params(build_model("unet2d", in_channels=2, out_channels=2))
    widths = [32, 64, 128, 128, 128, 64, 32, 16]  # module channel counts by position
    for blocks in ([0, 1, 2, 3], [4, 5, 6, 7], [3], None):
        m = build_model("distill_dsm", in_channels=2, out_channels=2, alpha=0.5, blocks=blocks)
        chosen = range(8) if blocks is None else blocks
        assert sum(isinstance(x, DistillDSM) for x in m.modules()) == len(chosen)
        assert count_params(m) - base == sum(9 * (w // 2) ** 2 + w // 2 for i, w in enumerate(widths) if i in chosen)
    with pytest.raises(ValueError, match="module positions are 0..7"):
        build_model("residual_dsm", blocks=[8])


def test_vfn_slices_the_volume_along_each_view_and_fuses():
    m = build_model("vfn", in_channels=1, out_channels=2).eval()
    seen = {}
    for view, net in m.views.items():
        net.register_forward_pre_hook(lambda mod, args, view=view: seen.__setitem__(view, tuple(args[0].shape)))
    x = torch.randn(1, 1, 16, 32, 48)
    with torch.no_grad():
        assert m(x).shape == (1, 2, 16, 32, 48)
    # Each view's 2D net folds its slicing axis into the batch: axial D, coronal H, sagittal W.
    assert seen == {"axial": (1, 1, 16, 32, 48), "coronal": (1, 1, 32, 16, 48), "sagittal": (1, 1, 48, 16, 32)}
    assert m.fusion.encoder[0][0].body[2].in_channels == 1 + 3 * 2  # image + three views' probabilities
    with pytest.raises(ValueError, match="divisible by 16"):
        m.check_input([16, 32, 40])


def test_the_figures_docs_architectures_states():
    # docs/architectures.md and the README's known gaps quote these; they are measured here.
    assert count_params(build_model("vfn")) == 4_015_371
    assert count_params(build_model("distill_dsm", alpha=0.5)) == 1_216_715  # BraTS's 4 in / 3 out
    voxels = 16 * 64 * 64
    u3 = count_macs(build_model("unet3d"), (1, 4, 16, 64, 64))
    assert u3["macs"] / voxels == pytest.approx(30_370, abs=1) and u3["by_op"]["conv"] / voxels == 29_891
    assert count_macs(build_model("unet2d"), (1, 4, 4, 64, 64))["macs"] / (4 * 64 * 64) == pytest.approx(38_988, abs=1)
    gsp = build_model("gsp_unet")  # pointwise, 4 in / 3 out: 3,158 MACs / voxel, 6.62 G at 4 x 128^3
    assert count_macs(gsp, (1, 4, 64, 128, 128))["macs"] / (64 * 128 * 128) == pytest.approx(3_158, abs=1)
    assert count_macs(gsp, (1, 4, 128, 128, 128))["macs"] / 1e9 == pytest.approx(6.62, abs=0.01)
