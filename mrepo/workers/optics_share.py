"""One optics value per data source and optics group (issue 15: magnification and aberrations are a
property of the microscope session, shared by its items, as RELION's optics table).

Workers refine the optics groups per item (:mod:`mrepo.workers.optics`); after an iteration the driver
replaces each item's refined ``mag_matrix``, ``beam_tilt``, ``odd_zernike``, ``even_zernike`` and ``cs``
by their particle-weighted mean over the items of the same data source and optics group
(``imaging["optics_group"]``, when imported from RELION) and stores the items again. That
iteration's reconstruction used each item's own estimate; the next iteration starts from the shared
value. Per-exposure phase shifts (``phase_shift`` model) stay per item (phase plates age).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from mrepo.graph import Item
from mrepo.store import ObjectStore
from mrepo.workers.api import ItemResult

__all__ = ["SHARED_OPTICS_KEYS", "share_optics"]

#: imaging keys that one data source's items share after optics refinement
SHARED_OPTICS_KEYS = ("mag_matrix", "beam_tilt", "odd_zernike", "even_zernike", "cs")


def _mean(values: list, weights: list[float]):
    """Weighted mean of equally shaped values; lists of different lengths are zero-padded."""
    arrays = [np.asarray(v, dtype=np.float64) for v in values]
    if arrays[0].ndim == 1:
        n = max(len(a) for a in arrays)
        arrays = [np.pad(a, (0, n - len(a))) for a in arrays]
    mean = np.average(np.stack(arrays), axis=0, weights=np.asarray(weights, dtype=np.float64))
    return float(mean) if mean.ndim == 0 else mean.tolist()


def share_optics(objects: ObjectStore, results: list[ItemResult]) -> list[ItemResult]:
    """Results whose items carry the shared optics of their (source, optics group); items are stored anew
    where their values change. Items without particles do not vote but receive the shared value."""
    items = {id(r): Item.load(objects, r.item_hash) for r in results}
    groups: dict[tuple, list[ItemResult]] = defaultdict(list)
    for r in results:
        groups[(r.task.source, items[id(r)].imaging.get("optics_group"))].append(r)
    out = {id(r): r for r in results}
    for members in groups.values():
        voters = [r for r in members if int(r.stats.get("particles", 0)) > 0] or members
        weights = [max(float(r.stats.get("particles", 0)), 1.0) for r in voters]
        shared = {}
        for key in SHARED_OPTICS_KEYS:
            have = [(items[id(r)].imaging[key], w) for r, w in zip(voters, weights) if key in items[id(r)].imaging]
            if have and len(have) == len(voters):
                shared[key] = _mean([v for v, _ in have], [w for _, w in have])
        if not shared or len(members) < 2:
            continue
        for r in members:
            item = items[id(r)]
            imaging = {**item.imaging, **shared}
            if imaging == dict(item.imaging):
                continue
            new_hash = dataclasses.replace(item, imaging=imaging).save(objects)
            stats = {**r.stats, "optics": {k: imaging[k] for k in SHARED_OPTICS_KEYS if k in imaging},
                     "optics_item": r.stats.get("optics")}
            out[id(r)] = dataclasses.replace(r, item_hash=new_hash, stats=stats)
    return [out[id(r)] for r in results]
