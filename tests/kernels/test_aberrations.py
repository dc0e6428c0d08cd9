"""Optics-group aberrations against RELION's definitions (Zernike.cpp, obs_model.cpp, tilt_helper.cpp, ctf.h),
transcribed independently here, and their use when refinement premultiplies particle images."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from mrepo.kernels.aberrations import (
    Aberrations,
    even_index_to_mn,
    insert_beam_tilt,
    odd_index_to_mn,
    zernike_cart,
    zernike_phase,
)
from mrepo.kernels.ctf import electron_wavelength, frequency_grid_2d


def test_index_maps_follow_relion():
    assert [odd_index_to_mn(i) for i in range(6)] == [(-1, 1), (1, 1), (-3, 3), (-1, 3), (1, 3), (3, 3)]
    assert [even_index_to_mn(i) for i in range(9)] == [(0, 0), (-2, 2), (0, 2), (2, 2), (-4, 4), (-2, 4), (0, 4),
                                                        (2, 4), (4, 4)]


def test_zernike_polynomials_match_their_definitions():
    rng = np.random.default_rng(0)
    x, y = (torch.from_numpy(rng.normal(size=50)) for _ in range(2))
    r2 = x * x + y * y
    expected = {(-1, 1): y, (1, 1): x, (-3, 3): 3 * x * x * y - y ** 3, (3, 3): x ** 3 - 3 * x * y * y,
                (-1, 3): (3 * r2 - 2) * y, (1, 3): (3 * r2 - 2) * x, (0, 0): torch.ones_like(x),
                (-2, 2): 2 * x * y, (2, 2): x * x - y * y, (0, 2): 2 * r2 - 1, (0, 4): 6 * r2 * r2 - 6 * r2 + 1}
    for (m, n), want in expected.items():
        torch.testing.assert_close(zernike_cart(m, n, x, y), want, rtol=1e-10, atol=1e-10)


def test_beam_tilt_is_the_coma_phase():
    """insertTilt's coefficients give φ = -2π Cs λ² |k|² (k · tilt) (Cs in Å, tilt in rad)."""
    cs, kv, tx, ty = 2.7, 300.0, 0.4, -0.25
    odd = insert_beam_tilt([], tx, ty, cs, kv)
    k = frequency_grid_2d((32, 32), 1.1, dtype=torch.float64)
    lam = electron_wavelength(kv)
    k2 = (k * k).sum(-1)
    want = -2 * 3.141592654 * cs * 1e7 * lam ** 2 * k2 * (k[..., 0] * tx + k[..., 1] * ty) * 1e-3
    torch.testing.assert_close(zernike_phase(k, odd, odd=True), want, rtol=1e-9, atol=1e-12)


def _relion_ctf(k: np.ndarray, du: float, dv: float, azimuth_deg: float, kv: float, cs_mm: float, q0: float,
                even: list[float], mag: np.ndarray) -> np.ndarray:
    """RELION's CTF::getCTF with an ObservationModel: -sin(γ_R + gammaOffset) at magnified frequencies."""
    kk = k @ mag.T
    x, y = kk[..., 0], kk[..., 1]
    lam = electron_wavelength(kv)
    a = math.radians(azimuth_deg)
    q = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    d = np.diag([-du, -dv])
    amat = q.T @ d @ q
    k1, k2 = math.pi * lam, math.pi / 2 * cs_mm * 1e7 * lam ** 3
    k3 = math.atan(q0 / math.sqrt(1 - q0 * q0))
    u2 = x * x + y * y
    offset = np.zeros_like(x)
    rho, phi = np.sqrt(u2), np.arctan2(y, x)
    for i, c in enumerate(even):
        m, n = even_index_to_mn(i)
        radial = sum((-1) ** j * math.factorial(n - j) / (math.factorial(j) * math.factorial((n + abs(m)) // 2 - j)
                     * math.factorial((n - abs(m)) // 2 - j)) * rho ** (n - 2 * j) for j in range((n - abs(m)) // 2 + 1))
        offset += c * radial * (np.cos(m * phi) if m >= 0 else np.sin(-m * phi))
    gamma = k1 * (amat[0, 0] * x * x + 2 * amat[0, 1] * x * y + amat[1, 1] * y * y) + k2 * u2 * u2 - k3 + offset
    return -np.sin(gamma)


def test_premultiply_applies_relion_optics():
    """Data made with RELION's forward model (CTF with even Zernike and magnification, odd phase e^{iφ}
    incl. beam tilt) and premultiplied by the refinement equal the projection times CTF² exactly."""
    from mrepo.workers.imaging import PatchGroup, premultiply
    from mrepo.workers.item_model import ItemModel

    big, pix, kv, cs, q0 = 32, 1.5, 300.0, 2.7, 0.1
    du, dv, az = 15000.0, 14200.0, 30.0
    imaging = {"beam_tilt": [0.5, -0.3], "odd_zernike": [0.0, 0.0, 40.0, 0.0, 0.0, 25.0],
               "even_zernike": [0.0, 0.0, 0.0, 0.0, 3000.0, 0.0, 0.0, 0.0, -2000.0],
               "mag_matrix": [[1.01, 0.005], [-0.003, 0.99]]}
    ab = Aberrations.from_imaging(imaging, kv, cs)
    none = np.zeros(1)
    model = ItemModel("frames", pix, kv, cs, q0, big, big, 1, none, none, none, np.array([[du, dv, az]]),
                      np.zeros((1, 2)), None, None, None, None, None, 1.0, aberrations=ab)
    rng = np.random.default_rng(1)
    proj = np.fft.rfft2(rng.normal(size=(big, big)))
    k = frequency_grid_2d((big, big), pix, dtype=torch.float64).numpy()
    ctf = _relion_ctf(k, du, dv, az, kv, cs, q0, list(ab.even), np.array(ab.mag))
    odd = zernike_phase(torch.from_numpy(k @ np.array(ab.mag).T), ab.odd, odd=True).numpy()
    data = proj * ctf * np.exp(1j * odd)
    group = PatchGroup(torch.tensor([0]), big, big, pix, 1.0, torch.from_numpy(data)[None, None].to(torch.complex128),
                       torch.zeros(1, 1, 2))
    out = premultiply(model, group, torch.zeros(1, 1, 2, dtype=torch.float64), torch.tensor([[du]]),
                      torch.tensor([[dv]]), torch.tensor([math.radians(az)]))
    want = np.fft.rfft2(np.fft.irfft2(proj * ctf * ctf, s=(big, big)))
    np.testing.assert_allclose(out[0, 0].numpy(), want, rtol=0, atol=2e-3 * np.abs(want).max())
    # without the optics model the same data premultiply to something clearly different
    plain = premultiply(dataclasses.replace(model, aberrations=None), group,
                        torch.zeros(1, 1, 2, dtype=torch.float64), torch.tensor([[du]]), torch.tensor([[dv]]),
                        torch.tensor([math.radians(az)]))
    assert np.abs(plain[0, 0].numpy() - want).max() > 0.05 * np.abs(want).max()
