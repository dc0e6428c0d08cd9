"""RELION particle STAR files <-> mrepo particle arrays (single-particle and tomography).

Columns follow RELION's src/metadata_label.h; layouts (3.0, 3.1+, per-particle optics
columns) are normalised by :mod:`~mrepo.io.relion_layouts`.

Single particle: rlnMicrographName, rlnCoordinateX/Y (micrograph pixels), rlnOriginX/YAngst (Å),
rlnAngleRot/Tilt/Psi, optional rlnRandomSubset, per-particle CTF rlnDefocusU/V/Angle,
rlnPhaseShift, rlnCtfBfactor, rlnCtfScalefactor.
Tomography: rlnTomoName and either RELION 5 rlnCenteredCoordinateX/Y/ZAngst (Å from the
tomogram centre) or pixel coordinates rlnCoordinateX/Y/Z (RELION 4, pickers, WarpTools), optional
rlnOriginX/Y/ZAngst, rlnAngleRot/Tilt/Psi, optional rlnTomoSubtomogramRot/Tilt/Psi.

Conversions to mrepo's item frame (Å):

- frames: ``x = rlnCoordinateX * pixel - rlnOriginXAngst`` (pixel = the item's micrograph pixel
  size), same for y; the height ``z`` carries the particle's own defocus:
  ``z = (U + V) / 2 - (U_item + V_item) / 2`` (refinement's defocus is ``ctf + z``), and
  ``extra["ctf_residual"]`` (N, 2) = (half-astigmatism ``(U - V)/2`` minus the item's, angle minus
  the item's angle) keeps the rest; ``phase_shift``, ``ctf_bfactor``, ``ctf_scale`` (N,) are kept
  per particle;
- tilts, RELION 5: ``x = rlnCenteredCoordinateXAngst - rlnOriginXAngst + (SizeX / 2) * pixel``
  (RELION 5's ``Tomogram::centre`` is ``w0 / 2.0``, real division, tomogram_set.cpp);
- tilts, pixel coordinates: ``x = rlnCoordinateX * cpix - rlnOriginXAngst`` from voxel 0, where
  ``cpix`` is, in order: the caller's ``coordinate_pixel_size``; data_optics
  rlnTomoTiltSeriesPixelSize (RELION 4: unbinned tilt-series pixels); the tomogram's binned pixel
  size (tilt-series pixel * rlnTomoTomogramBinning of tomograms.star). Otherwise refused.

Names: a particle's rlnTomoName / rlnMicrographName links to an item by
:func:`~mrepo.io.staging.name_key`; ``*.tomostar`` (WarpTools, M) is stripped, and a name that
extends exactly one item name after ``_``, ``.`` or ``-`` (picker names such as
``TS_01_10.00Apx``) links to that item.

Halves: rlnRandomSubset when given; otherwise ``1 + (row mod 2)`` in file order, recorded in the
species metadata and the commit. Ids: column :data:`ID_COLUMN` when given (written by mrepo's
exporter), else generated. Columns not modelled are kept as ``relion.<label>`` extra columns
(:mod:`~mrepo.io.relion_passthrough`) and every optics group (all columns) in the species
metadata. No Fourier layout is involved in this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..graph import Item
from ..store import InvalidInput, ObjectStore
from .identity import ID_COLUMN, read_id_column
from .poses import compose_subtomogram
from .relion_geometry import astigmatism_residual
from .relion_layouts import read_particle_blocks
from .relion_passthrough import json_value, particle_columns
from .star import UNDERFOCUS, integers, numeric, positive, require_columns, strings

__all__ = ["ParticleRows", "read_relion_particles", "tomo_centre", "ID_COLUMN", "HALVES_RULE", "resolve_names",
           "astigmatism_residual", "tomogram_binning"]

HALVES_RULE = "no rlnRandomSubset: half = 1 + (row mod 2), rows in file order"

_ANGLES = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
_SPA_MODELLED = {"rlnMicrographName", *_ANGLES, "rlnRandomSubset", "rlnOriginXAngst", "rlnOriginYAngst",
                 "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnPhaseShift", "rlnCtfBfactor",
                 "rlnCtfScalefactor", ID_COLUMN}
_TOMO_MODELLED = {"rlnTomoName", *_ANGLES, "rlnRandomSubset", "rlnOriginXAngst", "rlnOriginYAngst",
                  "rlnOriginZAngst", ID_COLUMN}


@dataclass
class ParticleRows:
    """Matched particles: item keys (N,), coordinates (N, 3) Å, angles (N, 3) deg, half (N,),
    extra columns, the items they refer to, the optics image pixel size (Å) if given, rows skipped,
    and optionally whole trajectories: ``coordinates_t``/``angles_t`` (N, T, 3) (M's temporal
    samples; ``coordinates``/``angles`` are then sample 0); ``ids`` (N,) when the file carried
    them; ``metadata`` for the species record (optics groups, layout, halves rule)."""

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
    ids: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def tomo_centre(item: Item) -> np.ndarray:
    """RELION 5 tomogram centre in Å from voxel 0: (Size / 2) * pixel, Size = volume_dimensions / pixel (px).

    RELION 5's ``Tomogram::centre`` is ``w0 / 2.0`` (real division), so odd sizes give half-pixel centres."""
    pix = float(item.imaging["pixel_size"])
    size = np.rint(np.asarray(item.imaging["volume_dimensions"], dtype=np.float64) / pix)
    return (size / 2) * pix


def tomogram_binning(item: Item) -> float | None:
    """rlnTomoTomogramBinning of the item's tomograms.star row, when it was given."""
    v = item.metadata.get("relion_tomogram", {}).get("rlnTomoTomogramBinning")
    return None if v is None else float(v)


def resolve_names(names: list[str], index: dict) -> list[str]:
    """Names rewritten so :func:`~mrepo.io.staging.match_items` finds their item: ``*.tomostar``
    stripped; a name extending exactly one item name (then ``_``, ``.`` or ``-``) becomes that name."""
    from .staging import name_key

    out, cache = [], {}
    for n in names:
        if n in cache:
            out.append(cache[n])
            continue
        key = name_key(n)
        if key.lower().endswith(".tomostar"):
            key = key[: -len(".tomostar")]
        if key not in index:
            longer = [k for k in index if key.startswith(k) and len(key) > len(k) and key[len(k)] in "_.-"]
            longest = [k for k in longer if len(k) == max(len(x) for x in longer)]
            if len(longest) == 1:
                key = longest[0]
        cache[n] = key
        out.append(key)
    return out


def _optics_metadata(optics: pd.DataFrame) -> list[dict[str, object]]:
    return [{c: json_value(optics[c].iloc[r]) for c in optics.columns} for r in range(len(optics))]


def _halves(df: pd.DataFrame, path: Path) -> tuple[np.ndarray, str | None]:
    if "rlnRandomSubset" not in df.columns:
        return (np.arange(len(df)) % 2 + 1).astype(np.int64), HALVES_RULE
    half = integers(df, "rlnRandomSubset", path, "particles")
    bad = np.nonzero(~np.isin(half, (1, 2)))[0]
    if len(bad):
        raise InvalidInput(f"{path}: data_particles column rlnRandomSubset row {bad[0] + 1}: {half[bad[0]]} "
                           "is not 1 or 2")
    return half, None


def _col(df: pd.DataFrame, name: str, path: Path) -> np.ndarray:
    return numeric(df, name, path, "particles") if name in df.columns else np.zeros(len(df))


def _tomo_coordinates(df: pd.DataFrame, items: list[Item | None], optics: pd.DataFrame, path: Path,
                      coordinate_pixel_size: float | None) -> np.ndarray:
    origin = np.stack([_col(df, f"rlnOrigin{a}Angst", path) for a in "XYZ"], 1)
    if all(f"rlnCenteredCoordinate{a}Angst" in df.columns for a in "XYZ"):
        centred = np.stack([numeric(df, f"rlnCenteredCoordinate{a}Angst", path, "particles") for a in "XYZ"], 1)
        centre = np.stack([tomo_centre(it) if it is not None else np.zeros(3) for it in items]) if items \
            else np.zeros((0, 3))
        return np.where(origin != 0, centred - origin, centred) + centre
    if not all(f"rlnCoordinate{a}" in df.columns for a in "XYZ"):
        raise InvalidInput(f"{path}: data_particles needs rlnCenteredCoordinateX/Y/ZAngst (RELION 5) or "
                           f"rlnCoordinateX/Y/Z (pixels); found {', '.join(c for c in df.columns if 'Coord' in c)}")
    px = np.stack([numeric(df, f"rlnCoordinate{a}", path, "particles") for a in "XYZ"], 1)
    if coordinate_pixel_size is not None:
        if not np.isfinite(coordinate_pixel_size) or coordinate_pixel_size <= 0:
            raise InvalidInput(f"coordinate pixel size must be a positive number of Å, got {coordinate_pixel_size}")
        cpix = np.full(len(df), float(coordinate_pixel_size))
    elif "rlnTomoTiltSeriesPixelSize" in optics.columns:
        by_group = dict(zip(integers(optics, "rlnOpticsGroup", path, "optics").tolist(),
                            numeric(optics, "rlnTomoTiltSeriesPixelSize", path, "optics").tolist()))
        cpix = np.array([by_group[g] for g in integers(df, "rlnOpticsGroup", path, "particles").tolist()])
    else:
        cpix = np.empty(len(df))
        for i, it in enumerate(items):
            if it is None:
                cpix[i] = 1.0
                continue
            binning = tomogram_binning(it)
            if binning is None or binning <= 0:
                raise InvalidInput(f"{path}: data_particles row {i + 1}: pixel coordinates rlnCoordinateX/Y/Z need "
                                   "their pixel size: expected rlnTomoTiltSeriesPixelSize in data_optics (RELION 4), "
                                   f"rlnTomoTomogramBinning for {it.name!r} in tomograms.star, or "
                                   "--coordinate-pixel-size; found none")
            cpix[i] = float(it.imaging["pixel_size"]) * binning
    xyz = px * cpix[:, None]
    return np.where(origin != 0, xyz - origin, xyz)


def _spa_ctf(df: pd.DataFrame, items: list[Item | None], objects: ObjectStore | None, path: Path,
             extra: dict[str, np.ndarray]) -> np.ndarray:
    """Height z (N,) from per-particle defocus; fills the CTF extra columns."""
    n = len(df)
    z = np.zeros(n)
    if all(c in df.columns for c in ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle")):
        ctf = np.stack([positive(df, "rlnDefocusU", path, "particles", allow_zero=True, unit=" Å", why=UNDERFOCUS),
                        positive(df, "rlnDefocusV", path, "particles", allow_zero=True, unit=" Å", why=UNDERFOCUS),
                        numeric(df, "rlnDefocusAngle", path, "particles")], 1)
        if objects is None:
            raise InvalidInput(f"{path}: per-particle defocus needs the items' CTF models")
        cache: dict[str, np.ndarray] = {}
        item_ctf = np.zeros((n, 3))
        for i, it in enumerate(items):
            if it is None:
                item_ctf[i] = ctf[i]
                continue
            if it.key not in cache:
                cache[it.key] = np.asarray(objects.get_array(it.models["ctf"]), np.float64)[0]
            item_ctf[i] = cache[it.key]
        z, extra["ctf_residual"] = astigmatism_residual(ctf, item_ctf)
    for col, name in (("rlnPhaseShift", "phase_shift"), ("rlnCtfBfactor", "ctf_bfactor"),
                      ("rlnCtfScalefactor", "ctf_scale")):
        if col in df.columns:
            extra[name] = numeric(df, col, path, "particles")
    return z


def read_relion_particles(path: str | Path, index: dict, *, ignore_unmatched: bool = False,
                          objects: ObjectStore | None = None,
                          coordinate_pixel_size: float | None = None) -> ParticleRows:
    """Parse a particle STAR file and link rows to items via ``index`` (from item_index_by_name).

    ``objects`` holds the items' model arrays (needed for per-particle defocus of frame series)."""
    from .staging import match_items

    path = Path(path)
    blocks, layout = read_particle_blocks(path)
    df, optics = blocks["particles"], blocks["optics"]
    tomo = "rlnTomoName" in df.columns
    image_pixel = None
    if "rlnImagePixelSize" in optics.columns:
        values = numeric(optics, "rlnImagePixelSize", path, "optics")
        if len(set(values.tolist())) > 1:
            raise InvalidInput(f"{path}: data_optics rlnImagePixelSize differs between optics groups "
                               f"({sorted(set(values.tolist()))}); one species has one pixel size")
        image_pixel = float(values[0]) if len(values) else None
    if not tomo and "rlnMicrographName" not in df.columns:
        raise InvalidInput(f"{path}: data_particles needs rlnTomoName (tomography) or rlnMicrographName (single "
                           f"particle) to link particles to items; found columns {', '.join(df.columns[:8])}")
    name_col = "rlnTomoName" if tomo else "rlnMicrographName"
    require_columns(df, [name_col, *_ANGLES], path, "particles")
    names = strings(df, name_col, path, "particles")
    keep, items = match_items(resolve_names(names, index), index, where=str(path), ignore_unmatched=ignore_unmatched)
    half, halves_rule = _halves(df, path)
    angles = np.stack([numeric(df, c, path, "particles") for c in _ANGLES], axis=1)
    extra: dict[str, np.ndarray] = {}
    if tomo:
        for n, it in zip(names, items):
            if it is not None and it.kind != "tilts":
                raise InvalidInput(f"{path}: rlnTomoName {n!r} names item {it.name!r}, which is not a tilt series")
        coords = _tomo_coordinates(df, items, optics, path, coordinate_pixel_size)
        if all(f"rlnTomoSubtomogram{a}" in df.columns for a in ("Rot", "Tilt", "Psi")):
            sub = np.stack([_col(df, f"rlnTomoSubtomogram{a}", path) for a in ("Rot", "Tilt", "Psi")], 1)
            angles = compose_subtomogram(angles, sub)
        modelled = _TOMO_MODELLED
    else:
        require_columns(df, ["rlnCoordinateX", "rlnCoordinateY"], path, "particles")
        for n, it in zip(names, items):
            if it is not None and it.kind != "frames":
                raise InvalidInput(f"{path}: rlnMicrographName {n!r} names item {it.name!r}, which is a tilt series")
        pix = np.array([float(it.imaging["pixel_size"]) if it is not None else 1.0 for it in items])
        xy = np.stack([numeric(df, "rlnCoordinateX", path, "particles"),
                       numeric(df, "rlnCoordinateY", path, "particles")], 1) * pix[:, None]
        origin = np.stack([_col(df, "rlnOriginXAngst", path), _col(df, "rlnOriginYAngst", path)], 1)
        xy = np.where(origin != 0, xy - origin, xy)
        z = _spa_ctf(df, items, objects, path, extra)
        coords = np.concatenate([xy, z[:, None]], axis=1)
        modelled = _SPA_MODELLED
    ids = read_id_column(df, path, "particles")
    origins = [c for c in ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst") if c in df.columns]
    if not origins:  # without origins the coordinate is the position itself: nothing to pass through
        modelled = modelled | {"rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ",
                               "rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
                               "rlnCenteredCoordinateZAngst"}
    groups = integers(df, "rlnOpticsGroup", path, "particles")
    if len(groups) and (len(optics) > 1 or groups[0] != 1):  # the default (one group, number 1) is not stored
        extra["optics_group"] = groups
    extra.update(particle_columns(df, modelled | {"rlnOpticsGroup"}))
    metadata: dict[str, Any] = {"relion": {"layout": layout, "optics": _optics_metadata(optics)}}
    if "general" in blocks:
        metadata["relion"]["general"] = {c: json_value(blocks["general"][c].iloc[0]) for c in blocks["general"]}
    if halves_rule:
        metadata["relion"]["halves"] = halves_rule
    kept = [it for it, k in zip(items, keep) if k]
    return ParticleRows([it.key for it in kept], coords[keep], angles[keep], half[keep],
                        {k: v[keep] for k, v in extra.items()}, kept, image_pixel, int((~keep).sum()),
                        ids=None if ids is None else ids[keep], metadata=metadata)
