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
def test_monai_nets_run_are_costed_and_report_without_a_harness_edit(tmp_path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(STUDY))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": os.pathsep.join(
        [str(PLUGINS), *filter(None, [os.environ.get("PYTHONPATH")])])}

    def harness(*args):
        return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)

    r = harness("run", "s.yaml", "-v", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    r = harness("report", "s.yaml", "--out", "reports")
    assert r.returncode == 0, r.stdout + r.stderr
    trials = pd.read_csv(tmp_path / "reports" / "outside_nets" / "trials.csv").set_index("variant")
    assert set(trials.index) == {"gsp", "unet", "basic"}
    assert (trials.gmacs > 0).all() and (trials.params > 0).all() and trials.mean_dice.notna().all()
    r = harness("cost", "monai_unet", "--plugin", "monai_family", "--input", "1x1x16x32x32", "--json", "--no-latency")
    assert r.returncode == 0 and '"gmacs"' in r.stdout, r.stdout + r.stderr
