"""Checks of a study's components against the registries: names (with "did you mean"), the
factories' signatures and types, and the values a factory refuses (the check it registered),
before anything runs. No recipe component is built here; the model is built once per
architecture by the runner's cost check (``harness.study.check_costable``)."""
from __future__ import annotations

import inspect
import re

from harness.config.schema import ConfigError, DataCfg, ModelCfg, StudyCfg, TrainCfg
from harness.registry import DATASETS, MODELS, UnknownNameError, check_types


def check_names(study: StudyCfg) -> None:
    """The study's registered names exist (its plugins imported): dataset, model, failure rule,
    recipe components, and each claim's metric in the catalogue (``harness.metrics``)."""
    for reg, name, field in ((DATASETS, study.data.dataset, "data.dataset"), (MODELS, study.model.name, "model.name")):
        try:
            reg.get(name, field=field)
        except UnknownNameError as e:
            raise ConfigError(str(e)) from None
    from harness.registry import TRAINING_FAILURES

    try:
        TRAINING_FAILURES.check_params(study.failed_to_train.name, study.failed_to_train.params, "failed_to_train",
                                       ("trials",))
    except UnknownNameError as e:
        raise ConfigError(str(e)) from None
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None
    check_train(study.train, "train")
    check_claim_metrics(study)


def check_claim_metrics(study: StudyCfg) -> None:
    """Each claim's metric is catalogued (did you mean), and a ratio claim's is an exact cost."""
    from harness.metrics import exact_names, metric

    for i, claim in enumerate(study.claims):
        try:
            m = metric(claim.metric, field=f"claims[{i}].metric")
        except UnknownNameError as e:
            raise ConfigError(str(e)) from None
        if claim.measure == "ratio" and not m.exact:
            raise ConfigError(f"claims[{i}].metric: measure: ratio is for an exact cost, one of "
                              f"{', '.join(exact_names())}; got {claim.metric!r}")


def check_train(train: TrainCfg, where: str) -> None:
    """Every component of the recipe exists, takes the parameters given (names and types
    against its factory's signature) and holds values its factory accepts (the check it
    registered, with the arguments a trial injects). Nothing is built: ``train.py`` builds
    each component once, in the trial.
    """
    from harness import inferers, losses, optim
    from harness.data import transforms
    from harness.registry import (AUGMENTATIONS, CALLBACKS, INFERERS, LOSSES, OPTIMIZERS, OUTPUT_ADAPTERS, SCHEDULES,
                                  TARGETS)

    total = train.epochs * train.steps_per_epoch
    checks = [
        (LOSSES, train.loss, "train.loss", losses.INJECTED, {"output": train.output}),
        (OPTIMIZERS, train.optimizer, "train.optimizer", optim.OPTIMIZER_INJECTED,
         {"lr": train.lr, "weight_decay": train.weight_decay}),
        (SCHEDULES, train.schedule, "train.schedule", optim.SCHEDULE_INJECTED, {"total_steps": total}),
        (INFERERS, train.inferer, "train.inferer", inferers.INJECTED,
         {"patch": list(train.patch), "batch_size": train.batch_size, "output": train.output}),
        (OUTPUT_ADAPTERS, train.outputs, "train.outputs", (), {}),
    ]
    checks += [(AUGMENTATIONS, a, f"train.augment[{i}]", transforms.AUGMENT_INJECTED, {"keys": ["image", "label"]})
               for i, a in enumerate(train.augment)]
    checks += [(TARGETS, t, f"train.targets[{i}]", (), {}) for i, t in enumerate(train.targets)]
    checks += [(CALLBACKS, c, f"train.callbacks[{i}]", (), {}) for i, c in enumerate(train.callbacks)]
    prefix = "" if where == "train" else f"{where}: "
    for reg, spec, field, injected, context in checks:
        try:
            reg.check_params(spec.name, spec.params, field, injected)
            reg.check_values(spec.name, spec.params, context)
        except UnknownNameError as e:
            raise ConfigError(f"{prefix}{e}") from None
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"{prefix}{field} ({spec.name}): {e}") from None
    if train.deep_supervision is not None:
        returns = LOSSES.returns(train.loss.name)
        if not (inspect.isclass(returns) and issubclass(returns, losses.SegLoss)):
            raise ConfigError(f"{prefix}train.deep_supervision: loss {train.loss.name!r} is not a criterion on the "
                              f"segmentation (its factory does not return a SegLoss), so it cannot be applied per head")
    # A target writes batch[key]: its ``key`` parameter, else its factory's default.
    target_keys = [t.params.get("key", _default(TARGETS.get(t.name), "key")) for t in train.targets]
    clash = [k for k in target_keys if k in ("image", "label") or target_keys.count(k) > 1]
    if clash:
        raise ConfigError(f"{prefix}train.targets: output keys {sorted(set(clash))} clash (with image/label or each other)")


def _default(factory, name: str):
    p = inspect.signature(factory).parameters.get(name)
    return None if p is None or p.default is inspect.Parameter.empty else p.default


def check_exclusive(data: DataCfg, where: str) -> None:
    """``train.output: softmax`` needs regions that never overlap (one class per voxel)."""
    task = DATASETS.get(data.dataset)(**data.params)
    if not task.exclusive:
        raise ConfigError(f"{where}: train.output: softmax needs mutually exclusive regions, but {task.name}'s "
                          f"regions {list(task.regions)} overlap; use sigmoid")


def check_patch_fits(data: DataCfg, patch: list[int], where: str) -> None:
    """A synthetic volume's ``shape`` is known before any case exists: a patch larger than it
    would be zero-padded in every crop, which no paper does; refuse it."""
    factory = DATASETS.get(data.dataset)
    default = inspect.signature(factory).parameters.get("shape")
    shape = data.params.get("shape", default.default if default is not None else None)
    if shape is None or shape is inspect.Parameter.empty:
        return  # a folder: volumes differ per case, and padding a small one is the norm (nnU-Net)
    over = [f"{'DHW'[i]} {p} > {s}" for i, (p, s) in enumerate(zip(patch, shape)) if p > s]
    if over:
        raise ConfigError(f"{where}: train.patch {list(patch)} is larger than the synthetic volume "
                          f"data.shape {list(shape)} ({', '.join(over)}); every crop would be zero-padded. "
                          f"Use a patch of at most the volume")


def check_data(data: DataCfg) -> None:
    """Unknown data parameters and impossible values fail here; no data is generated or read."""
    factory = DATASETS.get(data.dataset, field="data.dataset")
    allowed = list(inspect.signature(factory).parameters)
    for k in data.params:
        if k not in allowed:
            raise ConfigError(str(UnknownNameError(f"parameter of data set {data.dataset!r}", k, allowed,
                                                   "data.params")))
    try:
        check_types(factory, data.params, "data.params")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        factory(**data.params)  # tasks load lazily: this only validates
    except (ValueError, TypeError) as e:
        raise ConfigError(f"data: {e}") from None


def check_model(model: ModelCfg, where: str) -> None:
    """The model's parameters against its factory's signature and types: unknown names get
    "did you mean", and what a trial injects (channels, ``output``) may not be set. Nothing is
    built (``build_checked_model`` builds it, once per architecture, before training)."""
    cls = MODELS.get(model.name, field="model.name")
    allowed = [n for n in inspect.signature(cls).parameters if n != "self"]
    for k in model.params:
        if k in ("in_channels", "out_channels"):
            raise ConfigError(f"{where}: model.params.{k} is set by the data set (its channels and regions); remove it")
        if k == "output":
            raise ConfigError(f"{where}: model.params.output is set from train.output; remove it")
        if k == "cpu_conv_route":
            raise ConfigError(f"{where}: model.params.cpu_conv_route: a training setting; write train.cpu_conv_route")
        if k not in allowed:
            raise ConfigError(str(UnknownNameError(f"parameter of model {model.name!r}", k, allowed,
                                                   f"{where}: model.params")))
    try:
        check_types(cls, model.params, f"{where}: model.params")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def build_checked_model(model: ModelCfg, patch: list[int], where: str, output: str = "sigmoid",
                        in_channels: int | None = None, out_channels: int | None = None):
    """Build the model with the arguments a trial injects (the data set's channels, the patch,
    the output activation): the values its factory refuses (impossible settings, a patch its
    strides or groups do not divide) are a ConfigError naming ``where``, before anything runs.
    A factory that requires its channels (MONAI's nets) builds as in a trial."""
    check_model(model, where)
    cls = MODELS.get(model.name, field="model.name")
    allowed = [n for n in inspect.signature(cls).parameters if n != "self"]
    params = dict(model.params)
    if "input_size" in allowed:  # set from the patch unless the study gives it (harness.models.build_model)
        params.setdefault("input_size", list(patch))
    if "output" in allowed:
        params["output"] = output
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if name in allowed and value is not None:
            params[name] = value
    try:
        net = cls(**params)
        if hasattr(net, "check_input"):
            net.check_input(patch)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None
    except ImportError as e:  # MONAI's OptionalImportError too (UNETR without einops)
        raise ConfigError((f"{where}: " if where else "") + missing_package(e)) from None
    return net


def missing_package(e: ImportError) -> str:
    """An import failure as what to install: "needs the package einops: pip install einops"."""
    missing = re.search(r"No module named '(\w+)", str(e))
    if missing:
        return f"needs the package {missing.group(1)}: pip install {missing.group(1)}"
    return f"cannot import what it needs: {(str(e).strip().splitlines() or [type(e).__name__])[0]}"
