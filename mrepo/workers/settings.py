"""Refinement settings: one frozen, JSON-round-trippable dataclass recorded in every commit.

Units: resolutions in Å, defocus in Å, angles in degrees. No Fourier layout here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from mrepo.workers.device import check_device_name

__all__ = ["RefineSettings"]


def _grid(value: Any, name: str, axes: str = "x, y, time") -> tuple[int, ...]:
    size = len(axes.split(","))
    given = value
    try:
        if isinstance(value, str):
            value = [int(v) for v in value.lower().split("x")]
        t = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        t = ()
    if len(t) != size or min(t) < 1:
        raise ValueError(f"{name} must be {size} positive sizes ({axes}) like {'x'.join(['4'] * size)}, got {given!r}")
    return t


@dataclass(frozen=True)
class RefineSettings:
    """What to refine and how (M's parameter groups, switchable one by one).

    ``image_warp``: spline grid (x, y, time) nodes, ``"auto"`` or None; for tilts the time axis is
    forced to the number of tilts (per-tilt temporal resolution, as M). ``"auto"`` (the CLI
    default): each item's grid from its particle count and field of view, at least two
    particles per spatial control point (:func:`mrepo.workers.schedule.image_warp_grid`:
    60 particles per tilt series -> 5 x 5 per tilt, 12 -> 2 x 2, fewer than 8 -> no warp);
    the grid each item used is recorded in the commit's operation record (``image_warp_grids``).
    ``resolution_fraction``: in the first iteration the refinement frequency limit is
    this fraction of the species' resolution frequency; it rises linearly to 1 at the
    last iteration (``resolution_limit``). ``temporal_samples``: per-particle
    trajectory samples used when refining poses (species keep their own if larger).

    Safety schedule (M, Methods: Optimization procedure; MCore defaults): defocus and
    astigmatism are refined only with species whose current resolution reaches
    ``ctf_min_resolution`` Å (MCore ``--ctf_minresolution`` 8 Å: "use only species with at least
    this resolution"; the ramped refinement limit of the first iterations does not gate it); the defocus search range
    shrinks to what the limit resolves (±d²/λ, the defocus that turns the CTF phase at
    1/d by π) and is a hard bound, and defocus never becomes negative unless
    ``allow_negative_defocus``. Items with fewer than ``min_particles_per_item`` particles
    are not refined (MCore ``--min_particles``, default 1), only back-projected. With
    ``require_both_halves`` an update of shared parameters is kept only if the target of
    each half-set (against its own half-map) improves, and a particle's pose/defocus only
    if its score improves against both half-maps; otherwise the old values stay.
    ``stage_prior_deg``: Gaussian prior (σ, degrees) on an item's common (tilt-mean)
    stage-angle correction per iteration, whose weight relative to the data falls as
    1 / (particles · tilts); per-tilt deviations from it are not held. ``particle_batch``: particles per
    evaluation batch (bounds the memory of the autograd graph).
    ``fsc_weighted_references``: half-maps weighted by sqrt(2FSC/(1+FSC)) before use;
    ``mask_follows_map``: each iteration's mask is made from its map
    (:func:`mrepo.workers.references.follow_mask`). ``patch_memory_mib``: above this estimate
    of the extracted patches an item streams its particle batches (patches re-extracted from the
    exposures at each evaluation, memory of one batch; ~1.3x the time). ``graph_memory_mib``: the
    largest estimated autograd graph (~12 bytes per byte of kept patches) for which every L-BFGS
    evaluation back-propagates all particle batches in one pass; above it (and always when streaming)
    batches are back-propagated one at a time after a pass without gradients (memory of one batch,
    ~4/3 the time per evaluation; :func:`mrepo.workers.objective.backward_target`).
    ``device``: torch device of the refinement and back-projection (``cpu``, ``cuda``, ``cuda:N``;
    :mod:`mrepo.workers.device`): extracted patches, reference volumes, slices, CTFs and
    back-projection grids live there, only results come back as CPU arrays; the spelling is checked
    here, CUDA's presence where the work runs (:func:`mrepo.workers.device.resolve_device`).
    ``denoise``: refine against each half-map denoised by the species' noise2noise network
    (:mod:`mrepo.workers.denoise`, M's map denoising) instead of the FSC-weighted half-map; the
    network is trained first where a species has none and retrained (``denoise_steps`` Adam steps,
    on ``denoise_device``) on every iteration's new half-maps.
    Optics groups (:mod:`mrepo.workers.optics`; refined with the CTF, i.e. only with species at
    ``ctf_min_resolution``; one value per item, written back to its imaging as RELION's keys):
    ``refine_mag`` the 2x2 magnification matrix (MCore ``--refine_mag``), ``ctf_zernike3`` beam
    tilt (mrad) and trefoil (odd Zernike order 3, ``--ctf_zernike3``), ``ctf_zernike4`` even
    Zernike order 4 (``--ctf_zernike4``), ``ctf_cs`` spherical aberration (mm, ``--ctf_cs``),
    ``ctf_phase`` phase-plate phase shift (deg, ``--ctf_phase``).
    ``weights_scope`` (with ``weights``): ``"source"`` fits the data-driven exposure weights over all
    items of a data source after each iteration (per exposure index and per item, as M;
    :mod:`mrepo.workers.source_weights`), used from the next iteration on; ``"item"`` fits them per item
    inside its refinement (:func:`mrepo.workers.weights.fit_exposure_weights`), used at once.
    Deformation groups (:mod:`mrepo.workers.deformation`): ``volume_warp`` (tilt series; MCore
    ``--refine_volumewarp XxYxZxT``) node counts of the quadrilinear grid of 3-D particle displacements
    (Å) over the volume and accumulated exposure, refined with the geometry, or None (CLI default grid
    4x4x2x10 as in M's EMPIAR-10064 example); ``doming`` (frame series; MCore ``--refine_doming``) node
    counts (x, y, time) of the cubic spline grid of defocus offsets (Å), refined with the CTF (CLI
    default 3x3x5: M's 3 x 3 spatial points), or None.
    ``tilt_movies`` (tilt series with raw tilt movies; MCore ``--refine_tiltmovies``): after the other
    groups, refine per-frame (x, y) shifts inside each tilt's movie (item model ``tilt_movie_shifts``
    (n, F, 2) Å, each tilt's mean over its frames kept, default zeros) and re-make each tilt from its aligned frames
    (:mod:`mrepo.workers.tilt_movies`); off by default.
    """

    refine_shifts: bool = True
    image_warp: tuple[int, int, int] | str | None = None
    refine_poses: bool = False
    refine_defocus: bool = False
    refine_astigmatism: bool = False
    refine_stage_angles: bool = False
    weights: bool = False
    weights_scope: str = "source"
    resolution_fraction: float = 0.8
    resolution_ramp: int = 3
    temporal_samples: int = 1
    threads: int = 1
    device: str = "cpu"
    lbfgs_iterations: int = 20
    rounds: int = 2
    defocus_search_range: float = 3000.0
    defocus_search_step: float = 100.0
    defocus_search_iterations: int = 5
    reconstruction_pad: int = 2
    min_box_factor: float = 2.0
    whiten: bool = True
    symmetrize: bool = True
    wiener_fraction: float = 1e-3
    ctf_min_resolution: float = 8.0
    min_particles_per_item: int = 1
    require_both_halves: bool = True
    allow_negative_defocus: bool = False
    stage_prior_deg: float = 0.5
    particle_batch: int = 64
    fsc_weighted_references: bool = True
    mask_follows_map: bool = True
    patch_memory_mib: float = 2048.0
    graph_memory_mib: float = 512.0
    denoise: bool = False
    denoise_steps: int = 800
    denoise_device: str = "cpu"
    refine_mag: bool = False
    ctf_zernike3: bool = False
    ctf_zernike4: bool = False
    ctf_cs: bool = False
    ctf_phase: bool = False
    volume_warp: tuple[int, int, int, int] | None = None
    doming: tuple[int, int, int] | None = None
    tilt_movies: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.image_warp, str) and self.image_warp.strip().lower() == "auto":
            object.__setattr__(self, "image_warp", "auto")
        elif self.image_warp is not None:
            object.__setattr__(self, "image_warp", _grid(self.image_warp, "image_warp"))
        if self.volume_warp is not None:
            object.__setattr__(self, "volume_warp", _grid(self.volume_warp, "volume_warp", "x, y, z, time"))
        if self.doming is not None:
            object.__setattr__(self, "doming", _grid(self.doming, "doming"))
        if not 0 < self.resolution_fraction <= 1:
            raise ValueError(f"resolution_fraction must be in (0, 1], got {self.resolution_fraction}")
        for name in ("threads", "temporal_samples", "rounds", "reconstruction_pad", "defocus_search_iterations",
                     "min_particles_per_item", "particle_batch", "denoise_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lbfgs_iterations < 0 or self.defocus_search_range < 0 or self.defocus_search_step <= 0:
            raise ValueError("lbfgs_iterations and defocus_search_range must be >= 0, defocus_search_step > 0")
        check_device_name(self.device, "refinement device")
        if self.weights_scope not in ("source", "item"):
            raise ValueError(f"weights_scope must be 'source' or 'item', got {self.weights_scope!r}")
        for name in ("patch_memory_mib", "graph_memory_mib"):  # 0: always stream / one batch at a time
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.ctf_min_resolution <= 0 or self.stage_prior_deg < 0:
            raise ValueError(f"ctf_min_resolution must be > 0 and stage_prior_deg >= 0, got "
                             f"{self.ctf_min_resolution}, {self.stage_prior_deg}")

    @property
    def refines_anything(self) -> bool:
        return bool(self.refine_shifts or self.image_warp or self.refine_poses or self.refine_defocus
                    or self.refine_astigmatism or self.refine_stage_angles or self.optics_groups
                    or self.volume_warp or self.doming or self.tilt_movies)

    @property
    def optics_groups(self) -> tuple[str, ...]:
        """Optics parameter groups to refine (names of :data:`mrepo.workers.optics.OPTICS_GROUPS`)."""
        return tuple(g for g, on in (("mag", self.refine_mag), ("beam_tilt", self.ctf_zernike3),
                                     ("trefoil", self.ctf_zernike3), ("zernike4", self.ctf_zernike4),
                                     ("cs", self.ctf_cs), ("phase", self.ctf_phase)) if on)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_warp"] = self.image_warp if self.image_warp in (None, "auto") else list(self.image_warp)
        for k in ("volume_warp", "doming"):
            d[k] = None if d[k] is None else list(d[k])
        return d

    @classmethod
    def parse(cls, body: dict[str, Any]) -> RefineSettings:
        """:meth:`from_json`, parsed once per distinct body (workers see the same settings for every item)."""
        from mrepo.store import canonical_json

        return _parse_cached(canonical_json(body))

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RefineSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(body) - known
        if unknown:
            raise ValueError(f"unknown refinement settings: {sorted(unknown)}")
        return cls(**body)

    def replace(self, **changes: Any) -> RefineSettings:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)


@functools.lru_cache(maxsize=16)
def _parse_cached(body: bytes) -> RefineSettings:
    return RefineSettings.from_json(json.loads(body))
