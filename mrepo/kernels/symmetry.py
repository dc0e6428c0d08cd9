"""Point-group symmetry operators in RELION's standard orientations.

Supported symbols (case-insensitive): ``C<n>``, ``D<n>`` (n >= 1), ``T``, ``O``,
``I`` (= ``I2``), ``I1``, ``I2``, ``I3``, ``I4``. Generators are RELION's
(``SymList::fill_symmetry_class``):

* Cn: n-fold about z.  Dn: n-fold about z and 2-fold about x.
* T: 3-fold about z, 2-fold about (0, sqrt(2/3), sqrt(1/3)).
* O: 3-fold about (1, 1, 1)/sqrt(3), 4-fold about z.
* I2 (default I, Crowther / Heymann's "2-fold on z"): 2-fold about z, 5-fold about
  (1, 0, phi)/|.|, 3-fold about (0, 1/phi, phi)/|.|;
  I1: 2-fold about x; I3: 5-fold about z; I4: the other 5-fold in xz.

Matrices act on column vectors (x, y, z), as in :mod:`mrepo.kernels.rotations`.
The identity is always first; the rest follow in a deterministic order. No
Fourier layout is involved in this module.
"""

from __future__ import annotations

import functools
import math
import re

import torch
from torch import Tensor

__all__ = ["symmetry_matrices", "symmetry_order"]

_PHI = (1.0 + math.sqrt(5.0)) / 2.0
# I3/I4 are I2 rotated about y by -/+ atan(1/phi): sin and cos of that angle
_SA = 1.0 / math.sqrt(1.0 + _PHI * _PHI)
_CA = _PHI / math.sqrt(1.0 + _PHI * _PHI)
_Generator = tuple[int, tuple[float, float, float]]

_FIXED: dict[str, list[_Generator]] = {
    "T": [(3, (0.0, 0.0, 1.0)), (2, (0.0, math.sqrt(2.0 / 3.0), math.sqrt(1.0 / 3.0)))],
    "O": [(3, (1.0, 1.0, 1.0)), (4, (0.0, 0.0, 1.0))],
    "I1": [(2, (1.0, 0.0, 0.0)), (5, (_PHI, 0.0, -1.0)), (3, (_PHI * _PHI, 1.0, 0.0))],
    "I2": [(2, (0.0, 0.0, 1.0)), (5, (1.0, 0.0, _PHI)), (3, (0.0, 1.0, _PHI * _PHI))],
    "I3": [
        (2, (-1.0, 0.0, _PHI)),
        (5, (0.0, 0.0, 1.0)),
        (3, (-_PHI * _PHI * _SA, 1.0, _PHI * _PHI * _CA)),
    ],
    "I4": [
        (2, (1.0, 0.0, _PHI)),
        (5, (2.0, 0.0, 1.0)),
        (3, (_PHI * _PHI * _SA, 1.0, _PHI * _PHI * _CA)),
    ],
}
_ORDERS = {"T": 12, "O": 24, "I1": 60, "I2": 60, "I3": 60, "I4": 60}


def _parse(symbol: str) -> tuple[str, int]:
    if not isinstance(symbol, str):
        raise ValueError(f"symmetry symbol must be a string, got {type(symbol).__name__}")
    s = symbol.strip().upper()
    if s == "I":
        s = "I2"
    if s in _FIXED:
        return s, 0
    m = re.fullmatch(r"([CD])(\d+)", s)
    if m is None or int(m.group(2)) < 1:
        raise ValueError(f"unknown symmetry symbol {symbol!r}; expected C<n>, D<n>, T, O, I, I1-I4")
    return m.group(1), int(m.group(2))


def symmetry_order(symbol: str) -> int:
    """Number of operators of the point group: Cn n, Dn 2n, T 12, O 24, I 60."""
    kind, n = _parse(symbol)
    if kind == "C":
        return n
    if kind == "D":
        return 2 * n
    return _ORDERS[kind]


def _axis_rotation(fold: int, axis: tuple[float, float, float], step: int) -> Tensor:
    a = torch.tensor(axis, dtype=torch.float64)  # host
    a = a / torch.linalg.vector_norm(a)
    t = 2.0 * math.pi * step / fold
    k = torch.tensor([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]], dtype=torch.float64)  # host
    return torch.eye(3, dtype=torch.float64) + math.sin(t) * k + (1.0 - math.cos(t)) * (k @ k)  # host


def _generators(kind: str, n: int) -> list[_Generator]:
    if kind == "C":
        return [(n, (0.0, 0.0, 1.0))]
    if kind == "D":
        return [(n, (0.0, 0.0, 1.0)), (2, (1.0, 0.0, 0.0))]
    return _FIXED[kind]


def _close(elements: list[Tensor], generators: list[Tensor], order: int) -> list[Tensor]:
    """Breadth-first closure of float64 rotations under right-multiplication by the generators."""
    out = list(elements)
    stack = torch.stack(out)
    i = 0
    while i < len(out):
        for g in generators:
            prod = out[i] @ g
            if (stack - prod).abs().amax(dim=(-1, -2)).min() > 1e-6:
                out.append(prod)
                stack = torch.cat([stack, prod[None]])
                if len(out) > order:
                    raise RuntimeError("symmetry closure exceeded the group order")
        i += 1
    return out


def symmetry_matrices(
    symbol: str, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """(n, 3, 3) rotation matrices of point group ``symbol``, identity first.

    Built from RELION's generators (module docstring) in float64 and closed
    under multiplication; entries within 1e-12 of an integer are snapped.
    """
    kind, n = _parse(symbol)
    return _matrices64(kind, n).to(dtype=dtype, device=device, copy=True)


@functools.lru_cache(maxsize=64)
def _matrices64(kind: str, n: int) -> Tensor:
    order = n if kind == "C" else 2 * n if kind == "D" else _ORDERS[kind]
    symbol = f"{kind}{n or ''}"
    gens = [_axis_rotation(fold, axis, 1) for fold, axis in _generators(kind, n)]
    elements = _close([torch.eye(3, dtype=torch.float64)], gens, order)  # host: cached, moved by symmetry_matrices
    if len(elements) != order:
        raise RuntimeError(f"symmetry {symbol}: built {len(elements)} operators, expected {order}")
    mats = torch.stack(elements)
    snapped = torch.round(mats)
    return torch.where((mats - snapped).abs() < 1e-12, snapped, mats)
