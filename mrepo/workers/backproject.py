"""Back-projection of one item's particles into per-species half-set Fourier sums.

Images are re-extracted from the original frames/tilts at the aliasing-free box for the
reconstruction resolution, premultiplied by the CTF, cropped to the species box b,
weighted by the exposure weights W_i, and inserted (data += W CTF I, weight += W² CTF²
band-limited, clamped at 0) at every symmetry copy of their pose (M paper, Methods: Map reconstruction).
Grids: centred half-transforms of :mod:`mrepo.kernels.gridding`, float64, (2h+1, 2h+1, h+1),
h = pad * b // 2, accumulated directly in the layout of :class:`~mrepo.workers.api.HalfSums`
(data (2, 2, *grid): half-set, (real, imag); weight (2, *grid)) and converted to its fixed point in
place: the only full-size arrays are these two (box 256 at pad 2: 2 GiB + 1 GiB).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mrepo.kernels.fourier_slice import insert_slices
from mrepo.kernels.gridding import half_grid_shape
from mrepo.store.heap import release_free_heap
from mrepo.workers.api import HalfSums
from mrepo.workers.geometry import Geometry
from mrepo.workers.imaging import (
    PatchSource,
    big_box,
    exposure_sizes,
    exposure_weight_grid,
    extract_groups,
    premultiply_with_ctf2,
)
from mrepo.workers.item_model import ItemModel

__all__ = ["backproject_species"]


#: Slice samples inserted per call (oversampled grid points × images × symmetry operators): the
#: trilinear stencil of one call holds ~12 bytes × 8 taps per sample (~200 MiB at this budget).
INSERT_POINTS = 1 << 21


def backproject_species(model: ItemModel, stack: Tensor | PatchSource, geo: Geometry, index: Tensor, half: Tensor,
                        box: int, diameter: float, resolution: float, symmetry: Tensor, *, pad: int, min_box_factor: float,
                        use_weights: bool, chunk: int = 64) -> HalfSums:
    """Half-set sums of the particles ``index`` (P_s,) with half-sets ``half`` (P_s,) in {1, 2}, in
    particle chunks of at most ``chunk`` and at most :data:`INSERT_POINTS` slice samples (memory bound).
    The grids live on the geometry's device; the sums come back as CPU arrays."""
    release_free_heap()
    dev = geo.positions.device
    grid = half_grid_shape(pad * box)
    data = torch.zeros((2, 2, *grid), dtype=torch.float64, device=dev)  # half-set, (real, imag), grid
    weight_sum = torch.zeros((2, *grid), dtype=torch.float64, device=dev)
    big_pad = pad * box
    per_particle = model.n * len(symmetry) * big_pad * (big_pad // 2 + 1)
    chunk = max(1, min(chunk, INSERT_POINTS // max(per_particle, 1)))
    if len(index):
        max_def = float(torch.maximum(geo.defocus_u[index], geo.defocus_v[index]).abs().max())
        big = big_box(model, box, diameter, resolution, max_def, min_box_factor)
        sizes = exposure_sizes(model, box, None)
        weight = exposure_weight_grid(model, torch.arange(model.n, device=dev), box, model.pixel_size, use_weights)
        for start in range(0, len(index), chunk):
            idx, hs = index[start:start + chunk], half[start:start + chunk]
            pos = geo.positions[idx]
            centres = torch.round(pos)
            (group,) = extract_groups(stack, centres, box, big, sizes, model.pixel_size)
            du, dv, ang = geo.defocus_u[idx], geo.defocus_v[idx], geo.astigmatism
            images, ctf2 = premultiply_with_ctf2(model, group, pos - centres, du, dv, ang, geo.optics)
            images = images * weight
            # band-limited CTF² rings slightly below 0 near CTF zeros; a negative weight lets sums of
            # several items cancel to ~0 where data remain, so the Wiener division blows up
            ctf2 = ctf2.clamp_min(0) * weight**2
            rot = geo.rotations[idx]
            for h in (1, 2):
                m = hs == h
                if not bool(m.any()):
                    continue
                rots = symmetry.to(rot.dtype)[:, None, None] @ rot[m][None]
                insert_slices(images[m], ctf2[m], rots.float(), box, pad, data[h - 1], weight_sum[h - 1])
    # on the CPU .numpy() shares the grids' memory, which from_float_planes turns into the int64 sums
    return HalfSums.from_float_planes(data.cpu().numpy(), weight_sum.cpu().numpy(), particles=int(len(index)))
