"""Output adapters: a network's own output convention -> the harness's contract.

The training loop, losses, inferers and cost read one contract (``harness.contract``): in
training a tensor or a mapping of named outputs whose first entry is the segmentation; in
evaluation the segmentation tensor only. Nets brought from MONAI keep their own conventions;
an adapter (``train.outputs``, registered in ``OUTPUT_ADAPTERS``) maps them, so a stock
constructor needs no wrapper:

==============  ==========================================  ==========================================
adapter         training output of the net                  becomes
==============  ==========================================  ==========================================
``stacked``     tensor (N, 1 + K, C, *S): DynUNet's deep    ``{"seg": out[:, 0], "deep": [out[:, 1],
                supervision (heads upsampled to S, stacked)  ..., out[:, K]]}``
``heads``       list or tuple of tensors (N, C_k, *S_k)      ``{"seg": out[0], "deep": out[1:]}``
``extras``      tuple (seg, x_1, ..., x_m): SegResNetVAE's   ``{"seg": out[0], names[0]: x_1, ...}``
                ``(seg, vae_loss)``
``auto``        any of the above, or the contract itself     told apart by shape (below)
==============  ==========================================  ==========================================

In evaluation every adapter keeps the segmentation: the first element of a tuple or list
(SegResNetVAE returns ``(seg, None)``), the tensor itself otherwise.

``auto`` (the default) tells the conventions apart by the input's rank n (5 for a 3D batch):
a tensor of rank n is the contract, of rank n + 1 stacked heads; in a tuple or list, tensors
of rank n are heads and scalar tensors extra outputs named ``aux_loss``, ``aux_loss_2``, ...;
``None`` entries are dropped. Anything else is an error naming the model's output and the
adapter to choose. Extra scalar outputs are added to the loss only when the study weights them
(``train.aux_losses: {name: weight}``); one that is not, and deep heads without
``train.deep_supervision``, are said once per trial (``unused_outputs``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from harness.registry import OUTPUT_ADAPTERS

AUX = "aux_loss"
DEEP = "deep"


def describe(out: Any) -> str:
    """A model's output as an error message names it: types and tensor shapes."""
    if isinstance(out, torch.Tensor):
        return f"tensor {tuple(out.shape)}"
    if isinstance(out, Mapping):
        return "mapping {" + ", ".join(f"{k}: {describe(v)}" for k, v in out.items()) + "}"
    if isinstance(out, (list, tuple)):
        return f"{type(out).__name__} [" + ", ".join(describe(v) for v in out) + "]"
    return type(out).__name__


def _first(out: Any) -> Any:
    """The segmentation of an evaluation-mode output: a tuple's or list's first element."""
    return out[0] if isinstance(out, (list, tuple)) and out else out


@OUTPUT_ADAPTERS.register("stacked")
class Stacked:
    """DynUNet's deep supervision: heads stacked on dim 1 in training (MONAI's documented
    convention, ``torch.unbind(out, 1)``); the segmentation alone in evaluation."""

    def __call__(self, out: Any, rank: int, training: bool) -> Any:
        if not training:
            return _first(out)
        if not isinstance(out, torch.Tensor) or out.dim() != rank + 1:
            raise TypeError(f"train.outputs stacked: expected a tensor of rank {rank + 1} (N, 1 + heads, C, ...), "
                            f"got {describe(out)}")
        heads = list(torch.unbind(out, 1))
        return {"seg": heads[0], DEEP: heads[1:]}


@OUTPUT_ADAPTERS.register("heads")
class Heads:
    """A list or tuple of heads, the segmentation first (MONAI's older deep-supervision nets)."""

    def __call__(self, out: Any, rank: int, training: bool) -> Any:
        if not training:
            return _first(out)
        if not isinstance(out, (list, tuple)) or not out or not all(isinstance(h, torch.Tensor) for h in out):
            raise TypeError(f"train.outputs heads: expected a list or tuple of tensors, got {describe(out)}")
        return {"seg": out[0], DEEP: list(out[1:])}


@OUTPUT_ADAPTERS.register("extras")
class Extras:
    """A tuple whose first element is the segmentation and whose others are named outputs
    (``names``, e.g. ``[vae_loss]`` for SegResNetVAE); ``None`` entries are dropped."""

    def __init__(self, names: Sequence[str] = (AUX,)):
        self.names = list(names)

    def __call__(self, out: Any, rank: int, training: bool) -> Any:
        if not training:
            return _first(out)
        if not isinstance(out, (list, tuple)) or len(out) != 1 + len(self.names):
            raise TypeError(f"train.outputs extras: expected a tuple (seg, {', '.join(self.names)}), got {describe(out)}")
        return {"seg": out[0], **{n: v for n, v in zip(self.names, out[1:]) if v is not None}}


@OUTPUT_ADAPTERS.register("auto")
class Auto:
    """Tells the conventions apart by rank (module docstring); the contract passes unchanged."""

    def __call__(self, out: Any, rank: int, training: bool) -> Any:
        if isinstance(out, Mapping) or (isinstance(out, torch.Tensor) and out.dim() == rank):
            return out
        if not training:
            first = _first(out)
            if isinstance(first, torch.Tensor) and first.dim() == rank:
                return first
        elif isinstance(out, torch.Tensor) and out.dim() == rank + 1:
            return Stacked()(out, rank, training)
        elif isinstance(out, (list, tuple)) and out and isinstance(out[0], torch.Tensor) and out[0].dim() == rank:
            heads = [v for v in out if isinstance(v, torch.Tensor) and v.dim() == rank]
            extras = [v for v in out if isinstance(v, torch.Tensor) and v.numel() == 1 and v.dim() != rank]
            if len(heads) + len(extras) + sum(v is None for v in out) == len(out):
                names = [AUX if i == 0 else f"{AUX}_{i + 1}" for i in range(len(extras))]
                return {"seg": heads[0], **({DEEP: heads[1:]} if len(heads) > 1 else {}), **dict(zip(names, extras))}
        mode = "training" if training else "evaluation"
        raise TypeError(f"in {mode} the model returned {describe(out)}, which train.outputs auto cannot read for an "
                        f"input of rank {rank}; choose an adapter (train.outputs: {', '.join(adapter_names())}) "
                        f"or register one (docs/bring_your_own_net.md)")


def adapter_names() -> list[str]:
    return [n for n in OUTPUT_ADAPTERS.names() if n != "auto"]


class _Adapt:
    """The forward hook that applies an adapter (a class, not a closure: models are copied and
    pickled with their hooks). ``made``: the named outputs its last training call created."""

    def __init__(self, adapter):
        self.adapter, self.made = adapter, ()

    def __call__(self, module: nn.Module, inputs: tuple, out: Any) -> Any:
        adapted = self.adapter(out, inputs[0].dim(), module.training)
        if module.training:
            self.made = tuple(k for k in adapted if k != "seg") if adapted is not out and isinstance(adapted, dict) else ()
        return adapted


def adapt(model: nn.Module, name: str = "auto", params: dict | None = None) -> nn.Module:
    """``model`` with its outputs mapped to the contract by the adapter ``name`` (a forward
    hook: parameters, state dict and class stay the net's own; ``model.output_adapter`` holds it)."""
    model.output_adapter = _Adapt(OUTPUT_ADAPTERS.get(name, field="train.outputs.name")(**(params or {})))
    model.register_forward_hook(model.output_adapter)
    return model


def unused_outputs(model: nn.Module, outputs: Mapping[str, Any], deep_supervision: Any,
                   aux_losses: Mapping[str, float]) -> list[str]:
    """Outputs the adapter made in the last training pass that the loss will not read: deep
    heads without ``train.deep_supervision``, extra outputs without a weight in
    ``train.aux_losses``. A net's own named outputs (read by its family's losses) are not listed."""
    made = getattr(getattr(model, "output_adapter", None), "made", ())
    return [k for k in made if (k == DEEP and outputs[k] and deep_supervision is None)
            or (k != DEEP and k not in aux_losses)]
