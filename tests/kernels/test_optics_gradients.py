"""Float64 gradient checks of the optics parametrisations (issue 15): Zernike basis, beam tilt,
magnification, Cs, phase shift, and the refinement's optics offsets -> CTF / odd phase."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.autograd import gradcheck

from mrepo.kernels.aberrations import (
    Aberrations,
    beam_tilt_odd_coefficients,
    insert_beam_tilt,
    zernike_basis,
    zernike_phase,
)
from mrepo.kernels.ctf import ctf_at, frequency_grid_2d
from mrepo.workers.item_model import ItemModel
from mrepo.workers.optics import block_magnification, odd_phase, optics_ctf, optics_state, updated_optics

_F = torch.float64


def _model(**kw) -> ItemModel:
    none = np.zeros(2)
    base = dict(kind="frames", pixel_size=1.2, voltage=300.0, cs=2.7, amplitude_contrast=0.07, width=64, height=64,
                n=2, dose=none, pre_exposure=none, time=none, ctf=np.array([[15000.0, 14000.0, 20.0]] * 2),
                global_shifts=np.zeros((2, 2)), stage_angles=None, stage_corrections=None, image_warp=None,
                weights=None, volume_size=None, hand=1.0)
    base.update(kw)
    return ItemModel(**base)


def test_zernike_basis_is_relions_ordering_with_finite_gradients_at_the_origin():
    k = frequency_grid_2d((12, 12), 1.5, dtype=_F)
    coeffs = [0.3, -0.2, 11.0, 4.0, -3.0, 7.0]
    torch.testing.assert_close(zernike_basis(k, 6, odd=True) @ torch.tensor(coeffs, dtype=_F),
                               zernike_phase(k, coeffs, odd=True))
    ev = [0.0, 1.0, 2.0, -1.5, 30.0, -20.0, 10.0, 5.0, -8.0]
    torch.testing.assert_close(zernike_basis(k, 9, odd=False) @ torch.tensor(ev, dtype=_F),
                               zernike_phase(k, ev, odd=False), rtol=1e-9, atol=1e-9)
    kk = k.clone().requires_grad_(True)
    zernike_basis(kk, 9, odd=False).sum().backward()
    assert torch.isfinite(kk.grad).all()


def test_gradcheck_zernike_basis_in_frequencies_and_coefficients():
    rng = np.random.default_rng(0)
    k = torch.from_numpy(rng.normal(scale=0.2, size=(7, 2))).requires_grad_(True)
    for odd, n in ((True, 6), (False, 9)):
        c = torch.from_numpy(rng.normal(size=n)).requires_grad_(True)
        assert gradcheck(lambda kk, cc, odd=odd, n=n: zernike_basis(kk, n, odd=odd) @ cc, (k, c))


def test_beam_tilt_coefficients_match_insert_tilt_and_gradcheck():
    t = torch.tensor([0.4, -0.25], dtype=_F, requires_grad=True)
    torch.testing.assert_close(beam_tilt_odd_coefficients(t, 2.7, 300.0).detach(),
                               torch.tensor(insert_beam_tilt([], 0.4, -0.25, 2.7, 300.0), dtype=_F))
    assert gradcheck(lambda x: beam_tilt_odd_coefficients(x, 2.7, 300.0), (t,))


def test_optics_ctf_without_optics_is_the_plain_ctf_and_cs_change_equals_a_new_cs():
    model = _model()
    k = frequency_grid_2d((16, 16), 1.2, dtype=_F)
    du, dv, ang = torch.tensor(15000.0, dtype=_F), torch.tensor(14000.0, dtype=_F), torch.tensor(0.3, dtype=_F)
    plain = ctf_at(k, defocus_u=du, defocus_v=dv, astigmatism_angle=ang, voltage_kv=300.0, cs_mm=2.7,
                   amplitude_contrast=0.07)
    torch.testing.assert_close(optics_ctf(k, model, {}, du, dv, ang), plain)
    other = ctf_at(k, defocus_u=du, defocus_v=dv, astigmatism_angle=ang, voltage_kv=300.0, cs_mm=2.9,
                   amplitude_contrast=0.07)
    torch.testing.assert_close(optics_ctf(k, model, {"cs": torch.tensor(0.2, dtype=_F)}, du, dv, ang), other)
    # a magnification M evaluates the CTF at M k
    mag = torch.tensor([[1.01, 0.004], [-0.002, 0.995]], dtype=_F)
    want = ctf_at(k @ mag.T, defocus_u=du, defocus_v=dv, astigmatism_angle=ang, voltage_kv=300.0, cs_mm=2.7,
                  amplitude_contrast=0.07)
    torch.testing.assert_close(optics_ctf(k, model, {"mag": mag}, du, dv, ang), want)
    # the phase shift adds to γ
    ps = torch.tensor(math.pi / 2, dtype=_F)
    want = ctf_at(k, defocus_u=du, defocus_v=dv, astigmatism_angle=ang, voltage_kv=300.0, cs_mm=2.7,
                  amplitude_contrast=0.07, phase_shift=ps)
    torch.testing.assert_close(optics_ctf(k, model, {}, du, dv, ang, ps), want)


def test_gradcheck_optics_ctf_and_odd_phase():
    model = _model()
    k = frequency_grid_2d((8, 8), 1.2, dtype=_F)[1:5, 1:4]
    du = torch.tensor([15000.0, 14500.0], dtype=_F, requires_grad=True)
    ang = torch.tensor([0.3, 0.1], dtype=_F)

    def ctf(mag, even, cs, phase, du):
        return optics_ctf(k, model, {"mag": mag, "even": even, "cs": cs}, du, du - 800.0, ang, phase)

    mag = torch.tensor([[1.01, 0.004], [-0.002, 0.995]], dtype=_F, requires_grad=True)
    even = torch.tensor([0, 0, 0, 0, 30.0, -20.0, 10.0, 5.0, -8.0], dtype=_F, requires_grad=True)
    cs = torch.tensor(0.1, dtype=_F, requires_grad=True)
    phase = torch.tensor([0.2, 0.4], dtype=_F, requires_grad=True)
    assert gradcheck(ctf, (mag, even, cs, phase, du))
    odd = torch.tensor([0.1, -0.2, 11.0, 4.0, -3.0, 7.0], dtype=_F, requires_grad=True)
    assert gradcheck(lambda m, o: odd_phase(k, {"mag": m, "odd": o}), (mag, odd))


def test_gradcheck_refinement_offsets_through_the_optics_state():
    """Every refinable group (mag ‰, beam tilt mrad, trefoil, zernike4, cs, phase) -> CTF and odd phase."""
    model = _model(phase_shift=np.array([10.0, 20.0]))
    k = frequency_grid_2d((8, 8), 1.2, dtype=_F)[1:5, 1:4]
    du = torch.tensor([15000.0, 14500.0], dtype=_F)
    ang = torch.tensor([0.3, 0.1], dtype=_F)
    names = ("mag", "beam_tilt", "trefoil", "zernike4", "cs", "phase")
    rng = np.random.default_rng(3)
    start = [torch.from_numpy(rng.normal(scale=0.5, size=s)).requires_grad_(True)
             for s in ((2,), (2,), (2,), (5,), (1,), (1,))]

    def f(*offs):
        st = optics_state(model, dict(zip(names, offs)))
        return torch.cat([optics_ctf(k, model, st, du, du - 500, ang, st["phase"]).reshape(-1),
                          odd_phase(k, st).reshape(-1), block_magnification(st["mag"]).reshape(-1)])

    assert gradcheck(f, tuple(start))


def test_offsets_write_back_as_relion_values():
    model = _model()
    offs = {"mag": torch.tensor([10.0, 2.0], dtype=_F), "beam_tilt": torch.tensor([0.5, -0.2], dtype=_F),
            "trefoil": torch.tensor([2.0, -1.0], dtype=_F), "zernike4": torch.zeros(5, dtype=_F),
            "cs": torch.tensor([1.0], dtype=_F), "phase": torch.tensor([30.0], dtype=_F)}
    im, phase = updated_optics(model, {"cs": 2.7, "beam_tilt": [0.1, 0.1]}, offs)
    assert np.allclose(im["mag_matrix"], [[1.01, 0.002], [0.002, 0.99]])
    assert np.allclose(im["beam_tilt"], [0.6, -0.1])
    assert np.allclose(im["odd_zernike"], [0, 0, 20.0, 0, 0, -10.0])
    assert "even_zernike" not in im and abs(im["cs"] - 2.8) < 1e-12
    assert np.allclose(phase, [30.0, 30.0])
    # the written values give the same optics as the offsets did (beam tilt through insertTilt)
    base = {"beam_tilt": [0.1, 0.1]}
    geometric = {k: offs[k] for k in ("mag", "beam_tilt", "trefoil")}
    im, _ = updated_optics(model, base, geometric)
    before = optics_state(_model(aberrations=Aberrations.from_imaging(base, 300.0, 2.7)), geometric)
    after = optics_state(_model(aberrations=Aberrations.from_imaging(im, 300.0, 2.7)), {})
    torch.testing.assert_close(after["mag"], before["mag"])
    torch.testing.assert_close(after["odd"], before["odd"])
