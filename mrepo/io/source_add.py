"""Add a data source from raw MRC files (one item per file) with user-given imaging parameters.

Frames: each file is a movie or micrograph (n frames); tilts: each file is a tilt stack
in the order of ``tilt_angles``. Pixel size defaults to the MRC header's voxel size and
must agree with it when both are given. Models start empty except a zero ``ctf`` when
``defocus`` is given. No Fourier layout is involved in this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..graph import DataSource, Item, Repository
from ..store import InvalidInput
from .mrc import mrc_info
from .species_build import same_pixel
from .staging import ImportResult, PolarityChoice, Staging, name_key, raw_data

__all__ = ["add_source"]


def add_source(repo: Repository, name: str, files: Sequence[str | Path], *, kind: str, copy: bool = False,
               pixel_size: float | None = None, voltage: float = 300.0, cs: float = 2.7,
               amplitude_contrast: float = 0.07, dose: float = 0.0, defocus: float | None = None,
               tilt_angles: Sequence[float] | None = None, volume_dimensions: Sequence[float] | None = None,
               hand: float = 1.0, population: str = "population", branch: str | None = None,
               polarity: PolarityChoice | None = None) -> ImportResult:
    """One item per file (validated before anything is written); one new commit."""
    if kind not in ("frames", "tilts"):
        raise InvalidInput(f"--kind must be 'frames' or 'tilts', got {kind!r}")
    if not files:
        raise InvalidInput("no files given")
    if kind == "tilts" and (tilt_angles is None or volume_dimensions is None):
        raise InvalidInput("tilt series need --tilt-angles and --volume-dimensions")
    staging = Staging(repo)
    try:
        items: list[Item] = []
        names: dict[str, Path] = {}
        for f in files:
            info = mrc_info(f)
            key = name_key(str(f))
            if key in names:
                raise InvalidInput(f"{f} and {names[key]} would both be named {key!r}")
            names[key] = Path(f)
            pix = pixel_size if pixel_size is not None else info.voxel_size
            if pix <= 0:
                raise InvalidInput(f"{f}: no voxel size in the MRC header; give --pixel-size")
            if info.voxel_size > 0 and not same_pixel(info.voxel_size, pix):
                raise InvalidInput(f"{f}: MRC voxel size {info.voxel_size} Å disagrees with --pixel-size {pix} Å")
            n = info.nz
            imaging = {"pixel_size": float(pix), "voltage": float(voltage), "cs": float(cs),
                       "amplitude_contrast": float(amplitude_contrast), "dimensions": [info.nx, info.ny, n],
                       "exposure": [float(dose)] * n, "pre_exposure": [float(dose) * i for i in range(n)]}
            models = {}
            if defocus is not None:
                models["ctf"] = staging.objects.put_array(np.tile([float(defocus), float(defocus), 0.0], (n, 1)))
            if kind == "tilts":
                assert tilt_angles is not None and volume_dimensions is not None
                if len(tilt_angles) != n:
                    raise InvalidInput(f"{f}: {n} tilts in the stack but {len(tilt_angles)} tilt angles given")
                imaging.update(tilt_angles=[float(a) for a in tilt_angles], hand=float(hand),
                               acquisition_order=list(range(n)),
                               volume_dimensions=[float(v) for v in volume_dimensions])
            items.append(Item(kind, key, raw_data(f, copy=copy, staging=staging), imaging, models))
        ds = DataSource(name, {it.key: it.save(staging.objects) for it in items}, {"origin": "files"})
        if len(ds.items) != len(items):
            raise InvalidInput("two of the given files have identical content")
        op = {"name": "source-add", "source": name, "kind": kind, "files": [str(f) for f in files], "copy": copy,
              "voltage": voltage, "cs": cs, "amplitude_contrast": amplitude_contrast, "dose": dose}
        return staging.commit(population_name=population, sources={name: ds}, operation=op, branch=branch,
                              polarity=polarity,
                              message=f"Add source {name!r} ({len(items)} {kind} items)")
    finally:
        staging.close()
