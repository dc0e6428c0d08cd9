"""M's target gradient (workers/objective.backward_target) is the same whether all particle
batches are evaluated in one autograd pass (small items) or one batch at a time after a pass
without gradients (items whose graph would exceed the memory budget)."""

from __future__ import annotations

import torch

from mrepo.workers.geometry import Parameters, particle_geometry
from mrepo.workers.objective import backward_target, joint_pass_fits
from mrepo.workers.references import load_references_from
from mrepo.workers.refine_item import _Context
from mrepo.workers.settings import RefineSettings
from tests.workers.simdata import build_repo
from tests.workers.test_recovery import _frames, _task


def _gradients(ctx: _Context, subsets, ctf_frozen: bool, joint_mib: float) -> tuple[float, dict[str, torch.Tensor]]:
    params = Parameters.zeros(ctx.model, ctx.particles, None)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # a point away from the start, so that every gradient is non-zero
        params.rotation.copy_(0.02 * torch.randn(params.rotation.shape, generator=gen, dtype=params.rotation.dtype))
        params.translation.copy_(
            0.3 * torch.randn(params.translation.shape, generator=gen, dtype=params.translation.dtype)
        )
    for st in (st for sub in subsets for st in sub.groups):
        st.cached = None
    groups = ["rotation", "translation", "shifts"] + ([] if ctf_frozen else ["defocus"])
    tensors = params.select(groups)
    geo = particle_geometry(ctx.model, ctx.particles, params)
    target = backward_target(
        ctx.model, subsets, geo, ctx.n_particles, ctf_frozen=ctf_frozen, scale=1000.0, joint_mib=joint_mib
    )
    return target, {g: t.grad.clone() for g, t in zip(groups, tensors)}


def test_joint_and_batched_passes_give_the_same_gradient():
    sr = build_repo(_frames(n=12, frames=3, size=192), resolution=6.0)
    settings = RefineSettings(
        refine_poses=True, refine_shifts=True, refine_defocus=True, resolution_fraction=1.0, particle_batch=4
    )
    task = _task(sr, settings)
    ctx = _Context(task, settings, sr.repo.objects, load_references_from(sr.repo.objects, task.species, settings))
    subsets = ctx.subsets(Parameters.zeros(ctx.model, ctx.particles, None))
    assert len(subsets) >= 3  # several batches per half-set
    assert joint_pass_fits(subsets, settings.graph_memory_mib) and not joint_pass_fits(subsets, 0.0)
    for ctf_frozen in (True, False):
        t_joint, g_joint = _gradients(ctx, subsets, ctf_frozen, float("inf"))
        t_batch, g_batch = _gradients(ctx, subsets, ctf_frozen, 0.0)
        assert abs(t_joint - t_batch) <= 1e-6 * abs(t_batch)
        for g in g_batch:
            scale = float(g_batch[g].abs().max())
            assert scale > 0, g
            torch.testing.assert_close(g_joint[g], g_batch[g], rtol=0, atol=1e-4 * scale)
