"""Errors of a refined item against the simulator's ground truth (test and benchmark helper).

Every error is measured on observable quantities, so no gauge choice enters: for each
particle p and exposure i the refined model's image position (px), defocus (mean of U and
V, Å) and pose (rotation central slice -> map) are compared with the simulator's render
plan. ``shift_rms_px`` is the RMS over exposures of the particle-mean position error of
that exposure (what per-frame/per-tilt global shifts control); ``defocus_rms_A`` the RMS
over particles and exposures; ``angle_median_deg`` the median over particles of the
exposure-mean geodesic angle. No Fourier layout here.
"""

from __future__ import annotations

import numpy as np
import torch

from mrepo.graph import Item, Repository
from mrepo.kernels.rotations import euler_to_matrix, rotation_angle
from mrepo.workers.geometry import Parameters, ParticleSet, particle_geometry
from mrepo.workers.item_model import load_item_model
from mrepo.workers.refine_item import load_item_particles
from tests.workers.simdata import ID_STRIDE

__all__ = ["item_errors", "model_errors"]


def _truth(sim) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """True positions (N, n, 2) px, mean defocus (N, n) Å, poses (N, n, 3, 3), species (N,)."""
    plan = sim.truth.plan
    poses = euler_to_matrix(torch.from_numpy(np.deg2rad(plan.angles_deg))).numpy()
    return plan.positions_px, (plan.defocus_u + plan.defocus_v) / 2, poses, plan.species


def model_errors(sim, geo_positions: np.ndarray, geo_defocus: np.ndarray, geo_poses: np.ndarray,
                 order: np.ndarray) -> dict[str, float]:
    """Errors of predicted positions (P, n, 2) px, defocus (P, n) Å and poses (P, n, 3, 3) whose
    particle p is the simulator's particle ``order[p]``."""
    pos, dz, poses, _ = _truth(sim)
    pos, dz, poses = pos[order], dz[order], poses[order]
    e = (geo_positions - pos).mean(0)  # (n, 2)
    ang = rotation_angle(torch.from_numpy(geo_poses), torch.from_numpy(poses)).numpy()  # (P, n)
    return {"shift_rms_px": float(np.sqrt((e**2).sum(-1).mean())),
            "position_rms_px": float(np.sqrt(((geo_positions - pos) ** 2).sum(-1).mean())),
            "defocus_rms_A": float(np.sqrt(((geo_defocus - dz) ** 2).mean())),
            "angle_median_deg": float(np.rad2deg(np.median(ang.mean(1))))}


def item_errors(repo: Repository, sim, item_hash: str, particles: dict[str, str] | None = None) -> dict[str, float]:
    """Errors of the item version ``item_hash``; particle trajectories from the ``item-particles``
    records ``particles`` (species -> hash) or, if None, from the head population's tables.
    NaN errors when the item holds none of these particles."""
    item = Item.load(repo.objects, item_hash)
    model = load_item_model(repo.objects, item)
    ids, coords, angles = [], [], []
    if particles is not None:
        for name in sorted(particles):
            i, c, a = load_item_particles(repo.objects, particles[name])
            ids.append(i), coords.append(c), angles.append(a)
    else:
        pop = repo.population()
        for name in sorted(pop.species):
            table = repo.particles(repo.species(pop.species[name]).particles)
            sel = table.item_keys() == item.key
            ids.append(table.ids[sel]), coords.append(table.coordinates[sel]), angles.append(table.angles[sel])
    if sum(len(i) for i in ids) == 0:
        return {k: float("nan") for k in ("shift_rms_px", "position_rms_px", "defocus_rms_A", "angle_median_deg")}
    t = max(c.shape[1] for c in coords)
    if any(c.shape[1] != t for c in coords):
        raise ValueError("species with different temporal samples are not supported here")
    ps = ParticleSet(np.concatenate(coords), np.concatenate(angles))
    with torch.no_grad():
        geo = particle_geometry(model, ps, Parameters.zeros(model, ps, None))
    sim_ids = sim.truth.particles.ids
    order = np.array([int(np.flatnonzero(sim_ids == i % ID_STRIDE)[0]) for i in np.concatenate(ids)])
    dz = ((geo.defocus_u + geo.defocus_v) / 2).numpy()
    return model_errors(sim, geo.positions.numpy(), dz, geo.rotations.numpy(), order)
