"""Progress inside one item's refinement: stage events sent to a hook, never displayed here.

A worker calls :func:`report_stage` at each stage of an item (``refine`` start, ``defocus
search`` step k/n, ``L-BFGS <groups>`` iteration k/n, ``back-projection``); whoever runs the
items in this process installs a hook with :func:`stage_hook` (the command line's progress
display, :mod:`mrepo.cli.progress`). Without a hook, reporting costs one lookup. The hook
is process-wide and may be called from several worker threads at once. Items refined in
Ray actors forward their events to a :class:`StageRelay` actor (batched, at most every
``FORWARD_SECONDS``), which the driver drains while it waits and re-reports in its own
process (:mod:`mrepo.workers.ray_pool`), so one hook sees the stages of every executor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StageEvent:
    """Item ``item`` (name; ``key``: its raw-data key) entered ``stage`` (step ``step`` of
    ``total`` where the stage counts steps)."""

    item: str
    stage: str
    step: int | None = None
    total: int | None = None
    key: str = ""

    def describe(self) -> str:
        return self.stage if self.step is None else f"{self.stage} {self.step}/{self.total or '?'}"


StageHook = Callable[[StageEvent], None]

_lock = threading.Lock()
_hooks: list[StageHook] = []


def report_stage(item: Any, stage: str, step: int | None = None, total: int | None = None) -> None:
    """Tell the installed hooks that ``item`` (an :class:`~mrepo.graph.Item` or a name) is at
    ``stage``; errors in a hook are not the worker's."""
    if not _hooks:
        return
    event = StageEvent(str(getattr(item, "name", item)), stage, step, total, str(getattr(item, "key", "")))
    for hook in list(_hooks):
        try:
            hook(event)
        except Exception:  # noqa: BLE001 - a display problem must never stop a refinement
            pass


@contextmanager
def stage_hook(hook: StageHook) -> Iterator[None]:
    """Install ``hook`` for the block."""
    with _lock:
        _hooks.append(hook)
    try:
        yield
    finally:
        with _lock:
            _hooks.remove(hook)


def hooks_installed() -> bool:
    """True while some hook listens (executors forward remote stages only then)."""
    return bool(_hooks)


#: Seconds between two batches a remote worker forwards to the driver.
FORWARD_SECONDS = 0.5


class StageRelay:
    """Body of a small Ray actor: workers push event tuples, the driver drains them."""

    def __init__(self) -> None:
        self._events: list[tuple] = []

    def push(self, events: list[tuple]) -> None:
        self._events.extend(events)

    def drain(self) -> list[tuple]:
        out, self._events = self._events, []
        return out


class Forwarder:
    """A hook that batches events and sends them with ``relay.push.remote(batch)`` (a Ray actor
    handle of :class:`StageRelay`) at most every :data:`FORWARD_SECONDS`; :meth:`flush` sends the rest."""

    def __init__(self, relay: Any):
        self.relay = relay
        self._batch: list[tuple] = []
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, event: StageEvent) -> None:
        with self._lock:
            self._batch.append((event.item, event.stage, event.step, event.total, event.key))
            if time.monotonic() - self._last >= FORWARD_SECONDS:
                self._send()

    def flush(self) -> Any:
        """Send what is batched; returns the push's Ray object ref (None when nothing was left). A worker
        waits for it (``ray.get``) before its task returns: the driver drains the relay when it sees the
        task done, and a push still on its way then was lost (an item's last stages never shown)."""
        with self._lock:
            return self._send()

    def _send(self) -> Any:
        ref = None
        if self._batch:
            ref = self.relay.push.remote(self._batch)
            self._batch = []
        self._last = time.monotonic()
        return ref


def replay(events: list[tuple]) -> None:
    """Report events drained from a :class:`StageRelay` to this process's hooks."""
    for item, stage, step, total, key in events:
        event = StageEvent(item, stage, step, total, key)
        for hook in list(_hooks):
            try:
                hook(event)
            except Exception:  # noqa: BLE001 - a display problem must never stop a refinement
                pass
