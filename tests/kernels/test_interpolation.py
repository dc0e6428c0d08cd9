"""Trilinear and cubic B-spline samplers against independent direct evaluations on
a full (periodic, Friedel-symmetric) DFT, gradchecks and bad inputs."""

import numpy as np
import pytest
import torch

from mrepo.kernels.gridding import gather, half_grid_shape, trilinear_stencil
from mrepo.kernels.interpolation import (
    bspline_table,
    bspline_table_shape,
    sample_cubic,
    sample_linear,
    sample_quadratic,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_volume_ft(big: int, seed: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Full DFT (D, D, D) numpy of a random real volume, its rfftn and its centred half-transform."""
    vol = np.random.default_rng(seed).standard_normal((big, big, big))
    full = np.fft.fftn(vol)
    rfft = torch.tensor(np.fft.rfftn(vol))
    h = big // 2
    idx = (torch.arange(2 * h + 1) - h) % big
    return full, rfft, rfft.index_select(0, idx).index_select(1, idx)


def bspline3(u: np.ndarray) -> np.ndarray:
    """Centred cubic B-spline β3(u)."""
    a = np.abs(u)
    return np.where(a < 1, 2 / 3 - a**2 + a**3 / 2, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


def bspline2(u: np.ndarray) -> np.ndarray:
    """Centred quadratic B-spline β2(u)."""
    a = np.abs(u)
    return np.where(a < 0.5, 0.75 - a**2, np.where(a < 1.5, (1.5 - a) ** 2 / 2, 0.0))


def direct_spline(full: np.ndarray, coords: np.ndarray, beta) -> np.ndarray:
    """Σ_j β(k - j) F(j) over all integers j within 2 of k, F periodic (full DFT)."""
    big = full.shape[0]
    out = np.zeros(len(coords), dtype=complex)
    for m, (x, y, z) in enumerate(coords):
        near = [range(int(np.floor(v)) - 2, int(np.floor(v)) + 4) for v in (x, y, z)]
        for jz in near[2]:
            for jy in near[1]:
                for jx in near[0]:
                    w = beta(x - jx) * beta(y - jy) * beta(z - jz)
                    out[m] += w * full[jz % big, jy % big, jx % big]
    return out


def random_coords(n: int, h: float, seed: int) -> torch.Tensor:
    """Points uniform in the ball |k| <= h, plus the ball's poles and the origin."""
    g = np.random.default_rng(seed)
    u = g.standard_normal((n, 3))
    u *= (h * g.uniform(0, 1, n) ** (1 / 3) / np.linalg.norm(u, axis=1))[:, None]
    poles = np.array([[h, 0, 0], [-h, 0, 0], [0, h, 0], [0, 0, -h], [0, 0, 0], [0.0, 2.5, -1.5]])
    return torch.tensor(np.concatenate((u, poles)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("big", [8, 9])
@pytest.mark.parametrize("sample,beta", [(sample_cubic, bspline3), (sample_quadratic, bspline2)])
def test_splines_match_direct_bspline_sum(device, big, sample, beta):
    # the row table's periodic continuation and Friedel mates equal the full DFT
    full, rfft, _ = random_volume_ft(big, big)
    coords = random_coords(30, big // 2, 1)
    table = bspline_table(rfft.to(device))
    assert table.shape == bspline_table_shape(big)
    got = sample(table, coords.to(device)).cpu().numpy()
    np.testing.assert_allclose(got, direct_spline(full, coords.numpy(), beta), rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
def test_linear_matches_stencil_gather(device):
    _, _, grid = random_volume_ft(10, 3)
    coords = random_coords(200, 5, 2)
    ref = gather(grid, trilinear_stencil(coords, half_grid_shape(10)))
    got = sample_linear(grid.to(device), coords.to(device)).cpu()
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_linear_is_exact_on_grid_points():
    _, _, grid = random_volume_ft(8, 4)
    pts = torch.tensor([[1.0, -2.0, 3.0], [-1.0, 2.0, -3.0], [0.0, 4.0, -4.0]], dtype=torch.float64)
    got = sample_linear(grid, pts)
    h = 4
    ref = torch.stack(
        (grid[3 + h, -2 + h, 1], grid[3 + h, -2 + h, 1].conj(), grid[-4 + h, 4 + h, 0])
    )
    torch.testing.assert_close(got, ref)


def test_gradcheck_wrt_coordinates():
    big = 8
    _, rfft, grid = random_volume_ft(big, 5)
    table = bspline_table(rfft)
    # keep points away from trilinear cell faces, where the gradient jumps
    coords = torch.tensor(
        [[1.3, -0.6, 2.2], [-2.4, 1.7, -0.3], [0.2, 3.1, -1.6], [-0.45, -0.35, 0.55]],
        dtype=torch.float64,
        requires_grad=True,
    )
    assert torch.autograd.gradcheck(lambda c: sample_linear(grid, c), (coords,))
    assert torch.autograd.gradcheck(lambda c: sample_cubic(table, c), (coords,))
    assert torch.autograd.gradcheck(lambda c: sample_quadratic(table, c), (coords,))


def test_gradcheck_wrt_volume():
    # through rfftn and the table/half-transform layouts back to a small real volume
    big, h = 4, 2
    vol = torch.randn(big, big, big, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    coords = torch.tensor([[1.3, -0.6, 1.2], [-1.4, 0.7, -0.3], [0.2, -1.1, 0.6]], dtype=torch.float64)
    idx = (torch.arange(2 * h + 1) - h) % big

    def linear(v):
        ft = torch.fft.rfftn(v)
        return sample_linear(ft.index_select(0, idx).index_select(1, idx), coords)

    def cubic(v):
        return sample_cubic(bspline_table(torch.fft.rfftn(v)), coords)

    v = vol.requires_grad_(True)
    assert torch.autograd.gradcheck(linear, (v,))
    assert torch.autograd.gradcheck(cubic, (v,))
    assert torch.autograd.gradcheck(lambda v: sample_quadratic(bspline_table(torch.fft.rfftn(v)), coords), (v,))


@pytest.mark.parametrize("sample", [sample_cubic, sample_quadratic])
def test_spline_jacobian_matches_finite_differences_over_many_chunks(sample):
    # 20k points span several chunks of the sampler: the analytic Jacobian (through
    # autograd) against central differences of the forward values, every point
    _, rfft, _ = random_volume_ft(8, 11)
    table = bspline_table(rfft)
    coords = random_coords(20_000, 4.0, 12)
    g = torch.randn(coords.shape[0], dtype=torch.complex128, generator=torch.Generator().manual_seed(13))
    c = coords.clone().requires_grad_(True)
    (sample(table, c) * g.conj()).real.sum().backward()
    eps = 1e-6
    for axis in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[axis] = eps
        with torch.no_grad():
            fd = ((sample(table, coords + step) - sample(table, coords - step)) * g.conj()).real / (2 * eps)
        torch.testing.assert_close(c.grad[:, axis], fd, rtol=1e-5, atol=1e-5 * float(fd.abs().max()))


@pytest.mark.parametrize("sample,knot", [(sample_cubic, 2.0), (sample_quadratic, 2.5)])
def test_spline_gradient_is_continuous_across_cells(sample, knot):
    # C² (cubic) / C¹ (quadratic) splines: the coordinate gradient does not jump at knots
    _, rfft, _ = random_volume_ft(8, 6)
    table = bspline_table(rfft)
    c = torch.tensor([[knot - 1e-7, 0.3, -1.2], [knot + 1e-7, 0.3, -1.2]], dtype=torch.float64, requires_grad=True)
    v = sample(table, c)
    (g,) = torch.autograd.grad(v.real.sum(), c)
    torch.testing.assert_close(g[0], g[1], rtol=1e-5, atol=1e-6)


def test_bad_inputs_raise():
    _, rfft, grid = random_volume_ft(8, 7)
    with pytest.raises(ValueError, match="coords"):
        sample_linear(grid, torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="grid"):
        sample_linear(grid.real, torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="table"):
        sample_cubic(grid, torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="rfft"):
        bspline_table(rfft[:, :, :3])


def _frame_slices(monkeypatch, share: bool):
    """Slices and the gradient w.r.t. per-frame angle offsets of 5 particles x 4 frames at one pose each,
    with the frames' shared sampling on or forced off."""
    from mrepo.kernels import fourier_slice
    from mrepo.kernels.rotations import euler_to_matrix

    if not share:
        monkeypatch.setattr(fourier_slice, "_repeated_rotations", lambda rot, lead: 1)
    g = torch.Generator().manual_seed(5)
    d = 24
    vft = fourier_slice.prepare_volume(torch.randn(d, d, d, generator=g), 2)
    ang = torch.randn(5, 1, 3, dtype=torch.float64, generator=g)
    weights = torch.randn(5, 4, d, d // 2 + 1, dtype=torch.complex64, generator=g)
    offsets = torch.zeros(5, 4, 3, dtype=torch.float64, requires_grad=True)  # equal frames, own gradients
    slices = fourier_slice.extract_slices(vft, euler_to_matrix(ang + offsets).float(), d, 2, max_radius=9.5)
    (slices * weights).real.sum().backward()
    return slices.detach(), offsets.grad


def test_frames_at_one_pose_are_sampled_once_with_the_same_values_and_gradients(monkeypatch):
    """extract_slices samples one slice per particle when its rotation is equal (bit for bit) in every frame:
    values and each frame's own rotation gradient are bit-identical to sampling every frame."""
    from mrepo.kernels import fourier_slice

    repeated = fourier_slice._repeated_rotations
    shared, grad_shared = _frame_slices(monkeypatch, True)
    every, grad_every = _frame_slices(monkeypatch, False)
    assert torch.equal(shared, every) and torch.equal(grad_shared, grad_every)
    assert not torch.equal(grad_every[:, 0], grad_every[:, 1])  # per-frame gradients, not one copied
    rot = torch.eye(3).expand(2, 3, 3, 3).clone()
    assert repeated(rot.reshape(-1, 3, 3), (2, 3)) == 3
    rot[1, 2, 0, 1] = 1e-7
    assert repeated(rot.reshape(-1, 3, 3), (2, 3)) == 1


def test_repeated_blocks_grid_gradient_matches_every_point():
    """sample_linear(repeat=r): the gradient w.r.t. the grid equals that of sampling every (equal) block."""
    g = torch.Generator().manual_seed(6)
    h = 6
    grid = torch.randn(half_grid_shape(2 * h), dtype=torch.complex128, generator=g).requires_grad_(True)
    block = (torch.rand(7, 3, dtype=torch.float64, generator=g) - 0.5) * 2 * h * 0.8
    coords = block[None, None].expand(2, 3, 7, 3).reshape(-1, 3).contiguous()
    up = torch.randn(coords.shape[0], dtype=torch.complex128, generator=g)
    grads = []
    for kw in ({}, {"repeat": 3, "points": 7}):
        grid.grad = None
        (sample_linear(grid, coords, **kw) * up).real.sum().backward()
        grads.append(grid.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="groups of"):
        sample_linear(grid, coords, repeat=4, points=7)
