"""``Space``: a validated search space bound to its base study and scale."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any, Optional

from harness.config import (
    ConfigError,
    StudyCfg,
    TrialSpec,
    VariantCfg,
    merge,
    build_checked_model,
    import_plugins,
    load_study,
    load_yaml,
    resolve_variant,
)
from harness.metrics import metric
from harness.registry import DATASETS, MODELS, UnknownNameError
from harness.search.schema import Knob, SearchCfg, decode, encode


class Space:
    """A validated search space bound to its base study and scale."""

    def __init__(self, path: str | Path, scale: str | None = None, seed: int | None = None):
        """``scale``: another scale than the file's (``harness search --scale``); the search is
        then its own, named ``<name>-<scale>`` (journal, MLflow experiment, report folder).
        ``seed``: every strategy's sampler seed (``--seed``), the search then named
        ``<name>-seed<N>``: one repetition of a comparison of strategies (``seeds.md``)."""
        p = Path(path)
        self.cfg: SearchCfg = load_yaml(p, SearchCfg, "search space")
        self.family = self.cfg.name  # the repetitions of one search over seeds share it
        if scale is not None and scale != self.cfg.scale:
            self.cfg = self.cfg.model_copy(update={"scale": scale, "name": f"{self.cfg.name}-{scale}"})
            self.family = self.cfg.name
        if seed is not None:
            self.cfg = self.cfg.model_copy(update={
                "name": f"{self.cfg.name}-seed{seed}", "sampler": self.cfg.sampler.model_copy(update={"seed": seed}),
                "compare": [st.model_copy(update={"sampler": (st.sampler or self.cfg.sampler).model_copy(
                    update={"seed": seed})}) for st in self.cfg.compare]})
        self.study: StudyCfg = load_study(p.parent / self.cfg.study)
        self.base_params = {**self.study.model.params, **self.study.scales[self.cfg.scale].model}
        self.choices: dict[str, list[Any]] = {}
        self._exact: dict[str, dict[str, float]] = {}  # architecture -> its exact costs
        # Knobs asked only of some models: a define-by-run space, which ``auto`` gives to TPE.
        self.conditional = any(k.when is not None for k in self.cfg.knobs.values())
        if self.cfg.task is not None and self.cfg.task not in self.study.tasks:
            raise ConfigError(str(UnknownNameError("task", self.cfg.task, list(self.study.tasks), "task")))
        probe = resolve_variant(self.study, self.cfg.scale, VariantCfg(name="probe", task=self.cfg.task))[0]
        self.patch = probe.train.patch
        self.models = self._models()  # the models a trial can choose, the study's first
        n_stages = len(self.base_params.get("widths", [0] * 5))
        for name, knob in self.cfg.knobs.items():
            self._check_knob(name, knob, n_stages)
        for where, name in [("objectives", o.metric) for o in self.cfg.objectives] + [
                ("constraints", c.metric) for c in self.cfg.constraints]:
            try:
                metric(name, field=where)  # the catalogue (harness.metrics), a plugin's metrics too
            except UnknownNameError as e:
                raise ConfigError(str(e)) from None
        base = self.spec_for(self.cfg_default())  # the base point must build
        from harness.contract import out_channels

        task = DATASETS.get(base.data.dataset)(**base.data.params)  # lazy: channels and regions, no case read
        build_checked_model(base.model, base.train.patch, "the space's base point", base.train.output,
                            task.in_channels, out_channels=out_channels(len(task.regions), base.train.output))

    def _models(self) -> list[str]:
        """The study's model, then each registered model a knob's option chooses."""
        models = [self.study.model.name]
        for name, knob in self.cfg.knobs.items():
            for option in knob.choice or []:
                if isinstance(option, dict) and "model" in option:
                    try:
                        MODELS.get(option["model"], field=f"knobs.{name}: model")
                    except UnknownNameError as e:
                        raise ConfigError(str(e)) from None
                    if option["model"] not in models:
                        models.append(option["model"])
        return models

    def _check_knob(self, name: str, knob, n_stages: int) -> None:
        """A knob's ``when`` and options checked, and its choices kept (``groups.<stage>``: the
        spatial groups that divide the stage's feature size at the patch)."""
        if knob.when is not None:
            self._check_when(name, knob.when)
        if name.startswith("groups."):
            stage = int(name.split(".", 1)[1])
            if not 0 <= stage < n_stages:
                raise ConfigError(f"knobs.{name}: stage {stage} does not exist (0..{n_stages - 1})")
            size = [s // 2**stage for s in self.patch]
            opts = [list(g) for g in itertools.product(*[knob.values] * 3)] if knob.values else knob.choice
            valid = [g for g in opts if all(n % gi == 0 for n, gi in zip(size, g))]
            bad = [g for g in (knob.choice or []) if g not in valid]
            if bad:
                raise ConfigError(f"knobs.{name}: groups {bad} do not divide stage {stage + 1}'s feature size "
                                  f"{tuple(size)} at patch {self.patch}; allowed: divisors of each axis")
            if not valid:
                raise ConfigError(f"knobs.{name}: no combination of {knob.values} divides {tuple(size)}")
            self.choices[name] = valid
        elif knob.values is not None:
            raise ConfigError(f"knobs.{name}: 'values' is only for groups.<stage> knobs")
        elif knob.choice is not None:
            self.choices[name] = knob.choice

    def _check_when(self, name: str, when: dict[str, Any]) -> None:
        """``when``: ``model`` names models a knob chooses; any other key names a knob declared
        above this one, with a list of its options."""
        above = list(self.cfg.knobs)[:list(self.cfg.knobs).index(name)]
        for key, allowed in when.items():
            if key == "model":
                if not any(isinstance(o, dict) and "model" in o for k in self.cfg.knobs.values() if k.when is None
                           for o in k.choice or []):
                    raise ConfigError(f"knobs.{name}: 'when' needs a knob whose options choose a model")
                for m in [allowed] if isinstance(allowed, str) else allowed:
                    if m not in self.models:
                        raise ConfigError(str(UnknownNameError("model a knob chooses", m, self.models,
                                                               f"knobs.{name}.when.model")))
                continue
            if key not in above:
                raise ConfigError(str(UnknownNameError("knob declared above", key, above, f"knobs.{name}.when")))
            options = self.cfg.knobs[key].choice
            if options is None or not isinstance(allowed, list) or not allowed:
                raise ConfigError(f"knobs.{name}.when.{key}: give a list of {key}'s options (a choice knob); "
                                  f"got {allowed!r}")
            bad = [a for a in allowed if a not in options]
            if bad:
                raise ConfigError(f"knobs.{name}.when.{key}: {bad} are not options of {key} (its options: {options})")

    def active(self, name: str, config: dict[str, Any]) -> bool:
        """Whether a configuration asks knob ``name``: its ``when`` holds for the model chosen and
        the other knobs' draws in ``config`` (a knob not drawn holds none of its options)."""
        when = self.cfg.knobs[name].when or {}
        for key, allowed in when.items():
            if key == "model":
                if self.model_of(config) not in ([allowed] if isinstance(allowed, str) else allowed):
                    return False
            elif key not in config or decode(config[key]) not in allowed:
                return False
        return True

    def rungs(self) -> list[int]:
        """Epochs (from 1) at which the scheduler ranks trials (the base point's training length)."""
        return self.cfg.scheduler.rungs(self.spec_for(self.cfg_default()).train.epochs)

    def strategies(self) -> list[tuple[str, "Space"]]:
        """(Optuna study name, space) of the main search, then of each ``compare`` strategy: the
        same knobs, objectives and base study; its own sampler, scheduler and trial count."""
        out = [(self.cfg.name, self)]
        for st in self.cfg.compare:
            other = copy.copy(self)
            other.cfg = self.cfg.model_copy(update={
                "name": f"{self.cfg.name}.{st.name}", "compare": [],
                **{k: getattr(st, k) for k in ("sampler", "scheduler", "trials") if getattr(st, k) is not None}})
            out.append((other.cfg.name, other))
        return out

    def model_of(self, config: dict[str, Any]) -> str:
        """The model a configuration chose (an option with ``model``), else the study's."""
        for name, knob in self.cfg.knobs.items():
            v = decode(config[name]) if knob.when is None and name in config else None
            if isinstance(v, dict) and "model" in v:
                return v["model"]
        return self.study.model.name

    def _options(self, name: str) -> list[Any]:
        """A knob's options as Optuna holds them: every choice, or a range's two ends."""
        if name in self.choices:
            return [encode(c) for c in self.choices[name]]
        knob = self.cfg.knobs[name]
        return list(knob.uniform or knob.loguniform or knob.integer)

    def _complete(self, config: dict[str, Any]) -> dict[str, Any]:
        """``config``'s unconditional knobs (the first option where unset), then, in the file's
        order, each conditional knob its draws so far ask (the first option where unset)."""
        out = {n: config.get(n, self._options(n)[0]) for n, k in self.cfg.knobs.items() if k.when is None}
        for n, k in self.cfg.knobs.items():
            if k.when is not None and self.active(n, out):
                out[n] = config.get(n, self._options(n)[0])
        return out

    def cfg_default(self) -> dict[str, Any]:
        """The first option (or the low end) of every knob the default model asks."""
        return self._complete({})

    def option_points(self) -> list[tuple[str, Any, dict[str, Any]]]:
        """(knob, option, configuration) for every option of every knob: the default point with
        that one option set; a conditional knob under the first option that chooses each of its
        models, with the first option its ``when`` lists of each knob it depends on."""
        choosing = {}  # model -> a configuration that chooses it
        for name, knob in self.cfg.knobs.items():
            for option in self._options(name) if knob.when is None else []:
                config = self._complete({name: option})
                choosing.setdefault(self.model_of(config), config)
        points = []
        for name, knob in self.cfg.knobs.items():
            when = knob.when or {}
            models = when.get("model", list(choosing))
            # Under each model it belongs to, with the first listed option of each knob it depends on.
            bases = [{**choosing[m], **{k: encode(a[0]) for k, a in when.items() if k != "model"}}
                     for m in ([models] if isinstance(models, str) else models) if m in choosing]
            if knob.when is not None:
                bases = [b for b in bases if name in self._complete({**b, name: self._options(name)[0]})]
                if not bases:
                    raise ConfigError(f"knobs.{name}: no point of the space asks it (its 'when' {when} holds under "
                                      f"no model with the first options it lists)")
            points += [(name, option, self._complete({**base, name: option}))
                       for base in (bases if knob.when is not None else [{}]) for option in self._options(name)]
        return points

    def check_options(self) -> list[str]:
        """Run every option of every knob once, as its trials would, through the run's pre-flight
        (``harness.study.preflight``: built, an evaluation and a training pass, costed), before
        any training.
        An option that cannot be built is a ConfigError naming the knob, the option and the error;
        with ``on_invalid: skip`` a choice's bad option leaves the space instead, and the returned
        warnings say which."""
        from harness.study import preflight

        seen, bad, computes = {}, [], {}
        for name, option, config in self.option_points():
            try:
                spec = self.spec_for(config)
                key = spec.model_dump_json(include={"model", "data", "train", "cost"})
                if key not in seen:
                    task = DATASETS.get(spec.data.dataset)(**spec.data.params)  # lazy: no case is read
                    preflight(spec, task)  # the run's pre-flight: built, run, costed
                    seen[key] = _function_of(key, spec, task)
                base = json.dumps({k: v for k, v in config.items() if k != name}, sort_keys=True, default=str)
                computes.setdefault((name, base), []).append((option, spec, seen[key]))
            except Exception as e:  # noqa: BLE001  whatever the factory or the forward pass raises
                first = (str(e).strip().splitlines() or [type(e).__name__])[0].removeprefix(": ")
                bad.append((name, option, first[:300]))
        if bad and self.cfg.on_invalid == "refuse":
            name, option, why = bad[0]
            more = f" (and {len(bad) - 1} more option(s))" if len(bad) > 1 else ""
            raise ConfigError(f"knobs.{name}: option {decode(option)!r} cannot be built: {why}{more}; remove it, "
                              f"or set on_invalid: skip to leave such options out of the space")
        warnings = []
        for name, option, why in bad:
            if name not in self.choices:
                raise ConfigError(f"knobs.{name}: the range's end {option!r} cannot be built: {why}; narrow the range")
            self.choices[name] = [c for c in self.choices[name] if encode(c) != option]
            if not self.choices[name]:
                raise ConfigError(f"knobs.{name}: no option can be built (the last: {why})")
            warnings.append(f"warning: knobs.{name}: option {decode(option)!r} left out (on_invalid: skip): {why}")
        return warnings + _same_functions(computes)

    def define_by_run(self, trial) -> None:
        """Optuna's define-by-run space: the unconditional knobs, then those of the chosen model."""
        def ask(name: str, knob: Knob):
            if name in self.choices:
                return trial.suggest_categorical(name, [encode(c) for c in self.choices[name]])
            if knob.uniform:
                return trial.suggest_float(name, *knob.uniform)
            if knob.loguniform:
                return trial.suggest_float(name, *knob.loguniform, log=True)
            return trial.suggest_int(name, *knob.integer)

        config = {n: ask(n, k) for n, k in self.cfg.knobs.items() if k.when is None}
        for name, knob in self.cfg.knobs.items():
            if knob.when is not None and self.active(name, config):
                config[name] = ask(name, knob)

    def distributions(self, config: dict[str, Any]) -> dict[str, Any]:
        """Optuna's distribution of each knob in ``config`` (as ``define_by_run`` asks it)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        out = {}
        for name in config:
            knob = self.cfg.knobs[name]
            if name in self.choices:
                out[name] = CategoricalDistribution([encode(c) for c in self.choices[name]])
            elif knob.integer:
                out[name] = IntDistribution(*knob.integer)
            else:
                out[name] = FloatDistribution(*(knob.uniform or knob.loguniform), log=knob.loguniform is not None)
        return out

    def config_of(self, spec: TrialSpec) -> Optional[dict[str, Any]]:
        """The point of the space whose trial is ``spec`` (the base study's trial, say), or None.

        Each knob's candidates are the options whose every setting ``spec`` has; a combination
        counts only if the search would train exactly ``spec`` from it (all but its name)."""
        missing = object()
        train = spec.train.model_dump()

        def has(key: str, v: Any) -> bool:
            if key == "model":
                return spec.model.name == v
            if key.startswith("train."):
                node: Any = train
                for part in key.split(".")[1:]:
                    node = node.get(part, missing) if isinstance(node, dict) else missing
                return node == v
            return spec.model.params.get(key, missing) == v

        def candidates(name: str) -> list[Any]:
            knob = self.cfg.knobs[name]
            if name.startswith("groups."):
                got = (spec.model.params.get("groups") or [None] * 99)[int(name.split(".", 1)[1])]
                return [encode(g) for g in self.choices[name] if g == got]
            if name in self.choices:
                return [encode(o) for o in self.choices[name]
                        if (all(has(k, x) for k, x in o.items()) if isinstance(o, dict) else has(name, o))]
            v = spec.model.params.get(name, missing)
            lo, hi = knob.uniform or knob.loguniform or knob.integer
            return [v] if isinstance(v, (int, float)) and lo <= v <= hi else []

        model = spec.model.name
        names = list(self.cfg.knobs)
        ident = {"key", "variant", "tags"}
        # A conditional knob may also be not asked (``missing``): kept only where that is so.
        for combo in itertools.product(*[candidates(n) + ([missing] if k.when is not None else [])
                                         for n, k in self.cfg.knobs.items()]):
            drawn = {n: v for n, v in zip(names, combo) if v is not missing}
            config = self._complete(drawn)
            if config != drawn or self.model_of(config) != model:
                continue
            try:
                ours = self.spec_for(config)
            except ConfigError:
                continue
            if ours.model_dump(exclude=ident) == spec.model_dump(exclude=ident):
                return config
        return None

    def params(self, config: dict[str, Any]) -> dict[str, Any]:
        """Sampled knobs -> model parameters (``groups.<i>`` set stage i of the groups list)."""
        return self.overrides(config)[0]

    def overrides(self, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Sampled knobs -> (model parameters, training overrides).

        ``groups.<i>`` sets stage i of the groups list; ``train.<path>`` sets a training field
        (``train.loss.params.lam``); a choice whose options are mappings sets each key of the
        option drawn (``{mapping: true, attention: false}``: parameters that only go together).
        """
        params: dict[str, Any] = {}
        train: dict[str, Any] = {}
        groups = [list(g) for g in self.base_params.get("groups") or [[1, 1, 1]] * len(
            self.base_params.get("widths", [0] * 5))]

        def put(key: str, v: Any) -> None:
            if key.startswith("train."):
                *path, last = key.split(".")[1:]
                node = train
                for part in path:
                    node = node.setdefault(part, {})
                node[last] = v
            else:
                params[key] = v

        for name in self.cfg.knobs:
            if name not in config:  # a conditional knob another model's trial was not asked
                continue
            v = decode(config[name])
            if name.startswith("groups."):
                groups[int(name.split(".", 1)[1])] = v
                params["groups"] = groups
            elif isinstance(v, dict):
                for k, x in v.items():
                    if k != "model":  # the chosen model: ``model_of``
                        put(k, x)
            else:
                put(name, v)
        return params, merge(self.cfg.train, train)

    def exact_costs(self, config: dict[str, Any]) -> dict[str, float]:
        """The configuration's exact costs (``harness.metrics``: parameters, GMACs, MACs per voxel,
        size), counted here once per architecture as its trial's own final count is
        (``harness.train.cost_as_run``, the measured figures off): the scheduler ranks a rung
        knowing them, and a trial need not measure its cost before it trains."""
        from harness.metrics import is_exact
        from harness.train import cost_as_run, trial_model

        spec = self.spec_for(config)
        key = spec.model_dump_json(include={"model", "data", "train", "cost"})
        if key not in self._exact:
            task = DATASETS.get(spec.data.dataset)(**spec.data.params)  # lazy: channels and regions only
            spec = spec.model_copy(update={"cost": spec.cost.model_copy(update={"latency": False})})
            cost = cost_as_run(spec, spec.train, task.in_channels, [trial_model(spec, task)], train_memory=False)
            self._exact[key] = {k: float(v) for k, v in cost.items() if is_exact(k)}
        return self._exact[key]

    def spec_for(self, config: dict[str, Any], name: str = "default") -> TrialSpec:
        import_plugins(self.study.plugins)  # on a Ray worker too, before the model is checked
        params, train = self.overrides(config)
        model = self.model_of(config)
        # Another family's trial takes only its own option's and knobs' parameters (resolve_variant).
        return resolve_variant(self.study, self.cfg.scale, VariantCfg(
            name=name, model=None if model == self.study.model.name else model, params=params, train=train,
            task=self.cfg.task))[0]


_OUTPUTS: dict = {}  # _function_of's output by configuration key, once per process (as the pre-flight)


def _function_of(key: str, spec, task):
    """The net's output, in evaluation, on a fixed input at the pre-flight's shrunk patch, with
    its weights from a fixed seed: two options whose nets give the same output compute the same
    function (Group Shift with one spatial group is the identity, Eq. 4 with G = 1)."""
    import torch

    if key in _OUTPUTS:
        return _OUTPUTS[key]

    from harness.study import _at_proxy

    out = {}

    def run(model, shape):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            y = model.eval()(x)
        out["y"] = y if isinstance(y, torch.Tensor) else None
        return 0.0

    torch.manual_seed(0)
    _at_proxy(spec, task, run)
    _OUTPUTS[key] = out["y"]
    return out["y"]


def _same_functions(computes) -> list[str]:
    """A warning per set of a knob's options whose nets compute the same function, with the same
    recipe and data, at the pre-flight's point: the search would train one net under two names."""
    import torch

    def same(a, b) -> bool:
        (_, s, y), (_, t, z) = a, b
        return (y is not None and z is not None and y.shape == z.shape and torch.equal(y, z) and s.model != t.model
                and s.model_dump(include={"data", "train", "cost"}) == t.model_dump(include={"data", "train", "cost"}))

    warnings = []
    for (name, base), rows in computes.items():
        classes: list[list] = []
        for row in rows:
            for c in classes:
                if same(c[0], row):
                    c.append(row)
                    break
            else:
                classes.append([row])
        at = ", ".join(f"{k}={decode(v)!r}" for k, v in json.loads(base).items())
        for c in classes:
            if len(c) > 1:
                warnings.append(f"warning: knobs.{name}: options {', '.join(repr(decode(o)) for o, _, _ in c)} build nets "
                                f"that compute the same function at {at} (equal outputs on a test input): the search "
                                f"would train one net under several names; ask the knob only where it acts ('when')")
    return warnings
