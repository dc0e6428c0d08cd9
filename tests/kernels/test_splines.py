"""Spline and linear grids against scipy and analytic properties."""

import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline, RegularGridInterpolator

from mrepo.kernels.splines import CubicSplineGrid, LinearGrid, natural_spline_matrix

RNG = np.random.default_rng(1)


def _scipy_tensor_spline(values: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Tensor-product natural spline by successive 1D scipy splines (last axis first)."""
    out = []
    for p in pts:
        v = values
        for d in reversed(range(values.ndim)):
            n = v.shape[-1]
            if n == 1:
                v = v[..., 0]
            elif n == 2:
                v = v[..., 0] + (v[..., 1] - v[..., 0]) * p[d]
            else:
                v = CubicSpline(np.linspace(0, 1, n), v, axis=-1, bc_type="natural")(p[d])
        out.append(v)
    return np.array(out)


def test_1d_matches_scipy_including_extrapolation():
    y = RNG.normal(size=7)
    t = np.concatenate([RNG.uniform(0, 1, 50), [0.0, 1.0, -0.05, 1.1]])
    grid = CubicSplineGrid((7,))
    ours = grid(torch.from_numpy(y), torch.from_numpy(t)[:, None])
    ref = CubicSpline(np.linspace(0, 1, 7), y, bc_type="natural")(t)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("shape", [(4, 5), (3, 1, 6), (1, 2, 5), (5, 4, 3)])
def test_nd_matches_scipy_tensor_product(shape):
    values = RNG.normal(size=shape)
    pts = RNG.uniform(0, 1, (30, len(shape)))
    grid = CubicSplineGrid(shape)
    ours = grid(torch.from_numpy(values), torch.from_numpy(pts))
    np.testing.assert_allclose(ours.numpy(), _scipy_tensor_spline(values, pts), atol=1e-12)


def test_interpolates_nodes_and_reproduces_linear_functions():
    shape = (4, 6, 3)
    axes = [np.linspace(0, 1, n) for n in shape]
    nodes = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    values = RNG.normal(size=shape)
    grid = CubicSplineGrid(shape)
    at_nodes = grid(torch.from_numpy(values), torch.from_numpy(nodes))
    np.testing.assert_allclose(at_nodes.numpy(), values.reshape(-1), atol=1e-12)
    coef = np.array([0.3, -1.2, 2.0])
    lin = (np.stack(np.meshgrid(*axes, indexing="ij"), -1) @ coef) + 0.5
    pts = RNG.uniform(0, 1, (40, 3))
    np.testing.assert_allclose(grid(torch.from_numpy(lin), torch.from_numpy(pts)).numpy(), pts @ coef + 0.5, atol=1e-12)


def test_natural_boundary_second_derivative_zero():
    y = torch.from_numpy(RNG.normal(size=6))
    grid = CubicSplineGrid((6,))
    h = 1e-4
    for end in (0.0, 1.0):
        t = torch.tensor([[end - h], [end], [end + h]], dtype=torch.float64)  # end cubic extends past the end
        f = grid(y, t)
        second = (f[0] - 2 * f[1] + f[2]) / h**2
        assert abs(second.item()) < 1e-5
    # interior second derivative equals S @ y at the nodes (FD error O(h * jump of the third derivative))
    s = natural_spline_matrix(6) @ y
    t = torch.tensor([[0.4 - h], [0.4], [0.4 + h]], dtype=torch.float64)
    f = grid(y, t)
    assert abs(((f[0] - 2 * f[1] + f[2]) / h**2).item() - s[2].item()) < 1e-3 * max(1.0, abs(s[2].item()))


def test_batched_evaluate_is_one_matmul_and_gradcheck():
    grid = CubicSplineGrid((3, 4, 5))
    pts = torch.rand(2, 7, 3, dtype=torch.float64)
    w = grid.weights(pts)
    assert w.shape == (2, 7, 60)
    vals = torch.randn(8, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    out = grid.evaluate(vals, w)
    assert out.shape == (8, 2, 7)
    single = grid.evaluate(vals[3], w)
    assert torch.allclose(out[3], single)
    assert torch.autograd.gradcheck(lambda v: grid.evaluate(v, w), (vals,))
    p = torch.rand(5, 3, dtype=torch.float64, requires_grad=True)
    v0 = vals.detach()[0]
    assert torch.autograd.gradcheck(lambda q: grid(v0, q), (p,))


def test_linear_grid_4d_matches_scipy_and_sparse():
    shape = (3, 4, 2, 5)
    values = RNG.normal(size=shape)
    pts = RNG.uniform(0, 1, (25, 4))
    grid = LinearGrid(shape)
    ref = RegularGridInterpolator([np.linspace(0, 1, n) for n in shape], values)(pts)
    dense = grid(torch.from_numpy(values), torch.from_numpy(pts))
    np.testing.assert_allclose(dense.numpy(), ref, atol=1e-12)
    ws = grid.weights(torch.from_numpy(pts), sparse=True)
    assert ws.is_sparse and ws._nnz() <= 25 * 16
    v = torch.from_numpy(values).requires_grad_(True)
    out = grid.evaluate(v, ws)
    np.testing.assert_allclose(out.detach().numpy(), ref, atol=1e-12)
    out.sum().backward()
    np.testing.assert_allclose(v.grad.reshape(-1).numpy(), ws.to_dense().sum(0).numpy(), atol=1e-12)


def test_linear_grid_degenerate_axes_sparse_equals_dense():
    grid = LinearGrid((1, 3, 1, 4))
    pts = torch.rand(10, 4, dtype=torch.float64)
    assert torch.allclose(grid.weights(pts, sparse=True).to_dense(), grid.weights(pts))


def test_bad_input():
    with pytest.raises(ValueError, match="points"):
        CubicSplineGrid((3, 3)).weights(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="grid_shape"):
        CubicSplineGrid((0, 3))
    with pytest.raises(ValueError, match="node_values"):
        CubicSplineGrid((3, 3)).evaluate(torch.zeros(3, 4), torch.zeros(5, 9))


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_device_follows_inputs(device):
    grid = CubicSplineGrid((3, 4, 5))
    pts = torch.rand(6, 3, device=device)
    vals = torch.randn(3, 4, 5, device=device)
    out = grid(vals, pts)
    assert out.device.type == device and out.dtype == torch.float32
    ref = grid(vals.cpu().double(), pts.cpu().double())
    assert (out.cpu().double() - ref).abs().max() < 1e-5
    lin = LinearGrid((2, 3, 2, 4))
    assert lin(torch.randn(2, 3, 2, 4, device=device), torch.rand(5, 4, device=device)).device.type == device
