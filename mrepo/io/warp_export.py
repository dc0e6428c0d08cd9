"""Per-item Warp XML next to an exported M source, so that M (DataSource.cs -> Movie/TiltSeries) can open it.

What M needs (warpem/warp WarpLib/Sociology/DataSource.cs, Movie.cs, TiltSeries.cs): for each
``<File Name=...>`` of a .source, the item XML ``<source folder>/<RootName>.xml``; for frame series the
movie at ``DataDirectory/<Name>`` (``Movie.DataPath``); for tilt series ``<name>.tomostar`` and the
tilt images (``tiltstack/<name>/<name>.st`` or <MoviePath>).

What we write: ``<RootName>.xml`` with ``DataDirectory`` = the folder holding the raw movie; tilt series
also ``<name>.tomostar`` (wrpMovieName, wrpAngleTilt, wrpDose) and a symbolic link
``tiltstack/<name>/<name>.st`` to the raw stack. When the item still carries the Warp metadata it was
imported with and its models equal those the metadata implies, that metadata is written back verbatim
(bit-exact round trip); otherwise the XML is synthesised from the models: frames GridCTF (1, 1, n) from
the mean of defocus U/V, DefocusDelta/Angle of frame 0, GridMovementX/Y = −global_shifts; tilts
Angles = tilt_angles, Dose = pre_exposure, AxisAngle = zrot, AxisOffset = global_shifts, per-tilt
GridCTF/DefocusDelta/DefocusAngle — which drops xtilt and any ytilt that differs from −tilt angle.
Items whose raw data is a manifest of tilt images get MoviePath with absolute paths.
No Fourier layout is involved in this module.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..graph import Item, Repository
from .raw_access import raw_paths
from .star import write_star
from .warp_import import models_from_warp
from .warp_xml import WarpGrid, WarpMeta, write_warp_xml

__all__ = ["write_item_xml", "item_warp_meta"]


def _arr(repo: Repository, item: Item, name: str) -> np.ndarray | None:
    h = item.models.get(name)
    return None if h is None else np.asarray(repo.objects.get_array(h), dtype=np.float64)


def _g(values: np.ndarray) -> list[WarpGrid]:
    return [WarpGrid((1, 1, len(values)), ("0", "0", "0"), tuple(repr(float(v)) for v in values))]


def _stored_matches(repo: Repository, item: Item, meta: WarpMeta) -> bool:
    im = item.imaging
    n = int(im["dimensions"][2])
    vol = np.asarray(im["volume_dimensions"], np.float64) if item.kind == "tilts" else None
    try:
        models = models_from_warp(meta, n, Path(item.name), pixel=float(im["pixel_size"]),
                                  image_px=(int(im["dimensions"][0]), int(im["dimensions"][1])), volume_A=vol)
    except Exception:  # noqa: BLE001 - any inconsistency means "synthesise"
        return False
    if set(models) != set(item.models):
        return False
    return all(np.array_equal(v, _arr(repo, item, k)) for k, v in models.items())


def item_warp_meta(repo: Repository, item: Item) -> WarpMeta:
    """The Warp metadata to write for ``item`` (stored verbatim, or synthesised from its models)."""
    stored = item.metadata.get("warp")
    if stored is not None:
        meta = WarpMeta.from_json(stored)
        if _stored_matches(repo, item, meta):
            return meta
    im = item.imaging
    n = int(im["dimensions"][2])
    ctf = _arr(repo, item, "ctf")
    ctf = ctf if ctf is not None else np.zeros((n, 3))
    d = (ctf[:, 0] + ctf[:, 1]) / 2 / 1e4
    dd = (ctf[:, 0] - ctf[:, 1]) / 1e4
    phase = _arr(repo, item, "phase_shift")
    params = {"PixelSize": im["pixel_size"], "Cs": im["cs"], "Voltage": im["voltage"], "Amplitude":
              im["amplitude_contrast"], "Defocus": float(d.mean()) if n else 0.0,
              "DefocusDelta": float(dd[0]) if n else 0.0, "DefocusAngle": float(ctf[0, 2]) if n else 0.0,
              "PhaseShift": float(phase[0]) / 180.0 if phase is not None and n else 0.0}
    meta = WarpMeta("Movie" if item.kind == "frames" else "TiltSeries",
                    ctf={k: repr(float(v)) for k, v in params.items()})
    shifts = _arr(repo, item, "global_shifts")
    shifts = shifts if shifts is not None else np.zeros((n, 2))
    if item.kind == "frames":
        meta.grids = {"GridCTF": _g(d), "GridMovementX": _g(-shifts[:, 0]), "GridMovementY": _g(-shifts[:, 1])}
        return meta
    stage = _arr(repo, item, "stage_angles")
    zrot = stage[:, 2] if stage is not None else np.zeros(n)
    vol = ",".join(repr(float(v)) for v in im["volume_dimensions"])
    meta.attributes = {"AreAnglesInverted": "False", "LevelAngleX": "0", "LevelAngleY": "0",
                       "VolumeDimensionsAngstrom": vol}
    meta.per_tilt = {"Angles": [repr(float(v)) for v in im["tilt_angles"]],
                     "Dose": [repr(float(v)) for v in im.get("pre_exposure", [0.0] * n)],
                     "UseTilt": ["True"] * n, "AxisAngle": [repr(float(v)) for v in zrot],
                     "AxisOffsetX": [repr(float(v)) for v in shifts[:, 0]],
                     "AxisOffsetY": [repr(float(v)) for v in shifts[:, 1]],
                     "MoviePath": [str(p) for p in raw_paths(repo, item)] if item.raw.format == "manifest"
                     else [f"{item.name}_{i:03d}" for i in range(n)]}
    meta.grids = {"GridCTF": _g(d), "GridCTFDefocusDelta": _g(dd), "GridCTFDefocusAngle": _g(ctf[:, 2])}
    if phase is not None:
        meta.grids["GridCTFPhase"] = _g(phase / 180.0)
    return meta


def write_item_xml(repo: Repository, item: Item, out: Path) -> list[Path]:
    """Write the XML (and for tilt series the .tomostar and stack link) of one item into ``out``."""
    meta = item_warp_meta(repo, item)
    paths = raw_paths(repo, item)
    if item.kind == "frames":
        return [write_warp_xml(meta, out / f"{paths[0].stem}.xml", data_directory=str(paths[0].parent))]
    written = [write_warp_xml(meta, out / f"{item.name}.xml")]
    tomostar = pd.DataFrame({"wrpMovieName": meta.per_tilt["MoviePath"],
                             "wrpAngleTilt": [float(v) for v in meta.per_tilt["Angles"]],
                             "wrpDose": [float(v) for v in meta.per_tilt["Dose"]]})
    written.append(write_star(out / f"{item.name}.tomostar", {"": tomostar}))
    if item.raw.format != "manifest":
        link = out / "tiltstack" / item.name / f"{item.name}.st"
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(paths[0], link)
        written.append(link)
    return written
