"""ConResNet (Zhang et al., "Inter-slice context residual learning for 3D medical image
segmentation", IEEE TMI 2021) and its baseline, one registered net with Table III's switches.

Facts from the paper (Fig. 2, Eqs. 3-6) and the authors' code (docs/architectures.md; counts
pinned in tests/test_conresnet.py):

- Every 3^3 and 1^3 conv is weight-standardised and bias-free; GroupNorm(8); pre-activation
  (GN -> ReLU -> conv). Encoder (width w = 32): conv in->w, 1 residual block @w (skip 1);
  GN-ReLU-conv w->2w stride 2, 2 blocks (skip 2); 2w->4w stride 2, 2 blocks (skip 3); 4w->8w
  stride 2, 2 blocks, 2 blocks with dilation 2; fusion GN-ReLU-Dropout3d(0.1)-conv 8w->4w.
  Residual block = (GN-ReLU-conv) x 2 + identity.
- Decoder, three stages (1/4: 4w->2w, 1/2: 2w->w, full: w->w): seg = upsample(previous) + skip
  (trilinear, align_corners=True), then a ``ContextResidualModule``. The first module's residual
  input is a 3^3 conv in->2w of the image's slice residual |x[s] - x[s-1]|, resized to 1/4
  (the paper never mentions this input); the second projects the upsampled previous O_res
  (GN-ReLU-conv 2w->w), the third takes it as is.
- Heads (1^3 with bias): segmentation w->K; residual heads w->R (full), w->R (1/2), 2w->R (1/4),
  the coarse ones upsampled to the input size. K = R regions (sigmoid, "binary" mode: ET/WT/TC)
  or R + 1 (softmax, "multi-class": background + R classes); residual heads always predict
  the R foreground channels (Sec. V-D: the background's residual is ignored).
- ``mapping=False`` is the paper's baseline (same encoder and segmentation decoder, no ConRes
  decoder): 18,783,715 parameters at 4 in / 3 out (paper Table VII: 18.8M). ConResNet:
  19,018,732, the parameters its forward pass uses; the authors' code instantiates 19,441,196
  of which 422,464 are never used (e.g. a second residual conv per module). Table VII's 19.3M
  lies between the two. Multi-class adds one segmentation channel: +33.
- Table VII's "GFLOPs" at 80 x 160 x 160 are multiply-accumulates: the convs alone give
  453.18 G (baseline) and 537.52 G (ConResNet) against the paper's 453.9 / 538.5; fvcore also
  counts GroupNorm, upsampling, sigmoids and additions.

Any input whose sizes are divisible by 8 works (the authors' code fixes its interpolation
sizes for 80 x 160 x 160: we resize to the skip's size instead).

Training output (``harness.contract``): ``{"seg": logits, "res": [full, half, quarter],
"res_axis": axis}``, the residual heads' logits at the input size; the baseline returns the
segmentation logits. In eval mode both return the segmentation logits only: the residual
heads are not computed (their 0.23 G conv MACs at 80 x 160 x 160 are in the paper's count, not
in an inference's), nor the residual path when no attention reads it.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness.families.conresnet.context_residual import GNReLUConv, ContextResidualModule, conv3, slice_residual, view_axis
from harness.registry import MODELS


class PreActBlock(nn.Module):
    """x + conv(relu(gn(conv(relu(gn(x)))))) with ``dilation`` (the authors' ``NoBottleneck``).

    Shapes: (N, C, D, H, W) -> (N, C, D, H, W).
    """

    def __init__(self, channels: int, dilation: int = 1, weight_std: bool = True):
        super().__init__()
        self.body = nn.Sequential(GNReLUConv(channels, channels, dilation=dilation, weight_std=weight_std),
                                  GNReLUConv(channels, channels, dilation=dilation, weight_std=weight_std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _up(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="trilinear", align_corners=True)


@MODELS.register("conresnet")
class ConResNet(nn.Module):
    """ConResNet / its baseline (module docstring).

    Args:
        in_channels: image channels (BraTS: 4).
        out_channels: segmentation channels K (injected: R, or R + 1 under softmax).
        width: w, the first stage's width (the paper: 32; widths w, 2w, 4w, 8w).
        blocks: residual blocks per encoder stage, the last two at 8w (the second dilated).
        mapping: context residual mapping (the ConRes decoder, Eqs. 4-5); false = the baseline.
        attention: context attention mapping (Eq. 6); needs ``mapping``.
        view: the residual axis (``axial``, ``coronal``, ``sagittal``; Table IV).
        output: ``sigmoid`` or ``softmax`` (injected from ``train.output``).
        dropout: Dropout3d before the fusion conv.
        weight_std: weight-standardised convs (the authors used them in both nets).

    Shapes: (N, in_channels, D, H, W) -> (N, out_channels, D, H, W); D, H, W divisible by 8.
    """

    default_input_size = (16, 32, 32)
    # Width 16 (the paper: 32) in the efficiency landscape, whose quick scale trains every family
    # for 200 steps on 2 CPU cores; the paper's nets are costed in conres_table7_cost.
    landscape = {"baseline_w16": {"mapping": False, "attention": False, "width": 16}, "w16": {"width": 16}}

    def __init__(self, in_channels: int = 4, out_channels: int = 3, width: int = 32,
                 blocks: Sequence[int] = (1, 2, 2, 2, 2), mapping: bool = True, attention: bool = True,
                 view: str = "axial", output: str = "sigmoid", dropout: float = 0.1, weight_std: bool = True):
        super().__init__()
        if width < 8 or width % 8:
            raise ValueError(f"model.width: must be a positive multiple of 8 (GroupNorm(8)), got {width}")
        if len(blocks) != 5 or min(blocks) < 0:
            raise ValueError(f"model.blocks: five non-negative block counts, got {list(blocks)}")
        if output not in ("sigmoid", "softmax"):
            raise ValueError(f"train.output: unknown {output!r}; allowed: sigmoid, softmax")
        regions = out_channels - (output == "softmax")
        if regions < 1:
            raise ValueError(f"out_channels: {out_channels} leaves no region under {output}")
        self.axis, self.mapping, self.attention = view_axis(view), mapping, attention
        w, ws = width, weight_std
        self.stem = conv3(in_channels, w, weight_std=ws)
        self.stage1 = nn.Sequential(*[PreActBlock(w, weight_std=ws) for _ in range(blocks[0])])
        self.down2 = GNReLUConv(w, 2 * w, stride=2, weight_std=ws)
        self.stage2 = nn.Sequential(*[PreActBlock(2 * w, weight_std=ws) for _ in range(blocks[1])])
        self.down3 = GNReLUConv(2 * w, 4 * w, stride=2, weight_std=ws)
        self.stage3 = nn.Sequential(*[PreActBlock(4 * w, weight_std=ws) for _ in range(blocks[2])])
        self.down4 = GNReLUConv(4 * w, 8 * w, stride=2, weight_std=ws)
        self.stage4 = nn.Sequential(*[PreActBlock(8 * w, weight_std=ws) for _ in range(blocks[3])],
                                    *[PreActBlock(8 * w, dilation=2, weight_std=ws) for _ in range(blocks[4])])
        self.fusion = GNReLUConv(8 * w, 4 * w, dropout=dropout, weight_std=ws)
        kw = dict(axis=self.axis, mapping=mapping, attention=attention, weight_std=ws)
        self.dec4 = ContextResidualModule(4 * w, 2 * w, in_channels, "image", **kw)
        self.dec2 = ContextResidualModule(2 * w, w, 2 * w, "project", **kw)
        self.dec1 = ContextResidualModule(w, w, w, "identity", **kw)
        self.seg_head = nn.Conv3d(w, out_channels, 1)
        if mapping:
            self.res_heads = nn.ModuleList([nn.Conv3d(w, regions, 1), nn.Conv3d(w, regions, 1),
                                            nn.Conv3d(2 * w, regions, 1)])

    def check_input(self, size: Sequence[int]) -> None:
        if any(int(s) % 8 for s in size):
            raise ValueError(f"train.patch: ConResNet halves the input three times, so every size must be "
                             f"divisible by 8; got {list(size)}")

    def forward(self, x: torch.Tensor):
        self.check_input(x.shape[2:])
        skip1 = self.stage1(self.stem(x))
        skip2 = self.stage2(self.down2(skip1))
        skip3 = self.stage3(self.down3(skip2))
        y = self.fusion(self.stage4(self.down4(skip3)))
        # The residual path runs when it is trained or feeds the segmentation (attention): an
        # inference without attention skips it, and is costed so.
        residual = self.mapping and (self.training or self.attention)
        res4 = _up(slice_residual(x, self.axis), skip3.shape[2:]) if residual else None
        seg4, res4 = self.dec4(_up(y, skip3.shape[2:]) + skip3, res4)
        seg2, res2 = self.dec2(_up(seg4, skip2.shape[2:]) + skip2, _up(res4, skip2.shape[2:]) if residual else None)
        seg1, res1 = self.dec1(_up(seg2, skip1.shape[2:]) + skip1, _up(res2, skip1.shape[2:]) if residual else None)
        seg = self.seg_head(seg1)
        if not self.training or not self.mapping:
            return seg
        size = x.shape[2:]
        heads = [self.res_heads[0](res1), _up(self.res_heads[1](res2), size), _up(self.res_heads[2](res4), size)]
        return {"seg": seg, "res": heads, "res_axis": self.axis}
