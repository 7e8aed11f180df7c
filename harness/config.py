"""Study files (YAML) -> validated, scale-resolved trial specs.

A study names a data set, a model and its variants (an explicit list and/or a
grid of named axes whose product is taken), the training recipe, the paper's
numbers (``expected``) and two scales: ``smoke`` (must finish on a laptop) and
``paper``. Scales override any of ``data``, ``model``, ``train``, ``cost``.
Every part of the recipe is a registered component named as ``{name, params}`` (a
bare name is short for ``{name: NAME}``): loss, optimizer, schedule, augmentations,
label-derived targets, inferer, callbacks. Their parameters are checked against the
factory's signature here, before anything runs. Every error names the field, the bad
value and what is allowed.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import importlib
import inspect
import itertools
import json
import math
import re
import typing
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

# The registries import their built-ins (torch, MONAI) on the first lookup: a study's schema is
# checked without them.
from harness.registry import COMBINERS, DATASETS, MODELS, UnknownNameError, check_types


# smoke: seconds, plumbing (tests); quick: learns on 2 CPU cores in <= 10 min, enough seeds for
# the claims; paper: the paper's protocol. Every study has all three.
SCALES = ("smoke", "quick", "paper")


class ConfigError(ValueError):
    """Bad user input; the CLI prints it and exits with code 2."""


def _scalar_type(annotation: Any) -> Any:
    """int, float or bool behind an annotation (``Optional[int]`` -> int); None for anything else."""
    if typing.get_origin(annotation) is Union:
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = inner[0] if len(inner) == 1 else None
    return annotation if annotation in (int, float, bool) else None


class _Strict(BaseModel):
    # Numbers are finite; a number is never read from a string or a boolean, nor a boolean from
    # anything else (pydantic's lax mode turns `epochs: true` into 1 and `lr: "1e-2"` into 0.01).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_coercion(cls, raw):
        if not isinstance(raw, dict):
            return raw
        for name, field in cls.model_fields.items():
            key = field.alias or name
            kind, v = _scalar_type(field.annotation), raw.get(key)
            if kind is None or v is None:
                continue
            if kind is bool and not isinstance(v, bool):
                msg = "must be true or false"
            elif kind in (int, float) and isinstance(v, (bool, str)):
                msg = (f"must be {'a whole number' if kind is int else 'a number'}, not a "
                       + ("string (write it without quotes)" if isinstance(v, str) else "boolean"))
            else:
                continue
            raise PydanticCustomError("no_coercion", "{msg}", {"msg": msg, "field": key, "value": v})
        return raw


def _flat_params(keep: tuple[str, ...]):
    """``{dataset: msd, root: /data/x}`` is short for ``{dataset: msd, params: {root: /data/x}}``."""

    def fold(raw: Any) -> Any:
        if isinstance(raw, dict) and any(k not in keep for k in raw):
            raw = dict(raw)
            params = dict(raw.get("params") or {})
            params.update({k: raw.pop(k) for k in list(raw) if k not in keep})
            raw["params"] = params
        return raw
    return model_validator(mode="before")(classmethod(lambda cls, raw: fold(raw)))


class DataCfg(_Strict):
    dataset: str
    params: dict[str, Any] = Field(default_factory=dict)
    # Parameters of the folder data set ``--data-root`` swaps in for a synthetic one: the paper's
    # preprocessing of its real data (ConResNet Table II: CT window [-100, 240], 4 folds).
    folder: dict[str, Any] = Field(default_factory=dict)

    _flat = _flat_params(("dataset", "params", "folder"))


class ModelCfg(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class ComponentCfg(_Strict):
    """A registered component and its parameters; a bare name is ``{name: NAME}``."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, raw):
        return {"name": raw} if isinstance(raw, str) else raw


class DeepSupervisionCfg(_Strict):
    """Deep supervision: the loss on the segmentation and on each head of ``outputs[output]``."""

    output: str = "deep"
    weight_mode: Literal["exp", "two", "same"] = "exp"
    weights: Optional[list[float]] = None
    reduction: Literal["sum", "mean"] = "sum"  # mean: the weighted sum divided by the number of heads


class ParamGroupCfg(_Strict):
    """Parameters whose name matches ``match`` (a regular expression) get their own settings."""

    match: str
    lr_scale: float = Field(1.0, gt=0)
    weight_decay: Optional[float] = Field(None, ge=0)

    @field_validator("match")
    @classmethod
    def _regex(cls, v):
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"{v!r} is not a regular expression ({e})") from None
        return v


# Fields that moved into components; an old study gets told where they went.
_MOVED = {"momentum": "optimizer: {name: sgd, params: {momentum: ...}}",
          "poly_power": "schedule: {name: poly, params: {power: ...}} (or schedule: constant for power 0)",
          "sw_overlap": "inferer: {name: sliding_window, params: {overlap: ...}}"}


class TrainCfg(_Strict):
    # sigmoid: one channel per (possibly overlapping) region; softmax: background + exclusive classes.
    output: Literal["sigmoid", "softmax"] = "sigmoid"
    loss: ComponentCfg = Field(default_factory=lambda: ComponentCfg(name="dice"))
    deep_supervision: Optional[DeepSupervisionCfg] = None
    optimizer: ComponentCfg = Field(default_factory=lambda: ComponentCfg(name="sgd"))
    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    param_groups: list[ParamGroupCfg] = Field(default_factory=list)
    schedule: ComponentCfg = Field(default_factory=lambda: ComponentCfg(name="poly", params={"power": 0.9}))
    batch_size: int = Field(4, ge=1)
    epochs: int = Field(1, ge=1)
    steps_per_epoch: int = Field(10, ge=1)
    val_every: int = Field(1, ge=1)
    patch: list[int]
    # Random augmentations, in order, after the crop; true = [flip] (the default), false = none.
    augment: Union[list[ComponentCfg], bool] = Field(True, validate_default=True)
    targets: list[ComponentCfg] = Field(default_factory=list)  # label-derived targets, after augmentation
    inferer: ComponentCfg = Field(default_factory=lambda: ComponentCfg(name="sliding_window"))
    callbacks: list[ComponentCfg] = Field(default_factory=list)
    amp: bool = True  # CUDA only
    num_workers: int = Field(0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, raw):
        for k in raw if isinstance(raw, dict) else ():
            if k in _MOVED:
                raise ValueError(f"train.{k} is now a component parameter: write {_MOVED[k]}")
        return raw

    @field_validator("augment", mode="before")
    @classmethod
    def _augment_shape(cls, v):
        if not isinstance(v, (bool, list)):
            raise ValueError(f"must be true, false or a list of augmentations, got {v!r}")
        return v

    @field_validator("augment")
    @classmethod
    def _augment(cls, v):
        if isinstance(v, bool):
            return [ComponentCfg(name="flip")] if v else []
        return v

    @field_validator("patch")
    @classmethod
    def _patch(cls, v):
        if len(v) != 3 or any(s < 1 for s in v):
            raise ValueError(f"must be three positive sizes (D, H, W), got {v}")
        return v


def _five_sizes(v: Optional[list[int]]) -> Optional[list[int]]:
    """An input shape (N, C, D, H, W), or None."""
    if v is not None and (len(v) != 5 or any(s < 1 for s in v)):
        raise ValueError(f"must be five positive sizes (N, C, D, H, W), got {v}")
    return v


class CostCfg(_Strict):
    input: Optional[list[int]] = None  # (N, C, D, H, W) for params/GMACs; default 1 x C x patch
    latency: bool = True
    latency_runs: int = Field(5, ge=1)

    @field_validator("input")
    @classmethod
    def _input(cls, v):
        return _five_sizes(v)


class ResourcesCfg(_Strict):
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)


class ScaleCfg(_Strict):
    data: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    cost: dict[str, Any] = Field(default_factory=dict)
    seeds: Optional[int] = Field(None, ge=1)
    folds: Optional[int] = Field(None, ge=1)  # cross-validation folds of folder data sets (their ``fold``)


class TaskScaleCfg(_Strict):
    """A task's data (and training overrides, e.g. its patch) at one scale."""

    dataset: str
    params: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)

    _flat = _flat_params(("dataset", "params", "train"))


class VariantCfg(_Strict):
    name: str
    model: Optional[str] = None  # another registered model than the study's (families side by side)
    task: Optional[str] = None  # one of the study's ``tasks`` (tables spanning data sets)
    params: dict[str, Any] = Field(default_factory=dict)  # model parameters
    train: dict[str, Any] = Field(default_factory=dict)  # training overrides (e.g. a loss ablation)
    tags: dict[str, str] = Field(default_factory=dict)


class CombinedCfg(_Strict):
    """A row evaluated, not trained: per seed (and fold), the predictions of the variants ``of``
    on the validation cases, combined by a registered ``rule`` (``harness.combine``): an
    ensemble of pipelines, a label-map reconstruction, BraTS 2020's merge (Table 3). A member may be an earlier
    combined row. Costed as run: every member network's inference, summed."""

    name: str
    of: list[str] = Field(min_length=1)  # one member: a rule that post-processes it (BraTS label maps)
    rule: ComponentCfg
    tags: dict[str, str] = Field(default_factory=dict)


class SubmissionCfg(_Strict):
    """What ``harness submit`` writes for a challenge's unlabelled cases (``harness.submit``):
    the ``row`` (a variant or combined row) whose label maps are uploaded, in ``format``."""

    row: str
    format: Literal["brats"] = "brats"


class ExpectedValue(_Strict):
    value: float
    tol: Optional[float] = Field(None, ge=0)  # set for pinned numbers (params, GMACs); None = reported only
    known_gap: bool = False  # a pinned number we cannot match and say so: reported, not a --verify failure
    note: Optional[str] = None
    sd: Optional[float] = Field(None, ge=0)  # the paper's ± (its spread over folds or runs), shown beside ours
    # GMACs only: the input (N, C, D, H, W) the paper's figure is for. The report then compares
    # ours at that input, MACs per voxel x its voxels (exact for nets whose every op scales with
    # the voxels: convolutions, norms, upsampling), wherever the trials were costed.
    at: Optional[list[int]] = None

    @field_validator("at")
    @classmethod
    def _at(cls, v):
        return _five_sizes(v)


BEST = ("max_per_column", "max_per_row", "min_per_column", "min_per_row")


class LayoutCfg(_Strict):
    """How the paper laid its table out (``harness.report`` renders it; see its docstring).

    An axis is a grid axis, a variant tag or ``variant``.
    """

    rows: Optional[str] = None
    columns: Union[str, list[str]] = "variant"  # an axis, or a list of metrics (one column each)
    # The metric in the cells of a rows x columns pivot; or {column label: [metric, ...]}: each
    # column label a group of metric columns (GSP Table 1: BraTS18 WT, TC, ET, mDice; PROMISE12 mDice).
    value: Union[str, dict[str, list[str]]] = "mean_dice"
    # Metrics as rows: {label: metric}; with rows, {row: {label: metric}}, where the row "*" is one
    # group above the others that every row shares (Distill DSM Table 2's single parameter row).
    values: Optional[dict[str, Union[str, dict[str, str]]]] = None
    row_params: dict[str, str] = Field(default_factory=dict)  # {column label: "param.path"}
    best: Union[Literal[BEST], dict[str, Literal["max", "min"]], None] = None  # noqa: F821
    baseline: Optional[str] = None  # the variant every other is tested against

    @model_validator(mode="after")
    def _values_need_axis(self):
        if self.values is not None and isinstance(self.columns, list):
            raise ValueError("values puts metrics in rows: columns must then be an axis, not a list of metrics")
        if self.values is not None:
            nested = [isinstance(v, dict) for v in self.values.values()]
            if self.rows and not all(nested):
                raise ValueError("values: with rows, give {row: {label: metric}} for each row group")
            if not self.rows and any(nested):
                raise ValueError("values: without rows, give {label: metric}")
        return self


Side = Union[str, dict[str, str]]  # a variant name, or {axis: label}: the mean over the variants so tagged


# Costs that are numbers, not measurements (the same every seed): a ratio claim's metrics.
EXACT_COSTS = ("params", "size_mb", "gmacs", "macs_per_voxel", "forward_passes", "checkpoint_bytes")

# A name that becomes a file or folder name: letters, digits, '_', '.', '-', not only dots.
PLAIN_NAME = r"^[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*$"


class ClaimCfg(_Strict):
    """A claim of the paper, judged on our runs by ``harness report``.

    ``better`` has a ``direction``-er ``metric`` than ``than``, by more than ``margin`` (metric
    units); ``direction: noninferior`` claims ``better`` matches or beats ``than``: it is higher,
    or lower by less than ``margin`` (Distill DSM's "comparable to the 3D U-Net");
    ``direction: equal`` claims no difference: ``better`` is within ``margin`` of
    ``than`` either way (BraTS 2020 Table 2's "no clear benefit"). A side is a variant, or a tag selector such as ``{ip: CSC}`` meaning the average
    over every variant so tagged (the paper's "on average over the SG settings"). ``than`` may
    also be a number: a published figure of a net the study does not train (GSP-Conv Table 3's
    "less than 8% of the parameters" of the other methods).

    A claim of a magnitude judges it, not only its sign: ``value`` (with ``direction: equal``)
    is the effect the paper states, and ``better`` is within ``margin`` of it ("nearly 4 points":
    value 3.84). ``measure: ratio`` makes the effect ``better / than`` on an exact cost
    (parameters, MACs): "28% of the parameters" is ratio 0.28, "+18.64% computation" 1.1864; a
    directional ratio claim compares with 1 (``lower``: below ``1 - margin``).
    """

    text: str
    where: str  # where the paper makes it: "Table 1", "Sec. 3.1"
    better: Side
    than: Union[Side, float]
    metric: str = "mean_dice"
    direction: Literal["higher", "lower", "noninferior", "equal"] = "higher"
    margin: float = 0.0
    measure: Literal["difference", "ratio"] = "difference"
    value: Optional[float] = None  # the stated magnitude of an ``equal`` claim (default: 0, or 1 for a ratio)
    # paper: the paper states it; ours: a check of our own (a sanity check, a procedure the paper
    # does not ablate). The index counts the two apart.
    source: Literal["paper", "ours"] = "paper"
    # The comparison's name where several studies judge it (ConResNet vs its baseline in Tables
    # III-V): claims sharing an id within a paper count once in the index.
    id: Optional[str] = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")

    @model_validator(mode="after")
    def _equal_needs_margin(self):
        if self.direction == "equal" and not self.margin > 0:
            raise ValueError(f"margin: a claim of no difference (direction: equal) needs a margin > 0, "
                             f"got {self.margin}")
        if self.direction == "noninferior" and not self.margin > 0:
            raise ValueError(f"margin: a non-inferiority claim (direction: noninferior) needs a margin > 0 (how "
                             f"much worse still counts as matching), got {self.margin}")
        if self.value is not None and self.direction != "equal":
            raise ValueError(f"value: a stated magnitude ({self.value:g}) is judged by direction: equal (within "
                             f"margin of it), got direction: {self.direction}")
        if self.measure == "ratio":
            if self.metric not in EXACT_COSTS:
                raise ValueError(f"metric: measure: ratio is for an exact cost, one of {', '.join(EXACT_COSTS)}; "
                                 f"got {self.metric!r}")
            if self.value is not None and not self.value > 0:
                raise ValueError(f"value: a ratio is > 0, got {self.value:g}")
        return self

    @property
    def reference(self) -> float:
        """What the effect is compared with: the stated ``value``, else no difference (0, or 1 for a ratio)."""
        return self.value if self.value is not None else 1.0 if self.measure == "ratio" else 0.0


class StudyCfg(_Strict):
    # The study's name is a folder (reports/<name>/): a plain name, never "." or "..".
    name: str = Field(pattern=PLAIN_NAME)
    paper: str
    title: str
    description: str = ""
    # Where the study departs from the paper's protocol, each with why; the report prints them.
    deviations: list[str] = Field(default_factory=list)
    # Modules to import before the study is read: a family living outside harness/ registers itself.
    plugins: list[str] = Field(default_factory=list)
    data: DataCfg
    model: ModelCfg
    variants: list[VariantCfg] = Field(default_factory=list)
    combined: list[CombinedCfg] = Field(default_factory=list)  # rows combining trained variants' predictions
    submission: Optional[SubmissionCfg] = None  # a challenge-server table: the row whose label maps are uploaded
    grid: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    # Named data sets of a table that spans several (Distill DSM Tables 2, 3), per scale.
    tasks: dict[str, dict[Literal[SCALES], TaskScaleCfg]] = Field(default_factory=dict)  # noqa: F821
    train: TrainCfg
    cost: CostCfg = Field(default_factory=CostCfg)
    resources: ResourcesCfg = Field(default_factory=ResourcesCfg)
    seeds: int = Field(1, ge=1)
    scales: dict[Literal[SCALES], ScaleCfg]  # noqa: F821
    landscape: bool = False  # add every registered model's ``landscape`` variants (efficiency landscape)
    expected: dict[str, dict[str, ExpectedValue | float]] = Field(default_factory=dict)
    layout: LayoutCfg = Field(default_factory=LayoutCfg)  # the paper table's rows/columns (report)
    claims: list[ClaimCfg] = Field(default_factory=list)  # the paper's claims, judged by the report

    @model_validator(mode="after")
    def _has_scales_and_variants(self):
        missing = set(SCALES) - set(self.scales)
        if missing:
            raise ValueError(f"scales: missing {sorted(missing)}; every study needs {', '.join(SCALES)}")
        if not self.variants and not self.grid and not self.landscape:
            raise ValueError("variants/grid: a study needs at least one variant")
        empty = [axis for axis, options in self.grid.items() if not options]
        if empty:
            raise ValueError(f"grid.{empty[0]}: an axis needs at least one option (its product would be empty)")
        # An axis names a plot (reports/<study>/<axis>_curve.png): a plain name, no folder in it.
        bad = [axis for axis in self.grid if not re.fullmatch(PLAIN_NAME, axis)]
        if bad:
            raise ValueError(f"grid: axis {bad[0]!r} is not a plain name (letters, digits, '_', '.', '-'; not "
                             f"'.' or '..'): it names a file of the report")
        for name, per_scale in self.tasks.items():
            missing = set(self.scales) - set(per_scale)
            if missing:
                raise ValueError(f"tasks.{name}: missing {sorted(missing)}; every task needs the study's scales")
        return self


class TrialSpec(BaseModel):
    """One trial: everything ``train.run_trial`` needs, JSON-serialisable."""

    study: str
    scale: str
    key: str  # unique within the study+scale: "<variant>#s<seed>"
    variant: str
    tags: dict[str, str]
    seed: int
    fold: Optional[int] = None  # set when the trial is one fold of a cross-validation
    plugins: list[str] = Field(default_factory=list)  # imported by the worker before it builds anything
    data: DataCfg
    model: ModelCfg
    train: TrainCfg
    cost: CostCfg
    resources: ResourcesCfg


def _merge(base: dict, over: dict) -> dict:
    """``over`` on ``base``: mappings merge, other values replace; ``key+: [...]`` appends to the
    list ``key`` (a variant adding a callback to the scale's, e.g. BraTS 2020's patient removal
    beside the scale-sized self-ensembling)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(k, str) and k.endswith("+"):
            key, prev = k[:-1], out.get(k[:-1], [])
            if not isinstance(v, list) or not isinstance(prev, list):
                raise ConfigError(f"{k}: appends a list to the list {key!r}; got {v!r} onto {prev!r}")
            out[key] = prev + copy.deepcopy(v)
        else:
            out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


_SCALAR_TAGS = ("float", "int", "str", "bool")


def _is_tag(p: Any) -> bool:
    """A union member's name in a pydantic error location: a scalar type, a model, ``list[...]``."""
    return isinstance(p, str) and (p in _SCALAR_TAGS or (p[:1].isupper() and p.isidentifier())
                                   or re.fullmatch(r"[a-z_-]+\[.*\]", p) is not None)


def _union_errors(errors: list[dict]) -> list[dict]:
    """A value that fits no member of a union gets one error per member, its location tagged with
    the member's name (``expected.v.params.ExpectedValue.value``, ``expected.v.params.float``).
    Keep the members the value's shape points to (a mapping or list: the structured ones; else the
    scalars) and drop the tag, so one mistake reads as one message."""
    out = []
    for e in errors:
        idx = next((i for i, p in enumerate(e["loc"]) if _is_tag(p)), None)
        if idx is None:
            out.append(e)
            continue
        prefix = e["loc"][:idx]
        siblings = {x["loc"][idx] for x in errors if x["loc"][:idx] == prefix and len(x["loc"]) > idx}
        if len(siblings) > 1:
            # A scalar member's error sits at the tag itself and carries the whole value.
            value = next((x.get("input") for x in errors if x["loc"][:idx] == prefix and len(x["loc"]) == idx + 1
                          and x["loc"][idx] in _SCALAR_TAGS), {})
            if (e["loc"][idx] in _SCALAR_TAGS) == isinstance(value, (dict, list)):
                continue
        out.append({**e, "loc": (*prefix, *e["loc"][idx + 1:])})
    return out


def _fmt_validation(err: ValidationError, source: str, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """One line per error, naming the field; an unknown key gets "did you mean" and the allowed
    keys where ``model`` (the schema validated against) has them at that place."""
    lines = [f"{source}: invalid study"]
    for e in _union_errors(err.errors()):
        loc = ".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(e["loc"])) or "(top level)"
        msg = e["msg"]
        coerced = e["type"] == "no_coercion"  # raised for a field by its model (_Strict), located at the model
        if coerced:
            loc, e = f"{loc}.{e['ctx']['field']}" if e["loc"] else e["ctx"]["field"], {**e, "input": e["ctx"]["value"]}
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, e["loc"][:-1]) if model else []
            close = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=3, cutoff=0.5)
            msg = ("unknown key." + (f" Did you mean {', '.join(repr(c) for c in close)}?" if close else "")
                   + (f" Allowed: {', '.join(allowed)}." if allowed else ""))
        elif e["type"] == "missing":
            msg = "required field is missing"
        got = repr(e.get("input"))
        got = got if len(got) <= 80 else got[:77] + "..."  # an unknown top-level key may hold a whole section
        val = "" if e["type"] == "missing" or not (e["loc"] or coerced) else f" (got {got})"
        lines.append(f"  {loc}: {msg}{val}")
    return "\n".join(lines)


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The fields of the model at ``loc`` under ``model`` (a key's siblings, for "did you mean");
    empty where the path leaves the schema's models (a free-form mapping such as model params)."""
    ann: Any = model
    for part in loc:
        ann = _step(ann, part)
    found = _model_in(ann)
    return list(found.model_fields) if found is not None and ann is not None else []


def _step(ann: Any, part: str | int) -> Any:
    """The annotation one ``loc`` step below ``ann``: a model's field, a mapping's value type, a
    list's item type (through ``Optional`` and unions); None where the schema says no more."""
    if ann is None:
        return None
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        field = ann.model_fields.get(str(part))
        return field.annotation if field is not None else None
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin is list and args:
        return args[0]
    for arg in args:  # a union: the member that has this step
        nxt = _step(arg, part)
        if nxt is not None:
            return nxt
    return None


def _model_in(annotation) -> type[BaseModel] | None:
    """The pydantic model an annotation is, or holds as a union member (``Optional[X]``, ``X | float``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (dict, list):
        return None
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# A study expands to some hundred values; aliases that expand to more than this are refused
# before they are built (nine nested levels of nine aliases, under 1 KB, expand to 9^9).
MAX_YAML_NODES = 100_000


def _load_bounded(text: str) -> Any:
    """YAML through ``_UniqueKeyLoader``, refusing a document whose aliases expand past
    ``MAX_YAML_NODES`` (its expanded size counted on the node graph, each node once)."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size: dict[int, int] = {}

        def expanded(n: yaml.Node) -> int:
            if id(n) not in size:
                size[id(n)] = 0  # a recursive alias counts once
                kids = [x for pair in n.value for x in pair] if isinstance(n, yaml.MappingNode) else \
                    n.value if isinstance(n, yaml.SequenceNode) else []
                size[id(n)] = 1 + sum(expanded(k) for k in kids)
                if size[id(n)] > MAX_YAML_NODES:
                    raise yaml.YAMLError(f"its aliases expand to more than {MAX_YAML_NODES:,} values (an alias bomb?)")
            return size[id(n)]

        expanded(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key]}); give each key once",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _non_finite(node: Any, path: str = "") -> tuple[str, float] | None:
    """The first .inf / .nan anywhere in parsed YAML, with its dotted path."""
    if isinstance(node, float) and not math.isfinite(node):
        return path or "(top level)", node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        hit = _non_finite(v, f"{path}.{k}" if path else str(k))
        if hit:
            return hit
    return None


def _read_mapping(p: Path, kind: str) -> dict:
    """A YAML file's mapping, every malformation said with the file and line."""
    if not p.is_file():
        raise ConfigError(f"{kind}: file {str(p)!r} does not exist")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(f"{p}: line {line}: byte 0x{data[e.start]:02x} is not UTF-8; save the {kind} as UTF-8 "
                          f"text") from None
    try:
        raw = _load_bounded(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: malformed YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a {kind} must be a YAML mapping, got {type(raw).__name__}")
    bad = _non_finite(raw)
    if bad:
        raise ConfigError(f"{p}: {bad[0]}: {bad[1]} is not a finite number")
    return raw


def _extended(p: Path, raw: dict, chain: list[Path]) -> dict:
    """``extends: BASE.yaml`` (beside the file): the base study with this file's keys merged on
    it (``_merge``: mappings merge, lists and values replace, ``key+`` appends), as detectron2's
    ``_BASE_``. The child names itself; chains are followed, cycles refused."""
    base_path = p.parent / str(raw["extends"])
    if base_path.resolve() in chain:
        raise ConfigError(f"{p}: extends: {raw['extends']!r} leads back to {chain[0].name} (a cycle)")
    base = _read_mapping(base_path, "study") if base_path.is_file() else None
    if base is None:
        raise ConfigError(f"{p}: extends: {raw['extends']!r} is not a study file beside it ({base_path})")
    if "extends" in base:
        base = _extended(base_path, base, [*chain, base_path.resolve()])
    child = {k: v for k, v in raw.items() if k != "extends"}
    if child.get("name", base.get("name")) == base.get("name"):
        raise ConfigError(f"{p}: name: a study that extends {base_path.name} needs a name of its own")
    # What the base's claims, expectations and rows said about its own table is not the child's.
    base = {k: v for k, v in base.items() if k not in ("expected", "claims", "title", "description", "submission")}
    return _merge(base, child)


def load_yaml(path: str | Path, schema: type[BaseModel], kind: str = "study"):
    """Read a YAML file into ``schema``; every failure is a ConfigError naming file and field."""
    p = Path(path)
    raw = _read_mapping(p, kind)
    if kind == "study" and "extends" in raw:
        raw = _extended(p, raw, [p.resolve()])
    try:
        return schema.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_fmt_validation(e, str(p), model=schema).replace("invalid study", f"invalid {kind}")) from None


def load_study(path: str | Path) -> StudyCfg:
    study = load_yaml(path, StudyCfg)
    import_plugins(study.plugins)
    _check_names(study)
    check_layout(study)
    return study


MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def import_plugins(modules: list[str]) -> None:
    """Import the study's plugin modules (their registrations add models, losses, ...); each must
    be a module name (not a path) and register at least one component."""
    from harness.registry import REGISTRIES

    for name in modules:
        if not isinstance(name, str) or not MODULE_NAME.fullmatch(name):
            raise ConfigError(f"plugins: {name!r} is not a module name (dotted Python identifiers, e.g. "
                              f"my_lab.nets; a file path is not one): put its folder on PYTHONPATH and name the module")
        before = sum(len(reg.names()) for reg in REGISTRIES)
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"plugins: cannot import {name!r} ({e}); it must be importable (on PYTHONPATH) "
                              f"on the driver and on every Ray worker") from None
        # Registered now, or earlier by the module itself (imported before, e.g. by another study).
        grew = sum(len(reg.names()) for reg in REGISTRIES) > before
        if not grew and not any(reg.registered_by(name) for reg in REGISTRIES):
            raise ConfigError(f"plugins: {name!r} registered no component; a plugin registers models, losses, "
                              f"... with harness.registry's decorators (e.g. @MODELS.register('my_net'))")


def _check_names(study: StudyCfg) -> None:
    for reg, name, field in ((DATASETS, study.data.dataset, "data.dataset"), (MODELS, study.model.name, "model.name")):
        try:
            reg.get(name, field=field)
        except UnknownNameError as e:
            raise ConfigError(str(e)) from None
    check_train(study.train, "train")


_CHECKED: set[str] = set()


def check_train(train: TrainCfg, where: str) -> None:
    """Every component of the recipe exists, takes the parameters given and builds (on dummies).

    Nothing is trained or read: the loss, optimiser (over one dummy parameter), schedule,
    augmentations, targets, inferer and callbacks are constructed once and thrown away.
    """
    key = train.model_dump_json()
    if key in _CHECKED:
        return
    import torch

    from harness import callbacks, inferers, losses, optim  # noqa: F401  (callbacks: registers them)
    from harness.data import transforms
    from harness.registry import AUGMENTATIONS, CALLBACKS, INFERERS, LOSSES, OPTIMIZERS, SCHEDULES, TARGETS

    dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    checks = [
        (LOSSES, train.loss, "train.loss", losses.INJECTED,
         lambda: losses.build_loss(train.loss, train.output, train.deep_supervision)),
        (OPTIMIZERS, train.optimizer, "train.optimizer", optim.OPTIMIZER_INJECTED,
         # param_groups match names of the real model: checked when the trial builds it
         lambda: optim.build_optimizer(torch.nn.Linear(1, 1), train.model_copy(update={"param_groups": []}))),
        (SCHEDULES, train.schedule, "train.schedule", optim.SCHEDULE_INJECTED,
         lambda: optim.build_schedule(dummy, train, total_steps=train.epochs * train.steps_per_epoch)),
        (INFERERS, train.inferer, "train.inferer", inferers.INJECTED,
         lambda: inferers.build_inferer(train.inferer, train.patch, train.batch_size, train.output)),
    ]
    checks += [(AUGMENTATIONS, a, f"train.augment[{i}]", transforms.AUGMENT_INJECTED,
                lambda a=a: AUGMENTATIONS.get(a.name)(keys=["image", "label"], **a.params))
               for i, a in enumerate(train.augment)]
    checks += [(TARGETS, t, f"train.targets[{i}]", (), lambda t=t: TARGETS.get(t.name)(**t.params))
               for i, t in enumerate(train.targets)]
    checks += [(CALLBACKS, c, f"train.callbacks[{i}]", (), lambda c=c: CALLBACKS.get(c.name)(**c.params))
               for i, c in enumerate(train.callbacks)]
    prefix = "" if where == "train" else f"{where}: "
    built = []
    for reg, spec, field, injected, build in checks:
        try:
            reg.check_params(spec.name, spec.params, field, injected)
            built.append(build())
        except UnknownNameError as e:
            raise ConfigError(f"{prefix}{e}") from None
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"{prefix}{field} ({spec.name}): {e}") from None
    target_keys = [x.key for x, (reg, *_) in zip(built, checks) if reg is TARGETS]
    clash = [k for k in target_keys if k in ("image", "label") or target_keys.count(k) > 1]
    if clash:
        raise ConfigError(f"{prefix}train.targets: output keys {sorted(set(clash))} clash (with image/label or each other)")
    _CHECKED.add(key)


def _axis_labels(vs: list[VariantCfg], axis: str) -> list[str]:
    """The labels an axis (grid axis, tag or ``variant``) takes over the variants, in order."""
    return list(dict.fromkeys({"variant": v.name, **v.tags}.get(axis, v.name) for v in vs))


def check_layout(study: StudyCfg) -> None:
    """The layout's axes and baseline name things the study has."""
    lay = study.layout
    vs = table_rows(study)
    axes = ["variant", *study.grid, *{k for v in vs for k in v.tags}]
    for field, axis in (("rows", lay.rows), ("columns", lay.columns)):
        if isinstance(axis, str) and axis not in axes:
            raise ConfigError(str(UnknownNameError("axis", axis, axes, f"layout.{field}")))
    if study.submission is not None and study.submission.row not in [v.name for v in vs]:
        raise ConfigError(str(UnknownNameError("row", study.submission.row, [v.name for v in vs], "submission.row")))
    if lay.baseline is not None and lay.baseline not in [v.name for v in vs]:
        raise ConfigError(str(UnknownNameError("variant", lay.baseline, [v.name for v in vs], "layout.baseline")))
    if isinstance(lay.value, dict):  # column groups: each key a label of the columns axis
        if not isinstance(lay.columns, str):
            raise ConfigError("layout.value: metric groups {label: [metric, ...]} need columns to be an axis")
        labels = _axis_labels(vs, lay.columns)
        for label in lay.value:
            if label not in labels:
                raise ConfigError(str(UnknownNameError(f"label of axis {lay.columns!r}", label, labels,
                                                       "layout.value")))
    if lay.values is not None and lay.rows:  # row groups: each key a label of the rows axis, or "*"
        labels = _axis_labels(vs, lay.rows)
        for label in lay.values:
            if label != "*" and label not in labels:
                raise ConfigError(str(UnknownNameError(f"label of axis {lay.rows!r}", label, [*labels, "*"],
                                                       "layout.values")))
    for i, c in enumerate(study.claims):
        if isinstance(c.than, (int, float)):  # a published figure: only the variant side to check
            claim_members(study, c.better, vs, f"claims[{i}].better")
            continue
        sides = [claim_members(study, c.better, vs, f"claims[{i}].better"),
                 claim_members(study, c.than, vs, f"claims[{i}].than")]
        if set(sides[0]) & set(sides[1]):
            raise ConfigError(f"claims[{i}]: variants {sorted(set(sides[0]) & set(sides[1]))} are on both sides")


def claim_members(study: StudyCfg, side, vs: list[VariantCfg] | None = None, field: str = "claims") -> list[str]:
    """The variants a claim's side names: one variant, or every variant whose tags match."""
    vs = vs if vs is not None else table_rows(study)
    names = [v.name for v in vs]
    if isinstance(side, str):
        if side not in names:
            raise ConfigError(str(UnknownNameError("variant", side, names, field)))
        return [side]
    hits = [v.name for v in vs if all({"variant": v.name, **v.tags}.get(k) == label for k, label in side.items())]
    if not hits:
        raise ConfigError(f"{field}: no variant has tags {side}")
    return hits


def variants(study: StudyCfg) -> list[VariantCfg]:
    """Explicit variants, then the grid's product (names joined by '-', tags = axis labels).

    A grid option is model parameters plus optional reserved keys: ``train`` (overrides),
    ``model`` (another registered model's name) and ``task`` (one of the study's tasks).
    """
    out = list(study.variants)
    if study.grid:
        axes = list(study.grid)
        for combo in itertools.product(*(study.grid[a].items() for a in axes)):
            params: dict[str, Any] = {}
            train: dict[str, Any] = {}
            picked: dict[str, Any] = {}
            for _, p in combo:
                p = dict(p or {})
                train = _merge(train, p.pop("train", {}))
                picked.update({k: p.pop(k) for k in ("model", "task") if k in p})
                params = _merge(params, p)
            out.append(VariantCfg(name="-".join(label for label, _ in combo), params=params, train=train,
                                  tags={a: label for a, (label, _) in zip(axes, combo)}, **picked))
    if study.landscape:
        # Every registered family joins by registration alone, through its class's ``landscape`` dict.
        for model_name in MODELS.names():
            for label, params in getattr(MODELS.get(model_name), "landscape", {"default": {}}).items():
                out.append(VariantCfg(name=f"{model_name}.{label}", model=model_name, params=params,
                                      tags={"family": model_name, "config": label}))
    names = [v.name for v in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"variants: duplicate variant names {sorted(dup)}")
    for v in out:
        if v.task is not None and v.task not in study.tasks:
            raise ConfigError(str(UnknownNameError(f"task of variant {v.name!r}", v.task, list(study.tasks), "task")))
    return out


def table_rows(study: StudyCfg) -> list[VariantCfg]:
    """The rows a report shows and claims name: the trained variants, then the combined rows
    (as variants with their name and tags only). Each combined row's members must come before
    it, its rule must be registered with valid parameters, and no name may repeat."""
    vs = variants(study)
    names = [v.name for v in vs]
    for i, c in enumerate(study.combined):
        where = f"combined[{i}]"
        if c.name in names:
            raise ConfigError(f"{where}.name: {c.name!r} is already a variant or combined row")
        for m in c.of:
            if m not in names:
                raise ConfigError(str(UnknownNameError("variant (or earlier combined row)", m, names, f"{where}.of")))
        if len(set(c.of)) != len(c.of):
            raise ConfigError(f"{where}.of: {c.of} names a member twice")
        try:
            COMBINERS.check_params(c.rule.name, c.rule.params, f"{where}.rule")
        except (UnknownNameError, ValueError) as e:
            raise ConfigError(str(e)) from None
        names.append(c.name)
        vs = [*vs, VariantCfg(name=c.name, tags=c.tags)]
    return vs


def combined_keys(study: StudyCfg, specs: list[TrialSpec]) -> list[dict[str, Any]]:
    """The combined rows' evaluations at the trials ``specs``: per row and (seed, fold), its
    ``key`` (as a trial key: ``name#s0``), the member ``keys`` and its ``hash`` (its rule and
    the members' hashes, so that a retrained member makes the row stale too)."""
    hashes = {s.key: spec_hash(s) for s in specs}
    suffix = {s.key: s.key[len(s.variant):] for s in specs}
    by_variant: dict[str, list[str]] = {}
    for s in specs:
        by_variant.setdefault(s.variant, []).append(suffix[s.key])
    seeds = {s.key: (s.seed, s.fold) for s in specs}
    out = []
    for c in study.combined:
        for sfx in by_variant.get(c.of[0], []):
            keys = [f"{m}{sfx}" for m in c.of]
            if not all(k in hashes for k in keys):
                continue
            key = f"{c.name}{sfx}"
            hashes[key] = config_hash([c.rule.model_dump(), [hashes[k] for k in keys]])
            seeds[key] = seeds[keys[0]]
            by_variant.setdefault(c.name, []).append(sfx)
            out.append({"key": key, "variant": c.name, "of": keys, "hash": hashes[key], "seed": seeds[key][0],
                        "fold": seeds[key][1], "rule": c.rule, "tags": c.tags})
    return out


def config_hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def spec_hash(spec: BaseModel) -> str:
    """A trial's identity: its settings that differ from the schema's defaults.

    A field added to the schema later, with a default, leaves earlier trials' hashes as they
    were, so their MLflow runs still count for ``report`` and ``--resume``. (Changing a
    default's *value* is the one change that must come with new runs.)
    """
    return config_hash(spec.model_dump(mode="json", exclude_defaults=True))


def _scale_parts(study: StudyCfg, scale: str):
    if scale not in study.scales:
        raise ConfigError(f"--scale: {scale!r} is not defined; allowed: {sorted(study.scales)}")
    sc = study.scales[scale]
    try:
        base_train = _merge(study.train.model_dump(), sc.train)
        check_train(TrainCfg.model_validate(base_train), f"scales.{scale}")
    except ValidationError as e:
        raise ConfigError(_fmt_validation(e, f"scales.{scale}", "train", TrainCfg)) from None
    try:
        cost = CostCfg.model_validate(_merge(study.cost.model_dump(), sc.cost))
    except ValidationError as e:
        raise ConfigError(_fmt_validation(e, f"scales.{scale}", "cost", CostCfg)) from None
    data = DataCfg(dataset=study.data.dataset, params=_merge(study.data.params, sc.data))
    return sc, base_train, cost, data


def resolve_variant(study: StudyCfg, scale: str, v: VariantCfg, seeds: int = 1, folds: int = 1,
                    check: bool = True) -> list[TrialSpec]:
    """Trial specs of one variant at ``scale``: study <- scale <- [task] <- variant; with ``check``
    the model is built once and the recipe's components are checked.

    ``folds`` > 1 repeats the variant on each fold of a data set that has folds (one read from
    a folder); a synthetic set has none and keeps one split, its spread over seeds only.
    """
    _, base_train, cost, data = _scale_parts(study, scale)
    if v.task is not None:  # the task defines the data at this scale, and may adjust training (its patch)
        t = study.tasks[v.task][scale]
        data = DataCfg(dataset=t.dataset, params=t.params)
        base_train = _merge(base_train, t.train)
    try:
        train = TrainCfg.model_validate(_merge(base_train, v.train))
    except ValidationError as e:
        raise ConfigError(_fmt_validation(e, f"variant {v.name!r} train", model=TrainCfg)) from None
    if check and v.train:
        check_train(train, f"variant {v.name!r}")
    if v.model is None or v.model == study.model.name:
        model = ModelCfg(name=study.model.name,
                         params=_merge(_merge(study.model.params, study.scales[scale].model), v.params))
    else:  # another family: the study's model parameters are not its parameters
        try:
            MODELS.get(v.model, field=f"variant {v.name!r}: model")
        except UnknownNameError as e:
            raise ConfigError(str(e)) from None
        model = ModelCfg(name=v.model, params=v.params)
    if check:
        from harness.contract import out_channels

        task = DATASETS.get(data.dataset)(**data.params)  # lazy: channels and regions, no case read
        check_model(model, train.patch, f"variant {v.name!r}", train.output, task.in_channels,
                    out_channels(len(task.regions), train.output))
        check_patch_fits(data, train.patch, f"variant {v.name!r}")
        if train.output == "softmax":
            check_exclusive(data, f"variant {v.name!r}")
    if folds > 1 and "fold" in inspect.signature(DATASETS.get(data.dataset)).parameters:
        if "fold" in data.params:
            raise ConfigError(f"variant {v.name!r}: data.fold is set to {data.params['fold']}; "
                              f"remove it to run all {folds} folds")
        runs = [(f"#f{k}s{s}", k, DataCfg(dataset=data.dataset, params={**data.params, "folds": folds, "fold": k}))
                for k in range(folds) for s in range(seeds)]
        seeds_of = [s for _ in range(folds) for s in range(seeds)]
    else:
        runs, seeds_of = [(f"#s{s}", None, data) for s in range(seeds)], list(range(seeds))
    return [TrialSpec(study=study.name, scale=scale, key=f"{v.name}{suffix}", variant=v.name, tags=v.tags, seed=s,
                      fold=k, data=d, model=model, train=train, cost=cost, resources=study.resources,
                      plugins=study.plugins)
            for (suffix, k, d), s in zip(runs, seeds_of)]


def check_exclusive(data: DataCfg, where: str) -> None:
    """``train.output: softmax`` needs regions that never overlap (one class per voxel)."""
    task = DATASETS.get(data.dataset)(**data.params)
    if not task.exclusive:
        raise ConfigError(f"{where}: train.output: softmax needs mutually exclusive regions, but {task.name}'s "
                          f"regions {list(task.regions)} overlap; use sigmoid")


def check_patch_fits(data: DataCfg, patch: list[int], where: str) -> None:
    """A synthetic volume's ``shape`` is known before any case exists: a patch larger than it
    would be zero-padded in every crop, which no paper does; refuse it."""
    factory = DATASETS.get(data.dataset)
    default = inspect.signature(factory).parameters.get("shape")
    shape = data.params.get("shape", default.default if default is not None else None)
    if shape is None or shape is inspect.Parameter.empty:
        return  # a folder: volumes differ per case, and padding a small one is the norm (nnU-Net)
    over = [f"{'DHW'[i]} {p} > {s}" for i, (p, s) in enumerate(zip(patch, shape)) if p > s]
    if over:
        raise ConfigError(f"{where}: train.patch {list(patch)} is larger than the synthetic volume "
                          f"data.shape {list(shape)} ({', '.join(over)}); every crop would be zero-padded. "
                          f"Use a patch of at most the volume")


def resolve(study: StudyCfg, scale: str, seeds: int | None = None, folds: int | None = None,
            check: bool = True) -> list[TrialSpec]:
    """Apply ``scale`` and expand variants x [folds x] seeds into trial specs, data checked.

    ``check=False`` skips building each model (the report only needs the specs' hashes).
    """
    sc, _, _, data = _scale_parts(study, scale)
    check_data(data)
    for name, per_scale in study.tasks.items():
        t = per_scale[scale]
        try:
            check_data(DataCfg(dataset=t.dataset, params=t.params))
        except (ConfigError, UnknownNameError) as e:
            raise ConfigError(f"tasks.{name}.{scale}: {e}") from None
    n_seeds = seeds or sc.seeds or study.seeds
    vs = variants(study)
    n_folds = folds or sc.folds or 1
    specs = [spec for v in vs for spec in resolve_variant(study, scale, v, n_seeds, n_folds, check)]
    known = [v.name for v in table_rows(study)]
    for vname in study.expected:
        if vname not in known:
            raise ConfigError(str(UnknownNameError("variant", vname, known, "expected")))
    return specs


PORTABLE_DATA_PARAMS = ("labels",)  # kept when --data-root swaps a synthetic set for a folder


def apply_data_roots(study: StudyCfg, scale: str, roots: list[str]) -> None:
    """``--data-root PATH`` points the study's data at a folder; ``TASK=PATH`` one of its tasks.

    A synthetic data set is replaced by the folder's format (detected), with the study's
    ``data.folder`` parameters, so a paper table runs on real data without editing its study
    file; the task's training overrides stay.
    """
    for item in roots:
        name, sep, path = item.partition("=")
        if sep and re.fullmatch(r"[A-Za-z0-9_.-]+", name) and not Path(item).exists():
            if name not in study.tasks:
                raise ConfigError(str(UnknownNameError("task", name, list(study.tasks), "--data-root")))
            cfg = study.tasks[name][scale]
        else:
            if study.tasks:
                raise ConfigError(f"--data-root: {study.name} spans tasks {sorted(study.tasks)}; "
                                  f"name one: --data-root TASK=PATH")
            cfg, path = None, item
        dataset = cfg.dataset if cfg else study.data.dataset
        old = cfg.params if cfg else {**study.data.params, **study.scales[scale].data}
        # A synthetic set's parameters mean nothing to the folder's format, but for the label
        # encoding (BraTS regions or classes), which is the study's choice, not the data's.
        params = {"root": path, **{k: old[k] for k in PORTABLE_DATA_PARAMS if k in old},
                  **(study.data.folder if cfg is None else {})}
        if "root" not in inspect.signature(DATASETS.get(dataset)).parameters:
            from harness.data.folders import detect_format

            dataset = detect_format(path)
            if dataset is None:
                raise ConfigError(f"--data-root: {path}: cannot tell the format (no dataset.json, CaseNN.mhd or "
                                  f"BraTS case folders); set the study's dataset to msd, brats or promise12")
        elif cfg is not None:
            params = {**cfg.params, "root": path}
        if cfg is not None:
            cfg.dataset, cfg.params = dataset, params
        elif dataset == study.data.dataset:
            study.scales[scale].data = {**study.scales[scale].data, "root": path}
        else:
            study.data = DataCfg(dataset=dataset)
            study.scales[scale].data = params


def check_data(data: DataCfg) -> None:
    """Unknown data parameters and impossible values fail here; no data is generated or read."""
    factory = DATASETS.get(data.dataset, field="data.dataset")
    allowed = list(inspect.signature(factory).parameters)
    for k in data.params:
        if k not in allowed:
            raise ConfigError(str(UnknownNameError(f"parameter of data set {data.dataset!r}", k, allowed,
                                                   "data.params")))
    try:
        check_types(factory, data.params, "data.params")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        factory(**data.params)  # tasks load lazily: this only validates
    except (ValueError, TypeError) as e:
        raise ConfigError(f"data: {e}") from None


def check_model(model: ModelCfg, patch: list[int], where: str, output: str = "sigmoid",
                in_channels: int | None = None, out_channels: int | None = None):
    """Build the model once, with the arguments a trial injects (the data set's channels, the
    patch, the output activation): unknown parameters and impossible settings fail here, not
    in a trial, and a factory that requires its channels (MONAI's nets) builds as in a trial."""
    cls = MODELS.get(model.name, field="model.name")
    sig = inspect.signature(cls)
    allowed = [n for n in sig.parameters if n != "self"]
    for k in model.params:
        if k in ("in_channels", "out_channels"):
            raise ConfigError(f"{where}: model.params.{k} is set by the data set (its channels and regions); remove it")
        if k == "output":
            raise ConfigError(f"{where}: model.params.output is set from train.output; remove it")
        if k not in allowed:
            raise ConfigError(str(UnknownNameError(f"parameter of model {model.name!r}", k, allowed,
                                                   f"{where}: model.params")))
    try:
        check_types(cls, model.params, f"{where}: model.params")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    params = dict(model.params)
    if "input_size" in allowed:  # set from the patch unless the study gives it (harness.models.build_model)
        params.setdefault("input_size", list(patch))
    if "output" in allowed:
        params["output"] = output
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if name in allowed and value is not None:
            params[name] = value
    try:
        net = cls(**params)
        if hasattr(net, "check_input"):
            net.check_input(patch)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"{where}: {e}") from None
    return net
