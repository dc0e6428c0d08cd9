"""Import a RELION single-particle project: micrographs (or movies) as a frame-series source,
optionally with a species from the particle STAR file and maps.

Sources followed: RELION 3.1+/5 STAR layout (src/metadata_label.h). Micrograph pixel
size: micrographs.star data_optics rlnMicrographPixelSize if given, else particles
data_optics rlnMicrographPixelSize (it must agree with each MRC header's voxel size when set),
else the MRC header's voxel size, else rlnMicrographOriginalPixelSize (the movies' pixel size;
micrographs may be binned). Per-micrograph CTF: micrographs.star
rlnDefocusU/V/Angle, else the first particle of that micrograph (particles keep their own
defocus, :mod:`~mrepo.io.relion_particles`). Every optics group is kept: the item's group
number and name, and CtfRefine's beam tilt, odd/even Zernike coefficients and magnification
matrix (from the particles' optics table, where CtfRefine writes them) go to ``Item.imaging``
(:func:`optics_imaging`); the other optics and micrograph columns (rlnMicrographOriginalPixelSize,
rlnMtfFileName, CTF-fit statistics, movie names, ...) to ``Item.metadata["relion_optics"]`` and
``["relion_micrograph"]`` and are written back on export. Voltages, pixel sizes and defoci must be
positive. Paths in STAR files are relative to the RELION project folder. Items are named by the
micrograph file name without folders and extension (the raw uri keeps the full path).
No Fourier layout is involved in this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..graph import DataSource, Item, Repository
from ..store import InvalidInput
from .identity import import_context
from .mrc import mrc_info
from .relion_layouts import read_particle_blocks
from .relion_particles import read_relion_particles
from .relion_passthrough import row_values
from .species_build import build_species, read_species_maps, same_pixel
from .staging import ImportResult, PolarityChoice, Staging, current_population, name_key, raw_data
from .star import UNDERFOCUS, block, integers, numeric, positive, read_star, require_columns, strings

__all__ = ["SpeciesFiles", "import_relion_spa", "optics_by_group"]


@dataclass(frozen=True)
class SpeciesFiles:
    """A species to create from a RELION refinement: name, maps, diameter (Å), symmetry."""

    name: str
    half1: Path
    half2: Path
    mask: Path
    diameter: float
    symmetry: str = "C1"
    temporal_samples: int = 1


_OPTICS_MODELLED = {"rlnOpticsGroup", "rlnOpticsGroupName", "rlnVoltage", "rlnSphericalAberration",
                    "rlnAmplitudeContrast", "rlnMicrographPixelSize", "rlnBeamTiltX", "rlnBeamTiltY", "rlnOddZernike",
                    "rlnEvenZernike", "rlnMagMat00", "rlnMagMat01", "rlnMagMat10", "rlnMagMat11"}
_MIC_MODELLED = {"rlnMicrographName", "rlnOpticsGroup", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
                 "rlnPhaseShift"}


def optics_by_group(blocks: dict[str, pd.DataFrame], path: Path, columns: list[str]) -> dict[int, dict]:
    """data_optics rows by rlnOpticsGroup with the given numeric columns (missing ones skipped)."""
    df = block(blocks, "optics", path)
    require_columns(df, ["rlnOpticsGroup"], path, "optics")
    groups = numeric(df, "rlnOpticsGroup", path, "optics").astype(int)
    out: dict[int, dict] = {int(g): {} for g in groups}
    for c in columns:
        if c in df.columns:
            for g, v in zip(groups, numeric(df, c, path, "optics")):
                out[int(g)][c] = float(v)
    return out


def _zernike(text: object, path: Path, column: str, row: int) -> list[float]:
    """RELION's ``[a,b,c]`` list (rlnOddZernike / rlnEvenZernike) as floats."""
    s = str(text).strip()
    try:
        if not (s.startswith("[") and s.endswith("]")):
            raise ValueError
        values = [float(v) for v in s[1:-1].split(",") if v.strip()]
    except ValueError:
        raise InvalidInput(f"{path}: data_optics column {column} row {row + 1}: {s[:40]!r} is not a list "
                           "like [0.1,0.2]") from None
    if not all(np.isfinite(values)):
        raise InvalidInput(f"{path}: data_optics column {column} row {row + 1}: {s[:40]!r} is not finite")
    return values


def optics_imaging(optics: pd.DataFrame, row: int, path: Path) -> dict:
    """Optics-group fields of ``Item.imaging``: group number/name and CtfRefine aberrations when given:
    beam_tilt [x, y] mrad, odd_zernike / even_zernike (RELION's Zernike coefficient lists, rad),
    mag_matrix [[m00, m01], [m10, m11]] (anisotropic magnification on image coordinates)."""
    out: dict = {"optics_group": int(numeric(optics, "rlnOpticsGroup", path, "optics")[row])}
    if "rlnOpticsGroupName" in optics.columns:
        out["optics_group_name"] = str(optics["rlnOpticsGroupName"].iloc[row])
    if "rlnBeamTiltX" in optics.columns or "rlnBeamTiltY" in optics.columns:
        out["beam_tilt"] = [float(numeric(optics, c, path, "optics")[row]) if c in optics.columns else 0.0
                            for c in ("rlnBeamTiltX", "rlnBeamTiltY")]
    for col, key in (("rlnOddZernike", "odd_zernike"), ("rlnEvenZernike", "even_zernike")):
        if col in optics.columns:
            out[key] = _zernike(optics[col].iloc[row], path, col, row)
    mags = [f"rlnMagMat{i}{j}" for i in range(2) for j in range(2)]
    if any(m in optics.columns for m in mags):
        v = [float(numeric(optics, m, path, "optics")[row]) if m in optics.columns else float(m[-2] == m[-1])
             for m in mags]
        out["mag_matrix"] = [v[:2], v[2:]]
    return out


def _optics_row(optics: pd.DataFrame, group: int, src: Path, where: str) -> int:
    groups = numeric(optics, "rlnOpticsGroup", src, "optics").astype(int).tolist()
    if group not in groups:
        raise InvalidInput(f"{src}: {where}: optics group {group} is not in data_optics (groups: {sorted(groups)})")
    return groups.index(group)


def _micrograph_table(particles: Path, micrographs: Path | None) -> tuple[list[str], dict[str, dict], Path]:
    """Unique micrograph names in file order with optics, CTF and passthrough values for each."""
    pblocks, _ = read_particle_blocks(particles)
    if micrographs:
        src, bname = micrographs, "micrographs"
        mblocks = read_star(micrographs)
        df = block(mblocks, "micrographs", src)
        optics = block(mblocks, "optics", src)
        require_columns(optics, ["rlnOpticsGroup"], src, "optics")
    else:
        src, bname, df, optics = particles, "particles", pblocks["particles"], pblocks["optics"]
    require_columns(df, ["rlnMicrographName", "rlnOpticsGroup", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"],
                    src, bname)
    for c in ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"):
        require_columns(optics, [c], src, "optics")
    if "rlnMicrographPixelSize" not in optics.columns and "rlnMicrographOriginalPixelSize" not in optics.columns:
        raise InvalidInput(f"{src}: block data_optics lacks required column rlnMicrographPixelSize "
                           f"(or rlnMicrographOriginalPixelSize)")
    pix_col = "rlnMicrographPixelSize" if "rlnMicrographPixelSize" in optics.columns \
        else "rlnMicrographOriginalPixelSize"
    volt = positive(optics, "rlnVoltage", src, "optics")
    pixels = positive(optics, pix_col, src, "optics")
    for c in ("rlnDefocusU", "rlnDefocusV"):
        positive(df, c, src, bname, allow_zero=True, unit=" Å", why=UNDERFOCUS)
    names = strings(df, "rlnMicrographName", src, bname)
    groups = numeric(df, "rlnOpticsGroup", src, bname).astype(int)
    ctf = np.stack([numeric(df, c, src, bname) for c in ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle")], 1)
    phase = numeric(df, "rlnPhaseShift", src, bname) if "rlnPhaseShift" in df.columns else None
    pdf, poptics = pblocks["particles"], pblocks["optics"]
    first_particle: dict[str, int] = {}
    for i, n in enumerate(strings(pdf, "rlnMicrographName", particles, "particles")):
        first_particle.setdefault(n, i)
    pgroups = integers(pdf, "rlnOpticsGroup", particles, "particles")
    info: dict[str, dict] = {}
    order: list[str] = []
    for i, (n, g) in enumerate(zip(names, groups)):
        if n in info:
            continue
        r = _optics_row(optics, int(g), src, f"data_{bname} column rlnOpticsGroup row {i + 1}")
        imaging = {"voltage": float(volt[r]),
                   "cs": float(numeric(optics, "rlnSphericalAberration", src, "optics")[r]),
                   "amplitude_contrast": float(numeric(optics, "rlnAmplitudeContrast", src, "optics")[r]),
                   **optics_imaging(optics, r, src)}
        if n in first_particle:  # CtfRefine's aberrations live in the particles' optics group
            pr = _optics_row(poptics, int(pgroups[first_particle[n]]), particles,
                             f"data_particles column rlnOpticsGroup row {first_particle[n] + 1}")
            aberr = optics_imaging(poptics, pr, particles)
            imaging.update({k: v for k, v in aberr.items() if k not in ("optics_group", "optics_group_name")})
        metadata = {"relion_optics": row_values(optics, r, _OPTICS_MODELLED)}
        if micrographs:
            metadata["relion_micrograph"] = row_values(df, i, _MIC_MODELLED)
        metadata = {k: v for k, v in metadata.items() if v}
        info[n] = {"imaging": imaging, "pixel": float(pixels[r]), "pixel_column": pix_col, "ctf": ctf[i],
                   "phase": None if phase is None else phase[i], "metadata": metadata}
        order.append(n)
    return order, info, src


def spa_items(names: list[str], info: dict[str, dict], project: Path, staging: Staging, *, copy: bool,
              dose_per_frame: float, src: Path) -> list[Item]:
    """One frame-series Item per micrograph (header, pixel size and name checks before any write)."""
    items: list[Item] = []
    seen: dict[str, str] = {}
    if not np.isfinite(dose_per_frame) or dose_per_frame < 0:
        raise InvalidInput(f"dose per frame must be a non-negative number of e-/Å², got {dose_per_frame}")
    for n in names:
        key = name_key(n)
        if key in seen:
            raise InvalidInput(f"{src}: micrographs {seen[key]!r} and {n!r} have the same name {key!r}")
        seen[key] = n
        path = project / n
        header = mrc_info(path)
        d = info[n]
        if d["pixel_column"] == "rlnMicrographOriginalPixelSize" and header.voxel_size > 0:
            # the movies' pixel size; micrographs may be binned (never finer): the MRC header says by how much
            if header.voxel_size < d["pixel"] * (1 - 1e-3):
                raise InvalidInput(f"{path}: MRC voxel size {header.voxel_size} Å is finer than {src} "
                                   f"rlnMicrographOriginalPixelSize {d['pixel']} Å (the movies' pixel size)")
            d = {**d, "pixel": float(header.voxel_size)}
        if header.voxel_size > 0 and not same_pixel(header.voxel_size, d["pixel"]):
            raise InvalidInput(f"{path}: MRC voxel size {header.voxel_size} Å disagrees with {src} pixel size "
                               f"{d['pixel']} Å")
        nframes = header.nz
        imaging = {"pixel_size": d["pixel"], **d["imaging"], "dimensions": [header.nx, header.ny, nframes],
                   "exposure": [float(dose_per_frame)] * nframes}
        models = {"ctf": staging.objects.put_array(np.tile(np.asarray(d["ctf"], np.float64), (nframes, 1)),
                                                   what=f"{n} ctf")}
        if d["phase"] is not None:
            models["phase_shift"] = staging.objects.put_array(np.full(nframes, float(d["phase"])))
        items.append(Item("frames", key, raw_data(path, copy=copy, staging=staging), imaging, models,
                          metadata=d["metadata"]))
    return items


def import_relion_spa(repo: Repository, particles: str | Path, *, source: str, project: str | Path = ".",
                      polarity: PolarityChoice | None = None,
                      micrographs: str | Path | None = None, species: SpeciesFiles | None = None,
                      copy: bool = False, dose_per_frame: float = 0.0, ignore_unmatched: bool = False,
                      population: str = "population", branch: str | None = None,
                      message: str | None = None) -> ImportResult:
    """Import micrographs named by a particle STAR file (and optionally a species) in one commit."""
    particles, project = Path(particles), Path(project)
    mics = Path(micrographs) if micrographs else None
    staging = Staging(repo)
    try:
        names, info, src = _micrograph_table(particles, mics)
        items = spa_items(names, info, project, staging, copy=copy, dose_per_frame=dose_per_frame, src=src)
        hashes = [it.save(staging.objects) for it in items]
        ds = DataSource(source, {it.key: h for it, h in zip(items, hashes)}, {"origin": "relion-spa"})
        new_species = {}
        if species is not None:
            index = {it.name: [(source, h, it)] for it, h in zip(items, hashes)}
            rows = read_relion_particles(particles, index, ignore_unmatched=ignore_unmatched,
                                         objects=staging.objects)
            maps = read_species_maps(species.half1, species.half2, species.mask)
            used = {it.key for it in rows.items}
            sp = build_species(staging.objects, name=species.name, maps=maps, rows=rows, diameter=species.diameter,
                               symmetry=species.symmetry, temporal_samples=species.temporal_samples,
                               star_path=particles,
                               contributors=[h for it, h in zip(items, hashes) if it.key in used],
                               id_context=import_context(repo, current_population(repo, branch), repo.head(branch),
                                                         particles))
            new_species[species.name] = sp
        op = {"name": "import-relion-spa", "particles": str(particles), "micrographs": str(mics) if mics else None,
              "project": str(project), "source": source, "copy": copy,
              "species": species.name if species else None}
        if species is not None and rows.metadata.get("relion", {}).get("halves"):
            op["halves"] = rows.metadata["relion"]["halves"]
        return staging.commit(population_name=population, sources={source: ds}, species=new_species,
                              message=message or f"Import RELION single-particle data as source {source!r}",
                              operation=op, branch=branch, polarity=polarity)
    finally:
        staging.close()
