"""Context residual (ConResNet, Zhang et al., IEEE TMI 2021, Sec. III-C): inter-slice differences.

Eq. (4): G[s] = |sigma(F[s]) - sigma(F[s-1])| for s >= 1, and G[0] = 0 (the paper pads the first
slice so that G has F's size). The same difference, without the sigmoid, gives the image's
residual input of the first context residual module (|x[s] - x[s-1]| of the MR channels, the
authors' code) and the residual targets of the labels (Eq. 13: |Y[s] - Y[s-1]| per class).

The slice axis is the residual *view* (Table IV). Tensors are (N, C, D, H, W) with D = z
(axial slices), H = y (coronal slices), W = x (sagittal slices), the harness's folder convention;
differences between adjacent slices of a view run along the axis the slices are stacked on:

    axial -> dim 2 (D), coronal -> dim 3 (H), sagittal -> dim 4 (W).

The paper describes the sagittal view as differences "along longitudinal axis"; we take the
view's stacking axis, which is what "adjacent sagittal slices" means.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.ops.conv import conv3d
from harness.registry import OPS

VIEWS = {"axial": 2, "coronal": 3, "sagittal": 4}


def view_axis(view: str) -> int:
    """The tensor dim a residual view differences along (module docstring)."""
    if view not in VIEWS:
        raise ValueError(f"model.view: unknown {view!r}; allowed: {', '.join(VIEWS)}")
    return VIEWS[view]


def slice_residual(x: torch.Tensor, axis: int) -> torch.Tensor:
    """r[s] = |x[s] - x[s-1]| along ``axis`` for s >= 1, r[0] = 0 (Eqs. 4 and 13 without sigma).

    Shapes: (N, C, D, H, W) -> (N, C, D, H, W).
    """
    n = x.shape[axis]
    diff = (x.narrow(axis, 1, n - 1) - x.narrow(axis, 0, n - 1)).abs()
    pad = [0, 0] * (x.dim() - 1 - axis) + [1, 0]  # F.pad lists the last dim first: one zero slice in front
    return F.pad(diff, pad)


@OPS.register("context_residual")
def context_residual(features: torch.Tensor, axis: int = 2) -> torch.Tensor:
    """G = |sigma(F)[s] - sigma(F)[s-1]| along ``axis``, G[0] = 0 (Eq. 4).

    Shapes: (N, C, D, H, W) -> (N, C, D, H, W).
    """
    return slice_residual(torch.sigmoid(features), axis)


class WSConv3d(nn.Conv3d):
    """Conv3d with weight standardisation (Qiao et al. 2019), as in every ConResNet conv.

    W' = (W - mean(W_o)) / sqrt(var(W_o) + 1e-12) per output filter o, the variance unbiased
    (the authors' code); the convolution then uses W'. No bias by default.

    Shapes: as ``nn.Conv3d``.
    """

    def __init__(self, *args, bias: bool = False, **kwargs):
        super().__init__(*args, bias=bias, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        flat = w.flatten(1)
        w = (w - flat.mean(1).view(-1, 1, 1, 1, 1)) / torch.sqrt(flat.var(1) + 1e-12).view(-1, 1, 1, 1, 1)
        return conv3d(x, w, self.bias, self.stride, self.padding, dilation=self.dilation, groups=self.groups)


def conv3(cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1, weight_std: bool = True) -> nn.Conv3d:
    """3^3 (or 1^3) conv without bias, 'same' padding, weight-standardised unless asked not to."""
    cls = WSConv3d if weight_std else nn.Conv3d
    return cls(cin, cout, kernel, stride=stride, padding=dilation * (kernel // 2), dilation=dilation, bias=False)


class GNReLUConv(nn.Sequential):
    """GroupNorm(8) -> ReLU -> conv (pre-activation). Shapes: (N, cin, ...) -> (N, cout, ...) / stride."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
                 weight_std: bool = True, dropout: float = 0.0):
        layers = [nn.GroupNorm(8, cin), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout3d(dropout))
        super().__init__(*layers, conv3(cin, cout, kernel, stride, dilation, weight_std=weight_std))


@OPS.register("context_residual_module")
class ContextResidualModule(nn.Module):
    """One stage of ConResNet's dual decoder (Fig. 2b), the segmentation and residual paths.

    Segmentation path, Eq. (3): F = Conv(I_seg + I_skip), Conv = GN -> ReLU -> 3^3 conv (the
    caller passes the sum as ``seg``). Context residual mapping, Eqs. (4)-(5):
        G = |sigma(F)[s] - sigma(F)[s-1]| along the view's axis, G[0] = 0,
        O_res = Conv(Conv_1x1(G) + I_res),
    where I_res is the residual input, brought to ``out_channels`` by ``res_input``:
        ``image``: a 3^3 conv of the image's slice residual (the first module, authors' code),
        ``project``: GN -> ReLU -> 3^3 conv of the previous O_res (widths differ),
        ``identity``: the previous O_res.
    Context attention mapping, Eq. (6): O_seg = F * (1 + sigma(O_res)); without it O_seg = F.
    With ``mapping=False`` the module is the baseline's decoder stage: O_seg = F, no O_res;
    given no residual input (``res=None``) it skips the residual path the same way.

    Args:
        in_channels, out_channels: widths of I_seg and O_seg / O_res.
        res_channels: channels of the residual input (the image's, or the previous O_res).
        res_input: ``image``, ``project`` or ``identity`` (above).
        axis: the dim the residual is taken along (``view_axis``).
        mapping, attention: the two switches of Table III (attention needs mapping).

    Shapes: seg (N, in, D, H, W), res (N, res_channels, D, H, W) ->
        (O_seg (N, out, D, H, W), O_res (N, out, D, H, W) or None).
    """

    def __init__(self, in_channels: int, out_channels: int, res_channels: int = 0, res_input: str = "identity",
                 axis: int = 2, mapping: bool = True, attention: bool = True, weight_std: bool = True):
        super().__init__()
        if attention and not mapping:
            raise ValueError("model.attention: the context attention mapping needs the context residual mapping "
                             "(mapping: true)")
        if res_input not in ("image", "project", "identity"):
            raise ValueError(f"res_input: unknown {res_input!r}; allowed: image, project, identity")
        if mapping and res_input == "identity" and res_channels != out_channels:
            raise ValueError(f"res_input identity needs res_channels == out_channels, got {res_channels} and {out_channels}")
        self.axis, self.mapping, self.attention = axis, mapping, attention
        self.seg = GNReLUConv(in_channels, out_channels, weight_std=weight_std)
        if mapping:
            self.g = conv3(out_channels, out_channels, kernel=1, weight_std=weight_std)
            self.res_in = {"image": lambda: conv3(res_channels, out_channels, weight_std=weight_std),
                           "project": lambda: GNReLUConv(res_channels, out_channels, weight_std=weight_std),
                           "identity": nn.Identity}[res_input]()
            self.res = GNReLUConv(out_channels, out_channels, weight_std=weight_std)

    def forward(self, seg: torch.Tensor, res: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        f = self.seg(seg)
        if res is None:  # the baseline, or an inference whose segmentation does not read O_res
            return f, None
        o_res = self.res(self.g(context_residual(f, self.axis)) + self.res_in(res))
        return (f * (1 + torch.sigmoid(o_res)) if self.attention else f), o_res
