"""Contrast polarity of raw data, detected against a species reference.

The particles of a species in a few items are back-projected from their current parameters
(normalised exposures read as ``"light"``, :func:`mrepo.workers.raw_data.read_exposures`) into
half-set sums, reconstructed, and the average map is correlated with the species' reference at
low resolution (:func:`mrepo.workers.reconstruct.band_correlation`): a positive correlation means
particles are light in the raw data, a negative one that they are dark (as counting detectors
record them). Nothing is written. Maps are (box, box, box) (z, y, x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mrepo.graph import Item, ParticleTable, Species
from mrepo.kernels.symmetry import symmetry_matrices
from mrepo.store import ObjectStore
from mrepo.workers.api import HalfSums
from mrepo.workers.backproject import backproject_species
from mrepo.workers.geometry import Parameters, ParticleSet, particle_geometry
from mrepo.workers.item_model import load_item_model
from mrepo.workers.raw_data import open_exposures
from mrepo.workers.reconstruct import low_band_correlation, reconstruct_species, species_average

__all__ = ["PolarityVote", "item_half_sums", "detect_polarity", "MIN_CORRELATION"]

#: |r| below this leaves the polarity undetermined (too few particles or no reference signal)
MIN_CORRELATION = 0.05


@dataclass(frozen=True)
class PolarityVote:
    """``polarity`` "dark" | "light" | None (undetermined); ``correlation`` of the light-read
    reconstruction with the reference (shells 1 .. ``shells``); ``particles`` used."""

    polarity: str | None
    correlation: float
    particles: int
    shells: int


def item_half_sums(objects: ObjectStore, item: Item, species: Species, table: ParticleTable, polarity: str, *,
                   max_particles: int | None = None, pad: int = 2, min_box_factor: float = 2.0) -> HalfSums | None:
    """Half-set sums of ``species``' particles in ``item`` at their current parameters (None: none there)."""
    sel = np.flatnonzero(table.item_keys() == item.key) if len(table) else np.zeros(0, int)
    if max_particles is not None:
        sel = sel[:max_particles]
    if len(sel) == 0:
        return None
    model = load_item_model(objects, item)
    stack = open_exposures(objects, item, polarity)  # each particle's crop read on demand
    particles = ParticleSet(table.coordinates[sel], table.angles[sel])
    with torch.no_grad():
        geo = particle_geometry(model, particles, Parameters.zeros(model, particles, None))
    res = species.resolution or 4 * model.pixel_size
    res = max(2 * model.pixel_size, res / 1.25)
    sym = symmetry_matrices(species.symmetry).to(torch.float64)
    half = torch.from_numpy(table.half[sel].astype(np.int64))
    return backproject_species(model, stack, geo, torch.arange(len(sel)), half, species.box, species.diameter, res,
                               sym, pad=pad, min_box_factor=min_box_factor, use_weights=False)


def detect_polarity(objects: ObjectStore, items: list[Item], species: Species, table: ParticleTable, *,
                    max_particles: int = 400) -> PolarityVote:
    """Vote on the polarity of ``items`` (their raw data) from ``species``' particles and reference maps."""
    mask = np.asarray(objects.get_array(species.mask), dtype=np.float32)
    reference = species_average(objects, species)
    total: HalfSums | None = None
    used = 0
    for item in items:
        if used >= max_particles:
            break
        sums = item_half_sums(objects, item, species, table, "light", max_particles=max_particles - used)
        if sums is None:
            continue
        used += sums.particles
        total = sums if total is None else total.add(sums)
    if total is None or not float(np.std(reference)) > 0:
        return PolarityVote(None, 0.0, used, 0)
    rec = reconstruct_species(total, species.box, species.pixel_size, mask)
    r, shells = low_band_correlation(rec, mask, species.pixel_size, reference)
    polarity = None if abs(r) < MIN_CORRELATION else ("light" if r > 0 else "dark")
    return PolarityVote(polarity, r, used, shells)
