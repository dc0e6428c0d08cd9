"""M's refinement target for one item: weighted normalised cross-correlation between
CTF-premultiplied, whitened, masked particle images and reference projections.

    M = Σ A·B / sqrt(Σ|A|² CTF²/AS_i · Σ|W_i D I|²/AS_i),  A = W_i P(s, Θ_p,i),
    B = FT(FT⁻¹(W_i CTF I / AS_i) D)

The numerator is M's; the norms are those of the model W CTF P (band-limited CTF², as the
premultiplied data) and of the data W I, so the CTF optimum is unbiased (with |B|² as the
data norm, as printed in the paper, the defocus drifts towards high-power frequencies).
Where the CTF is refined, the model norm is taken exactly: the slice W P zero-padded in real space
to n = min(2 b_g, big) times the CTF² band-limited to n (:func:`_model_power`). The b_g-grid
product |A|² · CTF²(band-limited to b_g) smooths CTF² but not |P|² and misses most of a CTF
zero's power; its defocus optimum sat 20–30 Å low without damage and 80–150 Å low on a tilt
series' late (damaged) tilts, where the low shells dominate (perfect geometry, box 48).

summed over species, particles, exposures and Fourier shells up to each species'
refinement resolution (M paper, Methods: Optimization procedure). Fourier layout:
``rfft2`` half-grids (..., b_g, b_g // 2 + 1) as :mod:`mrepo.workers.imaging`; reference
slices come from :func:`mrepo.kernels.fourier_slice.extract_slices` at the species box b
and are Fourier-cropped to b_g.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from mrepo.kernels.fourier_crop import fourier_crop
from mrepo.kernels.fourier_slice import extract_slices
from mrepo.kernels.fsc import (
    ShellSums,
    hermitian_weights,
    normalized_cross_correlation_per_shell,
    num_shells,
    shell_indices,
    shell_sum,
)
from mrepo.kernels.shifts import phase_shift
from mrepo.workers.geometry import Geometry
from mrepo.workers.imaging import (
    PatchGroup,
    circular_mask,
    exposure_weight_grid,
    premultiply_with_ctf2,
    raw_crop,
    shell_average,
)
from mrepo.workers.item_model import ItemModel
from mrepo.workers.references import REFERENCE_PAD

__all__ = ["Subset", "GroupState", "Sums", "evaluate", "backward_target", "build_group_state", "group_amplitudes",
           "joint_pass_fits"]


@dataclass
class GroupState:
    """Fixed per-group quantities: weights W (g, b_g, w), 1/AS (g, b_g, w), mask (b_g, b_g),
    shell limit, and (when the CTF is frozen) the premultiplied images at the start position."""

    group: PatchGroup
    weight: Tensor
    inv_as: Tensor
    mask: Tensor
    shell_limit: int
    power_b: Tensor | None = None
    cached: Tensor | None = None
    cached_residual: Tensor | None = None
    cached_ctf2: Tensor | None = None


@dataclass
class Subset:
    """Particles of one species and half-set: ``index`` (P_s,) into the item's particles.

    Streamed subsets (``load`` set) keep no extracted patches (their groups' ``ft`` is empty):
    ``load()`` re-extracts them from the item's exposures when an evaluation needs them, so
    memory stays that of one particle batch whatever the number of particles.

    ``slices``: per group, the last weighted reference slices computed without gradients
    (rotations (P, g, 3, 3), radius, slices (P, g, b_g, b_g // 2 + 1)), reused while the
    rotations are unchanged (defocus search, acceptance checks); not kept for streamed subsets.
    ``padded``: per group, |FT_n|² of such reused slices zero-padded to n (the model norm's,
    :func:`_model_power`), reused with them while only the CTF moves (defocus search, CTF L-BFGS,
    acceptance checks); kept for one stage (:meth:`drop_padded`)."""

    species: str
    half: int
    box: int
    index: Tensor
    volume_ft: Tensor
    groups: list[GroupState] = field(default_factory=list)
    load: Callable[[], list[Tensor]] | None = None
    slices: dict[int, tuple[Tensor, float | None, Tensor]] = field(default_factory=dict, repr=False)
    padded: dict[int, tuple[Tensor, int, Tensor]] = field(default_factory=dict, repr=False)

    def weighted_slices(self, j: int, rot: Tensor, max_radius: float | None) -> Tensor:
        """Reference slices of group ``j`` at ``rot`` (P, g, 3, 3), Fourier-cropped to b_g and
        weighted by W: (P, g, b_g, b_g // 2 + 1); differentiable in ``rot``."""
        st = self.groups[j]
        reuse = not rot.requires_grad and self.load is None
        if reuse and j in self.slices:
            r0, rad0, out = self.slices[j]
            if rad0 == max_radius and r0.shape == rot.shape and torch.equal(r0, rot):
                return out
        ref = extract_slices(self.volume_ft, rot, self.box, REFERENCE_PAD, max_radius=max_radius)
        if st.group.size < self.box:
            ref = fourier_crop(ref, st.group.size)
        out = ref * st.weight
        if reuse:
            self.slices[j] = (rot.detach().clone(), max_radius, out)
        return out

    def padded_power(self, j: int, a: Tensor, n: int) -> Tensor:
        """|FT_n(a)|² (P, g, n, n // 2 + 1) of group ``j``'s slices ``a`` zero-padded to n; kept while ``a``
        is the reused no-gradient slice of that group (the same tensor object)."""
        cached = self.padded.get(j)
        if cached is not None and cached[0] is a and cached[1] == n:
            return cached[2]
        out = _padded_power(a, self.groups[j].group.size, n)
        entry = self.slices.get(j)
        if not a.requires_grad and entry is not None and entry[2] is a:
            self.padded[j] = (a, n, out)
        return out

    def drop_padded(self) -> None:
        """Free the cached |FT_n|² grids (at the end of each refinement stage)."""
        self.padded.clear()

    def patches(self, ctf_frozen: bool) -> list[Tensor | None]:
        """Each group's patches (re-extracted when streamed; None where the frozen-CTF cache suffices)."""
        if self.load is None:
            return [st.group.ft for st in self.groups]
        if ctf_frozen and all(st.cached is not None for st in self.groups):
            return [None] * len(self.groups)
        return self.load()


@dataclass
class Sums:
    """Per particle and exposure sums over shells <= limit: cross, power_a, power_b (P, n) (the weights'
    per-shell NC spectra are :mod:`mrepo.workers.exposure_spectra`, not these whitened sums)."""

    cross: Tensor
    power_a: Tensor
    power_b: Tensor

    def target(self, rows: Tensor | None = None) -> Tensor:
        """M's target over all particles, or over the particle ``rows`` only."""
        c, a, b = (self.cross, self.power_a, self.power_b) if rows is None else (
            self.cross[rows], self.power_a[rows], self.power_b[rows])
        return c.sum() / torch.sqrt(a.sum() * b.sum()).clamp_min(1e-30)

    def particle_scores(self) -> Tensor:
        """Each particle's own normalised correlation over its exposures (P,)."""
        return self.cross.sum(1) / torch.sqrt(self.power_a.sum(1) * self.power_b.sum(1)).clamp_min(1e-30)


def group_amplitudes(group: PatchGroup) -> Tensor:
    """Mean amplitude per shell and exposure of a group's raw crops (g, b_g, w): M's AS_i."""
    return shell_average(raw_crop(group), group.size)


def build_group_state(model: ItemModel, group: PatchGroup, diameter: float, resolution: float, box: int,
                      whiten: bool, use_weights: bool, amplitudes: Tensor | None = None) -> GroupState:
    """Fixed quantities of one group; ``amplitudes`` (g, b_g, w): AS_i averaged over more particles
    than this group holds (particle batches of one half-set), else from this group alone."""
    size, pixel = group.size, group.pixel
    weight = exposure_weight_grid(model, group.exposures, size, pixel, use_weights)
    if not whiten:
        inv_as = torch.ones(len(group.exposures), size, size // 2 + 1, device=group.ft.device)
    else:
        inv_as = 1.0 / (amplitudes if amplitudes is not None else group_amplitudes(group))
    limit = min(size // 2, int(np.floor(box * model.pixel_size / resolution)))
    mask = circular_mask(size, pixel, diameter, device=group.ft.device)
    raw = torch.fft.rfft2(torch.fft.irfft2(raw_crop(group), s=(size, size)) * mask)
    pb = normalized_cross_correlation_per_shell(raw, raw, weight**2 * inv_as, image_shape=(size, size)).cross
    return GroupState(group, weight, inv_as.float(), mask, limit, pb[..., 1:limit + 1].sum(-1).double())


def _images(model: ItemModel, st: GroupState, geo: Geometry, idx: Tensor, ctf_frozen: bool,
            ft: Tensor | None = None, *, ctf2_box: int | None = None) -> tuple[Tensor, Tensor]:
    """Masked premultiplied images (P, g, b_g, b_g // 2 + 1) and the band-limited CTF² (P, g, n, n // 2 + 1),
    n = b_g, or ``ctf2_box`` where the CTF is free; ``ft``: the group's patches when streamed."""
    g = st.group if ft is None else dataclasses.replace(st.group, ft=ft)
    e = g.exposures
    residual = geo.positions[idx][:, e] - g.centres
    du, dv, ang = geo.defocus_u[idx][:, e], geo.defocus_v[idx][:, e], geo.astigmatism[e]
    if ctf_frozen:
        if st.cached is None:
            with torch.no_grad():
                st.cached, st.cached_ctf2 = premultiply_with_ctf2(model, g, residual.detach(), du, dv, ang, geo.optics)
                st.cached_residual = residual.detach()
        delta = (residual - st.cached_residual) * g.scale
        x = phase_shift(st.cached, -delta, (g.size, g.size))
        img = torch.fft.irfft2(x, s=(g.size, g.size)) * st.mask
        return torch.fft.rfft2(img), st.cached_ctf2
    # the real-space crop masked directly (not rfft2 then irfft2 of it: the same image up to rounding)
    crop, ctf2 = premultiply_with_ctf2(model, g, residual, du, dv, ang, geo.optics, ctf2_box=ctf2_box, fourier=False)
    return torch.fft.rfft2(crop * st.mask), ctf2


@functools.lru_cache(maxsize=64)
def _shell_grid(size: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, int]:
    """Shell index and Hermitian weight of every pixel of a (size, size // 2 + 1) grid, number of shells."""
    shape = (size, size)
    return (shell_indices(shape, device=device), hermitian_weights(shape, device=device, dtype=dtype),
            num_shells(shape))


@functools.lru_cache(maxsize=64)
def _norm_grid(n: int, size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """For an (n, n // 2 + 1) grid: the b_g-grid shell (``size``) of every pixel (long) and its Hermitian weight."""
    fy = torch.fft.fftfreq(n, device=device, dtype=torch.float64)
    fx = torch.fft.rfftfreq(n, device=device, dtype=torch.float64)
    r = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) * size
    return torch.round(r).long(), hermitian_weights((n, n), device=device, dtype=torch.float32)


def _padded_power(a: Tensor, size: int, n: int) -> Tensor:
    """|FT_n|² (P, g, n, n // 2 + 1) of the slices ``a`` (P, g, b_g, b_g // 2 + 1) zero-padded in real space to n."""
    img = torch.fft.irfft2(a, s=(size, size))
    if n > size:
        img = torch.nn.functional.pad(img, (0, n - size, 0, n - size))
    ft = torch.fft.rfft2(img)
    return ft.real * ft.real + ft.imag * ft.imag


def _model_power(a: Tensor, ctf2: Tensor, inv_as: Tensor, size: int, limit: int, sq: Tensor | None = None) -> Tensor:
    """Model norm Σ |W P|² CTF² / AS over b_g-shells 1..``limit`` (P, g) float64, exactly: the slices ``a``
    (P, g, b_g, b_g // 2 + 1) zero-padded in real space to n and weighted by ``ctf2`` (P, g, n, n // 2 + 1),
    the CTF² band-limited to n (a circular convolution with no wrap when n ≥ 2 b_g); ``inv_as`` (g, b_g, ·)
    is radial and read per shell. Scaled to the b_g grid ((b_g / n)²). ``sq``: |FT_n(a)|² when already known
    (:meth:`Subset.padded_power`), else computed."""
    n = ctf2.shape[-2]
    if sq is None:
        sq = _padded_power(a, size, n)
    shells, w = _norm_grid(n, size, a.device)
    profile = inv_as[:, 0, : size // 2 + 1]  # (g, shells): pixel (0, q) lies on shell q
    inside = (shells >= 1) & (shells <= limit)
    weight = profile[:, shells.clamp(max=size // 2)] * (w * inside)
    power = sq * ctf2 * weight
    return power.sum((-2, -1)).double() * (size / n) ** 2


def _shell_sums(a: Tensor, b: Tensor, a_weight: Tensor | None, size: int) -> ShellSums:
    """Per-shell sums (P, g, shells) of the target: cross Σ Re(a b*), power_a Σ |a|² ``a_weight`` (zeros
    when ``a_weight`` is None: the model norm is taken elsewhere; power_b zeros), Hermitian pairs counted
    twice. The same sums as :func:`normalized_cross_correlation_per_shell` without the ones the target
    does not use."""
    shells, w, ns = _shell_grid(size, a.device, a.real.dtype)
    cross = shell_sum((a.real * b.real + a.imag * b.imag) * w, shells, ns)
    if a_weight is None:
        return ShellSums(cross, torch.zeros_like(cross), torch.zeros_like(cross))
    pa = shell_sum((a.real * a.real + a.imag * a.imag) * (w * a_weight), shells, ns)
    return ShellSums(cross, pa, torch.zeros_like(cross))


def evaluate(model: ItemModel, subsets: list[Subset], geo: Geometry, n_particles: int, *, ctf_frozen: bool) -> Sums:
    """Evaluate the target's per-particle, per-exposure sums (differentiable in ``geo``)."""
    n = model.n
    cross = torch.zeros(n_particles, n, dtype=torch.float64, device=geo.positions.device)
    pa, pb = torch.zeros_like(cross), torch.zeros_like(cross)
    for sub in subsets:
        if len(sub.index) == 0:
            continue
        rot = geo.rotations[sub.index]
        for j, (st, ft) in enumerate(zip(sub.groups, sub.patches(ctf_frozen))):
            g = st.group
            # the model norm is exact where the CTF is free (see module docstring): CTF² at n = min(2 b_g, big)
            n = None if ctf_frozen else min(2 * g.size, g.big)
            x, ctf2 = _images(model, st, geo, sub.index, ctf_frozen, ft, ctf2_box=n)
            b_img = x * (st.weight * st.inv_as)
            # the target sums shells <= shell_limit only: skip sampling beyond
            a_img = sub.weighted_slices(j, rot[:, g.exposures], st.shell_limit + 0.5)
            # unbiased norms: |W CTF P|² (band-limited CTF², whitened) and the fixed |W I|² (st.power_b)
            lim = st.shell_limit + 1
            if ctf_frozen:
                s = _shell_sums(a_img, b_img, ctf2 * st.inv_as, g.size)
                power = s.power_a[..., 1:lim].sum(-1).double()
            else:
                s = _shell_sums(a_img, b_img, None, g.size)
                power = _model_power(a_img, ctf2, st.inv_as, g.size, st.shell_limit, sub.padded_power(j, a_img, n))
            rows = sub.index[:, None].expand(-1, len(g.exposures))
            cols = g.exposures[None, :].expand(len(sub.index), -1)
            cross = cross.index_put((rows, cols), s.cross[..., 1:lim].sum(-1).double(), accumulate=True)
            pa = pa.index_put((rows, cols), power, accumulate=True)
            pb = pb.index_put((rows, cols), st.power_b, accumulate=True)
    return Sums(cross, pa, pb)


def _geometry_tensors(geo: Geometry) -> list[Tensor]:
    """Geometry tensors, optics last (sorted by name; see :func:`_rebuild`)."""
    return [geo.positions, geo.rotations, geo.defocus_u, geo.defocus_v, geo.astigmatism] + [
        geo.optics[k] for k in sorted(geo.optics)]


def _rebuild(geo: Geometry, tensors: list[Tensor]) -> Geometry:
    return Geometry(*tensors[:5], dict(zip(sorted(geo.optics), tensors[5:])))


#: Saved-tensor bytes of one subset's graph per byte of its patches (measured: 3.3 with the CTF
#: frozen, 10.8 with it free; rounded up).
_GRAPH_PER_PATCH_BYTE = 12


def joint_pass_fits(subsets: list[Subset], budget_mib: float) -> bool:
    """Whether every subset's autograd graph fits in ``budget_mib`` at once (never for streamed subsets);
    the budget is ``RefineSettings.graph_memory_mib``."""
    if any(sub.load is not None for sub in subsets):
        return False
    patch = sum(st.group.ft.numel() * st.group.ft.element_size() for sub in subsets for st in sub.groups)
    return patch * _GRAPH_PER_PATCH_BYTE <= budget_mib * 2**20


def backward_target(model: ItemModel, subsets: list[Subset], geo: Geometry, n_particles: int, *, ctf_frozen: bool,
                    scale: float, joint_mib: float) -> float:
    """M's target T over ``subsets``; adds the gradient of ``-scale · T`` to whatever ``geo`` was
    computed from (``backward``).

    T = C / sqrt(A B) is not a sum over particles. When all subsets' graphs fit in
    ``joint_mib`` (:func:`joint_pass_fits`), one pass with gradients gives the totals and
    back-propagates the linearisation dT = (dC − C dA / (2A)) / sqrt(A B) (B is fixed). Otherwise
    a first pass without gradients gives the totals C, A, B and a second back-propagates each
    subset's part of dT, holding one subset's graph at a time (memory of the largest particle
    batch, time about 4/3 of the joint pass). Either way the gradients go into detached copies of
    the geometry, and one final backward carries them through the geometry model."""
    tensors = _geometry_tensors(geo)
    leaves = [t.detach().requires_grad_(t.requires_grad) for t in tensors]
    leaf_geo = _rebuild(geo, leaves)
    if joint_pass_fits(subsets, joint_mib):
        total = evaluate(model, subsets, leaf_geo, n_particles, ctf_frozen=ctf_frozen)
        cs, as_ = total.cross.sum(), total.power_a.sum()
        c, a, b = float(cs.detach()), float(as_.detach()), float(total.power_b.sum())
        norm = math.sqrt(max(a * b, 1e-300))
        part = (cs - (c / (2 * a)) * as_) / norm
        if part.requires_grad:
            (-scale * part).backward()
    else:
        with torch.no_grad():
            total = evaluate(model, subsets, leaf_geo, n_particles, ctf_frozen=ctf_frozen)
        c, a, b = (float(x.sum()) for x in (total.cross, total.power_a, total.power_b))
        norm = math.sqrt(max(a * b, 1e-300))
        for sub in subsets:
            sm = evaluate(model, [sub], leaf_geo, n_particles, ctf_frozen=ctf_frozen)
            part = (sm.cross.sum() - (c / (2 * a)) * sm.power_a.sum()) / norm
            if part.requires_grad:
                (-scale * part).backward()
    pairs = [(t, leaf.grad) for t, leaf in zip(tensors, leaves) if t.requires_grad and leaf.grad is not None]
    if pairs:
        torch.autograd.backward([p[0] for p in pairs], [p[1] for p in pairs])
    return c / norm
