"""Import a RELION 5 tomography project: tilt series as a source, optionally a species.

Sources followed: RELION 5 src/metadata_label.h and src/jaz/tomography/tomogram_set.cpp.
``tomograms.star`` data_global: rlnTomoName, rlnVoltage, rlnSphericalAberration,
rlnAmplitudeContrast, rlnTomoHand, rlnTomoTiltSeriesPixelSize, rlnTomoSizeX/Y/Z
(unbinned tilt-series pixels), rlnTomoTiltSeriesStarFile. Each tilt-series STAR file
has block data_<TomoName>, one row per tilt in stack order: rlnMicrographName (tilt
image, or ``k@stack.mrc``, 1-based), rlnTomoXTilt/YTilt/ZRot (deg),
rlnTomoXShiftAngst/YShiftAngst (Å), rlnDefocusU/V/Angle (Å, deg),
rlnMicrographPreExposure (e⁻/Å²), optional rlnTomoNominalStageTiltAngle, rlnPhaseShift.

Item fields: imaging pixel_size, voltage, cs, amplitude_contrast, hand,
dimensions [x, y, n] (px), volume_dimensions = Size * pixel (Å), pre_exposure (per tilt,
stack order), exposure (dose of each tilt: next pre-exposure in acquisition order minus
its own; the last tilt repeats the previous dose), acquisition_order (stack indices in
order of increasing pre-exposure), tilt_angles (nominal stage tilt, else rlnTomoYTilt);
models ctf (n, 3), stage_angles (n, 3) (xtilt, ytilt, zrot), global_shifts (n, 2) Å,
optional phase_shift (n,). Raw data: the stack file when all tilts come from one file,
else a manifest of the tilt images (see :func:`~mrepo.io.staging.raw_manifest`).
No Fourier layout is involved in this module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..graph import DataSource, Item, Repository
from ..store import InvalidInput
from .identity import import_context
from .mrc import mrc_info
from .relion_geometry import angles_from_projection
from .relion_particles import read_relion_particles
from .relion_passthrough import row_values, table_values
from .relion_spa import SpeciesFiles
from .species_build import build_species, read_species_maps, same_pixel
from .staging import ImportResult, PolarityChoice, Staging, current_population, raw_data, raw_manifest
from .star import UNDERFOCUS, block, numeric, positive, read_star, require_columns, strings

__all__ = ["import_relion5_tomo", "tomo_items", "exposure_from_pre"]

_GLOBAL = ["rlnTomoName", "rlnTomoTiltSeriesStarFile", "rlnVoltage", "rlnSphericalAberration",
           "rlnAmplitudeContrast", "rlnTomoHand", "rlnTomoTiltSeriesPixelSize", "rlnTomoSizeX", "rlnTomoSizeY",
           "rlnTomoSizeZ"]
_TILT = ["rlnMicrographName", "rlnTomoXTilt", "rlnTomoYTilt", "rlnTomoZRot", "rlnTomoXShiftAngst",
         "rlnTomoYShiftAngst", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnMicrographPreExposure"]


def exposure_from_pre(pre: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Per-tilt dose (stack order) and acquisition order from cumulative pre-exposures."""
    order = np.argsort(pre, kind="stable")
    dose = np.zeros(len(pre))
    sorted_pre = pre[order]
    steps = np.diff(sorted_pre)
    dose[order[:-1]] = steps
    if len(pre) > 1:
        dose[order[-1]] = steps[-1]
    return dose, [int(i) for i in order]


def _split_name(name: str) -> tuple[int | None, str]:
    if "@" in name:
        k, _, f = name.partition("@")
        if k.isdigit():
            return int(k), f
    return None, name


def _tilt_raw(names: list[str], project: Path, staging: Staging, copy: bool, where: str):
    """Raw data and (nx, ny, n, voxel) for the tilt images of one series.

    A stack listed whole and in order (``1@s.mrcs`` .. ``n@s.mrcs``) is referenced as it is; any
    other listing — one MRC per tilt (RELION 5's usual layout), ``k@stack`` sections in another
    order or a subset (excluded tilts), several stacks, or a mix — becomes a manifest of
    (file, section) entries in rlnMicrographName order (:func:`~mrepo.io.staging.raw_manifest`)."""
    parts = [_split_name(n) for n in names]
    files = [f for _, f in parts]
    infos = {f: mrc_info(project / f) for f in dict.fromkeys(files)}
    first = infos[files[0]]
    if len(infos) == 1 and [k for k, _ in parts] == list(range(1, first.nz + 1)):
        return raw_data(project / files[0], copy=copy, staging=staging), (first.nx, first.ny, first.nz,
                                                                          first.voxel_size)
    for row, (k, f) in enumerate(parts, 1):
        i = infos[f]
        if (i.nx, i.ny) != (first.nx, first.ny):
            raise InvalidInput(f"{where} row {row}: {project / f} images are {i.nx} x {i.ny}, expected "
                               f"{first.nx} x {first.ny} like {files[0]}")
        if k is None and i.nz != 1:
            raise InvalidInput(f"{where} row {row}: {project / f} holds {i.nz} images; name one as k@{f}")
        if k is not None and not 1 <= k <= i.nz:
            raise InvalidInput(f"{where} row {row}: rlnMicrographName {k}@{f} but the file holds {i.nz} images")
    sections = [None if k is None else k - 1 for k, _ in parts]
    return raw_manifest([project / f for f in files], copy=copy, staging=staging, sections=sections), \
        (first.nx, first.ny, len(files), first.voxel_size)


_TILT_MODELLED = set(_TILT) | {"rlnTomoNominalStageTiltAngle", "rlnPhaseShift"}
_GLOBAL_MODELLED = set(_GLOBAL)


_R4_GLOBAL = ["rlnTomoName", "rlnTomoTiltSeriesName", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast",
              "rlnTomoHand", "rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ"]
_PROJ = ["rlnTomoProjX", "rlnTomoProjY", "rlnTomoProjZ", "rlnTomoProjW"]


def _global_block(blocks: dict, tomograms: Path):
    """data_global, with a RELION 4 table (tilt series as stacks, per-tomogram blocks of projection
    matrices in the same file, as RELION 5 converts it) given the RELION 5 columns it implies."""
    g = block(blocks, "global", tomograms)
    if "rlnTomoTiltSeriesStarFile" not in g.columns:
        names = strings(g, "rlnTomoName", tomograms, "global") if "rlnTomoName" in g.columns else []
        if not names or not all(n in blocks for n in names) or "rlnTomoTiltSeriesName" not in g.columns:
            found = f"columns {', '.join(g.columns[:6])} and blocks {', '.join('data_' + b for b in blocks)}"
            raise InvalidInput(f"{tomograms}: expected RELION 5 tomograms.star (data_global with "
                               f"rlnTomoTiltSeriesStarFile naming one STAR file per tilt series) or RELION 4 "
                               f"(rlnTomoTiltSeriesName and one data_<TomoName> block each), found {found}")
        require_columns(g, _R4_GLOBAL, tomograms, "global")
        g = g.copy()
        g["rlnTomoTiltSeriesStarFile"] = str(tomograms)  # the per-tomogram blocks are in this file
        if "rlnTomoTiltSeriesPixelSize" not in g.columns:
            require_columns(g, ["rlnMicrographOriginalPixelSize"], tomograms, "global")
            g["rlnTomoTiltSeriesPixelSize"] = g["rlnMicrographOriginalPixelSize"]
    require_columns(g, _GLOBAL, tomograms, "global")
    return g


def _relion4_tilts(df: pd.DataFrame, stack: str, project: Path, path: Path, name: str, pix: float,
                   size_px: np.ndarray) -> pd.DataFrame:
    """A RELION 4 per-tomogram block as a RELION 5 tilt-series table: ``k@stack`` names, angles and shifts
    from rlnTomoProjX..W (kept as passthrough), stack order = row order."""
    require_columns(df, _PROJ + ["rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnMicrographPreExposure"],
                    path, name)
    info = mrc_info(project / stack)
    if info.nz != len(df):
        raise InvalidInput(f"{path}: data_{name} lists {len(df)} tilts but {project / stack} holds {info.nz} images")
    rows = []
    for r, cells in enumerate(zip(*[df[c].tolist() for c in _PROJ])):
        try:
            rows.append([[float(v) for v in str(cell).strip().strip("[]").split(",")] for cell in cells])
        except ValueError:
            raise InvalidInput(f"{path}: data_{name} row {r + 1}: rlnTomoProj* must be lists like [1,0,0,0]") from None
        if any(len(v) != 4 for v in rows[-1]):
            raise InvalidInput(f"{path}: data_{name} row {r + 1}: rlnTomoProj* rows need 4 values each")
    try:
        angles, shifts = angles_from_projection(np.array(rows), pix, size_px, (info.nx, info.ny))
    except ValueError as exc:
        raise InvalidInput(f"{path}: data_{name} column rlnTomoProjX {exc}") from None
    out = df.copy()
    out["rlnMicrographName"] = [f"{k}@{stack}" for k in range(1, len(df) + 1)]
    for j, c in enumerate(("rlnTomoXTilt", "rlnTomoYTilt", "rlnTomoZRot")):
        out[c] = angles[:, j]
    out["rlnTomoXShiftAngst"], out["rlnTomoYShiftAngst"] = shifts[:, 0], shifts[:, 1]
    return out


def tomo_items(tomograms: Path, project: Path, staging: Staging, *, copy: bool) -> list[Item]:
    """One tilt-series Item per row of tomograms.star (validated; arrays go to the staging store).

    Unmodelled columns are kept: the tomograms.star row in ``Item.metadata["relion_tomogram"]``
    (rlnTomoReconstructedTomogram, rlnTomoTomogramBinning, rlnMtfFileName,
    rlnMicrographOriginalPixelSize, ...), per-tilt columns in ``["relion_tilts"]`` (label -> list in
    stack order: movie names, frame counts, CTF-fit statistics, rlnTomoProj*, ...)."""
    blocks = read_star(tomograms)
    g = _global_block(blocks, tomograms)
    names = strings(g, "rlnTomoName", tomograms, "global")
    stars = strings(g, "rlnTomoTiltSeriesStarFile", tomograms, "global")
    num = {c: numeric(g, c, tomograms, "global") for c in _GLOBAL[2:]}
    for c in ("rlnVoltage", "rlnTomoTiltSeriesPixelSize", "rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ"):
        positive(g, c, tomograms, "global")
    bad = np.nonzero(~np.isin(num["rlnTomoHand"], (-1.0, 1.0)))[0]
    if len(bad):
        raise InvalidInput(f"{tomograms}: data_global column rlnTomoHand row {bad[0] + 1}: "
                           f"{num['rlnTomoHand'][bad[0]]} is not -1 or 1")
    if len(set(names)) != len(names):
        raise InvalidInput(f"{tomograms}: rlnTomoName values are not unique")
    items = []
    relion4 = "rlnTomoTiltSeriesName" in g.columns and all(star == str(tomograms) for star in stars)
    for r, (name, star) in enumerate(zip(names, stars)):
        pix = float(num["rlnTomoTiltSeriesPixelSize"][r])
        if relion4:
            ts_path = tomograms
            size_px = np.array([num[f"rlnTomoSize{a}"][r] for a in "XYZ"])
            df = _relion4_tilts(blocks[name], strings(g, "rlnTomoTiltSeriesName", tomograms, "global")[r], project,
                                tomograms, name, pix, size_px)
        else:
            ts_path = project / star
            df = block(read_star(ts_path), name, ts_path)
        require_columns(df, _TILT, ts_path, name)
        raw, (nx, ny, n, voxel) = _tilt_raw(strings(df, "rlnMicrographName", ts_path, name), project, staging,
                                            copy, f"{ts_path} data_{name}")
        if n != len(df):
            raise InvalidInput(f"{ts_path}: {len(df)} tilts listed but the data holds {n}")
        if voxel > 0 and not same_pixel(voxel, pix):
            raise InvalidInput(f"{ts_path}: tilt images have voxel size {voxel} Å but {tomograms} gives "
                               f"rlnTomoTiltSeriesPixelSize {pix} Å for {name}")
        col = {c: numeric(df, c, ts_path, name) for c in _TILT[1:]}
        for c in ("rlnDefocusU", "rlnDefocusV"):
            positive(df, c, ts_path, name, allow_zero=True, unit=" Å", why=UNDERFOCUS)
        positive(df, "rlnMicrographPreExposure", ts_path, name, allow_zero=True)
        pre = col["rlnMicrographPreExposure"]
        dose, order = exposure_from_pre(pre)
        nominal = numeric(df, "rlnTomoNominalStageTiltAngle", ts_path, name) \
            if "rlnTomoNominalStageTiltAngle" in df.columns else col["rlnTomoYTilt"]
        size = [num[f"rlnTomoSize{a}"][r] for a in "XYZ"]
        imaging = {"pixel_size": pix, "voltage": float(num["rlnVoltage"][r]),
                   "cs": float(num["rlnSphericalAberration"][r]),
                   "amplitude_contrast": float(num["rlnAmplitudeContrast"][r]), "hand": float(num["rlnTomoHand"][r]),
                   "dimensions": [nx, ny, n], "volume_dimensions": [float(s * pix) for s in size],
                   "pre_exposure": pre.tolist(), "exposure": dose.tolist(), "acquisition_order": order,
                   "tilt_angles": nominal.tolist()}
        put = staging.objects.put_array
        models = {"ctf": put(np.stack([col["rlnDefocusU"], col["rlnDefocusV"], col["rlnDefocusAngle"]], 1)),
                  "stage_angles": put(np.stack([col["rlnTomoXTilt"], col["rlnTomoYTilt"], col["rlnTomoZRot"]], 1)),
                  "global_shifts": put(np.stack([col["rlnTomoXShiftAngst"], col["rlnTomoYShiftAngst"]], 1))}
        if "rlnPhaseShift" in df.columns:
            models["phase_shift"] = put(numeric(df, "rlnPhaseShift", ts_path, name))
        metadata = {"relion_tomogram": row_values(g, r, _GLOBAL_MODELLED),
                    "relion_tilts": table_values(df, _TILT_MODELLED)}
        metadata = {k: v for k, v in metadata.items() if v}
        items.append(Item("tilts", name, raw, imaging, models, metadata=metadata))
    return items


def with_particle_optics(items: list[Item], particles: Path) -> list[Item]:
    """Items with the CtfRefine optics (beam tilt, Zernike, magnification) of their particles' optics group.

    RELION 5 tomography keeps aberrations in the particles' data_optics; a tilt series takes the group of
    its first particle (by name, :func:`~mrepo.io.relion_particles.resolve_names`)."""
    from dataclasses import replace

    from .relion_layouts import read_particle_blocks
    from .relion_particles import resolve_names
    from .relion_spa import optics_imaging

    blocks, _ = read_particle_blocks(particles)
    df, optics = blocks["particles"], blocks["optics"]
    if "rlnTomoName" not in df.columns or not any(c in optics.columns for c in _ABERRATIONS):
        return items
    index = {it.name: [] for it in items}
    names = resolve_names(strings(df, "rlnTomoName", particles, "particles"), index)
    groups = numeric(df, "rlnOpticsGroup", particles, "particles").astype(int).tolist()
    first: dict[str, int] = {}
    for n, g in zip(names, groups):
        first.setdefault(n, g)
    rows = {int(g): r for r, g in enumerate(numeric(optics, "rlnOpticsGroup", particles, "optics").astype(int))}
    out = []
    for it in items:
        if it.name in first:
            extra = optics_imaging(optics, rows[first[it.name]], particles)
            it = replace(it, imaging={**it.imaging, **{k: v for k, v in extra.items() if k in _ABERRATION_KEYS}})
        out.append(it)
    return out


_ABERRATIONS = ("rlnBeamTiltX", "rlnBeamTiltY", "rlnOddZernike", "rlnEvenZernike", "rlnMagMat00", "rlnMagMat01",
                "rlnMagMat10", "rlnMagMat11")
_ABERRATION_KEYS = ("beam_tilt", "odd_zernike", "even_zernike", "mag_matrix")


def import_relion5_tomo(repo: Repository, tomograms: str | Path, *, source: str, project: str | Path = ".",
                        polarity: PolarityChoice | None = None,
                        particles: str | Path | None = None, species: SpeciesFiles | None = None,
                        copy: bool = False, ignore_unmatched: bool = False, population: str = "population",
                        branch: str | None = None, message: str | None = None,
                        coordinate_pixel_size: float | None = None) -> ImportResult:
    """Import the tilt series of a tomograms.star (and a species from ``particles`` + maps) in one commit."""
    tomograms, project = Path(tomograms), Path(project)
    if (species is None) != (particles is None):
        raise InvalidInput("a species needs both a particles STAR file and its maps")
    staging = Staging(repo)
    try:
        items = tomo_items(tomograms, project, staging, copy=copy)
        if particles is not None:
            items = with_particle_optics(items, Path(particles))
        hashes = [it.save(staging.objects) for it in items]
        ds = DataSource(source, {it.key: h for it, h in zip(items, hashes)}, {"origin": "relion5-tomo"})
        new_species = {}
        if species is not None and particles is not None:
            index = {it.name: [(source, h, it)] for it, h in zip(items, hashes)}
            rows = read_relion_particles(particles, index, ignore_unmatched=ignore_unmatched,
                                         objects=staging.objects, coordinate_pixel_size=coordinate_pixel_size)
            maps = read_species_maps(species.half1, species.half2, species.mask)
            used = {it.key for it in rows.items}
            new_species[species.name] = build_species(
                staging.objects, name=species.name, maps=maps, rows=rows, diameter=species.diameter,
                symmetry=species.symmetry, temporal_samples=species.temporal_samples, star_path=particles,
                contributors=[h for it, h in zip(items, hashes) if it.key in used],
                id_context=import_context(repo, current_population(repo, branch), repo.head(branch), particles))
        op = {"name": "import-relion5-tomo", "tomograms": str(tomograms), "project": str(project),
              "particles": str(particles) if particles else None, "source": source, "copy": copy,
              "species": species.name if species else None}
        if new_species and rows.metadata.get("relion", {}).get("halves"):
            op["halves"] = rows.metadata["relion"]["halves"]
        return staging.commit(population_name=population, sources={source: ds}, species=new_species,
                              message=message or f"Import RELION 5 tilt series as source {source!r}",
                              operation=op, branch=branch, polarity=polarity)
    finally:
        staging.close()
