"""What the training loop and its components agree on: outputs, batches, training state.

Model output contract
    In training a model returns a tensor (the segmentation logits) or a mapping of named
    outputs whose *first* entry is the segmentation (e.g. ``{"seg": y, "deep": [y2, y3]}``
    for deep supervision). Further named outputs are a family's own, read by the losses it
    registers (auxiliary heads, the axis they were computed along, ...). One key the core
    losses read: a model that predicts elsewhere than at the label's voxels (at sampled
    points, on a coarser grid) returns ``"target_at"``, a function that maps the loss's target
    (N, R, D, H, W) to the layout of its segmentation; the loss compares the segmentation with
    ``target_at(target)``. In evaluation (``model.eval()``) a model returns the segmentation
    tensor only, which is what inferers, metrics and the cost report see.

Output activation (``train.output``)
    ``sigmoid``: one channel per region, regions may overlap (BraTS WT/TC/ET); a voxel is in
    a region when sigmoid(logit) > 0.5. ``softmax``: mutually exclusive classes, channel 0
    is background and channel k the k-th region; a voxel is in the region of argmax. Labels
    always arrive as region channels (R, D, H, W); ``classes_of`` turns them into class
    indices for softmax losses.

Loss contract
    ``loss(outputs, batch, state) -> scalar``: ``outputs`` the mapping above, ``batch`` the
    whole batch (``image``, ``label`` and every derived target the study asked for) and
    ``state`` the training progress (``TrainState``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

OUTPUTS = ("sigmoid", "softmax")


@dataclass
class TrainState:
    """Where training is: ``step`` counts optimiser steps done (0-based before the first)."""

    step: int = 0
    epoch: int = 0
    total_steps: int = 1
    steps_per_epoch: int = 1

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1] (ConResNet's Eq. 14 weights its boundary loss by it)."""
        return min(1.0, self.step / max(1, self.total_steps))


def as_outputs(out: Any) -> dict[str, Any]:
    """A model's training output as a mapping, segmentation first.

    A tensor becomes ``{"seg": out}``; a list or tuple (MONAI's deep-supervision nets) becomes
    ``{"seg": out[0], "deep": out[1:]}``; a mapping is kept as is.
    """
    if isinstance(out, torch.Tensor):
        return {"seg": out}
    if isinstance(out, Mapping):
        if not out:
            raise TypeError("model returned an empty mapping; its first entry must be the segmentation")
        return dict(out)
    if isinstance(out, (list, tuple)) and out:
        return {"seg": out[0], "deep": list(out[1:])}
    raise TypeError(f"model output must be a tensor or a mapping of named outputs, got {type(out).__name__}")


def main_output(outputs: Mapping[str, Any]) -> torch.Tensor:
    return next(iter(outputs.values()))


def out_channels(regions: int, output: str) -> int:
    """Channels a model predicts for ``regions`` regions: one each, plus background under softmax."""
    return regions + (output == "softmax")


def classes_of(label: torch.Tensor) -> torch.Tensor:
    """Exclusive region channels (N, R, ...) -> class indices (N, 1, ...), 0 = background."""
    idx = torch.arange(1, label.shape[1] + 1, device=label.device, dtype=label.dtype).view(1, -1, *[1] * (label.dim() - 2))
    return (label * idx).sum(1, keepdim=True)


def probabilities(logits: torch.Tensor, output: str) -> torch.Tensor:
    return torch.sigmoid(logits) if output == "sigmoid" else torch.softmax(logits, 1)


def regions_of(probs: torch.Tensor, output: str) -> torch.Tensor:
    """Probabilities -> binary region masks (N, R, ...), the form labels and metrics use."""
    if output == "sigmoid":
        return (probs > 0.5).float()
    k = probs.shape[1]
    cls = probs.argmax(1)
    return torch.stack([cls == c for c in range(1, k)], 1).float()
