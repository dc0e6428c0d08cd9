"""Tilt-series simulator: particles in a 3D slab, dose-symmetric tilts, stage errors, CTF, noise.

Geometry follows :mod:`mrepo.kernels.tilt_geometry` (RELION 5): particle
coordinates are (x, y, z) Å from voxel 0 of a tomogram of size
``volume_size_A``; tilt i has angles (xtilt, ytilt, zrot) degrees
(rlnTomoXTilt, rlnTomoYTilt = stage tilt, rlnTomoZRot = tilt axis) and
shifts (rlnTomoX/YShiftAngst). In tilt i particle p is seen

- at ``project_points(c_p, A_i, shifts_i) + warp_i(that position)`` px,
  with ``warp_i`` a smooth analytic image-space field per tilt;
- with pose ``R_p @ A_i^T`` (``pose_in_tilt``);
- with defocus ``defocus_i + hand * depth_p,i`` (``depth_defocus``), the
  tilt's defocus being the value at the volume centre.

The stack is ordered by nominal tilt angle (ascending); acquisition follows
the grouped dose-symmetric (Hagen) scheme and is recorded as
``acquisition_order`` (stack index of the k-th exposure). Exposure weighting
uses the mid-tilt accumulated exposure (``pre_exposure + dose / 2``) and an
amplitude ``cos(ytilt)``. SNR is defined as for frame series
(:mod:`mrepo.sim.frames`), with particle discs at the particles' projected
positions in every tilt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from mrepo.kernels.rotations import euler_to_matrix, matrix_to_euler
from mrepo.kernels.tilt_geometry import depth_defocus, pose_in_tilt, project_points, tilt_matrices
from mrepo.sim.deformation import ExposureDamage, VolumeDeformation, injected_damage, random_volume_deformation
from mrepo.sim.detector import record_images
from mrepo.sim.frames import noise_sigma_for_snr
from mrepo.sim.motion import SmoothWarp, perturb_angles, place_non_overlapping, random_smooth_warp
from mrepo.sim.optics import SimAberrations
from mrepo.sim.records import Particles, Perturbation, assign_half_sets
from mrepo.sim.records import species_labels as _species_labels
from mrepo.sim.render import Optics, ParticleImages, render_stack
from mrepo.sim.species import SimSpecies, SpeciesChoice, SpeciesSpec, build_species
from mrepo.sim.tilt_movies import random_tilt_movie_motion, record_tilt_movies

__all__ = [
    "TiltSeriesConfig",
    "TiltSeriesTruth",
    "TiltSeriesInitial",
    "SimulatedTiltSeries",
    "dose_symmetric_scheme",
    "simulate_tilt_series",
    "tilt_plan",
    "render_tilts",
]


def dose_symmetric_scheme(max_angle: float, step: float, group_size: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Grouped dose-symmetric scheme (Hagen et al. 2017).

    Returns ``(angles, order)``: angles (n,) degrees ascending, and order (n,)
    the stack indices in acquisition order: 0 deg, then ``group_size`` tilts
    on the positive side, ``group_size`` on the negative side, alternating.
    """
    if step <= 0 or max_angle < 0 or group_size < 1:
        raise ValueError(f"need step > 0, max_angle >= 0, group_size >= 1; got {step}, {max_angle}, {group_size}")
    k = int(np.floor(max_angle / step + 1e-9))
    angles = np.arange(-k, k + 1) * step
    pos = list(range(1, k + 1))
    neg = list(range(1, k + 1))
    seq = [0.0]
    side = 1
    while pos or neg:
        src = pos if side > 0 else neg
        for _ in range(group_size):
            if src:
                seq.append(side * src.pop(0) * step)
        side = -side
    order = np.array([int(np.argmin(np.abs(angles - a))) for a in seq])
    return angles, order


@dataclass(frozen=True)
class TiltSeriesConfig(SpeciesChoice):
    """Settings of a simulated tilt series (lengths Å, images px, angles degrees, exposure e-/Å^2)."""

    image_size: tuple[int, int] = (256, 256)  # (width, height) px
    volume_depth_px: int = 128  # rlnTomoSizeZ; SizeX/Y equal the image size
    optics: Optics = Optics()
    species: tuple[SpeciesSpec, ...] = ()
    n_species: int = 2
    box: int = 48
    n_particles: int = 12
    max_tilt: float = 60.0
    tilt_step: float = 3.0
    group_size: int = 2
    tilt_axis: float = 85.0  # nominal rlnTomoZRot
    stage_error_deg: float = 0.3  # sigma of xtilt, ytilt, zrot errors per tilt
    shift_sigma_A: float = 15.0
    dose_per_tilt: float = 3.0
    defocus: float = 30000.0
    defocus_jitter: float = 400.0  # sigma of per-tilt defocus around ``defocus``
    astigmatism: float = 300.0
    astigmatism_jitter: float = 50.0
    slab_thickness: float = 120.0
    warp_px: float = 1.0
    handedness: float = 1.0
    snr: float = 0.1
    contrast: str = "dark"  # detector contrast (mrepo.sim.detector): "dark" counts on a mean, or "light"
    mean_counts: float = 19.0  # dark data: mean counts per pixel and image
    half_sets: str = "alternate"
    pad: int = 3
    perturbation: Perturbation = Perturbation()
    species_seed: int | None = None  # species atoms from this seed (same species across items); None: item seed
    species_fractions: tuple[float, ...] = ()  # probability of each species per particle; (): uniform
    name: str = "ts"
    volume_warp_A: float = 0.0  # injected volume deformation (mrepo.sim.deformation), about this many Å at the end
    damage: str = "dose"  # exposure damage: "dose" (B = 4 Å² · exposure) or "measured" (sim.deformation)
    aberrations: SimAberrations = SimAberrations()  # injected magnification / beam tilt / trefoil (truth only)
    tilt_movie_frames: int = 0  # > 0: record each tilt as a movie of this many frames (mrepo.sim.tilt_movies)
    tilt_movie_motion_px: float = 0.0  # injected per-frame motion inside each tilt movie, RMS px (truth only)

    def volume_size_A(self) -> np.ndarray:
        p = self.optics.pixel_size
        return np.array([self.image_size[0] * p, self.image_size[1] * p, self.volume_depth_px * p])


@dataclass
class TiltSeriesTruth:
    """Ground truth of one tilt series; per-tilt arrays have length I (stack order).

    nominal_tilts, xtilt, ytilt, zrot (degrees); shifts_A (I, 2); defocus_u,
    defocus_v (I,) Å at the volume centre; astigmatism_deg (I,); dose and
    pre_exposure (I,); acquisition_order (I,); warps: one :class:`SmoothWarp`
    per tilt evaluated at t = 1; particles: coordinates (N, 1, 3) Å in the
    tomogram, angles (N, 1, 3); plan: per particle-tilt render inputs
    (positions, poses, defoci).
    """

    name: str
    optics: Optics
    image_size: tuple[int, int]
    volume_size_A: np.ndarray
    handedness: float
    nominal_tilts: np.ndarray
    acquisition_order: np.ndarray
    xtilt: np.ndarray
    ytilt: np.ndarray
    zrot: np.ndarray
    shifts_A: np.ndarray
    defocus_u: np.ndarray
    defocus_v: np.ndarray
    astigmatism_deg: np.ndarray
    dose: np.ndarray
    pre_exposure: np.ndarray
    warps: list[SmoothWarp]
    particles: Particles
    plan: ParticleImages
    noise_sigma: float
    signal_scale: float = 1.0  # dark data: expectation = mean_counts - signal_scale * rendered image
    volume_deformation: VolumeDeformation | None = None  # injected volume warp (truth only)
    damage: ExposureDamage | None = None  # injected per-tilt B-factors and scales (truth only); None: dose rule
    aberrations: SimAberrations = field(default_factory=SimAberrations)  # injected optics (truth.json only)
    tilt_movie_shifts_px: np.ndarray | None = None  # (I, F, 2) injected per-frame motion (tilt movies, truth only)


@dataclass
class TiltSeriesInitial:
    """Initial parameters: nominal stage angles (xtilt 0, ytilt nominal, zrot nominal axis),
    shifts (I, 2) Å, per-tilt defoci (I,), astigmatism angles (I,), particles (N, 1, 3)."""

    xtilt: np.ndarray
    ytilt: np.ndarray
    zrot: np.ndarray
    shifts_A: np.ndarray
    defocus_u: np.ndarray
    defocus_v: np.ndarray
    astigmatism_deg: np.ndarray
    particles: Particles


@dataclass
class SimulatedTiltSeries:
    """Noisy tilt stack (I, H, W) float32, the added noise, species, truth and initial parameters."""

    config: TiltSeriesConfig
    seed: int
    species: list[SimSpecies]
    data: np.ndarray
    noise: np.ndarray
    truth: TiltSeriesTruth
    initial: TiltSeriesInitial
    kind: str = field(default="tilts")
    movies: np.ndarray | None = None  # (I, F, H, W) float32 raw tilt movies; ``data`` is their frame sums


def tilt_plan(truth: TiltSeriesTruth) -> ParticleImages:
    """Render inputs (per particle and tilt) computed from the truth's geometry."""
    pix = truth.optics.pixel_size
    mats = tilt_matrices(*(torch.from_numpy(np.deg2rad(a)) for a in (truth.xtilt, truth.ytilt, truth.zrot)))
    coords = torch.from_numpy(truth.particles.coordinates[:, 0])
    args = (torch.from_numpy(truth.volume_size_A), truth.image_size, pix)
    xy, depth = project_points(coords, mats, torch.from_numpy(truth.shifts_A), *args)  # (I, N, 2), (I, N)
    if truth.volume_deformation is not None:  # each tilt sees the particles displaced by d(c, t_i)
        pre = truth.pre_exposure
        moved = coords[None] + torch.from_numpy(truth.volume_deformation(coords.numpy(), pre / max(pre.max(), 1e-12)))
        per_tilt = [project_points(moved[i], mats[i:i + 1], torch.from_numpy(truth.shifts_A[i:i + 1]), *args)
                    for i in range(len(pre))]
        xy, depth = torch.cat([p[0] for p in per_tilt]), torch.cat([p[1] for p in per_tilt])
    xy = xy.numpy()
    warped = np.stack([xy[i] + truth.warps[i](xy[i], 1.0) for i in range(len(truth.warps))])
    poses = euler_to_matrix(torch.from_numpy(np.deg2rad(truth.particles.angles[:, 0])))
    seen = np.rad2deg(matrix_to_euler(pose_in_tilt(poses, mats)).numpy())  # (I, N, 3)
    du = depth_defocus(torch.from_numpy(truth.defocus_u)[:, None], depth, truth.handedness).numpy()
    dv = depth_defocus(torch.from_numpy(truth.defocus_v)[:, None], depth, truth.handedness).numpy()
    return ParticleImages(
        species=truth.particles.species,
        positions_px=warped.transpose(1, 0, 2),
        angles_deg=seen.transpose(1, 0, 2),
        defocus_u=du.T,
        defocus_v=dv.T,
        astigmatism_deg=truth.astigmatism_deg,
        exposure=truth.pre_exposure + truth.dose / 2 if truth.damage is None else truth.damage.bfactors_A2 / 4,
        scale=np.cos(np.deg2rad(truth.ytilt)) * (1.0 if truth.damage is None else truth.damage.scales),
    )


def render_tilts(truth: TiltSeriesTruth, species: list[SimSpecies], pad: int = 3) -> np.ndarray:
    """Noise-free tilt stack (I, H, W) float64 re-rendered from the truth record alone."""
    w, h = truth.image_size
    return render_stack(
        [s.atoms for s in species], [s.spec.box for s in species], tilt_plan(truth), (h, w), truth.optics, pad,
        truth.aberrations,
    )


def simulate_tilt_series(config: TiltSeriesConfig, seed: int) -> SimulatedTiltSeries:
    """Simulate one tilt series with ground truth and perturbed initial parameters."""
    rng = np.random.default_rng(seed)
    pix = config.optics.pixel_size
    specs = config.species_specs()
    sseed = seed if config.species_seed is None else config.species_seed
    species = [build_species(s, pix, sseed * 1000 + i) for i, s in enumerate(specs)]
    w, h = config.image_size
    n = config.n_particles
    vol = config.volume_size_A()
    if config.slab_thickness >= vol[2]:
        raise ValueError(f"slab_thickness {config.slab_thickness} Å must be below the tomogram depth {vol[2]} Å")

    nominal, order = dose_symmetric_scheme(config.max_tilt, config.tilt_step, config.group_size)
    n_i = len(nominal)
    sp = _species_labels(rng, n, len(species), config.species_fractions)
    radii = np.array([specs[k].diameter / 2 for k in sp])
    margin = max(s.box for s in specs) / 2 * pix
    low = np.array([margin, margin, vol[2] / 2 - config.slab_thickness / 2])
    high = np.array([vol[0] - margin, vol[1] - margin, vol[2] / 2 + config.slab_thickness / 2])
    coords = place_non_overlapping(rng, radii, low, high, 3)
    angles = np.stack([rng.uniform(-180, 180, n), np.rad2deg(np.arccos(rng.uniform(-1, 1, n))), rng.uniform(-180, 180, n)], 1)
    half = assign_half_sets(rng, n, config.half_sets)
    item = f"{config.name}{seed:04d}"
    particles = Particles(item, np.arange(1, n + 1, dtype=np.int64), sp, half, coords[:, None], angles[:, None])

    err = config.stage_error_deg
    xtilt = rng.normal(0, err, n_i)
    ytilt = nominal + rng.normal(0, err, n_i)
    zrot = config.tilt_axis + rng.normal(0, err, n_i)
    shifts = rng.normal(0, config.shift_sigma_A, (n_i, 2))
    mean_def = config.defocus + rng.normal(0, config.defocus_jitter, n_i)
    astig = config.astigmatism + rng.normal(0, config.astigmatism_jitter, n_i)
    astig_deg = rng.uniform(-90, 90) + rng.normal(0, 5.0, n_i)
    dose = np.full(n_i, config.dose_per_tilt)
    pre = np.zeros(n_i)
    pre[order] = np.arange(n_i) * config.dose_per_tilt
    warps = [random_smooth_warp(rng, (w, h), config.warp_px) for _ in range(n_i)]
    truth = TiltSeriesTruth(
        item, config.optics, (w, h), vol, config.handedness, nominal, order, xtilt, ytilt, zrot, shifts,
        mean_def + astig / 2, mean_def - astig / 2, astig_deg, dose, pre, warps, particles,
        None, 0.0,  # type: ignore[arg-type]
    )
    truth.aberrations = config.aberrations
    extra = np.random.default_rng([seed, 15])  # injected effects draw apart: the rest of the series is unchanged
    if config.volume_warp_A:
        truth.volume_deformation = random_volume_deformation(extra, vol, config.volume_warp_A)
    truth.damage = injected_damage(config.damage, pre, dose)
    truth.plan = tilt_plan(truth)
    clean = render_tilts(truth, species, config.pad)
    pos = truth.plan.positions_px  # (N, I, 2)
    sigma = noise_sigma_for_snr(clean, pos, radii / pix, config.snr)
    movies = None
    if config.tilt_movie_frames > 0:  # tilt movies: the tilt image is the unaligned sum of its frames
        if config.tilt_movie_frames < 2:
            raise ValueError(f"tilt_movie_frames must be 0 (no movies) or at least 2, got {config.tilt_movie_frames}")
        truth.tilt_movie_shifts_px = random_tilt_movie_motion(np.random.default_rng([seed, 16]), n_i,
                                                              config.tilt_movie_frames, config.tilt_movie_motion_px)
        movies, data, truth.noise_sigma, truth.signal_scale = record_tilt_movies(
            clean, truth.tilt_movie_shifts_px, sigma, rng, contrast=config.contrast, mean_counts=config.mean_counts)
        expected = config.mean_counts - truth.signal_scale * clean if config.contrast == "dark" else clean
        noise = (data - expected).astype(np.float32)
    else:
        recorded = record_images(clean, sigma, rng, contrast=config.contrast, mean_counts=config.mean_counts)
        truth.noise_sigma, truth.signal_scale = recorded.noise_sigma, recorded.signal_scale
        data, noise = recorded.data, recorded.noise

    pert = config.perturbation
    d_def = rng.normal(0, pert.defocus_A, n_i)
    d_ast = rng.normal(0, pert.astigmatism_A, n_i)
    init_coords = coords + rng.normal(0, pert.position_px * pix, coords.shape)
    initial = TiltSeriesInitial(
        np.zeros(n_i),
        nominal.copy(),
        np.full(n_i, config.tilt_axis),
        shifts + rng.normal(0, pert.shift_px * pix, shifts.shape),
        truth.defocus_u + d_def + d_ast / 2,
        truth.defocus_v + d_def - d_ast / 2,
        astig_deg.copy(),
        Particles(item, particles.ids.copy(), sp.copy(), half.copy(), init_coords[:, None],
                  perturb_angles(rng, angles, *pert.pose_deg)[:, None]),
    )
    return SimulatedTiltSeries(config, seed, species, data, noise, truth, initial, movies=movies)
