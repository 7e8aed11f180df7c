"""What the Optuna study holds and how it proposes: samplers, storage, warm start, and the
trials MLflow recorded added back."""

from __future__ import annotations

import json
from pathlib import Path

from harness import compat
from harness.pareto import constraint_values
from harness.search.schema import SamplerCfg
from harness.search.space import Space


def sampler_name(cfg: SamplerCfg, conditional: bool) -> str:
    """The sampler ``cfg`` names, ``auto`` resolved: TPE where knobs depend on the chosen model."""
    return ("tpe" if conditional else "nsga2") if cfg.name == "auto" else cfg.name


def make_sampler(cfg: SamplerCfg, conditional: bool, constrained: bool = False):
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


def open_storage(url: str):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if "://" in url:
        return optuna.storages.RDBStorage(url)
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(url))


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
