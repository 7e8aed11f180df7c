"""Name -> factory registries (timm style): YAML names things, code registers them."""
from __future__ import annotations

import difflib
import importlib
import inspect
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


class Registry:
    """A named collection of factories. ``@REG.register("name")`` adds one.

    ``builtins``: the module whose import registers the built-in entries, imported on the first
    lookup, so that validating a study's schema needs neither torch nor MONAI (seconds).
    """

    def __init__(self, kind: str, builtins: str | None = None):
        self.kind = kind
        self._items: dict[str, Callable] = {}
        self._builtins = builtins

    @property
    def _entries(self) -> dict[str, Callable]:
        if self._builtins is not None:
            module, self._builtins = self._builtins, None
            importlib.import_module(module)
        return self._items

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
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

    def names(self) -> list[str]:
        return sorted(self._entries)

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
