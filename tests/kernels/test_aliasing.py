"""Aliasing-free premultiplication against a brute-force reference at a much larger box."""

import math

import pytest
import torch

from mrepo.kernels.aliasing import (
    aliasing_free_box_size,
    crop_center,
    ctf_phase_rate,
    ctf_squared_band_limited,
    next_fft_size,
    premultiply_ctf,
)
from mrepo.kernels.ctf import ctf_2d, ctf_phase, electron_wavelength, frequency_grid_2d

APIX, KV, CS, Q = 2.0, 300.0, 2.7, 0.07
DEFOCUS = 50000.0  # 5 µm underfocus
RES = 6.0  # Å
BIG, OUT = 1024, 64


def _ctf(box: int, defocus: float = DEFOCUS) -> torch.Tensor:
    return ctf_2d(
        (box, box),
        APIX,
        defocus_u=defocus,
        defocus_v=defocus * 0.98,
        astigmatism_angle=0.4,
        voltage_kv=KV,
        cs_mm=CS,
        amplitude_contrast=Q,
        dtype=torch.float64,
    )


def _lowpass(img: torch.Tensor, res: float) -> torch.Tensor:
    n = img.shape[-1]
    k = frequency_grid_2d((n, n), APIX, dtype=torch.float64).norm(dim=-1)
    return torch.fft.irfft2(torch.fft.rfft2(img) * (k <= 1.0 / res), s=(n, n))


def _object(box: int) -> torch.Tensor:
    """Smooth blobs (sigma 3 px) within ~15 px of the centre box // 2."""
    y, x = torch.meshgrid(torch.arange(box, dtype=torch.float64), torch.arange(box, dtype=torch.float64), indexing="ij")
    c = box // 2
    obj = torch.zeros(box, box, dtype=torch.float64)
    for dx, dy, a in [(0, 0, 1.0), (9, -4, 0.7), (-7, 10, -0.5), (3, 12, 0.8)]:
        obj += a * torch.exp(-((x - c - dx) ** 2 + (y - c - dy) ** 2) / (2 * 3.0**2))
    return obj


def test_box_size_formula_and_fft_friendly():
    m = aliasing_free_box_size(APIX, RES, DEFOCUS, KV, CS)
    lam = electron_wavelength(KV)
    k = 1.0 / RES
    rate = 2 * math.pi * lam * DEFOCUS * k - 2 * math.pi * CS * 1e7 * lam**3 * k**3  # monotonic here
    expected = math.ceil(math.sqrt(2) * rate / (math.pi * APIX))
    assert m >= expected and m % 2 == 0 and m == next_fft_size(expected)
    assert next_fft_size(expected) - expected < 0.1 * expected
    # at that box the phase changes by < pi per Fourier pixel along the diagonal, up to the resolution
    g = ctf_phase(
        frequency_grid_2d((m, m), APIX, rfft=False, dtype=torch.float64),
        defocus_u=DEFOCUS,
        defocus_v=DEFOCUS,
        astigmatism_angle=0.0,
        voltage_kv=KV,
        cs_mm=CS,
        amplitude_contrast=Q,
    )
    kk = frequency_grid_2d((m, m), APIX, rfft=False, dtype=torch.float64).norm(dim=-1)
    inside = (kk[: m // 2, : m // 2] <= k)[:-1, :-1]
    diag = (g[1 : m // 2, 1 : m // 2] - g[: m // 2 - 1, : m // 2 - 1]).abs()
    assert diag[inside].max() < math.pi
    assert aliasing_free_box_size(APIX, RES, DEFOCUS, KV, CS, min_box=400) == 400
    # non-monotonic rate (low defocus, high Cs): the maximum lies inside the range, not at k_max
    lam2cs = 6.0e7 * lam**2
    k_peak = math.sqrt(2000.0 / (3 * lam2cs))  # d^2 gamma / dk^2 = 0
    peak = 2 * math.pi * lam * (2000.0 * k_peak - lam2cs * k_peak**3)
    at_end = abs(ctf_phase_rate(torch.tensor(0.3, dtype=torch.float64), 2000.0, 300.0, 6.0).item())
    assert peak > 5 * at_end
    m_low = aliasing_free_box_size(1.0, 1 / 0.3, 2000.0, 300.0, 6.0)
    assert m_low == next_fft_size(math.ceil(math.sqrt(2) * peak / math.pi - 1e-6))
    with pytest.raises(ValueError, match="Nyquist"):
        aliasing_free_box_size(APIX, 3.0, DEFOCUS, KV, CS)


def test_premultiplied_patch_matches_brute_force_and_naive_is_worse():
    torch.set_num_threads(1)
    obj = _object(BIG)
    image = torch.fft.irfft2(torch.fft.rfft2(obj) * _ctf(BIG), s=(BIG, BIG))  # delocalized data
    reference = _lowpass(crop_center(torch.fft.irfft2(torch.fft.rfft2(image) * _ctf(BIG), s=(BIG, BIG)), OUT), RES)
    m = aliasing_free_box_size(APIX, RES, DEFOCUS * 1.02, KV, CS, min_box=2 * 40)
    ours = _lowpass(premultiply_ctf(crop_center(image, m), _ctf(m), OUT), RES)
    naive = _lowpass(premultiply_ctf(crop_center(image, OUT), _ctf(OUT), OUT), RES)
    err_ours = ((ours - reference).norm() / reference.norm()).item()
    err_naive = ((naive - reference).norm() / reference.norm()).item()
    assert err_ours < 0.05
    assert err_naive > 5 * err_ours and err_naive > 0.2
    # fourier output is the rfft2 of the crop
    f = premultiply_ctf(crop_center(image, m), _ctf(m), OUT, fourier=True)
    assert f.shape == (OUT, OUT // 2 + 1)


def test_band_limited_ctf2_matches_brute_force_and_models_the_data():
    m = aliasing_free_box_size(APIX, RES, DEFOCUS * 1.02, KV, CS)
    ref = ctf_squared_band_limited(_ctf(BIG), OUT)
    ours = ctf_squared_band_limited(_ctf(m), OUT)
    naive = _ctf(OUT) ** 2
    k = frequency_grid_2d((OUT, OUT), APIX, dtype=torch.float64).norm(dim=-1)
    band = k <= 1.0 / RES
    rms_ours = (ours - ref)[band].pow(2).mean().sqrt().item()
    rms_naive = (naive - ref)[band].pow(2).mean().sqrt().item()
    assert rms_ours < 0.02 and rms_naive > 0.2
    assert (ours - ref)[band].abs().max().item() < 0.05
    high = band & (k > 0.8 / RES)  # oscillations unresolved at the small box: band-limited CTF^2 ~ 0.5
    assert abs(ref[high].mean().item() - 0.5) < 0.05 and ref[high].std().item() < 0.1
    # image-formation model FT(premultiplied crop) ~ CTF^2_bl * FT(object): the approximation (crop of a
    # convolution vs product of crops) is as good with our M-box model as with the brute-force one, and
    # clearly better than with the aliased small-box CTF^2
    obj = _object(BIG)
    image = torch.fft.irfft2(torch.fft.rfft2(obj) * _ctf(BIG), s=(BIG, BIG))
    data = premultiply_ctf(crop_center(image, m), _ctf(m), OUT, fourier=True)
    obj_ft = torch.fft.rfft2(crop_center(obj, OUT))

    def rel(model):
        return ((data - model * obj_ft)[band].abs().norm() / data[band].abs().norm()).item()

    assert abs(rel(ours) - rel(ref)) < 0.01
    assert rel(naive) > 1.1 * rel(ours)


def test_bad_input():
    with pytest.raises(ValueError, match="ctf_big"):
        premultiply_ctf(torch.zeros(16, 16), torch.zeros(16, 16), 8)
    with pytest.raises(ValueError, match="crop box"):
        crop_center(torch.zeros(8, 8), 10)


@pytest.mark.parametrize("m", [8, 10, 16, 18])
def test_band_limit_filter_crops_the_centred_kernel(m):
    """The corner copy equals the definition: ifftshift(crop_center(fftshift(kernel))), bit for bit; the
    whole box (no crop, no FFTs) equals it to rounding, including the kx = 0 and Nyquist columns that
    irfft2 symmetrises (a random filter is not even)."""
    from mrepo.kernels.aliasing import band_limit_filter

    filt = torch.randn(2, m, m // 2 + 1, generator=torch.Generator().manual_seed(m), dtype=torch.float64)
    kernel = torch.fft.fftshift(torch.fft.irfft2(filt, s=(m, m)), dim=(-2, -1))
    for out in range(1, m + 1):
        small = torch.fft.ifftshift(crop_center(kernel, out), dim=(-2, -1))
        if out < m:
            assert torch.equal(band_limit_filter(filt, out), torch.fft.rfft2(small).real), out
        else:
            whole = band_limit_filter(filt, out)
            torch.testing.assert_close(whole, torch.fft.rfft2(small).real, rtol=0, atol=1e-13)
            assert not torch.allclose(whole, filt)  # the edge columns were symmetrised, as by the FFTs
    with pytest.raises(ValueError):
        band_limit_filter(filt, m + 2)
