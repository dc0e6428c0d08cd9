"""Per-item Warp XML next to an exported M source, so that M (DataSource.cs -> Movie/TiltSeries) can open it.

What M needs (warpem/warp WarpLib/Sociology/DataSource.cs, Movie.cs, TiltSeries.cs): for each
``<File Name=...>`` of a .source, the item XML ``<source folder>/<RootName>.xml``; for frame series the
movie at ``DataDirectory/<Name>`` (``Movie.DataPath``); for tilt series ``<name>.tomostar`` and, per tilt,
the movie ``TiltMoviePaths[t]`` (relative to the series' folder) whose image M reads from
``<movie folder>/average/<movie root>.mrc`` (``TiltSeries.LoadMovieData``); the first movie's bytes also
make M's data hash (:mod:`mrepo.io.m_hash`).

What we write (:func:`write_item_xml`): frames ``<RootName>.xml`` with ``DataDirectory`` = the raw movie's
folder and the sidecar ``<RootName>.mrepo.json`` (below). Tilts ``<name>.xml``, ``<name>.tomostar``
(wrpMovieName, wrpAngleTilt, wrpDose), per tilt ``tilts/<name>/<name>_<t>.mrc`` (a link to the tilt image, or the tilt's section of the raw stack written out)
with ``tilts/<name>/average/<name>_<t>.mrc`` linking to it (an item with raw tilt movies: ``<name>_<t>.mrc``
links to the tilt's raw movie, ``<name>_<t>.xml`` next to it is that movie's Warp XML whose GridMovementX/Y
(1, 1, frames) Å = −``tilt_movie_shifts[t]``, and ``average/`` holds the tilt image: the inverse of the Warp
import; M's data hash is then that of the first movie), a link ``tiltstack/<name>/<name>.st`` to a raw
stack (so a re-import finds the same raw data and item key), and ``<name>.mrepo.json``: what M does not
hold (nominal tilt angles, imaging fields and metadata of other formats), read back by the M importer when
the raw data hash matches.

The XML: when the item still carries the Warp metadata it was imported with and its models (and hand)
equal those the metadata implies, that metadata is written back verbatim (only MoviePath points at the
files above); otherwise it is synthesised from the models, exactly invertible by
:func:`~mrepo.io.warp_import.models_from_warp`:

- frames: GridCTF (1, 1, n) = mean of defocus U/V (µm), <CTF> DefocusDelta/Angle of frame 0,
  GridMovementX/Y = -global_shifts, GridLocalMovementX/Y = -image_warp, GridCTFDoming = doming / 10⁴ (µm); tilts: GridVolumeWarpX/Y/Z = volume_warp (Å);
- tilts: M's geometry is ``Rz(AxisAngle) Ry(-(Angle + LevelAngleY)) Rx(LevelAngleX)`` with ONE LevelAngleX
  per series, so stage_angles (xtilt, ytilt, zrot) map to LevelAngleX = xtilt (equal for every tilt),
  LevelAngleY = 0, Angles = -ytilt, AxisAngle = zrot; AxisOffset = global_shifts minus the centre terms
  of :func:`~mrepo.io.warp_import.centre_terms`; hand -1 -> AreAnglesInverted="True"; per-tilt
  GridCTF/DefocusDelta/DefocusAngle/Phase; GridMovementX/Y 0 (omitted);
- both: weights (B, scale) -> GridDoseBfacs = -B (M's B is <= 0), GridDoseWeights = scale.

- tilts: stage_corrections (``Rx Ry Rz``) -> GridAngleX/Y/Z (1, 1, n) of the same rotation in M's
  ``RotateZ RotateY RotateX`` order; image_warp (2, gx, gy, n) -> GridMovementX/Y
  (gx, gy, n) = -image_warp (then the whole per-tilt shift is in AxisOffset); frames per-frame astigmatism
  and phase -> GridCTFDefocusDelta/Angle/Phase (1, 1, n).

What M cannot represent is refused (:class:`MCannotRepresent`, an InvalidInput, exit 2): x-tilts that
differ between tilts, a tilt image-warp grid without one node per tilt, model arrays M has no slot for, and a
non-zero constant even Zernike term. Optics (magnification, Zernike, Cs) go to M's fields:
:mod:`mrepo.io.m_optics`.
No Fourier layout is involved in this module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd

from ..graph import Item, Repository
from ..store import InvalidInput
from .item_models import model_array
from .m_hash import m_data_hash
from .m_optics import check_optics_representable, with_optics
from .mrc import mrc_info, write_mrc
from .raw_access import check_reachable, raw_paths, raw_sections, tilt_movie_paths
from .star import write_star
from .warp_import import centre_terms, corrections_to_m, models_from_warp, warp_tilt_matrices
from .warp_xml import WarpGrid, WarpMeta, write_warp_xml

__all__ = ["write_item_xml", "item_warp_meta", "MCannotRepresent", "M_MODELS", "XTILT_TOLERANCE"]

#: model arrays an M export carries, per item kind
M_MODELS = {"frames": {"ctf", "global_shifts", "image_warp", "phase_shift", "weights", "doming"},
            "tilts": {"ctf", "global_shifts", "stage_angles", "stage_corrections", "image_warp", "phase_shift",
                      "weights", "volume_warp", "tilt_movie_shifts"}}
#: item model of the tilt movies' per-frame shifts (n, F, 2) Å; M keeps it in each tilt movie's own XML
MOVIE_SHIFTS = "tilt_movie_shifts"
XTILT_TOLERANCE = 1e-9  # degrees
SIDECAR = ".mrepo.json"


class MCannotRepresent(InvalidInput):
    """The item holds something M's metadata has no place for; the export is refused."""



def _g(values: np.ndarray) -> list[WarpGrid]:
    return [WarpGrid((1, 1, len(values)), ("0", "0", "0"), tuple(repr(float(v)) for v in values))]


def _grid3(values: np.ndarray) -> list[WarpGrid]:
    """A (gx, gy, gt) array as a Warp grid (nodes flat in z-y-x order)."""
    gx, gy, gt = values.shape
    return [WarpGrid((gx, gy, gt), ("0", "0", "0"), tuple(repr(float(v)) for v in values.transpose(2, 1, 0).ravel()))]


def _hand(item: Item) -> float:
    return float(item.imaging.get("hand", 1.0))


def _stored_matches(repo: Repository, item: Item, meta: WarpMeta) -> bool:
    im = item.imaging
    n = int(im["dimensions"][2])
    vol = np.asarray(im["volume_dimensions"], np.float64) if item.kind == "tilts" else None
    try:
        models = models_from_warp(meta, n, Path(item.name), pixel=float(im["pixel_size"]),
                                  image_px=(int(im["dimensions"][0]), int(im["dimensions"][1])), volume_A=vol)
    except Exception:  # noqa: BLE001 - any inconsistency means "synthesise"
        return False
    if item.kind == "tilts":
        inverted = meta.attributes.get("AreAnglesInverted", "False").lower() == "true"
        if inverted != (_hand(item) < 0):
            return False
    if set(models) != set(item.models) - {MOVIE_SHIFTS}:  # tilt movie shifts live in the movies' own XML
        return False
    return all(np.array_equal(v, model_array(repo, item, k)) for k, v in models.items())


def check_m_representable(repo: Repository, item: Item) -> None:
    """Raise :class:`MCannotRepresent` naming the item and what M cannot hold."""
    extra = sorted(set(item.models) - M_MODELS[item.kind])
    if extra:
        why = " (M's tilt series move whole tilts only)" if "image_warp" in extra and item.kind == "tilts" else ""
        raise MCannotRepresent(f"item {item.name!r}: M has no place for model(s) {', '.join(extra)}{why}; "
                               "export to RELION instead or drop them")
    stage = model_array(repo, item, "stage_angles")
    if stage is not None and len(stage) and np.ptp(stage[:, 0]) > XTILT_TOLERANCE:
        raise MCannotRepresent(f"item {item.name!r}: x-tilt (rlnTomoXTilt) varies between tilts "
                               f"({stage[:, 0].min():.6g} to {stage[:, 0].max():.6g} deg) but M's TiltSeries has one "
                               "LevelAngleX per series")
    shifts = model_array(repo, item, MOVIE_SHIFTS)
    if shifts is not None:
        n = int(item.imaging["dimensions"][2])
        if item.tilt_movies is None:
            raise MCannotRepresent(f"item {item.name!r}: model {MOVIE_SHIFTS} but no raw tilt movies to write "
                                   "them next to (M keeps them in each tilt movie's XML)")
        if shifts.ndim != 3 or shifts.shape[0] != n or shifts.shape[2] != 2:
            raise MCannotRepresent(f"item {item.name!r}: model {MOVIE_SHIFTS} is {shifts.shape}, expected "
                                   f"({n}, frames, 2)")
    if item.tilt_movies is not None:  # M gets the movies: they must be reachable before anything is written
        check_reachable(repo, item.tilt_movies, f"item {item.name!r}: a raw tilt movie")
    hand = _hand(item)
    if item.kind == "tilts" and hand not in (1.0, -1.0):
        raise MCannotRepresent(f"item {item.name!r}: hand {hand!r} is not +1 or -1")
    try:
        check_optics_representable(item.imaging, item.name)
    except InvalidInput as exc:
        raise MCannotRepresent(str(exc)) from None


def item_warp_meta(repo: Repository, item: Item) -> WarpMeta:
    """The Warp metadata to write for ``item`` (stored verbatim, or synthesised from its models) with its
    optics (magnification, Zernike coefficients, Cs: :mod:`mrepo.io.m_optics`) in M's fields."""
    check_m_representable(repo, item)
    return with_optics(_models_meta(repo, item), item.imaging, item.name)


def _models_meta(repo: Repository, item: Item) -> WarpMeta:
    stored = item.metadata.get("warp")
    if stored is not None:
        meta = WarpMeta.from_json(stored)
        if _stored_matches(repo, item, meta):
            return meta
    im = item.imaging
    n = int(im["dimensions"][2])
    ctf = model_array(repo, item, "ctf")
    ctf = ctf if ctf is not None else np.zeros((n, 3))
    d = (ctf[:, 0] + ctf[:, 1]) / 2 / 1e4
    dd = (ctf[:, 0] - ctf[:, 1]) / 1e4
    phase = model_array(repo, item, "phase_shift")
    params = {"PixelSize": im["pixel_size"], "Cs": im["cs"], "Voltage": im["voltage"], "Amplitude":
              im["amplitude_contrast"], "Defocus": float(d.mean()) if n else 0.0,
              "DefocusDelta": float(dd[0]) if n else 0.0, "DefocusAngle": float(ctf[0, 2]) if n else 0.0,
              "PhaseShift": float(phase[0]) / 180.0 if phase is not None and n else 0.0}
    meta = WarpMeta("Movie" if item.kind == "frames" else "TiltSeries",
                    ctf={k: repr(float(v)) for k, v in params.items()})
    shifts = model_array(repo, item, "global_shifts")
    shifts = shifts if shifts is not None else np.zeros((n, 2))
    weights = model_array(repo, item, "weights")
    if weights is not None:
        meta.grids.update({"GridDoseBfacs": _g(-weights[:, 0]), "GridDoseWeights": _g(weights[:, 1])})
    if item.kind == "frames":
        meta.grids.update({"GridCTF": _g(d), "GridCTFDefocusDelta": _g(dd), "GridCTFDefocusAngle": _g(ctf[:, 2]),
                           "GridMovementX": _g(-shifts[:, 0]), "GridMovementY": _g(-shifts[:, 1])})
        if phase is not None:
            meta.grids["GridCTFPhase"] = _g(phase / 180.0)
        warp = model_array(repo, item, "image_warp")
        if warp is not None:
            meta.grids.update({"GridLocalMovementX": _grid3(-warp[0]), "GridLocalMovementY": _grid3(-warp[1])})
        dome = model_array(repo, item, "doming")
        if dome is not None:
            meta.grids["GridCTFDoming"] = _grid3(dome / 1e4)
        return meta
    stage = model_array(repo, item, "stage_angles")
    stage = stage if stage is not None else np.stack([np.zeros(n), -np.asarray(im["tilt_angles"], float),
                                                      np.zeros(n)], 1)
    level_x = float(stage[0, 0]) if n else 0.0
    angles, axis = -stage[:, 1], stage[:, 2]
    pix = float(im["pixel_size"])
    vol = np.asarray(im["volume_dimensions"], np.float64)
    image_px = (int(im["dimensions"][0]), int(im["dimensions"][1]))
    offsets = shifts - centre_terms(warp_tilt_matrices(angles, axis, level_x, 0.0), pix, image_px, vol)
    meta.attributes = {"AreAnglesInverted": "True" if _hand(item) < 0 else "False", "LevelAngleX": repr(level_x),
                       "LevelAngleY": "0", "ImageDimensionsAngstrom": f"{image_px[0] * pix!r},{image_px[1] * pix!r}",
                       "VolumeDimensionsAngstrom": ",".join(repr(float(v)) for v in vol)}
    meta.per_tilt = {"Angles": [repr(float(v)) for v in angles],
                     "Dose": [repr(float(v)) for v in im.get("pre_exposure", [0.0] * n)],
                     "UseTilt": ["True"] * n, "AxisAngle": [repr(float(v)) for v in axis],
                     "AxisOffsetX": [repr(float(v)) for v in offsets[:, 0]],
                     "AxisOffsetY": [repr(float(v)) for v in offsets[:, 1]]}
    meta.grids.update({"GridCTF": _g(d), "GridCTFDefocusDelta": _g(dd), "GridCTFDefocusAngle": _g(ctf[:, 2])})
    if phase is not None:
        meta.grids["GridCTFPhase"] = _g(phase / 180.0)
    corrections = model_array(repo, item, "stage_corrections")
    if corrections is not None:
        m_angles = corrections_to_m(corrections)
        meta.grids.update({f"GridAngle{a}": _g(m_angles[:, i]) for i, a in enumerate("XYZ")})
    warp = model_array(repo, item, "image_warp")
    if warp is not None:
        if warp.shape[3] != n or warp.shape[1] * warp.shape[2] < 2:
            raise MCannotRepresent(f"item {item.name!r}: image warp grid {warp.shape[1:]} needs one node per tilt "
                                   f"({n}) and more than one spatial node to be M's GridMovementX/Y")
        meta.grids.update({"GridMovementX": _grid3(-warp[0]), "GridMovementY": _grid3(-warp[1])})
    volume = model_array(repo, item, "volume_warp")
    if volume is not None:  # M's LinearGrid4D (Width, Height, Depth, Duration), nodes flat w-z-y-x, Å
        meta.grids.update({f"GridVolumeWarp{a}": [WarpGrid(volume[i].shape, (), tuple(
            repr(float(v)) for v in volume[i].transpose(3, 2, 1, 0).ravel()))] for i, a in enumerate("XYZ")})
    return meta


def _link(target: Path, link: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(target.resolve(), link)
    return link


def _sections(repo: Repository, item: Item, n: int) -> list[int | None]:
    """Per tilt: the section to extract from its file (a stack, or a manifest entry ``k@stack``), or None
    when the file is the tilt's image itself."""
    return raw_sections(repo, item) if item.raw.format == "manifest" else list(range(n))


def _tilt_files(repo: Repository, item: Item, out: Path) -> tuple[list[str], list[Path]]:
    """Per-tilt movies M opens (MoviePath relative to ``out``) and the tilt images M reads from their
    ``average/`` folder; returns (MoviePath list, written paths). Without raw tilt movies the movie is the
    tilt image itself (a link, or a stack section written out as a one-image MRC: M reads one image per
    movie) and ``average/`` links to it. With them (:attr:`Item.tilt_movies`) the movie links to the raw
    movie, its Warp XML ``<movie stem>.xml`` holds the frames' alignment (:func:`_movie_meta`) and the
    tilt image goes to ``average/``."""
    paths = raw_paths(repo, item)
    n = int(item.imaging["dimensions"][2])
    sections = _sections(repo, item, n)
    if item.raw.format != "manifest":
        paths = paths * n
    if len(paths) != n or len(sections) != n:
        raise MCannotRepresent(f"item {item.name!r}: raw data lists {len(paths)} images for {n} tilts")
    movies = tilt_movie_paths(repo, item)
    if movies and len(movies) != n:
        raise MCannotRepresent(f"item {item.name!r}: {len(movies)} raw tilt movies for {n} tilts")
    folder = out / "tilts" / item.name
    names, written = [], []
    stacks: dict[Path, mrcfile.mrcfile.MrcFile] = {}
    try:
        for t, (path, section) in enumerate(zip(paths, sections)):
            movie = folder / f"{item.name}_{t:03d}.mrc"
            image = folder / "average" / movie.name if movies else movie
            if section is None:
                written.append(_link(path, image))
            else:
                if path not in stacks:
                    stacks[path] = mrcfile.mmap(path, mode="r", permissive=True)
                data = stacks[path].data
                section_data = np.asarray(data[section] if data.ndim == 3 else data)
                # one (1, y, x) image in the stack's own data type, mrepo's fixed label: M's data hash depends on
                # the data only
                written.append(write_mrc(image, section_data[None], float(item.imaging["pixel_size"]),
                                         volume=False, keep_dtype=True))
            if movies:
                written.append(_link(movies[t], movie))
                written.append(write_warp_xml(_movie_meta(repo, item, t, mrc_info(movies[t]).nz),
                                              movie.with_suffix(".xml")))
            else:
                written.append(_link(movie, folder / "average" / movie.name))
            names.append(movie.relative_to(out).as_posix())
    finally:
        for m in stacks.values():
            m.close()
    return names, written


def _movie_meta(repo: Repository, item: Item, t: int, frames: int) -> WarpMeta:
    """The Warp XML of tilt ``t``'s movie (Movie.SaveMeta layout): ``<CTF>`` of the tilt and
    GridMovementX/Y (1, 1, frames) = −``tilt_movie_shifts[t]`` Å (Warp: a frame sees a particle at
    ``x − grid``; zeros without the model), the exact inverse of the Warp import."""
    im = item.imaging
    shifts = model_array(repo, item, MOVIE_SHIFTS)
    shifts = shifts[t] if shifts is not None else np.zeros((frames, 2))
    if shifts.shape != (frames, 2):
        raise MCannotRepresent(f"item {item.name!r}: model {MOVIE_SHIFTS} has {shifts.shape[0]} frames for tilt "
                               f"{t + 1} but its raw movie has {frames}")
    ctf = model_array(repo, item, "ctf")
    u, v, angle = ctf[t] if ctf is not None else (0.0, 0.0, 0.0)
    phase = model_array(repo, item, "phase_shift")
    params = {"PixelSize": im["pixel_size"], "Cs": im["cs"], "Voltage": im["voltage"],
              "Amplitude": im["amplitude_contrast"], "Defocus": (u + v) / 2 / 1e4, "DefocusDelta": (u - v) / 1e4,
              "DefocusAngle": angle, "PhaseShift": float(phase[t]) / 180.0 if phase is not None else 0.0}
    meta = WarpMeta("Movie", ctf={k: repr(float(x)) for k, x in params.items()})
    meta.grids.update({"GridMovementX": _g(-shifts[:, 0]), "GridMovementY": _g(-shifts[:, 1])})
    return meta


def _sidecar(item: Item, path: Path) -> Path:
    """What M does not hold, keyed by the raw data hash (read back by the M importer)."""
    body = {"format": "mrepo-m-sidecar/1", "raw_hash": item.key, "imaging": item.imaging,
            "metadata": {k: v for k, v in item.metadata.items() if k != "warp"}}
    path.write_text(json.dumps(body, sort_keys=True, indent=1))
    return path


def write_item_xml(repo: Repository, item: Item, out: Path) -> tuple[list[Path], str]:
    """Write the XML and the files M opens for one item into ``out``; returns (written paths, M's data hash)."""
    meta = item_warp_meta(repo, item)
    paths = raw_paths(repo, item)
    if item.kind == "frames":
        written = [write_warp_xml(meta, out / f"{paths[0].stem}.xml", data_directory=str(paths[0].parent)),
                   _sidecar(item, out / f"{paths[0].stem}{SIDECAR}")]
        return written, m_data_hash(paths[0].stem, paths[0])
    movies, written = _tilt_files(repo, item, out)
    meta.per_tilt["MoviePath"] = movies
    if not meta.attributes.get("VolumeDimensionsAngstrom"):  # older Warp XML: the size came from the settings
        meta.attributes["VolumeDimensionsAngstrom"] = ",".join(repr(float(v))
                                                               for v in item.imaging["volume_dimensions"])
    written.append(write_warp_xml(meta, out / f"{item.name}.xml"))
    tomostar = pd.DataFrame({"wrpMovieName": movies,
                             "wrpAngleTilt": [float(v) for v in meta.per_tilt["Angles"]],
                             "wrpDose": [float(v) for v in meta.per_tilt["Dose"]]})
    written.append(write_star(out / f"{item.name}.tomostar", {"": tomostar}))
    if item.raw.format != "manifest":
        written.append(_link(paths[0], out / "tiltstack" / item.name / f"{item.name}.st"))
    written.append(_sidecar(item, out / f"{item.name}{SIDECAR}"))
    return written, m_data_hash(item.name, out / movies[0])
