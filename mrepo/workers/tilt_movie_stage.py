"""The tilt-movie stage of one item's refinement (MCore ``--refine_tiltmovies``): per-frame shifts
inside each tilt's movie (model and forward model: :mod:`mrepo.workers.tilt_movies`).

Runs after the tilt-level stages with every other parameter frozen: the particles' tilt geometry is
computed once, each frame of each tilt becomes an exposure of the frame model, and L-BFGS moves the
shifts (n, F, 2) px to maximise M's target over all frames (CTF-premultiplied images cached at the
start, moved by Fourier phase ramps). The update is kept only when the target of each half-set
(against its own half-map) rises. No Fourier layout here beyond :mod:`mrepo.workers.objective`'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mrepo.store import InvalidInput
from mrepo.workers.geometry import Parameters, particle_geometry
from mrepo.workers.objective import Subset, backward_target, evaluate
from mrepo.workers.stages import report_stage
from mrepo.workers.tilt_movies import (
    TiltMovies,
    aligned_tilts,
    centred_shifts,
    frame_exposures,
    frame_geometry,
    frame_model,
    stored_shifts,
    summary,
)

__all__ = ["refine_tilt_movies"]


def refine_tilt_movies(ctx: Any, params: Parameters, polarity: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Refine the per-frame shifts of ``ctx`` (the item's refinement context, tilt series with raw
    tilt movies) with ``params`` (baked) frozen. Returns the new ``tilt_movie_shifts`` (n, F, 2) Å
    and stats; replaces ``ctx.stack`` by the tilts aligned with the result."""
    model, item = ctx.model, ctx.item
    movies = TiltMovies.open(ctx.objects, item)
    if movies.n != model.n or movies.shape != tuple(ctx.stack.shape[1:]):
        raise InvalidInput(
            f"item {item.name!r}: {movies.n} tilt movies of {movies.shape} px do not match its "
            f"{model.n} tilts of {tuple(ctx.stack.shape[1:])} px"
        )
    ps, f = model.pixel_size, movies.frames
    start = stored_shifts(ctx.objects, item, movies.n, f) / ps
    fmodel = frame_model(model, f)
    report_stage(item, "tilt movies: frames")
    stack = frame_exposures(movies, polarity).to(device=ctx.device)
    with torch.no_grad():
        tilt_geo = particle_geometry(model, ctx.particles, params)
    x0 = torch.from_numpy(start).to(device=ctx.device)
    x = x0.clone()
    stream = ctx.stream
    ctx.stream = ctx.patch_mib * f > ctx.settings.patch_memory_mib  # F times the tilts' patches: stream above the cap
    try:
        own, _ = ctx.subset_pairs(params, model=fmodel, stack=stack, geo=frame_geometry(tilt_geo, x))
    finally:
        ctx.stream = stream

    def target_of(subsets: list[Subset], shifts: torch.Tensor, rows: torch.Tensor | None = None) -> float:
        with torch.no_grad():
            sm = evaluate(
                fmodel, subsets, frame_geometry(tilt_geo, centred_shifts(shifts, x0)), ctx.n_particles, ctf_frozen=True
            )
        return float(sm.target(rows))

    halves = ctx.half_rows(own)
    before = {h: target_of(own, x, rows) for h, rows in halves.items()}
    total0 = target_of(own, x)
    x.requires_grad_(True)
    steps = ctx.settings.lbfgs_iterations
    opt = torch.optim.LBFGS(
        [x],
        lr=1.0,
        max_iter=max(steps, 1),
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-10,
        tolerance_change=1e-12,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        report_stage(item, "L-BFGS tilt_movies", min(int(opt.state[x].get("n_iter", 0)) + 1, steps), steps)
        geo = frame_geometry(tilt_geo, centred_shifts(x, x0))
        t = backward_target(fmodel, own, geo, ctx.n_particles, ctf_frozen=True, scale=1000.0,
                            joint_mib=ctx.settings.graph_memory_mib)
        return torch.tensor(-1000.0 * t, dtype=torch.float64, device=x.device)

    if steps:
        opt.step(closure)
    x = centred_shifts(x.detach(), x0)
    after = {h: target_of(own, x, rows) for h, rows in halves.items()}
    kept = all(after[h] >= before[h] for h in halves)
    if not kept:
        x = torch.from_numpy(start).to(device=ctx.device)
    total1 = target_of(own, x)
    shifts = x.cpu().numpy() * ps
    report_stage(item, "tilt movies: aligned tilts")
    ctx.stack = aligned_tilts(movies, x.cpu().numpy(), polarity).to(device=ctx.device)
    stats = {
        "frames": f,
        "target_before": total0,
        "target_after": total1,
        "kept": kept,
        "halves_before": {str(h): v for h, v in before.items()},
        "halves_after": {str(h): v for h, v in after.items()},
        **summary(shifts, ps),
    }
    return shifts, stats
