"""3D convolution on oneDNN's fast CPU paths: at batch 1, and in the backward with few channels.

Why: PyTorch picks a CPU convolution backend by a rule written for 2D images
(``ConvParams::use_mkldnn``, aten/src/ATen/native/Convolution.cpp, torch 2.13): a float32
convolution goes to oneDNN if (a) it is strided or dilated, N >= 16, its kernel is not 1 x 1 in
its last two dims, or torch runs more than one thread, and (b) ``groups > 1``, both of those
kernel dims exceed 3, N > 1, or ``N * C * size(2) * size(3) > 20480``. For a 5D input that
product is N C D H: W is left out. At batch 1 most 3D feature maps fail (b) (1 x 8 x 16 x 128 =
16,384), and both passes then run ``slow_conv3d`` (im2col + GEMM), several times slower than
oneDNN (``harness bench``, batch-1 convolution table; docs/performance.md): a CPU latency of a
3D net would measure that fallback, not the method.

First route: ``conv3d`` evaluates the same rule and hands the convolutions it would leave to the
fallback (but 1 x 1 x 1 kernels, where the fallback's GEMM is faster) to oneDNN by passing its
input as a oneDNN tensor (``Tensor.to_mkldnn``, which the rule accepts as is), in the forward
and in the backward (``aten::convolution_backward``); tensors stay dense (NCDHW) between layers,
and only the dense input is saved, as ``F.conv3d`` saves it. The same sums in another order:
results equal ``F.conv3d``'s to float rounding (about 1e-6 relative).

Second route, the backward at N > 1 with few channels: oneDNN's backward of a dense NCDHW input
with fewer than 16 channels (one AVX-512 vector) runs a slow implementation; given channels-last
(NDHWC) copies it runs its fast kernels. ``conv3d`` runs the backward in channels-last where
groups = 1, N > 1, the kernel is not 1 x 1 x 1, 2 <= C_in <= 24 and min(C_in, C_out) < 16 (the
band where it was faster over every convolution the quick studies train:
docs/performance.md); the forward is ``F.conv3d``'s, bit for bit, and gradients equal the plain
route's to float rounding, so a seed reproduces itself, not runs made without the route.

Untouched, so bit-identical to ``F.conv3d``: convolutions the rule already gives oneDNN (batch
1), non-float32 inputs, other devices, oneDNN disabled
(``torch.backends.mkldnn.flags(enabled=False)``), "same" padding of an even dilated kernel,
``HARNESS_CPU_KERNELS=0``, and tracing (so fvcore counts the same ``aten::_convolution``).

Shapes: as ``torch.nn.functional.conv3d``, input (N, C_in, D, H, W) -> (N, C_out, D', H', W').
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _triple

from harness.ops import native


def _onednn_at_batch_one(x: torch.Tensor, weight: torch.Tensor, stride, dilation, groups: int) -> bool:
    """True where PyTorch's rule (module docstring) sends this CPU float32 batch-1 convolution
    to its fallback and oneDNN is faster: every kernel but 1 x 1 x 1. Where the rule already
    picks oneDNN (large maps, groups > 1, 4+ x 4+ kernels) the route's two layout conversions
    would only cost (docs/performance.md)."""
    if (torch.jit.is_tracing() or torch.compiler.is_compiling()  # first: no traced shape tests
            or x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 5 or x.shape[0] != 1
            or weight.shape[2:].numel() == 1 or not torch.backends.mkldnn.is_available()
            or not torch.backends.mkldnn.enabled):
        return False
    kh, kw = weight.shape[-2:]
    c, d, h = x.shape[1:4]
    rule_first = (any(s > 1 for s in _triple(stride)) or any(v > 1 for v in _triple(dilation)) or kw != 1 or kh != 1
                  or torch.get_num_threads() > 1)
    rule_second = groups > 1 or (kw > 3 and kh > 3) or c * d * h > 20480
    return not (rule_first and rule_second)


def _int_padding(padding, weight: torch.Tensor, dilation) -> list[int] | None:
    """``padding`` as three ints ("valid": 0; "same": half the dilated kernel), or None where
    "same" needs uneven padding (an even dilated kernel), which ``F.conv3d`` pads itself."""
    if padding == "valid":
        return [0, 0, 0]
    if padding == "same":
        total = [d * (k - 1) for d, k in zip(_triple(dilation), weight.shape[2:])]
        return None if any(t % 2 for t in total) else [t // 2 for t in total]
    return list(_triple(padding))


class _RoutedConv3d(torch.autograd.Function):
    """A convolution whose forward and backward run on layout copies made by ``layout``:
    ``to_mkldnn`` (batch-1 route: forward and backward on oneDNN tensors) or ``channels_last``
    (few-channel route: the forward is ``F.conv3d``'s, the backward on channels-last copies of
    gradient, input and weight). Either way only the dense input and the weight are saved, as
    ``F.conv3d`` saves them (a oneDNN copy kept per layer doubled a 3D U-Net's training memory at
    batch 1), and the layers around get dense NCDHW tensors back."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, layout):
        ctx.save_for_backward(x, weight)
        ctx.conv = (None if bias is None else list(bias.shape), stride, padding, dilation, groups, layout)
        if layout == "to_mkldnn":
            return F.conv3d(x.contiguous().to_mkldnn(), weight, bias, stride, padding, dilation, groups).to_dense()
        return F.conv3d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        bias_sizes, stride, padding, dilation, groups, layout = ctx.conv
        if layout == "to_mkldnn":
            grad, x = grad.contiguous().to_mkldnn(), x.contiguous().to_mkldnn()
        else:
            cl = torch.channels_last_3d
            grad, x, weight = (t.contiguous(memory_format=cl) for t in (grad, x, weight))
        gx, gw, gb = torch.ops.aten.convolution_backward(grad, x, weight, bias_sizes, stride, padding, dilation,
                                                         False, [0, 0, 0], groups, list(ctx.needs_input_grad[:3]))
        dense = (lambda t: t.to_dense()) if layout == "to_mkldnn" else (lambda t: t.contiguous())
        return (None if gx is None else dense(gx), None if gw is None else gw.contiguous(), gb,
                None, None, None, None, None)


def _channels_last_backward(x: torch.Tensor, weight: torch.Tensor, groups: int) -> bool:
    """True where oneDNN's backward is faster on channels-last copies (module docstring): a CPU
    float32 training convolution with N > 1, groups = 1, a kernel larger than 1 x 1 x 1,
    2 <= C_in <= 24 and min(C_in, C_out) < 16."""
    if (torch.jit.is_tracing() or torch.compiler.is_compiling() or not torch.is_grad_enabled()
            or not (x.requires_grad or weight.requires_grad) or x.device.type != "cpu" or x.dtype != torch.float32
            or x.dim() != 5 or x.shape[0] < 2 or groups != 1 or weight.shape[2:].numel() == 1
            or not torch.backends.mkldnn.is_available() or not torch.backends.mkldnn.enabled):
        return False
    cin, cout = weight.shape[1], weight.shape[0]
    return 2 <= cin <= 24 and min(cin, cout) < 16


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> torch.Tensor:
    """``F.conv3d``, on oneDNN at batch 1 on the CPU, its backward in channels-last where few
    channels make the dense layout's slow (module docstring)."""
    if not native.enabled():
        return F.conv3d(x, weight, bias, stride, padding, dilation, groups)
    if _onednn_at_batch_one(x, weight, stride, dilation, groups):
        layout = "to_mkldnn"
    elif _channels_last_backward(x, weight, groups):
        layout = "channels_last"
    else:
        return F.conv3d(x, weight, bias, stride, padding, dilation, groups)
    pad = _int_padding(padding, weight, dilation)
    if pad is None:
        return F.conv3d(x, weight, bias, stride, padding, dilation, groups)
    return _RoutedConv3d.apply(x, weight, bias, list(_triple(stride)), pad, list(_triple(dilation)), groups, layout)


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` whose convolution is ``conv3d`` (same parameters, state dict and repr)."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv3d(x, weight, bias, self.stride, 0, dilation=self.dilation, groups=self.groups)
        return conv3d(x, weight, bias, self.stride, self.padding, dilation=self.dilation, groups=self.groups)


def onednn_convs(model: nn.Module) -> nn.Module:
    """``model`` with every plain ``nn.Conv3d`` turned into ``Conv3d`` in place (the class only:
    parameters, buffers and hooks stay). Subclasses with their own forward (``WSConv3d``) call
    ``conv3d`` themselves. ``build_model`` applies this to every registered model."""
    for m in model.modules():
        if type(m) is nn.Conv3d:
            m.__class__ = Conv3d
    return model
