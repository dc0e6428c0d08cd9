"""Fourier phase shifts against analytic Gaussians, torch.roll and gradcheck."""

import numpy as np
import pytest
import torch

from mrepo.kernels.shifts import phase_shift, shift_images

from .analytic import DEVICES, gaussian


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("h,w", [(32, 32), (31, 40)])
def test_shift_moves_gaussian_to_analytic_position(device, h, w):
    shifts = torch.tensor([[0.3, -1.7], [2.25, 0.5]], dtype=torch.float64, device=device)
    imgs = torch.stack([gaussian(h, w, 15.0, 14.0, device=device)] * 2)
    got = shift_images(imgs, shifts)
    for i, (sx, sy) in enumerate(shifts.tolist()):
        ref = gaussian(h, w, 15.0 + sx, 14.0 + sy, device=device)
        torch.testing.assert_close(got[i], ref, atol=1e-8, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_integer_shift_is_roll(device):
    img = torch.randn(3, 16, 20, dtype=torch.float64, device=device)
    got = shift_images(img, torch.tensor([3.0, -2.0], dtype=torch.float64, device=device))
    torch.testing.assert_close(got, torch.roll(img, shifts=(-2, 3), dims=(-2, -1)))


def test_phase_shift_broadcasts_leading_dims():
    ft = torch.fft.rfft2(torch.randn(4, 8, 8, dtype=torch.float64))
    shifts = torch.randn(5, 1, 2, dtype=torch.float64)
    out = phase_shift(ft, shifts, (8, 8))
    assert out.shape == (5, 4, 8, 5)
    torch.testing.assert_close(out[2, 1], phase_shift(ft[1], shifts[2, 0], (8, 8)))


def test_phase_shift_gradcheck():
    ft = torch.fft.rfft2(gaussian(12, 12, 5.5, 6.2)).detach()
    shifts = torch.tensor([[0.4, -0.9], [1.3, 0.2]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: phase_shift(ft, s, (12, 12)), (shifts,))


def test_gradient_of_shifted_gaussian_is_analytic():
    # d/dsx of the shifted image = -∂G/∂x at the shifted centre
    s = torch.tensor([0.6, -0.4], dtype=torch.float64, requires_grad=True)
    out = shift_images(gaussian(32, 32, 16.0, 16.0), s)
    weights = gaussian(32, 32, 18.0, 15.0, sigma=3.0)
    (out * weights).sum().backward()
    g = gaussian(32, 32, 16.6, 15.6).numpy()
    y, x = np.mgrid[:32, :32]
    dgx = (x - 16.6) / 4.0 * g  # -∂G/∂x
    dgy = (y - 15.6) / 4.0 * g
    expected = [(dgx * weights.numpy()).sum(), (dgy * weights.numpy()).sum()]
    np.testing.assert_allclose(s.grad.numpy(), expected, rtol=1e-6)


def test_bad_inputs_raise():
    ft = torch.zeros(8, 5, dtype=torch.complex64)
    with pytest.raises(ValueError, match="images_ft"):
        phase_shift(ft, torch.zeros(2), (8, 10))
    with pytest.raises(ValueError, match="shifts"):
        phase_shift(ft, torch.zeros(3), (8, 8))
    with pytest.raises(ValueError, match="images"):
        shift_images(torch.zeros(8, dtype=torch.float32), torch.zeros(2))
