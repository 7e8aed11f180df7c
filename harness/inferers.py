"""Inferers by name: how a trained network turns a whole volume into probabilities.

An inferer factory takes ``patch`` (the window), ``batch_size`` (windows per forward pass)
and ``output`` (``sigmoid`` / ``softmax``), injected, plus its own parameters, and returns
an ``Inferer``: ``inferer(volume, network) -> probabilities`` (N, K, D, H, W). Evaluation
thresholds those (``contract.regions_of``); the cost report runs the same inferer on one
cost-input-sized window and counts every network pass it makes, so a 16-view TTA costs 16
forward passes in GMACs and latency (``harness.cost.inference_cost``). Ensembles of saved
models (``harness evaluate``) average the members' probabilities with MONAI's
``MeanEnsemble``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from monai.inferers import sliding_window_inference
from monai.transforms import MeanEnsemble

from harness.contract import probabilities
from harness.registry import INFERERS, VIEW_SETS

INJECTED = ("patch", "batch_size", "output")
Network = Callable[[torch.Tensor], torch.Tensor]


class Inferer:
    """volume (N, C, D, H, W) -> probabilities (N, K, D, H, W)."""

    def __call__(self, volume: torch.Tensor, network: Network) -> torch.Tensor:
        raise NotImplementedError


def _segmentation(logits, network: Network) -> torch.Tensor:
    """The network's eval-mode output, which the contract makes the segmentation tensor alone
    (MONAI's sliding window passes mappings and tuples through)."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{type(network).__name__} returned {type(logits).__name__} in eval mode; the output "
                        f"contract (harness.contract) asks for the segmentation tensor only")
    return logits


def _check_window(overlap: float, mode: str) -> None:
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap: {overlap} is outside [0, 1)")
    if mode not in ("constant", "gaussian"):
        raise ValueError(f"mode: {mode!r} is not one of constant, gaussian")


class SlidingWindow(Inferer):
    """MONAI sliding-window inference over ``patch``-sized windows, logits blended with
    ``mode`` weights and ``overlap``, then the output activation."""

    def __init__(self, patch: Sequence[int], batch_size: int, output: str, overlap: float = 0.25,
                 mode: str = "constant"):
        _check_window(overlap, mode)
        self.patch, self.batch_size, self.output, self.overlap, self.mode = list(patch), batch_size, output, overlap, mode

    def __call__(self, volume: torch.Tensor, network: Network) -> torch.Tensor:
        logits = sliding_window_inference(volume, self.patch, self.batch_size, network, overlap=self.overlap,
                                          mode=self.mode)
        return probabilities(_segmentation(logits, network).float(), self.output)


@INFERERS.register("sliding_window", check=_check_window)
def sliding_window(patch: Sequence[int], batch_size: int, output: str, overlap: float = 0.25,
                   mode: str = "constant") -> Inferer:
    """Sliding window over the whole volume (the default; nnU-Net, MONAI)."""
    return SlidingWindow(patch, batch_size, output, overlap, mode)


def _check_whole(divisor: int) -> None:
    if divisor < 1:
        raise ValueError(f"divisor: {divisor} must be >= 1")


class WholeVolume(Inferer):
    """The network on the whole volume in one pass, zero-padded at the end of each spatial axis
    to a multiple of ``divisor`` and cropped back (BraTS 2020 Sec. 2.6: the volume cropped to
    the brain, "zero-padded to have each of the spatial dimensions divisible by 8")."""

    def __init__(self, output: str, divisor: int = 8):
        _check_whole(divisor)
        self.output, self.divisor = output, divisor

    def __call__(self, volume: torch.Tensor, network: Network) -> torch.Tensor:
        size = volume.shape[2:]
        pad = [(-s) % self.divisor for s in size]
        x = torch.nn.functional.pad(volume, [p for q in reversed(pad) for p in (0, q)])
        logits = _segmentation(network(x), network)
        return probabilities(logits[..., :size[0], :size[1], :size[2]].float(), self.output)


@INFERERS.register("whole_volume", check=_check_whole)
def whole_volume(patch: Sequence[int], batch_size: int, output: str, divisor: int = 8) -> Inferer:
    """The whole volume in one pass (BraTS 2020's inference), padded to a multiple of ``divisor``."""
    return WholeVolume(output, divisor)


BASES = ("sliding_window", "whole_volume")
PLANES = {(3, 4): "axial", (2, 4): "coronal", (2, 3): "sagittal"}  # dims of N, C, D, H, W


@dataclass(frozen=True)
class View:
    """One test-time view: flip ``flip`` (a spatial dim of N, C, D, H, W, or None), then rotate
    ``rot`` quarter turns in ``plane`` (two spatial dims; the axial (H, W) plane by default).
    ``inverse`` undoes ``forward`` exactly: rotate back first, then flip (the order matters when
    the flip lies in the rotation plane)."""

    flip: int | None
    rot: int
    plane: tuple[int, int] = (3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip is not None:
            x = x.flip(self.flip)
        return torch.rot90(x, self.rot, dims=self.plane) if self.rot else x

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        if self.rot:
            x = torch.rot90(x, -self.rot, dims=self.plane)
        return x.flip(self.flip) if self.flip is not None else x


@VIEW_SETS.register("mirror")
def mirror() -> list[View]:
    """The volume and its flips along each spatial axis (no rotation: any patch shape)."""
    return [View(f, 0) for f in (None, 2, 3, 4)]


class TTA(Inferer):
    """mean over views v of v^-1(base(v(volume))), probabilities averaged (MONAI MeanEnsemble)."""

    def __init__(self, base: Inferer, views: Sequence[View]):
        self.base, self.views, self.ensemble = base, list(views), MeanEnsemble()

    def __call__(self, volume: torch.Tensor, network: Network) -> torch.Tensor:
        return self.ensemble([v.inverse(self.base(v.forward(volume), network)) for v in self.views])


def _check_tta(patch: Sequence[int], views: str, overlap: float, mode: str, base: str) -> None:
    if views not in VIEW_SETS:
        raise ValueError(f"views: {views!r} is not one of {', '.join(VIEW_SETS.names())}")
    if base not in BASES:
        raise ValueError(f"base: {base!r} is not one of {', '.join(BASES)}")
    if base == "sliding_window":
        _check_window(overlap, mode)
        odd = sorted({v.plane for v in VIEW_SETS.get(views)() if v.rot % 2}, reverse=True)
        bad = [p for p in odd if patch[p[0] - 2] != patch[p[1] - 2]]
        if bad:
            name, (a, b) = PLANES[bad[0]], ("DHW"[bad[0][0] - 2], "DHW"[bad[0][1] - 2])
            raise ValueError(f"views {views!r} rotate the {name} plane: the patch's {a} and {b} must be equal, "
                             f"got {list(patch)} (or base: whole_volume)")


@INFERERS.register("tta", check=_check_tta)
def tta(patch: Sequence[int], batch_size: int, output: str, views: str = "mirror", overlap: float = 0.25,
        mode: str = "constant", base: str = "sliding_window") -> Inferer:
    """Test-time augmentation: every view of the registered view set ``views`` (``VIEW_SETS``;
    a family adds its own, e.g. BraTS 2020's 16) through the ``base`` inferer (the sliding
    window, or the whole volume), mapped back and averaged. Rotations in the axial plane need
    a square in-plane window (sliding window) or volume."""
    _check_tta(patch, views, overlap, mode, base)
    view_set = VIEW_SETS.get(views)()
    if base == "whole_volume":
        return TTA(WholeVolume(output), view_set)
    return TTA(SlidingWindow(patch, batch_size, output, overlap, mode), view_set)


class Ensemble(Inferer):
    """Several networks (saved models) through one inferer, probabilities averaged; the
    ``network`` argument of a call is ignored (the members are the networks)."""

    def __init__(self, inferer: Inferer, members: Sequence[Network]):
        self.inferer, self.members, self.ensemble = inferer, list(members), MeanEnsemble()

    def __call__(self, volume: torch.Tensor, network: Network | None = None) -> torch.Tensor:
        return self.ensemble([self.inferer(volume, m) for m in self.members])


def build_inferer(spec, patch: Sequence[int], batch_size: int, output: str) -> Inferer:
    """The study's inferer (a ``ComponentCfg``) at ``patch``."""
    return INFERERS.get(spec.name, field="train.inferer.name")(patch=list(patch), batch_size=batch_size,
                                                               output=output, **spec.params)
