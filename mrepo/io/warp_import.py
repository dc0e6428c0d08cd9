"""Warp processing folders -> items (one per XML), and ``import_warp`` (one new source, one commit).

Item fields from a Warp XML (:mod:`mrepo.io.warp_xml`; sources cited there) and the settings:

- pixel_size: settings Import.PixelSize if given, else ``<CTF> PixelSize``; refused when the raw MRC
  header's voxel size disagrees. voltage, amplitude_contrast: ``<CTF>`` Voltage, Amplitude; cs (+ the mean
  of a movie's GridCTFCs), mag_matrix (MagnificationCorrection), odd_zernike / even_zernike (``<CTF>``
  ZernikeCoeffsOdd / Even) in RELION's conventions: :mod:`mrepo.io.m_optics`.
- frames: n = MRC frame count (non-MRC movies: the depth of GridMovementX); exposure = settings
  Import.DosePerAngstromFrame per frame (0 without settings), pre_exposure = cumulative.
  ctf (n, 3): defocus per frame from GridCTF when it is (1, 1, n) or (1, 1, 1), else ``<CTF> Defocus``;
  U/V = (D ± DefocusDelta / 2) · 10⁴ Å, angle DefocusAngle. global_shifts (n, 2) Å = −GridMovementX/Y
  nodes (Warp: particle at ``x − grid``; mrepo: image content displaced by ``+shift``); image_warp
  (2, gx, gy, gt) = −GridLocalMovementX/Y when not a single node (Warp's einspline vs mrepo's natural
  spline: same nodes, interpolation may differ between nodes); tilts: volume_warp (3, gx, gy, gz, gt) Å =
  GridVolumeWarpX/Y/Z (M's LinearGrid4D over x, y, z and normalised dose; same frame as the particle
  coordinates) when a node is non-zero; frames: doming (gx, gy, gt) Å = GridCTFDoming
  (M's defocus offsets, µm) · 10⁴ when it has a non-zero node (:mod:`mrepo.workers.deformation`).
- tilts: tilt_angles = <Angles>, pre_exposure = <Dose>, exposure/acquisition_order from it;
  volume_dimensions = VolumeDimensionsAngstrom, or when the XML lacks it (older Warp) the settings file's
  Tomo DimensionsX/Y/Z (unbinned px) x Import PixelSize (Warp's ``DimensionsPhysical``);
  hand = +1 (Warp adds depth to defocus, ``GetPositionInAllTilts``) or -1 with AreAnglesInverted="True"
  (Warp then takes the depth from ``Euler(0, -(Angle + LevelAngleY), -AxisAngle) . RotateX(-LevelAngleX)``
  applied to (x, y, -z), which is exactly minus the normal depth). ctf from per-tilt
  GridCTF/DefocusDelta/DefocusAngle ``FlatValues[t]``;
  stage_angles = (xtilt, ytilt, zrot) with ``Rz Ry Rx`` equal to Warp's
  ``Euler(0, Angle + LevelAngleY, -AxisAngle) . RotateX(LevelAngleX)`` (Matrix3.cs);
  global_shifts = AxisOffset - GridMovement(node t) plus the centre difference between Warp
  (Size/2 in Å) and RELION (int(Size/2) px). Raw data: ``tiltstack/<name>/<name>.st`` when present,
  else a manifest of the tilt images: each <MoviePath> (relative to DataDirectory or the XML's folder)
  when it is an MRC image, else (.tif/.eer movies, MRC movies of several frames) Warp's average
  ``<movie folder>/average/<movie stem>.mrc``, the image TiltSeries.LoadMovieData reads. Tilt movies: when
  every MoviePath is an MRC movie of the tilt images' size (same frame count) with its Warp XML next to it,
  the movies become ``Item.tilt_movies`` and −GridMovementX/Y of each movie XML (Å, one node per frame)
  the model ``tilt_movie_shifts`` (n, F, 2) (:mod:`mrepo.workers.tilt_movies`); the M export writes exactly
  this back (:mod:`mrepo.io.warp_export`). GridLocalMovement is not modelled; .tif/.eer movies and movies of
  another size than the averages (binned by BinTimes: the refinement sums frames at the tilt images' pixel
  size) are not attached.
- phase_shift (n,) deg = PhaseShift · 180 when non-zero. Everything else (grids without a model slot,
  attributes, per-tilt lists, CTF params) is kept verbatim in ``Item.metadata["warp"]`` so that
  :func:`~mrepo.io.m_format.export_m` can write the XML back unchanged.
No Fourier layout is involved in this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from ..graph import DataSource, Item, RawData, Repository
from ..store import InvalidInput
from .m_optics import optics_from_warp
from .mrc import mrc_info
from .relion_tomo import exposure_from_pre
from .species_build import same_pixel
from .staging import ImportResult, PolarityChoice, Staging, raw_data, raw_manifest
from .warp_xml import WarpMeta, read_settings, read_warp_xml

__all__ = ["warp_item", "import_warp", "models_from_warp", "find_movie", "warp_tilt_matrices", "centre_terms",
           "tilt_image_path", "corrections_from_m", "corrections_to_m"]

MAX_VOLUME_A = 1.0e6  # Å: no tomogram edge is longer than 0.1 mm (a whole grid square)
MOVIE_EXTENSIONS = (".mrc", ".mrcs", ".tif", ".tiff", ".eer", ".em")


def _grid_nodes(meta: WarpMeta, name: str, n: int, path: Path, *, default: float = 0.0) -> np.ndarray:
    """Per-frame/tilt node values of a (1, 1, n) or single-node grid (n,); absent -> default."""
    g = meta.grid(name)
    if g is None:
        return np.full(n, default)
    if g.dims == (1, 1, 1):
        return np.full(n, g.flat()[0])
    if g.dims == (1, 1, n):
        return g.flat()
    raise InvalidInput(f"{path}: <{name}> is {g.dims[0]} x {g.dims[1]} x {g.dims[2]}, expected 1 x 1 x {n} "
                       f"(one node per frame/tilt) or a single node")


def _tilt_values(meta: WarpMeta, name: str, n: int) -> np.ndarray:
    """Warp's GetTiltDefocus rule: FlatValues[t] when the grid has more than t values, else 0."""
    g = meta.grid(name)
    flat = g.flat() if g is not None else np.zeros(0)
    return np.array([flat[t] if len(flat) > t else 0.0 for t in range(n)])


def _warp_euler(rot: float, tilt: float, psi: float) -> np.ndarray:
    """Warp's Matrix3.Euler (radians), identical to RELION's Euler_angles2matrix."""
    ca, sa, cb, sb, cg, sg = np.cos(rot), np.sin(rot), np.cos(tilt), np.sin(tilt), np.cos(psi), np.sin(psi)
    return np.array([[cg * cb * ca - sg * sa, cg * cb * sa + sg * ca, -cg * sb],
                     [-sg * cb * ca - cg * sa, -sg * cb * sa + cg * ca, sg * sb],
                     [sb * ca, sb * sa, cb]])


def _rotate_x(a: float) -> np.ndarray:
    """Warp's Matrix3.RotateX (column-major constructor): the right-handed rotation about x."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def warp_tilt_matrices(angles: np.ndarray, axis: np.ndarray, level_x: float, level_y: float) -> np.ndarray:
    """(n, 3, 3) Warp tilt matrices ``Euler(0, Angle + LevelAngleY, -AxisAngle) . RotateX(LevelAngleX)`` (deg in)."""
    return np.stack([_warp_euler(0.0, np.deg2rad(a + level_y), np.deg2rad(-z)) @ _rotate_x(np.deg2rad(level_x))
                     for a, z in zip(np.asarray(angles, float), np.asarray(axis, float))]).reshape(-1, 3, 3)


def centre_terms(mats: np.ndarray, pixel: float, image_px: tuple[int, int], volume_A: np.ndarray) -> np.ndarray:
    """(n, 2) Å added to Warp's image-space offsets to get RELION-convention shifts: Warp rotates about
    ``Size/2`` (Å) and centres images at ``Size/2``; RELION rotates about ``int(Size/2)`` px and centres
    images at ``int(width/2)`` px."""
    size_px = np.rint(volume_A / pixel)
    rot_centre = np.floor(size_px / 2) * pixel
    image_diff = np.array(image_px, float) / 2 * pixel - np.floor(np.array(image_px) / 2) * pixel
    return image_diff + np.einsum("nij,j->ni", mats, rot_centre - volume_A / 2)[:, :2]


def corrections_from_m(m_angles: np.ndarray) -> np.ndarray:
    """(n, 3) M GridAngleX/Y/Z (deg; M rotates by ``RotateZ(z) RotateY(y) RotateX(x)``, TiltSeries
    ``GetAngleInAllTilts``) -> mrepo stage_corrections (deg; ``Rx Ry Rz``, :func:`mrepo.kernels.rotations.xyz_to_matrix`),
    the same rotation matrices."""
    mats = Rotation.from_euler("ZYX", m_angles[:, ::-1], degrees=True)
    return mats.as_euler("XYZ", degrees=True)


def corrections_to_m(corrections: np.ndarray) -> np.ndarray:
    """Inverse of :func:`corrections_from_m`: (n, 3) mrepo stage_corrections -> M GridAngleX/Y/Z."""
    return Rotation.from_euler("XYZ", corrections, degrees=True).as_euler("ZYX", degrees=True)[:, ::-1]


def models_from_warp(meta: WarpMeta, n: int, path: Path, *, pixel: float, image_px: tuple[int, int] = (0, 0),
                     volume_A: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Model arrays (see module docstring) of one item with n frames/tilts."""
    delta = meta.ctf_value("DefocusDelta", 0.0, path)
    angle = meta.ctf_value("DefocusAngle", 0.0, path)
    models: dict[str, np.ndarray] = {}
    if meta.root == "Movie":
        g = meta.grid("GridCTF")
        if g is not None and g.dims in ((1, 1, 1), (1, 1, n)):
            d = _grid_nodes(meta, "GridCTF", n, path)
        else:
            d = np.full(n, meta.ctf_value("Defocus", 0.0, path))
        dd, da = _per_frame(meta, "GridCTFDefocusDelta", n, delta), _per_frame(meta, "GridCTFDefocusAngle", n, angle)
        models["ctf"] = np.stack([(d + dd / 2) * 1e4, (d - dd / 2) * 1e4, da], 1)
        models["global_shifts"] = -np.stack([_grid_nodes(meta, "GridMovementX", n, path),
                                             _grid_nodes(meta, "GridMovementY", n, path)], 1)
        lx, ly = meta.grid("GridLocalMovementX"), meta.grid("GridLocalMovementY")
        if lx is not None and ly is not None and len(lx.values) > 1:
            if lx.dims != ly.dims:
                raise InvalidInput(f"{path}: GridLocalMovementX {lx.dims} and GridLocalMovementY {ly.dims} differ")
            models["image_warp"] = -np.stack([lx.array().transpose(2, 1, 0), ly.array().transpose(2, 1, 0)])
        dome = meta.grid("GridCTFDoming")
        if dome is not None and np.any(dome.flat() != 0):  # M's doming: defocus offsets (µm) over x, y, t
            models["doming"] = dome.array().transpose(2, 1, 0) * 1e4
        phase = _per_frame(meta, "GridCTFPhase", n, meta.ctf_value("PhaseShift", 0.0, path)) * 180.0
    else:
        d = _tilt_values(meta, "GridCTF", n)
        dd = _tilt_values(meta, "GridCTFDefocusDelta", n)
        da = _tilt_values(meta, "GridCTFDefocusAngle", n)
        models["ctf"] = np.stack([(d + dd / 2) * 1e4, (d - dd / 2) * 1e4, da], 1)
        phase = _tilt_values(meta, "GridCTFPhase", n) * 180.0
        pt = {k: np.array([float(v) for v in meta.per_tilt.get(k, ["0"] * n)]) for k in
              ("Angles", "AxisAngle", "AxisOffsetX", "AxisOffsetY")}
        lx = float(meta.attributes.get("LevelAngleX", "0") or 0)
        ly = float(meta.attributes.get("LevelAngleY", "0") or 0)
        mats = warp_tilt_matrices(pt["Angles"], pt["AxisAngle"], lx, ly)
        zyx = Rotation.from_matrix(mats).as_euler("ZYX", degrees=True)  # R = Rz Ry Rx
        models["stage_angles"] = np.stack([zyx[:, 2], zyx[:, 1], zyx[:, 0]], 1)
        assert volume_A is not None
        gx, gy = meta.grid("GridMovementX"), meta.grid("GridMovementY")
        if gx is not None and gy is not None and gx.dims[2] == n and gx.dims[0] * gx.dims[1] > 1:
            if gx.dims != gy.dims:
                raise InvalidInput(f"{path}: GridMovementX {gx.dims} and GridMovementY {gy.dims} differ")
            models["image_warp"] = -np.stack([gx.array().transpose(2, 1, 0), gy.array().transpose(2, 1, 0)])
            move = np.zeros((n, 2))
        else:
            move = np.stack([_grid_nodes(meta, "GridMovementX", n, path),
                             _grid_nodes(meta, "GridMovementY", n, path)], 1)
        m_angles = np.stack([_tilt_values(meta, f"GridAngle{a}", n) for a in "XYZ"], 1)
        if np.any(m_angles != 0):
            models["stage_corrections"] = corrections_from_m(m_angles)
        volume = [meta.grid(f"GridVolumeWarp{a}") for a in "XYZ"]  # M's LinearGrid4D, Å, over x, y, z, dose
        if all(g is not None for g in volume) and any(np.any(g.flat() != 0) for g in volume):  # type: ignore[union-attr]
            if len({g.dims for g in volume}) != 1:  # type: ignore[union-attr]
                raise InvalidInput(f"{path}: GridVolumeWarpX/Y/Z have different dimensions "
                                   f"{[g.dims for g in volume]}")  # type: ignore[union-attr]
            models["volume_warp"] = np.stack([g.array().transpose(3, 2, 1, 0) for g in volume])  # type: ignore[union-attr]
        shifts = np.stack([pt["AxisOffsetX"], pt["AxisOffsetY"]], 1) - move
        models["global_shifts"] = shifts + centre_terms(mats, pixel, image_px, volume_A)
    if np.any(phase != 0):
        models["phase_shift"] = phase
    bfacs, scales = meta.grid("GridDoseBfacs"), meta.grid("GridDoseWeights")
    if bfacs is not None and scales is not None and bfacs.dims == scales.dims == (1, 1, n):
        weights = np.stack([-bfacs.flat(), scales.flat()], 1)  # M's dose B-factors are <= 0
        if np.any(weights != [0.0, 1.0]):
            models["weights"] = weights
    return models


def _per_frame(meta: WarpMeta, name: str, n: int, default: float) -> np.ndarray:
    """A frame series' per-frame grid (1, 1, n), n > 1, else ``default`` for every frame."""
    g = meta.grid(name)
    if g is not None and n > 1 and g.dims == (1, 1, n):
        return g.flat()
    return np.full(n, default)


def find_movie(xml: Path, meta: WarpMeta, extension: str | None = None) -> Path:
    """The raw movie of a frame-series XML: <stem>.<ext> in DataDirectory (or the XML's folder)."""
    folder = xml.parent
    if meta.data_directory:
        folder = (xml.parent / meta.data_directory)
    exts = (extension,) if extension else MOVIE_EXTENSIONS
    found = [folder / f"{xml.stem}{e}" for e in exts if (folder / f"{xml.stem}{e}").is_file()]
    if len(found) != 1:
        what = "no" if not found else "several"
        raise InvalidInput(f"{xml}: {what} raw movie named {xml.stem}.{{{','.join(e[1:] for e in exts)}}} "
                           f"in {folder}")
    return found[0]


def _mrc_movie(path: Path) -> bool:
    """True for an existing MRC file holding more than one image (a movie of frames)."""
    return path.suffix.lower() in (".mrc", ".mrcs") and path.is_file() and mrc_info(path).nz > 1


def tilt_image_path(movie: Path) -> Path:
    """The image Warp/M read for one tilt whose MoviePath resolves to ``movie``: the file itself when it is
    an MRC image, else (a .tif/.eer movie, or an MRC movie of several frames) Warp's motion-corrected
    average ``<folder>/average/<stem>.mrc`` (Movie.AveragePath, read by TiltSeries.LoadMovieData)."""
    if movie.suffix.lower() in (".mrc", ".mrcs", ".st") and not _mrc_movie(movie):
        return movie
    return movie.parent / "average" / f"{movie.stem}.mrc"


def _movie_base(xml: Path, meta: WarpMeta) -> Path:
    """The folder MoviePath entries are relative to (DataDirectory, else the XML's folder)."""
    return xml.parent / meta.data_directory if meta.data_directory else xml.parent


def _tilt_movies(xml: Path, meta: WarpMeta, size: tuple[int, int], staging: Staging,
                 copy: bool) -> tuple[RawData | None, np.ndarray | None]:
    """The raw tilt movies of a tilt series (``Item.tilt_movies``) and their per-frame shifts
    ``tilt_movie_shifts`` (n, F, 2) Å = −GridMovementX/Y of each movie's own XML (``<stem>.xml`` next to it;
    Warp: a frame sees a particle at ``x − grid``, mrepo: its content displaced by ``+shift``), when every
    MoviePath is an MRC movie of the tilt images' size with the same frame count and an XML; else
    (None, None): .tif/.eer movies are not read, local motion grids are not modelled."""
    base = _movie_base(xml, meta)
    movies = [base / p for p in meta.per_tilt.get("MoviePath", [])]
    if not movies or not all(_mrc_movie(m) and m.with_suffix(".xml").is_file() for m in movies):
        return None, None
    infos = [mrc_info(m) for m in movies]
    frames = infos[0].nz
    if any((i.nx, i.ny, i.nz) != (*size, frames) for i in infos):
        return None, None
    shifts = []
    for m in movies:
        mx = m.with_suffix(".xml")
        mm = read_warp_xml(mx)
        shifts.append(-np.stack([_grid_nodes(mm, "GridMovementX", frames, mx),
                                 _grid_nodes(mm, "GridMovementY", frames, mx)], 1))
    return raw_manifest(movies, copy=copy, staging=staging), np.stack(shifts)


def _tilt_raw(xml: Path, meta: WarpMeta, n: int, staging: Staging, copy: bool) -> tuple[RawData, int, int, float]:
    stack = xml.parent / "tiltstack" / xml.stem / f"{xml.stem}.st"
    if stack.is_file():
        info = mrc_info(stack)
        if info.nz != n:
            raise InvalidInput(f"{stack}: {info.nz} images but {xml} lists {n} tilts")
        return raw_data(stack, copy=copy, staging=staging), info.nx, info.ny, info.voxel_size
    names = meta.per_tilt.get("MoviePath")
    if not names or not any(names):
        raise InvalidInput(f"{xml}: expected a tilt stack {stack} or a <MoviePath> list; found neither")
    base = _movie_base(xml, meta)
    paths = [tilt_image_path(base / p) for p in names]
    for name, p in zip(names, paths):
        if not p.is_file():
            what = "image" if p.name == Path(name).name else f"Warp average of movie {name}"
            raise InvalidInput(f"{xml}: expected the tilt {what} at {p} (or a tilt stack {stack}); "
                               "found neither")
    infos = [mrc_info(p) for p in paths]
    for p, i in zip(paths, infos):
        if (i.nx, i.ny, i.nz) != (infos[0].nx, infos[0].ny, 1):
            raise InvalidInput(f"{p}: tilt image is {i.nx} x {i.ny} x {i.nz}, expected {infos[0].nx} x "
                               f"{infos[0].ny} x 1")
    return raw_manifest(paths, copy=copy, staging=staging), infos[0].nx, infos[0].ny, infos[0].voxel_size


def _volume_A(xml: Path, meta: WarpMeta, settings: dict[str, dict[str, str]]) -> np.ndarray:
    """VolumeDimensionsAngstrom, else the settings' Tomo DimensionsX/Y/Z (unbinned px) x Import.PixelSize, as
    Warp's ``DimensionsPhysical`` (TiltSeries.cs)."""
    vol = meta.attributes.get("VolumeDimensionsAngstrom")
    if vol:
        where = "attribute VolumeDimensionsAngstrom"
        try:
            volume = np.array([float(v) for v in vol.split(",")])
        except ValueError:
            raise InvalidInput(f"{xml}: {where} {vol!r} is not 'x,y,z'") from None
    else:
        tomo, imp = settings.get("Tomo", {}), settings.get("Import", {})
        keys = ("DimensionsX", "DimensionsY", "DimensionsZ")
        if not all(k in tomo for k in keys) or "PixelSize" not in imp:
            raise InvalidInput(f"{xml}: expected attribute VolumeDimensionsAngstrom on <TiltSeries> or a settings "
                               "file with Tomo DimensionsX/Y/Z and Import PixelSize; found neither")
        where = "settings Tomo DimensionsX/Y/Z x Import PixelSize"
        try:
            volume = np.array([float(tomo[k]) for k in keys]) * float(imp["PixelSize"])
        except ValueError:
            raise InvalidInput(f"{xml}: {where}: {[tomo[k] for k in keys]} or {imp['PixelSize']!r} is not a "
                               "number") from None
        vol = ",".join(repr(float(v)) for v in volume)
    if volume.shape != (3,) or not np.all(np.isfinite(volume)) or not np.all(volume > 0):
        raise InvalidInput(f"{xml}: {where} {vol!r} is not three positive numbers")
    if np.any(volume > MAX_VOLUME_A):
        raise InvalidInput(f"{xml}: {where} {vol!r}: a tomogram edge above {MAX_VOLUME_A:g} Å (0.1 mm) is not "
                           "physical")
    return volume


def warp_item(xml: str | Path, staging: Staging, *, settings: dict[str, dict[str, str]] | None = None,
              movie: Path | None = None, copy: bool = False, name: str | None = None) -> Item:
    """One Item from a Warp XML (validated; model arrays go to the staging store)."""
    xml = Path(xml)
    meta = read_warp_xml(xml)
    settings = settings or {}
    imp = settings.get("Import", {})
    pix = float(imp["PixelSize"]) if "PixelSize" in imp else meta.ctf_value("PixelSize", 0.0, xml)
    if pix <= 0:
        raise InvalidInput(f"{xml}: no pixel size (<CTF> Param PixelSize) and no settings file")
    imaging: dict[str, Any] = {"pixel_size": pix, "voltage": meta.ctf_value("Voltage", 300.0, xml),
                               "amplitude_contrast": meta.ctf_value("Amplitude", 0.07, xml),
                               **optics_from_warp(meta, xml)}
    tilt_movies = None
    if meta.root == "Movie":
        path = movie if movie is not None else find_movie(xml, meta)
        fmt = path.suffix.lower().lstrip(".")
        if fmt in ("mrc", "mrcs"):
            info = mrc_info(path)
            n, w, h, voxel = info.nz, info.nx, info.ny, info.voxel_size
        else:
            g = meta.grid("GridMovementX")
            if g is None or g.dims[2] < 2:
                raise InvalidInput(f"{path}: cannot tell the frame count of a {fmt} movie without a "
                                   "GridMovementX with one node per frame")
            n, w, h, voxel = g.dims[2], 0, 0, 0.0
        raw = raw_data(path, copy=copy, staging=staging, fmt=fmt)
        dose = float(imp.get("DosePerAngstromFrame", "0"))
        imaging.update(dimensions=[w, h, n], exposure=[dose] * n, pre_exposure=[dose * i for i in range(n)])
        models = models_from_warp(meta, n, xml, pixel=pix)
        kind = "frames"
    else:
        inverted = meta.attributes.get("AreAnglesInverted", "False")
        if inverted.lower() not in ("true", "false"):
            raise InvalidInput(f"{xml}: attribute AreAnglesInverted is {inverted!r}, expected True or False")
        n = len(meta.per_tilt["Angles"])
        volume = _volume_A(xml, meta, settings)
        raw, w, h, voxel = _tilt_raw(xml, meta, n, staging, copy)
        base = _movie_base(xml, meta)
        if raw.format == "manifest" and "PixelSize" in imp and any(
                tilt_image_path(base / m) != base / m for m in meta.per_tilt.get("MoviePath", [])):
            try:  # Warp writes averages at PixelSize * 2^BinTimes (ProcessingOptions.BinnedPixelSizeMean)
                pix = pix * 2.0 ** float(imp.get("BinTimes", "0"))
            except ValueError:
                raise InvalidInput(f"{xml}: settings Import BinTimes {imp.get('BinTimes')!r} is not a number") from None
            imaging["pixel_size"] = pix
        pre = np.array([float(v) for v in meta.per_tilt.get("Dose", ["0"] * n)])
        dose, order = exposure_from_pre(pre)
        imaging.update(dimensions=[w, h, n], volume_dimensions=volume.tolist(),
                       hand=-1.0 if inverted.lower() == "true" else 1.0,
                       tilt_angles=[float(v) for v in meta.per_tilt["Angles"]], pre_exposure=pre.tolist(),
                       exposure=dose.tolist(), acquisition_order=order)
        models = models_from_warp(meta, n, xml, pixel=pix, image_px=(w, h), volume_A=volume)
        tilt_movies, movie_shifts = _tilt_movies(xml, meta, (w, h), staging, copy)
        if movie_shifts is not None:
            models["tilt_movie_shifts"] = movie_shifts
        kind = "tilts"
    if voxel > 0 and not same_pixel(voxel, pix):
        raise InvalidInput(f"{xml}: raw data voxel size {voxel} Å disagrees with pixel size {pix} Å "
                           f"({'settings Import.PixelSize' if 'PixelSize' in imp else '<CTF> PixelSize'})")
    put = staging.objects.put_array
    return Item(kind, name or xml.stem, raw, imaging, {k: put(np.ascontiguousarray(v, dtype=np.float64))
                                                       for k, v in models.items()},
                metadata={"warp": meta.to_json()}, tilt_movies=tilt_movies)


def import_warp(repo: Repository, folder: str | Path, *, source: str, settings: str | Path | None = None,
                copy: bool = False, population: str = "population", branch: str | None = None,
                polarity: PolarityChoice | None = None) -> ImportResult:
    """Every ``*.xml`` of a Warp processing folder (one item each) as a new source, in one commit."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInput(f"Warp folder {folder} does not exist or is not a folder")
    opts = read_settings(settings) if settings is not None else None
    ext = None
    if opts is not None and opts.get("Import", {}).get("Extension", "").startswith("*."):
        ext = opts["Import"]["Extension"][1:]
    xmls = sorted(p for p in folder.glob("*.xml") if p.is_file())
    if not xmls:
        raise InvalidInput(f"{folder}: no Warp XML files (*.xml)")
    staging = Staging(repo)
    try:
        items = []
        for x in xmls:
            meta_root = read_warp_xml(x)
            movie = find_movie(x, meta_root, ext) if meta_root.root == "Movie" else None
            items.append(warp_item(x, staging, settings=opts, movie=movie, copy=copy))
        ds = DataSource(source, {it.key: it.save(staging.objects) for it in items}, {"origin": "warp"})
        if len(ds.items) != len(items):
            raise InvalidInput(f"{folder}: two items have identical raw data")
        op = {"name": "import-warp", "folder": str(folder), "settings": str(settings) if settings else None,
              "source": source, "copy": copy}
        return staging.commit(population_name=population, sources={source: ds}, operation=op, branch=branch,
                              polarity=polarity,
                              message=f"Import Warp folder {folder.name} as source {source!r} ({len(items)} items)")
    finally:
        staging.close()
