"""A search space file's schema: knobs, objectives, constraints, sampler, scheduler, strategies."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Optional

from pydantic import BeforeValidator, Field, model_validator

from harness.config import Strict


class Knob(Strict):
    choice: Optional[list[Any]] = None
    # Asked only when the trial's model is one of these (``model: NAME`` or a list), and each
    # other knob named here (declared above this one) drew one of the options listed
    # (``insert: [CSC, CCS]``): Optuna's define-by-run spaces. A family's own axes in a search
    # across families; a knob that only matters under another's option (Group Shift's ratio
    # only where Group Shift is inserted), so that no two points build the same net.
    when: Optional[dict[str, Any]] = None
    uniform: Optional[tuple[float, float]] = None
    loguniform: Optional[tuple[float, float]] = None
    values: Optional[list[int]] = None  # groups.<stage>: per-axis group counts to combine (valid ones only)
    integer: Optional[tuple[int, int]] = Field(None, alias="int")

    @model_validator(mode="after")
    def _one(self):
        given = [k for k in ("choice", "uniform", "loguniform", "integer", "values") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of choice, uniform, loguniform, int, values (got {given or 'none'})")
        return self


class Objective(Strict):
    metric: str
    mode: Literal["max", "min"]
    # log: the hypervolume measures this objective in log10 (a cost spanning decades, where a
    # linear reference point would give the whole volume to the cheapest net).
    scale: Literal["linear", "log"] = "linear"


class Constraint(Strict):
    """A bound a trial must meet to count (Optuna's ``constraints_func``): the samplers prefer
    feasible trials, and only those enter the Pareto set and the hypervolume."""

    metric: str
    min: Optional[float] = None
    max: Optional[float] = None

    @model_validator(mode="after")
    def _bound(self):
        if self.min is None and self.max is None:
            raise ValueError(f"constraints: {self.metric}: give min, max or both")
        return self


class ConfirmCfg(Strict):
    seeds: int = Field(ge=2)  # an interval over seeds needs two at least


class SamplerCfg(Strict):
    """Optuna's sampler and its options. ``auto``: TPE (multivariate, grouped by the
    define-by-run branch) for a space whose knobs depend on a chosen model, NSGA-II otherwise.
    NSGA-II on a space with one unconditional knob mutates that gene with probability 1/1 and
    so samples exactly as random search does; TPE models each model's own knobs apart.

    NSGA-II (``nsga2``, ``nsga3``): ``population_size``, ``mutation_prob`` (default 1 / genes),
    ``crossover_prob``, ``swapping_prob``. TPE (``tpe``): ``n_startup_trials`` (random ones
    first), ``multivariate``, ``group`` (a model per define-by-run branch; needs multivariate),
    ``constant_liar`` (trials running in parallel counted as bad, so they are not proposed
    again). ``random``: ``seed`` only."""

    name: Literal["auto", "nsga2", "nsga3", "tpe", "random"] = "auto"
    seed: int = 0
    population_size: int = Field(8, ge=2)  # NSGA-II/III generation size
    mutation_prob: Optional[float] = Field(None, ge=0, le=1)
    crossover_prob: float = Field(0.9, ge=0, le=1)
    swapping_prob: float = Field(0.5, ge=0, le=1)
    n_startup_trials: int = Field(6, ge=1)
    multivariate: bool = True
    group: Optional[bool] = None  # default: on for a space with conditional knobs
    constant_liar: bool = True

    @model_validator(mode="after")
    def _tpe(self):
        if self.group and not self.multivariate:
            raise ValueError("group: true needs multivariate: true (TPE groups its multivariate models)")
        return self


class SchedulerCfg(Strict):
    """Early stopping by cost-aware asynchronous successive halving: at each rung
    (``grace_period`` x ``reduction_factor``^k epochs, below the last) a trial goes on only if its
    rung accuracy ranks in the top 1/``reduction_factor`` of the trials at that rung that cost no
    more than it does, and at most ``cost_band`` times less (``harness.pareto.continues_at_rung``:
    the exact costs, GMACs or parameters, are known before training; only trials that cost no
    more can dominate it, and a much cheaper net leads over the first steps whatever it reaches).
    ASHA: Li et al. 2020; MO-ASHA (Schmucker et al. 2021) ranks the cost with the rung's noisy
    accuracy instead. ``rung_cases``: validation cases scored at a rung (the first ones; the last
    epoch scores all): a rung needs a ranking, and validation is most of a short rung's time."""

    name: Literal["none", "asha"] = "none"
    reduction_factor: int = Field(3, ge=2)
    grace_period: int = Field(1, ge=1)  # epochs to the first rung
    rung_cases: Optional[int] = Field(None, ge=1)
    # Peers at a rung cost no more, and at most this factor less (null: any cheaper trial).
    cost_band: Optional[float] = Field(2.0, gt=1)

    def rungs(self, epochs: int) -> list[int]:
        """Epochs (from 1) at which trials are ranked: none without a scheduler."""
        out, r = [], self.grace_period
        while self.name == "asha" and r < epochs:
            out.append(r)
            r *= self.reduction_factor
        return out


# ``scheduler: asha`` is short for ``scheduler: {name: asha}``.
Scheduler = Annotated[SchedulerCfg, BeforeValidator(lambda v: {"name": v} if isinstance(v, str) else v)]


class StrategyCfg(Strict):
    """Another way to search the same space, run beside the main one for the comparison of
    hypervolume against trial-time (unset fields: the main search's)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    sampler: Optional[SamplerCfg] = None
    scheduler: Optional[Scheduler] = None
    trials: Optional[int] = Field(None, ge=1)


class SearchCfg(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)
    study: str  # base study, relative to this file
    scale: Literal["smoke", "quick", "paper"] = "smoke"
    task: Optional[str] = None  # one of the base study's ``tasks`` (its data at the scale)
    knobs: dict[str, Knob]
    train: dict[str, Any] = Field(default_factory=dict)  # training overrides for every trial (e.g. targets)
    objectives: list[Objective] = Field(min_length=1)
    sampler: SamplerCfg = Field(default_factory=SamplerCfg)
    scheduler: Scheduler = Field(default_factory=SchedulerCfg)  # or just its name: none | asha
    storage: Optional[str] = None  # journal file or RDB URL; default: optuna/<name>.journal beside mlflow.db
    trials: int = Field(12, ge=1)
    compare: list[StrategyCfg] = Field(default_factory=list)  # run too; hypervolume vs trial-time
    reference_point: Optional[dict[str, float]] = None  # of the hypervolume; default: the worst seen
    # The base study's finished runs at this scale enter every strategy as complete trials, where
    # one is exactly a point of the space (the same trial a search would train).
    warm_start: bool = False
    # An option that cannot be built (found before training): refuse the space, or leave it out.
    on_invalid: Literal["refuse", "skip"] = "refuse"
    constraints: list[Constraint] = Field(default_factory=list)  # e.g. [{metric: mean_dice, min: 50}]
    confirm: Optional[ConfirmCfg] = None  # retrain the front at this many seeds after the search

    def bounds(self) -> list[tuple[str, Optional[float], Optional[float]]]:
        return [(c.metric, c.min, c.max) for c in self.constraints]

    @model_validator(mode="after")
    def _checks(self):
        names = [s.name for s in self.compare]
        if len(set(names)) < len(names):
            raise ValueError(f"compare: strategy names repeat ({names})")
        objs = {o.metric for o in self.objectives}
        if self.reference_point is not None and set(self.reference_point) != objs:
            raise ValueError(f"reference_point: give a value for each objective {sorted(objs)} "
                             f"(got {sorted(self.reference_point)})")
        return self


def encode(v: Any) -> Any:
    """Optuna categorical values must be primitives: lists travel as JSON strings."""
    return json.dumps(v) if isinstance(v, (list, tuple, dict)) else v


def decode(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in "[{":
        return json.loads(v)
    return v
