"""Differentiable multi-particle geometry of one item (M paper, Methods: Deformation model).

:class:`Parameters` holds the refinable quantities as offsets in convenient units
(pixels, degrees, 100 Å defocus units) so that L-BFGS sees comparable scales;
:func:`particle_geometry` maps them to, for every particle p and exposure i, the
image position (x, y) px, the pose rotation (central slice -> map, ZYZ convention of
:mod:`mrepo.kernels.rotations`) and the defocus. Model names and meanings are in
:mod:`mrepo.workers.item_model`.

Frames: pos = λ_p(t_i) + global_shift_i + warp(λ_p(t_i), t_i), defocus = ctf_i + z_p(t_i);
tilts: pos = P(A_i (λ_p(t_i) - C_V)) + shift_i + warp(pos, i), defocus = ctf_i + hand·depth,
pose = R_p(t_i) (Rxyz(ω_i) A_i)^T. No Fourier layout here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from mrepo.kernels.rotations import (
    axis_angle_to_matrix,
    euler_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler,
    xyz_to_matrix,
)
from mrepo.kernels.splines import CubicSplineGrid
from mrepo.kernels.tilt_geometry import tilt_matrices
from mrepo.workers.deformation import doming_defocus, volume_warp_displacement
from mrepo.workers.item_model import ItemModel
from mrepo.workers.optics import block_magnification, optics_offsets, optics_state

__all__ = ["Parameters", "ParticleSet", "Geometry", "particle_geometry", "resample_trajectory", "DEFOCUS_UNIT"]

#: Å per unit of the defocus parameters (L-BFGS scaling).
DEFOCUS_UNIT = 100.0
_DT = torch.float64


def resample_trajectory(values: np.ndarray, samples: int) -> np.ndarray:
    """(N, T, 3) trajectory at ``linspace(0, 1, T)`` -> (N, samples, 3) (cubic spline in time)."""
    t_old = values.shape[1]
    if t_old == samples:
        return values
    grid = CubicSplineGrid((t_old,))
    t = torch.linspace(0, 1, samples, dtype=_DT)[:, None]  # host: numpy in, numpy out
    w = grid.weights(t)  # (samples, t_old)
    return np.einsum("st,ntc->nsc", w.numpy(), values)  # host


@dataclass
class ParticleSet:
    """Particles of one item (all species): coordinates (P, T, 3) Å, angles (P, T, 3) deg."""

    coordinates: np.ndarray
    angles: np.ndarray

    @property
    def temporal_samples(self) -> int:
        return int(self.coordinates.shape[1])


@dataclass
class Parameters:
    """Refinable offsets (all float64 tensors, zero = current model).

    shifts (n, 2) px; warp (2, gx, gy, gt) px (absolute node values) or None; translation
    (P, T, 2) px trajectory offsets for frames (x, y), (P, T, 3) for tilts (x, y, z of the
    tomogram frame: a particle's depth is refined, it is what per-tilt defocus sees);
    rotation (P, T, 3) deg rotation-vector offsets (map side); defocus (P,) frames / (n,)
    tilts in 100 Å; astigmatism (2,) frames / (n, 2) tilts: (half difference in 100 Å,
    angle in deg); stage (n, 3) deg xyz corrections (tilts).

    ``bounds`` {group: b} (units of the group) makes a group's applied offset ``b tanh(x / b)``:
    a hard physical bound that L-BFGS cannot leave (e.g. defocus inside its search window).
    ``scales`` {group: s}: the optimiser's variable is the offset divided by s (e.g. rotations
    in units of the angle that moves the particle's edge by one pixel, so that L-BFGS sees
    rotations and translations on one scale).
    ``gauge`` groups have their particle-mean change since ``anchor`` removed (see :meth:`effective`).
    All groups live on one device (:meth:`zeros` ``device``); :func:`particle_geometry` computes there.
    """

    shifts: Tensor
    translation: Tensor
    rotation: Tensor
    defocus: Tensor
    astigmatism: Tensor
    stage: Tensor
    warp: Tensor | None = None
    gauge: set[str] = field(default_factory=set)
    bounds: dict[str, float] = field(default_factory=dict)
    anchor: dict[str, Tensor] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)
    #: optics offsets {group: tensor} (:mod:`mrepo.workers.optics`: mag, beam_tilt, trefoil, zernike4, cs, phase)
    optics: dict[str, Tensor] = field(default_factory=optics_offsets)
    #: volume warp (3, gx, gy, gz, gt) px (tilts) and doming (gx, gy, gt) in 100 Å (frames), node values or None
    #: (:mod:`mrepo.workers.deformation`)
    volume_warp: Tensor | None = None
    doming: Tensor | None = None

    @classmethod
    def zeros(cls, model: ItemModel, particles: ParticleSet, warp_grid: tuple[int, int, int] | None,
              volume_warp_grid: tuple[int, int, int, int] | None = None,
              doming_grid: tuple[int, int, int] | None = None, *,
              device: torch.device | str | None = None) -> Parameters:
        """Zero offsets (the stored grids where the requested ones match) on ``device`` (default CPU)."""
        n, p, t = model.n, particles.coordinates.shape[0], particles.temporal_samples
        dev = torch.device("cpu") if device is None else torch.device(device)
        warp = None
        if warp_grid is not None:
            gx, gy, gt = warp_grid
            if model.kind == "tilts":
                gt = n
            warp = torch.zeros((2, gx, gy, gt), dtype=_DT, device=dev)
            if model.image_warp is not None and model.image_warp.shape[1:] == (gx, gy, gt):
                warp = torch.from_numpy(model.image_warp / model.pixel_size).to(device=dev, copy=True)
        elif model.image_warp is not None:
            warp = torch.from_numpy(model.image_warp / model.pixel_size).to(device=dev, copy=True)
        frames = model.kind == "frames"
        return cls(
            shifts=torch.zeros((n, 2), dtype=_DT, device=dev),
            translation=torch.zeros((p, t, 2 if frames else 3), dtype=_DT, device=dev),
            rotation=torch.zeros((p, t, 3), dtype=_DT, device=dev),
            defocus=torch.zeros((p,) if frames else (n,), dtype=_DT, device=dev),
            astigmatism=torch.zeros((2,) if frames else (n, 2), dtype=_DT, device=dev),
            stage=torch.zeros((n, 3), dtype=_DT, device=dev), warp=warp, optics=optics_offsets(dev),
            volume_warp=_deformation_start(model.volume_warp if model.kind == "tilts" else None, volume_warp_grid,
                                           3, 1.0 / model.pixel_size, dev),
            doming=_deformation_start(model.doming if frames else None, doming_grid, 0, 1.0 / DEFOCUS_UNIT, dev),
        )

    def value(self, name: str) -> Tensor:
        """The applied offset of group ``name``: bounded (``b tanh(x / b)``) when it has a bound."""
        x = (self.optics[name] if name in self.optics else getattr(self, name)) * self.scales.get(name, 1.0)
        b = self.bounds.get(name)
        return x if not b else b * torch.tanh(x / b)

    def raw_for(self, name: str, value: Tensor) -> Tensor:
        """The parameter giving the applied offset ``value`` (inverse of :meth:`value`, clipped inside the bound)."""
        b = self.bounds.get(name)
        s = self.scales.get(name, 1.0)
        if not b:
            return value / s
        return b * torch.atanh((value / b).clamp(-0.999, 0.999)) / s

    def effective(self) -> tuple[Tensor, Tensor]:
        """Translation and rotation offsets with the gauge fixed: when they are refined together
        with global shifts / stage corrections (which otherwise absorb the same common motion),
        the particle-mean of their change since :attr:`anchor` is removed."""
        t, r = self.value("translation"), self.value("rotation")
        if "translation" in self.gauge and t.shape[0]:
            t = t - (t - self.anchor.get("translation", torch.zeros_like(t))).mean(0, keepdim=True)
        if "rotation" in self.gauge and r.shape[0]:
            r = r - (r - self.anchor.get("rotation", torch.zeros_like(r))).mean(0, keepdim=True)
        return t, r

    def set_anchor(self) -> None:
        """Start a new gauge: the current applied translation/rotation become the reference."""
        with torch.no_grad():
            self.anchor = {k: self.value(k).detach().clone() for k in ("translation", "rotation")}

    def bake(self) -> None:
        """Replace every group by its applied offset (bounds and gauge folded in; both cleared)."""
        with torch.no_grad():
            t, r = self.effective()
            vals = {k: self.value(k).detach().clone() for k in ("shifts", "defocus", "astigmatism", "stage")}
            optics = {k: self.value(k).detach().clone() for k in self.optics}
            self.translation, self.rotation = t.detach().clone(), r.detach().clone()
            for k, v in vals.items():
                setattr(self, k, v)
            self.optics = optics
        self.bounds, self.gauge, self.anchor, self.scales = {}, set(), {}, {}

    def named(self) -> dict[str, Tensor]:
        out = {"shifts": self.shifts, "translation": self.translation, "rotation": self.rotation,
               "defocus": self.defocus, "astigmatism": self.astigmatism, "stage": self.stage}
        if self.warp is not None:
            out["warp"] = self.warp
        for k in ("volume_warp", "doming"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        out.update(self.optics)
        return out

    def select(self, names: list[str]) -> list[Tensor]:
        """Mark the named groups as refinable (requires_grad) and return them; others frozen."""
        named = self.named()
        unknown = set(names) - set(named)
        if unknown:
            raise ValueError(f"unknown or unavailable parameter groups: {sorted(unknown)}")
        for k, v in named.items():
            v.requires_grad_(k in names)
        return [named[k] for k in names]

    def detached(self) -> Parameters:
        d = {k: v.detach().clone() for k, v in self.named().items()}
        return Parameters(d["shifts"], d["translation"], d["rotation"], d["defocus"], d["astigmatism"],
                          d["stage"], d.get("warp"), set(self.gauge), dict(self.bounds),
                          {k: v.clone() for k, v in self.anchor.items()}, dict(self.scales),
                          {k: d[k] for k in self.optics}, d.get("volume_warp"), d.get("doming"))

    def assign(self, other: Parameters) -> None:
        """Copy ``other``'s values, bounds and gauge into these tensors (in place)."""
        with torch.no_grad():
            mine = self.named()
            for k, v in other.named().items():
                mine[k].copy_(v)
        self.gauge, self.bounds, self.scales = set(other.gauge), dict(other.bounds), dict(other.scales)
        self.anchor = {k: v.clone() for k, v in other.anchor.items()}


@dataclass
class Geometry:
    """Per particle p and exposure i: positions (P, n, 2) px (x, y), rotations (P, n, 3, 3),
    defocus_u/defocus_v (P, n) Å, astigmatism angle (n,) rad; ``optics``: the item's optics
    (:func:`mrepo.workers.optics.optics_state`; rotations already include diag(M, 1))."""

    positions: Tensor
    rotations: Tensor
    defocus_u: Tensor
    defocus_v: Tensor
    astigmatism: Tensor
    optics: dict[str, Tensor] = field(default_factory=dict)


class _Trajectory:
    """Interpolation weights (n, T) from T temporal nodes to the item's exposure times."""

    def __init__(self, time: np.ndarray, samples: int, device: torch.device):
        grid = CubicSplineGrid((samples,))
        self.w = grid.weights(torch.from_numpy(time).to(device=device, dtype=_DT)[:, None])  # (n, T)

    def __call__(self, nodes: Tensor) -> Tensor:
        """(P, T, c) -> (P, n, c)."""
        return torch.einsum("it,ptc->pic", self.w.to(nodes.dtype), nodes)


def _base_rotations(angles_deg: Tensor) -> tuple[Tensor, Tensor]:
    """Reference pose R0 (P, 3, 3) at t = 0 and rotation vectors (P, T, 3) of R0^T R_k."""
    mats = euler_to_matrix(torch.deg2rad(angles_deg))  # (P, T, 3, 3)
    r0 = mats[:, 0]
    rel = matrix_to_axis_angle(r0[:, None].transpose(-1, -2) @ mats)
    return r0, rel


def _deformation_start(stored: np.ndarray | None, grid: tuple[int, ...] | None, components: int,
                       scale: float, device: torch.device) -> Tensor | None:
    """Start values of a deformation grid (:mod:`mrepo.workers.deformation`) in optimiser units: the
    item's stored array (times ``scale``) when it has the requested grid (or none is requested),
    zeros of the requested grid otherwise; ``components`` leading axis (0: none)."""
    shape = None if grid is None else ((components,) if components else ()) + tuple(grid)
    if stored is not None and (shape is None or tuple(stored.shape) == shape):
        return torch.from_numpy(stored * scale).to(device=device, copy=True)
    return None if shape is None else torch.zeros(shape, dtype=_DT, device=device)


def _warp(model: ItemModel, nodes: Tensor | None, pos_px: Tensor, t: Tensor) -> Tensor:
    if nodes is None:
        return torch.zeros_like(pos_px)
    grid = CubicSplineGrid(tuple(nodes.shape[1:]))
    nodes = nodes - nodes.mean(dim=(1, 2), keepdim=True)  # no global translation: that is the shifts' job
    size = torch.tensor([model.width, model.height], dtype=pos_px.dtype, device=pos_px.device)
    pts = torch.cat([pos_px.detach() / size, t.expand(pos_px.shape[:-1])[..., None]], dim=-1)
    w = grid.weights(pts.reshape(-1, 3))  # (P*n, N)
    return grid.evaluate(nodes, w).reshape(2, *pos_px.shape[:-1]).movedim(0, -1)


def particle_geometry(model: ItemModel, particles: ParticleSet, params: Parameters) -> Geometry:
    """Positions, poses and defoci of every particle in every exposure (differentiable in ``params``),
    on the parameters' device."""
    ps = model.pixel_size
    n = model.n
    dev = params.shifts.device

    def host(a: np.ndarray) -> Tensor:  # an item/particle array on the parameters' device, float64
        return torch.from_numpy(np.asarray(a)).to(device=dev, dtype=_DT)

    traj = _Trajectory(model.time, particles.temporal_samples, dev)
    coords = host(particles.coordinates)
    xyz = traj(coords)  # (P, n, 3) Å
    translation, rotation = params.effective()
    dxy = traj(translation)  # (P, n, 2) px frames, (P, n, 3) tilts
    r0, rel = _base_rotations(host(particles.angles))
    rotvec = traj(rel + torch.deg2rad(rotation))
    poses = r0[:, None] @ axis_angle_to_matrix(rotvec)  # (P, n, 3, 3)
    ctf = host(model.ctf)
    t_idx = host(model.time)
    if model.kind == "frames":
        shifts = host(model.global_shifts) / ps + params.shifts  # (n, 2) px
        base = xyz[..., :2] / ps + dxy
        pos = base + shifts[None] + _warp(model, params.warp, base, t_idx[None, :])
        z = xyz[..., 2] + DEFOCUS_UNIT * params.value("defocus")[:, None]
        if params.doming is not None:
            z = z + doming_defocus(DEFOCUS_UNIT * params.doming, base, model.width, model.height, t_idx)
        astig = params.value("astigmatism")
        dev = DEFOCUS_UNIT * astig[0]
        du = ctf[None, :, 0] + z + dev
        dv = ctf[None, :, 1] + z - dev
        ang = torch.deg2rad(ctf[:, 2] + astig[1])
        optics = optics_state(model, {k: params.value(k) for k in params.optics})
        if "mag" in optics:
            poses = poses @ block_magnification(optics["mag"])
        return Geometry(pos, poses, du, dv, ang, optics)
    stage = torch.deg2rad(host(model.stage_angles))
    a = tilt_matrices(stage[:, 0], stage[:, 1], stage[:, 2])  # (n, 3, 3)
    vol = host(model.volume_size)
    centred = xyz - vol / 2
    centred = centred + dxy * ps
    if params.volume_warp is not None:
        centred = centred + volume_warp_displacement(params.volume_warp * ps, centred + vol / 2, vol,
                                                     t_idx)
    rotated = torch.einsum("nij,pnj->pni", a, centred)
    # RELION rotates about int(Size/2) px but measures depth from Size/2: for an odd size the
    # positions move by R (half a pixel) (kernels.tilt_geometry.project_points)
    odd = torch.remainder(torch.round(vol / ps), 2)
    rot_offset = torch.einsum("nij,j->ni", a, odd * (ps / 2))[:, :2]  # (n, 2) Å
    centre = torch.tensor([model.width // 2, model.height // 2], dtype=_DT, device=dev)
    shifts = host(model.global_shifts) / ps + params.shifts
    base = (rotated[..., :2] + rot_offset[None]) / ps + shifts[None] + centre
    t_tilt = torch.linspace(0, 1, n, dtype=_DT, device=dev) if n > 1 else torch.zeros(1, dtype=_DT, device=dev)
    pos = base + _warp(model, params.warp, base, t_tilt[None, :])
    corr = torch.deg2rad(params.value("stage"))
    if model.stage_corrections is not None:
        corr = corr + torch.deg2rad(host(model.stage_corrections))
    a_corr = xyz_to_matrix(corr) @ a
    poses = poses @ a_corr.transpose(-1, -2)[None]
    depth = rotated[..., 2]
    mean = DEFOCUS_UNIT * params.value("defocus")
    astig = params.value("astigmatism")
    dev = DEFOCUS_UNIT * astig[:, 0]
    du = ctf[None, :, 0] + (mean + dev)[None] + model.hand * depth
    dv = ctf[None, :, 1] + (mean - dev)[None] + model.hand * depth
    ang = torch.deg2rad(ctf[:, 2] + astig[:, 1])
    optics = optics_state(model, {k: params.value(k) for k in params.optics})
    if "mag" in optics:
        poses = poses @ block_magnification(optics["mag"])
    return Geometry(pos, poses, du, dv, ang, optics)


def updated_particles(particles: ParticleSet, params: Parameters, model: ItemModel) -> ParticleSet:
    """New trajectories (coordinates Å, angles deg at the T nodes) with the offsets applied (numpy)."""
    coords = particles.coordinates.copy()
    translation, rotation = params.effective()
    tr = translation.detach().cpu().numpy() * model.pixel_size
    coords[..., :tr.shape[-1]] += tr
    if model.kind == "frames":
        coords[..., 2] += DEFOCUS_UNIT * params.value("defocus").detach().cpu().numpy()[:, None]
    r0, rel = _base_rotations(torch.from_numpy(particles.angles).to(_DT))  # host: the result is numpy
    mats = r0[:, None] @ axis_angle_to_matrix(rel + torch.deg2rad(rotation.detach().cpu()))
    angles = torch.rad2deg(matrix_to_euler(mats)).cpu().numpy()
    return ParticleSet(coords, angles)


def updated_models(model: ItemModel, params: Parameters) -> dict[str, np.ndarray]:
    """New model arrays (names of :mod:`mrepo.workers.item_model`) with the offsets applied."""
    p = params.detached()
    p.bake()
    ps = model.pixel_size
    out: dict[str, np.ndarray] = {"global_shifts": model.global_shifts + p.shifts.cpu().numpy() * ps}
    ctf = model.ctf.copy()
    if model.kind == "frames":
        ctf[:, 0] += DEFOCUS_UNIT * float(p.astigmatism[0])
        ctf[:, 1] -= DEFOCUS_UNIT * float(p.astigmatism[0])
        ctf[:, 2] += float(p.astigmatism[1])
    else:
        mean, dev = DEFOCUS_UNIT * p.defocus.cpu().numpy(), DEFOCUS_UNIT * p.astigmatism[:, 0].cpu().numpy()
        ctf[:, 0] += mean + dev
        ctf[:, 1] += mean - dev
        ctf[:, 2] += p.astigmatism[:, 1].cpu().numpy()
        corr = p.stage.cpu().numpy() + (0 if model.stage_corrections is None else model.stage_corrections)
        out["stage_corrections"] = corr
    out["ctf"] = ctf
    if p.warp is not None:
        w = p.warp - p.warp.mean(dim=(1, 2), keepdim=True)
        out["image_warp"] = w.cpu().numpy() * ps
    if p.volume_warp is not None:
        out["volume_warp"] = p.volume_warp.cpu().numpy() * ps
    if p.doming is not None:
        out["doming"] = p.doming.cpu().numpy() * DEFOCUS_UNIT
    return out

