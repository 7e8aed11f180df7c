"""harness.ops.conv: batch-1 CPU 3D convolutions on oneDNN, and the channels-last backward with few
channels; equal to F.conv3d."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from harness.cost import count_macs, measure_training_memory
from harness.ops.conv import Conv3d, conv3d, onednn_convs

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


def _ops(fn) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events()}


@pytest.mark.parametrize("kw", [
    dict(kernel=3, padding=1),
    dict(kernel=(1, 3, 3), padding=(0, 1, 1)),
    dict(kernel=(3, 1, 1), padding=(1, 0, 0), bias=False),
    dict(kernel=3, stride=2, padding=1),
    dict(kernel=3, dilation=2, padding=2),
    dict(kernel=3, padding="same"),
    dict(kernel=(3, 1, 3), padding="valid"),
])
def test_batch_one_matches_f_conv3d_forward_and_backward(kw):
    kw = dict(kw)
    kernel, bias = kw.pop("kernel"), kw.pop("bias", True)
    k = (kernel,) * 3 if isinstance(kernel, int) else kernel
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 6, 10, 12, generator=g, requires_grad=True)
    w = torch.randn(6, 4 // kw.get("groups", 1), *k, generator=g, requires_grad=True)
    b = torch.randn(6, generator=g, requires_grad=True) if bias else None
    ours, ref = conv3d(x, w, b, **kw), F.conv3d(x, w, b, **kw)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn(ref.shape, generator=g)
    leaves = [t for t in (x, w, b) if t is not None]
    torch.testing.assert_close(torch.autograd.grad(ours, leaves, grad), torch.autograd.grad(ref, leaves, grad),
                               rtol=1e-4, atol=1e-4)


def test_batch_one_runs_on_onednn_where_pytorch_falls_back():
    # 1 x 8 x 8 x 32 = 2048 <= 20480: PyTorch's own rule takes slow_conv3d, forward and backward.
    x = torch.randn(1, 8, 8, 32, 32, requires_grad=True)
    w = torch.randn(8, 8, 3, 3, 3, requires_grad=True)
    plain = _ops(lambda: F.conv3d(x, w, padding=1).sum().backward())
    assert "aten::slow_conv3d_forward" in plain  # if this fails, PyTorch changed its rule: re-measure the module's table
    ours = _ops(lambda: conv3d(x, w, padding=1).sum().backward())
    assert "aten::mkldnn_convolution" in ours
    assert not {"aten::slow_conv3d_forward", "aten::slow_conv3d_backward"} & ours
    assert x.grad is not None and w.grad is not None


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # PyTorch's, for "uneven same"
@pytest.mark.parametrize("case", ["batch2", "pointwise", "float64", "uneven same", "large map", "groups"])
def test_left_to_pytorch_bit_for_bit(case):
    # Where PyTorch's rule already takes oneDNN (a map with C D H > 20480, groups > 1), and where
    # the fallback is faster or oneDNN cannot help, the op is F.conv3d's.
    n, c, d, k, groups, dtype = {
        "batch2": (2, 4, 6, 3, 1, torch.float32), "pointwise": (1, 4, 6, 1, 1, torch.float32),
        "float64": (1, 4, 6, 3, 1, torch.float64), "uneven same": (1, 4, 6, 2, 1, torch.float32),
        "large map": (1, 24, 128, 3, 1, torch.float32), "groups": (1, 4, 6, 3, 2, torch.float32)}[case]
    x = torch.randn(n, c, d, 8, 8, dtype=dtype)
    w = torch.randn(4, c // groups, k, k, k, dtype=dtype)
    pad = "same" if case == "uneven same" else k // 2
    assert torch.equal(conv3d(x, w, padding=pad, groups=groups), F.conv3d(x, w, padding=pad, groups=groups))
    assert "aten::to_mkldnn" not in _ops(lambda: conv3d(x, w, padding=pad, groups=groups))


class _BackwardLayouts(TorchDispatchMode):
    """Records whether each ``aten::convolution_backward`` got channels-last gradient and input."""

    def __init__(self):
        super().__init__()
        self.channels_last = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default:
            cl = torch.channels_last_3d
            self.channels_last.append(args[0].is_contiguous(memory_format=cl) and args[1].is_contiguous(memory_format=cl)
                                      and not args[1].is_contiguous())
        return func(*args, **(kwargs or {}))


def _layouts_and_grads(conv, x, w, b, **kw):
    xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
    bs = None if b is None else b.clone().requires_grad_()
    y = conv(xs, ws, bs, **kw)
    with _BackwardLayouts() as mode:
        y.backward(torch.linspace(-1, 1, y.numel()).reshape(y.shape))
    return y.detach(), [t.grad for t in (xs, ws, bs) if t is not None], mode.channels_last


@pytest.mark.parametrize("kw", [
    dict(n=2, cin=8, cout=8, kernel=3, padding=1),
    dict(n=2, cin=4, cout=8, kernel=3, stride=2, padding=1, bias=False),
    dict(n=3, cin=13, cout=8, kernel=3, padding="same"),
    dict(n=2, cin=24, cout=8, kernel=(1, 3, 3), padding=(0, 1, 1)),
    dict(n=2, cin=2, cout=1, kernel=7, padding=3, bias=False),  # CBAM's spatial gate
])
def test_few_channels_backward_in_channels_last(kw):
    # The forward is F.conv3d's bit for bit; the backward runs on channels-last copies and its
    # gradients, handed back dense, equal PyTorch's to float rounding.
    kw = dict(kw)
    n, cin, cout, kernel, bias = *(kw.pop(k) for k in ("n", "cin", "cout", "kernel")), kw.pop("bias", True)
    kernel = (kernel,) * 3 if isinstance(kernel, int) else kernel
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(n, cin, 6, 10, 12, generator=gen), torch.randn(cout, cin, *kernel, generator=gen)
    b = torch.randn(cout, generator=gen) if bias else None
    y, grads, layouts = _layouts_and_grads(conv3d, x, w, b, **kw)
    y_ref, grads_ref, layouts_ref = _layouts_and_grads(F.conv3d, x, w, b, **kw)
    assert torch.equal(y, y_ref)
    assert layouts == [True] and layouts_ref == [False]
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert g.is_contiguous() and g.shape == g_ref.shape
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", ["32 channels in", "1 channel in", "16 -> 16", "groups", "pointwise", "batch 1", "no grad"])
def test_backward_left_dense_outside_the_rule(case):
    n, cin, cout, k, groups = {"32 channels in": (2, 32, 8, 3, 1), "1 channel in": (2, 1, 8, 3, 1),
                               "16 -> 16": (2, 16, 16, 3, 1), "groups": (2, 8, 8, 3, 2), "pointwise": (2, 8, 8, 1, 1),
                               "batch 1": (1, 8, 8, 3, 1), "no grad": (2, 8, 8, 3, 1)}[case]
    x, w = torch.randn(n, cin, 4, 6, 6), torch.randn(cout, cin // groups, k, k, k)
    if case == "no grad":
        with torch.no_grad():
            assert torch.equal(conv3d(x, w, padding=k // 2), F.conv3d(x, w, padding=k // 2))
        return
    _, grads, layouts = _layouts_and_grads(conv3d, x, w, None, padding=k // 2, groups=groups)
    _, grads_ref, _ = _layouts_and_grads(F.conv3d, x, w, None, padding=k // 2, groups=groups)
    assert layouts in ([False], [])  # [] at batch 1: its oneDNN route's backward takes oneDNN tensors
    if case != "batch 1":  # the batch-1 route sums in another order (its own test above)
        assert all(torch.equal(g, r) for g, r in zip(grads, grads_ref, strict=True))


@pytest.mark.filterwarnings("ignore:TF32 acceleration")  # mkldnn.flags() sets TF32 too
def test_disabled_onednn_and_tracing_leave_pytorch_alone():
    x, w = torch.randn(1, 4, 6, 8, 8), torch.randn(5, 4, 3, 3, 3)
    with torch.backends.mkldnn.flags(enabled=False):
        assert torch.equal(conv3d(x, w, padding=1), F.conv3d(x, w, padding=1))
    traced = torch.jit.trace(lambda t: conv3d(t, w, padding=1), x)
    assert "to_mkldnn" not in str(traced.graph) and "aten::_convolution" in str(traced.graph)


@pytest.mark.filterwarnings("ignore:TF32 acceleration")
def test_training_memory_is_pytorchs():
    # Only the dense input is saved for the backward: a oneDNN copy kept per layer doubled this.
    net = onednn_convs(nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
                                     nn.Conv3d(8, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(), nn.Conv3d(8, 1, 1)))
    ours = measure_training_memory(net, [1, 1, 8, 32, 32])
    with torch.backends.mkldnn.flags(enabled=False):
        plain = measure_training_memory(net, [1, 1, 8, 32, 32])
    assert ours <= 1.1 * plain, (ours, plain)


def test_module_swap_keeps_weights_and_counts():
    net = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 4, 3, padding=1, padding_mode="replicate"),
                        nn.Conv3d(4, 3, 1))
    x = torch.randn(1, 2, 6, 8, 8)
    ref, state = net(x), {k: v.clone() for k, v in net.state_dict().items()}
    macs = count_macs(net, x.shape)["macs"]
    assert onednn_convs(net) is net
    assert [type(m) for m in net if isinstance(m, nn.Conv3d)] == [Conv3d] * 3
    assert net.state_dict().keys() == state.keys() and all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)  # replicate padding included
    assert count_macs(net, x.shape)["macs"] == macs


def test_the_cpu_layer_switch_leaves_plain_pytorch_bit_for_bit(monkeypatch):
    # HARNESS_CPU_KERNELS=0: the convolution route, the upsampling kernel and Group Shift's race
    # are off; each op is then exactly the plain PyTorch computation.
    import torch.nn.functional as F

    from harness.families.gsp_conv.group_shift import shift_boxes, group_shift
    from harness.ops import conv3d, upsample_trilinear2x

    monkeypatch.setenv("HARNESS_CPU_KERNELS", "0")
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(1, 4, 8, 16, 16, generator=g), torch.randn(8, 4, 3, 3, 3, generator=g)
    assert torch.equal(conv3d(x, w, None, 1, 1), F.conv3d(x, w, None, 1, 1))
    assert torch.equal(upsample_trilinear2x(x), F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False))
    assert torch.equal(group_shift(x, (2, 2, 2), 0.5), shift_boxes(x.contiguous(), (2, 2, 2), 0.5, False))


def test_a_plugin_net_keeps_its_own_convolutions_and_a_family_net_gets_the_route():
    from harness.families.gsp_conv.gsp_unet import GSPUNet
    from harness.models import build_model
    from harness.registry import MODELS

    @MODELS.register("test_plain_conv_net")
    def plain(in_channels: int = 1, out_channels: int = 1):
        return torch.nn.Conv3d(in_channels, out_channels, 3)

    try:
        assert type(build_model("test_plain_conv_net")) is torch.nn.Conv3d
        assert any(type(m) is Conv3d for m in build_model("gsp_unet", in_channels=1, out_channels=1).modules())
        assert GSPUNet.__module__.startswith("harness.families.")
    finally:
        MODELS._items.pop("test_plain_conv_net")
