"""Exact float inversion for writers, so that export -> import reproduces stored values bit for bit.

Importers convert file values to mrepo's convention (e.g. ``x_A = x_px * pixel``,
``x = centred + centre``). An exporter must write a value ``v`` whose forward
conversion gives back exactly the stored float; :func:`invert_exact` starts from
the algebraic inverse and steps by single ulps until the forward map matches.
No Fourier layout is involved in this module.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["invert_exact"]


def invert_exact(target: np.ndarray, forward: Callable[[np.ndarray], np.ndarray], guess: np.ndarray,
                 max_steps: int = 8) -> np.ndarray:
    """Values ``v`` (float64, shape of ``target``) with ``forward(v) == target`` where reachable within
    ``max_steps`` ulps of ``guess``; elsewhere ``guess`` (the forward map is not onto every float)."""
    target = np.asarray(target, dtype=np.float64)
    v = np.array(np.broadcast_to(guess, target.shape), dtype=np.float64)
    done = forward(v) == target
    for step in range(1, max_steps + 1):
        if done.all():
            break
        for direction in (np.inf, -np.inf):
            cand = v.copy()
            for _ in range(step):
                cand = np.nextafter(cand, direction)
            ok = (~done) & (forward(cand) == target)
            v = np.where(ok, cand, v)
            done |= ok
    return v
