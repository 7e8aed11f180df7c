"""Name -> factory registries (timm style): YAML names things, code registers them."""
from __future__ import annotations

import difflib
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A registry lookup failed; the message names the field and the close matches."""

    def __init__(self, kind: str, name: str, known: list[str], field: str | None = None):
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        where = f"{field}: " if field else ""
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        self.message = f"{where}unknown {kind} {name!r}.{hint} Known: {', '.join(sorted(known))}."
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class Registry:
    """A named collection of factories. ``@REG.register("name")`` adds one."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable] = {}

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
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._items), field) from None

    def build(self, name: str, **kwargs):
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


OPS = Registry("op")
MODELS = Registry("model")
DATASETS = Registry("dataset")
LOSSES = Registry("loss")
