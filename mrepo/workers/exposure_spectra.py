"""Per-exposure NC spectra for the data-driven exposure weights (M paper, Methods: Data-driven weighting).

For every exposure i and Fourier shell k, summed over all particles p of one species:

    NC_i(k) = Σ Re(X · conj(C² P)) / sqrt(Σ |X|² · Σ C⁴ |P|²)

X = FT(mask · FT⁻¹(CTF · I)): the particle image premultiplied with its CTF in the big box, cropped and
masked, exactly as the refinement target sees it; P: the reference projection at the particle's pose;
C²: the band-limited CTF² that goes with X (clamped at 0; the band-limiting kernel dips below 0 near DC).
It is the normalised correlation between the data and the CTF-weighted reference projection: with
I = g·CTF·S + N, X ≈ g·C²S + CTF·N and NC_i(k) is g_i(k) times a per-shell factor at low SNR, 1 for
noise-free data. Both powers are of the very vectors the cross term pairs, so by Cauchy–Schwarz
|NC| ≤ 1 exactly. (The unpremultiplied, masked image's power cannot serve as the data norm: a small box
cuts the CTF-delocalised signal that premultiplication brings back, and NC reached 1.6.) Neither the
whitening 1/AS nor the current weights W enter: both are constant per shell and exposure and would
cancel in NC, but the target's sums in :mod:`mrepo.workers.objective` carry them. Fourier layout:
``rfft2`` half-grids (P, g, b_g, b_g // 2 + 1) as :mod:`mrepo.workers.imaging`; shell k of a group of
size b_g has the frequency of shell k of the species box b (same field of view).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mrepo.kernels.fourier_crop import fourier_crop
from mrepo.kernels.fourier_slice import extract_slices
from mrepo.kernels.fsc import shell_sum
from mrepo.workers.geometry import Geometry
from mrepo.workers.item_model import ItemModel
from mrepo.workers.objective import Subset, _images, _shell_grid
from mrepo.workers.references import REFERENCE_PAD

__all__ = ["exposure_spectra"]


def exposure_spectra(model: ItemModel, subsets: list[Subset], geo: Geometry) -> dict[str, Tensor]:
    """Per species the summed NC terms (3, n, b // 2 + 1) float64 per exposure and shell: cross
    Σ Re(X conj(C² P)), model power Σ C⁴ |P|², data power Σ |X|² (see module docstring); no gradients."""
    n = model.n
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        for sub in subsets:
            if len(sub.index) == 0:
                continue
            rot = geo.rotations[sub.index]
            t = out.setdefault(sub.species, torch.zeros(3, n, sub.box // 2 + 1, dtype=torch.float64,
                                                        device=sub.volume_ft.device))
            for st, ft in zip(sub.groups, sub.patches(False)):
                g = st.group
                x, ctf2 = _images(model, st, geo, sub.index, False, ft)  # X
                ref = extract_slices(sub.volume_ft, rot[:, g.exposures], sub.box, REFERENCE_PAD)
                if g.size < sub.box:
                    ref = fourier_crop(ref, g.size)
                c2 = ctf2.clamp_min(0)  # the band-limiting kernel dips below 0 near DC
                shells, w, ns = _shell_grid(g.size, x.device, torch.float32)
                parts = (
                    (x.real * ref.real + x.imag * ref.imag) * (c2 * w),
                    (ref.real * ref.real + ref.imag * ref.imag) * (c2 * c2 * w),
                    (x.real * x.real + x.imag * x.imag) * w,
                )
                for j, v in enumerate(parts):
                    t[j, g.exposures, :ns] += shell_sum(v, shells, ns).sum(0).double()
    return out
