"""CTF against an independent numpy transcription of RELION's CTF::getCTF."""

import math

import numpy as np
import pytest
import torch

from mrepo.kernels.ctf import (
    ctf_2d,
    ctf_at,
    electron_wavelength,
    exposure_weights,
    exposure_weights_2d,
    frequency_grid_2d,
)


def relion_ctf(kx, ky, du, dv, ang_deg, kv, cs_mm, q0, bfac=0.0, scale=1.0, phase_deg=0.0):
    """RELION ctf.cpp initialise() + ctf.h getCTF(), written out in numpy."""
    lam = 12.2643247 / np.sqrt(kv * 1e3 * (1.0 + kv * 1e3 * 0.978466e-6))
    defocus_average = -(du + dv) * 0.5
    defocus_deviation = -(du - dv) * 0.5
    k1 = np.pi / 2 * 2 * lam
    k2 = np.pi / 2 * cs_mm * 1e7 * lam**3
    k3 = np.sqrt(1 - q0 * q0)
    k4 = -bfac / 4.0
    k5 = np.deg2rad(phase_deg)
    u2 = kx * kx + ky * ky
    ell = np.arctan2(ky, kx) - np.deg2rad(ang_deg)
    deltaf = np.where(u2 > 0, defocus_average + defocus_deviation * np.cos(2 * ell), 0.0)
    arg = k1 * deltaf * u2 + k2 * u2 * u2 - k5
    return scale * -(k3 * np.sin(arg) - q0 * np.cos(arg)) * np.exp(k4 * u2)


def test_wavelength_values():
    assert electron_wavelength(300) == pytest.approx(0.0196875, abs=1e-6)
    assert electron_wavelength(200) == pytest.approx(0.0250793, abs=1e-6)
    with pytest.raises(ValueError, match="voltage"):
        electron_wavelength(0)


def test_frequency_grid_layout():
    g = frequency_grid_2d((6, 8), 2.0, dtype=torch.float64)
    assert g.shape == (6, 5, 2)
    np.testing.assert_allclose(g[0, :, 0].numpy(), np.fft.rfftfreq(8, 2.0))
    np.testing.assert_allclose(g[:, 0, 1].numpy(), np.fft.fftfreq(6, 2.0))
    assert frequency_grid_2d((6, 8), 2.0, rfft=False).shape == (6, 8, 2)


@pytest.mark.parametrize(
    "params",
    [
        dict(du=15000.0, dv=12000.0, ang=30.0, kv=300.0, cs=2.7, q=0.07, b=0.0, ps=0.0),
        dict(du=8000.0, dv=8000.0, ang=0.0, kv=200.0, cs=2.0, q=0.1, b=50.0, ps=0.0),
        dict(du=5000.0, dv=7000.0, ang=-70.0, kv=300.0, cs=0.01, q=0.0, b=-20.0, ps=90.0),
    ],
)
def test_ctf_2d_matches_relion(params):
    p = params
    h, w, apix = 64, 48, 1.1
    ours = ctf_2d(
        (h, w),
        apix,
        defocus_u=p["du"],
        defocus_v=p["dv"],
        astigmatism_angle=math.radians(p["ang"]),
        voltage_kv=p["kv"],
        cs_mm=p["cs"],
        amplitude_contrast=p["q"],
        bfactor=p["b"],
        phase_shift=math.radians(p["ps"]),
        scale=0.8,
        dtype=torch.float64,
    )
    ky = np.fft.fftfreq(h, apix)[:, None]
    kx = np.fft.rfftfreq(w, apix)[None, :]
    ref = relion_ctf(kx, ky, p["du"], p["dv"], p["ang"], p["kv"], p["cs"], p["q"], p["b"], 0.8, p["ps"])
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-9)
    assert ours[0, 0].item() == pytest.approx(
        0.8 * math.sin(math.atan(p["q"] / math.sqrt(1 - p["q"] ** 2)) + math.radians(p["ps"]))
    )


def test_broadcasting_per_image_parameters():
    du = torch.tensor([10000.0, 20000.0, 30000.0])
    out = ctf_2d(
        (16, 16),
        1.0,
        defocus_u=du,
        defocus_v=du * 0.9,
        astigmatism_angle=0.3,
        voltage_kv=300,
        cs_mm=2.7,
        amplitude_contrast=0.07,
    )
    assert out.shape == (3, 16, 9) and out.dtype == torch.float32
    single = ctf_2d(
        (16, 16),
        1.0,
        defocus_u=20000.0,
        defocus_v=18000.0,
        astigmatism_angle=0.3,
        voltage_kv=300,
        cs_mm=2.7,
        amplitude_contrast=0.07,
    )
    assert torch.allclose(out[1], single, atol=1e-5)
    # pointwise: per-point parameters
    f = torch.rand(3, 7, 2, dtype=torch.float64) * 0.3
    pw = ctf_at(
        f,
        defocus_u=du.double()[:, None],
        defocus_v=du.double()[:, None],
        astigmatism_angle=0.0,
        voltage_kv=300,
        cs_mm=2.7,
        amplitude_contrast=0.07,
        pointwise=True,
    )
    assert pw.shape == (3, 7)
    ref = relion_ctf(
        f[..., 0].numpy(), f[..., 1].numpy(), du.numpy()[:, None], du.numpy()[:, None], 0.0, 300, 2.7, 0.07
    )
    np.testing.assert_allclose(pw.numpy(), ref, atol=1e-9)


def _ctf_of(du, dv, ang, ps, f):
    return ctf_at(
        f,
        defocus_u=du,
        defocus_v=dv,
        astigmatism_angle=ang,
        phase_shift=ps,
        voltage_kv=300,
        cs_mm=2.7,
        amplitude_contrast=0.07,
        bfactor=10.0,
    )


@pytest.mark.parametrize("equal", [False, True])
def test_ctf_gradcheck(equal):
    f = frequency_grid_2d((8, 8), 3.0, dtype=torch.float64)  # includes k = 0
    du = torch.tensor([12000.0, 9000.0], dtype=torch.float64, requires_grad=True)
    dv = du.detach().clone() if equal else torch.tensor([11000.0, 9500.0], dtype=torch.float64)
    dv.requires_grad_(True)
    ang = torch.tensor([0.4, -1.0], dtype=torch.float64, requires_grad=True)
    ps = torch.tensor([0.1, 0.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c, d: _ctf_of(a, b, c, d, f), (du, dv, ang, ps))
    out = _ctf_of(du, dv, ang, ps, f).sum()
    grads = torch.autograd.grad(out, (du, dv, ang, ps))
    assert all(torch.isfinite(g).all() for g in grads)


def test_ctf_gradient_wrt_frequencies_finite_at_zero():
    f = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    y = _ctf_of(12000.0, 11000.0, 0.3, 0.0, f).sum()
    (g,) = torch.autograd.grad(y, f)
    assert torch.isfinite(g).all()


def test_ctf_bad_input():
    with pytest.raises(ValueError, match="frequencies"):
        _ctf_of(1.0, 1.0, 0.0, 0.0, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="amplitude_contrast"):
        ctf_at(
            torch.zeros(2, 2),
            defocus_u=1.0,
            defocus_v=1.0,
            astigmatism_angle=0.0,
            voltage_kv=300,
            cs_mm=2.7,
            amplitude_contrast=1.5,
        )


def test_exposure_weights():
    f = frequency_grid_2d((16, 16), 1.5, dtype=torch.float64)
    k2 = (f**2).sum(-1)
    exposure = torch.tensor([0.0, 3.0, 40.0], dtype=torch.float64)
    tilts = torch.tensor([0.0, math.radians(30), math.radians(-60)], dtype=torch.float64)
    w = exposure_weights(f, exposure, tilt_angles=tilts)
    assert w.shape == (3, 16, 9)
    ref = np.exp(-exposure.numpy()[:, None, None] * k2.numpy()) * np.cos(tilts.numpy())[:, None, None]
    np.testing.assert_allclose(w.numpy(), ref, atol=1e-12)
    # M: weight falls to 0.25 at f_max = sqrt(ln 4 / d)
    d = 20.0
    fmax = math.sqrt(math.log(4) / d)
    assert exposure_weights(torch.tensor([fmax, 0.0]), d).item() == pytest.approx(0.25)
    w2 = exposure_weights_2d((16, 16), 1.5, exposure, tilt_angles=tilts, dtype=torch.float64)
    assert torch.allclose(w2, w)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_device_and_dtype_follow_inputs(device):
    du = torch.tensor([15000.0, 9000.0], device=device)
    out = ctf_2d(
        (32, 32),
        1.2,
        defocus_u=du,
        defocus_v=du,
        astigmatism_angle=0.2,
        voltage_kv=300,
        cs_mm=2.7,
        amplitude_contrast=0.07,
    )
    assert out.device.type == device and out.dtype == torch.float32
    ref = ctf_2d(
        (32, 32),
        1.2,
        defocus_u=du.cpu().double(),
        defocus_v=du.cpu().double(),
        astigmatism_angle=0.2,
        voltage_kv=300,
        cs_mm=2.7,
        amplitude_contrast=0.07,
        dtype=torch.float64,
    )
    assert (out.cpu().double() - ref).abs().max() < 1e-4
