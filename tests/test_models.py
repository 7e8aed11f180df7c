"""Registry-parametrised model tests plus the GSP-Conv architecture facts."""
import warnings

import pytest
import torch

from harness.cost import count_macs, count_params
from harness.families.gsp_conv.gsp_unet import GSPUNet
from harness.models import MODELS, build_model
from harness.families.gsp_conv.group_shift import GroupShift
from harness.registry import UnknownNameError


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_runs_and_has_full_cost_coverage(name):
    cls = MODELS.get(name)
    model = build_model(name, in_channels=2, out_channels=3).eval()
    x = torch.randn(1, 2, *cls.default_input_size)
    out = model(x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    assert out.shape == (1, 3, *cls.default_input_size)
    assert count_macs(model, x.shape)["macs"] > 0  # raises on any op without a handle
    assert not [m for m in model.modules() if type(m) is torch.nn.Conv3d]  # every one on harness.ops.conv
    if torch.backends.mkldnn.is_available():  # its batch-1 oneDNN convolutions compute PyTorch's sums
        with warnings.catch_warnings(), torch.backends.mkldnn.flags(enabled=False):
            warnings.simplefilter("ignore")  # flags() also sets oneDNN's TF32, with a warning
            ref = model(x)
        ref = ref[0] if isinstance(ref, (list, tuple)) else ref
        # to rounding: ConResNet's float32 output (scale 67) is 2e-3 off float64 on either path
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


GROUPS = [(2, 2, 2), (1, 4, 4), (1, 4, 4), (1, 8, 8), (1, 8, 8)]


@pytest.mark.parametrize("kw", [dict(insert=ins, groups=GROUPS, gs_in=where, upsample=up, norm=norm)
                                for ins in ("CSC", "CCS", "CSCS", "CSCSUpShift")
                                for where, up, norm in (("both", "trilinear", "batch"), ("decoder", "transpose", "group"),
                                                        ("encoder", "nearest", "instance"))])
def test_gsp_variants_cost_coverage(kw):
    model = build_model("gsp_unet", in_channels=1, out_channels=1, widths=(4, 8, 8, 16, 16), **kw)
    count_macs(model, (1, 1, 16, 128, 128))


def test_gsp_parameter_counts():
    # docs/architectures.md: widths 16..256, pointwise, concat skips, trilinear, 4 in / 3 out: about 221k.
    # Conv weights 217,920 + head 51 + BatchNorm affine 2 x 1,472 = 220,915.
    assert count_params(build_model("gsp_unet")) == 220_915
    # Group Shift is parameter-free: CSC+Dec (the paper's BraTS model) has the same count.
    assert count_params(build_model("gsp_unet", insert="CSC", gs_in="decoder",
                                    groups=[(2, 2, 2)] * 3 + [(4, 4, 4), (5, 5, 5)])) == 220_915
    # 3D FCN: every conv but the 1x1x1 head becomes 3x3x3: 27 x 217,920 + 51 + 2,944.
    assert count_params(build_model("gsp_unet", conv="conv3")) == 27 * 217_920 + 51 + 2_944


def test_gsp_conv_macs_at_brats_crop():
    # docs/architectures.md: 2.79 GMACs of convolutions at 4x128x128x64 for the pointwise net.
    by_op = count_macs(build_model("gsp_unet"), (1, 4, 64, 128, 128))["by_op"]
    assert by_op["conv"] / 1e9 == pytest.approx(2.78, abs=0.01)
    assert by_op["upsample_trilinear3d"] > 0 and by_op["batch_norm"] > 0


def _shift_positions(block):
    return [i for i, m in enumerate(block) if isinstance(m, GroupShift)]


@pytest.mark.parametrize("insert,positions", [("CSC", [1]), ("CCS", [2]), ("CSCS", [1, 3]), ("CSCSUpShift", [1, 3])])
def test_insert_positions_fig2(insert, positions):
    m = GSPUNet(insert=insert, groups=GROUPS)
    for block in list(m.encoder) + list(m.decoder):
        assert _shift_positions(block) == positions
    up_shifts = sum(isinstance(x, GroupShift) for up in m.up for x in up)
    assert up_shifts == (4 if insert == "CSCSUpShift" else 0)


@pytest.mark.parametrize("gs_in,enc,dec", [("encoder", 5, 0), ("decoder", 0, 4), ("both", 5, 4)])
def test_encoder_decoder_placement(gs_in, enc, dec):
    m = GSPUNet(insert="CSC", groups=GROUPS, gs_in=gs_in)
    count = lambda blocks: sum(isinstance(x, GroupShift) for b in blocks for x in b)  # noqa: E731
    assert (count(m.encoder), count(m.decoder)) == (enc, dec)
    # Each stage's shift uses that stage's groups (stage 1 = full resolution).
    if enc:
        assert [next(x for x in b if isinstance(x, GroupShift)).groups for b in m.encoder] == GROUPS
    if dec:
        assert [next(x for x in b if isinstance(x, GroupShift)).groups for b in m.decoder] == GROUPS[:4][::-1]


def test_gsp_stage_shapes_and_group_divisibility_errors():
    m = GSPUNet(insert="CSC", groups=[(2, 2, 2)] * 3 + [(4, 4, 4), (5, 5, 5)])
    assert m.stage_sizes((64, 128, 128))[-1] == (4, 8, 8)
    m.check_input((160, 160, 160))
    with pytest.raises(ValueError, match=r"stage 5 groups \(5, 5, 5\) do not divide its feature size \(4, 8, 8\)"):
        m.check_input((64, 128, 128))
    with pytest.raises(ValueError, match="divisible by 16"):
        m.check_input((24, 128, 128))
    with pytest.raises(UnknownNameError, match="Did you mean 'CSC', 'CSCS'"):
        GSPUNet(insert="CSCs")
    with pytest.raises(ValueError, match="need 5 triples"):
        GSPUNet(insert="CSC", groups=[(1, 1, 1)] * 4)
