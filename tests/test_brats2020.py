"""BraTS 2020 self-ensembled, deeply supervised U-Net (Henry et al.): the net, CBAM, the loss,
deep supervision, self-ensembling, patient removal, the augmentation, label maps."""
import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.callbacks import LoopContext
from harness.families.brats2020_unet.callbacks import PatientRemoval, SelfEnsemble
from harness.config import DeepSupervisionCfg, merge
from harness.contract import TrainState
from harness.cost import count_macs, count_params
from harness.families.brats2020_unet.labels import labels_to_regions, merge_labels, regions_to_labels
from harness.families.brats2020_unet.transforms import BraTS2020Augmentd
from harness.losses import build_loss
from harness.models import build_model
from harness.families.brats2020_unet.cbam import CBAM3d
from harness.optim import SCHEDULES

sys.path.insert(0, str(Path(__file__).parent))
from helpers import spec  # noqa: E402

# docs/architectures.md: the authors' EquiUnet at width 48, 4 in / 3 out.
COUNTS = [({}, 23_152_563), ({"norm": "instance"}, 23_152_563), ({"deep_supervision": True}, 23_154_735),
          ({"attention": True}, 23_205_588), ({"attention": True, "deep_supervision": True}, 23_207_760)]


@pytest.mark.parametrize("kw,count", COUNTS, ids=lambda x: str(x))
def test_parameter_counts_match_the_authors_code(kw, count):
    assert count_params(build_model("brats_unet", in_channels=4, out_channels=3, **kw)) == count


def test_conv_macs_at_128_cubed_match_the_authors_net():
    # Every conv keeps or halves the size exactly, so conv MACs scale with the voxels: 64^3 x 8 = 128^3.
    # fvcore's total adds GroupNorm (2.60 G), upsampling (1.06 G) and CBAM's pooling and gating.
    for kw, conv, total in (({}, 997.775, 1001.431), ({"attention": True}, 999.424, 1003.64)):
        macs = count_macs(build_model("brats_unet", in_channels=4, out_channels=3, **kw), [1, 4, 64, 64, 64])
        assert macs["by_op"]["conv"] * 8 / 1e9 == pytest.approx(conv, abs=1e-3)
        assert macs["macs"] * 8 / 1e9 == pytest.approx(total, abs=0.01)


def test_shapes_deep_supervision_heads_in_training_only_and_size_checks():
    net = build_model("brats_unet", in_channels=4, out_channels=3, width=8, deep_supervision=True)
    x = torch.randn(2, 4, 16, 24, 32)
    out = net.train()(x)
    assert out["seg"].shape == (2, 3, 16, 24, 32) and len(out["deep"]) == 4
    assert all(d.shape == out["seg"].shape for d in out["deep"])  # upsampled x8, x8, x4, x2 to the input
    assert net.eval()(x).shape == (2, 3, 16, 24, 32)
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.randn(1, 4, 12, 16, 16))
    with pytest.raises(ValueError, match="model.norm: unknown 'batch'"):
        build_model("brats_unet", norm="batch")
    with pytest.raises(ValueError, match="needs width >= 16, got 8"):
        build_model("brats_unet", width=8, attention=True)


def test_cbam_spatial_gate_with_the_authors_relu_never_halves_a_voxel():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 6, 6, 6)
    gates = {}
    for relu in (True, False):
        cbam = CBAM3d(32, spatial_relu=relu)
        maps = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        gates[relu] = torch.sigmoid(cbam.spatial(maps))
    assert gates[True].min() >= 0.5 and gates[False].min() < 0.5
    # 2C^2/r + C/r + C for the MLP, 7^3 x 2 for the conv, 2 for the norm.
    assert count_params(CBAM3d(48)) == 2 * 48 * 3 + 3 + 48 + 686 + 2


def test_cbam_is_eq2_and_eq3_as_written_whatever_memory_layout_its_gate_conv_runs_in():
    # On CPU the gate conv runs in channels-last (a faster kernel): output and gradients must be
    # those of the literal NCDHW transcription of Woo et al. Eqs. 2-3.
    torch.manual_seed(0)
    cbam = CBAM3d(16, 8).double()
    x = torch.randn(2, 16, 4, 6, 8, dtype=torch.double, requires_grad=True)
    n, c = x.shape[:2]
    f1 = x * torch.sigmoid(cbam.mlp(x.mean((2, 3, 4))) + cbam.mlp(x.amax((2, 3, 4)))).view(n, c, 1, 1, 1)
    ref = f1 * torch.sigmoid(cbam.spatial(torch.cat([f1.amax(1, keepdim=True), f1.mean(1, keepdim=True)], 1)))
    out = cbam(x)
    assert out.is_contiguous() and torch.allclose(out, ref, atol=1e-12)
    params = [x, *cbam.parameters()]
    for a, b in zip(torch.autograd.grad(out.square().sum(), params), torch.autograd.grad(ref.square().sum(), params)):
        assert torch.allclose(a, b, atol=1e-10)


def test_dice_loss_is_the_papers_eq2_over_the_batch_and_deep_supervision_mean_or_sum():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 4, 4), (torch.rand(2, 3, 4, 4, 4) > 0.5).float()
    loss = build_loss(_component("dice", squared_pred=True, smooth=1.0, batch=True), "sigmoid")
    p = torch.sigmoid(logits)
    dims = (0, 2, 3, 4)  # batch-wise and channel-wise (Eq. 2; the authors' EDiceLoss)
    eq2 = (1 - (2 * (p * target).sum(dims) + 1) / ((p ** 2).sum(dims) + (target ** 2).sum(dims) + 1)).mean()
    got = loss({"seg": logits}, {"label": target}, TrainState())
    assert got == pytest.approx(float(eq2), abs=1e-6)
    heads = {"seg": logits, "deep": [logits * 0.5, logits * 2, logits, -logits]}
    each = [float(loss({"seg": h}, {"label": target}, TrainState())) for h in [logits, *heads["deep"]]]
    for reduction, expect in (("sum", sum(each)), ("mean", sum(each) / 5)):
        ds = build_loss(_component("dice", squared_pred=True, smooth=1.0, batch=True), "sigmoid",
                        DeepSupervisionCfg(weight_mode="same", reduction=reduction))
        assert float(ds(heads, {"label": target}, TrainState())) == pytest.approx(expect, abs=1e-5)


def _component(name, **params):
    from harness.config import ComponentCfg

    return ComponentCfg(name=name, params=params)


class _Steps:
    """A stand-in trial: each training step sets the weight to the next value of ``values``."""

    def __init__(self, model, values):
        self.model, self.values, self.lrs = model, iter(values), []

    def __call__(self, batch, optimizer=None):
        self.lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: leaves the weight, keeps the scheduler's order check quiet
        self.model.weight.data.fill_(next(self.values))
        return 0.0


def test_self_ensemble_averages_the_final_model_and_every_kth_epoch_of_each_cycle():
    model = torch.nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(10.0)  # the final model: the first snapshot
    loader = [{"image": torch.zeros(1, 1)}] * 2  # two steps per epoch
    steps = _Steps(model, [float(v) for v in range(1, 13)])
    ctx = LoopContext(model, None, None, loader, TrainState(total_steps=4, steps_per_epoch=2), torch.device("cpu"),
                      base_lr=0.01, step=steps)
    avg = SelfEnsemble(cycles=2, cycle_epochs=3, every=1, t_max=4).on_train_end(ctx)
    # Snapshots: 10, then the weight after each epoch: 2, 4, 6 (cycle 1) and 8, 10, 12 (cycle 2).
    assert float(avg.weight.detach()) == pytest.approx((10 + 2 + 4 + 6 + 8 + 10 + 12) / 7)
    assert ctx.results["swa_snapshots"] == 7 and ctx.results["swa_steps"] == 12 and avg is not model
    # A fresh Adam per cycle at lr/2, cosine over t_max epochs stepped per epoch, no weight decay.
    import math
    cos = [0.005 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(3)]
    assert steps.lrs == pytest.approx([lr for lr in cos for _ in range(2)] * 2)
    with pytest.raises(ValueError, match="every: 4 is longer than a cycle"):
        SelfEnsemble(cycle_epochs=3, every=4)


def test_patient_removal_drops_the_highest_losses_and_restarts_from_the_initial_weights():
    model = torch.nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(3.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    kept = []
    state = TrainState(total_steps=4, steps_per_epoch=2)

    def step(batch, optimizer=None):
        model.weight.data.add_(1.0)
        opt.step()
        sched.step()
        state.step += 1
        return 0.0

    ctx = LoopContext(model, opt, sched, [{}] * 2, state, torch.device("cpu"), step=step,
                      case_losses=lambda: {"a": 0.1, "b": 0.9, "c": 0.3, "d": 0.8, "e": 0.2},
                      keep_cases=kept.extend)
    PatientRemoval(count=2).on_train_start(ctx)
    assert ctx.results["removed_cases"] == "b,d" and sorted(kept) == ["a", "c", "e"]
    assert float(model.weight) == 3.0 and opt.param_groups[0]["lr"] == 0.1 and state.step == 0  # as before the run
    assert ctx.results["removed_loss_min"] == 0.8 and ctx.results["kept_loss_max"] == 0.3
    with pytest.raises(ValueError, match="leaves none"):
        PatientRemoval(count=5).on_train_start(ctx)


def test_a_trial_with_both_procedures_evaluates_and_saves_the_averaged_model(tmp_path, monkeypatch):
    from harness.train import load_model, run_trial

    handed = {}
    original = SelfEnsemble.on_train_end

    def spy(self, ctx):
        handed["final"] = copy.deepcopy(ctx.model.state_dict())
        handed["avg"] = original(self, ctx)
        return handed["avg"]

    monkeypatch.setattr(SelfEnsemble, "on_train_end", spy)
    s = spec("brats_unet", {"width": 4, "deep_supervision": True},
             ("synthetic_brats", {"n_cases": 6, "shape": [16, 32, 32]}), batch_size=1, optimizer="adam", lr=0.001,
             loss={"name": "dice", "params": {"squared_pred": True, "smooth": 1.0, "batch": True}},
             deep_supervision={"weight_mode": "same", "reduction": "mean"}, augment=[{"name": "brats2020"}],
             callbacks=[{"name": "patient_removal", "params": {"count": 1}},
                        {"name": "self_ensemble", "params": {"cycles": 1, "cycle_epochs": 2, "every": 1}}])
    out = run_trial(s, checkpoint_dir=tmp_path)
    assert out["removed_count"] == 1 and out["removed_cases"].startswith("brats_") and out["swa_snapshots"] == 3
    saved = load_model(tmp_path / "model.pt").state_dict()
    avg = handed["avg"].state_dict()
    assert all(torch.equal(saved[k], avg[k].cpu()) for k in saved)
    assert any(not torch.equal(saved[k], handed["final"][k].cpu()) for k in saved)  # not the last weights


def test_brats2020_augmentation_moves_image_and_label_together():
    label = np.zeros((1, 8, 8, 8), np.uint8)
    label[0, 1:3, 2:6, 5:7] = 1
    image = np.concatenate([label, 2 * label]).astype(np.float32)
    aug = BraTS2020Augmentd(["image", "label"], prob=1.0, scale=0.0, noise=0.0, drop_channel=0.0)
    changed = 0
    for seed in range(8):
        out = aug.set_random_state(seed)({"image": image, "label": label})
        assert torch.equal(out["image"][0], out["label"][0].float())
        assert torch.equal(out["image"][1], 2 * out["image"][0])
        changed += not torch.equal(out["label"], torch.as_tensor(label))
    assert changed == 8  # a transpose and a flip every time
    # A non-cubic patch: only the equal-sized pair is transposed, shapes stay.
    flat = {"image": np.random.rand(2, 4, 8, 8).astype(np.float32), "label": np.zeros((1, 4, 8, 8), np.uint8)}
    assert all(aug.set_random_state(s)(flat)["image"].shape == (2, 4, 8, 8) for s in range(6))
    # Noise at 0.1 x each channel's own std; a dropped channel is all zero.
    x = {"image": np.stack([np.ones((8, 8, 8)), 100 * np.random.rand(8, 8, 8) + 1]).astype(np.float32),
         "label": np.zeros((1, 8, 8, 8), np.uint8)}
    noisy = BraTS2020Augmentd(["image", "label"], prob=1.0, scale=0.0, noise=0.1, drop_channel=1.0,
                              transpose=False).set_random_state(3)(x)["image"]
    assert any(float(c.abs().max()) == 0 for c in noisy)
    assert BraTS2020Augmentd(["image", "label"], prob=0.0).set_random_state(0)(x)["image"] is x["image"]


def test_region_to_label_reconstruction_and_table1_merge():
    wt = np.array([0, 1, 1, 1, 0, 1], bool)
    tc = np.array([0, 0, 1, 1, 0, 1], bool)
    et = np.array([0, 0, 0, 1, 1, 1], bool)
    labels = regions_to_labels(wt, tc, et)
    assert labels.tolist() == [0, 2, 1, 4, 4, 4]  # ET wins even outside TC and WT (the code's order)
    assert labels_to_regions(np.array([0, 1, 2, 4])).tolist() == [[0, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 1]]
    # Table 1, rows model B, columns model A (0, 1, 2, 4).
    table1 = {0: [0, 1, 0, 4], 1: [0, 1, 2, 4], 2: [2, 1, 2, 4], 4: [0, 1, 2, 4]}
    a = np.array([0, 1, 2, 4] * 4)
    b = np.repeat([0, 1, 2, 4], 4)
    assert merge_labels(a, b).tolist() == [v for row in (0, 1, 2, 4) for v in table1[row]]
    with pytest.raises(ValueError, match=r"label map B holds \[3\]"):
        merge_labels(a, np.full_like(a, 3))


def test_flat_cosine_keeps_the_lr_then_anneals_to_zero():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = SCHEDULES.get("flat_cosine")(opt, total_steps=10, flat=0.5)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == [1.0] * 5 and lrs[5] == pytest.approx(1.0)
    assert lrs[7] == pytest.approx(0.5 * (1 + np.cos(0.4 * np.pi)))  # step 7: 2 of 5 annealing steps
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)


def test_a_variant_appends_a_callback_to_the_scales_list():
    base = {"callbacks": [{"name": "self_ensemble"}], "lr": 0.1}
    merged = merge(base, {"callbacks+": [{"name": "patient_removal"}]})
    assert [c["name"] for c in merged["callbacks"]] == ["self_ensemble", "patient_removal"]
    from harness.config import ConfigError

    with pytest.raises(ConfigError, match=r"lr\+: appends a list to the list 'lr'"):
        merge(base, {"lr+": [1]})


def test_merge_labels_command_writes_table1_on_a_grid_and_refuses_bad_input(tmp_path, capsys):
    import nibabel as nib

    from harness.cli import main

    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    a = np.array([0, 1, 2, 4] * 4, np.uint8).reshape(4, 2, 2)
    b = np.repeat(np.array([0, 1, 2, 4], np.uint8), 4).reshape(4, 2, 2)
    nib.save(nib.Nifti1Image(a, affine), str(tmp_path / "a.nii.gz"))
    nib.save(nib.Nifti1Image(b, affine), str(tmp_path / "b.nii.gz"))
    assert main(["data", "merge-labels", str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz"),
                 "--out", str(tmp_path / "m.nii.gz")]) == 0
    merged = np.asanyarray(nib.load(str(tmp_path / "m.nii.gz")).dataobj)
    assert merged.tolist() == merge_labels(a, b).tolist() and "2 voxels taken from B" in capsys.readouterr().out
    nib.save(nib.Nifti1Image(np.full_like(a, 3), affine), str(tmp_path / "bad.nii.gz"))
    assert main(["data", "merge-labels", str(tmp_path / "a.nii.gz"), str(tmp_path / "bad.nii.gz"),
                 "--out", str(tmp_path / "x.nii.gz")]) == 2
    assert "label map B holds [3]" in capsys.readouterr().err and not (tmp_path / "x.nii.gz").exists()
    nib.save(nib.Nifti1Image(b, np.diag([2.0, 1.0, 1.0, 1.0])), str(tmp_path / "moved.nii.gz"))
    assert main(["data", "merge-labels", str(tmp_path / "a.nii.gz"), str(tmp_path / "moved.nii.gz"),
                 "--out", str(tmp_path / "y.nii.gz")]) == 2
    assert "different affines" in capsys.readouterr().err
