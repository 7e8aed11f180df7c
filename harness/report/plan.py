"""``harness plan``: per claim, the seeds that would decide it and what training them costs.

The claims are judged on a study's finished runs at one scale (``--from``, as ``harness report``
judges them), which give each claim's seeds for 80% power at the paper's effect and at ours
(``harness.stats.seeds_needed``, from the claim's own seed and case variance parts). A seed of
a claim trains every variant its two sides name (a combined row: its members). Hours per seed
at the target scale (``--scale``): each variant's recorded seconds per training step, scaled by
the MACs of a training batch (``harness.study.proxy_macs``: patch, batch and width) and by the
target's steps; or measured at the target scale on a device (``--device``). Validation, cost
measurement and start-up are left out, and the variance of ``--from`` is assumed to hold at the
target scale: the plan prints both assumptions with its table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from harness.config import ConfigError, StudyCfg, TrialSpec, claim_members, config_hash, resolve
from harness.report.claims import judge_claim
from harness.report.runs import StudyRuns


@dataclass
class Plan:
    claims: pd.DataFrame  # one row per claim: verdict at --from, seeds needed, hours
    hours: dict[str, float]  # training hours of one seed of each variant at the target scale
    basis: dict[str, str]  # per variant: how its hours were found
    runs: StudyRuns
    target: str


def trained_variants(study: StudyCfg, side: Any) -> list[str]:
    """The trained variants behind one side of a claim: a variant, tagged variants, or a
    combined row's members (recursively); a number (a claim against a value) trains nothing."""
    if isinstance(side, (int, float)):
        return []
    combined = {c.name: c for c in study.combined}
    out: list[str] = []
    for name in claim_members(study, side):
        out += [v for member in combined[name].of for v in trained_variants(study, member)] \
            if name in combined else [name]
    return list(dict.fromkeys(out))


def _task(spec: TrialSpec, fallback):
    from harness.data import build_task

    try:
        return build_task(spec.data.dataset, **spec.data.params)
    except Exception:  # noqa: BLE001  a data folder absent here: channels and regions of --from's data
        return fallback


def variant_hours(runs: StudyRuns, target: str, device: str | None = None, say=lambda s: None
                  ) -> tuple[dict[str, float], dict[str, str]]:
    """Training hours of one seed of every variant at ``target`` (see the module docstring), and
    for each the basis of its figure."""
    from harness.data import build_task
    from harness.study import measure_step_time, proxy_macs

    study, t = runs.study, runs.trials
    recorded = {s.variant: s for s in resolve(study, runs.scale, 1, check=False)}
    wanted = {s.variant: s for s in resolve(study, target, 1, check=False)}
    tasks: dict[str, Any] = {}
    hours, basis = {}, {}
    for name, spec in wanted.items():
        rec = recorded[name]
        rkey, tkey = config_hash(rec.data.model_dump()), config_hash(spec.data.model_dump())
        if rkey not in tasks:
            tasks[rkey] = build_task(rec.data.dataset, **rec.data.params)
        if tkey not in tasks:
            tasks[tkey] = _task(spec, tasks[rkey])
        steps = spec.train.epochs * spec.train.steps_per_epoch
        if device:
            import torch

            say(f"measuring a training step of {name} at {target} on {device}")
            per_step = measure_step_time(spec, tasks[tkey], device=torch.device(device))
            basis[name] = f"measured on {device}: {per_step:.3g} s/step x {steps} steps"
        else:
            ran = t[t.variant == name]["step_time_s"].dropna() if "step_time_s" in t else pd.Series(dtype=float)
            if ran.empty:
                hours[name], basis[name] = math.nan, f"no finished run at {runs.scale} with a step time"
                continue
            say(f"counting the MACs of a training batch of {name} at {runs.scale} and {target}")
            scale = proxy_macs(spec, tasks[tkey]) / proxy_macs(rec, tasks[rkey])
            per_step = float(ran.median()) * scale
            devices = ", ".join(sorted(set(t.loc[t.variant == name, "device"].dropna().astype(str)))) \
                if "device" in t else ""
            basis[name] = (f"{float(ran.median()):.3g} s/step at {runs.scale}{f' ({devices})' if devices else ''} x "
                           f"{scale:.3g} (MACs of a training batch) x {steps} steps")
        hours[name] = per_step * steps / 3600
    return hours, basis


def _count(n: Any) -> float:
    """A claim's seeds as a number: inf for 'never' and '> 1000', NaN where unknown."""
    if isinstance(n, (int, float)) and n == n:
        return float(n)
    return math.inf if isinstance(n, str) else math.nan


def make_plan(runs: StudyRuns, target: str, device: str | None = None, say=lambda s: None) -> Plan:
    """Every claim of ``runs.study`` judged on ``runs``, with the seeds that would decide it and
    their training hours at ``target``."""
    study = runs.study
    if not study.claims:
        raise ConfigError(f"claims: study {study.name} declares none; a plan sizes the seeds its claims need")
    if runs.trials.empty:
        raise ConfigError(f"--from: no finished runs of {study.name} at {runs.scale}; run "
                          f"`harness run {study.name} --scale {runs.scale}` first (its seeds' spread sizes the plan)")
    hours, basis = variant_hours(runs, target, device, say)
    rows = []
    for claim in study.claims:
        j = judge_claim(runs, claim)
        variants = list(dict.fromkeys(trained_variants(study, claim.better) + trained_variants(study, claim.than)))
        per_seed = sum(hours.get(v, math.nan) for v in variants)
        row = {"claim": claim.text, "kind": j["kind"], "verdict": j["verdict"], "seeds": j["seeds"],
               "seeds_paper": j["seeds_needed_paper"], "seeds_ours": j["seeds_needed_observed"],
               "variants": ", ".join(variants), "hours_per_seed": per_seed}
        for at in ("paper", "ours"):
            n = _count(row[f"seeds_{at}"])
            row[f"hours_{at}"] = n * per_seed if math.isfinite(n) else n
        rows.append(row)
    return Plan(pd.DataFrame(rows, dtype=object), hours, basis, runs, target)  # None stays None


def _seeds(n: Any) -> str:
    return "—" if n is None or (isinstance(n, float) and math.isnan(n)) else str(n)


def _hours(h: float) -> str:
    return "—" if h != h else "out of reach" if math.isinf(h) else f"{h:,.1f}" if h >= 1 else f"{h:.2f}"


def plan_markdown(plan: Plan) -> str:
    """The plan as a reader takes it: the table, the study's total at the paper's effect, and the
    assumptions."""
    runs, c = plan.runs, plan.claims
    rows = []
    for r in c.to_dict("records"):
        trained = r["kind"] == "result"
        rows.append({"claim": r["claim"],
                     f"at {runs.scale} ({r['seeds']} seeds)": r["verdict"] if trained else f"{r['verdict']} ({r['kind']})",
                     "seeds for 80% power (paper / ours)": f"{_seeds(r['seeds_paper'])} / {_seeds(r['seeds_ours'])}"
                     if trained else "— (no training decides it)",
                     "trains": r["variants"],
                     f"h per seed at {plan.target}": _hours(r["hours_per_seed"]) if trained else "—",
                     "h (paper's effect / ours)": f"{_hours(r['hours_paper'])} / {_hours(r['hours_ours'])}"
                     if trained else "—"})
    text = [f"# Plan: {runs.study.name} at {plan.target}, from its runs at {runs.scale}", "",
            pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True), ""]
    reach = c[(c.kind == "result") & c.seeds_paper.map(lambda n: math.isfinite(_count(n)))]
    if len(reach):
        n = int(max(_count(x) for x in reach.seeds_paper))
        variants = list(dict.fromkeys(v for vs in reach.variants for v in vs.split(", ") if v))
        total = n * sum(plan.hours.get(v, math.nan) for v in variants)
        text += [f"Every trained-result claim the paper's effect would decide within 1000 seeds ({len(reach)} of "
                 f"{int((c.kind == 'result').sum())}) is decided at {n} seeds: {len(variants)} variants x {n} seeds, "
                 f"about {_hours(total)} hours of training at {plan.target}.", ""]
    text += ["Hours per seed of each variant:", ""]
    text += [f"- {v}: {_hours(h)} h ({plan.basis[v]})" for v, h in plan.hours.items()]
    text += ["", "Assumptions: the seed and case variance measured at "
             f"{runs.scale} holds at {plan.target} (a larger scale usually trains more steadily, so the seeds "
             "read high); hours are training steps only (validation, cost measurement and start-up left out); "
             "scaled step times assume the same device as the recorded runs and a time proportional to the MACs "
             "of a training batch. 'never': the effect lies at or beyond the claim's bound, so no number of "
             "seeds reproduces it; '> 1000': out of any training budget."]
    return "\n".join(text) + "\n"
