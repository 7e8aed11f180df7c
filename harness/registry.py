"""Name -> factory registries (timm style): YAML names things, code registers them."""
from __future__ import annotations

import difflib
import importlib
import inspect
import typing
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A registry lookup failed; the message names the field and the close matches."""

    def __init__(self, kind: str, name: str, known: list[str], field: str | None = None):
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        where = f"{field}: " if field else ""
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = f" Known: {', '.join(sorted(known))}." if known else " None is defined here."
        self.message = f"{where}unknown {kind} {name!r}.{hint}{listing}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def _coerced(raw: Any, value: Any) -> bool:
    """Whether validation turned a string or a boolean into something else (``"16"`` -> 16)."""
    if isinstance(raw, (str, bool)):
        return type(raw) is not type(value)
    if isinstance(raw, (list, tuple)) and isinstance(value, (list, tuple)):
        return any(_coerced(r, v) for r, v in zip(raw, value))
    if isinstance(raw, dict) and isinstance(value, dict):
        return any(_coerced(raw[k], value.get(k)) for k in raw)
    return False


def check_types(factory: Callable, params: dict[str, Any], field: str) -> None:
    """Each of ``params`` against the factory's type annotation (``widths: Sequence[int]``),
    so that ``widths: [a, 16]`` is refused naming ``field.widths.0`` instead of failing inside
    the component. Nothing is coerced: ``"16"`` for an int is refused too. Parameters without
    an annotation, or with one that does not resolve, are left to the component."""
    from pydantic import TypeAdapter, ValidationError

    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001  annotations naming what only a type checker sees
        return
    for name, raw in params.items():
        if name not in hints or hints[name] is Any:
            continue
        try:
            value = TypeAdapter(hints[name]).validate_python(raw)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in (name, *err["loc"]) if not str(x).startswith(("function-", "json-")))
            raise ValueError(f"{field}.{loc}: {err['msg']} (got {err['input']!r}; {name} is "
                             f"{_type_name(hints[name])})") from None
        except Exception:  # noqa: BLE001  a type pydantic cannot check (a module, a tensor): left to the component
            continue
        if _coerced(raw, value):
            what = "a string (write it without quotes)" if isinstance(raw, str) else "a boolean"
            raise ValueError(f"{field}.{name}: must be {_type_name(hints[name])}, not {what} (got {raw!r})")


def caller_module(frame) -> str:
    """The module whose code called the function running in ``frame`` (``inspect.currentframe()``)."""
    back = frame.f_back if frame is not None else None
    return back.f_globals.get("__name__", "") if back is not None else ""


def _type_name(hint: Any) -> str:
    plain = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}
    return plain.get(hint) or str(hint).replace("typing.", "").replace("collections.abc.", "")


class Registry:
    """A named collection of factories. ``@REG.register("name")`` adds one.

    ``builtins``: the module whose import registers the built-in entries, imported on the first
    lookup, so that validating a study's schema needs neither torch nor MONAI (seconds).
    """

    def __init__(self, kind: str, builtins: str | None = None):
        self.kind = kind
        self._items: dict[str, Callable] = {}
        self._origins: dict[str, str] = {}  # name -> the module that registered it
        self._checks: dict[str, Callable] = {}  # name -> the values its factory refuses (check_values)
        self._builtins = builtins

    @property
    def _entries(self) -> dict[str, Callable]:
        if self._builtins is not None:
            module, self._builtins = self._builtins, None
            importlib.import_module(module)
            importlib.import_module("harness.families")  # the built-in families register like plugins
        return self._items

    def register(self, name: str | None = None, check: Callable[..., None] | None = None,
                 origin: str | None = None) -> Callable[[T], T]:
        """``check``: the values the factory refuses, as a function of some of its parameters
        (injected ones included) that raises ValueError; validation calls it instead of
        building the component (``check_values``), and the factory calls it too. ``origin``:
        the registering module, when a helper registers on its caller's behalf."""
        def deco(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            if check is not None:
                self._checks[key] = check
            # Who registered it (the module calling the decorator, whatever module defined obj):
            # a plugin that registers nothing is a mistake the study is told about.
            self._origins[key] = origin or caller_module(inspect.currentframe())
            return obj

        return deco

    def get(self, name: str, field: str | None = None) -> Callable:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._items), field) from None

    def build(self, name: str, **kwargs):
        return self.get(name)(**kwargs)

    def check_params(self, name: str, params: dict[str, Any], field: str, injected: Iterable[str] = ()) -> None:
        """Check ``params`` against the factory's signature before anything runs.

        ``injected`` names the arguments the harness supplies (a model's channels, a loss's
        activation, an optimiser's parameters); a study may not set them. Unknown names get
        "did you mean"; a missing required argument is named.
        """
        factory = self.get(name, field=f"{field}.name" if field else None)
        injected = set(injected)
        sig = inspect.signature(factory)
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        allowed = [n for n, p in sig.parameters.items() if p.kind in kinds and n not in injected and n != "self"]
        open_kwargs = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
        for k in params:
            if k in injected:
                raise ValueError(f"{field}.params.{k}: set by the harness for {self.kind} {name!r}; remove it")
            if k not in allowed and not open_kwargs:
                raise UnknownNameError(f"parameter of {self.kind} {name!r}", k, allowed, f"{field}.params")
        missing = [n for n, p in sig.parameters.items() if p.kind in kinds and p.default is inspect.Parameter.empty
                   and n not in injected and n not in params and n != "self"]
        if missing:
            raise ValueError(f"{field}.params: {self.kind} {name!r} needs {', '.join(missing)}")
        check_types(factory, params, f"{field}.params")

    def check_values(self, name: str, params: dict[str, Any], context: dict[str, Any] | None = None) -> None:
        """Run ``name``'s registered check on ``params`` over the factory's defaults, with the
        injected ``context`` (a loss's ``output``, an inferer's ``patch``): what the factory
        would refuse, found without building it. Raises ValueError."""
        check = self._checks.get(name)
        if check is None:
            return
        factory = self.get(name)
        args = {k: p.default for k, p in inspect.signature(factory).parameters.items()
                if p.default is not inspect.Parameter.empty}
        args.update(context or {})
        args.update(params)
        wanted = inspect.signature(check).parameters
        check(**{k: v for k, v in args.items() if k in wanted})

    def returns(self, name: str) -> Any:
        """What ``name``'s factory declares it returns (its return annotation), or None."""
        try:
            return typing.get_type_hints(self.get(name)).get("return")
        except Exception:  # noqa: BLE001  an annotation only a type checker resolves
            return None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def in_order(self) -> list[str]:
        """The names in the order they were registered (the built-ins' order is a table's)."""
        return list(self._entries)

    def registered_by(self, module: str) -> list[str]:
        """Names registered by ``module`` or its submodules."""
        return sorted(k for k, m in self._origins.items() if m == module or m.startswith(f"{module}."))

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


OPS = Registry("op", "harness.ops")
MODELS = Registry("model", "harness.models")
DATASETS = Registry("dataset", "harness.data")
LOSSES = Registry("loss", "harness.losses")
OPTIMIZERS = Registry("optimizer", "harness.optim")
SCHEDULES = Registry("schedule", "harness.optim")
AUGMENTATIONS = Registry("augmentation", "harness.data.transforms")
TARGETS = Registry("target", "harness.data.transforms")
INFERERS = Registry("inferer", "harness.inferers")
CALLBACKS = Registry("callback", "harness.callbacks")
COMBINERS = Registry("combiner", "harness.combine")
VIEW_SETS = Registry("view set", "harness.inferers")  # test-time augmentation views (harness.inferers.View)
COST_HANDLES = Registry("cost handle", "harness.cost")  # fvcore op handles, by the traced op's name
TRAINING_FAILURES = Registry("training-failure rule", "harness.report.failures")  # a seed that did not train
OUTPUT_ADAPTERS = Registry("output adapter", "harness.outputs")  # a net's output convention -> the contract
DATA_COMMANDS = Registry("data command", "harness.data.folders")  # `harness data NAME`: (add_arguments, run)
METRICS = Registry("metric")  # the metric catalogue: harness.metrics registers the built-ins at import
REGISTRIES = (OPS, MODELS, DATASETS, LOSSES, OPTIMIZERS, SCHEDULES, AUGMENTATIONS, TARGETS, INFERERS, CALLBACKS,
              COMBINERS, VIEW_SETS, COST_HANDLES, DATA_COMMANDS, METRICS)
