"""Bounded, order-keeping parallel map over a thread pool."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


def window(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterable, size: int = 16) -> Iterator:
    """``fn`` over ``items`` in order with at most ``size`` calls running ahead (bounded memory)."""
    futures: list[Future] = []
    for item in items:
        futures.append(pool.submit(fn, item))
        if len(futures) >= size:
            yield futures.pop(0).result()
    for f in futures:
        yield f.result()
