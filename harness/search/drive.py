"""``harness search``: run (or resume) a search and the strategies it is compared with on Ray
Tune, confirm its front, or redo its outputs from the journal."""

from __future__ import annotations

import sys
from dataclasses import dataclass
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
from harness.session import Session, SessionOptions


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
    from harness.study import RunOptions, run_studies

    objs = space.cfg.objectives
    if len(objs) != 2 or objs[0].mode != "max":
        raise ConfigError("confirm: needs two objectives, accuracy (max) first and a cost second")
    acc, cost = objs[0].metric, objs[1].metric
    variants = yaml.safe_load((out / "pareto_variants.yaml").read_text())["variants"]
    path = out / "confirm_study.yaml"
    path.unlink(missing_ok=True)  # this command's own file (``export_study`` never writes over one)
    export_study(space, variants, path, "confirm")  # its own MLflow experiment, apart from an --export's
    code = run_studies([str(path)], RunOptions(space.cfg.scale, seeds=seeds, address=address, resume=True,
                                               tracking_uri=tracking_uri, verbose=verbose))
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
    write_confirm(space, points, acc, cost, seeds, out=out)
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


@dataclass(frozen=True)
class SearchOptions:
    """How ``harness search`` runs (the command line's options).

    trials: the main search's count instead of the space's; address: a Ray cluster; resume:
    continue the journal; reports: the outputs' folder; scale / seed: a search of their own
    (``<name>-<scale>``, ``<name>-seed<N>``); report_only: the outputs again from the journal;
    export: a new study file of the Pareto set; confirm: retrain the front at N seeds.
    """
    trials: int | None = None
    address: str | None = None
    resume: bool = False
    tracking_uri: str | None = None
    reports: Path = Path("reports")
    verbose: int = 1
    scale: str | None = None
    seed: int | None = None
    report_only: bool = False
    export: str | None = None
    confirm: int | None = None


def run_search(path: str, options: SearchOptions) -> int:
    """Launch (or resume) the search and each strategy it is compared with, then write the
    Pareto table, plot and exported variants (and the hypervolume-against-trial-time figure)."""
    import optuna

    if options.confirm is not None and options.confirm < 2:
        raise ConfigError(f"--confirm: {options.confirm} seed; an interval over seeds needs at least 2")
    level = optuna.logging.get_verbosity()
    if options.verbose < 2:  # Optuna's own lines ("A new study created ...") only with -v 2
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        space = Space(path, options.scale, options.seed)  # all validation before anything is written
        if options.export and Path(options.export).exists():
            raise ConfigError(f"--export: {options.export} exists; name a new file")
        code = _report_only(space, options) if options.report_only else _search(space, path, options)
        if code == 0:
            _closing(space, options.reports / space.cfg.name, options.export)
        seeds = options.confirm or (space.cfg.confirm.seeds if space.cfg.confirm else None)
        if code == 0 and seeds:
            out = confirm_front(space, options.reports / space.cfg.name, seeds, options.tracking_uri,
                                options.address, verbose=options.verbose)
            print(f"Confirmed front: {out}/confirm.md")
        return code
    finally:
        optuna.logging.set_verbosity(level)


def _report_only(space: Space, options: SearchOptions) -> int:
    session = Session(SessionOptions(options.tracking_uri, writes=False))
    url = space.cfg.storage or session.journal(space.cfg.name)
    if "://" not in url and not Path(url).exists():
        raise ConfigError(f"--report-only: no journal at {url}; run the search first")
    report_only(space, open_storage(url), url, options.reports)
    return 0


def _search(space: Space, path: str, options: SearchOptions) -> int:
    """Every strategy of the space run (or resumed) in one session, then the outputs."""
    import optuna
    from rich.console import Console

    from harness.tune import check_capacity

    for warning in space.check_options():  # every option built once, before Ray starts
        print(warning, file=sys.stderr)
    cfg = space.cfg
    # One runner a journal: a second runner would tell the same trials twice.
    session = Session(SessionOptions(options.tracking_uri, verbose=options.verbose,
                                     locks=((f"search-{cfg.name}", f"search {cfg.name}"),)))
    check_capacity(options.address, space.study.resources.cpu, space.study.resources.gpu,
                   options.verbose)  # before mlflow.db
    console = Console()
    with session:
        storage_url = cfg.storage or session.journal(cfg.name)
        storage = open_storage(storage_url)
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        if cfg.name in names and not options.resume:
            raise ConfigError(f"search {cfg.name!r} already exists in {storage_url}; pass --resume to continue "
                              f"it, or remove the storage to start afresh")
        run = _Strategies(session, Journal(storage, storage_url, set(names)), (cfg.name, path), options, console)
        studies = {}
        for name, strategy in space.strategies():  # the main search first: --trials is its count
            n_total = (options.trials or cfg.trials) if strategy is space else strategy.cfg.trials
            study = run.strategy(strategy, n_total)
            if study is None:
                return 1
            studies[name] = study
    out = write_pareto(space, studies[cfg.name], options.reports / cfg.name)
    write_strategies(space, studies, out)  # hypervolume against trial-time, for one strategy too
    if options.seed is not None:
        console.print(f"Strategies over seeds: {write_seeds(space, options.reports)}/seeds.md", soft_wrap=True)
    return 0


def _closing(space: Space, out: Path, export: str | None) -> None:
    from rich.console import Console

    console = Console()
    console.print(f"Pareto set: {out}/pareto.md; variants to train: {out}/pareto_variants.yaml", soft_wrap=True)
    if export:
        variants = yaml.safe_load((out / "pareto_variants.yaml").read_text())["variants"]
        console.print(f"Exported study: {export_study(space, variants, Path(export))} "
                      f"(harness run {export} --scale {space.cfg.scale})", soft_wrap=True)


@dataclass(frozen=True)
class Journal:
    """The Optuna storage of a search: the storage, its URL and the studies it held at the start."""
    storage: object
    url: str
    names: set[str]


class _Strategies:
    """The strategies of one search inside its session, each an Optuna study in the journal and
    an MLflow parent run in the search's experiment."""

    def __init__(self, session: Session, journal: Journal, search: tuple[str, str], options: SearchOptions, console):
        self.session, self.journal, self.options, self.console = session, journal, options, console
        name, self.path = search  # the main search's name and file: one MLflow experiment for every strategy
        self.exp_id = session.tracker.experiment(f"search-{name}")

    def strategy(self, space: Space, n_total: int):
        """Create or resume one Optuna study (the main search or a compared strategy) and run its
        missing trials on Ray Tune, each an MLflow child of the strategy's parent run. Returns the
        Optuna study, or None when Ray Tune itself stopped."""
        import optuna

        cfg, tracker, url, exp_id = space.cfg, self.session.tracker, self.journal.url, self.exp_id
        study = self._study(space)
        chash = config_hash(cfg.model_dump())
        found = tracker.find_parent(exp_id, cfg.scale, chash)
        rebuilt = rebuild_from_mlflow(space, study, tracker, exp_id, found.info.run_id) if found else 0
        if rebuilt:
            self.console.print(f"search {cfg.name}: {rebuilt} trial(s) MLflow holds were missing from {url}; added "
                               f"back from their runs (nothing is trained again)", soft_wrap=True)
        warm = warm_start(space, study, tracker.uri) if cfg.warm_start else 0
        done = _trials_run(space, study)
        todo = max(0, n_total - done)
        self.console.print(f"search {cfg.name}: {done} trials run in {url}, {todo} to run"
                           + (f"; {warm} finished runs of {space.study.name} added as complete trials" if warm else "")
                           + ".", soft_wrap=True)
        # The Optuna journal, not MLflow, says what is done.
        parent_id, _ = self.session.parent(exp_id, f"search-{cfg.name}", cfg.scale, chash,
                                           {"search_file": str(self.path), "base_study": space.study.name},
                                           found=found)
        if todo and not self._run(space, study, todo, (exp_id, parent_id)):
            return None
        self.session.end(parent_id, "FINISHED")
        # A journal lost or cut while the search ran: what MLflow recorded is added back before the outputs.
        rebuilt = rebuild_from_mlflow(space, study, tracker, exp_id, parent_id)
        if rebuilt:
            self.console.print(f"search {cfg.name}: {rebuilt} trial(s) were missing from {url} after the run; "
                               f"added back from MLflow", soft_wrap=True)
        return optuna.load_study(study_name=cfg.name, storage=self.journal.storage)

    def _study(self, space: Space):
        """The strategy's Optuna study, created or loaded; trials a dead runner left RUNNING failed."""
        import optuna

        cfg = space.cfg
        directions = ["maximize" if o.mode == "max" else "minimize" for o in cfg.objectives]
        study = optuna.create_study(study_name=cfg.name, storage=self.journal.storage, directions=directions,
                                    sampler=make_sampler(cfg.sampler, space.conditional, bool(cfg.constraints)),
                                    load_if_exists=cfg.name in self.journal.names)  # a fresh search is created
        # A trial still RUNNING was left by a runner that died: the run lock admits one runner per
        # search. (Optuna's heartbeat + fail_stale_trials cannot tell: JournalStorage keeps no
        # heartbeat in Optuna 5.1, and OptunaSearch's ask/tell never records one.)
        for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        return study

    def _run(self, space: Space, study, todo: int, parent: tuple[str, str]) -> bool:
        """``todo`` more trials on Ray Tune; False (the parent closed FAILED) when Tune itself raised."""
        from harness.progress import Board
        from harness.tune import run_search_trials

        exp_id, parent_id = parent
        with Board(f"search {space.cfg.name}", self.options.verbose, expected=todo) as board:
            writer = run_search_trials(space, study, self.journal.storage, todo, self.session.tracker, exp_id=exp_id,
                                       parent_id=parent_id, address=self.options.address, storage_dir=self.session.ray_storage, board=board,
                                       verbose=self.options.verbose)
        if writer.crashed:  # Ray Tune raised: the search did not run, whatever the journal holds
            self.session.end(parent_id, "FAILED")
            self.console.print(f"search {space.cfg.name}: Ray Tune stopped with {writer.error}; "
                               f"{len(writer.finished)} of {todo} trials finished. Fix the cause and pass --resume.",
                               soft_wrap=True)
            return False
        return True


def _trials_run(space: Space, study) -> int:
    """Trials run count: complete, failed in training (its compute was spent; it is never proposed
    again) and stopped at a rung. A repeat the sampler drew is PRUNED without a time and a trial
    left by a dead runner FAIL without one: neither ran. A warm-started one was not run either."""
    import optuna

    states = optuna.trial.TrialState
    settled = (states.COMPLETE, states.FAIL) + ((states.PRUNED,) if space.rungs() else ())
    return len([t for t in study.get_trials(deepcopy=False, states=settled) if "warm_start_run" not in t.user_attrs
                and (t.state == states.COMPLETE or "trial_time_s" in t.user_attrs)])
