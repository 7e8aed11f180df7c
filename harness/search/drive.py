"""``harness search``: run (or resume) a search and the strategies it is compared with on Ray
Tune, confirm its front, or redo its outputs from the journal."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from harness.config import ConfigError, config_hash, load_study
from harness.search.outputs import (
    export_study,
    write_confirm,
    write_pareto,
    write_seeds,
    write_strategies,
)
from harness.search.samplers import (
    make_sampler,
    open_storage,
    rebuild_from_mlflow,
    warm_start,
)
from harness.search.space import Space


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
    write_confirm(space, points, acc, cost, seeds, out)
    return out


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
    if space.family != space.cfg.name:  # one repetition of a comparison over seeds
        write_seeds(space, reports)
    return out


def run_search(path: str, trials: int | None, address: str | None, resume: bool, tracking_uri: str | None,
               reports: Path = Path("reports"), verbose: int = 1, scale: str | None = None,
               only_report: bool = False, export: str | None = None, confirm: int | None = None,
               seed: int | None = None) -> int:
    """Launch (or resume) the search and each strategy it is compared with, then write the
    Pareto table, plot and exported variants (and the hypervolume-against-trial-time figure)."""
    import optuna

    if confirm is not None and confirm < 2:
        raise ConfigError(f"--confirm: {confirm} seed; an interval over seeds needs at least 2")
    level = optuna.logging.get_verbosity()
    if verbose < 2:  # Optuna's own lines ("A new study created ...") only with -v 2
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        code = _search(path, trials, address, resume, tracking_uri, reports, verbose, scale, only_report, export,
                       seed)
        space = Space(path, scale, seed)
        seeds = confirm or (space.cfg.confirm.seeds if space.cfg.confirm else None)
        if code == 0 and seeds:
            out = confirm_front(space, reports / space.cfg.name, seeds, tracking_uri, address, verbose)
            print(f"Confirmed front: {out}/confirm.md")
        return code
    finally:
        optuna.logging.set_verbosity(level)


def _search(path: str, trials: int | None, address: str | None, resume: bool, tracking_uri: str | None,
            reports: Path, verbose: int, scale: str | None, only_report: bool, export: str | None,
            seed: int | None) -> int:
    import optuna
    from rich.console import Console

    console = Console()
    space = Space(path, scale, seed)  # all validation before anything is written
    if export and Path(export).exists():
        raise ConfigError(f"--export: {export} exists; name a new file")
    if only_report:
        from harness.tracking import default_tracking_uri

        uri = tracking_uri or default_tracking_uri()
        db_dir = Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else Path(".")
        url = space.cfg.storage or str(db_dir / "optuna" / f"{space.cfg.name}.journal")
        if "://" not in url and not Path(url).exists():
            raise ConfigError(f"--report-only: no journal at {url}; run the search first")
        out = report_only(space, open_storage(url), url, reports)
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
    storage = open_storage(storage_url)
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
    if seed is not None:
        console.print(f"Strategies over seeds: {write_seeds(space, reports)}/seeds.md", soft_wrap=True)
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
                                sampler=make_sampler(cfg.sampler, space.conditional, bool(cfg.constraints)),
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
            tracker.end(parent_id, "FAILED")
            console.print(f"search {cfg.name}: Ray Tune stopped with {writer.error}; {len(writer.finished)} of "
                          f"{todo} trials finished. Fix the cause and pass --resume.", soft_wrap=True)
            return None
    tracker.end(parent_id, "FINISHED")
    # A journal lost or cut while the search ran: what MLflow recorded is added back before the outputs.
    rebuilt = rebuild_from_mlflow(space, study, tracker, exp_id, parent_id)
    if rebuilt:
        console.print(f"search {cfg.name}: {rebuilt} trial(s) were missing from {storage_url} after the run; "
                      f"added back from MLflow", soft_wrap=True)
    return optuna.load_study(study_name=cfg.name, storage=storage)
