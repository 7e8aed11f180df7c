"""A family that lives outside ``harness/``: registrations only, no harness module edited.

- ``toy_two_heads``: a model with two named outputs in training (segmentation, edge map);
  the segmentation alone in evaluation (the output contract).
- ``toy_edge``: a label-derived target, the region's boundary voxels, made in the data pipeline.
- ``toy_edge_loss``: Dice on the segmentation plus, weighted by the training progress, BCE of
  the edge head against ``batch["edge"]``.
- ``toy_all_foreground``: a callback that swaps the evaluated model for a copy whose
  segmentation head says "foreground" everywhere (so the swap is visible in the metrics).
- ``toy_flip_tta``: a two-view TTA inferer (identity and a W flip) built from harness's parts.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.transforms import MapTransform
from torch import nn

from harness.callbacks import Callback
from harness.inferers import TTA, SlidingWindow, View
from harness.metrics import Metric, register_metric
from harness.registry import CALLBACKS, INFERERS, LOSSES, MODELS, TARGETS

PROGRESS_SEEN: list[float] = []  # what the loss was told, for in-process tests


@MODELS.register("toy_two_heads")
class ToyTwoHeads(nn.Module):
    default_input_size = (8, 16, 16)

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(in_channels, width, 3, padding=1), nn.ReLU())
        self.seg = nn.Conv3d(width, out_channels, 1)
        self.edge = nn.Conv3d(width, out_channels, 1)

    def forward(self, x):
        h = self.body(x)
        return {"seg": self.seg(h), "edge": self.edge(h)} if self.training else self.seg(h)


class EdgeTarget(MapTransform):
    key = "edge"

    def __init__(self):
        super().__init__(["label"])

    def __call__(self, data):
        d = dict(data)
        lab = torch.as_tensor(np.asarray(d["label"])).float()[None]
        eroded = -F.max_pool3d(-lab, 3, stride=1, padding=1)
        d["edge"] = (lab - eroded)[0]
        return d


@TARGETS.register("toy_edge")
def toy_edge():
    return EdgeTarget()


class EdgeLoss(nn.Module):
    def __init__(self, output: str, edge_weight: float):
        super().__init__()
        self.dice, self.edge_weight = DiceLoss(sigmoid=True), edge_weight

    def forward(self, outputs, batch, state):
        PROGRESS_SEEN.append(state.progress)
        edge = F.binary_cross_entropy_with_logits(outputs["edge"], batch["edge"])
        return self.dice(outputs["seg"], batch["label"]) + self.edge_weight * state.progress * edge


@LOSSES.register("toy_edge_loss")
def toy_edge_loss(output: str, edge_weight: float = 1.0):
    if output != "sigmoid":
        raise ValueError("toy_edge_loss is for sigmoid outputs")
    return EdgeLoss(output, edge_weight)


class AllForeground(Callback):
    def on_train_end(self, ctx):
        swapped = copy.deepcopy(ctx.model)
        with torch.no_grad():
            swapped.seg.weight.zero_()
            swapped.seg.bias.fill_(10.0)
        ctx.metrics["toy_swapped"] = 1.0
        # A metric of the plugin's own (catalogued below): reported, judged and searched as a cost.
        ctx.results["toy_energy_j"] = float(swapped.seg.bias.abs().sum())
        return swapped


register_metric(Metric("toy_energy_j", "min", "J", "toy energy (J)", "cost", shown=frozenset({"table", "plot"})))


@CALLBACKS.register("toy_all_foreground")
def toy_all_foreground():
    return AllForeground()


@INFERERS.register("toy_flip_tta")
def toy_flip_tta(patch, batch_size, output):
    return TTA(SlidingWindow(patch, batch_size, output), [View(None, 0), View(4, 0)])
