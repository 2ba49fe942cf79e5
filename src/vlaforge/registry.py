"""Name -> component registries, so configs and the CLI can name any part of the pipeline."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of components; unknown names fail with the known ones listed."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def wrap(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item

        return wrap

    def get(self, name: str) -> T:
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items)) or 'none'}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)


SUITES: Registry = Registry("suite")
POLICIES: Registry = Registry("policy")
OPTIMIZERS: Registry = Registry("optimizer")
HEADS: Registry = Registry("action head")
BACKBONES: Registry = Registry("backbone")
FFNS: Registry = Registry("feed-forward")
DOMAINS: Registry = Registry("domain")
TEXT_ENCODERS: Registry = Registry("text encoder")
DEPLOY_RUNTIMES: Registry = Registry("deploy runtime")
DEPLOY_BACKENDS: Registry = Registry("deploy backend")
