"""Name -> object registries that refuse duplicates and suggest the closest valid name."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from ppvi_cli.errors import PPVIError

T = TypeVar("T")


class Registry(Generic[T]):
    """One registry per family (datasets, methods, protocols, backbones).

    >>> methods = Registry("method")
    >>> @methods.register("mosaic")
    ... def mosaic(x): ...
    >>> methods.get("mosiac")  # doctest: +SKIP
    PPVIError: unknown method 'mosiac'; did you mean 'mosaic'? (choices: mosaic)
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PPVIError(f"unknown {self.kind} {name!r}{hint} (choices: {', '.join(self.names())})")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
