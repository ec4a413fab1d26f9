"""What a Lambda container keeps between invocations: objects built once from its environment (settings, clients,
the catalogue, the pipeline), and one way to forget them all, as a new container would start (tests and the
local stack change the environment)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

_forgetters: list[Callable[[], None]] = []


def once_per_container[T](build: Callable[[], T]) -> Callable[[], T]:
    """`build` runs at the first call; later calls return its result until `reset()`."""
    cached = lru_cache(maxsize=1)(build)
    _forgetters.append(cached.cache_clear)
    return cached


def on_reset(forget: Callable[[], None]) -> Callable[[], None]:
    """Register a cache of another shape (keyed by argument, say) that `reset()` must clear too."""
    _forgetters.append(forget)
    return forget


def reset() -> None:
    """Forget everything built from the environment: the next call builds it again, as at a cold start."""
    for forget in _forgetters:
        forget()
