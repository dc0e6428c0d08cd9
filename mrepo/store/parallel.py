"""Bounded, order-keeping parallel map over a thread pool, the bound on checks in flight, and the
choice between the pool and a plain loop for small per-key work."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends import Backend


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


def per_key(pool: ThreadPoolExecutor, backend: Backend) -> Callable[..., Iterator]:
    """``map`` for small reads and checks of ``backend``'s keys: the builtin ``map`` where each is a
    few system calls (:attr:`Backend.in_process`: handing each to a thread costs more, ~50 us, than
    doing it), ``pool.map`` where each is a network round trip (S3, a server)."""
    return map if backend.in_process else pool.map
