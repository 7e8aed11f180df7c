"""The CUDA paths: skipped without a GPU (CI has none); `.ci/gpu` runs them on a lent device.

Each compares the GPU against the CPU on the same inputs or checks what only CUDA does (AMP,
pinned memory, the allocator's high-water mark), so a GPU session learns something from every one.
"""
import math

import pytest
import torch

from harness.config import CostCfg, ResourcesCfg
from harness.cost import measure_peak_memory, measure_training_memory
from harness.models import MODELS, build_model
from harness.families.gsp_conv.group_shift import group_shift
from harness.families.gsp_conv.group_shift import shift_boxes, shift_rows
from harness.train import build_trial, pick_device, run_trial

from helpers import literal_eqs
from helpers import spec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA = torch.device("cuda")


@pytest.mark.parametrize("groups,C,ratio", [((2, 2, 2), 8, 0.5), ((1, 4, 4), 32, 0.5), ((5, 5, 5), 256, 0.5),
                                            ((2, 1, 3), 13, 1.0)])
def test_group_shift_on_cuda_is_the_literal_permutation_and_its_inverse(groups, C, ratio):
    x = torch.randn(2, C, groups[0] * 2, groups[1] * 2, groups[2] * 2)
    expected = literal_eqs(x, groups, ratio)
    xc = x.to(CUDA).requires_grad_()
    y = group_shift(xc, groups, ratio)
    assert y.is_cuda and torch.equal(y.detach().cpu(), expected)
    for apply in (shift_boxes, shift_rows):  # whichever the op keeps, both are exact on CUDA
        assert torch.equal(apply(xc.detach(), groups, ratio, inverse=False).cpu(), expected)
    w = torch.randn_like(expected)
    (y * w.to(CUDA)).sum().backward()
    assert torch.equal(xc.grad.cpu(), shift_boxes(w, groups, ratio, inverse=True))  # the backward is the inverse map


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_gives_the_cpu_output_on_cuda(name):
    torch.manual_seed(0)
    cls = MODELS.get(name)
    model = build_model(name, in_channels=2, out_channels=3).eval()
    x = torch.randn(1, 2, *cls.default_input_size)
    with torch.no_grad():
        ref = model(x)
        out = model.to(CUDA)(x.to(CUDA))
    ref = ref[0] if isinstance(ref, (list, tuple)) else ref
    out = out[0] if isinstance(out, (list, tuple)) else out
    # TF32 convolutions on Hopper round to ~1e-3 relative; a wrong op is off by far more.
    torch.testing.assert_close(out.float().cpu(), ref.float(), rtol=2e-2, atol=2e-2)


def test_a_trial_trains_on_cuda_with_amp_and_pinned_batches():
    s = spec(amp=True).model_copy(update={"resources": ResourcesCfg(cpu=1, gpu=1),
                                          "cost": CostCfg(latency=True, latency_runs=1)})
    assert pick_device(s.resources.gpu) == CUDA
    t = build_trial(s)
    assert t.amp and t.scaler.is_enabled() and t.loader.pin_memory
    losses = []
    final = run_trial(s, report=lambda m, epoch: losses.append(m["train_loss"]))
    assert final["device"].startswith("cuda") and losses and all(math.isfinite(v) for v in losses)
    assert 0 <= final["mean_dice"] <= 100 and final["latency_ns_per_voxel"] > 0
    assert final["peak_mem_mb"] > 0 and final["train_peak_mem_mb"] > 0  # the allocator's high-water marks


def test_cuda_memory_is_the_allocators_high_water_mark():
    model = build_model("gsp_unet", in_channels=1, out_channels=1).to(CUDA)
    small, large = (1, 1, 16, 64, 64), (2, 1, 32, 64, 64)
    # Training keeps activations for the backward pass: more than inference, and 4x the batch
    # volume needs more of both (a reading that ignored the input would fail this).
    assert measure_training_memory(model, small) > measure_peak_memory(model, small) > 0
    assert measure_training_memory(model, large) > measure_training_memory(model, small)
