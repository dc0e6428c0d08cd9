"""Import a RELION single-particle project: micrographs (or movies) as a frame-series source,
optionally with a species from the particle STAR file and maps.

Sources followed: RELION 3.1+/5 STAR layout (src/metadata_label.h). Micrograph pixel
size: micrographs.star data_optics rlnMicrographPixelSize if given, else particles
data_optics rlnMicrographPixelSize, else rlnMicrographOriginalPixelSize; it must agree
with each MRC header's voxel size (when set). Per-micrograph CTF: micrographs.star
rlnDefocusU/V/Angle, else the first particle of that micrograph. Paths in STAR files
are relative to the RELION project folder. Items are named by the micrograph file name
without folders and extension (the raw uri keeps the full path).
No Fourier layout is involved in this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..graph import DataSource, Item, Repository
from ..store import InvalidInput
from .mrc import mrc_info
from .relion_particles import read_relion_particles
from .species_build import build_species, read_species_maps, same_pixel
from .staging import ImportResult, PolarityChoice, Staging, name_key, raw_data
from .star import block, numeric, read_star, require_columns, strings

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


def _micrograph_table(particles: Path, micrographs: Path | None) -> tuple[list[str], dict[str, dict], Path]:
    """Unique micrograph names in file order with optics and CTF values for each."""
    src = micrographs or particles
    blocks = read_star(src)
    df = block(blocks, "micrographs" if micrographs else "particles", src)
    bname = "micrographs" if micrographs else "particles"
    require_columns(df, ["rlnMicrographName", "rlnOpticsGroup", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"],
                    src, bname)
    cols = ["rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnMicrographPixelSize",
            "rlnMicrographOriginalPixelSize"]
    optics = optics_by_group(blocks, src, cols)
    names = strings(df, "rlnMicrographName", src, bname)
    groups = numeric(df, "rlnOpticsGroup", src, bname).astype(int)
    ctf = np.stack([numeric(df, c, src, bname) for c in ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle")], 1)
    phase = numeric(df, "rlnPhaseShift", src, bname) if "rlnPhaseShift" in df.columns else None
    info: dict[str, dict] = {}
    order: list[str] = []
    for i, (n, g) in enumerate(zip(names, groups)):
        if n in info:
            continue
        if int(g) not in optics:
            raise InvalidInput(f"{src}: data_{bname} row {i + 1}: optics group {g} is not in data_optics")
        o = optics[int(g)]
        for c in ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"):
            if c not in o:
                raise InvalidInput(f"{src}: block data_optics lacks required column {c}")
        pix = o.get("rlnMicrographPixelSize", o.get("rlnMicrographOriginalPixelSize"))
        if pix is None:
            raise InvalidInput(f"{src}: block data_optics lacks required column rlnMicrographPixelSize")
        info[n] = {"optics": o, "pixel": pix, "ctf": ctf[i], "phase": None if phase is None else phase[i]}
        order.append(n)
    return order, info, src


def spa_items(names: list[str], info: dict[str, dict], project: Path, staging: Staging, *, copy: bool,
              dose_per_frame: float, src: Path) -> list[Item]:
    """One frame-series Item per micrograph (header, pixel size and name checks before any write)."""
    items: list[Item] = []
    seen: dict[str, str] = {}
    for n in names:
        key = name_key(n)
        if key in seen:
            raise InvalidInput(f"{src}: micrographs {seen[key]!r} and {n!r} have the same name {key!r}")
        seen[key] = n
        path = project / n
        header = mrc_info(path)
        d = info[n]
        if header.voxel_size > 0 and not same_pixel(header.voxel_size, d["pixel"]):
            raise InvalidInput(f"{path}: MRC voxel size {header.voxel_size} Å disagrees with {src} pixel size "
                               f"{d['pixel']} Å")
        o = d["optics"]
        nframes = header.nz
        imaging = {"pixel_size": d["pixel"], "voltage": o["rlnVoltage"], "cs": o["rlnSphericalAberration"],
                   "amplitude_contrast": o["rlnAmplitudeContrast"], "dimensions": [header.nx, header.ny, nframes],
                   "exposure": [float(dose_per_frame)] * nframes}
        models = {"ctf": staging.objects.put_array(np.tile(np.asarray(d["ctf"], np.float64), (nframes, 1)),
                                                   what=f"{n} ctf")}
        if d["phase"] is not None:
            models["phase_shift"] = staging.objects.put_array(np.full(nframes, float(d["phase"])))
        items.append(Item("frames", key, raw_data(path, copy=copy, staging=staging), imaging, models))
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
            rows = read_relion_particles(particles, index, ignore_unmatched=ignore_unmatched)
            maps = read_species_maps(species.half1, species.half2, species.mask)
            used = {it.key for it in rows.items}
            sp = build_species(staging.objects, name=species.name, maps=maps, rows=rows, diameter=species.diameter,
                               symmetry=species.symmetry, temporal_samples=species.temporal_samples,
                               star_path=particles,
                               contributors=[h for it, h in zip(items, hashes) if it.key in used])
            new_species[species.name] = sp
        op = {"name": "import-relion-spa", "particles": str(particles), "micrographs": str(mics) if mics else None,
              "project": str(project), "source": source, "copy": copy,
              "species": species.name if species else None}
        return staging.commit(population_name=population, sources={source: ds}, species=new_species,
                              message=message or f"Import RELION single-particle data as source {source!r}",
                              operation=op, branch=branch, polarity=polarity)
    finally:
        staging.close()
