"""Subpixel patch extraction against analytic Gaussian images, padding modes and gradcheck."""

import numpy as np
import pytest
import torch

from mrepo.kernels.extraction import extract_patches, extract_patches_ft

from .analytic import DEVICES, gaussian


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("box", [24, 25])
def test_patches_centre_subpixel_positions(device, box):
    img = gaussian(64, 80, 30.3, 25.7, device=device) + gaussian(64, 80, 55.8, 40.45, device=device)
    pos = torch.tensor(
        [[30.3, 25.7], [55.8, 40.45], [31.0, 24.2]], dtype=torch.float64, device=device
    )
    patches = extract_patches(img, pos, box)
    c = box // 2
    torch.testing.assert_close(patches[0], gaussian(box, box, c, c, device=device), atol=1e-6, rtol=0)
    torch.testing.assert_close(patches[1], gaussian(box, box, c, c, device=device), atol=1e-6, rtol=0)
    # the blob at (30.3, 25.7) appears at box//2 + (blob - position)
    ref = gaussian(box, box, c - 0.7, c + 1.5, device=device)
    torch.testing.assert_close(patches[2], ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_ft_is_rfft2_of_patches_and_leading_dims_broadcast(device):
    imgs = torch.randn(2, 40, 40, dtype=torch.float64, device=device)
    pos = torch.rand(3, 2, 4, 2, dtype=torch.float64, device=device) * 30 + 5
    ft = extract_patches_ft(imgs, pos, 16)
    assert ft.shape == (3, 2, 4, 16, 9)
    torch.testing.assert_close(torch.fft.irfft2(ft, s=(16, 16)), extract_patches(imgs, pos, 16))
    torch.testing.assert_close(ft[2, 1], extract_patches_ft(imgs[1], pos[2, 1], 16))


@pytest.mark.parametrize("device", DEVICES)
def test_border_padding_modes_at_integer_positions(device):
    img = torch.randn(20, 24, dtype=torch.float64, device=device)
    pos = torch.tensor([[1.0, 2.0], [22.0, 18.0]], dtype=torch.float64, device=device)
    box = 8
    np_img = img.cpu().numpy()
    for mode in ("zeros", "reflect"):
        got = extract_patches(img, pos, box, padding=mode).cpu().numpy()
        padded = np.pad(np_img, box, mode="constant" if mode == "zeros" else "reflect")
        for i, (x, y) in enumerate(pos.int().tolist()):
            ref = padded[y + box - box // 2 : y + box - box // 2 + box, x + box - box // 2 : x + box - box // 2 + box]
            np.testing.assert_allclose(got[i], ref, atol=1e-12)


def test_extract_patches_gradcheck_wrt_positions():
    img = (gaussian(32, 32, 14.2, 17.9, sigma=2.5) + 0.5 * gaussian(32, 32, 20.0, 12.0)).detach()
    pos = torch.tensor([[14.1, 17.3], [19.6, 12.35]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: extract_patches(img, p, 12), (pos,))


def test_bad_inputs_raise():
    img = torch.zeros(16, 16)
    with pytest.raises(ValueError, match="positions"):
        extract_patches(img, torch.zeros(3, 3), 8)
    with pytest.raises(ValueError, match="padding"):
        extract_patches(img, torch.zeros(1, 2), 8, padding="wrap")
    with pytest.raises(ValueError, match="box"):
        extract_patches(img, torch.zeros(1, 2), 0)
