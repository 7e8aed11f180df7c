"""Combined rows: trained variants' predictions combined on the validation cases, no training.

A study's ``combined`` rows (``config.CombinedCfg``) are evaluated by ``harness run`` after its
trials, in the driver, per seed (and fold): each member's saved model infers every validation
case with its own trial's inferer and data (pipelines may normalise differently), a registered
rule combines the members' probabilities, and the result is scored as a trial is
(``train.case_metrics``). The evaluation is an MLflow run like a trial's (``harness_role =
trial``, the row's name as its variant, ``combined_of`` naming the member runs), so the report,
its claims and ``--resume`` treat it as one. Cost is as run: every member network's inference
on the cost input, summed (GMACs, parameters, latency, forward passes; peak memory the largest
member's, as members run one after another).

A rule factory takes its own parameters and returns ``rule(probs, output) -> probabilities``:
``probs`` the members' probabilities (N, K, D, H, W) in ``of`` order, all of one ``output``
(``sigmoid`` regions or ``softmax`` classes); the result is thresholded as a trial's is.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from monai.transforms import MeanEnsemble

from harness.registry import COMBINERS

Rule = Callable[[Sequence[torch.Tensor], str], torch.Tensor]


@COMBINERS.register("mean")
def mean(weights: list[float] | None = None) -> Rule:
    """The members' probabilities averaged (MONAI ``MeanEnsemble``; ``weights`` per member):
    an ensemble of different recipes, as BraTS 2020's pipeline A ensembles its two best models."""
    ensemble = MeanEnsemble(weights=weights)

    def rule(probs: Sequence[torch.Tensor], output: str) -> torch.Tensor:
        if weights is not None and len(weights) != len(probs):
            raise ValueError(f"rule mean: {len(weights)} weights for {len(probs)} members")
        return ensemble(list(probs))

    return rule


def combined_cost(costs: list[dict[str, Any]]) -> dict[str, Any]:
    """Members' inference costs as one procedure run member after member: each cost as the metric
    catalogue says its members add up (``harness.metrics``: sums; a peak memory the largest)."""
    from harness.metrics import METRICS

    how = {n: METRICS.get(n).members for n in METRICS.in_order()}
    out: dict[str, Any] = {}
    for k, rule in how.items():
        if rule is not None and all(k in c for c in costs):
            out[k] = sum(c[k] for c in costs) if rule == "sum" else max(c[k] for c in costs)
    for k in ("input", "device"):
        if k in costs[0]:
            out[k] = costs[0][k]
    return out


def run_combined(study, specs, tracker, exp_id: str, parent_id: str, console) -> tuple[list[str], list[str]]:
    """Evaluate every combined row of ``study`` whose members finished under ``parent_id`` and that
    has not itself finished there (``--resume``). Returns (keys finished, keys failed); a failure
    is recorded as a FAILED run and the others go on."""
    from harness.config import combined_keys
    from harness.tracking import TRIAL_KEY

    todo = combined_keys(study, specs)
    if not todo:
        return [], []
    runs = {r.data.tags.get(TRIAL_KEY): r for r in tracker.children(exp_id, parent_id)
            if r.info.status == "FINISHED"}
    by_key = {s.key: s for s in specs}
    rows_of = {c["key"]: c for c in todo}
    finished, failed, costs = [], [], {}
    for c in todo:
        if c["key"] in runs:
            finished.append(c["key"])
            continue
        leaves = _leaves(c["key"], rows_of)
        if not all(k in runs for k in leaves):
            continue  # a member failed or did not run: the row is left out, as the study summary says
        run_id = tracker.start_combined(exp_id, parent_id, study.name, specs[0].scale, c,
                                        members=[runs[k].info.run_id for k in leaves])
        try:
            final, per_case = _evaluate(c, rows_of, by_key, runs, tracker, costs=costs)
            tracker.finish_child(run_id, final, per_case, step=0)
            finished.append(c["key"])
            console.print(f"combined {c['key']}  Dice {final['mean_dice']:.1f}  (of {', '.join(c['of'])})")
        except Exception as e:  # noqa: BLE001  recorded, the study goes on
            tracker.fail_child(run_id, f"{type(e).__name__}: {e}")
            failed.append(c["key"])
            console.print(f"[red]combined {c['key']} failed: {type(e).__name__}: {e}[/red]", soft_wrap=True)
    return finished, failed


def _leaves(key: str, rows_of: dict[str, dict]) -> list[str]:
    """The trained trials under a combined row (members that are combined rows expanded)."""
    return [leaf for m in rows_of[key]["of"] for leaf in (_leaves(m, rows_of) if m in rows_of else [m])]


@torch.no_grad()
def _evaluate(c: dict, rows_of: dict, by_key: dict, runs: dict, store, costs: dict) -> tuple[dict[str, Any], list]:
    """Case by case (a paper-scale validation set's probabilities would not fit in memory at
    once): every leaf model infers the case, the rules combine bottom-up, the result is scored."""
    from harness.contract import regions_of
    from harness.cost import cost_report
    from harness.data import build_task
    from harness.evaluate import load_checkpoint
    from harness.inferers import build_inferer
    from harness.train import case_metrics, load_model, summarise_cases

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    leaves = _leaves(c["key"], rows_of)
    outputs = {by_key[k].train.output for k in leaves}
    if len(outputs) > 1:
        raise ValueError(f"members {leaves} mix outputs {sorted(outputs)}; a rule combines one kind")
    output = outputs.pop()
    tasks = {k: build_task(by_key[k].data.dataset, **by_key[k].data.params) for k in leaves}
    ref_task = tasks[leaves[0]]
    for k in leaves:
        if [x.id for x in tasks[k].val] != [x.id for x in ref_task.val] or tasks[k].regions != ref_task.regions:
            raise ValueError(f"member {k} is validated on other cases or regions than {leaves[0]}")
    models, inferers = {}, {}
    for k in leaves:
        cfg, spec = by_key[k].train, by_key[k]
        models[k] = load_model(load_checkpoint(store, runs[k].info.run_id), device)
        inferers[k] = build_inferer(cfg.inferer, cfg.patch, cfg.batch_size, cfg.output)
        if k not in costs:
            cost_input = spec.cost.input or [1, tasks[k].in_channels, *cfg.patch]
            window = build_inferer(cfg.inferer, cost_input[2:], cost_input[0], cfg.output)
            costs[k] = cost_report(models[k], cost_input, latency=spec.cost.latency, runs=spec.cost.latency_runs,
                                   inferer=window)
    rules = {key: COMBINERS.get(row["rule"].name)(**row["rule"].params) for key, row in rows_of.items()}
    names = list(ref_task.eval_regions)
    per_case = []
    for i, case in enumerate(ref_task.val):
        leaf = {k: inferers[k](torch.from_numpy(tasks[k].val[i].image)[None].to(device), models[k]).float().cpu()
                for k in dict.fromkeys(leaves)}

        def probs(key: str) -> torch.Tensor:
            return leaf[key] if key not in rows_of else rules[key]([probs(m) for m in rows_of[key]["of"]], output)

        pred = ref_task.merge(regions_of(probs(c["key"]), output))
        ref = ref_task.merge(torch.from_numpy(case.label)[None].float())
        per_case.append(case_metrics(case.id, pred, ref, names))
    final = summarise_cases(per_case, names)
    per_case = final.pop("per_case")
    return {**final, **combined_cost([costs[k] for k in leaves]), "members": float(len(leaves))}, per_case

