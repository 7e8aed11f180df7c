"""Accuracy against cost with Pareto fronts, per-region Dice, learning curves, and a curve per
numeric grid axis (seaborn, imported inside)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from harness.config import table_rows
from harness.metrics import shown
from harness.report.runs import StudyRuns


def pareto_front(df: pd.DataFrame, cost: str, acc: str) -> pd.DataFrame:
    """Points not dominated by a cheaper-or-equal, at-least-as-accurate other point."""
    pts = df.dropna(subset=[cost, acc]).sort_values([cost, acc], ascending=[True, False])
    front, best = [], -math.inf
    for _, r in pts.iterrows():
        if r[acc] > best:
            front.append(r)
            best = r[acc]
    return pd.DataFrame(front)


LOADED = 1.25  # 1-minute load per core above which latency is flagged (trials run 1 a core: about 1)


def place_labels(ax, points: list[tuple[float, float, str]], avoid: list[tuple[float, float]], size: float = 7) -> None:
    """Label ``points`` (x, y, text) where no label overlaps another, a marker or the axes'
    edge: each tries offsets around its point, nearest first, and keeps the first free one
    (the greedy rule adjustText starts from); a label with no free place is left out."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    taken = []
    for x, y in avoid:
        px, py = ax.transData.transform((x, y))
        taken.append((px - 4, py - 4, px + 4, py + 4))
    offsets = [(dx * r, dy * r) for r in (1, 2, 3) for dx, dy in
               ((5, 5), (5, -12), (-5, 5), (-5, -12), (0, 10), (0, -16), (8, -3), (-8, -3))]
    for x, y, text in points:
        for dx, dy in offsets:
            t = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=size,
                            ha="left" if dx >= 0 else "right",
                            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"} if abs(dy) > 12 else None)
            b = t.get_window_extent(renderer).expanded(1.0, 1.0).padded(2)  # a little air between labels
            inside = b.x0 >= box.x0 and b.x1 <= box.x1 and b.y0 >= box.y0 and b.y1 <= box.y1
            if inside and not any(b.x0 < x1 and b.x1 > x0 and b.y0 < y1 and b.y1 > y0 for x0, y0, x1, y1 in taken):
                taken.append((b.x0, b.y0, b.x1, b.y1))
                break
            t.remove()


def accuracy_vs_cost(trials: pd.DataFrame, task_of: dict[str, str | None], title: str, path: Path) -> bool:
    """``accuracy_figure`` saved to ``path``; False when the trials have no Dice or no cost."""
    import matplotlib.pyplot as plt

    fig = accuracy_figure(trials, task_of, title)
    if fig is None:
        return False
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def accuracy_figure(trials: pd.DataFrame, task_of: dict[str, str | None], title: str):
    """Mean Dice against each cost (a panel each), one colour and one Pareto front per task (a
    front across tasks compares nothing), fronts labelled with their variants where labels do
    not collide, log axes where a cost spans over 10x, the legend below the panels, latency
    flagged when it was measured beside other work (``load_per_core`` above ``LOADED``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter, FormatStrFormatter, LogLocator, NullFormatter

    acc = "mean_dice"
    agg = trials.groupby("variant", sort=False).mean(numeric_only=True).reset_index()
    axes_of = {m.name: m.label for m in shown("plot")}  # the catalogue's cost axes, a plugin's too
    costs = [c for c in axes_of if c in agg and agg[c].notna().any()]
    if acc not in agg or not costs:
        return None
    agg["task"] = agg.variant.map(lambda v: task_of.get(v) or "")
    tasks = list(dict.fromkeys(agg.task))
    rows = (len(costs) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(11, 4.2 * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(costs):]:
        ax.remove()
    placing = []  # (axes, front labels, every marker): labelled once the layout has settled
    for ax, c in zip(axes.flat, costs):
        labels = []
        for i, task in enumerate(tasks):
            d = agg[agg.task == task]
            colour = f"C{i}"
            ax.scatter(d[c], d[acc], s=28, color=colour, label=task or None, zorder=3)
            front = pareto_front(d, c, acc)
            if not front.empty:  # rings mark the front (a front of one point has no line)
                ax.step(front[c], front[acc], where="post", color=colour, lw=1.2, ls="--", zorder=2)
                ax.scatter(front[c], front[acc], s=110, facecolors="none", edgecolors=colour, lw=1.2, zorder=2,
                           label=f"Pareto front{f' ({task})' if task else ''}")
                name = (lambda v, t=task: v.removeprefix(f"{t}-") if t else v)
                labels += [(r[c], r[acc], name(r["variant"])) for _, r in front.iterrows()]
        positive = agg[c][agg[c] > 0]
        if len(positive) and positive.max() > 10 * positive.min():
            ax.set_xscale("log")
            # Ticks at 1, 2, 5 x 10^k, labelled short; unlabelled minor ticks (their labels collided).
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.xaxis.set_major_formatter(EngFormatter(sep="") if c == "params" else FormatStrFormatter("%g"))
        elif c == "params":
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        label = axes_of[c]
        if c == "latency_ns_per_voxel" and "load_per_core" in agg and agg.load_per_core.max() > LOADED:
            label += f"\nmeasured beside other work (load up to {agg.load_per_core.max():.1f} per core): reads high"
        ax.set_xlabel(label)
        ax.set_ylabel("mean Dice (%)")
        ax.grid(alpha=0.3)
        placing.append((ax, labels, list(zip(agg[c], agg[acc]))))
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=8, frameon=False)
    fig.suptitle(f"{title}: accuracy vs cost (fronts labelled; every variant in the report's tables)")
    fig.tight_layout(rect=(0, 0.4 / (4.2 * rows + 0.4), 1, 1))
    for ax, labels, points in placing:
        place_labels(ax, labels, points)
    return fig


def plots(runs: StudyRuns, out: Path, store) -> list[str]:
    """Accuracy vs cost with Pareto fronts, per-region Dice bars, learning curves (PNG); the
    curves read from ``store`` (``harness.tracking.Store``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns  # the edge: seaborn is imported only here

    files: list[str] = []
    t = runs.trials
    if t.empty:
        return files
    task_of = {v.name: v.task for v in table_rows(runs.study)}
    if accuracy_vs_cost(t, task_of, f"{runs.study.name} @ {runs.scale}", out / "accuracy_vs_cost.png"):
        files.append("accuracy_vs_cost.png")
    files += axis_curves(runs, out)
    if seed_strip(t, out / "seeds.png"):
        files.append("seeds.png")
    region_cols = [c for c in t.columns if c.startswith("dice_")]
    if region_cols:
        long = t.melt(id_vars=["variant"], value_vars=region_cols, var_name="region", value_name="dice")
        long["region"] = long["region"].str.removeprefix("dice_")
        fig, ax = plt.subplots(figsize=(max(6, 0.5 * t.variant.nunique() * len(region_cols)), 4))
        sns.barplot(data=long, x="variant", y="dice", hue="region", ax=ax, errorbar="sd")
        ax.set_ylabel("Dice (%)")
        ax.tick_params(axis="x", rotation=60, labelsize=7)
        fig.tight_layout()
        fig.savefig(out / "dice_per_region.png", dpi=110)
        plt.close(fig)
        files.append("dice_per_region.png")
    curves = []
    for r in t.itertuples():
        for m in ("train_loss", "mean_dice"):
            curves += [{"variant": r.variant, "seed": r.seed, "metric": m, "epoch": h.step, "value": h.value}
                       for h in store.history(r.run_id, m)]
    if curves:
        cdf = pd.DataFrame(curves)
        last = cdf.groupby(["variant", "seed", "metric"]).epoch.transform("max")
        cdf = cdf[~((cdf.metric == "mean_dice") & (cdf.epoch == last) & (cdf.epoch > 0) &
                    cdf.duplicated(["variant", "seed", "metric", "value"], keep="first"))]
        g = sns.relplot(data=cdf, x="epoch", y="value", hue="variant", col="metric", kind="line",
                        facet_kws={"sharey": False}, height=3.5, legend=t.variant.nunique() <= 20)
        g.savefig(out / "learning_curves.png", dpi=110)
        plt.close(g.figure)
        files.append("learning_curves.png")
    return files


def seed_strip(trials: pd.DataFrame, path: Path) -> bool:
    """Every seed's mean Dice per variant, seeds that failed to train (``failed_to_train``) as
    red crosses: what a mean ± sd hides."""
    if trials.empty or "mean_dice" not in trials:
        return False
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(trials.variant))
    failed = trials.failed_to_train if "failed_to_train" in trials else pd.Series(False, index=trials.index)
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(variants)), 3.5))
    for i, v in enumerate(variants):
        rows = trials[trials.variant == v]
        for ok, marker, colour in ((True, "o", "tab:blue"), (False, "x", "tab:red")):
            part = rows[failed[rows.index] != ok]
            jitter = [(k - (len(part) - 1) / 2) * 0.06 for k in range(len(part))]
            ax.scatter([i + j for j in jitter], part.mean_dice, marker=marker, color=colour, s=22,
                       label=("trained" if ok else "failed to train") if i == 0 else None, zorder=3)
        ax.hlines(rows.mean_dice.mean(), i - 0.3, i + 0.3, color="grey", lw=1, label="mean" if i == 0 else None)
    ax.set_xticks(range(len(variants)), variants, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("mean Dice (%) per seed")
    if failed.any():
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _numeric(label: str) -> float | None:
    try:
        return float(label)
    except ValueError:
        return None


def axis_curves(runs: StudyRuns, out: Path) -> list[str]:
    """Dice and cost against each grid axis whose options are numbers (OBELISK's offset count K):
    ``<axis>_curve.png``, mean ± sd over seeds, one panel per metric (mean Dice, GMACs,
    parameters, training memory, as logged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    t, files = runs.trials, []
    for axis, options in runs.study.grid.items():
        values = {label: _numeric(str(label)) for label in options}
        if len(values) < 3 or None in values.values() or axis not in t:
            continue
        d = t[t[axis].isin(list(values))].assign(**{axis: lambda f: f[axis].map(values)})
        metrics = [m.name for m in shown("curve") if m.name in d and d[m.name].notna().any()]
        if d.empty or not metrics:
            continue
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4), squeeze=False)
        for ax, m in zip(axes[0], metrics):
            sns.lineplot(data=d, x=axis, y=m, ax=ax, marker="o", errorbar="sd")
            if max(values.values()) > 8 * min(values.values()) > 0:
                ax.set_xscale("log", base=2)
            ax.set_title(m, fontsize=9)
        fig.suptitle(f"{runs.study.name} @ {runs.scale}: against {axis}")
        fig.tight_layout()
        fig.savefig(out / f"{axis}_curve.png", dpi=110)
        plt.close(fig)
        files.append(f"{axis}_curve.png")
    return files
