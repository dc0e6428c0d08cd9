"""mrepo.store.parallel: the ordered window and the bound on checks in flight."""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from mrepo.store.parallel import settle, window


def _done(value: object = None, error: Exception | None = None) -> Future:
    f: Future = Future()
    f.set_exception(error) if error is not None else f.set_result(value)
    return f


def test_settle_drops_finished_heads_and_names_the_oldest_to_wait_for() -> None:
    pending = [Future() for _ in range(3)]
    running = deque([(_done(), 10), (_done(), 10), (pending[0], 10), (_done(), 10), (pending[1], 10),
                     (pending[2], 10)])
    # 60 bytes in flight, 20 finished at the head: 40 left; at most 15 -> the oldest three (30 bytes) must end,
    # a finished one among them included (only finished checks at the head are dropped)
    due = settle(running, 15)
    assert due == [pending[0], running[1][0], pending[1]]
    assert [f for f, _ in running][0] is pending[0] and len(running) == 4  # only the finished head is dropped
    assert settle(running, 1000) == []  # under the limit: nothing to wait for


def test_settle_raises_the_first_failure_among_finished_checks() -> None:
    running = deque([(_done(), 1), (_done(error=ValueError("chunk 0/1 is corrupt")), 1), (Future(), 1)])
    with pytest.raises(ValueError, match="chunk 0/1"):
        settle(running, 100)


def test_settle_waits_oldest_first_until_under_the_limit() -> None:
    gate = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        running = deque((pool.submit(gate.wait, 5), 8) for _ in range(4))  # 32 bytes in flight
        due = settle(running, 16)
        assert due == [running[0][0], running[1][0]]  # waiting for these two leaves 16
        gate.set()
        assert all(f.result() for f in due)
        assert settle(running, 16) == [] and not running  # all finished: dropped


def test_window_keeps_order() -> None:
    with ThreadPoolExecutor(4) as pool:
        assert list(window(pool, lambda x: x * x, range(50), size=3)) == [x * x for x in range(50)]
