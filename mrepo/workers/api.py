"""The contract between the refinement of one item, the executors and the driver.

One iteration of population refinement:

1. the driver builds one :class:`ItemTask` per item (field of view) that holds
   particles of the selected species, and hands them to an :class:`Executor`;
2. the executor runs :func:`mrepo.workers.refine_item.refine_item` on each task
   (in-process, or in Ray actors that keep the species references resident),
   where the worker reads the raw data from the store itself, writes the item's
   new models and the particles' new poses to the store itself, and returns an
   :class:`ItemResult` of hashes plus the item's half-set Fourier sums;
3. the executor reduces the sums (:meth:`HalfSums.add`) and returns them with the
   per-item results; the driver reconstructs each species, computes FSC, builds the
   new population and commits once (compare-and-swap on the branch).

Layouts: half-set sums are the centred half-transforms of
:mod:`mrepo.kernels.gridding` (grid ``(2h+1, 2h+1, h+1)``, ``h = pad * box // 2``), held
in exact fixed point (:class:`HalfSums`); index 0 / 1 = half-set 1 / 2.

Determinism: a worker sets a fixed torch thread count (settings ``threads``, default 1)
so that refining the same task gives bit-identical results in any process.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class ItemTask:
    """Refine one item with every particle of every selected species in it.

    ``species``: species name -> species record hash (the versions used as references);
    ``settings``: the JSON form of the refinement settings (hashable, recorded in the commit);
    ``repo_url``: where the worker reads raw data and writes results (any store URL);
    ``particles_total``: number of particles in the item (for scheduling, largest first);
    ``polarity``: the data source's contrast polarity (``"dark"`` images are inverted).
    """

    repo_url: str
    source: str
    item_key: str
    item_hash: str
    species: dict[str, str]
    settings: dict[str, Any]
    iteration: int
    particles_total: int = 0
    polarity: str = "light"


#: Quantum of the fixed-point sums (2**-24): integer addition is associative, so the reduced
#: sums — and every hash computed from them — are identical whatever the order in which
#: items, actors and tree-reduction steps add them up (executor equivalence, fault tolerance).
FIXED_POINT_BITS = 24


@dataclass
class HalfSums:
    """Per-species half-set Fourier sums in exact fixed point.

    ``data`` (2, 2, *grid) int64: half-set, (real, imag), grid; ``weight`` (2, *grid) int64;
    value = integer * 2**-FIXED_POINT_BITS. Build with :meth:`from_float`, read with :meth:`to_float`.
    """

    data: np.ndarray
    weight: np.ndarray
    particles: int = 0

    @classmethod
    def from_float(cls, data: np.ndarray, weight: np.ndarray, particles: int = 0) -> HalfSums:
        """From ``data`` (2, *grid) complex and ``weight`` (2, *grid) real."""
        scale = float(2**FIXED_POINT_BITS)
        d = np.stack([np.asarray(data).real, np.asarray(data).imag], axis=1).astype(np.float64)
        if not (np.isfinite(d).all() and np.isfinite(weight).all()):
            raise ValueError("half-set sums contain NaN or Inf")
        return cls(np.rint(d * scale).astype(np.int64),
                   np.rint(np.asarray(weight, dtype=np.float64) * scale).astype(np.int64), particles)

    @classmethod
    def from_float_planes(cls, data: np.ndarray, weight: np.ndarray, particles: int = 0) -> HalfSums:
        """From ``data`` (2, 2, *grid) float64 (half-set, (real, imag), grid) and ``weight`` (2, *grid)
        float64, converted to fixed point *in their own memory* (the float arrays are consumed; the sums
        are int64 views of them), a few planes at a time: no full-size temporary (box 256 at pad 2:
        3 GiB of sums instead of ~12 GiB of copies in :meth:`from_float`). Same integers as :meth:`from_float`
        (``rint(x * 2**FIXED_POINT_BITS)``); raises ValueError on NaN or Inf (the arrays are then garbage)."""
        scale = float(2**FIXED_POINT_BITS)
        out = []
        for a in (data, weight):
            if a.dtype != np.float64 or not a.flags.c_contiguous or not a.flags.writeable or a.ndim < 2:
                raise ValueError(f"float planes must be writeable C-contiguous float64, got {a.dtype} {a.shape}")
            floats = a.reshape(-1, a.shape[-2] * a.shape[-1])
            ints = floats.view(np.int64)
            step = max(1, (8 << 20) // max(1, floats.shape[1] * 8))  # ~8 MiB of values per step
            for k in range(0, len(floats), step):
                block = floats[k:k + step]
                if not np.isfinite(block).all():
                    raise ValueError("half-set sums contain NaN or Inf")
                ints[k:k + step] = np.rint(block * scale)  # a new array first, then cast into the same memory
            out.append(a.view(np.int64))
        return cls(out[0], out[1], particles)

    @classmethod
    def zeros(cls, grid: tuple[int, ...]) -> HalfSums:
        return cls(np.zeros((2, 2, *grid), np.int64), np.zeros((2, *grid), np.int64))

    def to_float(self) -> tuple[np.ndarray, np.ndarray]:
        """(data (2, *grid) complex128, weight (2, *grid) float64)."""
        scale = 2.0 ** -FIXED_POINT_BITS
        return (self.data[:, 0] * scale + 1j * (self.data[:, 1] * scale)), self.weight * scale

    def add(self, other: HalfSums) -> HalfSums:
        """In-place exact sum (returns self)."""
        self.data += other.data
        self.weight += other.weight
        self.particles += other.particles
        return self


@dataclass
class ItemResult:
    """What a worker hands back for one item: hashes, sums, and statistics.

    ``item_hash``: the refined item record (already stored by the worker);
    ``particles``: species name -> hash of an ``item-particles`` record holding the
    refined poses of that species' particles in this item (ids, coordinates, angles);
    ``sums``: species name -> half-set sums of this item (None once an executor has
    folded them into its reduction); ``nc_spectra``: array hash of the per-frame/tilt
    spectra used for data-driven weighting, (n, shells, 3) float64 sums (cross, model power, data
    power; :func:`mrepo.workers.weights.nc_spectra`) (None if not computed);
    ``stats``: seconds, particles, target before/after, etc.
    """

    task: ItemTask
    item_hash: str
    particles: dict[str, str]
    sums: dict[str, HalfSums] | None
    nc_spectra: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class IterationOutput:
    """An executor's answer for one iteration: per-item results (input order) and reduced sums."""

    results: list[ItemResult]
    sums: dict[str, HalfSums]


class Executor(Protocol):
    """Runs the item tasks of one iteration and reduces their sums."""

    def run(self, tasks: Iterable[ItemTask], *, progress: Any = None) -> IterationOutput: ...

    def close(self) -> None: ...


def largest_first(tasks: Iterable[ItemTask]) -> Iterator[ItemTask]:
    """Scheduling order: most particles first (ties by item key, deterministic)."""
    return iter(sorted(tasks, key=lambda t: (-t.particles_total, t.source, t.item_key)))
