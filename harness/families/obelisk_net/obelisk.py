"""OBELISK-Net family (Heinrich et al., MedIA 2019): the original OBELISK + 1x1 dense-net, the
Hybrid OBELISK+CNN, and the paper's U-Net baselines (all-conv, lean grouped, global FC).

Facts from the paper (Tables 1-2, Sec. 3.3) and the authors' code (docs/architectures.md, with
the parameter counts pinned in tests/test_obelisk.py):

- ``obelisk_net`` (Table 2, "OBELISK+1x1-Dense"): the image smoothed by stride-1 average pooling
  (paper: two 3^3; code: 5, 5, 3), one OBELISK layer (1024 binary offsets) on a regular grid at
  1/4 resolution, 1x1x1 1024C->256 (groups 4, no bias) + BN + ReLU, 1x1x1 256->128 (no bias) +
  BN, a dense block (128->32 + ReLU, then BN-1x1-ReLU 160->32, 192->32, 224->32; concat = 256),
  BN(256), 1x1x1 256->L with bias (Table 2 prints 32->L; the code reads all 256 channels).
  131,464 parameters with L = 8 (paper: 130k). ``binary=False``: 128,392 (paper "unary", 126k);
  ``learn_offsets=False``: 125,320 trainable (paper "Rand. Offsets", 124k). The paper's two
  figures come from an earlier model version no single net matches: pinned within 3%.
- ``obelisk_hybrid`` (Fig. 4): a shallow CNN (3^3 convs with bias + BN + leaky ReLU) and two
  unary OBELISK branches with 1x1 dense blocks whose outputs join the decoder. ``layout:
  tcia`` (the authors' TCIA net, leaky ReLU 0.025 throughout): 229,217 parameters with L = 9
  (paper: 230k); ``layout: visceral``: 230,208 with L = 8.
- ``obelisk_unet`` (Table 1 and Sec. 3.3): strided all-conv 3D U-Net, 3^3 convs with bias + BN +
  leaky ReLU 0.1, trilinear upsampling, a last 3^3 L->L conv. Defaults are the authors' TCIA
  code (widths 5/14/28/42/56/70): 883,740 parameters with L = 9 (paper: 880k). Table 1's
  widths 5/16/32/64/80 (decoder 64/32/9): 878,154. ``groups`` per Table-1 layer number gives
  the lean U-Net (groups 4 on #6, #7, #11, 8 on #8-#10): 201,642 against the paper's 220k,
  a gap its description does not close. ``bottleneck: fc`` is the global-FC U-Net: two Linear
  layers 9^3 x 20 -> 400 -> 9^3 x 20 with dropout at the bottom of a 5/10/30/50/20 encoder:
  11,944,816 parameters (the code; the paper's "16M" contradicts its own 11.7M for the FC
  layers) for 144^3 inputs.

Every net returns logits at the input's size (softmax over L classes incl. background); the
authors' original net returned half resolution, upsampled outside the model.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness.families.obelisk_net.obelisk_op import Obelisk, coarse_size, regular_grid
from harness.registry import MODELS


def _smooth(x: torch.Tensor, kernels: Sequence[int]) -> torch.Tensor:
    for k in kernels:  # stride-1 average pooling, zero padding counted (PyTorch's default, as the code)
        x = F.avg_pool3d(x, k, stride=1, padding=k // 2)
    return x


def _label_at(target: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The label (N, R, D, H, W) read at the points ``grid`` (N, S, 1, 1, 3): (N, R, S, 1, 1),
    nearest voxel (a label is never interpolated)."""
    return F.grid_sample(target.float(), grid.to(target.device), mode="nearest", align_corners=True)


class DenseBlock1x1(nn.Module):
    """1x1x1 dense block of the OBELISK nets: x -> cat(x, act(conv(bn(x)))) three times, then ``out``.

    The original net (``first_bn=False``) applies its first conv without BN (its input is already
    normalised) and ends with BN on the 256 concatenated channels; the hybrid's blocks end in
    BN -> 1x1 -> activation to ``out`` channels.

    Shapes: (B, width, ...) -> (B, width + 3 * growth, ...) when ``out`` is None, else (B, out, ...).
    """

    def __init__(self, width: int, growth: int = 32, layers: int = 3, out: int | None = None, first_bn: bool = True,
                 act=F.relu):
        super().__init__()
        self.act, self.first_bn = act, first_bn
        self.norms = nn.ModuleList()
        self.convs = nn.ModuleList()
        for i in range(layers):
            c = width + i * growth
            self.norms.append(nn.BatchNorm3d(c) if (i or first_bn) else nn.Identity())
            self.convs.append(nn.Conv3d(c, growth, 1, bias=False))
        c = width + layers * growth
        self.out = None if out is None else nn.Sequential(nn.BatchNorm3d(c), nn.Conv3d(c, out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, conv in zip(self.norms, self.convs):
            x = torch.cat([x, self.act(conv(norm(x)))], dim=1)
        return x if self.out is None else self.act(self.out(x))


@MODELS.register("obelisk_net")
class ObeliskNet(nn.Module):
    """Original OBELISK + 1x1 dense-net (Table 2; module docstring).

    Args:
        in_channels, out_channels: image channels and classes L (incl. background).
        offsets: K kernel elements of the OBELISK layer (1024 in the paper).
        binary, learn_offsets, init_std, align_corners: the OBELISK layer's (``harness.families.obelisk_net.obelisk_op``).
        grid_stride: the regular sampling grid's spacing in voxels (4: quarter resolution).
        smooth: kernel sizes of the stride-1 average poolings applied to the image first.
        sparse_points: in training, classify this many random points per image instead of the
            regular grid (Table 2's sparse training; the paper: 192) and return
            ``{"seg": (B, L, S, 1, 1), "points": (B, S, 1, 1, 3), "target_at": ...}``, the points in
            ``grid_sample``'s (x, y, z) coordinates (``align_corners=True``) and ``target_at`` the
            label read at them (the output contract); 0 trains densely. Evaluation always uses the regular grid.

    Shapes: (B, C, D, H, W) -> (B, L, D, H, W); the OBELISK layer samples ceil(D/s) x ceil(H/s)
    x ceil(W/s) points, the dense-net classifies each, and trilinear upsampling returns to D, H, W.
    """

    default_input_size = (32, 64, 64)
    landscape = {"binary_1024": {}, "unary_1024": {"binary": False}}

    def __init__(self, in_channels: int = 1, out_channels: int = 8, offsets: int = 1024, binary: bool = True,
                 learn_offsets: bool = True, init_std: float = 0.05, align_corners: bool = True, grid_stride: int = 4,
                 smooth: Sequence[int] = (3, 3), sparse_points: int = 0):
        super().__init__()
        if int(sparse_points) != sparse_points or sparse_points < 0:
            raise ValueError(f"model.sparse_points: must be a non-negative integer, got {sparse_points}")
        if sparse_points and not align_corners:
            raise ValueError("model.sparse_points: sampled points are read with align_corners=True (the contract)")
        self.sparse_points = int(sparse_points)
        if (in_channels * offsets) % 4:
            raise ValueError(f"model.offsets: in_channels x offsets ({in_channels} x {offsets}) must be divisible "
                             f"by 4 (the first 1x1 conv has 4 groups)")
        if any(int(k) != k or k < 1 or k % 2 == 0 for k in smooth):
            raise ValueError(f"model.smooth: kernel sizes must be odd positive integers, got {list(smooth)}")
        self.grid_stride, self.smooth = int(grid_stride), tuple(int(k) for k in smooth)
        self.obelisk = Obelisk(offsets, binary, learn_offsets, init_std, align_corners)
        self.reduce = nn.Sequential(
            nn.Conv3d(in_channels * offsets, 256, 1, groups=4, bias=False), nn.BatchNorm3d(256), nn.ReLU(),
            nn.Conv3d(256, 128, 1, bias=False), nn.BatchNorm3d(128),  # no activation before the dense block
        )
        self.dense = DenseBlock1x1(128, 32, layers=4, first_bn=False)
        self.head = nn.Sequential(nn.BatchNorm3d(256), nn.Conv3d(256, out_channels, 1))

    def check_input(self, spatial: Sequence[int]) -> None:
        if any(s < self.grid_stride for s in spatial):
            raise ValueError(f"patch {tuple(spatial)}: every side must be >= grid_stride {self.grid_stride}")

    def forward(self, x: torch.Tensor, grid: torch.Tensor | None = None):
        size = x.shape[2:]
        sparse = grid is None and self.training and self.sparse_points > 0
        if sparse:  # points uniform over the volume, fresh each step
            grid = torch.rand(x.shape[0], self.sparse_points, 1, 1, 3, device=x.device) * 2 - 1
        elif grid is None:
            grid = regular_grid(coarse_size(size, self.grid_stride), self.obelisk.align_corners, x.device)
        f = self.head(self.dense(self.reduce(self.obelisk(_smooth(x, self.smooth), grid.to(x.dtype)))))
        if sparse:  # the loss reads the label where the net predicted (harness.contract: target_at)
            return {"seg": f, "points": grid, "target_at": partial(_label_at, grid=grid)}
        return F.interpolate(f, size=size, mode="trilinear", align_corners=False)


def _conv3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=stride, padding=1, groups=groups), nn.BatchNorm3d(cout))


@MODELS.register("obelisk_hybrid")
class ObeliskHybrid(nn.Module):
    """Hybrid OBELISK+CNN (Fig. 4, Sec. 3.3 item 4; module docstring), two published layouts.

    ``tcia`` (the TCIA net): CNN 1->4 @1, 4->16 /2, 16->16 @1/2 (skip), 16->32 /2, 32->32, 32->32
    @1/4; branch 1 samples the 3^3-smoothed image on a 1/4 grid with 128 offsets, 1x1 128->128
    (groups 2), dense block, 224->16, upsampled to 1/2; branch 2 samples the twice-smoothed image
    on a 1/8 grid with 512 offsets (the code's 18x36x18 grid reads as a typo for 18^3), 1x1
    512->128 (groups 4), dense block, 224->32, upsampled to 1/4; decoder 64->32 @1/4, up,
    cat(32, 16, 16) 64->12 @1/2, up, cat(12, 4) 16->L + BN + act @1, 1x1 L->L with bias.
    ``visceral``: CNN 1->4, 4->16 /2, 16->16, 16->32 /2; branch 1 samples the 4 first-layer
    features on a 1/4 grid (128 offsets, 1x1 512->128 groups 4, dense, 224->32, up to 1/2);
    branch 2 as ``tcia``; decoder 64->32 @1/4, up, cat(32, 32, 16) 80->32 @1/2, 1x1 32->L, up.

    Args:
        in_channels, out_channels: image channels and classes L.
        layout: ``tcia`` or ``visceral``.
        offsets: (K1, K2) of the two OBELISK branches (128, 512).
        leak: leaky ReLU slope of the CNN (tcia 0.025 everywhere; visceral 0.05, ReLU in branches).
        learn_offsets, init_std, align_corners: the OBELISK layers'.

    Shapes: (B, C, D, H, W) -> (B, L, D, H, W), any side >= 8: strided convs and grids round up
    (the code's ``(n + 1) // 2``) and every upsampling goes to the size of the features it joins,
    so VISCERAL's 156 x 115 x 160 works as it is.
    """

    default_input_size = (32, 64, 64)
    landscape = {"tcia": {}}

    def __init__(self, in_channels: int = 1, out_channels: int = 9, layout: str = "tcia",
                 offsets: Sequence[int] = (128, 512), leak: float | None = None, learn_offsets: bool = True,
                 init_std: float = 0.05, align_corners: bool = True):
        super().__init__()
        if layout not in ("tcia", "visceral"):
            raise ValueError(f"model.layout: unknown layout {layout!r}; allowed: tcia, visceral")
        k1, k2 = (int(k) for k in offsets)
        self.layout = layout
        tcia = layout == "tcia"
        self.leak = (0.025 if tcia else 0.05) if leak is None else float(leak)
        branch_act = (lambda t: F.leaky_relu(t, self.leak)) if tcia else F.relu
        self.branch_act = branch_act
        cnn = [(in_channels, 4, 1), (4, 16, 2), (16, 16, 1), (16, 32, 2)] + ([(32, 32, 1), (32, 32, 1)] if tcia else [])
        self.cnn = nn.ModuleList(_conv3(a, b, s) for a, b, s in cnn)
        c1 = in_channels if tcia else 4  # branch 1 reads the smoothed image (tcia) or the first features
        if (c1 * k1) % (2 if tcia else 4) or (in_channels * k2) % 4:
            raise ValueError(f"model.offsets: {list(offsets)} x channels must be divisible by the 1x1 groups")
        self.obelisk1 = Obelisk(k1, False, learn_offsets, init_std, align_corners)
        self.obelisk2 = Obelisk(k2, False, learn_offsets, init_std, align_corners)
        self.lin1 = nn.Conv3d(c1 * k1, 128, 1, groups=2 if tcia else 4, bias=False)
        self.lin2 = nn.Conv3d(in_channels * k2, 128, 1, groups=4, bias=False)
        self.dense1 = DenseBlock1x1(128, 32, 3, out=16 if tcia else 32, act=branch_act)
        self.dense2 = DenseBlock1x1(128, 32, 3, out=32, act=branch_act)
        self.dec4 = _conv3(64, 32)
        if tcia:
            self.dec2 = _conv3(64, 12)
            self.dec1 = _conv3(16, out_channels)
            self.head = nn.Conv3d(out_channels, out_channels, 1)
        else:
            self.dec2 = _conv3(80, 32)
            self.head = nn.Conv3d(32, out_channels, 1)

    def check_input(self, spatial: Sequence[int]) -> None:
        if any(s < 8 for s in spatial):
            raise ValueError(f"patch {tuple(spatial)}: every side must be at least 8 (the 1/8 grid)")

    def _branch(self, x, obelisk, lin, dense, stride, size):
        grid = regular_grid(coarse_size(x.shape[2:], stride), obelisk.align_corners, x.device).to(x.dtype)
        f = dense(self.branch_act(lin(obelisk(x, grid))))
        return F.interpolate(f, size=size, mode="trilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        act = lambda t: F.leaky_relu(t, self.leak)  # noqa: E731
        x0 = _smooth(x, (3,))
        x1 = act(self.cnn[0](x))
        h = act(self.cnn[1](x1))
        x2 = act(self.cnn[2](h))
        h = x2
        for conv in self.cnn[3:]:
            h = act(conv(h))
        half, quarter = x2.shape[2:], h.shape[2:]
        o1 = self._branch(x0 if self.layout == "tcia" else x1, self.obelisk1, self.lin1, self.dense1, 4, size=half)
        o2 = self._branch(_smooth(x0, (3,)) if self.layout == "tcia" else x0, self.obelisk2, self.lin2, self.dense2,
                          8, size=quarter)
        h = act(self.dec4(torch.cat([h, o2], 1)))
        h = F.interpolate(h, size=half, mode="trilinear", align_corners=False)
        h = act(self.dec2(torch.cat([h, o1, x2], 1)))
        if self.layout == "visceral":
            return F.interpolate(self.head(h), size=size, mode="trilinear", align_corners=False)
        h = F.interpolate(h, size=size, mode="trilinear", align_corners=False)
        return self.head(act(self.dec1(torch.cat([h, x1], 1))))


@MODELS.register("obelisk_unet")
class ObeliskUNet(nn.Module):
    """The OBELISK paper's U-Net baselines: all-conv, lean grouped, global FC (module docstring).

    Layers are numbered as Table 1: #1 the full-resolution conv, then a stride-2 conv and a conv
    per encoder level, then the decoder convs bottom-up, then the last two (#L outputs).

    Args:
        in_channels, out_channels: image channels and classes L.
        widths: encoder widths, full resolution first; each further width is one stride-2 level.
        decoder_widths: output widths of the decoder convs at levels len(widths)-2 .. 1 (each reads
            the upsampled features concatenated with that level's encoder output).
        groups: {Table-1 layer number: groups} for grouped 3^3 convs (the lean U-Net).
        leak: leaky ReLU slope (0.1).
        bottleneck: ``conv`` (all-conv U-Net), or ``fc``: flatten the bottom level, Linear to
            ``fc_hidden``, Linear back, dropout ``fc_dropout`` after each, then a conv on
            cat(fc, bottom) to ``fc_width`` (the global-FC U-Net; fixes the input size).
        input_size: (D, H, W) the FC layers are built for (``bottleneck: fc`` only); the harness
            sets it to the trial's patch unless the study gives it.
        dropout: Dropout3d after every conv during training (the authors' TCIA code used 0.5 and
            left it on at inference, a bug not copied; the paper states none: default 0).

    Shapes: (B, C, D, H, W) -> (B, L, D, H, W).
    """

    default_input_size = (32, 64, 64)
    landscape = {"all_conv": {"widths": [5, 16, 32, 64, 80], "decoder_widths": [64, 32, 9]}}

    def __init__(self, in_channels: int = 1, out_channels: int = 9, widths: Sequence[int] = (5, 14, 28, 42, 56, 70),
                 decoder_widths: Sequence[int] = (56, 42, 28, 14), groups: Mapping[int, int] | None = None,
                 leak: float = 0.1, bottleneck: str = "conv", fc_hidden: int = 400, fc_width: int | None = None,
                 fc_dropout: float = 0.5, input_size: Sequence[int] | None = None, dropout: float = 0.0):
        super().__init__()
        widths, decoder_widths = [int(w) for w in widths], [int(w) for w in decoder_widths]
        if len(widths) < 2 or len(decoder_widths) != len(widths) - 2:
            raise ValueError(f"model.decoder_widths: need one width per skip level ({len(widths) - 2} for widths "
                             f"{widths}), got {decoder_widths}")
        if bottleneck not in ("conv", "fc"):
            raise ValueError(f"model.bottleneck: unknown {bottleneck!r}; allowed: conv, fc")
        groups = {int(k): int(v) for k, v in (groups or {}).items()}
        self.leak, self.dropout, self.levels = float(leak), float(dropout), len(widths) - 1
        layer = iter(range(1, 10_000))

        def conv(cin, cout, stride=1):
            n = next(layer)
            g = groups.get(n, 1)
            if cin % g or cout % g:
                raise ValueError(f"model.groups: layer #{n} ({cin}->{cout}) is not divisible by {g} groups")
            return _conv3(cin, cout, stride, g)

        self.enc = nn.ModuleList([conv(in_channels, widths[0])])
        for a, b in zip(widths, widths[1:]):
            self.enc.extend([conv(a, b, 2), conv(b, b)])
        self.fc = None
        prev = widths[-1]
        if bottleneck == "fc":
            if input_size is None or len(input_size) != 3:
                raise ValueError("model.input_size: bottleneck fc needs the input's (D, H, W)")
            self.input_size = tuple(int(s) for s in input_size)
            bottom = self.input_size
            for _ in range(self.levels):
                bottom = tuple(math.ceil(s / 2) for s in bottom)
            n = prev * math.prod(bottom)
            self.fc = nn.Sequential(nn.Linear(n, fc_hidden), nn.Dropout(fc_dropout), nn.Linear(fc_hidden, n),
                                    nn.Dropout(fc_dropout))
            self.fc_conv = conv(2 * prev, fc_width or prev)
            prev = fc_width or prev
        else:
            self.input_size = None
        self.dec = nn.ModuleList()
        for skip, w in zip(reversed(widths[1:-1]), decoder_widths):
            self.dec.append(conv(prev + skip, w))
            prev = w
        self.last = conv(prev + widths[0], out_channels)
        self.head = nn.Conv3d(out_channels, out_channels, 3, padding=1)

    def check_input(self, spatial: Sequence[int]) -> None:
        if self.input_size is not None and tuple(spatial) != self.input_size:
            raise ValueError(f"patch {tuple(spatial)}: the global-FC U-Net is built for {self.input_size} "
                             f"(model.input_size)")

    def _act(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(block(x), self.leak)
        return F.dropout3d(x, self.dropout, self.training) if self.dropout else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self._act(self.enc[0], x)]
        h = skips[0]
        for i in range(self.levels):
            h = self._act(self.enc[2 * i + 2], self._act(self.enc[2 * i + 1], h))
            skips.append(h)
        skips.pop()  # the bottom level is h itself
        if self.fc is not None:
            h = self._act(self.fc_conv, torch.cat([self.fc(h.flatten(1)).view_as(h), h], 1))
        for block in self.dec:
            s = skips.pop()
            h = F.interpolate(h, size=s.shape[2:], mode="trilinear", align_corners=False)
            h = self._act(block, torch.cat([h, s], 1))
        s = skips.pop()
        h = F.interpolate(h, size=s.shape[2:], mode="trilinear", align_corners=False)
        return self.head(self._act(self.last, torch.cat([h, s], 1)))
