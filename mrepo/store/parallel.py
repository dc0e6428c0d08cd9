"""Bounded, order-keeping parallel map over a thread pool, and the bound on checks in flight."""

from __future__ import annotations

from collections import deque
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


def settle(running: deque[tuple[Future, int]], limit: int) -> list[Future]:
    """Bound the work in flight: drop the finished futures at the head of ``running`` (``(future, bytes)``,
    oldest first), raising the first failure among them, and return the oldest unfinished ones that must
    end before at most ``limit`` bytes are in flight. Those stay in ``running``: the caller waits for them
    (``result()`` raises a failure), a later call drops them."""
    in_flight = sum(n for _, n in running)
    while running and running[0][0].done():
        future, n = running.popleft()
        future.result()
        in_flight -= n
    due = []
    for future, n in running:
        if in_flight <= limit:
            break
        due.append(future)
        in_flight -= n
    return due
