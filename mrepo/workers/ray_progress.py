"""Progress display for an iteration run by either executor (local or Ray).

:func:`iteration_progress` yields a callback for ``executor.run(tasks, progress=...)``
that drives a rich progress bar (items done/total, particles per second, ETA from
the particles still to do); :func:`iteration_stats` and :func:`summary_table` give the
per-iteration summary (resolution per species before/after, wall time, cached items).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from .api import IterationOutput
from .executors import ProgressEvent


def eta_seconds(event: ProgressEvent) -> float | None:
    """Seconds left, from the particle rate so far (None before the first particle)."""
    if event.particles_done <= 0 or event.elapsed <= 0:
        return None
    return event.elapsed * (event.particles_total - event.particles_done) / event.particles_done


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@contextmanager
def iteration_progress(description: str, *, console: Console | None = None,
                       enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar for one iteration; yields ``callback(ProgressEvent)``.

    Hidden (the callback does nothing) when ``enabled`` is False or the console is not a terminal.
    """
    console = console or Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda event: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("items  {task.fields[rate]} particles/s  ETA {task.fields[eta]}"))
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=None, rate="-", eta=_clock(None))

        def update(event: ProgressEvent) -> None:
            rate = event.particles_done / event.elapsed if event.elapsed > 0 else 0.0
            bar.update(task, completed=event.done, total=event.total, rate=f"{rate:.1f}",
                       eta=_clock(eta_seconds(event)))

        yield update


def iteration_stats(output: IterationOutput, wall_seconds: float) -> dict[str, Any]:
    """Items, cached items, particles, wall time (s), particles/s and summed worker seconds."""
    particles = sum(r.task.particles_total for r in output.results)
    return {
        "items": len(output.results),
        "cached": sum(1 for r in output.results if r.stats.get("cached")),
        "particles": particles,
        "seconds": wall_seconds,
        "particles_per_second": particles / wall_seconds if wall_seconds > 0 else None,
        "worker_seconds": sum(float(r.stats.get("seconds_total", 0.0)) for r in output.results),
    }


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

