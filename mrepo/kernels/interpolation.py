"""Point sampling of a 3D Friedel-symmetric Fourier grid: trilinear, quadratic and
cubic B-spline.

Both samplers are ``torch.autograd.Function`` s whose forward pass computes, from
the same gathered neighbours, the value and (when the coordinates need a gradient)
its analytic Jacobian w.r.t. the coordinates; backward is then a cheap product,
avoiding autograd's generic index backward. Points are processed in chunks so that
no (points × taps) intermediate is ever larger than a few MiB. The B-spline samplers
gather each point's T² table rows and contract them over (z, y) in one fused
``embedding_bag`` (weighted sum of rows), then over the row's x taps; the forward
without a coordinate gradient builds no derivative weights at all.

Fourier layouts (``D`` padded box, ``h = D // 2``, frequencies in cycles per ``D``
voxels, real-space origin at voxel ``D // 2``):

* linear: the centred half-transform of :mod:`mrepo.kernels.gridding`, complex
  ``(2h+1, 2h+1, h+1)``, ``[iz, iy, ix]`` = ``F(iz - h, iy - h, ix)``.
* quadratic and cubic ("B-spline row table"): real ``(2h+6, 2h+6, h+2, 8)``; entry
  ``[iz, iy, ix]`` holds ``Re F(kz, ky, kx + j)`` for ``j = 0..3`` then
  ``Im F(kz, ky, kx + j)`` for ``j = 0..3``, with ``kz = iz - h - 2``,
  ``ky = iy - h - 2``, ``kx = ix - 1``. Values outside ``[-h, h]`` are the DFT's
  periodic continuation and negative ``kx`` its Friedel mates, so every
  neighbourhood of a point with ``|k| <= h + 1`` is in range. Built by
  :func:`bspline_table`; 4× the memory of the half-transform.

Coordinates: ``(M, 3)`` real as ``(x, y, z)`` frequency indices; points with
``x < 0`` are read at ``-k`` and conjugated (``F(-k) = conj F(k)``).

B-splines are not interpolating: they smooth the samples with a kernel whose
real-space transform is ``sinc⁴(r / D)`` (cubic; quadratic ``sinc³``, trilinear
``sinc²``), so the volume must
be divided by that before the 3D FFT (see :func:`mrepo.kernels.gridding.gridding_correction`).
Its periodic ghosts at distance ``D`` are attenuated as ``(sinc(1 - r/D)/sinc(r/D))⁴``
instead of squared, which is what makes pad-2 projections accurate everywhere in
the inscribed sphere.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

_CHUNK_LINEAR = 32768
_CHUNK_SPLINE = 8192


def bspline_table_shape(padded_size: int) -> tuple[int, int, int, int]:
    """Shape ``(2h+6, 2h+6, h+2, 8)`` of the cubic B-spline row table for box ``padded_size``."""
    h = padded_size // 2
    return (2 * h + 6, 2 * h + 6, h + 2, 8)


def bspline_table(rfft: Tensor) -> Tensor:
    """Row table (see module docstring) from a 3D ``torch.fft.rfftn`` of a (D, D, D)
    real volume, shape (D, D, D//2+1) complex, standard (non-centred) layout.
    Differentiable w.r.t. ``rfft``."""
    big = rfft.shape[0]
    if rfft.ndim != 3 or rfft.shape != (big, big, big // 2 + 1) or not rfft.is_complex():
        raise ValueError(f"rfft must be complex (D, D, D//2+1), got {tuple(rfft.shape)} {rfft.dtype}")
    h = big // 2
    dev = rfft.device
    k = torch.arange(-h - 2, h + 4, device=dev)
    direct = rfft.index_select(0, k % big).index_select(1, k % big)
    mirror = rfft.index_select(0, (-k) % big).index_select(1, (-k) % big)
    cols = [  # kx = -1 .. h+3: periodic, then Friedel for kx mod D beyond the rfft's h
        direct[:, :, x % big] if x % big <= h else mirror[:, :, (-x) % big].conj()
        for x in range(-1, h + 4)
    ]
    ext = torch.stack(cols, dim=-1)  # (2h+6, 2h+6, h+5), kx = -1 .. h+3
    rows = torch.view_as_real(ext).unfold(2, 4, 1)  # (z, y, h+2, 2, 4)
    return rows.reshape(*rows.shape[:3], 8).contiguous()


def _mirror(coords: Tensor) -> tuple[Tensor, Tensor]:
    """(sign (M,), coordinates mirrored to x >= 0 (M, 3)), both detached."""
    c = coords.detach()
    sign = torch.where(c[:, 0] < 0, -1.0, 1.0).to(c.dtype)
    return sign, c * sign[:, None]


def _finish(out: Tensor, sign: Tensor) -> Tensor:
    """(k, n, 2) real [value, d/dx, d/dy, d/dz][:k] of the mirrored points -> (k, n)
    complex of the original points: conjugate where mirrored, chain rule of -k."""
    out[0, :, 1] *= sign
    out[1:, :, 0] *= sign
    return torch.view_as_complex(out)


def _run_chunks(ctx, coords: Tensor, chunk: int, evaluate, dtype: torch.dtype) -> Tensor:
    """Evaluate ``evaluate(mirrored coords, jac) -> (k, n, 2)`` over chunks of points;
    save the Jacobian (M, 3) complex for backward; return the values (M,) complex."""
    jac = ctx.needs_input_grad[1]
    sign, c = _mirror(coords)
    m = c.shape[0]
    vals = torch.empty(m, dtype=dtype, device=c.device)
    jacs = torch.empty((m, 3) if jac else (0, 3), dtype=dtype, device=c.device)
    for s in range(0, m, chunk):
        out = _finish(evaluate(c[s : s + chunk], jac), sign[s : s + chunk])
        vals[s : s + chunk] = out[0]
        if jac:
            jacs[s : s + chunk] = out[1:].t()
    ctx.save_for_backward(coords.detach(), jacs)
    return vals


def _gather_index(base: Tensor, offsets: Tensor) -> Tensor:
    """Flat indices (taps * n,), taps-major, of every point's neighbourhood."""
    return (offsets[:, None] + base[None, :]).reshape(-1)


def _complex_dtype(real: torch.dtype) -> torch.dtype:
    return torch.complex64 if real == torch.float32 else torch.complex128


@functools.lru_cache(maxsize=16)
def _offsets(shape: tuple[int, ...], taps: int, device: torch.device) -> Tensor:
    """Flat offsets of a taps³ (linear) or taps² (row table) neighbourhood."""
    o = torch.arange(taps, device=device)
    if len(shape) == 3:
        _, ny, nx = shape
        return (o[:, None, None] * (ny * nx) + o[None, :, None] * nx + o[None, None, :]).reshape(-1)
    _, ny, nx, _ = shape
    return (o[:, None] * (ny * nx) + o[None, :] * nx).reshape(-1)


@functools.lru_cache(maxsize=32)
def _bounds(
    shift: tuple[float, ...], upper: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Constant (3,) tensors: index shift of (x, y, z) and the largest valid start."""
    return (
        torch.tensor(shift, dtype=dtype, device=device),
        torch.tensor(upper, dtype=dtype, device=device),
    )


def _linear_cells(c: Tensor, shape: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """Flat index of each lower corner (n,) and fractions (n, 3) as (x, y, z)."""
    nz, ny, nx = shape
    h = nx - 1
    shift, hi = _bounds((0.0, h, h), (nx - 2, ny - 2, nz - 2), c.dtype, c.device)
    pos = c + shift
    low = torch.minimum(torch.floor(pos).clamp_(min=0), hi)
    base = ((low[:, 2] * ny + low[:, 1]) * nx + low[:, 0]).long()
    return base, pos - low


def _linear_weights(t: Tensor, jac: bool) -> Tensor:
    """(1 or 4, 8, n) trilinear weights [w, dw/dx, dw/dy, dw/dz] of the taps (z, y, x),
    x fastest, for fractions ``t`` (n, 3). Built from contiguous (n,) columns and
    stacked taps-major: broadcasting over tiny trailing dimensions is slow on CPU."""
    tx, ty, tz = t.t().contiguous().unbind(0)
    ux, uy, uz = 1 - tx, 1 - ty, 1 - tz
    zy = (uz * uy, uz * ty, tz * uy, tz * ty)
    cols = [q for p in zy for q in (p * ux, p * tx)]
    if jac:
        cols += [q for p in zy for q in (-p, p)]
        cols += [q for p in (-uz, uz, -tz, tz) for q in (p * ux, p * tx)]
        cols += [q for p in (-uy, -ty, uy, ty) for q in (p * ux, p * tx)]
    return torch.stack(cols).view(-1, 8, t.shape[0])


def _linear_lerp(taps: Tensor, t: Tensor, jac: bool) -> Tensor:
    """Trilinear values of the taps (z, y, x, n, 2) at fractions ``t`` (n, 3) as nested
    interpolations along x, then y, then z (7 lerps instead of 8 weighted taps) ->
    (1 or 4, n, 2) [value, d/dx, d/dy, d/dz]; derivatives are differences of the partial lerps."""
    tx, ty, tz = (x[:, None] for x in t.t().contiguous().unbind(0))
    lo, hi = taps.select(2, 0), taps.select(2, 1)
    dx = hi - lo  # (z, y, n, 2): d/dx on the 4 x edges
    ex = lo + tx * dx  # values on the 4 x edges
    dy = ex.select(1, 1) - ex.select(1, 0)  # (z, n, 2)
    ey = ex.select(1, 0) + ty * dy  # values on the 2 z edges
    dz = ey[1] - ey[0]
    value = ey[0] + tz * dz
    if not jac:
        return value[None]
    dxy = dx.select(1, 0) + ty * (dx.select(1, 1) - dx.select(1, 0))  # d/dx on the 2 z edges
    return torch.stack((value, dxy[0] + tz * (dxy[1] - dxy[0]), dy[0] + tz * (dy[1] - dy[0]), dz))


def _unique_blocks(coords: Tensor, repeat: int, points: int) -> Tensor:
    """The first of every ``repeat`` consecutive blocks of ``points`` rows of ``coords`` (M, 3)."""
    return coords.reshape(-1, repeat, points, 3)[:, 0].reshape(-1, 3)


def _repeat_blocks(x: Tensor, repeat: int, points: int) -> Tensor:
    """Rows (U * points, ...) of unique blocks -> (U * repeat * points, ...), each block ``repeat`` times."""
    blocks = x.reshape(-1, 1, points, *x.shape[1:])
    return blocks.expand(-1, repeat, *blocks.shape[2:]).reshape(-1, *x.shape[1:])


class _SampleLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grid: Tensor, coords: Tensor, repeat: int = 1,  # type: ignore[override]
                points: int = 0) -> Tensor:
        shape = tuple(grid.shape)
        flat = grid.detach().reshape(-1)  # one complex element per tap: index_select costs per element
        offs = _offsets(shape, 2, grid.device)

        def evaluate(c: Tensor, jac: bool) -> Tensor:
            base, t = _linear_cells(c, shape)
            taps = torch.view_as_real(flat.index_select(0, _gather_index(base, offs))).view(2, 2, 2, -1, 2)
            return _linear_lerp(taps, t, jac)

        ctx.shape, ctx.repeat, ctx.points = shape, repeat, points
        if repeat == 1:
            return _run_chunks(ctx, coords, _CHUNK_LINEAR, evaluate, grid.dtype)
        # every block equals the first of its group (the caller's promise): sample those only
        vals = _run_chunks(ctx, _unique_blocks(coords, repeat, points), _CHUNK_LINEAR, evaluate, grid.dtype)
        return _repeat_blocks(vals, repeat, points)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:  # type: ignore[override]
        coords, jac = ctx.saved_tensors  # of the sampled (first) blocks only when repeat > 1
        g_grid = g_coords = None
        if ctx.needs_input_grad[1]:  # every point's own gradient, through the Jacobian of its block's first
            if ctx.repeat > 1:
                jac = _repeat_blocks(jac, ctx.repeat, ctx.points)
            g_coords = (grad.real[:, None] * jac.real + grad.imag[:, None] * jac.imag).to(coords.dtype)
        if ctx.needs_input_grad[0]:
            if ctx.repeat > 1:  # equal points: their gradients land on the same taps
                grad = grad.reshape(-1, ctx.repeat, ctx.points).sum(1).reshape(-1)
            sign, c = _mirror(coords)
            base, t = _linear_cells(c, ctx.shape)
            w = _linear_weights(t, False)[0]  # (8, n)
            g = torch.view_as_real(grad).clone()
            g[:, 1] *= sign  # conjugate where mirrored
            contrib = (w[:, :, None] * g[None]).reshape(-1, 2)
            g_grid = torch.zeros(ctx.shape, dtype=grad.dtype, device=grad.device)
            index = _gather_index(base, _offsets(ctx.shape, 2, grad.device))
            torch.view_as_real(g_grid).view(-1, 2).index_add_(0, index, contrib.to(g.dtype))
        return g_grid, g_coords, None, None


def _spline_cells(c: Tensor, shape: tuple[int, ...], degree: int) -> tuple[Tensor, Tensor]:
    """Flat row index of each neighbourhood's first row (n,) and offsets ``t`` (n, 3)
    from the centre cell: ``t`` in [0, 1) (cubic) or [-0.5, 0.5) (quadratic)."""
    nz, ny, nx, _ = shape
    h = (nz - 6) // 2
    cell = torch.floor(c + 0.5) if degree == 2 else torch.floor(c)
    shift, hi = _bounds((0.0, h + 1, h + 1), (nx - 1, ny - 4, nz - 4), c.dtype, c.device)
    start = torch.minimum((cell + shift).clamp_(min=0), hi)
    base = ((start[:, 2] * ny + start[:, 1]) * nx + start[:, 0]).long()
    return base, c - cell


def _bspline(t: Tensor, degree: int, deriv: bool = True) -> tuple[Tensor, Tensor | None]:
    """B-spline weights and derivatives (degree + 1, ...) of the taps at offsets ``t`` (...);
    derivatives None unless ``deriv``."""
    t2 = t * t
    if degree == 2:
        a, b = 0.5 - t, 0.5 + t
        w = torch.stack((0.5 * a * a, 0.75 - t2, 0.5 * b * b))
        return w, torch.stack((-a, -2 * t, b)) if deriv else None
    t3 = t2 * t
    s = 1 - t
    w = torch.stack((s * s * s, 3 * t3 - 6 * t2 + 4, -3 * t3 + 3 * t2 + 3 * t + 1, t3)) / 6
    if not deriv:
        return w, None
    return w, torch.stack((-0.5 * s * s, 1.5 * t2 - 2 * t, -1.5 * t2 + t + 0.5, 0.5 * t2))


def _x_taps(w: Tensor) -> Tensor:
    """Pad (taps, n) x weights to the table rows' 4 taps."""
    return w if w.shape[0] == 4 else torch.cat((w, w.new_zeros(4 - w.shape[0], w.shape[1])))


def _row_sums(rows: Tensor, index: Tensor, weights: Tensor) -> Tensor:
    """Weighted sums (n, 8) of table rows: ``sum_j weights[:, j] * rows[index[:, j]]``
    for ``rows`` (R, 8), ``index`` (n, T²) and ``weights`` (n, T²). One fused
    gather-and-accumulate (``embedding_bag``): no (n, T², 8) intermediate is built."""
    return torch.nn.functional.embedding_bag(index, rows, per_sample_weights=weights, mode="sum")


def _spline_evaluate(rows: Tensor, index: Tensor, t: Tensor, degree: int, jac: bool) -> Tensor:
    """B-spline values of the mirrored points: table ``rows`` (R, 8), each point's
    T² row indices ``index`` (n, T²) (z-major, then y; T = degree + 1) and offsets
    ``t`` (n, 3) -> (k, n, 2) [value, d/dx, d/dy, d/dz][:k] of (re, im), k = 1
    without Jacobian, 4 with it. Contracts (z, y) while gathering, then x. Weights
    are built as contiguous (n,) columns: broadcasting over tiny trailing
    dimensions is slow on CPU."""
    n, taps = t.shape[0], degree + 1
    w, d = _bspline(t.t().contiguous(), degree, jac)  # (T, 3, n): taps, (x, y, z), points
    wx, wy, wz = w.unbind(1)
    zy = [wz[:, None] * wy[None]]
    if d is not None:
        dx, dy, dz = d.unbind(1)
        zy += [wz[:, None] * dy[None], dz[:, None] * wy[None]]
    k = len(zy)
    # one bag per (point, weight set), a point's k bags adjacent: its rows are gathered
    # k times in a row, from cache after the first
    wts = torch.stack(zy).view(k, taps * taps, n).permute(2, 0, 1).reshape(n * k, taps * taps)
    idx = index if k == 1 else index[:, None, :].expand(n, k, taps * taps).reshape(n * k, -1)
    sums = _row_sums(rows, idx, wts).view(n, k, 8)
    out = [_x_contract(sums[:, 0], wx)]
    if d is not None:
        out += [_x_contract(sums[:, 0], dx), _x_contract(sums[:, 1], wx), _x_contract(sums[:, 2], wx)]
    return torch.stack(out)


def _x_contract(acc: Tensor, wx: Tensor) -> Tensor:
    """Row sums ``acc`` (n, 8) [re x 4 taps, im x 4 taps] (a strided view is fine) and
    x weights ``wx`` (T, n) -> (n, 2) [re, im]: multiply-adds on (n,) columns."""
    re, im = acc[:, 0] * wx[0], acc[:, 4] * wx[0]
    for j in range(1, wx.shape[0]):
        re.addcmul_(acc[:, j], wx[j])
        im.addcmul_(acc[:, 4 + j], wx[j])
    return torch.stack((re, im), dim=-1)


class _SampleSpline(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table: Tensor, coords: Tensor, degree: int) -> Tensor:  # type: ignore[override]
        shape = tuple(table.shape)
        rows = table.detach().view(-1, 8)
        offs = _offsets(shape, degree + 1, table.device)

        def evaluate(c: Tensor, jac: bool) -> Tensor:
            base, t = _spline_cells(c, shape, degree)
            return _spline_evaluate(rows, base[:, None] + offs[None, :], t, degree, jac)

        ctx.shape, ctx.degree = shape, degree
        return _run_chunks(ctx, coords, _CHUNK_SPLINE, evaluate, _complex_dtype(table.dtype))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        coords, jac = ctx.saved_tensors
        g_table = g_coords = None
        if ctx.needs_input_grad[1]:
            g_coords = (grad.real[:, None] * jac.real + grad.imag[:, None] * jac.imag).to(coords.dtype)
        if ctx.needs_input_grad[0]:
            sign, c = _mirror(coords)
            base, t = _spline_cells(c, ctx.shape, ctx.degree)
            wx, wy, wz = _bspline(t.t().contiguous(), ctx.degree, False)[0].unbind(1)
            g = torch.view_as_real(grad).clone()
            g[:, 1] *= sign  # conjugate where mirrored
            gx = (g[:, :, None] * _x_taps(wx).t()[:, None, :]).reshape(-1, 8)  # (n, [re, im] x 4 taps)
            wzy = (wz[:, None] * wy[None]).view(-1, c.shape[0], 1)
            g_table = torch.zeros(ctx.shape, dtype=g.dtype, device=grad.device)
            index = _gather_index(base, _offsets(ctx.shape, ctx.degree + 1, grad.device))
            g_table.view(-1, 8).index_add_(0, index, (wzy * gx[None]).reshape(-1, 8))
        return g_table, g_coords, None


def sample_linear(grid: Tensor, coords: Tensor, *, repeat: int = 1, points: int = 0) -> Tensor:
    """Trilinear values (M,) complex of the centred half-transform ``grid``
    (2h+1, 2h+1, h+1) complex at ``coords`` (M, 3) (x, y, z), ``|k| <= h``.
    Lower corners are clamped so that points on the outer planes stay exact.
    Differentiable w.r.t. ``grid`` and ``coords``.

    ``repeat > 1``: ``coords`` are groups of ``repeat`` blocks of ``points`` rows whose blocks are
    equal (e.g. one particle's slice in every frame of a movie whose pose does not change); only
    each group's first block is sampled and its values and Jacobian are used for all (the same
    values and coordinate gradients as sampling every block; the caller checks the equality)."""
    if grid.ndim != 3 or not grid.is_complex() or grid.shape[0] != 2 * grid.shape[2] - 1:
        raise ValueError(f"grid must be a complex centred half-transform (2h+1, 2h+1, h+1), got {tuple(grid.shape)}")
    _check_coords(coords)
    if repeat > 1 and (points < 1 or coords.shape[0] % (repeat * points)):
        raise ValueError(f"{coords.shape[0]} points are not groups of {repeat} blocks of {points}")
    return _SampleLinear.apply(grid.contiguous(), coords.to(grid.real.dtype), repeat, points)


def _check_table(table: Tensor) -> None:
    h = (table.shape[0] - 6) // 2 if table.ndim == 4 else -1
    if table.ndim != 4 or table.is_complex() or h < 1 or tuple(table.shape) != bspline_table_shape(2 * h):
        raise ValueError(f"table must be a real B-spline row table (2h+6, 2h+6, h+2, 8), got {tuple(table.shape)}")


def sample_cubic(table: Tensor, coords: Tensor) -> Tensor:
    """Cubic B-spline values (M,) complex of a row ``table`` (:func:`bspline_table`)
    at ``coords`` (M, 3) (x, y, z), ``|k| <= h + 1``; 64 taps, C² in ``coords``.
    Differentiable w.r.t. both."""
    _check_table(table)
    _check_coords(coords)
    return _SampleSpline.apply(table.contiguous(), coords.to(table.dtype), 3)


def sample_quadratic(table: Tensor, coords: Tensor) -> Tensor:
    """Quadratic B-spline values (M,) complex of a row ``table`` (:func:`bspline_table`)
    at ``coords`` (M, 3) (x, y, z), ``|k| <= h + 1``; 27 taps, C¹ in ``coords``, real-space
    transform sinc³. Differentiable w.r.t. both."""
    _check_table(table)
    _check_coords(coords)
    return _SampleSpline.apply(table.contiguous(), coords.to(table.dtype), 2)


def _check_coords(coords: Tensor) -> None:
    if coords.ndim != 2 or coords.shape[1] != 3 or coords.is_complex():
        raise ValueError(f"coords must be real (M, 3) as (x, y, z), got {tuple(coords.shape)}")
