"""Pareto ranking and hypervolume of objective vectors (``harness search``'s early stopping
and its comparison of search strategies). Each vector holds one value per objective; ``modes``
says whether each is maximised ("max") or minimised ("min")."""
from __future__ import annotations

import numpy as np


def _losses(values, modes: list[str]):
    """Objective vectors as losses (a maximised metric negated): smaller is better in each."""
    return np.asarray(values, dtype=float).reshape(len(values), len(modes)) * np.array(
        [-1.0 if m == "max" else 1.0 for m in modes])


def promotion_order(values: list[list[float]], modes: list[str]) -> list[int]:
    """Indices of ``values`` (one objective vector each) best first: by non-domination rank, ties
    by crowding distance, larger first (NSGA-II's order, Deb et al. 2002, Sec. III; what MO-ASHA
    promotes by). One objective: plain sorting."""
    loss = _losses(values, modes)
    left, order = list(range(len(loss))), []
    while left:
        front = [i for i in left if not any((loss[j] <= loss[i]).all() and (loss[j] < loss[i]).any() for j in left)]
        crowd = dict.fromkeys(front, 0.0)
        for k in range(loss.shape[1]):
            ranked = sorted(front, key=lambda i: loss[i, k])
            span = loss[ranked[-1], k] - loss[ranked[0], k]
            crowd[ranked[0]] = crowd[ranked[-1]] = np.inf
            for a, i, b in zip(ranked, ranked[1:-1], ranked[2:]):
                crowd[i] += (loss[b, k] - loss[a, k]) / span if span > 0 else 0.0
        order += sorted(front, key=lambda i: (-crowd[i], i))
        left = [i for i in left if i not in crowd]
    return order


def continues_at_rung(rung: dict, key, modes: list[str], cost_modes: list[str], reduction_factor: int,
                      band: float | None = None) -> bool:
    """Cost-aware successive halving's rule: does trial ``key`` go on past this rung?

    ``rung`` maps each trial that reached the rung to (values, costs): ``values`` its rung
    results for the objectives training changes (accuracy, in ``modes``), ``costs`` its exact,
    fidelity-free objectives (GMACs, parameters, in ``cost_modes``), known before it trained.
    Only a trial that costs no more in every cost can dominate it; with ``band``, only those
    within that factor of its cost count (``peers``, itself included): a net several times
    cheaper learns faster over the first steps, so its rung Dice says little about a costlier
    net's final one. A trial goes on while it ranks in the top ceil(n / eta) of its n peers by
    ``promotion_order`` on the rung values. A trial no seen trial matches in cost (the cheapest
    of its band so far, or the first) goes on: nothing yet says it is dominated; a non-dominated
    newcomer always goes on. MO-ASHA
    (Schmucker et al. 2021) ranks cost with the rung's accuracy instead, so that the exact cost
    decides a rung that a few validation cases after a few steps should."""
    import math

    values, costs = rung[key]
    sign = [1.0 if m == "min" else -1.0 for m in cost_modes]
    peers = [k for k, (_, c) in rung.items() if all(s * a <= s * b for s, a, b in zip(sign, c, costs))
             and (band is None or all(max(abs(a), abs(b)) <= band * min(abs(a), abs(b)) for a, b in zip(c, costs)))]
    order = promotion_order([rung[k][0] for k in peers], modes)
    return peers.index(key) in order[:math.ceil(len(peers) / reduction_factor)]


def hypervolume(values: list[list[float]], modes: list[str], reference: list[float]) -> float:
    """The objective space dominated by ``values`` and bounded by ``reference`` (in the
    objectives' own units; points no better than the reference in every objective add
    nothing). Optuna's WFG algorithm (``harness.compat.hypervolume``)."""
    from harness import compat

    if not len(values):
        return 0.0
    loss, ref = _losses(values, modes), _losses([reference], modes)[0]
    loss = loss[(loss < ref).all(axis=1)]
    return compat.hypervolume(loss, ref) if len(loss) else 0.0


def non_dominated(values: list[list[float]], modes: list[str]) -> list[int]:
    """Indices of the vectors no other vector dominates (the Pareto front; equal vectors all stay)."""
    loss = _losses(values, modes) if len(values) else np.zeros((0, len(modes)))
    return [i for i in range(len(loss))
            if not any((loss[j] <= loss[i]).all() and (loss[j] < loss[i]).any() for j in range(len(loss)))]


def constraint_values(bounds: list[tuple[str, float | None, float | None]], metrics: dict[str, float]) -> list[float]:
    """Optuna's constraint convention for (metric, min, max) bounds: one value per bound, at most
    0 when it holds (``min - value``, ``value - max``); a missing metric counts as violated (1)."""
    out = []
    for metric, lo, hi in bounds:
        v = metrics.get(metric)
        if v is None or v != v:
            out.append(1.0)
        else:
            out.append(max(lo - v if lo is not None else -np.inf, v - hi if hi is not None else -np.inf))
    return [float(x) for x in out]


def read_constraints(trial) -> list[float]:
    """Optuna's ``constraints_func``: the values the searcher stored on the trial (user attribute
    ``constraints``); a trial without them (no final result) counts as infeasible."""
    return list(trial.user_attrs.get("constraints") or [1.0])


def feasible(trial) -> bool:
    return all(v <= 0 for v in read_constraints(trial)) if "constraints" in trial.user_attrs else True
