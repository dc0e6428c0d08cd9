"""Export a commit as RELION files (RELION 5 tomography and single-particle layouts).

Layout under ``out``::

    tomograms.star                 data_global (tilt-series items), RELION 5 columns
    tilt_series/<TomoName>.star    data_<TomoName>: per-tilt refined angles, shifts, defocus
    micrographs.star               data_optics + data_micrographs (frame-series items)
    <species>/particles.star       refined poses (RELION 5 tomo or SPA particle layout)
    <species>/half1.mrc half2.mrc mask.mrc   maps, voxel size = species pixel size, origin 0
    <species>/fsc.star             data_fsc, when the species has an FSC curve

Raw data are named by absolute path (``k@stack.mrc`` for tilt stacks, 1-based), tilt-series
STAR paths are relative to ``out``, so importing with ``project=out`` reads them back.
Coordinates are written with :func:`~mrepo.io.exact.invert_exact` so that re-import
reproduces them bit for bit; particle rows follow each item's rank order (ids) for the
same reason. Only the first temporal sample of each particle is written; frame-series
particle heights (z) and per-frame CTF changes beyond frame 0 are not representable in
RELION single-particle files and are dropped. No Fourier layout is involved in this module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..graph import Item, ParticleTable, Population, Repository, Species
from ..store import InvalidInput
from .exact import invert_exact
from .mrc import write_mrc
from .raw_access import exports_raw_data, raw_paths
from .relion_particles import tomo_centre
from .staging import split_particle_id
from .star import write_star

__all__ = ["export_relion", "population_items", "write_species_files", "particles_frame"]


def population_items(repo: Repository, pop: Population) -> dict[str, Item]:
    """Every item of a population by raw-data key."""
    out: dict[str, Item] = {}
    for sh in pop.sources.values():
        for key, ih in repo.source(sh).items.items():
            out[key] = repo.item(ih)
    return out


def _arr(repo: Repository, item: Item, name: str) -> np.ndarray | None:
    h = item.models.get(name)
    return None if h is None else repo.objects.get_array(h)


def tilt_names(repo: Repository, item: Item) -> list[str]:
    paths = raw_paths(repo, item)
    n = int(item.imaging["dimensions"][2])
    if len(paths) == 1:
        return [f"{k}@{paths[0]}" for k in range(1, n + 1)]
    return [str(p) for p in paths]


def _tilt_series_frame(repo: Repository, item: Item) -> pd.DataFrame:
    n = int(item.imaging["dimensions"][2])
    ctf, stage, shifts = (_arr(repo, item, k) for k in ("ctf", "stage_angles", "global_shifts"))
    if ctf is None or stage is None or shifts is None:
        raise InvalidInput(f"item {item.name!r} lacks ctf, stage_angles or global_shifts models")
    df = pd.DataFrame({
        "rlnMicrographName": tilt_names(repo, item),
        "rlnTomoNominalStageTiltAngle": np.asarray(item.imaging.get("tilt_angles", stage[:, 1]), np.float64),
        "rlnMicrographPreExposure": np.asarray(item.imaging.get("pre_exposure", np.zeros(n)), np.float64),
        "rlnDefocusU": ctf[:, 0], "rlnDefocusV": ctf[:, 1], "rlnDefocusAngle": ctf[:, 2],
        "rlnTomoXTilt": stage[:, 0], "rlnTomoYTilt": stage[:, 1], "rlnTomoZRot": stage[:, 2],
        "rlnTomoXShiftAngst": shifts[:, 0], "rlnTomoYShiftAngst": shifts[:, 1]})
    phase = _arr(repo, item, "phase_shift")
    if phase is not None:
        df["rlnPhaseShift"] = phase
    return df


def _tomograms_frame(items: list[Item]) -> pd.DataFrame:
    rows = []
    for it in items:
        im = it.imaging
        pix = float(im["pixel_size"])
        size = [int(round(v / pix)) for v in im["volume_dimensions"]]
        rows.append({"rlnTomoName": it.name, "rlnVoltage": float(im["voltage"]),
                     "rlnSphericalAberration": float(im["cs"]), "rlnAmplitudeContrast": float(im["amplitude_contrast"]),
                     "rlnMicrographOriginalPixelSize": pix, "rlnTomoHand": float(im.get("hand", 1.0)),
                     "rlnTomoTiltSeriesPixelSize": pix, "rlnTomoTiltSeriesStarFile": f"tilt_series/{it.name}.star",
                     "rlnTomoSizeX": size[0], "rlnTomoSizeY": size[1], "rlnTomoSizeZ": size[2]})
    return pd.DataFrame(rows)


def _optics_key(it: Item) -> tuple[float, float, float, float]:
    im = it.imaging
    return (float(im["voltage"]), float(im["cs"]), float(im["amplitude_contrast"]), float(im["pixel_size"]))


def _micrographs(repo: Repository, items: list[Item]) -> dict[str, pd.DataFrame]:
    keys = sorted({_optics_key(it) for it in items})
    optics = pd.DataFrame([{"rlnOpticsGroupName": f"opticsGroup{g + 1}", "rlnOpticsGroup": g + 1,
                            "rlnMicrographOriginalPixelSize": k[3], "rlnVoltage": k[0], "rlnSphericalAberration": k[1],
                            "rlnAmplitudeContrast": k[2], "rlnMicrographPixelSize": k[3]} for g, k in enumerate(keys)])
    rows = []
    for it in items:
        ctf = _arr(repo, it, "ctf")
        row = {"rlnMicrographName": str(raw_paths(repo, it)[0]), "rlnOpticsGroup": keys.index(_optics_key(it)) + 1,
               "rlnDefocusU": float(ctf[0, 0]), "rlnDefocusV": float(ctf[0, 1]), "rlnDefocusAngle": float(ctf[0, 2])}
        phase = _arr(repo, it, "phase_shift")
        if phase is not None:
            row["rlnPhaseShift"] = float(phase[0])
        rows.append(row)
    return {"optics": optics, "micrographs": pd.DataFrame(rows)}


def _order(table: ParticleTable, items: dict[str, Item]) -> np.ndarray:
    keys = table.item_keys()
    names = np.array([items[k].name for k in keys.tolist()], dtype=object)
    rank = split_particle_id(table.ids)
    return np.lexsort((rank, names)) if len(table) else np.zeros(0, dtype=np.int64)


def particles_frame(repo: Repository, species: Species, table: ParticleTable, items: dict[str, Item]
                    ) -> dict[str, pd.DataFrame | dict]:
    """RELION particle STAR blocks for one species (tomo layout if its items are tilt series)."""
    missing = [k for k in table.items if k not in items]
    if missing:
        raise InvalidInput(f"species {species.name!r} refers to item {missing[0][:12]} that is not in the population")
    kinds = {items[k].kind for k in table.items}
    if len(kinds) > 1:
        raise InvalidInput(f"species {species.name!r} mixes frame and tilt series; RELION files hold one kind")
    order = _order(table, items)
    its = [items[k] for k in table.item_keys()[order].tolist()]
    xyz = table.coordinates[order, 0, :]
    ang = table.angles[order, 0, :]
    okeys = sorted({_optics_key(it) for it in its}) or [(300.0, 2.7, 0.1, species.pixel_size)]
    group = np.array([okeys.index(_optics_key(it)) + 1 for it in its], dtype=np.int64)
    optics = pd.DataFrame([{"rlnOpticsGroup": g + 1, "rlnOpticsGroupName": f"opticsGroup{g + 1}",
                            "rlnSphericalAberration": k[1], "rlnVoltage": k[0], "rlnAmplitudeContrast": k[2],
                            "rlnImagePixelSize": float(species.pixel_size), "rlnImageSize": int(species.box),
                            "rlnImageDimensionality": 2} for g, k in enumerate(okeys)])
    df = pd.DataFrame()
    if kinds == {"tilts"}:
        optics["rlnTomoTiltSeriesPixelSize"] = [k[3] for k in okeys]
        optics["rlnCtfDataAreCtfPremultiplied"] = 1
        optics["rlnTomoSubtomogramBinning"] = [float(species.pixel_size) / k[3] for k in okeys]
        centre = np.stack([tomo_centre(it) for it in its]) if its else np.zeros((0, 3))
        cen = invert_exact(xyz, lambda v: v + centre, xyz - centre)
        df["rlnTomoName"] = [it.name for it in its]
        for a, i in zip("XYZ", range(3)):
            df[f"rlnCenteredCoordinate{a}Angst"] = cen[:, i]
    else:
        pix = np.array([float(it.imaging["pixel_size"]) for it in its])[:, None]
        px = invert_exact(xyz[:, :2], lambda v: v * pix, xyz[:, :2] / pix)
        df["rlnMicrographName"] = [str(raw_paths(repo, it)[0]) for it in its]
        df["rlnCoordinateX"], df["rlnCoordinateY"] = px[:, 0], px[:, 1]
    df["rlnAngleRot"], df["rlnAngleTilt"], df["rlnAnglePsi"] = ang[:, 0], ang[:, 1], ang[:, 2]
    df["rlnOpticsGroup"] = group
    df["rlnRandomSubset"] = table.half[order].astype(np.int64)
    if kinds != {"tilts"}:
        if "defocus" in table.extra:
            d = table.extra["defocus"][order]
        else:
            d = np.stack([_arr(repo, it, "ctf")[0] for it in its]) if its else np.zeros((0, 3))
        df["rlnDefocusU"], df["rlnDefocusV"], df["rlnDefocusAngle"] = d[:, 0], d[:, 1], d[:, 2]
        if "phase_shift" in table.extra:
            df["rlnPhaseShift"] = table.extra["phase_shift"][order]
    blocks: dict[str, pd.DataFrame | dict] = {}
    if kinds == {"tilts"}:
        blocks["general"] = {"rlnTomoSubTomosAre2DStacks": 1}
    blocks["optics"] = optics
    blocks["particles"] = df
    return blocks


def write_species_files(repo: Repository, species: Species, items: dict[str, Item], out: Path) -> list[Path]:
    """Maps, mask, particles STAR and FSC STAR of one species into ``out/<name>/``."""
    folder = out / species.name
    written = []
    for fname, h in (("half1.mrc", species.half1), ("half2.mrc", species.half2), ("mask.mrc", species.mask)):
        written.append(write_mrc(folder / fname, repo.objects.get_array(h), species.pixel_size, origin=(0, 0, 0)))
    table = repo.particles(species.particles)
    written.append(write_star(folder / "particles.star", particles_frame(repo, species, table, items)))
    if species.fsc is not None:
        fsc = np.asarray(repo.objects.get_array(species.fsc), np.float64)
        curve = fsc if fsc.ndim == 1 else fsc[..., -1].reshape(-1)
        shells = np.arange(len(curve))
        res = shells / (species.box * species.pixel_size)
        with np.errstate(divide="ignore"):
            ang = np.where(shells > 0, 1.0 / np.where(res > 0, res, 1.0), 999.0)
        written.append(write_star(folder / "fsc.star", {"fsc": pd.DataFrame({
            "rlnSpectralIndex": shells.astype(np.int64), "rlnResolution": res, "rlnAngstromResolution": ang,
            "rlnFourierShellCorrelation": curve})}))
    return written


@exports_raw_data
def export_relion(repo: Repository, rev: str, out: str | Path) -> list[Path]:
    """Write the population at ``rev`` as RELION files under ``out``; returns the written paths."""
    out = Path(out)
    pop = repo.population(rev)
    items = population_items(repo, pop)
    ordered = sorted(items.values(), key=lambda it: it.name)
    tilts = [it for it in ordered if it.kind == "tilts"]
    frames = [it for it in ordered if it.kind == "frames"]
    written: list[Path] = []
    for it in tilts:
        written.append(write_star(out / "tilt_series" / f"{it.name}.star", {it.name: _tilt_series_frame(repo, it)}))
    if tilts:
        written.append(write_star(out / "tomograms.star", {"global": _tomograms_frame(tilts)}))
    if frames:
        written.append(write_star(out / "micrographs.star", _micrographs(repo, frames)))
    for name in sorted(pop.species):
        written += write_species_files(repo, repo.species(pop.species[name]), items, out)
    return written
