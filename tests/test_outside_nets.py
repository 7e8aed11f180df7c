"""Outside networks without workarounds: MONAI's UNet and BasicUNet, registered by a plugin with
the channels their classes require, validate, run, are costed and report beside a built-in net."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

PLUGINS = Path(__file__).parent / "plugins"
STUDY = {
    "name": "outside_nets", "paper": "harness", "title": "MONAI nets beside a built-in one",
    "plugins": ["monai_family"],
    "data": {"dataset": "synthetic_organ", "params": {"n_cases": 4, "val_cases": 2, "shape": [16, 32, 32]}},
    "model": {"name": "gsp_unet", "params": {"widths": [4, 4, 8, 8, 8]}},
    "variants": [{"name": "gsp"},
                 {"name": "unet", "model": "monai_unet", "params": {"act": "mish"}},
                 {"name": "basic", "model": "monai_basic_unet"}],
    "train": {"patch": [16, 32, 32], "epochs": 1, "steps_per_epoch": 2, "batch_size": 1, "loss": "tversky"},
    "cost": {"latency_runs": 1},
    "scales": {"smoke": {}, "quick": {}, "paper": {}},
}


def test_monai_nets_with_required_channels_validate(monkeypatch, tmp_path):
    from harness.config import load_study, resolve

    monkeypatch.syspath_prepend(str(PLUGINS))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    specs = resolve(load_study(path), "smoke")  # builds each net with the data set's channels
    assert [s.model.name for s in specs] == ["gsp_unet", "monai_unet", "monai_basic_unet"]


@pytest.mark.parametrize("route", [None, True, False])
def test_the_cpu_conv_route_takes_a_plugins_net_only_when_the_study_asks(monkeypatch, tmp_path, route):
    from torch import nn

    from harness.config import load_study, resolve
    from harness.data import build_task
    from harness.ops.conv import Conv3d
    from harness.train import trial_model

    monkeypatch.syspath_prepend(str(PLUGINS))
    study = {**STUDY, "train": {**STUDY["train"], **({} if route is None else {"cpu_conv_route": route})}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    for spec in resolve(load_study(tmp_path / "s.yaml"), "smoke")[:2]:  # the built-in net, MONAI's UNet
        net = trial_model(spec, build_task(spec.data.dataset, **spec.data.params))
        routed = {type(m) is Conv3d for m in net.modules() if isinstance(m, nn.Conv3d)}
        builtin = spec.model.name == "gsp_unet"
        assert routed == {builtin if route is None else route}, (spec.model.name, route)


@pytest.mark.slow
def test_monai_nets_run_are_costed_and_report_without_a_harness_edit(tmp_path, monkeypatch, capsys):
    from harness.cli import main

    # The plugin's wrapped nets and MONAI's stock DynUNet (deep supervision heads stacked) and
    # SegResNetVAE (a (seg, vae_loss) pair) in one run: every output convention read end to end.
    stock = [DYN, VAE] + ([UNETR] if _einops() else [])
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**STUDY, "plugins": ["monai_family", "monai_stock"],
                                                     "variants": STUDY["variants"] + stock,
                                                     "train": {**STUDY["train"], "loss": "dice"}}))  # per head
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": os.pathsep.join(
        [str(PLUGINS), *filter(None, [os.environ.get("PYTHONPATH")])])}
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "s.yaml", "-v", "0"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)  # as a user runs it
    assert r.returncode == 0, r.stdout + r.stderr
    # The report and the cost in this process (imports already paid), the plugins on its path.
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(PLUGINS))
    assert main(["report", "s.yaml", "--out", "reports"]) == 0
    trials = pd.read_csv(tmp_path / "reports" / "outside_nets" / "trials.csv").set_index("variant")
    assert set(trials.index) == {"gsp", "unet", "basic", *(v["name"] for v in stock)}
    assert (trials.gmacs > 0).all() and (trials.params > 0).all() and trials.mean_dice.notna().all()
    capsys.readouterr()
    assert main(["cost", "monai_unet", "--plugin", "monai_family", "--input", "1x1x16x32x32", "--json", "--no-latency"]) == 0
    assert '"gmacs"' in capsys.readouterr().out


# MONAI's nets with their stock constructors (tests/plugins/monai_stock.py): each convention of
# their outputs read by an adapter, each fault refused in one line before training.
PATCH = [16, 32, 32]
DYN = {"name": "dyn", "model": "dynunet", "params": {
    "spatial_dims": 3, "kernel_size": [3, 3, 3], "strides": [1, 2, 2], "upsample_kernel_size": [2, 2],
    "filters": [8, 16, 32], "deep_supervision": True, "deep_supr_num": 1},
    "train": {"deep_supervision": {"weight_mode": "same"}}}
VAE = {"name": "vae", "model": "segresnet_vae", "params": {
    "input_image_size": PATCH, "init_filters": 8, "vae_nz": 16},
    "train": {"outputs": {"name": "extras", "params": {"names": ["vae_loss"]}}, "aux_losses": {"vae_loss": 0.1}}}
UNETR = {"name": "unetr", "model": "unetr", "params": {
    "img_size": PATCH, "feature_size": 8, "hidden_size": 48, "mlp_dim": 96, "num_heads": 4}}


def stock(*variants, **train):
    return {**STUDY, "name": "stock_nets", "plugins": ["monai_stock"], "variants": list(variants),
            "model": {"name": "dynunet", "params": DYN["params"]},
            "train": {**STUDY["train"], "loss": "dice", **train}}


def _einops() -> bool:
    import importlib.util

    return importlib.util.find_spec("einops") is not None


def test_output_adapters_read_monai_conventions():
    import torch

    from harness.contract import as_outputs
    from harness.outputs import Auto, adapt, unused_outputs

    x = torch.zeros(2, 1, 4, 8, 8)
    seg = torch.ones(2, 3, 4, 8, 8)
    auto = Auto()
    stacked = auto(torch.stack([seg, 2 * seg, 3 * seg], 1), 5, True)  # DynUNet's (N, 1 + heads, C, ...)
    assert torch.equal(stacked["seg"], seg) and [float(h.mean()) for h in stacked["deep"]] == [2.0, 3.0]
    vae = auto((seg, torch.tensor(0.5)), 5, True)  # SegResNetVAE's (seg, vae_loss)
    assert list(vae) == ["seg", "aux_loss"] and float(vae["aux_loss"]) == 0.5
    assert auto((seg, None), 5, False) is seg and auto(seg, 5, False) is seg  # evaluation: the segmentation
    heads = auto([seg, seg[:, :, ::2]], 5, True)
    assert list(heads) == ["seg", "deep"] and len(heads["deep"]) == 1
    with pytest.raises(TypeError, match=r"returned tuple \[tensor \(2, 3, 4, 8, 8\), tensor \(2, 8\)\].*"
                                        r"choose an adapter \(train.outputs: extras, heads, stacked\)"):
        auto((seg, torch.zeros(2, 8)), 5, True)
    # On a net: a hook, the net's own class and weights; what the loss will not read is named.
    net = adapt(torch.nn.Conv3d(1, 3, 1), "extras", {"names": ["kl"]})
    net.register_forward_hook(lambda m, i, o: (o, torch.tensor(1.0)), prepend=True)  # a net returning (seg, kl)
    outs = as_outputs(net.train()(x))
    assert list(outs) == ["seg", "kl"] and type(net) is torch.nn.Conv3d
    assert unused_outputs(net, outs, None, {}) == ["kl"] and unused_outputs(net, outs, None, {"kl": 0.1}) == []
    assert net.eval()(x).shape == (2, 3, 4, 8, 8)


def test_stock_monai_nets_are_costed_as_an_independent_counter_counts_them(monkeypatch):
    # PyTorch's own FlopCounterMode counts convolutions and matrix products as executed: the
    # harness's count of those ops equals it, DynUNet's evaluation-time heads included (the
    # tracer prunes them; count_macs adds them back as untraced_macs).
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from harness.cost import count_macs
    from harness.models import build_model
    from harness.outputs import adapt

    monkeypatch.syspath_prepend(str(PLUGINS))
    import monai_stock  # noqa: F401

    nets = [("dynunet", DYN["params"]), ("segresnet_vae", VAE["params"])] + (
        [("unetr", UNETR["params"])] if _einops() else [])
    for name, params in nets:
        net = adapt(build_model(name, in_channels=1, out_channels=1, **params)).eval()
        ours = count_macs(net, [1, 1, *PATCH])
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(torch.zeros(1, 1, *PATCH))
        theirs = sum(counter.get_flop_counts()["Global"].values()) / 2  # FLOPs = 2 x MACs
        assert ours["by_op"].get("conv", 0) + ours["by_op"].get("linear", 0) + ours["by_op"].get("matmul", 0) \
            == theirs, name
        assert (ours["untraced_macs"] > 0) == (name == "dynunet"), name


def _refused(tmp_path, monkeypatch, capsys, study, *args) -> str:
    from harness.cli import main

    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    assert main(["run", "s.yaml", "-v", "0", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # no store, nothing else
    return err


def test_a_net_that_needs_a_missing_package_is_refused_with_the_install_line(tmp_path, monkeypatch, capsys):
    if _einops():
        pytest.skip("einops is installed: UNETR builds (test_monai_nets_run_are_costed_and_report_without_a_harness_edit runs it)")
    err = _refused(tmp_path, monkeypatch, capsys, stock(UNETR))
    assert "variant 'unetr' (model 'unetr')" in err and "needs the package einops: pip install einops" in err, err
    from harness.cli import main  # the cost command too: one line, no OptionalImportError traceback

    assert main(["cost", "unetr", "--plugin", "monai_stock", "--param", "img_size=[16, 32, 32]", "--no-latency"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["error: cost: needs the package einops: pip install einops"], err


def test_a_patch_the_strides_do_not_divide_is_refused_before_training(tmp_path, monkeypatch, capsys):
    study = stock(DYN)
    study["train"]["patch"] = [16, 30, 30]
    for args in ((), ("--dry-run",)):
        err = _refused(tmp_path, monkeypatch, capsys, study, *args)
        assert "variant 'dyn' (model 'dynunet'): an evaluation pass at the patch [16, 30, 30]" in err, err
        assert "choose a train.patch its strides divide" in err


def test_a_net_built_for_one_size_is_refused_at_another_cost_input(tmp_path, monkeypatch, capsys):
    one_size = {"name": "vae", "model": "var_autoencoder", "params": {
        "spatial_dims": 3, "in_shape": [1, *PATCH], "latent_size": 8, "channels": [4, 8], "strides": [2, 2]},
        "train": {"outputs": {"name": "extras", "params": {"names": ["mu", "logvar", "z"]}}}}
    study = {**stock(one_size), "cost": {"input": [1, 1, 32, 32, 32]}}
    err = _refused(tmp_path, monkeypatch, capsys, study)
    assert "an evaluation pass at cost.input's [32, 32, 32]: RuntimeError" in err, err
    assert "a net built for one input size is costed at its patch: remove cost.input" in err
    # Without its adapter, the tuple it returns in training is named with the adapters to choose.
    err = _refused(tmp_path, monkeypatch, capsys, {**stock({**one_size, "train": {}})})
    assert "a training pass at the patch [16, 32, 32]: TypeError: in training the model returned tuple" in err, err


def test_an_output_the_loss_does_not_read_is_said_once(tmp_path, monkeypatch, capsys):
    from harness.cli import main

    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.chdir(tmp_path)
    quiet = {**VAE, "train": {}}  # SegResNetVAE's vae_loss, read by no loss
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(stock(quiet, {**quiet, "name": "vae2"})))
    assert main(["run", "s.yaml", "--dry-run"]) == 0
    out = capsys.readouterr()
    said = [line for line in (out.out + out.err).splitlines() if "is not read by the loss" in line]
    assert said == ["note: stock_nets: variant 'vae' (model 'segresnet_vae'): its training output 'aux_loss' is not "
                    "read by the loss: add it with train.aux_losses: {aux_loss: WEIGHT}"], said


def test_cost_of_a_model_takes_its_channels_from_a_study_and_says_so(capsys):
    from harness.cli import main

    assert main(["cost", "gsp_unet", "--study", "gsp_table1", "--no-latency", "--json"]) == 0
    out = capsys.readouterr()
    assert '"input": "1x4x32x64x64"' in out.out
    assert "gsp_unet: 4 input and 3 output channels (sigmoid), from studies/gsp_table1.yaml" in out.err, out.err


def test_the_shrunk_count_skips_sizes_that_leave_a_net_empty(monkeypatch, tmp_path):
    # SegResNetVAE sized from the injected input_size: at the patch shrunk 4x its VAE's linear
    # layer has no elements (PyTorch warns "Initializing zero-element tensors"); the count takes
    # the next size (2x), without the warning.
    import warnings

    from harness.config import load_study, resolve
    from harness.data import build_task
    from harness.study import _at_proxy

    monkeypatch.syspath_prepend(str(PLUGINS))
    study = stock({"name": "vae", "model": "segresnet_vae_sized"})
    study["train"]["patch"] = study["data"]["params"]["shape"] = [32, 64, 64]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    spec = resolve(load_study(tmp_path / "s.yaml"), "smoke")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, scale, model = _at_proxy(spec, build_task(spec.data.dataset, **spec.data.params), lambda m, s: 0)
    assert all(p.numel() > 0 for p in model.parameters()) and scale == 2**3


def test_a_built_in_net_whose_training_pass_needs_more_than_the_counted_size_is_not_refused():
    """The landscape's quick GSP-Conv net at its 32^3 patch is counted at 16^3, where a batch of
    one leaves its 1^3 bottleneck's BatchNorm one value per channel in training (PyTorch
    raises): the pre-flight takes the next size up instead of refusing a net that trains. (It
    refused every option of the shipped efficient3d space.)"""
    from harness.data import build_task
    from harness.study import _pass_sizes, preflight
    from helpers import spec

    assert _pass_sizes([32, 32, 32], [16, 16, 16]) == [[16, 16, 16]]
    assert _pass_sizes([64, 128, 128], [8, 16, 16]) == [[8, 16, 16], [16, 32, 32], [32, 64, 64]]
    s = spec("gsp_unet", {"conv": "pointwise", "widths": [4, 8, 8, 16, 16]}, patch=[32, 32, 32],
             data=("synthetic_organ", {"n_cases": 4, "shape": [32, 32, 32]}))
    macs, notes = preflight(s, build_task(s.data.dataset, **s.data.params))
    assert macs > 0 and notes == []



def test_the_preflight_runs_once_per_configuration_in_a_process_and_a_failure_each_time(monkeypatch):
    # A search's commands in one process (resume, report-only, confirm) checked every option again.
    import harness.study
    from harness.data import build_task
    from harness.study import PreflightError, preflight
    from helpers import spec

    built = []
    real = harness.study.trial_model
    monkeypatch.setattr(harness.study, "trial_model", lambda s, t: built.append(1) or real(s, t))
    s = spec("gsp_unet", {"conv": "pointwise", "widths": [4, 8, 8, 16, 12]})
    task = build_task(s.data.dataset, **s.data.params)
    first = preflight(s, task)
    n = len(built)
    assert n > 0 and preflight(s, task) == first and len(built) == n  # kept: not built again
    bad = spec("gsp_unet", {"conv": "pointwise", "widths": [4, 8, 8, 16, 12], "insert": "CSC",
                            "groups": [[3, 3, 3], [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]]})
    for _ in range(2):  # a failure is not kept: refused again, the same way
        with pytest.raises(PreflightError, match="groups"):
            preflight(bad, task)
