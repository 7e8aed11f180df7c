"""A study at a scale -> trial specs (scale <- [task] <- variant, x folds x seeds) and their
hashes: a trial's identity for ``--resume`` and the report, and the combined rows' keys."""
from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any

from pydantic import BaseModel, ValidationError

from harness.config.checks import check_data, check_exclusive, check_model, check_patch_fits, check_train
from harness.config.expand import merge, table_rows, variants
from harness.config.schema import (ConfigError, CostCfg, DataCfg, ModelCfg, StudyCfg, TrainCfg, TrialSpec, VariantCfg,
                                   format_validation)
from harness.registry import DATASETS, MODELS, UnknownNameError


def combined_keys(study: StudyCfg, specs: list[TrialSpec]) -> list[dict[str, Any]]:
    """The combined rows' evaluations at the trials ``specs``: per row and (seed, fold), its
    ``key`` (as a trial key: ``name#s0``), the member ``keys`` and its ``hash`` (its rule and
    the members' hashes, so that a retrained member makes the row stale too)."""
    hashes = {s.key: spec_hash(s) for s in specs}
    suffix = {s.key: s.key[len(s.variant):] for s in specs}
    by_variant: dict[str, list[str]] = {}
    for s in specs:
        by_variant.setdefault(s.variant, []).append(suffix[s.key])
    seeds = {s.key: (s.seed, s.fold) for s in specs}
    out = []
    for c in study.combined:
        for sfx in by_variant.get(c.of[0], []):
            keys = [f"{m}{sfx}" for m in c.of]
            if not all(k in hashes for k in keys):
                continue
            key = f"{c.name}{sfx}"
            hashes[key] = config_hash([c.rule.model_dump(), [hashes[k] for k in keys]])
            seeds[key] = seeds[keys[0]]
            by_variant.setdefault(c.name, []).append(sfx)
            out.append({"key": key, "variant": c.name, "of": keys, "hash": hashes[key], "seed": seeds[key][0],
                        "fold": seeds[key][1], "rule": c.rule, "tags": c.tags})
    return out


def config_hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def spec_hash(spec: BaseModel) -> str:
    """A trial's identity: its settings that differ from the schema's defaults.

    A field added to the schema later, with a default, leaves earlier trials' hashes as they
    were, so their MLflow runs still count for ``report`` and ``--resume``. (Changing a
    default's *value* is the one change that must come with new runs.)
    """
    return config_hash(spec.model_dump(mode="json", exclude_defaults=True))


def _scale_parts(study: StudyCfg, scale: str):
    if scale not in study.scales:
        raise ConfigError(f"--scale: {scale!r} is not defined; allowed: {sorted(study.scales)}")
    sc = study.scales[scale]
    try:
        base_train = merge(study.train.model_dump(), sc.train)
        check_train(TrainCfg.model_validate(base_train), f"scales.{scale}")
    except ValidationError as e:
        raise ConfigError(format_validation(e, f"scales.{scale}", "train", TrainCfg)) from None
    try:
        cost = CostCfg.model_validate(merge(study.cost.model_dump(), sc.cost))
    except ValidationError as e:
        raise ConfigError(format_validation(e, f"scales.{scale}", "cost", CostCfg)) from None
    data = DataCfg(dataset=study.data.dataset, params=merge(study.data.params, sc.data))
    return sc, base_train, cost, data


def resolve_variant(study: StudyCfg, scale: str, v: VariantCfg, seeds: int = 1, folds: int = 1,
                    check: bool = True) -> list[TrialSpec]:
    """Trial specs of one variant at ``scale``: study <- scale <- [task] <- variant; with ``check``
    the model's parameters and the recipe's components are checked (nothing is built).

    ``folds`` > 1 repeats the variant on each fold of a data set that has folds (one read from
    a folder); a synthetic set has none and keeps one split, its spread over seeds only.
    """
    _, base_train, cost, data = _scale_parts(study, scale)
    if v.task is not None:  # the task defines the data at this scale, and may adjust training (its patch)
        t = study.tasks[v.task][scale]
        data = DataCfg(dataset=t.dataset, params=t.params)
        base_train = merge(base_train, t.train)
    try:
        train = TrainCfg.model_validate(merge(base_train, v.train))
    except ValidationError as e:
        raise ConfigError(format_validation(e, f"variant {v.name!r} train", model=TrainCfg)) from None
    if check and v.train:
        check_train(train, f"variant {v.name!r}")
    if v.model is None or v.model == study.model.name:
        model = ModelCfg(name=study.model.name,
                         params=merge(merge(study.model.params, study.scales[scale].model), v.params))
    else:  # another family: the study's model parameters are not its parameters
        try:
            MODELS.get(v.model, field=f"variant {v.name!r}: model")
        except UnknownNameError as e:
            raise ConfigError(str(e)) from None
        model = ModelCfg(name=v.model, params=v.params)
    if check:
        check_model(model, f"variant {v.name!r}")
        check_patch_fits(data, train.patch, f"variant {v.name!r}")
        if train.output == "softmax":
            check_exclusive(data, f"variant {v.name!r}")
    if folds > 1 and "fold" in inspect.signature(DATASETS.get(data.dataset)).parameters:
        if "fold" in data.params:
            raise ConfigError(f"variant {v.name!r}: data.fold is set to {data.params['fold']}; "
                              f"remove it to run all {folds} folds")
        runs = [(f"#f{k}s{s}", k, DataCfg(dataset=data.dataset, params={**data.params, "folds": folds, "fold": k}))
                for k in range(folds) for s in range(seeds)]
        seeds_of = [s for _ in range(folds) for s in range(seeds)]
    else:
        runs, seeds_of = [(f"#s{s}", None, data) for s in range(seeds)], list(range(seeds))
    return [TrialSpec(study=study.name, scale=scale, key=f"{v.name}{suffix}", variant=v.name, tags=v.tags, seed=s,
                      fold=k, data=d, model=model, train=train, cost=cost, resources=study.resources,
                      plugins=study.plugins)
            for (suffix, k, d), s in zip(runs, seeds_of)]


def resolve(study: StudyCfg, scale: str, seeds: int | None = None, folds: int | None = None,
            check: bool = True) -> list[TrialSpec]:
    """Apply ``scale`` and expand variants x [folds x] seeds into trial specs, data checked.

    ``check=False`` skips the components' checks (the report only needs the specs' hashes).
    """
    sc, _, _, data = _scale_parts(study, scale)
    check_data(data)
    for name, per_scale in study.tasks.items():
        t = per_scale[scale]
        try:
            check_data(DataCfg(dataset=t.dataset, params=t.params))
        except (ConfigError, UnknownNameError) as e:
            raise ConfigError(f"tasks.{name}.{scale}: {e}") from None
    n_seeds = seeds or sc.seeds or study.seeds
    vs = variants(study)
    n_folds = folds or sc.folds or 1
    specs = [spec for v in vs for spec in resolve_variant(study, scale, v, n_seeds, n_folds, check=check)]
    known = [v.name for v in table_rows(study)]
    for vname in study.expected:
        if vname not in known:
            raise ConfigError(str(UnknownNameError("variant", vname, known, "expected")))
    return specs
