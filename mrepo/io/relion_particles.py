"""RELION particle STAR files <-> mrepo particle arrays (single-particle and RELION 5 tomography).

Columns follow RELION's src/metadata_label.h. Single particle (RELION 3.1+):
data_optics (rlnOpticsGroup, rlnImagePixelSize, ...), data_particles with
rlnMicrographName, rlnCoordinateX/Y (micrograph pixels), rlnOriginX/YAngst (Å),
rlnAngleRot/Tilt/Psi, rlnRandomSubset, optional rlnDefocusU/V/Angle, rlnPhaseShift.
RELION 5 tomography: data_general, data_optics, data_particles with rlnTomoName,
rlnCenteredCoordinateX/Y/ZAngst (Å from the tomogram centre), optional
rlnOriginX/Y/ZAngst, rlnAngleRot/Tilt/Psi, optional rlnTomoSubtomogramRot/Tilt/Psi,
rlnRandomSubset.

Conversions to mrepo's item frame (Å):
- frames: ``x = rlnCoordinateX * pixel - rlnOriginXAngst`` (pixel = the item's
  micrograph pixel size), same for y, ``z = 0``;
- tilts: ``x = rlnCenteredCoordinateXAngst - rlnOriginXAngst + (SizeX / 2) * pixel``
  (the tomogram centre of RELION 5, tilt-series pixel size), same for y, z. RELION 5
  decentres with ``Tomogram::centre = (w0/2.0, h0/2.0, d0/2.0)`` (real division,
  src/jaz/tomography/tomogram_set.cpp ``loadTomogram``; used by
  ``ParticleSet::getParticleCoordDecenteredPixel`` in particle_set.cpp), not ``Size // 2``.
Particles are linked to items by name (:func:`~mrepo.io.staging.match_items`) and
get stable ids from :func:`~mrepo.io.staging.particle_ids`.
No Fourier layout is involved in this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..graph import Item
from ..store import InvalidInput
from .poses import compose_subtomogram
from .star import block, integers, numeric, read_star, require_columns, strings

__all__ = ["ParticleRows", "read_relion_particles", "tomo_centre"]


@dataclass
class ParticleRows:
    """Matched particles: item keys (N,), coordinates (N, 3) Å, angles (N, 3) deg, half (N,),
    extra columns, the items they refer to, the optics image pixel size (Å) if given, rows skipped,
    and optionally whole trajectories: ``coordinates_t``/``angles_t`` (N, T, 3) (M's temporal
    samples; ``coordinates``/``angles`` are then sample 0)."""

    item_keys: list[str]
    coordinates: np.ndarray
    angles: np.ndarray
    half: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    items: list[Item] = field(default_factory=list)
    image_pixel_size: float | None = None
    skipped: int = 0
    coordinates_t: np.ndarray | None = None
    angles_t: np.ndarray | None = None


def tomo_centre(item: Item) -> np.ndarray:
    """RELION 5 tomogram centre in Å from voxel 0: (Size / 2) * pixel, Size = volume_dimensions / pixel (px).

    RELION 5's ``Tomogram::centre`` is ``w0 / 2.0`` (real division), so odd sizes give half-pixel centres."""
    pix = float(item.imaging["pixel_size"])
    size = np.rint(np.asarray(item.imaging["volume_dimensions"], dtype=np.float64) / pix)
    return (size / 2) * pix


def read_relion_particles(path: str | Path, index: dict, *, ignore_unmatched: bool = False) -> ParticleRows:
    """Parse a particle STAR file and link rows to items via ``index`` (from item_index_by_name)."""
    from .staging import match_items

    blocks = read_star(path)
    df = block(blocks, "particles", path)
    tomo = "rlnTomoName" in df.columns
    optics = blocks.get("optics")
    image_pixel = None
    if optics is not None and "rlnImagePixelSize" in optics.columns:
        values = numeric(optics, "rlnImagePixelSize", path, "optics")
        if len(set(values.tolist())) > 1:
            raise InvalidInput(f"{path}: data_optics rlnImagePixelSize differs between optics groups "
                               f"({sorted(set(values.tolist()))}); one species has one pixel size")
        image_pixel = float(values[0]) if len(values) else None
    name_col = "rlnTomoName" if tomo else "rlnMicrographName"
    require_columns(df, [name_col, "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnRandomSubset"], path,
                    "particles")
    names = strings(df, name_col, path, "particles")
    keep, matched = match_items(names, index, where=str(path), ignore_unmatched=ignore_unmatched)
    half = integers(df, "rlnRandomSubset", path, "particles")
    bad = np.nonzero(~np.isin(half, (1, 2)))[0]
    if len(bad):
        raise InvalidInput(f"{path}: data_particles column rlnRandomSubset row {bad[0] + 1}: {half[bad[0]]} "
                           "is not 1 or 2")
    angles = np.stack([numeric(df, c, path, "particles") for c in ("rlnAngleRot", "rlnAngleTilt",
                                                                   "rlnAnglePsi")], axis=1)

    def col(name: str) -> np.ndarray:
        return numeric(df, name, path, "particles") if name in df.columns else np.zeros(len(df))

    items = [m for m in matched]
    if tomo:
        require_columns(df, [f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"], path, "particles")
        for n, it in zip(names, items):
            if it is not None and it.kind != "tilts":
                raise InvalidInput(f"{path}: rlnTomoName {n!r} names item {it.name!r}, which is not a tilt series")
        centred = np.stack([numeric(df, f"rlnCenteredCoordinate{a}Angst", path, "particles") for a in "XYZ"], 1)
        origin = np.stack([col(f"rlnOrigin{a}Angst") for a in "XYZ"], 1)
        centre = np.stack([tomo_centre(it) if it is not None else np.zeros(3) for it in items]) if len(items) \
            else np.zeros((0, 3))
        coords = np.where(origin != 0, centred - origin, centred) + centre
        if all(f"rlnTomoSubtomogram{a}" in df.columns for a in ("Rot", "Tilt", "Psi")):
            sub = np.stack([col(f"rlnTomoSubtomogram{a}") for a in ("Rot", "Tilt", "Psi")], 1)
            angles = compose_subtomogram(angles, sub)
    else:
        require_columns(df, ["rlnCoordinateX", "rlnCoordinateY"], path, "particles")
        for n, it in zip(names, items):
            if it is not None and it.kind != "frames":
                raise InvalidInput(f"{path}: rlnMicrographName {n!r} names item {it.name!r}, which is a tilt series")
        pix = np.array([float(it.imaging["pixel_size"]) if it is not None else 1.0 for it in items])
        xy = np.stack([numeric(df, "rlnCoordinateX", path, "particles"),
                       numeric(df, "rlnCoordinateY", path, "particles")], 1) * pix[:, None]
        origin = np.stack([col("rlnOriginXAngst"), col("rlnOriginYAngst")], 1)
        xy = np.where(origin != 0, xy - origin, xy)
        coords = np.concatenate([xy, np.zeros((len(df), 1))], axis=1)
    extra: dict[str, np.ndarray] = {}
    if not tomo and all(c in df.columns for c in ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle")):
        extra["defocus"] = np.stack([numeric(df, c, path, "particles")
                                     for c in ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle")], 1)
    if not tomo and "rlnPhaseShift" in df.columns:
        extra["phase_shift"] = numeric(df, "rlnPhaseShift", path, "particles")
    kept = [it for it, k in zip(items, keep) if k]
    return ParticleRows([it.key for it in kept], coords[keep], angles[keep], half[keep],
                        {k: v[keep] for k, v in extra.items()}, kept, image_pixel, int((~keep).sum()))
