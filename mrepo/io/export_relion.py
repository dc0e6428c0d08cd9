"""Export a commit as RELION files carrying the refined state (RELION 5 tomography and single particle).

Layout under ``out``::

    tomograms.star                 data_global (tilt-series items), RELION 5 columns
    tilt_series/<TomoName>.star    data_<TomoName>: per tilt the refined stage angles (M's stage-angle
                                   corrections folded in), refined shifts and defocus
    micrographs.star               data_optics (every optics group) + data_micrographs (frame-series items)
    motion/<name>.star             RELION motion metadata of a movie (data_general, data_global_shift), named by
                                   rlnMicrographMetadata in micrographs.star
    micrographs/<name>.mrc         a movie's frames summed after shifting each by minus its refined global shift
                                   (the micrograph rlnMicrographName names; movies only)
    image_warp/<name>.json         refined image warp of an item (not representable in RELION; sidecar)
    <species>/particles.star       refined poses (RELION 5 tomo or SPA particle layout), ids, passthrough
    <species>/half1.mrc half2.mrc mask.mrc   maps, voxel size = species pixel size, origin 0
    <species>/fsc.star             data_fsc, when the species has an FSC curve

Paths: every file name inside a STAR file is relative to ``project`` (the RELION project folder the
export is used from; default ``out``), so exporting with the source project's folder gives back the
source's relative paths; ``k@stack.mrc`` for tilt stacks (1-based).

Refined state (columns that refinement changes, everything else is written back as imported):

* frames: rlnDefocusU/V/Angle of a particle = item CTF (frame 0) + particle height z + astigmatism
  residual (:mod:`~mrepo.io.relion_geometry`); micrograph rlnDefocusU/V/Angle = item CTF;
  rlnOriginX/YAngst = rlnCoordinate * pixel - position, where the position is the particle's
  position in the micrograph as refinement sees it: for a one-frame item (a micrograph) trajectory +
  refined global shift + image warp; for a movie in the sum aligned by the exported global shifts (the
  shifts cancel, warp averaged over frames). Warp needs the ``positions`` callable (the CLI passes
  :func:`mrepo.workers.positions.micrograph_positions`; io may not import workers); without it the
  position is the first temporal sample plus, for one-frame items, the global shift;
  data_global_shift: ``rlnMicrographShiftX/Y = -global_shift / rlnMicrographOriginalPixelSize`` (px): RELION
  stores the shift that *aligns* a frame, the opposite of the content displacement mrepo refines (measured
  with RELION 3.1.3's relion_motion_refine: with the opposite sign polishing degrades the map, 5.5 -> 7.3 Å);
* tilts: rlnTomoXTilt/YTilt/ZRot = angles of ``Rxyz(ω) A`` (stage corrections folded),
  rlnTomoX/YShiftAngst = refined shifts, rlnDefocusU/V/Angle = refined per-tilt CTF, particles'
  rlnOriginX/Y/ZAngst = passthrough centred coordinate - refined position, rlnAngleRot/Tilt/Psi = refined pose
  with the passthrough subtomogram orientation factored out.

Columns mrepo does not model come back from the passthrough (:mod:`~mrepo.io.relion_passthrough`).
No Fourier layout is involved in this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation

from ..graph import Item, ParticleTable, Population, Repository, Species
from ..store import InvalidInput
from .exact import invert_exact
from .item_models import model_array
from .mrc import read_mrc, write_mrc
from .raw_access import exports_raw_data, raw_paths, raw_sections
from .relion_geometry import fold_stage_corrections, particle_ctf_exact, projection_matrices
from .relion_particles import ID_COLUMN, tomo_centre
from .relion_passthrough import columns_from_extra
from .star import write_star

__all__ = ["export_relion", "population_items", "write_species_files", "particles_frame", "CHANGED_BY_REFINEMENT",
           "NOT_IN_RELION", "relion_unexported"]

#: item models RELION has no field or sidecar for: an export to RELION leaves them out (docs/relion.md)
NOT_IN_RELION = ("volume_warp", "doming", "tilt_movie_shifts")

#: RELION columns whose exported value is the refined one (all others are written back as imported)
CHANGED_BY_REFINEMENT = {
    "tilt series": ["rlnTomoXTilt", "rlnTomoYTilt", "rlnTomoZRot", "rlnTomoXShiftAngst", "rlnTomoYShiftAngst",
                    "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
                    "rlnTomoProjX/Y/Z/W (RELION 4 matrices, recomputed from the refined angles and shifts)"],
    "tomo particles": ["rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst", "rlnAngleRot", "rlnAngleTilt",
                       "rlnAnglePsi"],
    "micrographs": ["rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnMicrographName (movies)"],
    "spa particles": ["rlnOriginXAngst", "rlnOriginYAngst", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi",
                      "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"],
    "normalised": ["rlnTomoName (to the tomogram name)", "rlnMicrographName (relative to the export project)",
                   "rlnTomoTiltSeriesStarFile"],
}


_PROJ = ["rlnTomoProjX", "rlnTomoProjY", "rlnTomoProjZ", "rlnTomoProjW"]


class _Paths:
    """File names as written into STAR files: relative to the project folder."""

    def __init__(self, project: Path):
        self.project = project.resolve()

    def __call__(self, path: Path) -> str:
        return os.path.relpath(Path(path).resolve(), self.project)


def population_items(repo: Repository, pop: Population) -> dict[str, Item]:
    """Every item of a population by raw-data key."""
    out: dict[str, Item] = {}
    for sh in pop.sources.values():
        for key, ih in repo.source(sh).items.items():
            out[key] = repo.item(ih)
    return out



def relion_unexported(repo: Repository, rev: str) -> dict[str, list[str]]:
    """Models of :data:`NOT_IN_RELION` the population at ``rev`` holds: model -> sorted item names (only models
    some item has). :func:`export_relion` leaves them out; the CLI warns with this."""
    found: dict[str, list[str]] = {}
    for item in population_items(repo, repo.population(rev)).values():
        for model in NOT_IN_RELION:
            if model in item.models:
                found.setdefault(model, []).append(item.name)
    return {m: sorted(found[m]) for m in NOT_IN_RELION if m in found}


def tilt_names(repo: Repository, item: Item, rel: _Paths) -> list[str]:
    paths = raw_paths(repo, item)
    n = int(item.imaging["dimensions"][2])
    if len(paths) == 1 and item.raw.format != "manifest":
        return [f"{k}@{rel(paths[0])}" for k in range(1, n + 1)]
    return [rel(p) if s is None else f"{s + 1}@{rel(p)}" for p, s in zip(paths, raw_sections(repo, item))]


def _star_list(values) -> str:
    """RELION's ``[a,b,c]`` list cell (rlnTomoProj*, rlnOdd/EvenZernike), floats in shortest round-trip form."""
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


def _with_passthrough(modelled: dict[str, object], passthrough: dict[str, object]) -> dict[str, object]:
    """Passthrough columns first (source order), then the modelled ones (which win on a clash)."""
    return {**{k: v for k, v in passthrough.items() if k not in modelled}, **modelled}


def _tilt_series_frame(repo: Repository, item: Item, rel: _Paths, fold_stage: bool = True) -> pd.DataFrame:
    n = int(item.imaging["dimensions"][2])
    ctf, stage, shifts = (model_array(repo, item, k) for k in ("ctf", "stage_angles", "global_shifts"))
    if ctf is None or stage is None or shifts is None:
        raise InvalidInput(f"item {item.name!r} lacks ctf, stage_angles or global_shifts models")
    folded = fold_stage_corrections(stage, model_array(repo, item, "stage_corrections") if fold_stage else None)
    modelled: dict[str, object] = {
        "rlnMicrographName": tilt_names(repo, item, rel),
        "rlnTomoNominalStageTiltAngle": np.asarray(item.imaging.get("tilt_angles", stage[:, 1]), np.float64),
        "rlnMicrographPreExposure": np.asarray(item.imaging.get("pre_exposure", np.zeros(n)), np.float64),
        "rlnDefocusU": ctf[:, 0], "rlnDefocusV": ctf[:, 1], "rlnDefocusAngle": ctf[:, 2],
        "rlnTomoXTilt": folded[:, 0], "rlnTomoYTilt": folded[:, 1], "rlnTomoZRot": folded[:, 2],
        "rlnTomoXShiftAngst": shifts[:, 0], "rlnTomoYShiftAngst": shifts[:, 1]}
    phase = model_array(repo, item, "phase_shift")
    if phase is not None:
        modelled["rlnPhaseShift"] = phase
    passthrough = item.metadata.get("relion_tilts", {})
    if all(c in passthrough for c in _PROJ):  # RELION 4 matrices: rewritten from the refined geometry
        pix = float(item.imaging["pixel_size"])
        size = np.rint(np.asarray(item.imaging["volume_dimensions"], np.float64) / pix)
        p = projection_matrices(folded, shifts, pix, size, tuple(int(v) for v in item.imaging["dimensions"][:2]))
        for i, c in enumerate(_PROJ):
            modelled[c] = [_star_list(row) for row in p[:, i, :]]
    return pd.DataFrame(_with_passthrough(modelled, passthrough))


def _tomograms_frame(items: list[Item], out: Path, rel: _Paths) -> pd.DataFrame:
    rows = []
    for it in items:
        im = it.imaging
        pix = float(im["pixel_size"])
        size = [int(round(v / pix)) for v in im["volume_dimensions"]]
        modelled = {"rlnTomoName": it.name, "rlnVoltage": float(im["voltage"]),
                    "rlnSphericalAberration": float(im["cs"]), "rlnAmplitudeContrast": float(im["amplitude_contrast"]),
                    "rlnTomoHand": float(im.get("hand", 1.0)), "rlnTomoTiltSeriesPixelSize": pix,
                    "rlnTomoTiltSeriesStarFile": rel(out / "tilt_series" / f"{it.name}.star"),
                    "rlnTomoSizeX": size[0], "rlnTomoSizeY": size[1], "rlnTomoSizeZ": size[2]}
        passthrough = dict(it.metadata.get("relion_tomogram", {}))
        passthrough.setdefault("rlnMicrographOriginalPixelSize", pix)  # never overwritten when imported
        rows.append(_with_passthrough(modelled, passthrough))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- single particle


def _optics_key(it: Item) -> tuple:
    im = it.imaging
    if "optics_group" in im:
        return ("group", int(im["optics_group"]))
    return ("derived", float(im["voltage"]), float(im["cs"]), float(im["amplitude_contrast"]),
            float(im["pixel_size"]))


def _refined_optics(im: dict) -> dict[str, object]:
    """Optics-group columns whose values refinement updates in ``Item.imaging``: rlnSphericalAberration,
    and when present rlnBeamTiltX/Y (mrad), rlnOddZernike / rlnEvenZernike (rad), rlnMagMat00..11."""
    out: dict[str, object] = {"rlnSphericalAberration": float(im["cs"])}
    if "beam_tilt" in im:
        out["rlnBeamTiltX"], out["rlnBeamTiltY"] = (float(v) for v in im["beam_tilt"])
    for key, col in (("odd_zernike", "rlnOddZernike"), ("even_zernike", "rlnEvenZernike")):
        if key in im:
            out[col] = _star_list(im[key])
    if "mag_matrix" in im:
        for i in range(2):
            for j in range(2):
                out[f"rlnMagMat{i}{j}"] = float(im["mag_matrix"][i][j])
    return out


def _neutral(col: str, value: object) -> object:
    """The value meaning 'no aberration' for an optics column (rows of groups that lack it)."""
    if col in ("rlnOddZernike", "rlnEvenZernike"):
        return _star_list([0.0] * (str(value).count(",") + 1))
    return 1.0 if col in ("rlnMagMat00", "rlnMagMat11") else 0.0


def _with_refined_optics(optics: pd.DataFrame, groups: np.ndarray, its: list[Item]) -> pd.DataFrame:
    """The species' stored optics table with each group's refined optics (:func:`_refined_optics` of the
    first item among the group's particles); other columns and groups stay as imported."""
    first: dict[int, Item] = {}
    for g, it in zip(np.asarray(groups, np.int64).tolist(), its):
        first.setdefault(int(g), it)
    out = optics.copy()
    numbers = pd.to_numeric(out["rlnOpticsGroup"], errors="coerce").tolist() if "rlnOpticsGroup" in out else []
    for r, g in enumerate(numbers):
        it = first.get(int(g)) if g == g else None
        if it is None:
            continue
        for col, value in _refined_optics(it.imaging).items():
            if col not in out.columns:
                out[col] = [_neutral(col, value)] * len(out)
            if _numbers(out[col].iloc[r]) != _numbers(value):  # unchanged cells keep their text
                out[col] = out[col].astype(object)
                out.at[out.index[r], col] = value
    return out


def _numbers(cell: object) -> list[float] | None:
    """A scalar or ``[a,b]`` optics cell as floats (trailing zeros dropped); None when not numeric."""
    try:
        values = [float(v) for v in str(cell).strip("[] ").split(",") if v.strip()]
    except ValueError:
        return None
    while len(values) > 1 and values[-1] == 0.0:
        values.pop()
    return values


def _optics_row(it: Item, number: int) -> dict[str, object]:
    im = it.imaging
    modelled: dict[str, object] = {
        "rlnOpticsGroupName": im.get("optics_group_name", f"opticsGroup{number}"), "rlnOpticsGroup": number,
        "rlnVoltage": float(im["voltage"]), "rlnAmplitudeContrast": float(im["amplitude_contrast"]),
        "rlnMicrographPixelSize": float(im["pixel_size"]), **_refined_optics(im)}
    passthrough = dict(it.metadata.get("relion_optics", {}))
    passthrough.setdefault("rlnMicrographOriginalPixelSize", float(im["pixel_size"]))
    return _with_passthrough(modelled, passthrough)


def _optics_groups(items: list[Item]) -> dict[tuple, int]:
    keys: dict[tuple, int] = {}
    taken = {int(it.imaging["optics_group"]) for it in items if "optics_group" in it.imaging}
    for it in sorted(items, key=lambda i: i.name):
        k = _optics_key(it)
        if k in keys:
            continue
        if k[0] == "group":
            keys[k] = k[1]
        else:
            g = 1
            while g in taken:
                g += 1
            taken.add(g)
            keys[k] = g
    return keys


def _original_pixel(it: Item) -> float:
    v = it.metadata.get("relion_optics", {}).get("rlnMicrographOriginalPixelSize")
    return float(v) if v is not None else float(it.imaging["pixel_size"])


def _write_movie_outputs(repo: Repository, it: Item, out: Path, rel: _Paths, shifts: np.ndarray
                         ) -> tuple[Path, Path]:
    """Motion STAR (RELION's Micrograph::write layout) and the shift-aligned sum of a movie."""
    n = len(shifts)
    orig = _original_pixel(it)
    px = -shifts / orig  # RELION's global shift aligns the frame: minus the content displacement
    movie = raw_paths(repo, it)[0]
    general = {"rlnImageSizeX": int(it.imaging["dimensions"][0]), "rlnImageSizeY": int(it.imaging["dimensions"][1]),
               "rlnImageSizeZ": n, "rlnMicrographMovieName": rel(movie), "rlnMicrographBinning": 1.0,
               "rlnMicrographOriginalPixelSize": orig,
               "rlnMicrographDoseRate": float(np.mean(it.imaging.get("exposure", [0.0]))),
               "rlnMicrographPreExposure": 0.0, "rlnVoltage": float(it.imaging["voltage"]),
               "rlnMicrographStartFrame": 1, "rlnMotionModelVersion": 0}
    motion = out / "motion" / f"{it.name}.star"
    write_star(motion, {"general": general, "global_shift": pd.DataFrame({
        "rlnMicrographFrameNumber": np.arange(1, n + 1, dtype=np.int64), "rlnMicrographShiftX": px[:, 0],
        "rlnMicrographShiftY": px[:, 1]})})
    frames, _ = read_mrc(movie)
    frames = np.asarray(frames, dtype=np.float64).reshape(-1, frames.shape[-2], frames.shape[-1])
    ky = np.fft.fftfreq(frames.shape[-2])[:, None]
    kx = np.fft.rfftfreq(frames.shape[-1])[None, :]
    pix = float(it.imaging["pixel_size"])
    total = np.zeros(frames.shape[-2:])
    for f, (sx, sy) in zip(frames, shifts / pix):  # shift content by -s (in micrograph pixels)
        phase = np.exp(2j * np.pi * (kx * sx + ky * sy))
        total += np.fft.irfft2(np.fft.rfft2(f) * phase, s=f.shape)
    mic = write_mrc(out / "micrographs" / f"{it.name}.mrc", total.astype(np.float32), pix)
    return motion, mic


def _micrograph_path(repo: Repository, it: Item, out: Path) -> Path:
    if int(it.imaging["dimensions"][2]) > 1:
        return out / "micrographs" / f"{it.name}.mrc"
    return raw_paths(repo, it)[0]


def _micrographs(repo: Repository, items: list[Item], out: Path, rel: _Paths) -> tuple[dict, list[Path]]:
    groups = _optics_groups(items)
    first: dict[int, Item] = {}
    for it in sorted(items, key=lambda i: i.name):
        first.setdefault(groups[_optics_key(it)], it)
    optics = pd.DataFrame([_optics_row(first[g], g) for g in sorted(first)])
    rows, written = [], []
    for it in items:
        ctf = model_array(repo, it, "ctf")
        modelled: dict[str, object] = {
            "rlnMicrographName": rel(_micrograph_path(repo, it, out)),
            "rlnOpticsGroup": groups[_optics_key(it)],
            "rlnDefocusU": float(ctf[0, 0]), "rlnDefocusV": float(ctf[0, 1]), "rlnDefocusAngle": float(ctf[0, 2])}
        phase = model_array(repo, it, "phase_shift")
        if phase is not None:
            modelled["rlnPhaseShift"] = float(phase[0])
        shifts = model_array(repo, it, "global_shifts")
        if int(it.imaging["dimensions"][2]) > 1:
            shifts = np.zeros((int(it.imaging["dimensions"][2]), 2)) if shifts is None else shifts
            motion, mic = _write_movie_outputs(repo, it, out, rel, shifts)
            written += [motion, mic]
            modelled["rlnMicrographMetadata"] = rel(motion)
            modelled["rlnMicrographMovieName"] = rel(raw_paths(repo, it)[0])
        rows.append(_with_passthrough(modelled, it.metadata.get("relion_micrograph", {})))
    return {"optics": optics, "micrographs": pd.DataFrame(rows)}, written


# ----------------------------------------------------------------------------- particles


def _order(table: ParticleTable, items: dict[str, Item]) -> np.ndarray:
    keys = table.item_keys()
    names = np.array([items[k].name for k in keys.tolist()], dtype=object)
    return np.lexsort((table.ids, names)) if len(table) else np.zeros(0, dtype=np.int64)


def _item_frame_position(repo: Repository, its: list[Item], xyz: np.ndarray) -> np.ndarray:
    """(N, 2) Å: particle position in its micrograph (one-frame items add their refined global shift)."""
    out = xyz[:, :2].copy()
    cache: dict[str, np.ndarray] = {}
    for i, it in enumerate(its):
        if int(it.imaging["dimensions"][2]) != 1:
            continue
        if it.key not in cache:
            s = model_array(repo, it, "global_shifts")
            cache[it.key] = np.zeros(2) if s is None else s[0]
        if np.any(cache[it.key] != 0):
            out[i] = out[i] + cache[it.key]
    return out


#: ``positions(item, coordinates (N, T, 3) Å, angles (N, T, 3) deg) -> (N, 2) Å``: where refinement sees frame-series
#: particles in their micrograph (``mrepo.workers.positions.micrograph_positions``, image warp included)
PositionsFn = Callable[[Item, np.ndarray, np.ndarray], np.ndarray]


def _spa_positions(repo: Repository, table: ParticleTable, order: np.ndarray, its: list[Item],
                   positions: PositionsFn | None) -> np.ndarray:
    xyz = table.coordinates[order, 0, :]
    if positions is None:
        return _item_frame_position(repo, its, xyz)
    out = np.empty((len(order), 2))
    keys = np.array([it.key for it in its], dtype=object)
    for key in dict.fromkeys(keys.tolist()):
        rows = np.nonzero(keys == key)[0]
        item = its[int(rows[0])]
        out[rows] = positions(item, table.coordinates[order[rows]], table.angles[order[rows]])
    return out


def _spa_columns(repo: Repository, table: ParticleTable, order: np.ndarray, its: list[Item], out: Path,
                 rel: _Paths, passthrough: dict, positions: PositionsFn | None = None) -> dict[str, object]:
    xyz = table.coordinates[order, 0, :]
    pix = np.array([float(it.imaging["pixel_size"]) for it in its])[:, None]
    pos = _spa_positions(repo, table, order, its, positions)
    per_item: dict[str, tuple[str, np.ndarray]] = {}  # micrograph name and CTF, once per item (not per particle)
    for it in its:
        if it.key not in per_item:
            per_item[it.key] = (rel(_micrograph_path(repo, it, out)), model_array(repo, it, "ctf")[0])
    cols: dict[str, object] = {"rlnMicrographName": [per_item[it.key][0] for it in its]}
    if "rlnCoordinateX" in passthrough and "rlnCoordinateY" in passthrough:
        coord = np.stack([np.asarray(passthrough["rlnCoordinateX"], np.float64),
                          np.asarray(passthrough["rlnCoordinateY"], np.float64)], 1)
        guess = coord * pix - pos
        origin = invert_exact(pos, lambda o: np.where(o != 0, coord * pix - o, coord * pix), guess)
        cols["rlnCoordinateX"], cols["rlnCoordinateY"] = coord[:, 0], coord[:, 1]
        cols["rlnOriginXAngst"], cols["rlnOriginYAngst"] = origin[:, 0], origin[:, 1]
    else:
        px = invert_exact(pos, lambda v: v * pix, pos / pix)
        cols["rlnCoordinateX"], cols["rlnCoordinateY"] = px[:, 0], px[:, 1]
    item_ctf = np.stack([per_item[it.key][1] for it in its]) if its else np.zeros((0, 3))
    residual = table.extra["ctf_residual"][order] if "ctf_residual" in table.extra else None
    d = particle_ctf_exact(item_ctf, xyz[:, 2], residual)
    cols["rlnDefocusU"], cols["rlnDefocusV"], cols["rlnDefocusAngle"] = d[:, 0], d[:, 1], d[:, 2]
    for name, col in (("phase_shift", "rlnPhaseShift"), ("ctf_bfactor", "rlnCtfBfactor"),
                      ("ctf_scale", "rlnCtfScalefactor")):
        if name in table.extra:
            cols[col] = np.asarray(table.extra[name], np.float64)[order]
    return cols


def _tomo_columns(table: ParticleTable, order: np.ndarray, its: list[Item], passthrough: dict
                  ) -> dict[str, object]:
    xyz = table.coordinates[order, 0, :]
    centre = np.stack([tomo_centre(it) for it in its]) if its else np.zeros((0, 3))
    cols: dict[str, object] = {"rlnTomoName": [it.name for it in its]}
    names = [f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]
    if all(n in passthrough for n in names):
        cen = np.stack([np.asarray(passthrough[n], np.float64) for n in names], 1)
        origin = invert_exact(xyz, lambda o: np.where(o != 0, cen - o, cen) + centre, cen - (xyz - centre))
        for a, i in zip("XYZ", range(3)):
            cols[f"rlnCenteredCoordinate{a}Angst"] = cen[:, i]
            cols[f"rlnOrigin{a}Angst"] = origin[:, i]
    else:
        cen = invert_exact(xyz, lambda v: v + centre, xyz - centre)
        for a, i in zip("XYZ", range(3)):
            cols[f"rlnCenteredCoordinate{a}Angst"] = cen[:, i]
        if any(f"rlnOrigin{a}Angst" in passthrough for a in "XYZ"):
            for a in "XYZ":
                cols[f"rlnOrigin{a}Angst"] = np.zeros(len(order))
    return cols


def _particle_angles(table: ParticleTable, order: np.ndarray, passthrough: dict) -> np.ndarray:
    """Refined ZYZ angles; with passthrough subtomogram angles, R_particle = R @ R_subtomo^T."""
    ang = table.angles[order, 0, :]
    names = [f"rlnTomoSubtomogram{a}" for a in ("Rot", "Tilt", "Psi")]
    if not all(n in passthrough for n in names):
        return ang
    sub = np.stack([np.asarray(passthrough[n], np.float64) for n in names], 1)
    rows = np.any(sub != 0, axis=1)
    out = ang.copy()
    if rows.any():
        r = Rotation.from_euler("ZYZ", ang[rows], degrees=True) * \
            Rotation.from_euler("ZYZ", sub[rows], degrees=True).inv()
        out[rows] = r.as_euler("ZYZ", degrees=True)
    return out


def _default_optics(species: Species, its: list[Item], tomo: bool) -> tuple[pd.DataFrame, np.ndarray]:
    keys = sorted({_optics_key(it) for it in its}, key=str) or [("none",)]
    group = np.array([keys.index(_optics_key(it)) + 1 for it in its], dtype=np.int64)
    first = {keys.index(_optics_key(it)): it for it in reversed(its)}
    rows = []
    for g in range(len(keys)):
        it = first.get(g)
        im = it.imaging if it is not None else {"voltage": 300.0, "cs": 2.7, "amplitude_contrast": 0.1,
                                                "pixel_size": species.pixel_size}
        row = {"rlnOpticsGroup": g + 1, "rlnOpticsGroupName": f"opticsGroup{g + 1}",
               **(_refined_optics(im) if it is not None else {"rlnSphericalAberration": float(im["cs"])}),
               "rlnVoltage": float(im["voltage"]), "rlnAmplitudeContrast": float(im["amplitude_contrast"]),
               "rlnImagePixelSize": float(species.pixel_size), "rlnImageSize": int(species.box),
               "rlnImageDimensionality": 2}
        if tomo:
            row.update({"rlnTomoTiltSeriesPixelSize": float(im["pixel_size"]), "rlnCtfDataAreCtfPremultiplied": 1,
                        "rlnTomoSubtomogramBinning": float(species.pixel_size) / float(im["pixel_size"])})
        rows.append(row)
    return pd.DataFrame(rows), group


def particles_frame(repo: Repository, species: Species, table: ParticleTable, items: dict[str, Item],
                    out: Path | None = None, project: Path | None = None,
                    positions: PositionsFn | None = None) -> dict[str, pd.DataFrame | dict]:
    """RELION particle STAR blocks for one species (tomo layout if its items are tilt series)."""
    out = Path(out) if out is not None else Path(".")
    rel = _Paths(Path(project) if project is not None else out)
    missing = [k for k in table.items if k not in items]
    if missing:
        raise InvalidInput(f"species {species.name!r} refers to item {missing[0][:12]} that is not in the population")
    kinds = {items[k].kind for k in table.items}
    if len(kinds) > 1:
        raise InvalidInput(f"species {species.name!r} mixes frame and tilt series; RELION files hold one kind")
    tomo = kinds == {"tilts"}
    order = _order(table, items)
    its = [items[k] for k in table.item_keys()[order].tolist()]
    passthrough = columns_from_extra(table.extra, order)
    cols = _tomo_columns(table, order, its, passthrough) if tomo else \
        _spa_columns(repo, table, order, its, out, rel, passthrough, positions)
    ang = _particle_angles(table, order, passthrough)
    cols["rlnAngleRot"], cols["rlnAngleTilt"], cols["rlnAnglePsi"] = ang[:, 0], ang[:, 1], ang[:, 2]
    cols["rlnRandomSubset"] = table.half[order].astype(np.int64)
    cols[ID_COLUMN] = table.ids[order].astype(np.int64)
    meta = species.metadata.get("relion", {})
    if meta.get("optics"):
        optics = pd.DataFrame(meta["optics"])
    else:
        optics, group = _default_optics(species, its, tomo)
        cols["rlnOpticsGroup"] = group
    if "optics_group" in table.extra:
        cols["rlnOpticsGroup"] = np.asarray(table.extra["optics_group"], np.int64)[order]
    df = pd.DataFrame(_with_passthrough(cols, passthrough))
    if "rlnOpticsGroup" not in df.columns:
        df["rlnOpticsGroup"] = np.ones(len(df), dtype=np.int64)
    if meta.get("optics"):
        optics = _with_refined_optics(optics, pd.to_numeric(df["rlnOpticsGroup"]).to_numpy(), its)
    blocks: dict[str, pd.DataFrame | dict] = {}
    if tomo:
        blocks["general"] = dict(meta.get("general", {"rlnTomoSubTomosAre2DStacks": 1}))
    blocks["optics"] = optics
    blocks["particles"] = df
    return blocks


def write_species_files(repo: Repository, species: Species, items: dict[str, Item], out: Path,
                        project: Path | None = None, positions: PositionsFn | None = None) -> list[Path]:
    """Maps, mask, particles STAR and FSC STAR of one species into ``out/<name>/``."""
    folder = out / species.name
    written = []
    for fname, h in (("half1.mrc", species.half1), ("half2.mrc", species.half2), ("mask.mrc", species.mask)):
        written.append(write_mrc(folder / fname, repo.objects.get_array(h), species.pixel_size, origin=(0, 0, 0)))
    table = repo.particles(species.particles)
    written.append(write_star(folder / "particles.star",
                              particles_frame(repo, species, table, items, out, project, positions)))
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


def _warp_sidecar(repo: Repository, it: Item, out: Path) -> Path | None:
    warp = model_array(repo, it, "image_warp")
    if warp is None:
        return None
    path = out / "image_warp" / f"{it.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "format": "mrepo-image-warp/1", "item": it.name, "raw_hash": it.key, "units": "Å",
        "layout": "(2, gx, gy, gt): (x, y) displacement nodes of a natural cubic spline grid over "
                  "(x / width, y / height, t); see mrepo.workers.item_model",
        "shape": list(warp.shape), "nodes": warp.reshape(-1).tolist()}, sort_keys=True))
    return path


@exports_raw_data
def export_relion(repo: Repository, rev: str, out: str | Path, *, project: str | Path | None = None,
                  positions: PositionsFn | None = None, fold_stage: bool = True) -> list[Path]:
    """Write the population at ``rev`` as RELION files under ``out``; returns the written paths.

    ``project``: the RELION project folder STAR paths are relative to (default ``out``). ``positions``:
    frame-series particle positions in their micrographs as refinement sees them (the CLI passes
    :func:`mrepo.workers.positions.micrograph_positions`, which includes image warp); without it the
    trajectory plus, for one-frame items, the refined global shift. ``fold_stage=False`` writes the stage
    angles without M's corrections (RELION's projected positions then equal mrepo's exactly, orientations
    lack ω) and the corrections to ``stage_corrections/<item>.json``."""
    out = Path(out)
    rel = _Paths(Path(project) if project is not None else out)
    pop = repo.population(rev)
    items = population_items(repo, pop)
    ordered = sorted(items.values(), key=lambda it: it.name)
    tilts = [it for it in ordered if it.kind == "tilts"]
    frames = [it for it in ordered if it.kind == "frames"]
    written: list[Path] = []
    for it in tilts:
        written.append(write_star(out / "tilt_series" / f"{it.name}.star",
                                  {it.name: _tilt_series_frame(repo, it, rel, fold_stage)}))
        corr = model_array(repo, it, "stage_corrections")
        if not fold_stage and corr is not None:
            path = out / "stage_corrections" / f"{it.name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"format": "mrepo-stage-corrections/1", "item": it.name, "raw_hash": it.key,
                                        "units": "degrees", "layout": "(n, 3) xyz angles ω per tilt (stack order): "
                                        "orientation Rxyz(ω) A; see mrepo.workers.item_model",
                                        "corrections": corr.tolist()}, sort_keys=True))
            written.append(path)
    if tilts:
        written.append(write_star(out / "tomograms.star", {"global": _tomograms_frame(tilts, out, rel)}))
    if frames:
        blocks, extra = _micrographs(repo, frames, out, rel)
        written += extra
        written.append(write_star(out / "micrographs.star", blocks))
    for it in ordered:
        side = _warp_sidecar(repo, it, out)
        if side is not None:
            written.append(side)
    for name in sorted(pop.species):
        written += write_species_files(repo, repo.species(pop.species[name]), items, out, project=rel.project,
                                       positions=positions)
    return written
