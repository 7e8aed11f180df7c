"""``harness search``: NAS-style search over a study's axes (Optuna through Ray Tune).

A search space (``search_spaces/*.yaml``) names a base study (data, model, training,
scales) and the knobs to search, with plain distributions. Constraints are met by
construction: a ``groups.<stage>`` knob offers only the spatial groups that divide
that stage's feature size at the search's patch. A choice option may name another
registered ``model`` with its parameters (a search across families); a knob with
``when: {model: ...}`` is asked only of trials of those models (define-by-run). The Optuna study lives in a
JournalStorage file (or an RDB URL), so a search resumes and can be shared; every
trial is also an MLflow child run. Results: the Pareto set as a table and a plot, and
each Pareto point as a ready study variant for ``harness run``.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BeforeValidator, Field, model_validator

from harness import compat
from harness.config import (ConfigError, StudyCfg, TrialSpec, VariantCfg, _merge, _Strict, build_checked_model,
                            config_hash, import_plugins, load_study, load_yaml, resolve_variant)
from harness.pareto import constraint_values, feasible, non_dominated
from harness.registry import DATASETS, MODELS, UnknownNameError


class Knob(_Strict):
    choice: Optional[list[Any]] = None
    # Asked only when the trial's model is one of these (Optuna's define-by-run spaces): the
    # family's own axes in a search across families.
    when: Optional[dict[Literal["model"], Union[str, list[str]]]] = None
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


class Objective(_Strict):
    metric: str
    mode: Literal["max", "min"]
    # log: the hypervolume measures this objective in log10 (a cost spanning decades, where a
    # linear reference point would give the whole volume to the cheapest net).
    scale: Literal["linear", "log"] = "linear"


class Constraint(_Strict):
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


class ConfirmCfg(_Strict):
    seeds: int = Field(ge=2)  # an interval over seeds needs two at least


class SamplerCfg(_Strict):
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


class SchedulerCfg(_Strict):
    """Early stopping by asynchronous successive halving (ASHA, Li et al. 2020): at each rung
    (``grace_period`` x ``reduction_factor``^k epochs, below the last) a trial goes on only if it
    ranks in the top 1/``reduction_factor`` of the trials that reached that rung. With several
    objectives the rank is by non-domination, ties by crowding distance (MO-ASHA, Schmucker et
    al. 2021). ``rung_cases``: validation cases scored at a rung (the first ones; the last
    epoch scores all): a rung needs a ranking, and validation is most of a short rung's time."""

    name: Literal["none", "asha"] = "none"
    reduction_factor: int = Field(3, ge=2)
    grace_period: int = Field(1, ge=1)  # epochs to the first rung
    rung_cases: Optional[int] = Field(None, ge=1)

    def rungs(self, epochs: int) -> list[int]:
        """Epochs (from 1) at which trials are ranked: none without a scheduler."""
        out, r = [], self.grace_period
        while self.name == "asha" and r < epochs:
            out.append(r)
            r *= self.reduction_factor
        return out


# ``scheduler: asha`` is short for ``scheduler: {name: asha}``.
Scheduler = Annotated[SchedulerCfg, BeforeValidator(lambda v: {"name": v} if isinstance(v, str) else v)]


class StrategyCfg(_Strict):
    """Another way to search the same space, run beside the main one for the comparison of
    hypervolume against trial-time (unset fields: the main search's)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    sampler: Optional[SamplerCfg] = None
    scheduler: Optional[Scheduler] = None
    trials: Optional[int] = Field(None, ge=1)


class SearchCfg(_Strict):
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


def _enc(v: Any) -> Any:
    """Optuna categorical values must be primitives: lists travel as JSON strings."""
    return json.dumps(v) if isinstance(v, (list, tuple, dict)) else v


def _dec(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in "[{":
        return json.loads(v)
    return v


class Space:
    """A validated search space bound to its base study and scale."""

    def __init__(self, path: str | Path, scale: str | None = None):
        """``scale``: another scale than the file's (``harness search --scale``); the search is
        then its own, named ``<name>-<scale>`` (journal, MLflow experiment, report folder)."""
        p = Path(path)
        self.cfg: SearchCfg = load_yaml(p, SearchCfg, "search space")
        if scale is not None and scale != self.cfg.scale:
            self.cfg = self.cfg.model_copy(update={"scale": scale, "name": f"{self.cfg.name}-{scale}"})
        self.study: StudyCfg = load_study(p.parent / self.cfg.study)
        self.base_params = {**self.study.model.params, **self.study.scales[self.cfg.scale].model}
        self.choices: dict[str, list[Any]] = {}
        # Knobs asked only of some models: a define-by-run space, which ``auto`` gives to TPE.
        self.conditional = any(k.when is not None for k in self.cfg.knobs.values())
        if self.cfg.task is not None and self.cfg.task not in self.study.tasks:
            raise ConfigError(str(UnknownNameError("task", self.cfg.task, list(self.study.tasks), "task")))
        probe = resolve_variant(self.study, self.cfg.scale, VariantCfg(name="probe", task=self.cfg.task))[0]
        self.patch = probe.train.patch
        n_stages = len(self.base_params.get("widths", [0] * 5))
        self.models = [self.study.model.name]  # the models a trial can choose, the study's first
        for name, knob in self.cfg.knobs.items():
            for option in knob.choice or []:
                if isinstance(option, dict) and "model" in option:
                    try:
                        MODELS.get(option["model"], field=f"knobs.{name}: model")
                    except UnknownNameError as e:
                        raise ConfigError(str(e)) from None
                    if option["model"] not in self.models:
                        self.models.append(option["model"])
        for name, knob in self.cfg.knobs.items():
            if knob.when is not None:
                if not any(isinstance(o, dict) and "model" in o for k in self.cfg.knobs.values() if k.when is None
                           for o in k.choice or []):
                    raise ConfigError(f"knobs.{name}: 'when' needs a knob whose options choose a model")
                for m in self._when(knob):
                    if m not in self.models:
                        raise ConfigError(str(UnknownNameError("model a knob chooses", m, self.models,
                                                               f"knobs.{name}.when.model")))
            if name.startswith("groups."):
                stage = int(name.split(".", 1)[1])
                if not 0 <= stage < n_stages:
                    raise ConfigError(f"knobs.{name}: stage {stage} does not exist (0..{n_stages - 1})")
                size = [s // 2**stage for s in self.patch]
                opts = [list(g) for g in itertools.product(*[knob.values] * 3)] if knob.values else knob.choice
                valid = [g for g in opts if all(n % gi == 0 for n, gi in zip(size, g))]
                bad = [g for g in (knob.choice or []) if g not in valid]
                if bad:
                    raise ConfigError(f"knobs.{name}: groups {bad} do not divide stage {stage + 1}'s feature size "
                                      f"{tuple(size)} at patch {self.patch}; allowed: divisors of each axis")
                if not valid:
                    raise ConfigError(f"knobs.{name}: no combination of {knob.values} divides {tuple(size)}")
                self.choices[name] = valid
            elif knob.values is not None:
                raise ConfigError(f"knobs.{name}: 'values' is only for groups.<stage> knobs")
            elif knob.choice is not None:
                self.choices[name] = knob.choice
        for where, metric in [("objectives", o.metric) for o in self.cfg.objectives] + [
                ("constraints", c.metric) for c in self.cfg.constraints]:
            if metric not in ("mean_dice", "gmacs", "params", "latency_ns_per_voxel", "peak_mem_mb",
                              "macs_per_voxel", "mean_hd95") and not metric.startswith(("dice_", "hd95_")):
                raise ConfigError(f"{where}: unknown metric {metric!r}")
        base = self.spec_for(self.cfg_default())  # the base point must build
        from harness.contract import out_channels

        task = DATASETS.get(base.data.dataset)(**base.data.params)  # lazy: channels and regions, no case read
        build_checked_model(base.model, base.train.patch, "the space's base point", base.train.output,
                            task.in_channels, out_channels(len(task.regions), base.train.output))

    def rungs(self) -> list[int]:
        """Epochs (from 1) at which the scheduler ranks trials (the base point's training length)."""
        return self.cfg.scheduler.rungs(self.spec_for(self.cfg_default()).train.epochs)

    def strategies(self) -> list[tuple[str, "Space"]]:
        """(Optuna study name, space) of the main search, then of each ``compare`` strategy: the
        same knobs, objectives and base study; its own sampler, scheduler and trial count."""
        out = [(self.cfg.name, self)]
        for st in self.cfg.compare:
            other = copy.copy(self)
            other.cfg = self.cfg.model_copy(update={
                "name": f"{self.cfg.name}.{st.name}", "compare": [],
                **{k: getattr(st, k) for k in ("sampler", "scheduler", "trials") if getattr(st, k) is not None}})
            out.append((other.cfg.name, other))
        return out

    @staticmethod
    def _when(knob: Knob) -> list[str]:
        m = knob.when["model"]
        return [m] if isinstance(m, str) else list(m)

    def model_of(self, config: dict[str, Any]) -> str:
        """The model a configuration chose (an option with ``model``), else the study's."""
        for name, knob in self.cfg.knobs.items():
            v = _dec(config[name]) if knob.when is None and name in config else None
            if isinstance(v, dict) and "model" in v:
                return v["model"]
        return self.study.model.name

    def _asked(self, model: str) -> list[str]:
        return [n for n, k in self.cfg.knobs.items() if k.when is not None and model in self._when(k)]

    def _options(self, name: str) -> list[Any]:
        """A knob's options as Optuna holds them: every choice, or a range's two ends."""
        if name in self.choices:
            return [_enc(c) for c in self.choices[name]]
        knob = self.cfg.knobs[name]
        return list(knob.uniform or knob.loguniform or knob.integer)

    def _complete(self, config: dict[str, Any]) -> dict[str, Any]:
        """``config``'s unconditional knobs (the first option where unset), then the chosen
        model's own knobs (their first option where unset)."""
        out = {n: config.get(n, self._options(n)[0]) for n, k in self.cfg.knobs.items() if k.when is None}
        return out | {n: config.get(n, self._options(n)[0]) for n in self._asked(self.model_of(out))}

    def cfg_default(self) -> dict[str, Any]:
        """The first option (or the low end) of every knob the default model asks."""
        return self._complete({})

    def option_points(self) -> list[tuple[str, Any, dict[str, Any]]]:
        """(knob, option, configuration) for every option of every knob: the default point with
        that one option set; a model's own knob under the first option that chooses its model."""
        choosing = {}  # model -> a configuration that chooses it
        for name, knob in self.cfg.knobs.items():
            for option in self._options(name) if knob.when is None else []:
                config = self._complete({name: option})
                choosing.setdefault(self.model_of(config), config)
        points = []
        for name, knob in self.cfg.knobs.items():
            for option in self._options(name):
                if knob.when is None:
                    points.append((name, option, self._complete({name: option})))
                else:
                    points += [(name, option, self._complete({**choosing[m], name: option}))
                               for m in self._when(knob) if m in choosing]
        return points

    def check_options(self) -> list[str]:
        """Run every option of every knob once, as its trials would, through the run's pre-flight
        (``harness.study.preflight``: built, an evaluation and a training pass, costed), before
        any training.
        An option that cannot be built is a ConfigError naming the knob, the option and the error;
        with ``on_invalid: skip`` a choice's bad option leaves the space instead, and the returned
        warnings say which."""
        from harness.study import preflight

        seen, bad = {}, []
        for name, option, config in self.option_points():
            try:
                spec = self.spec_for(config)
                key = spec.model_dump_json(include={"model", "data", "train", "cost"})
                if key not in seen:
                    task = DATASETS.get(spec.data.dataset)(**spec.data.params)  # lazy: no case is read
                    seen[key] = preflight(spec, task)  # the run's pre-flight: built, run, costed
            except Exception as e:  # noqa: BLE001  whatever the factory or the forward pass raises
                first = (str(e).strip().splitlines() or [type(e).__name__])[0].removeprefix(": ")
                bad.append((name, option, first[:300]))
        if bad and self.cfg.on_invalid == "refuse":
            name, option, why = bad[0]
            more = f" (and {len(bad) - 1} more option(s))" if len(bad) > 1 else ""
            raise ConfigError(f"knobs.{name}: option {_dec(option)!r} cannot be built: {why}{more}; remove it, "
                              f"or set on_invalid: skip to leave such options out of the space")
        warnings = []
        for name, option, why in bad:
            if name not in self.choices:
                raise ConfigError(f"knobs.{name}: the range's end {option!r} cannot be built: {why}; narrow the range")
            self.choices[name] = [c for c in self.choices[name] if _enc(c) != option]
            if not self.choices[name]:
                raise ConfigError(f"knobs.{name}: no option can be built (the last: {why})")
            warnings.append(f"warning: knobs.{name}: option {_dec(option)!r} left out (on_invalid: skip): {why}")
        return warnings

    def define_by_run(self, trial) -> None:
        """Optuna's define-by-run space: the unconditional knobs, then those of the chosen model."""
        def ask(name: str, knob: Knob):
            if name in self.choices:
                return trial.suggest_categorical(name, [_enc(c) for c in self.choices[name]])
            if knob.uniform:
                return trial.suggest_float(name, *knob.uniform)
            if knob.loguniform:
                return trial.suggest_float(name, *knob.loguniform, log=True)
            return trial.suggest_int(name, *knob.integer)

        config = {n: ask(n, k) for n, k in self.cfg.knobs.items() if k.when is None}
        for name in self._asked(self.model_of(config)):
            ask(name, self.cfg.knobs[name])

    def distributions(self, config: dict[str, Any]) -> dict[str, Any]:
        """Optuna's distribution of each knob in ``config`` (as ``define_by_run`` asks it)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out = {}
        for name in config:
            knob = self.cfg.knobs[name]
            if name in self.choices:
                out[name] = CategoricalDistribution([_enc(c) for c in self.choices[name]])
            elif knob.integer:
                out[name] = IntDistribution(*knob.integer)
            else:
                out[name] = FloatDistribution(*(knob.uniform or knob.loguniform), log=knob.loguniform is not None)
        return out

    def config_of(self, spec: TrialSpec) -> Optional[dict[str, Any]]:
        """The point of the space whose trial is ``spec`` (the base study's trial, say), or None.

        Each knob's candidates are the options whose every setting ``spec`` has; a combination
        counts only if the search would train exactly ``spec`` from it (all but its name)."""
        missing = object()
        train = spec.train.model_dump()

        def has(key: str, v: Any) -> bool:
            if key == "model":
                return spec.model.name == v
            if key.startswith("train."):
                node: Any = train
                for part in key.split(".")[1:]:
                    node = node.get(part, missing) if isinstance(node, dict) else missing
                return node == v
            return spec.model.params.get(key, missing) == v

        def candidates(name: str) -> list[Any]:
            knob = self.cfg.knobs[name]
            if name.startswith("groups."):
                got = (spec.model.params.get("groups") or [None] * 99)[int(name.split(".", 1)[1])]
                return [_enc(g) for g in self.choices[name] if g == got]
            if name in self.choices:
                return [_enc(o) for o in self.choices[name]
                        if (all(has(k, x) for k, x in o.items()) if isinstance(o, dict) else has(name, o))]
            v = spec.model.params.get(name, missing)
            lo, hi = knob.uniform or knob.loguniform or knob.integer
            return [v] if isinstance(v, (int, float)) and lo <= v <= hi else []

        model = spec.model.name
        names = [n for n, k in self.cfg.knobs.items() if k.when is None or model in self._when(k)]
        ident = {"key", "variant", "tags"}
        for combo in itertools.product(*[candidates(n) for n in names]):
            config = dict(zip(names, combo))
            if self.model_of(config) != model:
                continue
            try:
                ours = self.spec_for(config)
            except ConfigError:
                continue
            if ours.model_dump(exclude=ident) == spec.model_dump(exclude=ident):
                return config
        return None

    def params(self, config: dict[str, Any]) -> dict[str, Any]:
        """Sampled knobs -> model parameters (``groups.<i>`` set stage i of the groups list)."""
        return self.overrides(config)[0]

    def overrides(self, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Sampled knobs -> (model parameters, training overrides).

        ``groups.<i>`` sets stage i of the groups list; ``train.<path>`` sets a training field
        (``train.loss.params.lam``); a choice whose options are mappings sets each key of the
        option drawn (``{mapping: true, attention: false}``: parameters that only go together).
        """
        params: dict[str, Any] = {}
        train: dict[str, Any] = {}
        groups = [list(g) for g in self.base_params.get("groups") or [[1, 1, 1]] * len(
            self.base_params.get("widths", [0] * 5))]

        def put(key: str, v: Any) -> None:
            if key.startswith("train."):
                *path, last = key.split(".")[1:]
                node = train
                for part in path:
                    node = node.setdefault(part, {})
                node[last] = v
            else:
                params[key] = v

        for name in self.cfg.knobs:
            if name not in config:  # a conditional knob another model's trial was not asked
                continue
            v = _dec(config[name])
            if name.startswith("groups."):
                groups[int(name.split(".", 1)[1])] = v
                params["groups"] = groups
            elif isinstance(v, dict):
                for k, x in v.items():
                    if k != "model":  # the chosen model: ``model_of``
                        put(k, x)
            else:
                put(name, v)
        return params, _merge(self.cfg.train, train)

    def spec_for(self, config: dict[str, Any], name: str = "default") -> TrialSpec:
        import_plugins(self.study.plugins)  # on a Ray worker too, before the model is checked
        params, train = self.overrides(config)
        model = self.model_of(config)
        # Another family's trial takes only its own option's and knobs' parameters (resolve_variant).
        return resolve_variant(self.study, self.cfg.scale, VariantCfg(
            name=name, model=None if model == self.study.model.name else model, params=params, train=train,
            task=self.cfg.task))[0]


def sampler_name(cfg: SamplerCfg, conditional: bool) -> str:
    """The sampler ``cfg`` names, ``auto`` resolved: TPE where knobs depend on the chosen model."""
    return ("tpe" if conditional else "nsga2") if cfg.name == "auto" else cfg.name


def _sampler(cfg: SamplerCfg, conditional: bool, constrained: bool = False):
    """Optuna's sampler for ``cfg`` (pinned explicitly: Optuna 5 changed the default
    multi-objective sampler). ``conditional``: the space asks knobs only of some models;
    ``constrained``: the space has constraints, which NSGA-II/III and TPE read from each trial."""
    import warnings

    import optuna

    from harness.pareto import read_constraints

    name = sampler_name(cfg, conditional)
    check = {"constraints_func": read_constraints} if constrained else {}
    with warnings.catch_warnings():  # Optuna marks multivariate/group/constant_liar experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name in ("nsga2", "nsga3"):
            genetic = dict(seed=cfg.seed, population_size=cfg.population_size, mutation_prob=cfg.mutation_prob,
                           crossover_prob=cfg.crossover_prob, swapping_prob=cfg.swapping_prob, **check)
            return compat.picklable_sampler("NSGAIISampler" if name == "nsga2" else "NSGAIIISampler")(**genetic)
        if name == "tpe":
            return optuna.samplers.TPESampler(
                seed=cfg.seed, n_startup_trials=cfg.n_startup_trials, multivariate=cfg.multivariate,
                group=cfg.multivariate and (conditional if cfg.group is None else cfg.group),
                constant_liar=cfg.constant_liar, **check)
    return optuna.samplers.RandomSampler(seed=cfg.seed)


def _storage(url: str):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if "://" in url:
        return optuna.storages.RDBStorage(url)
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(url))


def export_study(space: Space, variants: list[dict], path: Path, suffix: str = "pareto") -> Path:
    """A runnable study of the Pareto set: the base study's recipe (data, model, training,
    scales, tasks, plugins, resources; resolved, so it stands alone) with a variant per point,
    named ``<space>_<suffix>``; its grid, claims, expected numbers and layout belong to the base
    study's table and are left out. Validated as it is written; never over an existing file."""
    from harness.config import LayoutCfg

    if path.exists():
        raise ConfigError(f"--export: {path} exists; name a new file")
    if not variants:
        raise ConfigError(f"--export: search {space.cfg.name} has no complete trial to export")
    study = space.study.model_copy(update={
        "name": f"{space.cfg.name}_{suffix}", "title": f"Pareto set of search {space.cfg.name}",
        "description": f"The Pareto points of search {space.cfg.name} over {space.study.name}, as variants of its "
                       f"recipe (harness search --export).",
        "variants": [VariantCfg.model_validate(v) for v in variants], "grid": {}, "combined": [],
        "submission": None, "landscape": False, "expected": {}, "layout": LayoutCfg(), "claims": []})
    text = yaml.safe_dump(study.model_dump(mode="json", by_alias=True, exclude_defaults=True), sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x") as f:  # exclusive: never over a file another command made meanwhile
        f.write(f"# Exported by harness search {space.cfg.name} --export\n" + text)
    try:
        load_study(path)
    except ConfigError:
        path.unlink()
        raise
    return path


def confirm_front(space: Space, out: Path, seeds: int, tracking_uri: str | None, address: str | None,
                  verbose: int) -> Path:
    """Retrain the Pareto points at ``seeds`` seeds and say which hold their place at 95%.

    The front (``pareto_variants.yaml``) becomes a study (``confirm_study.yaml`` in ``out``, the
    base study's recipe) run like any other, resumable, its trials in MLflow. Each point then gets
    its accuracy with the claim engine's 95% interval over seeds and validation cases
    (``harness.stats``), and its place holds when it beats every point that costs no more, by a
    paired interval that excludes 0 (the cheapest point always holds). ``confirm.md`` and
    ``confirm.png`` (the points with their intervals, held ones filled)."""
    from harness.report import load_runs, paired_test
    from harness.stats import components, interval
    from harness.study import run_studies

    objs = space.cfg.objectives
    if len(objs) != 2 or objs[0].mode != "max":
        raise ConfigError("confirm: needs two objectives, accuracy (max) first and a cost second")
    acc, cost = objs[0].metric, objs[1].metric
    variants = yaml.safe_load((out / "pareto_variants.yaml").read_text())["variants"]
    path = out / "confirm_study.yaml"
    path.unlink(missing_ok=True)  # this command's own file (``export_study`` never writes over one)
    export_study(space, variants, path, "confirm")  # its own MLflow experiment, apart from an --export's
    code = run_studies([str(path)], space.cfg.scale, seeds, address, True, tracking_uri, False, verbose)
    if code:
        raise ConfigError(f"confirm: some trials of {path} did not finish; rerun --confirm to resume them")
    runs = load_runs(load_study(path), space.cfg.scale, tracking_uri, seeds=seeds)
    t, cases = runs.trials, runs.per_case
    points = []
    for v in variants:
        name = v["name"]
        d = cases[cases.variant == name].pivot_table(index="case", columns="seed", values=acc).to_numpy()
        mean, lo, hi = (float(x) for x in interval(d, p=components(d)))
        points.append({"point": name.rsplit("_", 1)[-1], "variant": name, "model": v.get("model", space.study.model.name),
                       cost: float(t[t.variant == name][cost].mean()), acc: mean, "low": lo, "high": hi})
    sign = 1.0 if objs[1].mode == "min" else -1.0
    for p in points:
        cheaper = [q for q in points if q is not p and sign * q[cost] <= sign * p[cost]]
        tests = {q["point"]: paired_test(cases, [p["variant"]], [q["variant"]], acc) for q in cheaper}
        weak = [f"{q}: {r['delta']:+.2f} ({r['ci_low']:.2f} to {r['ci_high']:.2f})" for q, r in tests.items()
                if not r["ci_low"] > 0]
        p["holds"] = not weak
        p["why"] = "the cheapest" if not cheaper else ("beats every cheaper point" if not weak else
                                                        "not surely better than " + "; ".join(weak))
    _write_confirm(space, points, acc, cost, seeds, out)
    return out


def _write_confirm(space: Space, points: list[dict], acc: str, cost: str, seeds: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(points).sort_values(cost)
    table = df.assign(**{f"{acc} (95% interval)": [f"{r[acc]:.2f} ({r['low']:.2f} to {r['high']:.2f})"
                                                   for r in df.to_dict("records")]})[
        ["point", "model", cost, f"{acc} (95% interval)", "holds", "why"]]
    (out / "confirm.md").write_text(
        f"# Pareto set of search {space.cfg.name}, confirmed over {seeds} seeds\n\nEach Pareto point retrained at "
        f"{seeds} seeds (`confirm_study.yaml`); {acc} with the claim engine's 95% interval over seeds and "
        f"validation cases. A point holds its place at 95% when it beats every point that costs no more "
        f"by a paired interval above 0.\n\n" + table.to_markdown(index=False) + "\n\n![confirmed](confirm.png)\n")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for held, face in ((True, "C0"), (False, "none")):
        d = df[df.holds == held]
        ax.errorbar(d[cost], d[acc], yerr=[d[acc] - d.low, d.high - d[acc]], fmt="o", mfc=face, mec="C0",
                    ecolor="C0", capsize=3, label="holds at 95%" if held else "does not hold")
    for r in df.to_dict("records"):
        ax.annotate(f"{r['point']} {r['model']}", (r[cost], r[acc]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xlabel(cost)
    ax.set_ylabel(acc)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"search {space.cfg.name}: the front over {seeds} seeds")
    fig.tight_layout()
    fig.savefig(out / "confirm.png", dpi=110)
    plt.close(fig)


def report_only(space: Space, storage, storage_url: str, reports: Path) -> Path:
    """The Pareto outputs (and the strategies' comparison) again from the journal, nothing
    trained: after a crash while they were written, or to redraw them."""
    import optuna

    studies = {}
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    for name, _ in space.strategies():
        if name not in names:
            raise ConfigError(f"--report-only: no search {name!r} in {storage_url}; run it first")
        studies[name] = optuna.load_study(study_name=name, storage=storage)
    out = write_pareto(space, studies[space.cfg.name], reports / space.cfg.name)
    write_strategies(space, studies, out)  # hypervolume against trial-time, for one strategy too
    return out


def run_search(path: str, trials: int | None, address: str | None, resume: bool, tracking_uri: str | None,
               reports: Path = Path("reports"), verbose: int = 1, scale: str | None = None,
               only_report: bool = False, export: str | None = None, confirm: int | None = None) -> int:
    """Launch (or resume) the search and each strategy it is compared with, then write the
    Pareto table, plot and exported variants (and the hypervolume-against-trial-time figure)."""
    import optuna

    if confirm is not None and confirm < 2:
        raise ConfigError(f"--confirm: {confirm} seed; an interval over seeds needs at least 2")
    level = optuna.logging.get_verbosity()
    if verbose < 2:  # Optuna's own lines ("A new study created ...") only with -v 2
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        code = _search(path, trials, address, resume, tracking_uri, reports, verbose, scale, only_report, export)
        space = Space(path, scale)
        seeds = confirm or (space.cfg.confirm.seeds if space.cfg.confirm else None)
        if code == 0 and seeds:
            out = confirm_front(space, reports / space.cfg.name, seeds, tracking_uri, address, verbose)
            print(f"Confirmed front: {out}/confirm.md")
        return code
    finally:
        optuna.logging.set_verbosity(level)


def _search(path: str, trials: int | None, address: str | None, resume: bool, tracking_uri: str | None,
            reports: Path, verbose: int, scale: str | None, only_report: bool, export: str | None) -> int:
    import optuna
    from rich.console import Console

    console = Console()
    space = Space(path, scale)  # all validation before anything is written
    if export and Path(export).exists():
        raise ConfigError(f"--export: {export} exists; name a new file")
    if only_report:
        from harness.tracking import default_tracking_uri

        uri = tracking_uri or default_tracking_uri()
        db_dir = Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else Path(".")
        url = space.cfg.storage or str(db_dir / "optuna" / f"{space.cfg.name}.journal")
        if "://" not in url and not Path(url).exists():
            raise ConfigError(f"--report-only: no journal at {url}; run the search first")
        out = report_only(space, _storage(url), url, reports)
        return _closing(console, space, out, export)
    for warning in space.check_options():  # every option built once, before Ray starts
        print(warning, file=sys.stderr)
    cfg = space.cfg
    from harness.tracking import Tracker, check_store, hold_lock
    from harness.tune import check_capacity

    check_store(tracking_uri)  # a damaged mlflow.db is said in one line, before Ray starts
    check_capacity(address, space.study.resources.cpu, space.study.resources.gpu, verbose)  # before mlflow.db
    lock = hold_lock(tracking_uri, f"search-{cfg.name}", f"search {cfg.name}")  # noqa: F841  one runner a journal
    tracker = Tracker(tracking_uri, verbose)
    db_dir = Path(tracker.uri[len("sqlite:///"):]).parent if tracker.uri.startswith("sqlite:///") else Path(".")
    storage_url = cfg.storage or str(db_dir / "optuna" / f"{cfg.name}.journal")
    storage = _storage(storage_url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if cfg.name in names and not resume:
        raise ConfigError(f"search {cfg.name!r} already exists in {storage_url}; pass --resume to continue it, "
                          f"or remove the storage to start afresh")
    exp_id = tracker.experiment(f"search-{cfg.name}")
    studies = {}
    for name, strategy in space.strategies():  # the main search first: --trials is its count
        n_total = (trials or cfg.trials) if strategy is space else strategy.cfg.trials
        study = _run_strategy(strategy, storage, storage_url, name in names, n_total, tracker, exp_id, address,
                              db_dir, path, console, verbose)
        if study is None:
            return 1
        studies[name] = study
    out = write_pareto(space, studies[cfg.name], reports / cfg.name)
    write_strategies(space, studies, out)  # hypervolume against trial-time, for one strategy too
    return _closing(console, space, out, export)


def _closing(console, space: Space, out: Path, export: str | None) -> int:
    console.print(f"Pareto set: {out}/pareto.md; variants to train: {out}/pareto_variants.yaml", soft_wrap=True)
    if export:
        variants = yaml.safe_load((out / "pareto_variants.yaml").read_text())["variants"]
        console.print(f"Exported study: {export_study(space, variants, Path(export))} "
                      f"(harness run {export} --scale {space.cfg.scale})", soft_wrap=True)
    return 0


def _run_strategy(space: Space, storage, storage_url: str, exists: bool, n_total: int, tracker, exp_id: str,
                  address: str | None, db_dir: Path, path: str, console, verbose: int):
    """Create or resume one Optuna study (the main search or a compared strategy) and run its
    missing trials on Ray Tune, each an MLflow child of the strategy's parent run. Returns the
    Optuna study, or None when Ray Tune itself stopped."""
    import optuna

    from harness.tune import run_search_trials

    cfg = space.cfg
    directions = ["maximize" if o.mode == "max" else "minimize" for o in cfg.objectives]
    study = optuna.create_study(study_name=cfg.name, storage=storage, directions=directions,
                                sampler=_sampler(cfg.sampler, space.conditional, bool(cfg.constraints)),
                                load_if_exists=exists)  # a fresh search is created, not "loaded"
    # A trial still RUNNING was left by a runner that died: the run lock admits one runner per
    # search. (Optuna's heartbeat + fail_stale_trials cannot tell: JournalStorage keeps no
    # heartbeat in Optuna 5.1, and OptunaSearch's ask/tell never records one.)
    for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    chash = config_hash(cfg.model_dump())
    parent = tracker.find_parent(exp_id, cfg.scale, chash)
    rebuilt = rebuild_from_mlflow(space, study, tracker, exp_id, parent.info.run_id) if parent else 0
    if rebuilt:
        console.print(f"search {cfg.name}: {rebuilt} trial(s) MLflow holds were missing from {storage_url}; added "
                      f"back from their runs (nothing is trained again)", soft_wrap=True)
    warm = warm_start(space, study, tracker.uri) if cfg.warm_start else 0
    settled = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL) + (
        (optuna.trial.TrialState.PRUNED,) if space.rungs() else ())
    # Trials run count: complete, failed in training (its compute was spent; it is never proposed
    # again) and stopped at a rung. A repeat the sampler drew is PRUNED without a time and a trial
    # left by a dead runner FAIL without one: neither ran. A warm-started one was not run either.
    done = len([t for t in study.get_trials(deepcopy=False, states=settled) if "warm_start_run" not in t.user_attrs
                and (t.state == optuna.trial.TrialState.COMPLETE or "trial_time_s" in t.user_attrs)])
    todo = max(0, n_total - done)
    console.print(f"search {cfg.name}: {done} trials run in {storage_url}, {todo} to run"
                  + (f"; {warm} finished runs of {space.study.name} added as complete trials" if warm else "") + ".",
                  soft_wrap=True)
    if parent is not None:
        parent_id = parent.info.run_id
        tracker.reopen_parent(exp_id, parent_id)  # the Optuna journal, not MLflow, says what is done
    else:
        parent_id = tracker.start_parent(exp_id, f"search-{cfg.name}", cfg.scale, chash,
                                         {"search_file": str(path), "base_study": space.study.name})
    if todo:
        from harness.progress import Board

        with Board(f"search {cfg.name}", verbose, expected=todo) as board:
            writer = run_search_trials(space, study, storage, todo, tracker, exp_id, parent_id, address,
                                       db_dir / "ray_results", board, verbose)
        if writer.crashed:  # Ray Tune raised: the search did not run, whatever the journal holds
            tracker.client.set_terminated(parent_id, "FAILED")
            console.print(f"search {cfg.name}: Ray Tune stopped with {writer.error}; {len(writer.finished)} of "
                          f"{todo} trials finished. Fix the cause and pass --resume.", soft_wrap=True)
            return None
    tracker.client.set_terminated(parent_id, "FINISHED")
    # A journal lost or cut while the search ran: what MLflow recorded is added back before the outputs.
    rebuilt = rebuild_from_mlflow(space, study, tracker, exp_id, parent_id)
    if rebuilt:
        console.print(f"search {cfg.name}: {rebuilt} trial(s) were missing from {storage_url} after the run; "
                      f"added back from MLflow", soft_wrap=True)
    return optuna.load_study(study_name=cfg.name, storage=storage)


def rebuild_from_mlflow(space: Space, study, tracker, exp_id: str, parent_id: str) -> int:
    """Add to ``study`` the trials of this search that MLflow recorded and the Optuna journal
    lacks (a journal lost, cut short, or removed): finished ones as COMPLETE with their
    objectives, ones that raised in training as FAIL, ones stopped at a rung as PRUNED, each
    with its trial-time (the run's span) and ``rebuilt_from_run``. MLflow is the record of what
    was trained: no configuration it holds is trained again. Returns how many were added."""
    import optuna

    state = optuna.trial.TrialState
    held = {json.dumps(t.params, sort_keys=True) for t in study.get_trials(
        deepcopy=False, states=(state.COMPLETE, state.FAIL, state.PRUNED))
        if t.state == state.COMPLETE or "trial_time_s" in t.user_attrs}
    objs = [o.metric for o in space.cfg.objectives]
    added = 0
    for run in tracker.children(exp_id, parent_id):
        raw, tags, m = run.data.tags.get("tag.optuna_params"), run.data.tags, run.data.metrics
        if raw is None or raw in held:
            continue
        if run.info.status == "FINISHED" and all(o in m for o in objs):
            kind, values = state.COMPLETE, [m[o] for o in objs]
        elif run.info.status == "FAILED" and not tags.get("error", "").startswith("Ray Tune stopped"):
            kind, values = state.FAIL, None
        elif run.info.status == "KILLED" and tags.get("stopped_early") == "true":
            kind, values = state.PRUNED, None
        else:
            continue  # still running, or ended by a dead runner: not trained to an outcome
        params = json.loads(raw)
        span = ((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000
        bounds = {"constraints": constraint_values(space.cfg.bounds(), m)} if space.cfg.constraints else {}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=space.distributions(params), values=values, state=kind,
            user_attrs={"trial_time_s": span, "rebuilt_from_run": run.info.run_id, **bounds}))
        held.add(raw)
        added += 1
    return added


def _by_model(df, front) -> str:
    """Trials and Pareto points of each model (a search across families), as a Markdown table."""
    counts = df.groupby("model").size().rename("trials").to_frame().join(
        front.groupby("model").size().rename("Pareto points")).fillna(0).astype(int)
    return "Trials and Pareto points by model:\n\n" + counts.reset_index().to_markdown(index=False) + "\n\n"


def write_pareto(space: Space, study, out: Path) -> Path:
    """All complete trials (CSV, from Optuna's ``trials_dataframe``), the Pareto set (Markdown),
    a plot, and the Pareto points as variants. The plot is seaborn's, not Optuna's
    ``plot_pareto_front``: a search across families colours each model's trials and labels each
    Pareto point with its trial, which Optuna's plot cannot."""
    import optuna
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    objs = [o.metric for o in space.cfg.objectives]
    # The trials themselves, not Optuna's data frame: a knob only some models are asked (or no
    # trial drew) is a column of NaNs there, and ints beside NaN become floats.
    complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    asked = {t.number: t.params for t in complete}
    rows = [{"trial": t.number, "model": space.model_of(t.params), **dict(zip(objs, t.values)),
             "feasible": feasible(t), **{k: _dec(t.params[k]) for k in space.cfg.knobs if k in t.params}}
            for t in complete]
    # From the first trial's start to the last one's end (a resumed search counts its pause too).
    minutes = ((max(t.datetime_complete for t in complete) - min(t.datetime_start for t in complete)).total_seconds()
               / 60 if rows else 0.0)
    wall = f" Wall time {minutes:.1f} min." if rows else ""
    df = pd.DataFrame(rows)
    df.to_csv(out / "trials.csv", index=False)
    # The front of the trials that meet every constraint (all trials, without constraints).
    ok = [t for t in complete if feasible(t)]
    best = {ok[i].number for i in non_dominated([t.values for t in ok], [o.mode for o in space.cfg.objectives])}
    front = df[df.trial.isin(best)].sort_values(objs[-1]) if rows else df
    if rows:  # a sampler may propose a configuration again: one row per configuration, its first trial
        knobs = list(space.cfg.knobs)
        front = front.loc[~front[[k for k in knobs if k in front]].astype(str).duplicated()]
        for col in objs:  # counts in full, not 1.09638e+06
            if (front[col] % 1 == 0).all():
                front[col] = front[col].astype(int)
    (out / "pareto.md").write_text(
        f"# Pareto set of search {space.cfg.name}\n\nBase study `{space.study.name}` at scale "
        f"`{space.cfg.scale}`; objectives: "
        + ", ".join(f"{o.mode} {o.metric}" for o in space.cfg.objectives)
        + f"; sampler {sampler_name(space.cfg.sampler, space.conditional)} (seed {space.cfg.sampler.seed}); "
          f"{len(df)} complete trials.{wall}"
        + (f" Constraints: {', '.join(_bound_text(c) for c in space.cfg.constraints)}; {len(ok)} of {len(df)} "
           f"trials meet them, and only those enter the front." if space.cfg.constraints else "") + "\n\n"
        + (_by_model(df, front) if len(space.models) > 1 and rows else "")
        + (front.fillna("—").astype(str).to_markdown(index=False) if rows else "No complete trial yet.")
        + "\n")
    variants = []
    for r in front.to_dict("records") if rows else []:
        config = asked[int(r["trial"])]  # as drawn: ints stay ints, lists stay lists
        params, train = space.overrides(config)
        model = space.model_of(config)
        variants.append({"name": f"search_{space.cfg.name}_t{int(r['trial']):03d}",
                         **({"model": model} if model != space.study.model.name else {}),
                         **({"task": space.cfg.task} if space.cfg.task else {}), "params": params,
                         **({"train": train} if train else {}),
                         "tags": {"source": f"search {space.cfg.name} trial {int(r['trial'])}"}})
    (out / "pareto_variants.yaml").write_text(
        f"# Pareto points of search {space.cfg.name}: paste under `variants:` of {space.cfg.study}\n"
        "# (or a copy of it) and train at full scale with `harness run STUDY --scale paper`.\n"
        + yaml.safe_dump({"variants": variants}, sort_keys=False, default_flow_style=None))
    if rows and len(objs) >= 2:
        pareto_plot(space, df, front, objs[1], objs[0], out / "pareto.png")
    return out


def _bound_text(c: Constraint) -> str:
    return " and ".join(t for t in (f"{c.metric} >= {c.min:g}" if c.min is not None else "",
                                    f"{c.metric} <= {c.max:g}" if c.max is not None else "") if t)


def pareto_plot(space: Space, df, front, x: str, y: str, path: Path) -> None:
    """Every complete trial coloured by its model, the front as a line and rings over those
    colours (a front point keeps its model's colour), each front point labelled ``tN model``
    where labels do not collide, cost on a log axis when it spans over 10x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    from harness.report.plots import place_labels

    fig, ax = plt.subplots(figsize=(7, 5))
    out = df[~df.feasible]
    if len(out):  # trials that miss a constraint (a Dice floor): grey, off the front
        ax.scatter(out[x], out[y], s=22, color="0.75", label="misses a constraint", zorder=2)
    for i, model in enumerate(dict.fromkeys(df.model)):
        d = df[(df.model == model) & df.feasible]
        ax.scatter(d[x], d[y], s=26, color=f"C{i}", alpha=0.75, label=model, zorder=3)
    f2 = front.sort_values(x)
    ax.step(f2[x], f2[y], where="post", color="0.25", lw=1, ls="--", zorder=2)
    ax.scatter(f2[x], f2[y], s=110, facecolors="none", edgecolors="0.15", lw=1.1, zorder=4, label="Pareto front")
    positive = df[x][df[x] > 0]
    if len(positive) and positive.max() > 10 * positive.min():
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    ax.set_title(f"search {space.cfg.name}: {len(df)} trials, {len(f2)} on the front")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    fig.tight_layout()
    place_labels(ax, [(r[x], r[y], f"t{int(r['trial'])} {r['model']}") for r in f2.to_dict("records")],
                list(zip(df[x], df[y])))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def warm_start(space: Space, study, tracking_uri: str | None) -> int:
    """Add the base study's finished runs (at the search's scale, its configuration as it stands)
    that are points of the space to ``study`` as complete trials, once each (tag
    ``warm_start_run``); a genetic sampler's first generation holds them. Returns how many
    were added."""
    import optuna

    from harness.config import resolve
    from harness.report.runs import load_runs

    runs = load_runs(space.study, space.cfg.scale, tracking_uri, with_cases=False).trials
    if runs.empty:
        return 0
    held = {t.user_attrs.get("warm_start_run") for t in study.get_trials(deepcopy=False)}
    specs = {s.key: s for s in resolve(space.study, space.cfg.scale, 1 + int(runs.seed.max()), check=False)}
    objs = [o.metric for o in space.cfg.objectives]
    generation = compat.generation_key(study.sampler)  # a genetic sampler's first generation holds them
    added = 0
    for row in runs.to_dict("records"):
        spec = specs.get(row["key"])
        if row["run_id"] in held or spec is None or any(row.get(m) != row.get(m) or m not in row for m in objs):
            continue
        config = space.config_of(spec)
        if config is None:
            continue
        study.add_trial(optuna.trial.create_trial(
            params=config, distributions=space.distributions(config), values=[float(row[m]) for m in objs],
            user_attrs={"warm_start_run": row["run_id"], "trial_time_s": 0.0, "source": f"{space.study.name} {row['key']}"},
            system_attrs={generation: 0} if generation else {}))
        added += 1
    return added


def _trial_time(t) -> float:
    """A trial's own time (Ray's, from its start); a trial run before it was recorded: its
    Optuna start to end (which also counts a wait for a free worker)."""
    if "trial_time_s" in t.user_attrs:
        return float(t.user_attrs["trial_time_s"])
    return (t.datetime_complete - t.datetime_start).total_seconds()


def hypervolume_history(space: Space, studies: dict[str, Any]) -> tuple[Any, list[float]]:
    """Per strategy, after each settled trial (in order of completion): the trial-time spent so
    far (every trial run, stopped ones included) and the hypervolume of its complete trials.
    Returns the history and the reference point (``reference_point``, else each objective's
    worst value over every strategy's complete trials)."""
    import optuna
    import pandas as pd

    from harness.pareto import hypervolume

    objs = [o.metric for o in space.cfg.objectives]
    modes = [o.mode for o in space.cfg.objectives]
    state = optuna.trial.TrialState
    settled = {name: sorted((t for t in st.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED, state.FAIL))
                             if t.state == state.COMPLETE or "trial_time_s" in t.user_attrs),
                            key=lambda t: t.datetime_complete) for name, st in studies.items()}
    logs = [o.scale == "log" for o in space.cfg.objectives]

    def scaled(values):  # log10 where asked; a non-positive value sits at the floor 1e-12
        return [math.log10(max(v, 1e-12)) if log else v for v, log in zip(values, logs)]

    complete = [scaled(t.values) for ts in settled.values() for t in ts if t.state == state.COMPLETE and feasible(t)]
    if space.cfg.reference_point is not None:
        ref = scaled([space.cfg.reference_point[m] for m in objs])
    else:
        ref = [(min if m == "max" else max)(v[i] for v in complete) for i, m in enumerate(modes)] if complete else []
    rows = []
    for name, ts in settled.items():
        spent, values = 0.0, []
        for t in ts:
            spent += _trial_time(t)
            if t.state == state.COMPLETE and feasible(t):
                values.append(scaled(t.values))
            rows.append({"strategy": name, "trial": t.number, "state": t.state.name.lower(),
                         "epochs": t.user_attrs.get("epochs"), "trial_time_s": _trial_time(t),
                         "trial_time_min": spent / 60, "model": space.model_of(t.params),
                         **dict(zip(objs, t.values or [None] * len(objs))),
                         "hypervolume": hypervolume(values, modes, ref) if ref else 0.0})
    return pd.DataFrame(rows), ref


def write_strategies(space: Space, studies: dict[str, Any], out: Path) -> None:
    """The comparison of search strategies on one space: hypervolume reached against trial-time
    spent (``hypervolume.png``, ``strategies.csv``), and a section of ``pareto.md`` with, for
    each strategy, the trial-time it took to reach the main search's final hypervolume."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist, ref = hypervolume_history(space, studies)
    hist.to_csv(out / "strategies.csv", index=False)
    main = space.cfg.name
    target = float(hist[hist.strategy == main].hypervolume.max()) if (hist.strategy == main).any() else 0.0
    main_time = float(hist[hist.strategy == main].trial_time_min.max()) if (hist.strategy == main).any() else 0.0
    lines = []
    for name, strategy in space.strategies():
        h = hist[hist.strategy == name]
        reached = h[h.hypervolume >= target - 1e-9 * max(1.0, abs(target))] if target > 0 else h.iloc[:0]
        at = float(reached.trial_time_min.iloc[0]) if len(reached) else None
        sch = strategy.cfg.scheduler
        lines.append({
            "strategy": name,
            "sampler": f"{sampler_name(strategy.cfg.sampler, strategy.conditional)} (seed {strategy.cfg.sampler.seed})",
            "early stopping": (f"ASHA, eta {sch.reduction_factor}, rungs at epochs {strategy.rungs()}"
                               + (f" on {sch.rung_cases} cases" if sch.rung_cases else "")) if sch.name == "asha" else "none",
            "trials (complete / stopped / failed)": " / ".join(str(int((h.state == s).sum())) for s in ("complete", "pruned", "fail")),
            "trial-time (min)": round(float(h.trial_time_min.max()) if len(h) else 0.0, 1),
            "final hypervolume": round(float(h.hypervolume.max()) if len(h) else 0.0, 3),
            "trial-time to the main search's final hypervolume (min)": "not reached" if at is None else round(at, 1),
            "share of the main search's trial-time": "—" if at is None or not main_time else f"{at / main_time:.2f}"})
    import pandas as pd

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name in hist.strategy.unique():
        h = hist[hist.strategy == name]
        ax.step([0.0, *h.trial_time_min], [0.0, *h.hypervolume], where="post", label=name)
    if target > 0:
        ax.axhline(target, color="0.5", ls="--", lw=0.8, label=f"{main}'s final")
    ax.set_xlabel("trial-time spent (min, all trials summed)")
    ax.set_ylabel("hypervolume of complete trials")
    ax.set_title(f"search {main}: strategies")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "hypervolume.png", dpi=110)
    plt.close(fig)
    objs = ", ".join(f"{'log10 ' if o.scale == 'log' else ''}{o.metric} {ref[i]:g}"
                     for i, o in enumerate(space.cfg.objectives)) if ref else "none"
    with open(out / "pareto.md", "a") as f:
        f.write("\n## Search strategies: hypervolume against trial-time\n\n"
                f"The same space, objectives, base study and training seeds; trial-time is the trials' own "
                f"time summed (what the search paid, whatever ran in parallel); hypervolume of each "
                f"strategy's complete (full-budget) trials, reference point {objs}. Per trial: "
                f"`strategies.csv`.\n\n" + pd.DataFrame(lines).to_markdown(index=False)
                + "\n\n![hypervolume against trial-time](hypervolume.png)\n")
