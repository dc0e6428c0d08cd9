"""Deformation grids: tensor-product natural cubic splines and multilinear grids.

A grid of shape (n_0, ..., n_{D-1}) has its nodes at ``linspace(0, 1, n_d)``
along each axis d; a point is a (..., D) vector whose coordinate d (in [0, 1])
runs along grid axis d (e.g. (x, y, time) for M's image-warp grids, (x, y, z,
time) for the volume-warp grid). An axis with n_d == 1 is constant along that
coordinate. Evaluation is split in two steps so that fixed points can be
evaluated for many node values with one matmul:

    w = grid.weights(points)             # (..., N), N = prod(grid_shape)
    v = grid.evaluate(node_values, w)    # node_values (B..., *grid_shape) -> (B..., ...)

Both steps are differentiable; the gradient w.r.t. node values is w^T. No
Fourier layout is involved in this module.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["CubicSplineGrid", "LinearGrid", "natural_spline_matrix", "evaluate_grid"]


def natural_spline_matrix(n: int, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """(n, n) matrix S with S @ y = second derivatives at the nodes of the natural cubic spline.

    Nodes are uniform on [0, 1] (spacing h = 1 / (n - 1)); rows 0 and n-1 are zero
    (natural boundary). For n < 3 the matrix is zero (the spline is linear/constant). Solved on the
    host in float64, returned on ``device``.
    """
    s = torch.zeros(n, n, dtype=torch.float64)  # host
    if n >= 3:
        h = 1.0 / (n - 1)
        m = n - 2
        a = torch.zeros(m, m, dtype=torch.float64)  # host
        idx = torch.arange(m)  # host
        a[idx, idx] = 4.0
        a[idx[:-1], idx[:-1] + 1] = 1.0
        a[idx[1:], idx[1:] - 1] = 1.0
        b = torch.zeros(m, n, dtype=torch.float64)  # host
        b[idx, idx] = 1.0
        b[idx, idx + 1] = -2.0
        b[idx, idx + 2] = 1.0
        s[1:-1] = torch.linalg.solve(a, b * (6.0 / (h * h)))
    return s.to(dtype=dtype, device=device)


def _check_points(points: Tensor, ndim: int) -> None:
    if not isinstance(points, Tensor) or points.ndim < 1 or points.shape[-1] != ndim:
        shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"points must be a tensor of shape (..., {ndim}), got {shape}")


def _check_shape(grid_shape) -> tuple[int, ...]:
    shape = tuple(int(n) for n in grid_shape)
    if len(shape) < 1 or any(n < 1 for n in shape):
        raise ValueError(f"grid_shape must be a non-empty tuple of positive sizes, got {grid_shape}")
    return shape


def _interval(t: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Left node index i in [0, n-2] and local coordinate b in [0, 1] (beyond ends: extrapolated)."""
    u = t * (n - 1)
    i = torch.clamp(torch.floor(u.detach()), 0, n - 2).to(torch.long)
    return i, u - i.to(u.dtype)


def _tensor_product(factors: list[Tensor]) -> Tensor:
    """Outer product over the last dim of each factor (..., n_d) -> (..., prod n_d), C order."""
    out = factors[0]
    for f in factors[1:]:
        out = (out[..., :, None] * f[..., None, :]).flatten(-2)
    return out


def evaluate_grid(node_values: Tensor, weights: Tensor, grid_shape: tuple[int, ...]) -> Tensor:
    """node_values (B..., *grid_shape), weights (P..., N) dense or sparse (P, N) -> (B..., P...)."""
    d = len(grid_shape)
    if tuple(node_values.shape[node_values.ndim - d :]) != tuple(grid_shape) or node_values.ndim < d:
        raise ValueError(f"node_values must end with grid shape {tuple(grid_shape)}, got {tuple(node_values.shape)}")
    n = math.prod(grid_shape)
    if weights.shape[-1] != n:
        raise ValueError(f"weights must have last dim {n}, got {tuple(weights.shape)}")
    batch = node_values.shape[: node_values.ndim - d]
    flat = node_values.reshape(-1, n)
    if weights.is_sparse:
        if weights.ndim != 2:
            raise ValueError("sparse weights must be 2D (P, N)")
        out = torch.sparse.mm(weights, flat.transpose(0, 1).to(weights.dtype)).transpose(0, 1)
        pshape = weights.shape[:1]
    else:
        pshape = weights.shape[:-1]
        out = flat @ weights.reshape(-1, n).transpose(0, 1).to(flat.dtype)
    return out.reshape(*batch, *pshape)


def _linear_axis_weights(t: Tensor, n: int) -> Tensor:
    """Weights (..., n) of linear interpolation between the n nodes of one axis on [0, 1]
    (a single node: constant)."""
    if n == 1:
        return torch.ones(*t.shape, 1, dtype=t.dtype, device=t.device)
    i, b = _interval(t, n)
    eye = torch.eye(n, dtype=t.dtype, device=t.device)
    return (1.0 - b)[..., None] * eye[i] + b[..., None] * eye[i + 1]


class _Grid:
    """A regular node grid on [0, 1]^D: shape, dimensionality and node count."""

    def __init__(self, grid_shape: tuple[int, ...]):
        self.grid_shape = _check_shape(grid_shape)

    @property
    def ndim(self) -> int:
        return len(self.grid_shape)

    @property
    def num_nodes(self) -> int:
        return math.prod(self.grid_shape)


class CubicSplineGrid(_Grid):
    """Interpolating natural cubic spline grid on [0, 1]^D (tensor product of 1D splines).

    Passes through the node values; second derivative zero at both ends of every
    axis; outside [0, 1] the end cubic is extended (like scipy's CubicSpline).
    Axes with 2 nodes are linear, with 1 node constant.
    """

    def __init__(self, grid_shape: tuple[int, ...]):
        super().__init__(grid_shape)
        self._spline = {}

    def _axis_weights(self, t: Tensor, n: int) -> Tensor:
        w = _linear_axis_weights(t, n)
        if n >= 3:
            i, b = _interval(t, n)
            a = 1.0 - b
            key = (n, t.dtype, t.device)
            if key not in self._spline:
                self._spline[key] = natural_spline_matrix(n, dtype=t.dtype, device=t.device)
            s = self._spline[key]
            h2 = 1.0 / ((n - 1) ** 2 * 6.0)
            w = w + h2 * (((a**3 - a)[..., None]) * s[i] + ((b**3 - b)[..., None]) * s[i + 1])
        return w

    def weights(self, points: Tensor) -> Tensor:
        """Dense interpolation weights (..., N) for points (..., D) in [0, 1], N = prod(grid_shape)."""
        _check_points(points, self.ndim)
        factors = [self._axis_weights(points[..., d], n) for d, n in enumerate(self.grid_shape)]
        return _tensor_product(factors)

    def evaluate(self, node_values: Tensor, weights: Tensor) -> Tensor:
        """Spline values: node_values (B..., *grid_shape) with weights (P..., N) -> (B..., P...)."""
        return evaluate_grid(node_values, weights, self.grid_shape)

    def __call__(self, node_values: Tensor, points: Tensor) -> Tensor:
        """Shortcut: ``evaluate(node_values, weights(points))``."""
        return self.evaluate(node_values, self.weights(points.to(node_values.dtype)))


class LinearGrid(_Grid):
    """Multilinear grid on [0, 1]^D (quadrilinear for D = 4: M's volume-warp grid).

    Same weights/evaluate split as :class:`CubicSplineGrid`; outside [0, 1] the end
    cells are extrapolated linearly. ``weights(points, sparse=True)`` returns a
    sparse COO (P, N) matrix with 2^D entries per point (points flattened to P).
    """

    def _axis_weights(self, t: Tensor, n: int) -> Tensor:
        return _linear_axis_weights(t, n)

    def weights(self, points: Tensor, sparse: bool = False) -> Tensor:
        """Weights (..., N) (dense) or sparse COO (P, N) for points (..., D) in [0, 1]."""
        _check_points(points, self.ndim)
        if not sparse:
            return _tensor_product([self._axis_weights(points[..., d], n) for d, n in enumerate(self.grid_shape)])
        pts = points.reshape(-1, self.ndim)
        p = pts.shape[0]
        flat_idx = torch.zeros(p, 1, dtype=torch.long, device=pts.device)
        vals = torch.ones(p, 1, dtype=pts.dtype, device=pts.device)
        for d, n in enumerate(self.grid_shape):
            if n == 1:
                continue
            i, b = _interval(pts[:, d], n)
            idx_d = torch.stack([i, i + 1], -1)
            w_d = torch.stack([1.0 - b, b], -1)
            flat_idx = (flat_idx[:, :, None] * n + idx_d[:, None, :]).flatten(1)
            vals = (vals[:, :, None] * w_d[:, None, :]).flatten(1)
        # flat C-order index by Horner's rule; axes of size 1 contribute index 0 and stride factor 1
        rows = torch.arange(p, device=pts.device)[:, None].expand_as(flat_idx)
        return torch.sparse_coo_tensor(
            torch.stack([rows.reshape(-1), flat_idx.reshape(-1)]),
            vals.reshape(-1),
            (p, self.num_nodes),
            check_invariants=False,
        ).coalesce()

    def evaluate(self, node_values: Tensor, weights: Tensor) -> Tensor:
        """Grid values: node_values (B..., *grid_shape) with weights (P..., N) -> (B..., P...)."""
        return evaluate_grid(node_values, weights, self.grid_shape)

    def __call__(self, node_values: Tensor, points: Tensor) -> Tensor:
        """Shortcut: ``evaluate(node_values, weights(points))``."""
        return self.evaluate(node_values, self.weights(points.to(node_values.dtype)))
