"""FSC and shell statistics against analytic expectations and a numpy full-FFT implementation."""

import numpy as np
import pytest
import torch

from mrepo.kernels.fsc import (
    fsc,
    normalized_cross_correlation_per_shell,
    num_shells,
    resolution_at,
    shell_frequencies,
    shell_indices,
    spectral_whitening,
)

GEN = torch.Generator().manual_seed(5)


def _numpy_fsc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    n = min(a.shape)
    r = np.sqrt(sum(g**2 for g in np.meshgrid(*[np.fft.fftfreq(k) for k in a.shape], indexing="ij"))) * n
    idx = np.round(r).astype(int)
    out = []
    for i in range(n // 2 + 1):
        sel = idx == i
        num = np.sum((fa[sel] * np.conj(fb[sel])).real)
        out.append(num / np.sqrt(np.sum(np.abs(fa[sel]) ** 2) * np.sum(np.abs(fb[sel]) ** 2)))
    return np.array(out)


@pytest.mark.parametrize("shape", [(24, 24, 24), (20, 20), (15, 15), (16, 18, 20)])
def test_fsc_matches_full_fft_numpy(shape):
    a = torch.randn(shape, generator=GEN, dtype=torch.float64)
    b = 0.5 * a + torch.randn(shape, generator=GEN, dtype=torch.float64)
    ours = fsc(a, b)
    assert ours.shape == (num_shells(shape),)
    np.testing.assert_allclose(ours.numpy(), _numpy_fsc(a.numpy(), b.numpy()), atol=1e-10)


def test_identical_maps_give_one_and_mask():
    a = torch.randn(20, 20, 20, generator=GEN, dtype=torch.float64)
    np.testing.assert_allclose(fsc(a, a).numpy(), 1.0, atol=1e-12)
    mask = torch.zeros(20, 20, 20, dtype=torch.float64)
    mask[5:15, 5:15, 5:15] = 1.0
    b = a.clone()
    b[mask == 0] = torch.randn(int((mask == 0).sum()), generator=GEN, dtype=torch.float64)
    np.testing.assert_allclose(fsc(a, b, mask).numpy(), 1.0, atol=1e-12)
    assert fsc(a, b)[5:].mean() < 0.9


def test_independent_noise_within_statistical_bound():
    shape = (32, 32, 32)
    a = torch.randn(shape, generator=GEN, dtype=torch.float64)
    b = torch.randn(shape, generator=GEN, dtype=torch.float64)
    curve = fsc(a, b)
    counts = torch.bincount(shell_indices(shape, rfft=False).reshape(-1), minlength=18)[:17].double()
    # Var(FSC) ~ 1 / (number of voxels in the shell) for independent Gaussian noise
    z = curve[2:] * counts[2:].sqrt()
    assert z.abs().max() < 4.5
    assert abs(z.pow(2).mean().item() - 1.0) < 0.6


def test_known_snr_gives_snr_over_one_plus_snr():
    n = 40
    shape = (n, n, n)
    shells = shell_indices(shape)
    ns = num_shells(shape)
    snr_shell = torch.linspace(4.0, 0.05, ns + 2, dtype=torch.float64)  # per-shell SNR
    s = torch.randn(shape, generator=GEN, dtype=torch.float64)
    s = torch.fft.irfftn(torch.fft.rfftn(s) * snr_shell[shells].sqrt(), s=shape)  # noise variance 1 each
    a = s + torch.randn(shape, generator=GEN, dtype=torch.float64)
    b = s + torch.randn(shape, generator=GEN, dtype=torch.float64)
    curve = fsc(a, b)
    expected = snr_shell[:ns] / (1 + snr_shell[:ns])
    assert (curve[3:] - expected[3:]).abs().max() < 0.06
    assert (curve[3:] - expected[3:]).abs().mean() < 0.02


def test_resolution_at_interpolates():
    box, apix = 64, 1.5
    curve = torch.tensor([1.0, 0.9, 0.6, 0.3, 0.1, 0.05] + [0.0] * 27)
    # crossing 0.143 between shell 3 (0.3) and 4 (0.1): x = 3 + 0.157 / 0.2
    x = 3 + (0.3 - 0.143) / 0.2
    assert resolution_at(curve, apix, box) == pytest.approx(box * apix / x)
    assert resolution_at(curve, apix, box, threshold=0.5) == pytest.approx(box * apix / (2 + 0.1 / 0.3))
    assert resolution_at(torch.ones(33), apix, box) == pytest.approx(2 * apix)
    f = shell_frequencies(box, apix)
    assert f[-1].item() == pytest.approx(1 / (2 * apix))


def test_batched_fsc():
    a = torch.randn(3, 16, 16, generator=GEN, dtype=torch.float64)
    b = torch.randn(3, 16, 16, generator=GEN, dtype=torch.float64)
    batch = fsc(a, b, ndim=2)
    assert batch.shape == (3, 9)
    assert torch.allclose(batch[1], fsc(a[1], b[1]))
    with pytest.raises(ValueError, match="ndim"):
        fsc(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))


def test_ncc_sums_accumulate_and_equal_fsc():
    a = torch.randn(6, 24, 24, generator=GEN, dtype=torch.float64)
    b = a + 2 * torch.randn(6, 24, 24, generator=GEN, dtype=torch.float64)
    fa, fb = torch.fft.rfft2(a), torch.fft.rfft2(b)
    sums = normalized_cross_correlation_per_shell(fa, fb)
    assert sums.cross.shape == (6, 13)
    np.testing.assert_allclose(sums.correlation()[0].numpy(), _numpy_fsc(a[0].numpy(), b[0].numpy()), atol=1e-10)
    # summing over particles equals the full-FFT sums accumulated with numpy
    full_a, full_b = np.fft.fft2(a.numpy()), np.fft.fft2(b.numpy())
    idx = shell_indices((24, 24), rfft=False).numpy()
    for s_ in (0, 3, 12):
        sel = idx == s_
        assert sums.cross.sum(0)[s_].item() == pytest.approx((full_a[:, sel] * full_b[:, sel].conj()).real.sum())
        assert sums.power_b.sum(0)[s_].item() == pytest.approx((np.abs(full_b[:, sel]) ** 2).sum())
    # weights scale the contributions
    w = torch.rand(24, 13, generator=GEN, dtype=torch.float64)
    sw = normalized_cross_correlation_per_shell(fa, fb, w)
    assert not torch.allclose(sw.cross, sums.cross)
    assert torch.allclose(
        normalized_cross_correlation_per_shell(fa, fb, 2 * torch.ones(24, 13, dtype=torch.float64)).power_a,
        2 * sums.power_a,
    )


def test_spectral_whitening_flattens_spectrum():
    n = 32
    shells = shell_indices((n, n))
    ns = num_shells((n, n))
    profile = torch.exp(-torch.arange(ns + 2, dtype=torch.float64) / 4.0)
    imgs = torch.randn(10, n, n, generator=GEN, dtype=torch.float64)
    ft = torch.fft.rfft2(imgs) * profile[shells]
    white, spec = spectral_whitening(ft)
    assert spec.shape == (ns,)
    _, spec_after = spectral_whitening(white)
    np.testing.assert_allclose(spec_after.numpy(), 1.0, atol=1e-9)
    # the measured spectrum follows the imposed profile (Rayleigh mean sqrt(pi)/2 * sigma * n)
    ratio = spec[2:] / profile[2:ns]
    assert (ratio / ratio.mean() - 1).abs().max() < 0.15
    w1, s1 = spectral_whitening(ft, per_image=True)
    assert s1.shape == (10, ns)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_fsc_device(device):
    a = torch.randn(16, 16, 16, generator=GEN).to(device)
    b = torch.randn(16, 16, 16, generator=GEN).to(device)
    out = fsc(a, b)
    assert out.device.type == device
    np.testing.assert_allclose(
        out.cpu().double().numpy(), _numpy_fsc(a.cpu().double().numpy(), b.cpu().double().numpy()), atol=1e-4
    )
