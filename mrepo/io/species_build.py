"""Build a Species from maps (MRC) and matched particle rows, validating everything first.

Half-maps and mask must be finite cubic MRC volumes of one box size and one voxel
size (Å), which must agree with the particles' optics rlnImagePixelSize when given.
Maps are stored as float32 arrays (z, y, x). No Fourier layout is involved in this module.
"""

from __future__ import annotations

from pathlib import Path

import blake3
import numpy as np

from ..graph import ParticleTable, Species
from ..store import InvalidInput, ObjectStore, hash_file
from .identity import IdContext, new_particle_ids
from .mrc import read_map
from .relion_particles import ParticleRows

__all__ = ["read_species_maps", "build_species", "species_ids", "PIXEL_TOLERANCE"]

PIXEL_TOLERANCE = 1e-3  # relative


def same_pixel(a: float, b: float) -> bool:
    return abs(a - b) <= PIXEL_TOLERANCE * max(abs(a), abs(b))


def read_species_maps(half1: str | Path, half2: str | Path, mask: str | Path
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(half1, half2, mask, voxel size Å) after checking shapes and voxel sizes agree."""
    maps = [read_map(p, what) for p, what in ((half1, "half-map 1"), (half2, "half-map 2"), (mask, "mask"))]
    (h1, p1), (h2, p2), (m, pm) = maps
    for (arr, pix), path in zip(maps[1:], (half2, mask)):
        if arr.shape != h1.shape:
            raise InvalidInput(f"{path}: box {arr.shape[0]} differs from half-map 1 {half1} box {h1.shape[0]}")
        if not same_pixel(pix, p1):
            raise InvalidInput(f"{path}: voxel size {pix} Å differs from half-map 1 {half1} voxel size {p1} Å")
    return h1, h2, m, p1


def species_ids(name: str, rows: ParticleRows, star_path: str | Path, context: IdContext | None) -> np.ndarray:
    """Ids of ``rows``: inherited from the file's id column, else new (see :mod:`mrepo.io.identity`)."""
    ids = getattr(rows, "ids", None)
    if ids is not None:
        return np.asarray(ids, dtype=np.int64)
    if context is None:
        path = Path(star_path)
        context = IdContext(None, hash_file(path) if path.is_file() else blake3.blake3(str(star_path).encode()
                                                                                            ).hexdigest())
    return new_particle_ids(np.arange(len(rows.item_keys)), species=name, context=context)


def build_species(objects: ObjectStore, *, name: str, maps: tuple[np.ndarray, np.ndarray, np.ndarray, float],
                  rows: ParticleRows, diameter: float, symmetry: str, temporal_samples: int = 1,
                  star_path: str | Path = "particles", contributors: list[str] | None = None,
                  metadata: dict | None = None, id_context: IdContext | None = None) -> Species:
    """Species record (saved children into ``objects``); particles replicated over ``temporal_samples``.

    Particle ids (:mod:`mrepo.io.identity`): ``rows.ids`` when the file carried them, else new ids from
    ``id_context`` (default: no parent commit, the BLAKE3 of ``star_path``) and each kept row's ordinal."""
    h1, h2, m, pixel = maps
    if rows.image_pixel_size is not None and not same_pixel(rows.image_pixel_size, pixel):
        raise InvalidInput(f"{star_path}: data_optics rlnImagePixelSize {rows.image_pixel_size} Å disagrees with "
                           f"the maps' voxel size {pixel} Å")
    if temporal_samples < 1:
        raise InvalidInput(f"temporal samples must be >= 1, got {temporal_samples}")
    if not len(rows.item_keys):
        raise InvalidInput(f"{star_path}: no particles left for species {name!r}")
    t = temporal_samples
    coords = np.repeat(rows.coordinates[:, None, :], t, axis=1)
    angles = np.repeat(rows.angles[:, None, :], t, axis=1)
    table = ParticleTable.build(species_ids(name, rows, star_path, id_context), rows.item_keys, coords, angles,
                                rows.half, rows.extra)
    sp = Species(name, diameter, symmetry, pixel, int(h1.shape[0]),
                 objects.put_array(h1, what=f"{name} half-map 1"), objects.put_array(h2, what=f"{name} half-map 2"),
                 objects.put_array(m, what=f"{name} mask"), table.save(objects), temporal_samples=t,
                 contributors=tuple(contributors or ()), metadata={**rows.metadata, **(metadata or {})})
    sp.to_body()  # validate name, symmetry, diameter now
    return sp
