"""ConResNet (Zhang et al., TMI 2021): the context residual against Eqs. 4 and 13, the losses
against hand computations (Eqs. 8-9, 14), the parameter counts and Table VII's conv MACs."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.contract import TrainState, as_outputs
from harness.cost import count_macs, count_params
from harness.data import build_task
from harness.data.task import Case, Task, nested_as_classes
from harness.families.conresnet.losses import conres, residual_pos_weight
from harness.models import build_model
from harness.families.conresnet.context_residual import ContextResidualModule, WSConv3d, context_residual, slice_residual
from harness.families.conresnet.context_residual import view_axis


def _cube_label() -> torch.Tensor:
    """(1, 1, 4, 5, 6) with a 2 x 3 x 4 box at D 1-2, H 1-3, W 1-4."""
    y = torch.zeros(1, 1, 4, 5, 6)
    y[:, :, 1:3, 1:4, 1:5] = 1
    return y


@pytest.mark.parametrize("view", ["axial", "coronal", "sagittal"])
def test_residual_targets_along_each_view_on_a_hand_made_label(view):
    y = _cube_label()
    r = slice_residual(y, view_axis(view))
    expected = torch.zeros_like(y)
    if view == "axial":  # entering the box at D=1, leaving after D=2: |y[3] - y[2]| at D=3
        expected[:, :, 1, 1:4, 1:5] = 1
        expected[:, :, 3, 1:4, 1:5] = 1
    elif view == "coronal":  # H: enters at 1, leaves at 4
        expected[:, :, 1:3, 1, 1:5] = 1
        expected[:, :, 1:3, 4, 1:5] = 1
    else:  # W: enters at 1, leaves at 5
        expected[:, :, 1:3, 1:4, 1] = 1
        expected[:, :, 1:3, 1:4, 5] = 1
    assert torch.equal(r, expected)


def test_first_slice_of_the_residual_is_zero_even_where_the_label_starts_inside():
    y = torch.ones(1, 2, 3, 4, 4)  # the paper pads G[0]; the authors' code would put the label there
    assert torch.equal(slice_residual(y, 2), torch.zeros_like(y))


def test_context_residual_is_the_difference_of_sigmoids_eq4():
    f = torch.randn(2, 3, 5, 4, 4)
    g = context_residual(f, axis=2)
    s = torch.sigmoid(f)
    assert torch.allclose(g[:, :, 1:], (s[:, :, 1:] - s[:, :, :-1]).abs())
    assert torch.all(g[:, :, 0] == 0)


def test_weight_standardised_conv_uses_zero_mean_unit_std_filters():
    conv = WSConv3d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 5, 5, 5)
    w = conv.weight.detach()
    flat = w.flatten(1)
    ws = (w - flat.mean(1).view(-1, 1, 1, 1, 1)) / flat.std(1, unbiased=True).view(-1, 1, 1, 1, 1)
    assert torch.allclose(conv(x), F.conv3d(x, ws, padding=1), atol=1e-5)


def test_attention_scales_features_by_one_plus_sigmoid_of_the_residual_eq6():
    torch.manual_seed(0)
    m = ContextResidualModule(8, 8, 8, "identity", axis=2, attention=True).eval()
    seg, res = torch.randn(1, 8, 4, 6, 6), torch.randn(1, 8, 4, 6, 6)
    o_seg, o_res = m(seg, res)
    f = m.seg(seg)
    assert torch.allclose(o_res, m.res(m.g(context_residual(f, 2)) + res), atol=1e-6)
    assert torch.allclose(o_seg, f * (1 + torch.sigmoid(o_res)), atol=1e-6)
    plain = ContextResidualModule(8, 8, 8, "identity", axis=2, attention=False).eval()
    plain.load_state_dict(m.state_dict())
    assert torch.allclose(plain(seg, res)[0], f, atol=1e-6)


def test_attention_without_the_residual_mapping_is_refused():
    with pytest.raises(ValueError, match="model.attention"):
        build_model("conresnet", mapping=False, attention=True)


def test_parameter_counts_pinned():
    """docs/architectures.md: baseline 18,783,715 (paper 18.8M); ConResNet 19,018,732 used
    (the authors' code instantiates 19,441,196, 422,464 unused; paper 19.3M); multi-class +33."""
    base = build_model("conresnet", in_channels=4, out_channels=3, mapping=False, attention=False)
    net = build_model("conresnet", in_channels=4, out_channels=3)
    multi = build_model("conresnet", in_channels=4, out_channels=4, output="softmax")
    assert count_params(base) == 18_783_715
    assert count_params(net) == 19_018_732
    assert count_params(multi) == 19_018_732 + 33
    assert count_params(build_model("conresnet", in_channels=4, out_channels=3, attention=False)) == 19_018_732


def test_table7_conv_macs_scale_to_the_papers_input():
    """Conv MACs at 16 x 32 x 32 times 125 = those at 80 x 160 x 160 (sizes divisible by 8). The
    baseline's are the paper's 453.9 G up to rounding (convs alone: 453.18 G). ConResNet's
    inference skips the residual heads: 537.29 G, the paper's count with heads 537.52 G."""
    base = build_model("conresnet", in_channels=4, out_channels=3, mapping=False, attention=False)
    net = build_model("conresnet", in_channels=4, out_channels=3)
    conv = {k: count_macs(m, (1, 4, 16, 32, 32))["by_op"]["conv"] * 125 for k, m in (("base", base), ("net", net))}
    assert conv["base"] == 453_181_440_000
    heads = (32 * 3 * 80 * 160 * 160) + (32 * 3 * 40 * 80 * 80) + (64 * 3 * 20 * 40 * 40)
    assert abs(conv["net"] + heads - 537.52e9) < 0.01e9


def test_training_output_names_the_view_and_eval_returns_the_segmentation():
    m = build_model("conresnet", in_channels=4, out_channels=4, width=8, view="sagittal", output="softmax").train()
    out = as_outputs(m(torch.randn(2, 4, 8, 16, 24)))
    assert out["seg"].shape == (2, 4, 8, 16, 24)
    assert [h.shape for h in out["res"]] == [(2, 3, 8, 16, 24)] * 3  # foreground classes only
    assert out["res_axis"] == 4
    assert m.eval()(torch.randn(1, 4, 8, 16, 24)).shape == (1, 4, 8, 16, 24)


def test_input_not_divisible_by_8_is_refused_with_the_field():
    m = build_model("conresnet", width=8)
    with pytest.raises(ValueError, match="train.patch"):
        m.check_input([16, 20, 32])


def test_weighted_residual_bce_against_a_hand_computation():
    torch.manual_seed(0)
    label = torch.zeros(2, 1, 4, 4, 4)
    label[0, 0, 1:3, 1:3, 1:3] = 1
    target = slice_residual(label, 2)  # 4 positives at D=1 and 4 at D=3 in volume 0
    n_pos = int(target.sum())
    assert n_pos == 8
    w = math.log(64 / (n_pos + 1))  # V = D*H*W of one volume, V_c over the batch (the code)
    assert torch.allclose(residual_pos_weight(target), torch.tensor([w]))
    heads = [torch.randn(2, 1, 4, 4, 4) for _ in range(3)]
    seg = torch.randn(2, 1, 4, 4, 4)

    def bce(h):  # -[w y log s + (1 - y) log(1 - s)], mean over voxels
        s = torch.sigmoid(h)
        return -(w * target * torch.log(s) + (1 - target) * torch.log(1 - s)).mean()

    loss = conres("sigmoid", lam=0.25)
    outputs = {"seg": seg, "res": heads, "res_axis": 2}
    expected_res = bce(heads[0]) + 0.25 * (bce(heads[1]) + bce(heads[2]))
    got = loss(outputs, {"label": label}, TrainState()) - loss.seg_loss(seg, label)
    assert torch.allclose(got, expected_res, atol=1e-5)


def test_seg_loss_is_dice_with_denominator_smoothing_plus_bce_summed_over_regions():
    torch.manual_seed(1)
    seg, label = torch.randn(2, 3, 4, 4, 4), (torch.rand(2, 3, 4, 4, 4) > 0.6).float()
    p = torch.sigmoid(seg)
    dice = 2 * (p * label).flatten(2).sum(2) / (p.flatten(2).sum(2) + label.flatten(2).sum(2) + 1)
    bce = sum(F.binary_cross_entropy_with_logits(seg[:, c], label[:, c]) for c in range(3))
    expected = (1 - dice).mean() + bce
    assert torch.allclose(conres("sigmoid").seg_loss(seg, label), expected, atol=1e-5)


def test_boundary_loss_weight_follows_eq14_schedule():
    torch.manual_seed(2)
    seg, label = torch.randn(1, 1, 4, 4, 4), (torch.rand(1, 1, 4, 4, 4) > 0.5).float()
    sdm = torch.randn(1, 1, 4, 4, 4)
    loss = conres("sigmoid", boundary=True)
    base = loss.seg_loss(seg, label)
    bd = (torch.sigmoid(seg) * sdm).mean()
    for step, total in ((0, 100), (50, 100), (100, 100)):
        alpha = 1 - step * (1 - 0.01) / total
        got = loss({"seg": seg}, {"label": label, "sdm": sdm}, TrainState(step=step, total_steps=total))
        assert torch.allclose(got, alpha * base + (1 - alpha) * bd, atol=1e-6)
    with pytest.raises(KeyError, match="signed_distance"):
        loss({"seg": seg}, {"label": label}, TrainState())


def test_nested_regions_as_classes_train_exclusive_and_evaluate_nested():
    wt = np.zeros((4, 4, 4), np.uint8)
    wt[:3] = 1
    tc, et = wt.copy(), wt.copy()
    tc[0] = 0
    et[:2] = 0
    nested = Task("t", 1, ("WT", "TC", "ET"), exclusive=False,
                  load=lambda: {"train": [Case("a", np.zeros((1, 4, 4, 4), np.float32), np.stack([wt, tc, et]))],
                                "val": []})
    task = nested_as_classes(nested, ("ED", "NCR", "ET"))
    lab = task.train[0].label
    assert task.exclusive and lab.sum(0).max() == 1
    assert [int(lab[c].sum()) for c in range(3)] == [16, 16, 16]  # slices 0, 1, 2
    merged = task.merge(torch.from_numpy(lab)[None].float())[0].numpy()
    assert np.array_equal(merged, np.stack([wt, tc, et]))
    assert list(task.eval_regions) == ["WT", "TC", "ET"]


def test_synthetic_brats_in_classes_mode_keeps_the_nested_regions_for_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    regions = build_task("synthetic_brats", n_cases=3, shape=[8, 16, 16])
    classes = build_task("synthetic_brats", n_cases=3, shape=[8, 16, 16], labels="classes")
    a, b = regions.train[0].label, classes.train[0].label
    assert classes.regions == ("ED", "NCR", "ET") and classes.exclusive
    assert np.array_equal(classes.merge(torch.from_numpy(b)[None].float())[0].numpy(), a)
