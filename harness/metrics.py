"""The metric catalogue: every number a trial reports that a table, plot, claim, combined row,
search objective or the ``cost`` command reads, with what each needs to know of it.

A plugin adds one by registration, as it adds a model::

    from harness.metrics import Metric, register_metric
    register_metric(Metric("energy_j", "min", "J", "energy per case (J)", "cost", shown=frozenset({"table"})))

and its trials report it (a callback's ``ctx.results``, or the model's own numbers): the report's
cost table shows it, a claim judges it (``metric: energy_j``) and a search may minimise it.

A family of per-region metrics is one entry whose name ends in ``_`` (``dice_``: ``dice_WT``,
``dice_liver``). The module imports nothing heavy: the command line reads it before torch loads.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Literal

from harness.registry import METRICS, UnknownNameError, caller_module

# Where a metric shows: "cost" (the `harness cost` command's columns, and the paper's figure beside
# ours there), "table" (a report's cost table), "plot" (an accuracy-vs-cost axis), "curve" (the
# plot of a numeric axis, e.g. Distill DSM's alpha).
PLACES = ("cost", "table", "plot", "curve")


@dataclass(frozen=True)
class Metric:
    """One reported number.

    direction: which way is better; unit and label: how tables and axes name it; kind: accuracy
    (from the validation cases), cost (of the net or of running it) or other; exact: counted from
    the architecture, the same every seed (a claim on it is arithmetic: its interval is the number
    itself, and a ratio claim may judge it); level: kept per validation case (claims pair by case
    and seed) or once per trial (pair by seed); members: how a combined row (an ensemble) gets it
    from its members' (sum, or the largest: a peak); shown: the places it appears (``PLACES``).
    """
    name: str
    direction: Literal["max", "min"]
    unit: str
    label: str
    kind: Literal["accuracy", "cost", "other"]
    exact: bool = False
    level: Literal["case", "trial"] = "trial"
    members: Literal["sum", "max"] | None = None
    shown: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self):
        unknown = set(self.shown) - set(PLACES)
        if unknown:
            raise ValueError(f"metric {self.name!r}: shown: {sorted(unknown)} not among {', '.join(PLACES)}")
        if self.exact and self.kind != "cost":
            raise ValueError(f"metric {self.name!r}: only a cost is exact (counted from the architecture)")

    @property
    def measured(self) -> bool:
        """A cost measured on the machine (time, memory): noisy, and absent where not measured."""
        return self.kind == "cost" and not self.exact




def register_metric(metric: Metric) -> Metric:
    """Add ``metric`` to the catalogue (a name registered twice is an error)."""
    return METRICS.register(metric.name, origin=caller_module(inspect.currentframe()))(metric)


def _lookup(name: str) -> Metric | None:
    """The entry for ``name``, or for its region family (``dice_WT``: ``dice_``); None if neither."""
    if name in METRICS:
        return METRICS.get(name)
    family = [m for m in METRICS.names() if m.endswith("_") and name.startswith(m) and len(name) > len(m)]
    return METRICS.get(family[0]) if family else None


def metric(name: str, field: str | None = None) -> Metric:
    """The catalogue's entry for ``name`` (``dice_WT``: the ``dice_`` family); an unknown name is an
    ``UnknownNameError`` naming ``field`` with the close matches."""
    found = _lookup(name)
    if found is None:
        raise UnknownNameError("metric", name, METRICS.names(), field)
    return found


def is_exact(name: str) -> bool:
    """Whether ``name`` is a cost counted from the architecture (False for a name not catalogued)."""
    found = _lookup(name)
    return found is not None and found.exact


def is_measured(name: str) -> bool:
    """Whether ``name`` is a cost measured on the machine (False for a name not catalogued)."""
    found = _lookup(name)
    return found is not None and found.measured


def known(name: str) -> bool:
    """Whether the catalogue has ``name`` (or its family)."""
    return _lookup(name) is not None


def shown(place: str) -> list[Metric]:
    """The metrics shown at ``place``, in the catalogue's order."""
    return [m for m in (METRICS.get(n) for n in METRICS.in_order()) if place in m.shown]


def exact_names() -> list[str]:
    """The costs counted from the architecture (``params``, ``gmacs``, ...)."""
    return [n for n in METRICS.in_order() if METRICS.get(n).exact]


def _builtin(name, direction, unit, label, kind, **kw) -> None:
    register_metric(Metric(name, direction, unit, label, kind, **{**kw, "shown": frozenset(kw.get("shown", ()))}))


# Accuracy, per validation case (harness.train.evaluate) and its extremes over the cases.
_builtin("mean_dice", "max", "%", "Dice (%)", "accuracy", level="case", shown={"curve"})
_builtin("mean_hd95", "min", "mm", "HD95 (mm)", "accuracy", level="case")
_builtin("dice_", "max", "%", "Dice of the region (%)", "accuracy", level="case")
_builtin("hd95_", "min", "mm", "HD95 of the region (mm)", "accuracy", level="case")
_builtin("sens_", "max", "%", "sensitivity of the region (%)", "accuracy", level="case")
_builtin("spec_", "max", "%", "specificity of the region (%)", "accuracy", level="case")
_builtin("min_dice", "max", "%", "worst case's Dice (%)", "accuracy")
_builtin("max_dice", "max", "%", "best case's Dice (%)", "accuracy")
# Costs counted from the architecture (harness.cost: fvcore MACs, 1 multiply-add = 1).
_builtin("params", "min", "", "parameters", "cost", exact=True, members="sum", shown={"cost", "table", "plot", "curve"})
_builtin("gmacs", "min", "GMACs", "GMACs", "cost", exact=True, members="sum", shown={"cost", "table", "plot", "curve"})
_builtin("size_mb", "min", "MB", "size (MB)", "cost", exact=True, members="sum", shown={"cost"})
_builtin("macs_per_voxel", "min", "MACs", "MACs per voxel", "cost", exact=True, members="sum", shown={"cost"})
_builtin("forward_passes", "min", "", "network passes", "cost", exact=True, members="sum")
_builtin("checkpoint_bytes", "min", "B", "checkpoint (bytes)", "cost", exact=True)
# Costs measured on the machine.
_builtin("latency_s", "min", "s", "latency (s)", "cost", members="sum")
_builtin("latency_ns_per_voxel", "min", "ns", "latency (ns / voxel)", "cost", members="sum",
         shown={"cost", "table", "plot"})
_builtin("peak_mem_mb", "min", "MB", "inference peak memory (MB)", "cost", members="max",
         shown={"cost", "table", "plot"})
_builtin("train_peak_mem_mb", "min", "MB", "training peak memory (MB)", "cost", members="sum",
         shown={"cost", "table", "curve"})
_builtin("step_time_s", "min", "s", "training step (s)", "cost", shown={"table"})
