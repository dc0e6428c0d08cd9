"""Which parameter groups one item refines at the current refinement limit, and how far they may move.

M refines a group only when the data at the current limit can determine it (M paper,
Methods: Optimization procedure; MCore: CTF only with species at ``--ctf_minresolution``,
8 Å by default). Starting from a 15–20 Å reference, refining defocus or fitting a ±3,000 Å
search window lets noise choose the parameters. The rules here, all in the units of
:class:`mrepo.workers.geometry.Parameters`:

- **CTF** (defocus, astigmatism): only species whose current resolution (FSC 0.143 of their
  half-maps, Å) is at least ``ctf_min_resolution`` contribute, as MCore's
  ``--ctf_minresolution`` ("use only species with at least this resolution"); none → the CTF
  is not refined this iteration. The species' refinement limit d (which the first iterations
  ramp below the resolution, :func:`mrepo.workers.references.refinement_resolution`) sets how
  far the CTF may move: the defocus search range is
  ``min(defocus_search_range, d² / λ)`` — the defocus change that moves the CTF phase
  π λ Δf k² at k = 1/d by π (λ: electron wavelength, Å) — so the search never jumps a CTF ring the data
  cannot see; the step shrinks with it (≥ 10 steps per side). The range is a hard bound
  (``1.25 ×`` as a tanh bound, so L-BFGS cannot leave it either).
- **Deformation** (:mod:`mrepo.workers.deformation`): the volume warp (tilts) with the geometry;
  doming (frames), a defocus model, with the CTF groups under the CTF's resolution rule.
- **Optics** (magnification, Zernike, Cs, phase; :mod:`mrepo.workers.optics`): with the CTF groups,
  under the same resolution rule.
- **Poses**: translation bound ``max(2, d / pixel)`` px, rotation bound
  ``clip(deg(d / r), 2°, 15°)`` (r: particle radius, Å): a particle never moves further than
  the limit resolves.
- **Stage angles** (tilts): bound 2°, and a Gaussian prior of σ ``stage_prior_deg`` on
  the item's common (tilt-mean) correction, whose weight relative to M's (intensive,
  normalised) target falls as 1 / particles, like the data's noise; see
  :func:`stage_prior_weight` and :func:`stage_prior`.
- Items with fewer particles than ``min_particles_per_item`` are not refined (MCore
  ``--min_particles``).
- **Image warp grid** (``image_warp="auto"``, the CLI default; :func:`image_warp_grid`): M leaves
  the grid to the user; mrepo sizes it per item so that every spatial control point is
  determined by at least :data:`WARP_PARTICLES_PER_NODE` particles (gx · gy ≤ particles / 2,
  i.e. the warp takes at most half of the particles' per-exposure position information:
  average leverage ≤ 0.5), its aspect follows the field of view, nodes are at least
  :data:`WARP_MIN_SPACING_DIAMETERS` particle diameters apart, and an item left with a 1 × 1
  grid gets no warp (that is the per-exposure shift; square field: fewer than 8 particles).
  Tilt series: one spatial grid per tilt; frames: ``min(3, frames)`` time nodes.

No Fourier layout here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from mrepo.kernels.ctf import electron_wavelength
from mrepo.workers.geometry import DEFOCUS_UNIT
from mrepo.workers.settings import RefineSettings

__all__ = ["Schedule", "plan_schedule", "defocus_window", "stage_prior", "stage_prior_weight", "PER_PARTICLE_GROUPS",
           "image_warp_grid", "WARP_PARTICLES_PER_NODE", "WARP_MIN_SPACING_DIAMETERS"]

#: groups with one value per particle (frames' defocus is per particle, too; see :meth:`Schedule.per_particle`)
PER_PARTICLE_GROUPS = ("translation", "rotation")
#: ``image_warp="auto"``: particles per spatial control point of the image-warp grid (at least)
WARP_PARTICLES_PER_NODE = 2.0
#: ``image_warp="auto"``: spatial control points at least this many particle diameters apart
WARP_MIN_SPACING_DIAMETERS = 2.0
#: ``image_warp="auto"``: time nodes of a frame series' warp (at most; M's start, middle, end)
WARP_FRAME_TIME_NODES = 3


@dataclass(frozen=True)
class Schedule:
    """What one item refines: ``geometry`` groups (CTF frozen), then ``ctf`` groups (with the
    geometry), the species whose particles enter the CTF target, the defocus search window
    (Å) and step (Å), per-group tanh ``bounds`` (units of the groups) and optimiser
    ``scales`` (rotation: degrees that move the particle's edge by one pixel)."""

    geometry: tuple[str, ...]
    ctf: tuple[str, ...]
    ctf_species: tuple[str, ...]
    defocus_range: float
    defocus_step: float
    bounds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)

    def per_particle(self, kind: str) -> tuple[str, ...]:
        """Groups with one value per particle for an item of ``kind`` (frames | tilts)."""
        return PER_PARTICLE_GROUPS + (("defocus",) if kind == "frames" else ())


def defocus_window(resolution: float, voltage_kv: float, requested: float) -> float:
    """Defocus search half-range (Å) the limit ``resolution`` (Å) can resolve: min(requested, d²/λ),
    the defocus that turns the CTF phase π λ Δf k² at k = 1/d by π."""
    lam = float(electron_wavelength(voltage_kv))
    return float(min(requested, resolution**2 / lam))


def image_warp_grid(settings: RefineSettings, kind: str, size_px: tuple[int, int], exposures: int, particles: int,
                    diameter_px: float, existing: tuple[int, ...] | None = None) -> tuple[int, int, int] | None:
    """The image-warp grid (gx, gy, gt) nodes one item refines, or None (no warp group).

    An explicit ``settings.image_warp`` grid is returned as given (tilts: gt becomes the tilt
    count in :meth:`mrepo.workers.geometry.Parameters.zeros`). ``"auto"``: the item's
    ``existing`` grid (its image_warp model's (gx, gy, gt); refined on, not reset) if it has
    one, else gx · gy ≤ ``particles`` / :data:`WARP_PARTICLES_PER_NODE` with gx : gy ≈ width :
    height of ``size_px`` (px), at most ``1 + extent / (WARP_MIN_SPACING_DIAMETERS ·
    diameter_px)`` nodes per axis; a 1 × 1 grid -> None. gt: tilts one per tilt
    (``exposures``), frames ``min(WARP_FRAME_TIME_NODES, exposures)``.
    Examples: 60 particles per tilt series -> 5 × 5 per tilt; 12 -> 2 × 2; 50 per movie
    of 6 frames -> 5 × 5 × 3; 7 -> none."""
    grid = settings.image_warp
    if grid is None:
        return None
    if grid != "auto":
        return tuple(int(g) for g in grid)  # type: ignore[return-value]
    if existing is not None:
        return tuple(int(g) for g in existing)  # type: ignore[return-value]
    width, height = (max(int(v), 1) for v in size_px)
    nodes = particles / WARP_PARTICLES_PER_NODE
    spacing = WARP_MIN_SPACING_DIAMETERS * max(diameter_px, 1.0)
    gx = max(1, min(int(math.floor(math.sqrt(nodes * width / height) + 1e-9)), 1 + int(width / spacing)))
    gy = max(1, min(int(math.floor(math.sqrt(nodes * height / width) + 1e-9)), 1 + int(height / spacing)))
    while gx * gy > nodes and max(gx, gy) > 1:  # aspect rounding: keep the particles-per-node rule
        if gx >= gy:
            gx -= 1
        else:
            gy -= 1
    if gx * gy < 2:
        return None
    gt = exposures if kind == "tilts" else min(WARP_FRAME_TIME_NODES, max(exposures, 1))
    return gx, gy, gt


def stage_prior_weight(settings: RefineSettings, particles: int, target_scale: float, exposures: int = 1) -> float:
    """Weight of ``Σ (stage / σ)² / 2`` in the loss ``-1000 · target``:
    ``1000 · target_scale / (particles · exposures)``.

    M's target is a normalised correlation over all particles and exposures (independent of
    their number), while the information about one tilt's stage angles comes from its
    particles only and its noise falls as 1 / √particles; a prior whose weight falls as
    1 / (particles · exposures) keeps the balance a likelihood would have. ``target_scale``:
    the target at the start (≈ the correlation per particle image)."""
    if settings.stage_prior_deg <= 0 or particles <= 0:
        return 0.0
    return 1000.0 * max(target_scale, 1e-6) / (particles * max(exposures, 1))


def stage_prior(stage: torch.Tensor, weight: float, sigma_deg: float) -> torch.Tensor:
    """The stage-angle prior ``weight · n · Σ_xyz (mean_i stage_i / σ)² / 2`` (a scalar) for this
    iteration's corrections ``stage`` (n, 3) deg.

    Only the item's common correction (the mean over its n tilts) is held: it rotates every
    particle of the item alike, which the per-particle rotations (whose mean the gauge keeps)
    and the map's own orientation leave nearly undetermined. A tilt's deviation from that mean
    is measured by its particles against the other tilts and is not damped: a prior on every
    tilt, re-centred each iteration, held each step to ~10 % of the remaining error (4 items ×
    60 particles, SNR 0.25: stage RMS 0.83 → 0.45° in 7 iterations)."""
    if not weight or stage.shape[0] == 0:
        return stage.sum() * 0.0
    mean = stage.mean(0)
    return 0.5 * weight * stage.shape[0] * ((mean / sigma_deg) ** 2).sum()


def plan_schedule(settings: RefineSettings, kind: str, has_warp: bool, limits: dict[str, float],
                  radii: dict[str, float], pixel_size: float, voltage_kv: float, particles: int,
                  resolutions: dict[str, float] | None = None) -> Schedule:
    """The schedule of one item: ``limits`` {species: refinement limit Å}, ``radii`` {species: Å},
    ``resolutions`` {species: current resolution Å} (the CTF gate; default: the limits)."""
    s = settings
    tilts = kind == "tilts"
    skipped: dict[str, str] = {}
    if particles < s.min_particles_per_item:
        return Schedule((), (), (), 0.0, s.defocus_search_step,
                        skipped={"all": f"{particles} particles < min_particles_per_item {s.min_particles_per_item}"})
    geometry = tuple(g for g, on in (("shifts", s.refine_shifts), ("warp", has_warp and s.image_warp is not None),
                                     ("translation", s.refine_poses), ("rotation", s.refine_poses),
                                     ("stage", s.refine_stage_angles and tilts),
                                     ("volume_warp", s.volume_warp is not None and tilts)) if on)
    gate = {n: (resolutions or {}).get(n, d) for n, d in limits.items()}
    ctf_species = tuple(sorted(n for n, d in gate.items() if d <= s.ctf_min_resolution + 1e-9))
    wants_doming = s.doming is not None and not tilts
    wants_ctf = s.refine_defocus or s.refine_astigmatism or bool(s.optics_groups) or wants_doming
    ctf: tuple[str, ...] = ()
    if wants_ctf and not ctf_species:
        skipped["ctf"] = (f"species resolution {min(gate.values()):.1f} Å is coarser than ctf_min_resolution "
                          f"{s.ctf_min_resolution:g} Å")
    elif wants_ctf:
        ctf = tuple(g for g, on in (("defocus", s.refine_defocus), ("astigmatism", s.refine_astigmatism)) if on)
        ctf += s.optics_groups
        ctf += ("doming",) if wants_doming else ()
    best = min(limits[n] for n in ctf_species) if ctf_species else min(limits.values())
    window = defocus_window(best, voltage_kv, s.defocus_search_range)
    step = min(s.defocus_search_step, window / 10) if window > 0 else s.defocus_search_step
    finest = min(limits.values())
    radius = max(radii.values()) if radii else 50.0
    bounds = {"translation": max(2.0, finest / pixel_size),
              "rotation": float(min(15.0, max(2.0, math.degrees(finest / max(radius, 1.0)))))}
    if tilts:
        bounds["stage"] = 2.0
    if "defocus" in ctf and window > 0:
        bounds["defocus"] = 1.25 * window / DEFOCUS_UNIT
    scales = {"rotation": math.degrees(pixel_size / max(radius, pixel_size))}
    return Schedule(geometry, ctf, ctf_species, window, step, bounds, skipped, scales)
