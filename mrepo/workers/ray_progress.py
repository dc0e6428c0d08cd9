"""Per-iteration statistics of a refinement run by either executor (local or Ray).

Only numbers: the command line shows them (:mod:`mrepo.cli.progress`); workers never draw.
"""

from __future__ import annotations

from typing import Any

from .api import IterationOutput


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
