"""Per-iteration species references held resident by a worker (M: one set per species).

For each species: both half-maps masked and prepared for Fourier-slice extraction
(centred half-transform of :mod:`mrepo.kernels.gridding`, pad ``REFERENCE_PAD``),
the mask, the symmetry operators (k, 3, 3), the particle table and the FSC curve.
Maps are (box, box, box) (z, y, x) at the species pixel size (Å).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mrepo.graph import ParticleTable, Repository, Species
from mrepo.kernels.fourier_slice import prepare_volume
from mrepo.kernels.symmetry import symmetry_matrices
from mrepo.store import ObjectStore
from mrepo.workers.settings import RefineSettings

__all__ = ["SpeciesReference", "SpeciesReferences", "load_references", "load_references_from", "REFERENCE_PAD",
           "refinement_resolution"]

REFERENCE_PAD = 2


@dataclass
class SpeciesReference:
    """One species version ready for refinement: ``volumes_ft`` [half1, half2] complex64."""

    name: str
    hash: str
    species: Species
    volumes_ft: list[torch.Tensor]
    mask: np.ndarray
    symmetry: torch.Tensor
    particles: ParticleTable
    fsc: np.ndarray | None

    @property
    def box(self) -> int:
        return int(self.species.box)


SpeciesReferences = dict[str, SpeciesReference]


def refinement_resolution(species: Species, settings: RefineSettings, iteration: int) -> float:
    """Refinement limit (Å) for ``iteration`` (1-based): the species resolution divided by a
    frequency fraction that starts at ``resolution_fraction`` and reaches 1 after
    ``resolution_ramp`` iterations; species without a resolution start at 4 pixels."""
    base = species.resolution if species.resolution and math.isfinite(species.resolution) else 4 * species.pixel_size
    ramp = max(1, settings.resolution_ramp)
    f = settings.resolution_fraction + (1 - settings.resolution_fraction) * min(1.0, (iteration - 1) / ramp)
    return max(base / f, 2 * species.pixel_size)


def load_references_from(objects: ObjectStore, species: dict[str, str], settings: RefineSettings) -> SpeciesReferences:
    """Load and prepare each named species version (name -> species record hash)."""
    out: SpeciesReferences = {}
    for name, h in sorted(species.items()):
        sp = Species.load(objects, h)
        mask = np.asarray(objects.get_array(sp.mask), dtype=np.float32)
        vols = []
        for half in (sp.half1, sp.half2):
            v = torch.from_numpy(np.asarray(objects.get_array(half), dtype=np.float32) * mask)
            vols.append(prepare_volume(v, REFERENCE_PAD))
        sym = symmetry_matrices(sp.symmetry).to(torch.float64) if settings.symmetrize else torch.eye(3)[None].double()
        fsc = None if sp.fsc is None else np.asarray(objects.get_array(sp.fsc), dtype=np.float64)
        out[name] = SpeciesReference(name, h, sp, vols, mask, sym, ParticleTable.load(objects, sp.particles), fsc)
    return out


def load_references(repo_url: str, species: dict[str, str], settings: RefineSettings) -> SpeciesReferences:
    """:func:`load_references_from` on the repository at ``repo_url``."""
    repo = Repository.open(repo_url)
    return load_references_from(repo.objects, species, settings)
