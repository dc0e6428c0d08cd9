"""Fourier crop/pad against band-limited analytic images; M's exposure cropping."""

import math

import numpy as np
import pytest
import torch

from mrepo.kernels.fourier_crop import (
    crop_size_for_resolution,
    crop_to_exposure,
    crop_to_resolution,
    exposure_resolution,
    fourier_crop,
    fourier_pad,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def cosines(n, terms, device="cpu"):
    """Real image sum of a cos(2π (fx x + fy y) / n + φ) with integer (fx, fy) cycles per box."""
    y, x = torch.meshgrid(
        torch.arange(n, dtype=torch.float64, device=device),
        torch.arange(n, dtype=torch.float64, device=device),
        indexing="ij",
    )
    out = torch.full((n, n), 0.7, dtype=torch.float64, device=device)
    for a, fx, fy, ph in terms:
        out = out + a * torch.cos(2 * math.pi * (fx * x + fy * y) / n + ph)
    return out


TERMS = [(1.0, 2, 3, 0.3), (0.5, -5, 1, 1.1), (0.25, 4, -6, 2.0)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n,m", [(64, 32), (64, 20), (63, 21)])
def test_crop_samples_band_limited_image_on_coarse_grid(device, n, m):
    # fine image of an analytic band-limited function; the cropped transform must be the
    # same function sampled on the coarse grid covering the same field of view
    fine = cosines(n, TERMS, device)
    coarse = torch.fft.irfft2(fourier_crop(torch.fft.rfft2(fine), m), s=(m, m))
    ref = cosines(m, TERMS, device)  # same cycles per box
    torch.testing.assert_close(coarse, ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n,m", [(16, 32), (16, 48), (15, 45)])
def test_pad_is_exact_interpolation(device, n, m):
    img = torch.randn(3, n, n, dtype=torch.float64, device=device)
    up = torch.fft.irfft2(fourier_pad(torch.fft.rfft2(img), m), s=(m, m))
    step = m // n
    torch.testing.assert_close(up[:, ::step, ::step], img)
    back = fourier_crop(fourier_pad(torch.fft.rfft2(img), m), n)
    torch.testing.assert_close(back, torch.fft.rfft2(img))


def test_crop_preserves_mean_and_low_frequencies():
    img = torch.randn(2, 40, 40, dtype=torch.float64)
    ft = torch.fft.rfft2(img)
    small = fourier_crop(ft, 16)
    torch.testing.assert_close(torch.fft.irfft2(small, s=(16, 16)).mean((-2, -1)), img.mean((-2, -1)))
    # frequencies strictly below the new Nyquist are the original ones, rescaled
    torch.testing.assert_close(small[..., :7, :8], ft[..., :7, :8] * (16 / 40) ** 2)
    torch.testing.assert_close(small[..., -7:, :8], ft[..., -7:, :8] * (16 / 40) ** 2)


def test_crop_to_resolution_and_exposure():
    ft = torch.fft.rfft2(torch.randn(4, 128, 128))
    cropped, px = crop_to_resolution(ft, 1.0, 4.0)  # Nyquist 1/2 Å⁻¹ -> 1/4 Å⁻¹
    assert cropped.shape == (4, 64, 33) and px == pytest.approx(2.0)
    assert crop_size_for_resolution(128, 1.0, 1.5) == 128  # never grows
    assert crop_size_for_resolution(100, 1.1, 3.0) == 74  # 2·ceil(100·1.1/3)
    # M: f_max = sqrt(ln 4 / exposure) at 4 Å² per e⁻/Å²
    assert exposure_resolution(10.0) == pytest.approx(1 / math.sqrt(math.log(4) / 10.0))
    res = exposure_resolution(torch.tensor([1.0, 40.0]))
    np.testing.assert_allclose(res.numpy(), [1 / math.sqrt(math.log(4)), 1 / math.sqrt(math.log(4) / 40)])
    late, px_late = crop_to_exposure(ft, 1.0, refine_resolution=3.0, exposure=40.0)
    early, px_early = crop_to_exposure(ft, 1.0, refine_resolution=3.0, exposure=1.0)
    assert late.shape[-2] < early.shape[-2] and px_late > px_early
    assert 1 / (2 * px_late) >= 1 / float(exposure_resolution(40.0)) - 1e-9


def test_bad_inputs_raise():
    ft = torch.zeros(8, 5, dtype=torch.complex64)
    with pytest.raises(ValueError, match="new_size"):
        fourier_crop(ft, 9)
    with pytest.raises(ValueError, match="new_size"):
        fourier_pad(ft, 4)
    with pytest.raises(ValueError, match="square"):
        fourier_crop(torch.zeros(8, 8, dtype=torch.complex64), 4)
    with pytest.raises(ValueError, match="positive"):
        crop_to_resolution(ft, 1.0, 0.0)
