"""What a search writes: the Pareto set (table, plot, variants), the exported study, the
confirmed front, and the strategies' hypervolume against trial-time."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from harness.config import ConfigError, VariantCfg, load_study
from harness.pareto import feasible, non_dominated
from harness.search.samplers import sampler_name
from harness.search.schema import Constraint, decode
from harness.search.space import Space


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


def write_confirm(space: Space, points: list[dict], acc: str, cost: str, seeds: int, out: Path) -> None:
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
             "feasible": feasible(t), **{k: decode(t.params[k]) for k in space.cfg.knobs if k in t.params}}
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
        pareto_plot(space, df, front, objs[1], objs[0], path=out / "pareto.png")
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


def _trial_time(t) -> float:
    """A trial's own time: its CPU time (``trial_cpu_s``: what it paid, which other work on a busy
    machine does not inflate); else Ray's wall time from its start; a trial run before either
    was recorded: its Optuna start to end (which also counts a wait for a free worker)."""
    if "trial_cpu_s" in t.user_attrs:
        return float(t.user_attrs["trial_cpu_s"])
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


def _reached_at(h, target: float) -> float | None:
    """The trial-time (min) at which history ``h`` first reached hypervolume ``target``, or None."""
    reached = h[h.hypervolume >= target - 1e-9 * max(1.0, abs(target))]
    return float(reached.trial_time_min.iloc[0]) if len(reached) else None


def _save_hv_plot(fig, ax, title: str, path: Path) -> None:
    """A hypervolume-against-trial-time figure's axes, legend and file."""
    import matplotlib.pyplot as plt

    ax.set_xlabel("trial CPU time spent (min, all trials summed)")
    ax.set_ylabel("hypervolume of complete trials")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
        at = _reached_at(h, target) if target > 0 else None
        sch = strategy.cfg.scheduler
        lines.append({
            "strategy": name,
            "sampler": f"{sampler_name(strategy.cfg.sampler, strategy.conditional)} (seed {strategy.cfg.sampler.seed})",
            "early stopping": (f"cost-aware ASHA, eta {sch.reduction_factor}, rungs at epochs {strategy.rungs()}"
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
    _save_hv_plot(fig, ax, f"search {main}: strategies", out / "hypervolume.png")
    objs = ", ".join(f"{'log10 ' if o.scale == 'log' else ''}{o.metric} {ref[i]:g}"
                     for i, o in enumerate(space.cfg.objectives)) if ref else "none"
    with open(out / "pareto.md", "a") as f:
        f.write("\n## Search strategies: hypervolume against trial-time\n\n"
                f"The same space, objectives, base study and training seeds; trial-time is the trials' own "
                f"CPU time summed (what the search paid, whatever ran in parallel or beside it); hypervolume of each "
                f"strategy's complete (full-budget) trials, reference point {objs}. Per trial: "
                f"`strategies.csv`.\n\n" + pd.DataFrame(lines).to_markdown(index=False)
                + "\n\n![hypervolume against trial-time](hypervolume.png)\n")


def seed_summary(family: str, folders: dict[int, Path]) -> tuple[Any, Any]:
    """Per seed and strategy, from each repetition's ``strategies.csv`` (``--seed N``): final
    hypervolume, trial-time, and the trial-time it took to reach the main search's final
    hypervolume of the same seed. Returns (per seed and strategy, per strategy over seeds)."""
    import pandas as pd

    rows = []
    for seed, folder in sorted(folders.items()):
        hist = pd.read_csv(folder / "strategies.csv")
        main = f"{family}-seed{seed}"
        target = float(hist[hist.strategy == main].hypervolume.max())
        main_time = float(hist[hist.strategy == main].trial_time_min.max())
        for name, h in hist.groupby("strategy", sort=False):
            at = _reached_at(h, target)
            at = math.nan if at is None else at
            rows.append({"seed": seed, "strategy": "main" if name == main else name.removeprefix(main + "."),
                         "trials": len(h), "final_hypervolume": float(h.hypervolume.max()),
                         "minus_main": float(h.hypervolume.max()) - target,
                         "trial_time_min": float(h.trial_time_min.max()),
                         "share_to_main_final": at / main_time if main_time else math.nan})
    per = pd.DataFrame(rows)
    summary = per.groupby("strategy", sort=False).agg(
        seeds=("seed", "count"), trials=("trials", "mean"),
        hypervolume_mean=("final_hypervolume", "mean"), hypervolume_sd=("final_hypervolume", "std"),
        minus_main_mean=("minus_main", "mean"), minus_main_sd=("minus_main", "std"),
        above_main=("minus_main", lambda d: int((d > 0).sum())),
        trial_time_min=("trial_time_min", "mean"),
        reached_main=("share_to_main_final", lambda s: int(s.notna().sum())),
        share_median=("share_to_main_final", "median")).reset_index()
    return per, summary


def write_seeds(space: Space, reports: Path) -> Path:
    """``<reports>/<name>/seeds.md``, ``seeds.csv`` and ``seeds.png``: the strategies of every
    repetition run so far (``reports/<name>-seed<N>/``) side by side, so that "this sampler beats
    random" and "multi-fidelity pays" rest on several search seeds, the spread shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    family = space.family
    folders = {int(p.parent.name.rsplit("-seed", 1)[1]): p.parent
               for p in reports.glob(f"{family}-seed*/strategies.csv") if p.parent.name.rsplit("-seed", 1)[1].isdigit()}
    out = reports / family
    out.mkdir(parents=True, exist_ok=True)
    per, summary = seed_summary(family, folders)
    per.to_csv(out / "seeds.csv", index=False)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colours = dict(zip(summary.strategy, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4))
    for seed, folder in sorted(folders.items()):
        hist = pd.read_csv(folder / "strategies.csv")
        main = f"{family}-seed{seed}"
        for name, h in hist.groupby("strategy", sort=False):
            label = "main" if name == main else name.removeprefix(main + ".")
            ax.step([0.0, *h.trial_time_min], [0.0, *h.hypervolume], where="post", color=colours[label], alpha=0.7,
                    lw=1.0, label=label if seed == min(folders) else None)
    _save_hv_plot(fig, ax, f"search {family}: strategies over {len(folders)} seed(s)", out / "seeds.png")
    table = summary.assign(**{
        "final hypervolume": [f"{m:.3f} ± {0.0 if math.isnan(s) else s:.3f}"
                              for m, s in zip(summary.hypervolume_mean, summary.hypervolume_sd)],
        "minus the main's (same seed)": [f"{m:+.3f} ± {0.0 if math.isnan(s) else s:.3f}"
                                         for m, s in zip(summary.minus_main_mean, summary.minus_main_sd)],
        "seeds above the main's": [f"{a} of {n}" for a, n in zip(summary.above_main, summary.seeds)],
        "reached the main's final": [f"{r} of {n}" for r, n in zip(summary.reached_main, summary.seeds)],
        "share of the main's trial-time (median)": ["—" if math.isnan(x) else f"{x:.2f}" for x in summary.share_median]})
    cols = ["strategy", "seeds", "trials", "trial_time_min", "final hypervolume", "minus the main's (same seed)",
            "seeds above the main's", "reached the main's final", "share of the main's trial-time (median)"]
    (out / "seeds.md").write_text(
        f"# Search {family}: strategies over search seeds\n\n"
        f"Each seed is one run of `harness search --seed N` (every strategy's sampler at that seed; the "
        f"same space, recipe and training seeds): `{family}-seed<N>/pareto.md` holds its own table. "
        f"Hypervolume of complete trials at the space's reference point; trial-time is the trials' CPU "
        f"time summed, in minutes; mean ± sd over seeds; \"share\": the trial-time a strategy took to "
        f"reach the main search's final hypervolume of the same seed, over the main search's whole "
        f"trial-time (below 0.5: in half its time). Per seed: `seeds.csv`.\n\n"
        + table.assign(trial_time_min=table.trial_time_min.round(1), trials=table.trials.round(1))[cols]
        .to_markdown(index=False) + "\n\n![hypervolume against trial-time, every seed](seeds.png)\n")
    return out
