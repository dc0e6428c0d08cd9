"""Per-iteration species references held resident by a worker (M: one set per species).

For each species: both half-maps masked, FSC-weighted and prepared for Fourier-slice
extraction (centred half-transform of :mod:`mrepo.kernels.gridding`, pad ``REFERENCE_PAD``),
the mask, the symmetry operators (k, 3, 3), the particle table and the FSC curve.
Maps are (box, box, box) (z, y, x) at the species pixel size (Å).

Between iterations (so that iteration 2 does not refine against iteration 1's noise):

- each half-map is weighted per Fourier shell by sqrt(2 FSC / (1 + FSC)) (FSC clipped at
  0; Rosenthal & Henderson's figure of merit for one half-map, as RELION and M filter
  their references) when the species has an FSC curve (:func:`fsc_weighted`);
- the mask follows the map (:func:`follow_mask`, RELION ``relion_mask_create``-style):
  low-pass, threshold, binary dilation, raised-cosine soft edge.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from mrepo.graph import ParticleTable, Repository, Species
from mrepo.kernels.fourier_slice import prepare_volume
from mrepo.kernels.symmetry import symmetry_matrices
from mrepo.store import ObjectStore
from mrepo.workers.device import resolve_device
from mrepo.workers.reconstruct import filter_map, fsc_weights, shell_filter
from mrepo.workers.settings import RefineSettings

__all__ = ["SpeciesReference", "SpeciesReferences", "load_references", "load_references_from", "REFERENCE_PAD",
           "refinement_resolution", "fsc_weighted", "follow_mask", "remasked"]

REFERENCE_PAD = 2


@dataclass
class SpeciesReference:
    """One species version ready for refinement: ``volumes_ft`` [half1, half2] complex64 and the
    ``symmetry`` operators on the refinement device."""

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


def species_resolution(species: Species) -> float:
    """The species' current resolution (Å, FSC 0.143 of its half-maps); a species without one
    counts as 4 pixels."""
    return species.resolution if species.resolution and math.isfinite(species.resolution) else 4 * species.pixel_size


def refinement_resolution(species: Species, settings: RefineSettings, iteration: int) -> float:
    """Refinement limit (Å) for ``iteration`` (1-based): the species resolution divided by a
    frequency fraction that starts at ``resolution_fraction`` and reaches 1 after
    ``resolution_ramp`` iterations; species without a resolution start at 4 pixels."""
    base = species_resolution(species)
    ramp = max(1, settings.resolution_ramp)
    f = settings.resolution_fraction + (1 - settings.resolution_fraction) * min(1.0, (iteration - 1) / ramp)
    return max(base / f, 2 * species.pixel_size)


def fsc_weighted(volume: np.ndarray, fsc_curve: np.ndarray) -> np.ndarray:
    """``volume`` (box³) weighted per shell by sqrt(2 FSC / (1 + FSC)) (FSC clipped to [0, 1]; shell 0 kept)."""
    return shell_filter(volume, fsc_weights(fsc_curve))


def follow_mask(volume: np.ndarray, pixel_size: float, *, lowpass: float = 15.0, threshold: float = 0.1,
                extend: float = 3.0, soft_edge: float = 6.0, diameter: float | None = None) -> np.ndarray:
    """A soft mask (box³ float32 in [0, 1]) that follows ``volume`` (box³, positive density).

    RELION-style: low-pass to ``lowpass`` Å (raised-cosine fall-off over one shell width),
    threshold at ``threshold`` × the low-passed maximum, keep voxels inside ``diameter`` Å
    (sphere; default the box minus the edge), dilate by ``extend`` px and add a raised-cosine
    edge of ``soft_edge`` px. A map with no positive density gives the sphere."""
    from scipy import ndimage

    box = volume.shape[0]
    freq = np.arange(box // 2 + 1) / (box * pixel_size)
    cutoff = 1.0 / lowpass
    fall = 1.0 / (box * pixel_size)
    t = np.clip((freq - cutoff) / fall, 0.0, 1.0)
    lp = shell_filter(volume, 0.5 * (1 + np.cos(np.pi * t)))
    r = np.sqrt(sum(g**2 for g in np.meshgrid(*[np.arange(box) - box // 2] * 3, indexing="ij")))
    radius = (diameter / 2 / pixel_size) if diameter else box / 2 - extend - soft_edge - 1
    radius = min(radius, box / 2 - extend - soft_edge - 1)
    inside = r <= radius
    peak = float(lp[inside].max()) if inside.any() else 0.0
    binary = (lp > threshold * peak) & inside if peak > 0 else inside
    if not binary.any():
        binary = inside
    dist = ndimage.distance_transform_edt(~binary)
    soft = np.where(dist <= extend, 1.0, 0.5 * (1 + np.cos(np.pi * np.clip((dist - extend) / soft_edge, 0, 1))))
    return soft.astype(np.float32)


def _denoised_halves(objects: ObjectStore, sp: Species, settings: RefineSettings):
    """Both half-maps denoised each on its own (M) when ``settings.denoise``; else None."""
    if not getattr(settings, "denoise", False):
        return None
    from mrepo.workers.denoise import denoised_halves

    return denoised_halves(objects, sp, device=settings.denoise_device, threads=settings.threads)


def load_references_from(objects: ObjectStore, species: dict[str, str], settings: RefineSettings) -> SpeciesReferences:
    """Load and prepare each named species version (name -> species record hash) on ``settings.device``."""
    dev = resolve_device(settings.device, "refinement device")
    out: SpeciesReferences = {}
    for name, h in sorted(species.items()):
        sp = Species.load(objects, h)
        mask = np.asarray(objects.get_array(sp.mask), dtype=np.float32)
        fsc = None if sp.fsc is None else np.asarray(objects.get_array(sp.fsc), dtype=np.float64)
        vols = []
        denoised = _denoised_halves(objects, sp, settings)
        for i, half in enumerate((sp.half1, sp.half2)):
            if denoised is not None:
                v = denoised[i]
            else:
                v = np.asarray(objects.get_array(half), dtype=np.float32)
                if fsc is not None and settings.fsc_weighted_references:
                    v = fsc_weighted(v, fsc)
            vols.append(prepare_volume(torch.from_numpy(v * mask).to(device=dev), REFERENCE_PAD))
        # float32 operators widened to float64 (as before; not the float64 ones)
        sym = (symmetry_matrices(sp.symmetry, device=dev).to(torch.float64) if settings.symmetrize
               else torch.eye(3, dtype=torch.float64, device=dev)[None])
        out[name] = SpeciesReference(name, h, sp, vols, mask, sym, ParticleTable.load(objects, sp.particles), fsc)
    return out


def load_references(repo_url: str, species: dict[str, str], settings: RefineSettings) -> SpeciesReferences:
    """:func:`load_references_from` on the repository at ``repo_url``."""
    repo = Repository.open(repo_url)
    return load_references_from(repo.objects, species, settings)


def remasked(rec, pixel_size: float, diameter: float):
    """(mask, reconstruction) with the mask made from ``rec``'s half-map average (:func:`follow_mask`,
    low-pass max(15 Å, resolution)) and the FSC, resolution and filtered map recomputed with it."""
    from mrepo.kernels.fsc import fsc, resolution_at

    avg = (rec.half1.astype(np.float64) + rec.half2) / 2
    res = rec.resolution if np.isfinite(rec.resolution) else 15.0
    mask = follow_mask(avg, pixel_size, lowpass=max(15.0, res), diameter=diameter)
    m = torch.from_numpy(mask)  # host: the driver's FSC of numpy maps
    curve = fsc(torch.from_numpy(rec.half1), torch.from_numpy(rec.half2), m).double().numpy()  # host
    box = rec.half1.shape[0]
    new_res = resolution_at(curve, pixel_size, box)
    return mask, dataclasses.replace(rec, fsc=curve, resolution=new_res,
                                     filtered=filter_map(avg.astype(np.float32), curve, pixel_size, new_res))
