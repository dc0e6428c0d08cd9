"""The one progress display of the command line: refinement, reconstruction, clone, fetch, push,
pull and verify all report through it.

- On a terminal (stderr is a TTY): a rich progress bar (done/total, rate, ETA), and during
  refinement one line per item being worked on with its stage (``mic003: L-BFGS
  translation,rotation 4/10``), all cleared when the work ends.
- Otherwise (batch systems, ``nohup``, CI, a pipe): plain, timestamped lines on stderr, e.g.
  ``2026-11-29T08:30:00Z refine: 3/10 items, 412 particles, 38.2 particles/s, ETA 0:00:21``,
  at most one every ``MREPO_PROGRESS_INTERVAL`` seconds (default 10) per kind of line, plus
  the last one of each phase, so logs stay readable and show that work goes on.

Workers and the library only emit events (``(phase, done, total)`` callbacks,
:class:`~mrepo.workers.executors.ProgressEvent`, :class:`~mrepo.workers.stages.StageEvent`);
nothing in them draws.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

DEFAULT_INTERVAL = 10.0


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("MREPO_PROGRESS_INTERVAL", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def clock(seconds: float | None) -> str:
    """``H:MM:SS`` (``-:--:--`` when unknown)."""
    if seconds is None:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def eta_seconds(event: Any) -> float | None:
    """Seconds left of an iteration from its particle rate so far (None before the first particle)."""
    if event.particles_done <= 0 or event.elapsed <= 0:
        return None
    return event.elapsed * (event.particles_total - event.particles_done) / event.particles_done


class ProgressDisplay:
    """Receives progress events and shows them as a bar (terminal) or as log lines (otherwise).

    Call it as ``display(phase, done, total)`` (transfers, verify); hand :meth:`items` to an
    executor (``ProgressEvent`` per finished item) and :meth:`stage` to
    :func:`mrepo.workers.stages.stage_hook` (stage inside an item). Thread-safe.
    """

    def __init__(self, description: str, *, console: Console | None = None, stream: IO[str] | None = None,
                 terminal: bool | None = None, interval: float | None = None):
        self.description = description
        self.console = console or Console(stderr=True, highlight=False)
        self.terminal = self.console.is_terminal if terminal is None else terminal
        self.stream = stream if stream is not None else self.console.file
        self.interval = _interval() if interval is None else interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._bar: Progress | None = None
        self._main: TaskID | None = None
        self._stages: dict[str, TaskID] = {}
        self._said: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> ProgressDisplay:
        if self.terminal:
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[detail]}"), TimeRemainingColumn(),
                                 console=self.console, transient=True)
            self._bar.__enter__()
            self._main = self._bar.add_task(self.description, total=None, detail="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    # ------------------------------------------------------------------ events
    def __call__(self, phase: str, done: int, total: int | None) -> None:
        """``done`` of ``total`` units of ``phase`` (e.g. ``objects``, ``verify``)."""
        label = f"{self.description} {phase}".strip() if phase and phase != self.description else self.description
        if self._bar is not None:
            with self._lock:
                self._bar.update(self._main, completed=done, total=total, description=label, detail="")
            return
        last = total is not None and done >= total
        self._log(f"phase:{phase}", f"{label}: {done}/{total if total is not None else '?'}", force=last)

    def items(self, event: Any) -> None:
        """An executor's ``ProgressEvent``: one more item finished."""
        rate = event.particles_done / event.elapsed if event.elapsed > 0 else 0.0
        eta = clock(eta_seconds(event))
        if self._bar is not None:
            with self._lock:
                self._bar.update(self._main, completed=event.done, total=event.total,
                                 detail=f"items  {rate:.1f} particles/s  ETA {eta}")
                task = getattr(getattr(event, "result", None), "task", None)
                if task is not None:
                    self._drop_stage(str(task.item_key))
            return
        self._log("items", f"{self.description}: {event.done}/{event.total} items, {event.particles_done}/"
                           f"{event.particles_total} particles, {rate:.1f} particles/s, ETA {eta}",
                  force=event.done >= event.total)

    def stage(self, event: Any) -> None:
        """A worker's ``StageEvent``: an item entered a stage (shown per item)."""
        text = event.describe()
        if self._bar is not None:
            with self._lock:
                # the item's row: its stage, with the stage's step k/n as the bar (pulsing when it has none)
                key = event.key or event.item
                task = self._stages.get(key)
                if task is not None and event.total is None:
                    self._bar.remove_task(task)  # rich cannot make a counted bar uncounted again
                    task = None
                if task is None:
                    task = self._stages[key] = self._bar.add_task(f"  {event.item}", total=None, detail="")
                self._bar.update(task, completed=event.step or 0, total=event.total, detail=event.stage)
            return
        with self._lock:
            if self._said.get(event.key or event.item) == text:
                return  # e.g. line-search evaluations within one L-BFGS iteration
            self._said[event.key or event.item] = text
        first_step = event.step is None or event.step <= 1
        self._log(f"stage:{event.item}:{event.stage}", f"{self.description}: {event.item}: {text}",
                  force=first_step and event.stage != "refine")

    # ------------------------------------------------------------------ helpers
    def _drop_stage(self, key: str) -> None:
        task = self._stages.pop(key, None)
        if task is not None and self._bar is not None:
            self._bar.remove_task(task)

    def _log(self, kind: str, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last.get(kind, -1e18) < self.interval:
                return
            self._last[kind] = now
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.stream.write(f"{stamp} {text}\n")
            self.stream.flush()


@contextmanager
def progress_display(description: str, enabled: bool = True, *, console: Console | None = None,
                     stages: bool = False) -> Iterator[ProgressDisplay | Callable[..., None]]:
    """A :class:`ProgressDisplay` for the block (a no-op callable when not ``enabled``). With
    ``stages``, the refinement workers of this process report their stages to it."""
    if not enabled:
        yield _Silent()
        return
    with ProgressDisplay(description, console=console) as display:
        if stages:
            from ..workers.stages import stage_hook

            with stage_hook(display.stage):
                yield display
        else:
            yield display


class _Silent:
    """Accepts every event and shows nothing."""

    def __call__(self, *args: Any) -> None:
        pass

    def items(self, event: Any) -> None:
        pass

    def stage(self, event: Any) -> None:
        pass


@contextmanager
def iteration_progress(description: str, *, console: Console | None = None,
                       enabled: bool = True) -> Iterator[Callable[[Any], None]]:
    """For ``executor.run(tasks, progress=...)``: yields ``callback(ProgressEvent)``; item stages
    are shown too (local executor)."""
    with progress_display(description, enabled, console=console, stages=True) as display:
        yield display.items


def summary_table(iteration: int, resolutions: dict[str, tuple[float | None, float | None]],
                  stats: dict[str, Any]) -> Table:
    """Per-iteration summary: resolution (Å) before -> after per species, then the run statistics."""
    table = Table(title=f"iteration {iteration}: {stats['items']} items ({stats['cached']} cached), "
                        f"{stats['particles']} particles, {stats['seconds']:.1f} s", title_justify="left",
                  min_width=64)
    table.add_column("species")
    table.add_column("resolution before (Å)", justify="right")
    table.add_column("after (Å)", justify="right")
    for name, (before, after) in sorted(resolutions.items()):
        table.add_row(name, "-" if before is None else f"{before:.2f}", "-" if after is None else f"{after:.2f}")
    return table
