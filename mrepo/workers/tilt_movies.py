"""M's tilt movies (MCore ``--refine_tiltmovies``): per-frame motion inside each tilt's movie.

A tilt series may carry its raw tilt movies (:attr:`mrepo.graph.Item.tilt_movies`: a manifest of
one MRC movie (F, y, x) per tilt, stack order, every movie with the same F frames and the tilt
images' size). The item model ``tilt_movie_shifts`` (n, F, 2) float64 Å holds the (x, y)
image-content displacement of frame k of tilt i relative to the tilt image (absent = zeros): the
frame sees particle p at ``pos_p,i + s_i,k`` (``pos_p,i`` the tilt-level position of
:func:`mrepo.workers.geometry.particle_geometry`). Refinement keeps the mean over each tilt's frames
where it starts (the tilt's own position is the global shifts' job): zero for movies without an
alignment (a fresh or simulated item: the shifts are zero-mean), Warp's alignment of the movie to
its average for imported ones (:mod:`mrepo.io.warp_import`). This is M's reference-based tilt movie
alignment with a grid of no spatial and per-frame temporal resolution (M paper, Methods:
"For frames in tilt movie i …"; M's refined 3 x 3 x 3 spatial grid is not modelled).

Refinement (:func:`refine_tilt_movies`): after the tilt-level stages, every frame of every tilt is
an exposure (stack index ``i * F + k``) with the tilt's geometry, CTF and stage, dose ``dose_i / F``
and accumulated exposure ``pre_i + k dose_i / F`` (per-frame dose weighting), scored by M's target
against the tilt's reference projection shifted by ``s_i,k``; the shifts are optimised by L-BFGS
(px) and kept only if the target of each half-set rises. Like M, which re-exports each tilt's
average after aligning its movie, every image path of an item with movies and shifts then sees
each tilt as the sum of its frames shifted back by ``-s_i,k`` (:func:`aligned_tilts`), normalised
as a tilt (:mod:`mrepo.workers.raw_data`). With zero shifts that sum is the unaligned frame sum,
i.e. the raw tilt image when that was made from the same frames.

Frames are normalised so their sum is the normalised tilt: ``(frame - mean(sum) / F) / std(sum)``.
Arrays: frames (n * F, y, x) float32; Fourier shifts on ``rfft2`` half-grids (band-limited,
circular).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mrepo.graph import Item, Repository
from mrepo.graph.model import Population, check_polarity
from mrepo.kernels.shifts import shift_images
from mrepo.store import InvalidInput, ObjectStore
from mrepo.workers.geometry import Geometry
from mrepo.workers.item_model import ItemModel
from mrepo.workers.raw_data import NormalisedExposures, _MrcFile, open_exposures, read_exposures

__all__ = [
    "MODEL",
    "TiltMovies",
    "check_tilt_movies",
    "stored_shifts",
    "frame_model",
    "frame_geometry",
    "frame_exposures",
    "aligned_tilts",
    "item_exposures",
    "centred_shifts",
]

#: item model name of the per-frame shifts (n, F, 2) Å
MODEL = "tilt_movie_shifts"
_DT = torch.float64


class TiltMovies:
    """An item's raw tilt movies, verified and memory-mapped: movie i is (F, y, x)."""

    def __init__(self, movies: list[_MrcFile], name: str):
        frames = {m.data.shape[0] for m in movies}
        shapes = {m.data.shape[1:] for m in movies}
        if len(frames) != 1 or len(shapes) != 1:
            raise InvalidInput(
                f"item {name!r}: tilt movies must all have the same frames and size, got "
                f"frames {sorted(frames)}, sizes {sorted(shapes)}"
            )
        self.movies, self.name = movies, name
        self.frames: int = frames.pop()
        self.shape: tuple[int, int] = tuple(shapes.pop())  # type: ignore[assignment]

    @classmethod
    def open(cls, objects: ObjectStore, item: Item) -> TiltMovies:
        raw = item.tilt_movies
        if raw is None:
            raise InvalidInput(f"item {item.name!r}: has no raw tilt movies")
        if raw.format.lower() != "manifest":
            raise InvalidInput(
                f"item {item.name!r}: tilt movies must be a manifest of one MRC per tilt, got format {raw.format!r}"
            )
        try:
            entries = json.loads(objects.get_blob(raw.hash))["files"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(
                f"item {item.name!r}: tilt movie manifest {raw.hash[:12]} is not readable: {exc}"
            ) from None
        movies = [
            _MrcFile(objects, e["hash"], e.get("uri"), bool(e.get("stored")), f"item {item.name!r} tilt movie {k + 1}")
            for k, e in enumerate(entries)
        ]
        return cls(movies, item.name)

    @property
    def n(self) -> int:
        return len(self.movies)

    def movie(self, i: int) -> np.ndarray:
        """Raw frames of tilt ``i`` (F, y, x) float64."""
        return np.asarray(self.movies[i].data, dtype=np.float64)


def check_tilt_movies(repo: Repository, pop: Population, sources: list[str]) -> None:
    """Refuse ``--refine-tilt-movies`` (one line, naming the item) when a tilt series of ``sources``
    has no raw tilt movies in the population."""
    for name in sources:
        for ih in repo.source(pop.sources[name]).items.values():
            item = repo.item(ih)
            if item.kind == "tilts" and item.tilt_movies is None:
                raise InvalidInput(
                    f"--refine-tilt-movies: item {item.name!r} (source {name!r}) has no raw tilt "
                    "movies in the population"
                )


def stored_shifts(objects: ObjectStore, item: Item, n: int, frames: int) -> np.ndarray:
    """The item's ``tilt_movie_shifts`` (n, F, 2) Å, zeros when absent."""
    h = item.models.get(MODEL)
    if h is None:
        return np.zeros((n, frames, 2))
    a = np.asarray(objects.get_array(h), np.float64)
    if a.shape != (n, frames, 2):
        raise InvalidInput(f"item {item.name!r}: model {MODEL!r} must have shape {(n, frames, 2)}, got {a.shape}")
    return a


def centred_shifts(x: Tensor, start: Tensor | None = None) -> Tensor:
    """Per-frame shifts (n, F, 2) with each tilt's mean change over its frames since ``start`` removed
    (the gauge; ``start`` None: zeros, i.e. zero-mean shifts)."""
    return x - (x if start is None else x - start).mean(1, keepdim=True)


def frame_model(model: ItemModel, frames: int) -> ItemModel:
    """The item's model with every frame an exposure (stack index ``i * F + k``): tilt quantities
    repeated, dose ``dose_i / F``, accumulated exposure ``pre_i + k dose_i / F``; no data-driven
    weights (frames are weighted by their own dose)."""
    f = frames

    def rep(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.repeat(a, f, 0)

    dose = rep(model.dose) / f
    pre = rep(model.pre_exposure) + np.tile(np.arange(f), model.n) * dose
    return dataclasses.replace(
        model,
        n=model.n * f,
        dose=dose,
        pre_exposure=pre,
        time=rep(model.time),
        ctf=rep(model.ctf),
        global_shifts=rep(model.global_shifts),
        stage_angles=rep(model.stage_angles),
        stage_corrections=rep(model.stage_corrections),
        weights=None,
        phase_shift=rep(model.phase_shift),
    )


def frame_geometry(geo: Geometry, shifts_px: Tensor) -> Geometry:
    """Tilt geometry (P, n, …) -> frame geometry (P, n * F, …): positions ``pos_p,i + s_i,k`` for
    ``shifts_px`` (n, F, 2) px; poses, defoci and astigmatism those of the tilt."""
    f = shifts_px.shape[1]

    def rep(t: Tensor, dim: int) -> Tensor:
        return t.repeat_interleave(f, dim=dim)

    pos = rep(geo.positions, 1) + shifts_px.reshape(1, -1, 2).to(geo.positions.dtype)
    optics = dict(geo.optics)
    if "phase" in optics:
        optics["phase"] = rep(optics["phase"], 0)
    return Geometry(
        pos, rep(geo.rotations, 1), rep(geo.defocus_u, 1), rep(geo.defocus_v, 1), rep(geo.astigmatism, 0), optics
    )


def _tilt_norm(total: np.ndarray) -> tuple[float, float]:
    s = float(total.std())
    return float(total.mean()), s if s > 0 else 1.0


def frame_exposures(movies: TiltMovies, polarity: str) -> Tensor:
    """All frames (n * F, y, x) float32, normalised so each tilt's frames sum to its normalised tilt."""
    sign = -1.0 if check_polarity(polarity) == "dark" else 1.0
    out = np.empty((movies.n * movies.frames, *movies.shape), np.float32)
    for i in range(movies.n):
        m = movies.movie(i)
        mean, std = _tilt_norm(m.sum(0))
        out[i * movies.frames : (i + 1) * movies.frames] = (m - mean / movies.frames) * (sign / std)
    return torch.from_numpy(out)  # host: a CPU stack; the refinement moves it to its device


def aligned_tilts(movies: TiltMovies, shifts_px: np.ndarray, polarity: str) -> Tensor:
    """Tilt images (n, y, x) float32: each tilt's frames shifted by ``-shifts_px`` (n, F, 2) px and
    summed, then normalised as a tilt (minus mean, over std, times the polarity)."""
    sign = -1.0 if check_polarity(polarity) == "dark" else 1.0
    out = np.empty((movies.n, *movies.shape), np.float32)
    for i in range(movies.n):
        m = torch.from_numpy(movies.movie(i))  # host: numpy in, numpy out
        total = shift_images(m, -torch.from_numpy(np.asarray(shifts_px[i], np.float64))).sum(0).numpy()  # host
        mean, std = _tilt_norm(total)
        out[i] = (total - mean) * (sign / std)
    return torch.from_numpy(out)  # host: a CPU stack; the refinement moves it to its device


def item_exposures(objects: ObjectStore, item: Item, polarity: str, pixel_size: float, *,
                   lazy: bool = False) -> Tensor | NormalisedExposures:
    """What every image path of ``item`` sees: its aligned tilt movies when it has movies and a
    ``tilt_movie_shifts`` model (a tensor, made from every frame), else its raw exposures
    (:func:`mrepo.workers.raw_data.read_exposures`; ``lazy``: read on demand, bounded memory,
    :func:`mrepo.workers.raw_data.open_exposures`)."""
    if item.tilt_movies is None or MODEL not in item.models:
        return (open_exposures if lazy else read_exposures)(objects, item, polarity)
    movies = TiltMovies.open(objects, item)
    shifts = stored_shifts(objects, item, movies.n, movies.frames)
    return aligned_tilts(movies, shifts / pixel_size, polarity)


def summary(shifts_A: np.ndarray, pixel_size: float) -> dict[str, Any]:
    """RMS and largest per-frame shift (px) for the stats."""
    r = np.hypot(shifts_A[..., 0], shifts_A[..., 1]) / pixel_size
    return {"rms_px": float(np.sqrt((r**2).mean())) if r.size else 0.0, "max_px": float(r.max()) if r.size else 0.0}
