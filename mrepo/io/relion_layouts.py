"""Read a RELION particle STAR file in any of its published layouts as RELION 3.1+ blocks.

Layouts accepted (each refused one names what was expected and what was found):

* RELION 3.1 / 4 / 5: ``data_optics`` + ``data_particles`` (tomography adds ``data_general``);
* RELION 3.0 (one ``data_`` or ``data_images``/``data_particles`` block without ``data_optics``):
  converted as RELION 3.1's ``StarConverter`` does: one optics group per distinct
  (rlnVoltage, rlnSphericalAberration, rlnAmplitudeContrast, pixel size, rlnBeamTiltX/Y),
  named ``opticsGroup<n>`` in order of first appearance; pixel size
  ``10000 * rlnDetectorPixelSize / rlnMagnification`` Å (or rlnImagePixelSize given per
  particle); rlnOriginX/Y/Z (pixels) become rlnOriginX/Y/ZAngst; rlnMagnification and
  rlnDetectorPixelSize are dropped (they are the pixel size);
* particles only (pickers: no data_optics and no optics columns): one optics group 1 without values;
* optics columns given per particle in a 3.1 file (``data_particles`` holds rlnImagePixelSize,
  rlnVoltage, ...): moved into their optics group, refusing groups whose rows disagree.

No Fourier layout is involved in this module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..store import InvalidInput
from .star import integers, numeric, positive, read_star

__all__ = ["read_particle_blocks", "OPTICS_COLUMNS"]

#: columns that belong to an optics group (moved out of data_particles when found there)
OPTICS_COLUMNS = ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnImagePixelSize",
                  "rlnMicrographOriginalPixelSize", "rlnImageSize", "rlnImageDimensionality", "rlnBeamTiltX",
                  "rlnBeamTiltY", "rlnTomoTiltSeriesPixelSize")


def _particles_block(blocks: dict[str, pd.DataFrame], path: Path) -> tuple[str, pd.DataFrame]:
    for name in ("particles", "images", ""):
        if name in blocks:
            return name, blocks[name]
    if len(blocks) == 1:
        name = next(iter(blocks))
        return name, blocks[name]
    raise InvalidInput(f"{path}: expected a data_particles block (RELION 3.1+) or a single data_ block "
                       f"(RELION 3.0), found: {', '.join('data_' + b for b in blocks) or 'none'}")


def _upgrade_30(df: pd.DataFrame, path: Path, bname: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """RELION 3.0 particles -> (optics, particles) as RELION 3.1 converts them."""
    df = df.copy()
    n = len(df)
    if "rlnImagePixelSize" in df.columns:
        pix = numeric(df, "rlnImagePixelSize", path, bname)
    elif "rlnMagnification" in df.columns and "rlnDetectorPixelSize" in df.columns:
        mag = positive(df, "rlnMagnification", path, bname)
        det = numeric(df, "rlnDetectorPixelSize", path, bname)
        pix = 10000.0 * det / mag
    else:
        raise InvalidInput(f"{path}: RELION 3.0 layout (no data_optics) needs rlnMagnification and "
                           f"rlnDetectorPixelSize or rlnImagePixelSize in data_{bname}; found columns "
                           f"{', '.join(df.columns[:8])}...")
    for c in ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"):
        if c not in df.columns:
            raise InvalidInput(f"{path}: RELION 3.0 layout (no data_optics) needs {c} in data_{bname}")
    key_cols = ["rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"] + \
        [c for c in ("rlnBeamTiltX", "rlnBeamTiltY") if c in df.columns]
    keys = [tuple(float(v) for v in vals) + (float(p),)
            for vals, p in zip(zip(*[numeric(df, c, path, bname) for c in key_cols]), pix)]
    groups: dict[tuple, int] = {}
    group = np.empty(n, dtype=np.int64)
    for i, k in enumerate(keys):
        group[i] = groups.setdefault(k, len(groups) + 1)
    optics = pd.DataFrame([{"rlnOpticsGroupName": f"opticsGroup{g}", "rlnOpticsGroup": g,
                            **{c: k[j] for j, c in enumerate(key_cols)}, "rlnImagePixelSize": k[-1],
                            "rlnMicrographOriginalPixelSize": k[-1], "rlnImageDimensionality": 2}
                           for k, g in groups.items()])
    for a in "XYZ":
        if f"rlnOrigin{a}" in df.columns and f"rlnOrigin{a}Angst" not in df.columns:
            df[f"rlnOrigin{a}Angst"] = numeric(df, f"rlnOrigin{a}", path, bname) * pix
        if f"rlnOrigin{a}" in df.columns:
            df = df.drop(columns=[f"rlnOrigin{a}"])
    drop = [c for c in key_cols + ["rlnMagnification", "rlnDetectorPixelSize", "rlnImagePixelSize"]
            if c in df.columns]
    df = df.drop(columns=drop)
    df["rlnOpticsGroup"] = group
    return optics, df


def _move_optics_columns(optics: pd.DataFrame, df: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Optics-group columns given per particle go into data_optics (one value per group)."""
    moved = [c for c in OPTICS_COLUMNS if c in df.columns and c not in optics.columns]
    if not moved:
        return optics, df
    groups = integers(df, "rlnOpticsGroup", path, "particles") if "rlnOpticsGroup" in df.columns \
        else np.ones(len(df), np.int64)
    optics = optics.copy()
    og = integers(optics, "rlnOpticsGroup", path, "optics")
    for c in moved:
        vals = numeric(df, c, path, "particles")
        col = []
        for g in og:
            v = vals[groups == g]
            if len(v) and not np.all(v == v[0]):
                row = int(np.nonzero(groups == g)[0][np.nonzero(v != v[0])[0][0]]) + 1
                raise InvalidInput(f"{path}: data_particles column {c} row {row}: {vals[row - 1]} differs from "
                                   f"{v[0]} given for other particles of optics group {g}")
            col.append(float(v[0]) if len(v) else np.nan)
        optics[c] = col
    return optics, df.drop(columns=moved)


def _has_30_optics(df: pd.DataFrame) -> bool:
    """A RELION 3.0 table carries its optics per particle (voltage and a pixel size)."""
    return "rlnVoltage" in df.columns or "rlnMagnification" in df.columns or "rlnImagePixelSize" in df.columns


def read_particle_blocks(path: str | Path) -> tuple[dict[str, pd.DataFrame], str]:
    """(``{"optics", "particles"[, "general"]}`` in RELION 3.1+ form, the layout read:
    ``"relion-3.0"``, ``"relion-3.1+"`` or ``"particles-only"`` (a picker's table without optics: one
    empty optics group 1))."""
    path = Path(path)
    blocks = read_star(path)
    bname, df = _particles_block(blocks, path)
    out: dict[str, pd.DataFrame] = {}
    if "general" in blocks:
        out["general"] = blocks["general"]
    if "optics" not in blocks and not _has_30_optics(df):
        # pickers (pytom, cylindra, ...) write particles only: one optics group without values
        optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"]})
        df = df.copy()
        df["rlnOpticsGroup"] = 1
        layout = "particles-only"
    elif "optics" not in blocks:
        optics, df = _upgrade_30(df, path, bname or "")
        layout = "relion-3.0"
    else:
        layout = "relion-3.1+"
        optics = blocks["optics"]
        if "rlnOpticsGroup" not in optics.columns:
            raise InvalidInput(f"{path}: block data_optics lacks required column rlnOpticsGroup")
        if "rlnOpticsGroup" not in df.columns:
            if len(optics) != 1:
                raise InvalidInput(f"{path}: data_particles lacks rlnOpticsGroup but data_optics has "
                                   f"{len(optics)} groups")
            df = df.copy()
            df["rlnOpticsGroup"] = int(optics["rlnOpticsGroup"].iloc[0])
        optics, df = _move_optics_columns(optics, df, path)
    out["optics"] = optics
    out["particles"] = df
    _check_groups(optics, df, path)
    return out, layout


def _check_groups(optics: pd.DataFrame, df: pd.DataFrame, path: Path) -> None:
    og = integers(optics, "rlnOpticsGroup", path, "optics")
    if len(set(og.tolist())) != len(og):
        raise InvalidInput(f"{path}: data_optics lists optics group numbers more than once ({og.tolist()})")
    pg = integers(df, "rlnOpticsGroup", path, "particles")
    bad = np.nonzero(~np.isin(pg, og))[0]
    if len(bad):
        raise InvalidInput(f"{path}: data_particles column rlnOpticsGroup row {bad[0] + 1}: optics group "
                           f"{pg[bad[0]]} is not in data_optics (groups: {sorted(og.tolist())})")
    for c in ("rlnVoltage", "rlnImagePixelSize", "rlnTomoTiltSeriesPixelSize", "rlnMicrographOriginalPixelSize"):
        if c in optics.columns:
            positive(optics, c, path, "optics")
