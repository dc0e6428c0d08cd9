"""Where refinement sees a frame-series particle: its position in the micrograph, for exporters.

For a one-frame item (a motion-corrected micrograph) the position is the refined image position
of :func:`mrepo.workers.geometry.particle_geometry` (trajectory + global shift + image warp); for a
movie it is the position in the sum aligned by the global shifts: the mean over frames of
(image position − global shift), so image warp is included and the shifts cancel.
Units: Å from the micrograph origin (pixel index × pixel size). No Fourier layout here.
"""

from __future__ import annotations

import numpy as np
import torch

from mrepo.graph import Item
from mrepo.store import ObjectStore
from mrepo.workers.geometry import Parameters, ParticleSet, particle_geometry
from mrepo.workers.item_model import load_item_model

__all__ = ["micrograph_positions"]


def micrograph_positions(objects: ObjectStore, item: Item, coordinates: np.ndarray, angles: np.ndarray
                         ) -> np.ndarray:
    """(N, 2) Å positions in the micrograph of particles with trajectories (N, T, 3) Å / (N, T, 3) deg."""
    model = load_item_model(objects, item)
    particles = ParticleSet(np.asarray(coordinates, np.float64), np.asarray(angles, np.float64))
    with torch.no_grad():
        pos = particle_geometry(model, particles, Parameters.zeros(model, particles, None)).positions.numpy()
    if model.n == 1:
        return pos[:, 0] * model.pixel_size
    shifts = model.global_shifts / model.pixel_size
    return (pos - shifts[None]).mean(axis=1) * model.pixel_size
