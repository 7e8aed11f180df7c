"""A study's rows: its explicit variants, its grid's product, the landscape's variants and the
combined rows, and the dict merge (``merge``) that layers scales, tasks and variants."""
from __future__ import annotations

import copy
import itertools
from typing import Any

from harness.config.schema import ConfigError, StudyCfg, VariantCfg
from harness.registry import COMBINERS, MODELS, UnknownNameError


def merge(base: dict, over: dict) -> dict:
    """``over`` on ``base``: mappings merge, other values replace; ``key+: [...]`` appends to the
    list ``key`` (a variant adding a callback to the scale's, e.g. BraTS 2020's patient removal
    beside the scale-sized self-ensembling)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(k, str) and k.endswith("+"):
            key, prev = k[:-1], out.get(k[:-1], [])
            if not isinstance(v, list) or not isinstance(prev, list):
                raise ConfigError(f"{k}: appends a list to the list {key!r}; got {v!r} onto {prev!r}")
            out[key] = prev + copy.deepcopy(v)
        else:
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def variants(study: StudyCfg) -> list[VariantCfg]:
    """Explicit variants, then the grid's product (names joined by '-', tags = axis labels).

    A grid option is model parameters plus optional reserved keys: ``train`` (overrides),
    ``model`` (another registered model's name) and ``task`` (one of the study's tasks).
    """
    out = list(study.variants)
    if study.grid:
        axes = list(study.grid)
        for combo in itertools.product(*(study.grid[a].items() for a in axes)):
            params: dict[str, Any] = {}
            train: dict[str, Any] = {}
            picked: dict[str, Any] = {}
            for _, p in combo:
                p = dict(p or {})
                train = merge(train, p.pop("train", {}))
                picked.update({k: p.pop(k) for k in ("model", "task") if k in p})
                params = merge(params, p)
            out.append(VariantCfg(name="-".join(label for label, _ in combo), params=params, train=train,
                                  tags={a: label for a, (label, _) in zip(axes, combo)}, **picked))
    if study.landscape:
        # Every registered family joins by registration alone, through its class's ``landscape`` dict.
        for model_name in MODELS.names():
            for label, params in getattr(MODELS.get(model_name), "landscape", {"default": {}}).items():
                out.append(VariantCfg(name=f"{model_name}.{label}", model=model_name, params=params,
                                      tags={"family": model_name, "config": label}))
    names = [v.name for v in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"variants: duplicate variant names {sorted(dup)}")
    for v in out:
        if v.task is not None and v.task not in study.tasks:
            raise ConfigError(str(UnknownNameError(f"task of variant {v.name!r}", v.task, list(study.tasks), "task")))
    return out


def table_rows(study: StudyCfg) -> list[VariantCfg]:
    """The rows a report shows and claims name: the trained variants, then the combined rows
    (as variants with their name and tags only). Each combined row's members must come before
    it, its rule must be registered with valid parameters, and no name may repeat."""
    vs = variants(study)
    names = [v.name for v in vs]
    for i, c in enumerate(study.combined):
        where = f"combined[{i}]"
        if c.name in names:
            raise ConfigError(f"{where}.name: {c.name!r} is already a variant or combined row")
        for m in c.of:
            if m not in names:
                raise ConfigError(str(UnknownNameError("variant (or earlier combined row)", m, names, f"{where}.of")))
        if len(set(c.of)) != len(c.of):
            raise ConfigError(f"{where}.of: {c.of} names a member twice")
        try:
            COMBINERS.check_params(c.rule.name, c.rule.params, f"{where}.rule")
        except (UnknownNameError, ValueError) as e:
            raise ConfigError(str(e)) from None
        names.append(c.name)
        vs = [*vs, VariantCfg(name=c.name, tags=c.tags)]
    return vs
