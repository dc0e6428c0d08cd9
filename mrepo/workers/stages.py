"""Progress inside one item's refinement: stage events sent to a hook, never displayed here.

A worker calls :func:`report_stage` at each stage of an item (``refine`` start, ``defocus
search`` step k/n, ``L-BFGS <groups>`` iteration k/n, ``back-projection``); whoever runs the
items in this process installs a hook with :func:`stage_hook` (the command line's progress
display, :mod:`mrepo.cli.progress`). Without a hook, reporting costs one lookup. The hook
is process-wide and may be called from several worker threads at once; items refined in
other processes (Ray actors) report to their own process, i.e. to nobody.
"""

from __future__ import annotations

import threading
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
