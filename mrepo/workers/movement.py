"""How far one refinement iteration moved each parameter group, and whether that is plausible.

Compares the species' particle tables and the items' model arrays before and after an
iteration, per group (units): ``translation`` (px, in-plane particle position, first
trajectory sample), ``z`` (Å, particle depth; tilts), ``particle_defocus`` (Å, frames:
the particle's height), ``rotation`` (degrees, geodesic angle of the pose), ``shifts``
(px, per-exposure global shift), ``defocus`` (Å, per-exposure mean of U and V),
``astigmatism`` (Å, per-exposure half difference U − V), ``stage`` (degrees, norm of the
per-tilt stage-angle change), ``volume_warp`` (px, norm of each volume-warp node's change; tilts),
``doming`` (Å, each doming node's change; frames), ``tilt_movies`` (px, each tilt-movie frame shift's change;
tilts with raw tilt movies). Each group is summarised by its median and 95th percentile.

**Divergence** (:func:`divergence`): with the previous resolution d (Å) of the species,
a particle cannot be located better than d, so an iteration whose 95th-percentile
particle move exceeds d (translation, z), whose rotations exceed the angle that moves the
particle's edge by d (``deg(d / r)``), or whose defocus changes exceed what d resolves
(d²/λ, see :func:`mrepo.workers.schedule.defocus_window`) is fitting noise, not
signal: the driver stops without committing it.

**Settled** (:func:`settled`): resolution changed by less than 1 % for every species and
the median moves are below 0.1 px, 0.1° and 10 Å (used by ``--iterations auto``).
No Fourier layout here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from mrepo.kernels.rotations import euler_to_matrix, rotation_angle
from mrepo.workers.schedule import defocus_window

__all__ = ["particle_moves", "item_moves", "species_moves", "item_version_moves", "summarise", "divergence", "settled",
           "UNITS"]

UNITS = {"translation": "px", "z": "Å", "particle_defocus": "Å", "rotation": "°", "shifts": "px",
         "defocus": "Å", "astigmatism": "Å", "stage": "°", "volume_warp": "px", "doming": "Å",
         "tilt_movies": "px"}
#: median moves below which an iteration counts as settled (units of :data:`UNITS`)
SETTLED = {"translation": 0.1, "z": 1.5, "particle_defocus": 10.0, "rotation": 0.1, "shifts": 0.1,
           "defocus": 10.0, "astigmatism": 10.0, "stage": 0.1, "volume_warp": 0.1, "doming": 10.0,
           "tilt_movies": 0.1}


def particle_moves(old_coords: np.ndarray, old_angles: np.ndarray, new_coords: np.ndarray, new_angles: np.ndarray,
                   pixel_size: float, kind: str) -> dict[str, np.ndarray]:
    """Per-particle moves between two versions of the same particles: coordinates (N, T, 3) Å,
    angles (N, T, 3) degrees (first temporal sample)."""
    if len(old_coords) == 0:
        return {}
    d = new_coords[:, 0] - old_coords[:, 0]
    rot = rotation_angle(euler_to_matrix(torch.from_numpy(np.deg2rad(new_angles[:, 0]))),
                         euler_to_matrix(torch.from_numpy(np.deg2rad(old_angles[:, 0])))).numpy()
    out = {"translation": np.hypot(d[:, 0], d[:, 1]) / pixel_size, "rotation": np.rad2deg(rot)}
    out["z" if kind == "tilts" else "particle_defocus"] = np.abs(d[:, 2])
    return out


def item_moves(old: dict[str, np.ndarray | None], new: dict[str, np.ndarray | None],
               pixel_size: float) -> dict[str, np.ndarray]:
    """Per-exposure moves of an item's models (``global_shifts`` (n, 2) Å, ``ctf`` (n, 3),
    ``stage_corrections`` (n, 3) degrees) and per-node moves of its deformation grids (``volume_warp``,
    ``doming``, Å); missing arrays (or a grid of another shape) count as zeros."""
    out: dict[str, np.ndarray] = {}

    def pair(name: str) -> tuple[np.ndarray, np.ndarray] | None:
        a, b = old.get(name), new.get(name)
        if a is None and b is None:
            return None
        a = np.zeros_like(b) if a is None or (b is not None and a.shape != b.shape) else a  # new grid: from 0
        b = np.zeros_like(a) if b is None else b
        return np.asarray(a, np.float64), np.asarray(b, np.float64)

    if (p := pair("global_shifts")) is not None:
        out["shifts"] = np.hypot(*(p[1] - p[0]).T) / pixel_size
    if (p := pair("ctf")) is not None:
        a, b = p
        out["defocus"] = np.abs((b[:, 0] + b[:, 1]) / 2 - (a[:, 0] + a[:, 1]) / 2)
        out["astigmatism"] = np.abs((b[:, 0] - b[:, 1]) / 2 - (a[:, 0] - a[:, 1]) / 2)
    if (p := pair("stage_corrections")) is not None:
        out["stage"] = np.linalg.norm(p[1] - p[0], axis=-1)
    if (p := pair("volume_warp")) is not None:  # (3, gx, gy, gz, gt) Å
        out["volume_warp"] = np.linalg.norm((p[1] - p[0]).reshape(3, -1), axis=0) / pixel_size
    if (p := pair("doming")) is not None:  # (gx, gy, gt) Å
        out["doming"] = np.abs(p[1] - p[0]).ravel()
    if (p := pair("tilt_movie_shifts")) is not None:  # (n, F, 2) Å
        out["tilt_movies"] = np.linalg.norm(p[1] - p[0], axis=-1).ravel() / pixel_size
    return out


def summarise(moves: list[dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """{group: {"median", "p95", "max", "n", "unit"}} over all values of each group."""
    groups: dict[str, list[np.ndarray]] = {}
    for m in moves:
        for k, v in m.items():
            groups.setdefault(k, []).append(np.ravel(v))
    out = {}
    for k in sorted(groups):
        v = np.concatenate(groups[k])
        if len(v) == 0:
            continue
        out[k] = {"median": float(np.median(v)), "p95": float(np.percentile(v, 95)), "max": float(v.max()),
                  "n": int(len(v)), "unit": UNITS.get(k, "")}
    return out


def divergence(summary: dict[str, dict[str, Any]], resolution: float | None, radius: float, pixel_size: float,
               voltage_kv: float) -> str | None:
    """A one-line reason when the 95th-percentile moves exceed what ``resolution`` (Å, the
    previous one) allows (see module docstring); None when plausible or unknown resolution."""
    if not resolution or not math.isfinite(resolution):
        return None
    allowed = {"translation": resolution / pixel_size, "z": resolution,
               "rotation": math.degrees(resolution / max(radius, 1.0)),
               "particle_defocus": defocus_window(resolution, voltage_kv, math.inf),
               "defocus": defocus_window(resolution, voltage_kv, math.inf)}
    for k, limit in allowed.items():
        if k in summary and summary[k]["p95"] > limit:
            return (f"{k} moved {summary[k]['p95']:.3g} {summary[k]['unit']} (95th percentile), more than the "
                    f"{limit:.3g} {summary[k]['unit']} a {resolution:.2f} Å map can determine")
    return None


def settled(summary: dict[str, dict[str, Any]], before: dict[str, float | None], after: dict[str, float | None],
            tolerance: float = 0.01) -> bool:
    """Resolution within ``tolerance`` (relative) for every species and median moves below :data:`SETTLED`."""
    for n, b in before.items():
        a = after.get(n)
        if not b or not a or abs(a - b) > tolerance * b:
            return False
    return all(v["median"] <= SETTLED.get(k, math.inf) for k, v in summary.items())


def species_moves(old, new, kinds: dict[str, str], pixel_size: float) -> list[dict[str, np.ndarray]]:
    """Per-particle moves between two versions ``old``/``new`` (:class:`~mrepo.graph.ParticleTable`,
    same rows) of a species' table, for the particles of the items in ``kinds`` (item key -> kind)."""
    if len(old) == 0:
        return []
    keys = old.item_keys().astype(str)
    out = []
    for kind in sorted(set(kinds.values())):
        rows = np.isin(keys, [k for k, v in kinds.items() if v == kind])
        if rows.any():
            out.append(particle_moves(old.coordinates[rows], old.angles[rows], new.coordinates[rows],
                                      new.angles[rows], pixel_size, kind))
    return out


def item_version_moves(objects, old_hash: str, new_hash: str) -> tuple[str, dict[str, np.ndarray]]:
    """(kind, :func:`item_moves`) between two versions of an item (record hashes)."""
    from mrepo.graph import Item

    old, new = Item.load(objects, old_hash), Item.load(objects, new_hash)

    def arrays(item) -> dict[str, np.ndarray | None]:
        return {k: (np.asarray(objects.get_array(item.models[k])) if k in item.models else None)
                for k in ("global_shifts", "ctf", "stage_corrections", "volume_warp", "doming", "tilt_movie_shifts")}

    return new.kind, item_moves(arrays(old), arrays(new), float(new.imaging["pixel_size"]))
