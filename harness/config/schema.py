"""The study schema: pydantic models of a study file and of one trial (``TrialSpec``), and the
formatting of their validation errors (the field, the bad value, what is allowed).

A study names a data set, a model and its variants (an explicit list and/or a grid of named
axes whose product is taken), the training recipe, the paper's numbers (``expected``), its
claims and its scales: ``smoke`` (seconds, the tests), ``quick`` (2 CPU cores, 10 minutes) and
``paper``. Every part of the recipe is a registered component named as ``{name, params}``.
"""
from __future__ import annotations

import difflib
import re
import typing
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError



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


class Strict(BaseModel):
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


class DataCfg(Strict):
    dataset: str
    params: dict[str, Any] = Field(default_factory=dict)
    # Parameters of the folder data set ``--data-root`` swaps in for a synthetic one: the paper's
    # preprocessing of its real data (ConResNet Table II: CT window [-100, 240], 4 folds).
    folder: dict[str, Any] = Field(default_factory=dict)

    _flat = _flat_params(("dataset", "params", "folder"))


class ModelCfg(Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class ComponentCfg(Strict):
    """A registered component and its parameters; a bare name is ``{name: NAME}``."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, raw):
        return {"name": raw} if isinstance(raw, str) else raw


class DeepSupervisionCfg(Strict):
    """Deep supervision: the loss on the segmentation and on each head of ``outputs[output]``."""

    output: str = "deep"
    weight_mode: Literal["exp", "two", "same"] = "exp"
    weights: Optional[list[float]] = None
    reduction: Literal["sum", "mean"] = "sum"  # mean: the weighted sum divided by the number of heads


class ParamGroupCfg(Strict):
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


class TrainCfg(Strict):
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
    # How the net's outputs map to the training contract (harness.outputs): auto tells MONAI's
    # conventions apart by rank; stacked (DynUNet), heads, extras (SegResNetVAE) name one.
    outputs: ComponentCfg = Field(default_factory=lambda: ComponentCfg(name="auto"))
    # Named scalar outputs added to the loss with these weights (SegResNetVAE's vae_loss: 0.1,
    # Myronenko 2018's weight of its L2 and KL terms); an output left out is said, not added.
    aux_losses: dict[str, float] = Field(default_factory=dict)
    callbacks: list[ComponentCfg] = Field(default_factory=list)
    amp: bool = True  # CUDA only
    # The CPU layer's batch-1 convolution route (harness.ops.conv): unset, the harness's own
    # families' nets only; true, a plugin's nets too; false, none.
    cpu_conv_route: Optional[bool] = None
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


class CostCfg(Strict):
    input: Optional[list[int]] = None  # (N, C, D, H, W) for params/GMACs; default 1 x C x patch
    latency: bool = True
    latency_runs: int = Field(5, ge=1)

    @field_validator("input")
    @classmethod
    def _input(cls, v):
        return _five_sizes(v)


class ResourcesCfg(Strict):
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)


class ScaleCfg(Strict):
    data: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    cost: dict[str, Any] = Field(default_factory=dict)
    seeds: Optional[int] = Field(None, ge=1)
    folds: Optional[int] = Field(None, ge=1)  # cross-validation folds of folder data sets (their ``fold``)


class TaskScaleCfg(Strict):
    """A task's data (and training overrides, e.g. its patch) at one scale."""

    dataset: str
    params: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)

    _flat = _flat_params(("dataset", "params", "train"))


class VariantCfg(Strict):
    name: str
    model: Optional[str] = None  # another registered model than the study's (families side by side)
    task: Optional[str] = None  # one of the study's ``tasks`` (tables spanning data sets)
    params: dict[str, Any] = Field(default_factory=dict)  # model parameters
    train: dict[str, Any] = Field(default_factory=dict)  # training overrides (e.g. a loss ablation)
    tags: dict[str, str] = Field(default_factory=dict)


class CombinedCfg(Strict):
    """A row evaluated, not trained: per seed (and fold), the predictions of the variants ``of``
    on the validation cases, combined by a registered ``rule`` (``harness.combine``): an
    ensemble of pipelines, a label-map reconstruction, BraTS 2020's merge (Table 3). A member may be an earlier
    combined row. Costed as run: every member network's inference, summed."""

    name: str
    of: list[str] = Field(min_length=1)  # one member: a rule that post-processes it (BraTS label maps)
    rule: ComponentCfg
    tags: dict[str, str] = Field(default_factory=dict)


class SubmissionCfg(Strict):
    """What ``harness submit`` writes for a challenge's unlabelled cases (``harness.submit``):
    the ``row`` (a variant or combined row) whose label maps are uploaded, in ``format``."""

    row: str
    format: Literal["brats"] = "brats"


class ExpectedValue(Strict):
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


class LayoutCfg(Strict):
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


# A name that becomes a file or folder name: letters, digits, '_', '.', '-', not only dots.
PLAIN_NAME = r"^[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*$"


class ClaimCfg(Strict):
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
    # paper: the paper states it; reading: our reading of the paper's table, which its text does
    # not state; ours: a check of our own (a sanity check, a procedure the paper does not
    # ablate). The index counts each apart.
    source: Literal["paper", "reading", "ours"] = "paper"
    # What the verdict is about, counted apart in the index: result (what training gave; timed
    # costs too), identity (holds by construction: BraTS 2020's merge leaves ET and TC as they
    # were; not a verdict on training), convention (the paper counts otherwise than we do: its
    # "FLOPs per voxel" against our MACs). Exact costs (parameters, MACs) are arithmetic whatever
    # this says.
    kind: Literal["result", "identity", "convention"] = "result"
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
            from harness.metrics import exact_names, known, metric

            # A plugin's metric is not known until its plugin loads: checked again after (check_claims).
            if known(self.metric) and not metric(self.metric).exact:
                raise ValueError(f"metric: measure: ratio is for an exact cost, one of {', '.join(exact_names())}; "
                                 f"got {self.metric!r}")
            if self.value is not None and not self.value > 0:
                raise ValueError(f"value: a ratio is > 0, got {self.value:g}")
        return self

    @property
    def reference(self) -> float:
        """What the effect is compared with: the stated ``value``, else no difference (0, or 1 for a ratio)."""
        return self.value if self.value is not None else 1.0 if self.measure == "ratio" else 0.0


class StudyCfg(Strict):
    # The study's name is a folder (reports/<name>/): a plain name, never "." or "..".
    name: str = Field(pattern=PLAIN_NAME, max_length=100)  # a folder and a lock file's name: kept short
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
    # The rule that marks a seed that did not train (harness.report.failures), flagged in the report.
    failed_to_train: ComponentCfg = Field(default_factory=lambda: ComponentCfg(name="below_median"))

    @model_validator(mode="after")
    def _has_scales_and_variants(self):
        missing = set(SCALES) - set(self.scales)
        if missing:
            raise ValueError(f"scales: missing {sorted(missing)}; every study needs {', '.join(SCALES)}")
        if not self.variants and not self.grid and not self.landscape:
            # A study of one net: its default variant, named after the model.
            self.variants = [VariantCfg(name=self.model.name)]
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

    @property
    def trial_id(self) -> str:
        """A trial's name across studies run together (its key is unique within its study only)."""
        return f"{self.study}/{self.key}"


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


def format_validation(err: ValidationError, source: str, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """One line per error, naming the field; an unknown key gets "did you mean" and the allowed
    keys where ``model`` (the schema validated against) has them at that place."""
    lines = [f"{source}: invalid study"]
    for e in _union_errors(err.errors()):
        loc = ".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(e["loc"])) or "(top level)"
        msg = e["msg"]
        coerced = e["type"] == "no_coercion"  # raised for a field by its model (Strict), located at the model
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
