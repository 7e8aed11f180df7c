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

import functools
import itertools
import json
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import Field, model_validator

from harness.config import (ConfigError, StudyCfg, TrialSpec, VariantCfg, _merge, _Strict, config_hash,
                            import_plugins, load_study, load_yaml, resolve_variant)
from harness.registry import MODELS, UnknownNameError


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


class SamplerCfg(_Strict):
    name: Literal["nsga2", "tpe", "random"] = "nsga2"
    seed: int = 0
    population_size: int = Field(8, ge=2)  # NSGA-II generation size


class SearchCfg(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    study: str  # base study, relative to this file
    scale: Literal["smoke", "quick", "paper"] = "smoke"
    task: Optional[str] = None  # one of the base study's ``tasks`` (its data at the scale)
    knobs: dict[str, Knob]
    train: dict[str, Any] = Field(default_factory=dict)  # training overrides for every trial (e.g. targets)
    objectives: list[Objective] = Field(min_length=1)
    sampler: SamplerCfg = Field(default_factory=SamplerCfg)
    scheduler: Literal["none", "asha"] = "none"  # ASHA only for a single objective
    storage: Optional[str] = None  # journal file or RDB URL; default: optuna/<name>.journal beside mlflow.db
    trials: int = Field(12, ge=1)

    @model_validator(mode="after")
    def _asha_single(self):
        if self.scheduler == "asha" and len(self.objectives) > 1:
            raise ValueError("scheduler: asha needs a single objective")
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

    def __init__(self, path: str | Path):
        p = Path(path)
        self.cfg: SearchCfg = load_yaml(p, SearchCfg, "search space")
        self.study: StudyCfg = load_study(p.parent / self.cfg.study)
        self.base_params = {**self.study.model.params, **self.study.scales[self.cfg.scale].model}
        self.choices: dict[str, list[Any]] = {}
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
        for o in self.cfg.objectives:
            if o.metric not in ("mean_dice", "gmacs", "params", "latency_ns_per_voxel", "peak_mem_mb",
                                "macs_per_voxel", "mean_hd95") and not o.metric.startswith(("dice_", "hd95_")):
                raise ConfigError(f"objectives: unknown metric {o.metric!r}")
        self.spec_for(self.cfg_default())  # the base point must build

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

    def cfg_default(self) -> dict[str, Any]:
        """The first option (or the low end) of every knob the default model asks."""
        def first(name: str, knob: Knob):
            if name in self.choices:
                return _enc(self.choices[name][0])
            lo, hi = knob.uniform or knob.loguniform or knob.integer
            return lo

        out = {n: first(n, k) for n, k in self.cfg.knobs.items() if k.when is None}
        return out | {n: first(n, self.cfg.knobs[n]) for n in self._asked(self.model_of(out))}

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


@functools.cache
def _nsga2_class():
    """NSGA-II that pickles: Optuna 5.1's genetic samplers (``BaseGASampler``) hold a
    ``threading.Lock`` and no ``__getstate__``, and Ray Tune pickles the search algorithm with
    its sampler ("cannot pickle '_thread.lock' object"). Locks leave the state and come back
    fresh on unpickling, as Optuna's own storages do. Built on first use (Optuna is imported
    lazily); the module's ``__getattr__`` builds it for pickle's lookup by name."""
    import threading

    import optuna

    class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
        def __getstate__(self):
            locks = [k for k, v in self.__dict__.items() if isinstance(v, type(threading.Lock()))]
            return {**{k: v for k, v in self.__dict__.items() if k not in locks}, "_harness_locks": locks}

        def __setstate__(self, state):
            state = dict(state)
            locks = state.pop("_harness_locks", [])
            self.__dict__.update(state)
            for k in locks:
                setattr(self, k, threading.Lock())

    PicklableNSGAIISampler.__module__, PicklableNSGAIISampler.__qualname__ = __name__, "PicklableNSGAIISampler"
    return PicklableNSGAIISampler


def __getattr__(name: str):
    if name == "PicklableNSGAIISampler":
        return _nsga2_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _sampler(cfg: SamplerCfg, multi: bool):
    import optuna

    # Pinned explicitly: Optuna 5 changed the default multi-objective sampler.
    if cfg.name == "nsga2":
        return _nsga2_class()(seed=cfg.seed, population_size=cfg.population_size)
    if cfg.name == "tpe":
        return optuna.samplers.TPESampler(seed=cfg.seed, multivariate=True)
    return optuna.samplers.RandomSampler(seed=cfg.seed)


def _storage(url: str):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if "://" in url:
        return optuna.storages.RDBStorage(url)
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(url))


def run_search(path: str, trials: int | None, address: str | None, resume: bool, tracking_uri: str | None,
               reports: Path = Path("reports"), verbose: int = 1) -> int:
    """Launch (or resume) the search, then write the Pareto table, plot and exported variants."""
    import optuna
    from rich.console import Console

    console = Console()
    space = Space(path)  # all validation before anything is written
    cfg = space.cfg
    n_total = trials or cfg.trials
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
    directions = ["maximize" if o.mode == "max" else "minimize" for o in cfg.objectives]
    study = optuna.create_study(study_name=cfg.name, storage=storage, directions=directions,
                                sampler=_sampler(cfg.sampler, len(directions) > 1),
                                load_if_exists=cfg.name in names)  # a fresh search is created, not "loaded"
    for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)  # its process died: never completed
    done = len(study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]))
    todo = max(0, n_total - done)
    console.print(f"search {cfg.name}: {done} trials complete in {storage_url}, {todo} to run.", soft_wrap=True)

    exp_id = tracker.experiment(f"search-{cfg.name}")
    chash = config_hash(cfg.model_dump())
    parent = tracker.find_parent(exp_id, cfg.scale, chash)
    if parent is not None:
        parent_id = parent.info.run_id
        tracker.reopen_parent(exp_id, parent_id)  # the Optuna journal, not MLflow, says what is done
    else:
        parent_id = tracker.start_parent(exp_id, f"search-{cfg.name}", cfg.scale, chash,
                                         {"search_file": str(path), "base_study": space.study.name})
    if todo:
        from harness.tune import run_search_trials

        writer = run_search_trials(space, study, storage, todo, tracker, exp_id, parent_id, address,
                                   db_dir / "ray_results", verbose)
        if writer.crashed:  # Ray Tune raised: the search did not run, whatever the journal holds
            tracker.client.set_terminated(parent_id, "FAILED")
            console.print(f"search {cfg.name}: Ray Tune stopped with {writer.error}; {len(writer.finished)} of "
                          f"{todo} trials finished. Fix the cause and pass --resume.", soft_wrap=True)
            return 1
    tracker.client.set_terminated(parent_id, "FINISHED")
    out = write_pareto(space, optuna.load_study(study_name=cfg.name, storage=storage), reports / cfg.name)
    console.print(f"Pareto set: {out}/pareto.md; variants to train: {out}/pareto_variants.yaml", soft_wrap=True)
    return 0


def _by_model(df, front) -> str:
    """Trials and Pareto points of each model (a search across families), as a Markdown table."""
    counts = df.groupby("model").size().rename("trials").to_frame().join(
        front.groupby("model").size().rename("Pareto points")).fillna(0).astype(int)
    return "Trials and Pareto points by model:\n\n" + counts.reset_index().to_markdown(index=False) + "\n\n"


def write_pareto(space: Space, study, out: Path) -> Path:
    """All complete trials (CSV), the Pareto set (Markdown), a plot, and the Pareto points as variants."""
    import optuna
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    objs = [o.metric for o in space.cfg.objectives]
    rows = []
    complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    for t in complete:
        rows.append({"trial": t.number, "model": space.model_of(t.params), **dict(zip(objs, t.values)),
                     **{k: _dec(v) for k, v in t.params.items()}})
    # From the first trial's start to the last one's end (a resumed search counts its pause too).
    minutes = ((max(t.datetime_complete for t in complete) - min(t.datetime_start for t in complete))
               .total_seconds() / 60 if complete else 0.0)
    wall = f" Wall time {minutes:.1f} min." if complete else ""
    df = pd.DataFrame(rows)
    df.to_csv(out / "trials.csv", index=False)
    best = {t.number for t in study.best_trials} if rows else set()
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
        + f"; sampler {space.cfg.sampler.name} (seed {space.cfg.sampler.seed}); {len(df)} complete trials.{wall}\n\n"
        + (_by_model(df, front) if len(space.models) > 1 and rows else "")
        + (front.fillna("—").astype(str).to_markdown(index=False) if rows else "No complete trial yet.")
        + "\n")
    variants = []
    for r in front.to_dict("records") if rows else []:
        config = {k: _enc(r[k]) for k in space.cfg.knobs if k in r and r[k] == r[k]}  # NaN: not asked
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
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import seaborn as sns

        x, y = objs[1], objs[0]
        fig, ax = plt.subplots(figsize=(6, 4.5))
        if len(space.models) > 1:  # a search across families: each family's trials in its colour
            sns.scatterplot(data=df, x=x, y=y, ax=ax, hue="model", alpha=0.6)
        else:
            sns.scatterplot(data=df, x=x, y=y, ax=ax, color="0.6", label="trials")
        f2 = front.sort_values(x)
        ax.step(f2[x], f2[y], where="post", color="C3", label="Pareto front")
        sns.scatterplot(data=f2, x=x, y=y, ax=ax, color="C3")
        for r in f2.to_dict("records"):
            ax.annotate(f"t{int(r['trial'])}", (r[x], r[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_title(f"search {space.cfg.name}")
        fig.tight_layout()
        fig.savefig(out / "pareto.png", dpi=110)
        plt.close(fig)
    return out
