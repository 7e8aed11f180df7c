"""Inferers: TTA views invert exactly, and inference is costed as run."""
import pytest
import torch
from torch import nn

from harness.cost import cost_report, count_macs
from harness.inferers import build_inferer
from harness.registry import VIEW_SETS
from harness.config import ComponentCfg
from harness.models import build_model


class Identity(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))  # cost needs a parameter to find the device

    def forward(self, x):
        return x


@pytest.mark.parametrize("views", list(VIEW_SETS))
def test_every_view_is_undone_exactly_and_an_identity_model_comes_back_unchanged(views):
    x = torch.randn(1, 2, 12, 12, 12)  # a cube: a view set may turn any plane
    for v in VIEW_SETS.get(views)():
        assert torch.equal(v.inverse(v.forward(x)), x), v
    tta = build_inferer(ComponentCfg(name="tta", params={"views": views}), [12, 12, 12], 1, "sigmoid")
    # The views are exact (above); averaging 16 equal floats may round by an ulp or two.
    assert torch.allclose(tta(x, Identity()), torch.sigmoid(x), atol=1e-6, rtol=0)


def test_the_sixteen_brats_views_hold_twelve_distinct_ones_and_the_authors_revert_order_would_misalign():
    x = torch.randn(1, 1, 4, 6, 6)
    seen = {tuple(v.forward(x).flatten().tolist()) for v in VIEW_SETS.get("brats2020")()}
    # An in-plane flip then a quarter turn equals the other in-plane flip then the opposite turn,
    # so the paper's 16 views are 12 distinct ones, 4 of them counted twice in the average.
    assert len(VIEW_SETS.get("brats2020")()) == 16 and len(seen) == 12
    # Reverting flip-then-rotate by flipping first (rot90(flip(y), -r)) is no inverse when the flip
    # lies in the rotation plane and the turn is odd: 4 of the 16 views.
    wrong = [v for v in VIEW_SETS.get("brats2020")()
             if not torch.equal(torch.rot90(v.forward(x).flip(v.flip), -v.rot, (3, 4)) if v.flip else x, x)]
    assert {(v.flip, v.rot) for v in wrong} == {(3, 1), (3, 3), (4, 1), (4, 3)}


def test_tta_costs_every_view_in_macs_and_passes():
    model = build_model("gsp_unet", in_channels=1, out_channels=1, widths=[4, 4, 8, 8, 8])
    shape = [1, 1, 16, 32, 32]
    single = count_macs(model, shape)["macs"]
    sw = cost_report(model, shape, latency=False,
                     inferer=build_inferer(ComponentCfg(name="sliding_window"), shape[2:], 1, "sigmoid"))
    tta = cost_report(model, shape, latency=True, runs=1,
                      inferer=build_inferer(ComponentCfg(name="tta", params={"views": "brats2020"}), shape[2:], 1,
                                            "sigmoid"))
    assert sw["gmacs"] * 1e9 == single and sw["forward_passes"] == 1
    assert tta["gmacs"] * 1e9 == 16 * single and tta["forward_passes"] == 16
    assert tta["latency_s"] > 0 and tta["macs_by_op"]["conv"] == 16 * count_macs(model, shape)["by_op"]["conv"]


class _NeedsEight(nn.Module):
    """Refuses sizes not divisible by 8 (a 3-level U-Net would); a position-dependent output."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        assert all(s % 8 == 0 for s in x.shape[2:]), x.shape
        return x + torch.arange(x.shape[-1], dtype=x.dtype)


def test_whole_volume_pads_to_the_divisor_crops_back_and_costs_one_pass():
    x = torch.randn(1, 2, 12, 20, 20)  # not divisible by 8
    whole = build_inferer(ComponentCfg(name="whole_volume"), [8, 16, 16], 1, "sigmoid")
    out = whole(x, _NeedsEight())
    assert out.shape == x.shape and torch.allclose(out, torch.sigmoid(x + torch.arange(20.0)))
    model = build_model("gsp_unet", in_channels=1, out_channels=1, widths=[4, 4, 8, 8, 8])
    shape = [1, 1, 16, 32, 32]
    cost = cost_report(model, shape, latency=False, inferer=whole)
    assert cost["forward_passes"] == 1 and cost["gmacs"] * 1e9 == count_macs(model, shape)["macs"]
    # BraTS 2020's TTA on whole volumes: 16 passes, each view undone (an identity comes back).
    tta = build_inferer(ComponentCfg(name="tta", params={"base": "whole_volume", "views": "brats2020"}), [8, 16, 16], 1,
                        "sigmoid")
    assert cost_report(model, shape, latency=False, inferer=tta)["forward_passes"] == 16
    y = torch.randn(1, 1, 8, 16, 16)
    assert torch.allclose(tta(y, Identity()), torch.sigmoid(y), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="base: 'whole' is not one of sliding_window, whole_volume"):
        build_inferer(ComponentCfg(name="tta", params={"base": "whole"}), [8, 16, 16], 1, "sigmoid")


def test_the_views_the_brats_paper_turned_down_rotate_every_plane_and_need_equal_sides_there():
    views = VIEW_SETS.get("brats2020_all_planes")()
    assert len(views) == 40 and {v.plane for v in views if v.rot} == {(3, 4), (2, 4), (2, 3)}
    with pytest.raises(ValueError, match=r"rotate the coronal plane: the patch's D and W must be equal, got \[8, 16, 16\]"):
        build_inferer(ComponentCfg(name="tta", params={"views": "brats2020_all_planes"}), [8, 16, 16], 1, "sigmoid")
    whole = build_inferer(ComponentCfg(name="tta", params={"views": "brats2020_all_planes", "base": "whole_volume"}),
                          [8, 16, 16], 1, "sigmoid")
    x = torch.randn(1, 1, 8, 16, 16)
    assert torch.allclose(whole(x, Identity()), torch.sigmoid(x), atol=1e-6, rtol=0)  # any volume, whole
