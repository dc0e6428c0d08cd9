"""Frame-series simulator: several species, global drift, smooth local warp, doming, CTF, noise.

Geometry of one frame series (all truth, see :class:`FrameSeriesTruth`):

- particle p has a reference position (x, y) px (its position at frame 0)
  and a height z Å in an ice slab; z is a defocus offset (positive = more
  underfocus), so its defocus in frame i is ``defocus + z_p + dome(x, y, t_i)``;
- its image position in frame i is
  ``xy_p + global_shifts_px[i] + warp(xy_p, t_i)`` with ``t_i = i / (T - 1)``;
  ``global_shifts_px`` and the warp move the image content (specimen) and
  are zero at frame 0;
- exposure weighting uses the accumulated exposure at the middle of the
  frame (``pre_exposure + dose / 2``), amplitude ``exp(-exposure k^2)``.

SNR = variance of the noise-free signal over all pixels within the particle
discs (radius diameter / 2 around each particle's frame-0 position, all
frames) divided by the variance of the noise of every pixel of every frame.
The detector (:mod:`mrepo.sim.detector`, ``config.contrast``) records particles dark on
a positive mean with Poisson counts (default) or, with ``"light"``, adds white Gaussian
noise to the rendered images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mrepo.sim.deformation import ExposureDamage, injected_damage
from mrepo.sim.detector import record_images
from mrepo.sim.motion import (
    SmoothWarp,
    doming,
    global_drift,
    perturb_angles,
    place_non_overlapping,
    random_smooth_warp,
)
from mrepo.sim.optics import SimAberrations
from mrepo.sim.records import Particles, Perturbation, assign_half_sets
from mrepo.sim.records import species_labels as _species_labels
from mrepo.sim.render import Optics, ParticleImages, render_stack
from mrepo.sim.species import SimSpecies, SpeciesChoice, SpeciesSpec, build_species

__all__ = [
    "FrameSeriesConfig",
    "FrameSeriesTruth",
    "FrameSeriesInitial",
    "SimulatedFrameSeries",
    "simulate_frame_series",
    "frame_plan",
    "render_frames",
    "noise_sigma_for_snr",
]


@dataclass(frozen=True)
class FrameSeriesConfig(SpeciesChoice):
    """Settings of a simulated frame series (lengths Å, images px, exposure e-/Å^2)."""

    image_size: tuple[int, int] = (256, 256)  # (width, height) px
    n_frames: int = 10
    optics: Optics = Optics()
    species: tuple[SpeciesSpec, ...] = ()
    n_species: int = 2  # used when ``species`` is empty
    box: int = 48
    n_particles: int = 16
    dose_per_frame: float = 1.0
    defocus: float = 15000.0  # mean of U and V, Å
    astigmatism: float = 300.0  # U - V, Å
    ice_thickness: float = 300.0  # Å
    drift_px: float = 6.0
    warp_px: float = 1.5
    doming_A: float = 40.0
    snr: float = 0.1
    contrast: str = "dark"  # detector contrast (mrepo.sim.detector): "dark" counts on a mean, or "light"
    mean_counts: float = 19.0  # dark data: mean counts per pixel and image
    half_sets: str = "alternate"
    pad: int = 3
    perturbation: Perturbation = Perturbation()
    species_seed: int | None = None  # species atoms from this seed (same species across items); None: item seed
    species_fractions: tuple[float, ...] = ()  # probability of each species per particle; (): uniform
    name: str = "fs"
    aberrations: SimAberrations = SimAberrations()  # injected magnification / beam tilt / trefoil (truth only)
    damage: str = "dose"  # exposure damage: "dose" (B = 4 Å² · exposure) or "measured" (mrepo.sim.deformation)


@dataclass
class FrameSeriesTruth:
    """Ground truth of one frame series.

    global_shifts_px (T, 2); warp: :class:`SmoothWarp`; doming_A: dome
    amplitude; defocus_u/defocus_v Å and astigmatism_deg of the series (at z
    = 0); dose (T,) and pre_exposure (T,) e-/Å^2; particles: coordinates
    (N, T, 3) = image position in Å (x, y) and defocus offset z in Å per
    frame, angles (N, T, 3); plan: per particle-frame render inputs;
    noise_sigma: std of the added noise.
    """

    name: str
    optics: Optics
    image_size: tuple[int, int]
    dose: np.ndarray
    pre_exposure: np.ndarray
    global_shifts_px: np.ndarray
    warp: SmoothWarp
    doming_A: float
    defocus_u: float
    defocus_v: float
    astigmatism_deg: float
    ice_z_A: np.ndarray
    particles: Particles
    plan: ParticleImages
    noise_sigma: float
    signal_scale: float = 1.0  # dark data: expectation = mean_counts - signal_scale * rendered image
    aberrations: SimAberrations = field(default_factory=SimAberrations)  # injected optics (truth.json only)
    damage: ExposureDamage | None = None  # injected per-frame B-factors and scales (truth only); None: dose rule


@dataclass
class FrameSeriesInitial:
    """Initial parameters as upstream (Warp + RELION) would deliver them: global shifts (T, 2) px,
    series defocus/astigmatism, particles with coordinates (N, 1, 3) (z = 0) and angles (N, 1, 3)."""

    global_shifts_px: np.ndarray
    defocus_u: float
    defocus_v: float
    astigmatism_deg: float
    particles: Particles


@dataclass
class SimulatedFrameSeries:
    """Noisy data (T, H, W) float32, the noise that was added, species, truth and initial parameters."""

    config: FrameSeriesConfig
    seed: int
    species: list[SimSpecies]
    data: np.ndarray
    noise: np.ndarray
    truth: FrameSeriesTruth
    initial: FrameSeriesInitial
    kind: str = field(default="frames")


def frame_plan(
    coordinates_A: np.ndarray,
    angles_deg: np.ndarray,
    species: np.ndarray,
    defocus_u: float,
    defocus_v: float,
    astigmatism_deg: float,
    exposure: np.ndarray,
    pixel_size: float,
) -> ParticleImages:
    """Render inputs from frame truth: coordinates (N, T, 3) Å (x, y, defocus offset z)."""
    n_t = coordinates_A.shape[1]
    z = coordinates_A[..., 2]
    return ParticleImages(
        species=species,
        positions_px=coordinates_A[..., :2] / pixel_size,
        angles_deg=angles_deg,
        defocus_u=defocus_u + z,
        defocus_v=defocus_v + z,
        astigmatism_deg=np.full(n_t, astigmatism_deg),
        exposure=np.asarray(exposure, dtype=np.float64),
        scale=np.ones(n_t),
    )


def render_frames(truth: FrameSeriesTruth, species: list[SimSpecies], pad: int = 3) -> np.ndarray:
    """Noise-free frames (T, H, W) float64 re-rendered from the truth record alone."""
    plan = frame_plan(
        truth.particles.coordinates,
        truth.particles.angles,
        truth.particles.species,
        truth.defocus_u,
        truth.defocus_v,
        truth.astigmatism_deg,
        truth.pre_exposure + truth.dose / 2,
        truth.optics.pixel_size,
    )
    if truth.damage is not None:
        plan.exposure, plan.scale = truth.damage.bfactors_A2 / 4, truth.damage.scales
    w, h = truth.image_size
    return render_stack(
        [s.atoms for s in species], [s.spec.box for s in species], plan, (h, w), truth.optics, pad,
        truth.aberrations,
    )


def noise_sigma_for_snr(
    clean: np.ndarray, centres_px: np.ndarray, radii_px: np.ndarray, snr: float
) -> float:
    """Noise std giving ``snr`` = var(signal in particle discs) / noise variance.

    clean (I, H, W); centres_px (N, 2) (x, y) px, the same in every image, or
    (N, I, 2) per image; radii_px (N,).
    """
    if snr <= 0:
        raise ValueError(f"snr must be positive, got {snr}")
    n_i, h, w = clean.shape
    centres = centres_px if centres_px.ndim == 3 else np.repeat(centres_px[:, None], n_i, 1)
    inside = np.zeros((n_i, h, w), dtype=bool)
    for i in range(n_i):
        for (cx, cy), r in zip(centres[:, i], radii_px):
            # each disc on its bounding box only (the whole image per particle made this O(N · area))
            x0, x1 = max(int(np.floor(cx - r)), 0), min(int(np.ceil(cx + r)) + 1, w)
            y0, y1 = max(int(np.floor(cy - r)), 0), min(int(np.ceil(cy + r)) + 1, h)
            if x0 < x1 and y0 < y1:
                yy, xx = np.mgrid[y0:y1, x0:x1]
                inside[i, y0:y1, x0:x1] |= (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    if not inside.any():
        raise ValueError("no particle pixels inside the images; cannot define the SNR")
    return float(np.sqrt(clean[inside].var() / snr))


def simulate_frame_series(config: FrameSeriesConfig, seed: int) -> SimulatedFrameSeries:
    """Simulate one frame series with ground truth and perturbed initial parameters."""
    if config.n_frames < 2:
        raise ValueError(f"n_frames must be >= 2, got {config.n_frames}")
    rng = np.random.default_rng(seed)
    pix = config.optics.pixel_size
    specs = config.species_specs()
    sseed = seed if config.species_seed is None else config.species_seed
    species = [build_species(s, pix, sseed * 1000 + i) for i, s in enumerate(specs)]
    w, h = config.image_size
    n, n_t = config.n_particles, config.n_frames

    # particles: species, non-overlapping xy (px) away from the edges, z in the ice slab
    sp = _species_labels(rng, n, len(species), config.species_fractions)
    radii_px = np.array([specs[k].diameter / 2 / pix for k in sp])
    margin = max(s.box for s in specs) / 2
    xy0 = place_non_overlapping(rng, radii_px, np.array([margin, margin]), np.array([w - margin, h - margin]), 2)
    ice_z = rng.uniform(-config.ice_thickness / 2, config.ice_thickness / 2, n)
    angles = np.stack([rng.uniform(-180, 180, n), np.rad2deg(np.arccos(rng.uniform(-1, 1, n))), rng.uniform(-180, 180, n)], 1)
    half = assign_half_sets(rng, n, config.half_sets)

    # deformation and optics
    t = np.linspace(0.0, 1.0, n_t)
    shifts = global_drift(rng, n_t, config.drift_px)
    warp = random_smooth_warp(rng, (w, h), config.warp_px)
    astig_deg = float(rng.uniform(-90, 90))
    du = config.defocus + config.astigmatism / 2
    dv = config.defocus - config.astigmatism / 2
    dose = np.full(n_t, config.dose_per_frame)
    pre = np.concatenate([[0.0], np.cumsum(dose)[:-1]])

    xy_t = xy0[:, None, :] + shifts[None] + warp(np.repeat(xy0[:, None], n_t, 1), t[None, :])  # (N, T, 2)
    z_t = ice_z[:, None] + doming(xy0[:, None, :], t[None, :], (w, h), config.doming_A)
    coords = np.concatenate([xy_t * pix, z_t[..., None]], axis=-1)
    item = f"{config.name}{seed:04d}"
    particles = Particles(item, np.arange(1, n + 1, dtype=np.int64), sp, half, coords, np.repeat(angles[:, None], n_t, 1))
    plan = frame_plan(coords, particles.angles, sp, du, dv, astig_deg, pre + dose / 2, pix)

    truth = FrameSeriesTruth(
        item, config.optics, (w, h), dose, pre, shifts, warp, config.doming_A, du, dv, astig_deg,
        ice_z, particles, plan, 0.0, aberrations=config.aberrations,
    )
    truth.damage = injected_damage(config.damage, pre, dose)
    clean = render_frames(truth, species, config.pad)
    recorded = record_images(clean, noise_sigma_for_snr(clean, xy0, radii_px, config.snr), rng,
                             contrast=config.contrast, mean_counts=config.mean_counts)
    truth.noise_sigma, truth.signal_scale = recorded.noise_sigma, recorded.signal_scale
    data, noise = recorded.data, recorded.noise

    pert = config.perturbation
    d_def = rng.normal(0, pert.defocus_A)
    d_ast = rng.normal(0, pert.astigmatism_A)
    init_xy = xy0 + rng.normal(0, pert.position_px, (n, 2))
    init_coords = np.concatenate([init_xy * pix, np.zeros((n, 1))], axis=-1)[:, None]
    initial = FrameSeriesInitial(
        shifts + rng.normal(0, pert.shift_px, shifts.shape),
        du + d_def + d_ast / 2,
        dv + d_def - d_ast / 2,
        astig_deg,
        Particles(item, particles.ids.copy(), sp.copy(), half.copy(), init_coords,
                  perturb_angles(rng, angles, *pert.pose_deg)[:, None]),
    )
    return SimulatedFrameSeries(config, seed, species, data, noise, truth, initial)
