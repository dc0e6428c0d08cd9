"""Analytic rendering of particle images: projected Gaussians, CTF, exposure, pasting.

Projection (real space, exact): with pose ``R = euler_to_matrix(angles)`` an
atom at map position ``c`` appears at ``u = R^T c`` in the particle view; its
line integral along z is a 2D Gaussian, and a pixel holds
``w (2 pi s^2)^-1 exp(-|xy - u_xy - offset|^2 / (2 s^2)) * pixel^2`` (mass per
pixel, the z-sum of :func:`mrepo.sim.maps.render_map`). Images are (m, y, x);
pixel ``(j, i)`` of a box of size N sits at ``((i, j) - N // 2) * pixel`` Å,
and ``offsets_A`` moves the particle centre off that pixel (sub-pixel
positions are rendered directly, never interpolated).

Fourier layout: CTF and exposure weights are applied to ``torch.fft.rfft2``
of a zero-padded box of size ``pad * box`` (non-centred, shape (P, P//2+1),
grids from :func:`mrepo.kernels.ctf.frequency_grid_2d`); the filters are real
and even, so the box origin does not matter. The whole padded box is pasted
(added) into the frame so CTF delocalisation up to ``(pad - 1) * box / 2``
pixels is kept.

Exposure weighting: amplitude ``exp(-B k^2 / 4)`` with ``B = 4 Å^2 x exposure``
(e-/Å^2), i.e. ``exp(-exposure k^2)`` (RELION 1.4 / M default), times a
per-image ``scale`` (cos(tilt) for tilt series, 1 for frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mrepo.kernels.ctf import ctf_at, frequency_grid_2d
from mrepo.kernels.rotations import euler_to_matrix
from mrepo.sim.atoms import PseudoAtomicModel
from mrepo.sim.maps import gaussian_factors
from mrepo.sim.optics import SimAberrations, even_phase, magnified, odd_phase_factor

__all__ = ["Optics", "ParticleImages", "project_atoms", "apply_ctf", "paste", "render_stack"]

#: padded pixels (images x (pad * box)²) rendered at once by :func:`render_stack` (~64 MiB per float64 array)
RENDER_SAMPLES = 1 << 23


@dataclass(frozen=True)
class Optics:
    """Microscope optics: voltage (kV), Cs (mm), amplitude contrast (fraction), pixel size (Å)."""

    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    pixel_size: float = 1.5


@dataclass
class ParticleImages:
    """Everything needed to render particle p in image i (arrays over particles P and images I).

    species: (P,) int index into the species list; positions_px: (P, I, 2)
    image position (x, y) of the map centre in pixels; angles_deg: (P, I, 3)
    ZYZ pose seen in each image; defocus_u/defocus_v: (P, I) Å;
    astigmatism_deg: (I,) astigmatism angle; exposure: (I,) e-/Å^2 used for
    damage weighting; scale: (I,) amplitude scale.
    """

    species: np.ndarray
    positions_px: np.ndarray
    angles_deg: np.ndarray
    defocus_u: np.ndarray
    defocus_v: np.ndarray
    astigmatism_deg: np.ndarray
    exposure: np.ndarray
    scale: np.ndarray


def project_atoms(
    atoms: PseudoAtomicModel,
    rotations: torch.Tensor,
    offsets_A: torch.Tensor,
    box: int,
    pixel_size: float,
    chunk: int = 32,
    distortion: np.ndarray | None = None,
) -> torch.Tensor:
    """Projections (m, box, box) float64 (y, x) of the atoms at poses (m, 3, 3), mass per pixel.

    ``offsets_A`` (m, 2) is the (x, y) position of the map centre relative to
    pixel (box // 2, box // 2), in Å. ``distortion`` (2, 2) A: the image at r is the projection
    at ``A (r - offset)`` (anisotropic magnification about the particle centre,
    :mod:`mrepo.sim.optics`; A = M^-T).
    """
    if rotations.ndim != 3 or rotations.shape[1:] != (3, 3):
        raise ValueError(f"rotations must have shape (m, 3, 3), got {tuple(rotations.shape)}")
    if offsets_A.shape != (rotations.shape[0], 2):
        raise ValueError(f"offsets_A must have shape ({rotations.shape[0]}, 2), got {tuple(offsets_A.shape)}")
    c = torch.from_numpy(np.asarray(atoms.centres, dtype=np.float64))
    s = torch.from_numpy(np.asarray(atoms.sigmas, dtype=np.float64))
    w = torch.from_numpy(np.asarray(atoms.weights, dtype=np.float64))
    coef = w / (2 * np.pi * s**2) * pixel_size**2
    if distortion is not None:
        return _project_distorted(c, s, coef, rotations, offsets_A, box, pixel_size,
                                  torch.as_tensor(np.asarray(distortion, dtype=np.float64)))
    out = []
    for start in range(0, rotations.shape[0], chunk):
        r = rotations[start : start + chunk].to(torch.float64)
        u = torch.einsum("mji,aj->mai", r, c)  # R^T c: (m, a, 3)
        off = offsets_A[start : start + chunk].to(torch.float64)
        gx = gaussian_factors(u[..., 0] + off[:, None, 0], s, box, pixel_size)  # (m, a, box)
        gy = gaussian_factors(u[..., 1] + off[:, None, 1], s, box, pixel_size)
        out.append(torch.einsum("may,max->myx", gy * coef[:, None], gx))
    return torch.cat(out) if out else torch.zeros(0, box, box, dtype=torch.float64)


def _project_distorted(c: torch.Tensor, s: torch.Tensor, coef: torch.Tensor, rotations: torch.Tensor,
                       offsets_A: torch.Tensor, box: int, pixel_size: float, a: torch.Tensor) -> torch.Tensor:
    """Projections with every pixel r sampled at ``A (r - offset)`` (non-separable Gaussians)."""
    grid = (torch.arange(box, dtype=torch.float64) - box // 2) * pixel_size
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    r = torch.stack([xx, yy], -1)  # (box, box, 2) (x, y)
    out = []
    for k in range(rotations.shape[0]):
        u = (rotations[k].to(torch.float64).T @ c.T).T[:, :2]  # (a, 2)
        q = (r - offsets_A[k].to(torch.float64)) @ a.T  # (box, box, 2)
        img = torch.zeros(box, box, dtype=torch.float64)
        for start in range(0, u.shape[0], 256):
            d = q[None] - u[start:start + 256, None, None, :]
            g = torch.exp(-(d * d).sum(-1) / (2 * s[start:start + 256, None, None] ** 2))
            img += torch.einsum("a,ayx->yx", coef[start:start + 256], g)
        out.append(img)
    return torch.stack(out) if out else torch.zeros(0, box, box, dtype=torch.float64)


def apply_ctf(
    images: torch.Tensor,
    optics: Optics,
    defocus_u: torch.Tensor,
    defocus_v: torch.Tensor,
    astigmatism_rad: torch.Tensor,
    exposure: torch.Tensor,
    scale: torch.Tensor,
    aberrations: SimAberrations | None = None,
) -> torch.Tensor:
    """Filter (m, P, P) images by CTF x exp(-exposure k^2) x scale (parameters (m,)); float64.
    With ``aberrations`` the CTF is taken at ``M k`` and the odd phase ``exp(i φ(M k))`` applied
    (:mod:`mrepo.sim.optics`); the damage weight, a property of the specimen, too."""
    m, h, w = images.shape
    freqs = frequency_grid_2d((h, w), optics.pixel_size, rfft=True, dtype=torch.float64)
    ab = aberrations if aberrations is not None and aberrations.active else None
    k = magnified(freqs, ab) if ab is not None else freqs
    # per-image parameters as (m, 1, 1) against the (h, w') grid; an even phase (h, w') joins the phase shift
    col = (-1, 1, 1)
    phase: torch.Tensor | float = 0.0 if ab is None else float(np.deg2rad(ab.phase_shift_deg))
    if ab is not None and ab.has_even:
        phase = phase - even_phase(k, ab)
    ctf = ctf_at(
        k,
        defocus_u=defocus_u.double().reshape(col),
        defocus_v=defocus_v.double().reshape(col),
        astigmatism_angle=astigmatism_rad.double().reshape(col),
        voltage_kv=optics.voltage_kv,
        cs_mm=optics.cs_mm,
        amplitude_contrast=optics.amplitude_contrast,
        phase_shift=phase,
        bfactor=4.0 * exposure.double().reshape(col),
        scale=scale.double().reshape(col),
        pointwise=True,
    )
    if ab is not None and ab.has_odd:
        ctf = ctf * odd_phase_factor(freqs, ab, optics.cs_mm, optics.voltage_kv)
    return torch.fft.irfft2(torch.fft.rfft2(images.double()) * ctf, s=(h, w))


def paste(canvas: np.ndarray, image: np.ndarray, centre_px: tuple[int, int]) -> None:
    """Add ``image`` (P, P) into ``canvas`` (H, W) in place with its pixel (P//2, P//2) at
    ``centre_px`` = (x, y); parts outside the canvas are dropped."""
    p_h, p_w = image.shape
    x0, y0 = centre_px[0] - p_w // 2, centre_px[1] - p_h // 2
    h, w = canvas.shape
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(h, y0 + p_h), min(w, x0 + p_w)
    if ye > ys and xe > xs:
        canvas[ys:ye, xs:xe] += image[ys - y0 : ye - y0, xs - x0 : xe - x0]


def render_stack(
    species: list[PseudoAtomicModel],
    boxes: list[int],
    plan: ParticleImages,
    image_shape: tuple[int, int],
    optics: Optics,
    pad: int = 3,
    aberrations: SimAberrations | None = None,
) -> np.ndarray:
    """Noise-free stack (I, H, W) float64 of all particles in ``plan``.

    Each particle image is rendered in its species box at its exact
    sub-pixel offset, zero-padded to ``pad * box``, CTF/exposure filtered and
    pasted at the nearest integer pixel of its position.
    """
    n_p, n_i = plan.positions_px.shape[:2]
    if len(species) != len(boxes):
        raise ValueError(f"need one box per species, got {len(boxes)} boxes for {len(species)} species")
    if pad < 1:
        raise ValueError(f"pad must be >= 1, got {pad}")
    out = np.zeros((n_i, *image_shape), dtype=np.float64)
    for s_idx, (atoms, box) in enumerate(zip(species, boxes)):
        chosen = np.flatnonzero(plan.species == s_idx)
        # particles in chunks of at most RENDER_SAMPLES padded pixels (bounded memory for any count)
        step = max(1, RENDER_SAMPLES // (n_i * (pad * box) ** 2))
        for start in range(0, chosen.size, step):
            _render_particles(out, chosen[start:start + step], atoms, box, plan, optics, pad, aberrations)
    return out


def _render_particles(out: np.ndarray, sel: np.ndarray, atoms: PseudoAtomicModel, box: int, plan: ParticleImages,
                      optics: Optics, pad: int, aberrations: SimAberrations | None) -> None:
    """Render the particles ``sel`` of one species into ``out`` (I, H, W) (see :func:`render_stack`)."""
    n_i = plan.positions_px.shape[1]
    pix = optics.pixel_size
    pos = plan.positions_px[sel].reshape(-1, 2)
    centre = np.rint(pos).astype(np.int64)
    offsets = torch.from_numpy((pos - centre) * pix)
    angles = torch.from_numpy(np.deg2rad(plan.angles_deg[sel].reshape(-1, 3)))
    distortion = aberrations.distortion() if aberrations is not None and aberrations.has_magnification else None
    proj = project_atoms(atoms, euler_to_matrix(angles), offsets, box, pix, distortion=distortion)
    big = pad * box
    lo = big // 2 - box // 2
    padded = torch.zeros(proj.shape[0], big, big, dtype=torch.float64)
    padded[:, lo : lo + box, lo : lo + box] = proj
    img_idx = np.tile(np.arange(n_i), sel.size)
    filtered = apply_ctf(
        padded,
        optics,
        torch.from_numpy(plan.defocus_u[sel].reshape(-1)),
        torch.from_numpy(plan.defocus_v[sel].reshape(-1)),
        torch.from_numpy(np.deg2rad(plan.astigmatism_deg[img_idx])),
        torch.from_numpy(plan.exposure[img_idx]),
        torch.from_numpy(plan.scale[img_idx]),
        aberrations,
    ).numpy()
    for k in range(filtered.shape[0]):
        paste(out[img_idx[k]], filtered[k], (int(centre[k, 0]), int(centre[k, 1])))
