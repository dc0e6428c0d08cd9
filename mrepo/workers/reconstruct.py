"""Species reconstruction from reduced half-set sums: half-maps, masked FSC, resolution,
filtered map (M paper, Methods: Map reconstruction).

Input sums use the centred half-transform layout of :mod:`mrepo.kernels.gridding`
(:class:`mrepo.workers.api.HalfSums`); maps are (box, box, box) float32 (z, y, x);
FSC shells 0 .. box // 2 on the ``rfftn`` grid of :mod:`mrepo.kernels.fsc`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mrepo.kernels.fourier_slice import fold_into, mirror_planes, reconstruct_standard
from mrepo.kernels.fsc import fsc, resolution_at, shell_indices
from mrepo.kernels.fsc import shell_filter as kernel_shell_filter
from mrepo.store import InvalidInput, array_ref
from mrepo.store.heap import release_free_heap
from mrepo.workers.api import FIXED_POINT_BITS, HalfSums

__all__ = ["Reconstruction", "reconstruct_species", "filter_map", "fsc_weights", "shell_filter", "ReconstructionError",
           "ReconstructionCheck", "check_reconstruction", "low_band_correlation", "species_average"]

#: a new map whose band-limited correlation with its reference is below this anti-correlates with it
ANTI_CORRELATION = -0.1
#: half-maps whose mean-removed band-limited correlation is below this share no structure
SHARED_STRUCTURE = 0.1


@dataclass
class Reconstruction:
    """Half-maps (box³ float32), masked FSC (box // 2 + 1,), resolution at 0.143 (Å), filtered map,
    and the FSC without mask (shown next to the masked one; not used for the resolution)."""

    half1: np.ndarray
    half2: np.ndarray
    fsc: np.ndarray
    resolution: float
    filtered: np.ndarray
    unmasked_fsc: np.ndarray | None = None


def shell_filter(volume: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Multiply ``volume``'s Fourier transform by ``weights`` per shell (shells beyond the last use the last)."""
    return kernel_shell_filter(torch.from_numpy(np.asarray(volume, np.float64)),
                               torch.from_numpy(np.asarray(weights, np.float64))).numpy().astype(np.float32)


def fsc_weights(fsc_curve: np.ndarray) -> np.ndarray:
    """Per-shell weights sqrt(2 FSC / (1 + FSC)) (FSC clipped to [0, 1]; shell 0 kept at 1)."""
    c = np.clip(np.asarray(fsc_curve, np.float64), 0.0, 1.0)
    w = np.sqrt(2 * c / (1 + c))
    w[0] = 1.0
    return w


def filter_map(volume: np.ndarray, fsc_curve: np.ndarray, pixel_size: float, resolution: float) -> np.ndarray:
    """FSC-weighted (:func:`fsc_weights`) low-pass of ``volume`` with zero beyond ``resolution`` Å."""
    w = fsc_weights(fsc_curve)
    freq = np.arange(len(w), dtype=np.float64) / (volume.shape[0] * pixel_size)
    w = np.where(freq <= 1 / resolution, w, 0.0)
    w[0] = 1.0
    return shell_filter(volume, w)


def _reconstruct_half(sums: HalfSums, h: int, box: int, pad: int, wiener_fraction: float) -> torch.Tensor:
    """Half-map ``h`` (box³ float32), bit-identical to :func:`~mrepo.kernels.fourier_slice.reconstruct` of
    ``sums.to_float()``'s half ``h``, but folded from the int64 sums straight into the rfftn layout, one half
    at a time: full-size arrays are the folded data and weight of one half (box 256 at pad 2: 1 + 0.5 GiB)
    and the inverse transform's, not float copies of both halves' sums."""
    scale = 2.0**-FIXED_POINT_BITS
    weight = torch.from_numpy(sums.weight[h])
    positive = weight[weight > 0].to(torch.float64).mul_(scale)  # the same values, in the same order, as to_float's
    c = wiener_fraction * float(positive.mean()) if positive.numel() else 0.0
    del positive
    big = pad * box
    shape = (big, big, big // 2 + 1)
    f = torch.zeros(shape, dtype=torch.complex128)
    parts = torch.view_as_real(f)
    for k in range(2):  # real, imaginary
        fold_into(parts[..., k], torch.from_numpy(sums.data[h, k]), big, scale)
    # the folded weight is passed without a name here, so reconstruct_standard frees it before its inverse FFT
    return reconstruct_standard(mirror_planes(f, big),
                                mirror_planes(fold_into(torch.zeros(shape, dtype=torch.float64), weight, big, scale), big),
                                box, pad, wiener_constant=c).float()


def reconstruct_species(sums: HalfSums, box: int, pixel_size: float, mask: np.ndarray, *, pad: int = 2,
                        wiener_fraction: float = 1e-3) -> Reconstruction:
    """Half-maps from the sums (data / (weight + c), c = ``wiener_fraction`` x mean weight), masked FSC,
    resolution at FSC 0.143 and the FSC-weighted average map."""
    release_free_heap()  # the refinement's freed heap pages, before the full-size grids of the halves
    halves = [_reconstruct_half(sums, h, box, pad, wiener_fraction) for h in range(2)]
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32))
    curve = fsc(halves[0], halves[1], m).double().numpy()
    res = resolution_at(curve, pixel_size, box)
    h1, h2 = halves[0].numpy(), halves[1].numpy()
    unmasked = fsc(halves[0], halves[1]).double().numpy()
    return Reconstruction(h1, h2, curve, res, filter_map((h1 + h2) / 2, curve, pixel_size, res), unmasked)


def species_average(objects, species) -> np.ndarray:  # noqa: ANN001 - ObjectStore, Species
    """The average of ``species``' stored half-maps (box³ float64): the reference a new map is checked against."""
    return (np.asarray(objects.get_array(species.half1), np.float64)
            + np.asarray(objects.get_array(species.half2), np.float64)) / 2


def species_metadata(metadata: dict, rec: Reconstruction, put) -> dict:  # noqa: ANN001 - put: array -> hash
    """A species' metadata after reconstruction ``rec``: the filtered map and the further FSC curves
    (``fsc_curves``: {"unmasked": ...}) as array references; everything else kept."""
    out = {**metadata, "filtered": array_ref(put(rec.filtered))}
    if rec.unmasked_fsc is not None:
        out["fsc_curves"] = {**metadata.get("fsc_curves", {}), "unmasked": array_ref(put(rec.unmasked_fsc))}
    return out


class ReconstructionError(InvalidInput):
    """A reconstruction that must not be committed (anti-correlated with its reference, or half-maps
    that agree only through a shared artefact); exit code 2 like other bad input."""


@dataclass(frozen=True)
class ReconstructionCheck:
    """Sanity figures of a reconstruction, all over Fourier shells 1 .. ``shells`` (DC excluded) of the
    masked maps after removing their masked means: ``half_correlation`` between the half-maps,
    ``reference_correlation`` of their average with the reference (None without a reference),
    ``mean_fraction`` = mean² / (mean² + variance) of the average map inside the mask, ``fsc_low`` the
    masked FSC (mean kept) averaged over the same shells."""

    shells: int
    half_correlation: float
    reference_correlation: float | None
    mean_fraction: float
    fsc_low: float

    def to_json(self) -> dict[str, float | int | None]:
        return {"shells": self.shells, "half_correlation": round(self.half_correlation, 4),
                "reference_correlation": None if self.reference_correlation is None
                else round(self.reference_correlation, 4),
                "mean_fraction": round(self.mean_fraction, 4), "fsc_low": round(self.fsc_low, 4)}


def _centred(volume: np.ndarray, mask: np.ndarray) -> torch.Tensor:
    """(volume - its mask-weighted mean) * mask, float64."""
    v = torch.from_numpy(np.asarray(volume, dtype=np.float64))
    m = torch.from_numpy(np.asarray(mask, dtype=np.float64))
    mean = (v * m).sum() / m.sum().clamp_min(1e-12)
    return (v - mean) * m


def _band_correlation(a: torch.Tensor, b: torch.Tensor, shells: int) -> float:
    box = a.shape[0]
    idx = shell_indices((box, box, box))
    band = (idx >= 1) & (idx <= shells)
    fa, fb = torch.fft.rfftn(a)[band], torch.fft.rfftn(b)[band]
    # rfft half-grid: planes kx = 0 and Nyquist appear once, the rest stand for two — weights cancel in the ratio
    num = (fa * fb.conj()).real.sum()
    den = torch.sqrt((fa.abs() ** 2).sum() * (fb.abs() ** 2).sum())
    return float(num / den) if float(den) > 0 else 0.0


def _low_band(rec: Reconstruction, pixel_size: float, low_resolution: float) -> int:
    """Shells 1 .. max(2, box·pixel / max(resolution, ``low_resolution`` Å)): low frequencies, where a
    correct map must agree with its reference and a wrong contrast sign shows as r < 0."""
    box = rec.half1.shape[0]
    res = rec.resolution if np.isfinite(rec.resolution) else low_resolution
    return int(max(2, min(box // 2, np.floor(box * pixel_size / max(res, low_resolution)))))


def low_band_correlation(rec: Reconstruction, mask: np.ndarray, pixel_size: float, reference: np.ndarray, *,
                         low_resolution: float = 20.0) -> tuple[float, int]:
    """(r, shells): correlation of the average map with ``reference`` over the low band, both masked
    with their masked means removed."""
    shells = _low_band(rec, pixel_size, low_resolution)
    m = np.asarray(mask, dtype=np.float64)
    avg = (np.asarray(rec.half1, np.float64) + np.asarray(rec.half2, np.float64)) / 2
    return _band_correlation(_centred(avg, m), _centred(reference, m), shells), shells


def check_reconstruction(rec: Reconstruction, mask: np.ndarray, pixel_size: float, *, name: str,
                         reference: np.ndarray | None = None, low_resolution: float = 20.0) -> ReconstructionCheck:
    """Refuse a reconstruction that anti-correlates with ``reference`` (its species' previous map) or whose
    half-maps agree only through their mean (raises :class:`ReconstructionError`); returns the figures
    (band: :func:`low_band_correlation`)."""
    box = rec.half1.shape[0]
    shells = _low_band(rec, pixel_size, low_resolution)
    m = np.asarray(mask, dtype=np.float64)
    h1, h2 = _centred(rec.half1, m), _centred(rec.half2, m)
    half_corr = _band_correlation(h1, h2, shells)
    avg = (np.asarray(rec.half1, np.float64) + np.asarray(rec.half2, np.float64)) / 2
    weight = m / max(m.sum(), 1e-12)
    mean = float((avg * weight).sum())
    var = float((((avg - mean) ** 2) * weight).sum())
    mean_fraction = mean * mean / (mean * mean + var) if mean * mean + var > 0 else 0.0
    fsc_low = float(np.mean(rec.fsc[1:shells + 1]))
    ref_corr = None
    if reference is not None and float(np.std(reference)) > 0:
        ref_corr = low_band_correlation(rec, mask, pixel_size, reference, low_resolution=low_resolution)[0]
    check = ReconstructionCheck(shells, half_corr, ref_corr, mean_fraction, fsc_low)
    band = f"shells 1-{shells}, to {box * pixel_size / shells:.1f} Å"
    if half_corr < SHARED_STRUCTURE and fsc_low > 0.5:
        raise ReconstructionError(
            f"species {name!r}: the half-maps agree only through a shared mean/low-frequency artefact (FSC "
            f"{fsc_low:.2f} at low frequency, but {half_corr:.2f} once each map's mean is removed; {band}): "
            "the raw images were not normalised or the particles are not in them; nothing committed")
    if ref_corr is not None and ref_corr < ANTI_CORRELATION:
        raise ReconstructionError(
            f"species {name!r}: the reconstruction anti-correlates with its reference (r = {ref_corr:.2f}, {band}): "
            "the data source's contrast polarity is probably wrong (dark particles read as light or the reverse; "
            "set it with `mrepo source contrast SOURCE dark|light`); nothing committed")
    return check
