"""Accuracy against cost with Pareto fronts, per-region Dice, learning curves, and a curve per
numeric grid axis (seaborn, imported inside)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

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


def plots(runs: StudyRuns, out: Path, tracking_uri: str | None = None) -> list[str]:
    """Accuracy vs cost with Pareto fronts, per-region Dice bars, learning curves (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns  # the edge: seaborn is imported only here

    files: list[str] = []
    t = runs.trials
    if t.empty:
        return files
    acc = "mean_dice"
    agg = t.groupby("variant", sort=False).mean(numeric_only=True).reset_index()
    costs = [c for c in ("gmacs", "params", "latency_ns_per_voxel", "peak_mem_mb") if c in agg]
    if acc in agg and costs:
        rows = (len(costs) + 1) // 2
        fig, axes = plt.subplots(rows, 2, figsize=(11, 4.2 * rows), squeeze=False)
        for ax in axes.flat[len(costs):]:
            ax.remove()
        for ax, c in zip(axes.flat, costs):
            sns.scatterplot(data=agg, x=c, y=acc, ax=ax, s=50)
            front = pareto_front(agg, c, acc)
            if not front.empty:
                ax.step(front[c], front[acc], where="post", color="C3", label="Pareto front")
            for _, r in agg.iterrows():
                ax.annotate(r["variant"], (r[c], r[acc]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            if c in ("params", "gmacs") and agg[c].max() > 20 * agg[c].min() > 0:
                ax.set_xscale("log")
            ax.set_xlabel({"gmacs": "GMACs", "params": "parameters", "latency_ns_per_voxel": "latency (ns / voxel)",
                           "peak_mem_mb": "peak memory (MB)"}[c])
            ax.set_ylabel("mean Dice (%)")
            ax.legend(loc="lower right", fontsize=7)
        fig.suptitle(f"{runs.study.name} @ {runs.scale}: accuracy vs cost")
        fig.tight_layout()
        fig.savefig(out / "accuracy_vs_cost.png", dpi=110)
        plt.close(fig)
        files.append("accuracy_vs_cost.png")
    files += axis_curves(runs, out)
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
    from mlflow.tracking import MlflowClient

    from harness.tracking import default_tracking_uri

    client = MlflowClient(tracking_uri or default_tracking_uri())
    curves = []
    for r in t.itertuples():
        for m in ("train_loss", "mean_dice"):
            curves += [{"variant": r.variant, "seed": r.seed, "metric": m, "epoch": h.step, "value": h.value}
                       for h in client.get_metric_history(r.run_id, m)]
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
        metrics = [m for m in ("mean_dice", "gmacs", "params", "train_peak_mem_mb") if m in d and d[m].notna().any()]
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
