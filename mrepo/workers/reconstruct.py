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

from mrepo.kernels.fourier_slice import reconstruct
from mrepo.kernels.fsc import fsc, num_shells, resolution_at, shell_indices
from mrepo.workers.api import HalfSums

__all__ = ["Reconstruction", "reconstruct_species", "filter_map"]


@dataclass
class Reconstruction:
    """Half-maps (box³ float32), masked FSC (box // 2 + 1,), resolution at 0.143 (Å), filtered map."""

    half1: np.ndarray
    half2: np.ndarray
    fsc: np.ndarray
    resolution: float
    filtered: np.ndarray


def filter_map(volume: np.ndarray, fsc_curve: np.ndarray, pixel_size: float, resolution: float) -> np.ndarray:
    """FSC-weighted (sqrt(2 FSC / (1 + FSC))) low-pass of ``volume`` with zero beyond ``resolution`` Å."""
    box = volume.shape[0]
    ft = torch.fft.rfftn(torch.from_numpy(volume.astype(np.float64)))
    shells = shell_indices((box, box, box)).clamp(max=num_shells((box, box, box)) - 1)
    c = torch.from_numpy(np.clip(fsc_curve, 0, 1))
    w = torch.sqrt(2 * c / (1 + c))
    freq = torch.arange(len(c), dtype=torch.float64) / (box * pixel_size)
    w = torch.where(freq <= 1 / resolution, w, torch.zeros_like(w))
    w[0] = 1.0
    return torch.fft.irfftn(ft * w[shells], s=(box, box, box)).numpy().astype(np.float32)


def reconstruct_species(sums: HalfSums, box: int, pixel_size: float, mask: np.ndarray, *, pad: int = 2,
                        wiener_fraction: float = 1e-3) -> Reconstruction:
    """Half-maps from the sums (data / (weight + c), c = ``wiener_fraction`` x mean weight), masked FSC,
    resolution at FSC 0.143 and the FSC-weighted average map."""
    data, weight = sums.to_float()
    halves = []
    for h in range(2):
        w = torch.from_numpy(weight[h])
        positive = w[w > 0]
        c = wiener_fraction * float(positive.mean()) if positive.numel() else 0.0
        halves.append(reconstruct(torch.from_numpy(data[h]), w, box, pad, wiener_constant=c).float())
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32))
    curve = fsc(halves[0], halves[1], m).double().numpy()
    res = resolution_at(curve, pixel_size, box)
    h1, h2 = halves[0].numpy(), halves[1].numpy()
    return Reconstruction(h1, h2, curve, res, filter_map((h1 + h2) / 2, curve, pixel_size, res))
