"""The model norm's |FT_n|² of reused reference slices (objective.Subset.padded_power) is kept only
while the slices are the same: sums with the cache equal sums from fresh subsets, bit for bit, when the
defocus moves (cache used) and when the rotations move (cache replaced)."""

from __future__ import annotations

import torch

from mrepo.workers.geometry import Parameters, particle_geometry
from mrepo.workers.objective import evaluate
from mrepo.workers.references import load_references_from
from mrepo.workers.refine_item import _Context
from mrepo.workers.settings import RefineSettings
from tests.workers.simdata import build_repo
from tests.workers.test_recovery import _frames, _task


def _sums(ctx: _Context, subsets, params: Parameters):
    with torch.no_grad():
        geo = particle_geometry(ctx.model, ctx.particles, params)
        return evaluate(ctx.model, subsets, geo, ctx.n_particles, ctf_frozen=False)


def _equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in ((a.cross, b.cross), (a.power_a, b.power_a), (a.power_b, b.power_b)))


def test_cached_model_norm_equals_fresh_subsets():
    sr = build_repo(_frames(n=8, frames=3, size=160), resolution=6.0)
    settings = RefineSettings(refine_poses=True, refine_defocus=True, resolution_fraction=1.0, particle_batch=4)
    task = _task(sr, settings)
    ctx = _Context(task, settings, sr.repo.objects, load_references_from(sr.repo.objects, task.species, settings))
    params = Parameters.zeros(ctx.model, ctx.particles, None)
    cached = ctx.subsets(params)
    _sums(ctx, cached, params)
    grids = {(i, j): e[2] for i, sub in enumerate(cached) for j, e in sub.padded.items()}
    assert grids and len(grids) == sum(len(sub.groups) for sub in cached)
    with torch.no_grad():  # the defocus moves: slices and |FT_n|² reused
        params.defocus.add_(0.05)
    a = _sums(ctx, cached, params)
    assert all(sub.padded[j][2] is grids[(i, j)] for i, sub in enumerate(cached) for j in sub.padded)
    assert _equal(a, _sums(ctx, ctx.subsets(params), params))
    with torch.no_grad():  # the rotations move: new slices, new grids
        params.rotation.add_(0.02)
    b = _sums(ctx, cached, params)
    assert all(sub.padded[j][2] is not grids[(i, j)] for i, sub in enumerate(cached) for j in sub.padded)
    assert not _equal(a, b)
    assert _equal(b, _sums(ctx, ctx.subsets(params), params))
    for sub in cached:
        sub.drop_padded()
        assert not sub.padded
