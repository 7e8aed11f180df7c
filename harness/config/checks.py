"""Checks of a study's components against the registries: names (with "did you mean"), the
factories' signatures and types, and the values a factory refuses (components are built once on
dummies, the model with the arguments a trial injects), before anything runs."""
from __future__ import annotations

import inspect

from harness.config.schema import ConfigError, DataCfg, ModelCfg, StudyCfg, TrainCfg
from harness.registry import DATASETS, MODELS, UnknownNameError, check_types


def _check_names(study: StudyCfg) -> None:
    for reg, name, field in ((DATASETS, study.data.dataset, "data.dataset"), (MODELS, study.model.name, "model.name")):
        try:
            reg.get(name, field=field)
        except UnknownNameError as e:
            raise ConfigError(str(e)) from None
    check_train(study.train, "train")


def check_train(train: TrainCfg, where: str) -> None:
    """Every component of the recipe exists, takes the parameters given and builds (on dummies).

    Nothing is trained or read: the loss, optimiser (over one dummy parameter), schedule,
    augmentations, targets, inferer and callbacks are constructed once and thrown away.
    """
    import torch

    from harness import inferers, losses, optim
    from harness.data import transforms
    from harness.registry import AUGMENTATIONS, CALLBACKS, INFERERS, LOSSES, OPTIMIZERS, SCHEDULES, TARGETS

    dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    checks = [
        (LOSSES, train.loss, "train.loss", losses.INJECTED,
         lambda: losses.build_loss(train.loss, train.output, train.deep_supervision)),
        (OPTIMIZERS, train.optimizer, "train.optimizer", optim.OPTIMIZER_INJECTED,
         # param_groups match names of the real model: checked when the trial builds it
         lambda: optim.build_optimizer(torch.nn.Linear(1, 1), train.model_copy(update={"param_groups": []}))),
        (SCHEDULES, train.schedule, "train.schedule", optim.SCHEDULE_INJECTED,
         lambda: optim.build_schedule(dummy, train, total_steps=train.epochs * train.steps_per_epoch)),
        (INFERERS, train.inferer, "train.inferer", inferers.INJECTED,
         lambda: inferers.build_inferer(train.inferer, train.patch, train.batch_size, train.output)),
    ]
    checks += [(AUGMENTATIONS, a, f"train.augment[{i}]", transforms.AUGMENT_INJECTED,
                lambda a=a: AUGMENTATIONS.get(a.name)(keys=["image", "label"], **a.params))
               for i, a in enumerate(train.augment)]
    checks += [(TARGETS, t, f"train.targets[{i}]", (), lambda t=t: TARGETS.get(t.name)(**t.params))
               for i, t in enumerate(train.targets)]
    checks += [(CALLBACKS, c, f"train.callbacks[{i}]", (), lambda c=c: CALLBACKS.get(c.name)(**c.params))
               for i, c in enumerate(train.callbacks)]
    prefix = "" if where == "train" else f"{where}: "
    built = []
    for reg, spec, field, injected, build in checks:
        try:
            reg.check_params(spec.name, spec.params, field, injected)
            built.append(build())
        except UnknownNameError as e:
            raise ConfigError(f"{prefix}{e}") from None
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"{prefix}{field} ({spec.name}): {e}") from None
    target_keys = [x.key for x, (reg, *_) in zip(built, checks) if reg is TARGETS]
    clash = [k for k in target_keys if k in ("image", "label") or target_keys.count(k) > 1]
    if clash:
        raise ConfigError(f"{prefix}train.targets: output keys {sorted(set(clash))} clash (with image/label or each other)")


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


def check_model(model: ModelCfg, patch: list[int], where: str, output: str = "sigmoid",
                in_channels: int | None = None, out_channels: int | None = None):
    """Build the model once, with the arguments a trial injects (the data set's channels, the
    patch, the output activation): unknown parameters and impossible settings fail here, not
    in a trial, and a factory that requires its channels (MONAI's nets) builds as in a trial."""
    cls = MODELS.get(model.name, field="model.name")
    sig = inspect.signature(cls)
    allowed = [n for n in sig.parameters if n != "self"]
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
        raise ConfigError(f"{where}: {e}") from None
    return net
