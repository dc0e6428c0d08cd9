"""Point groups: orders, closure, determinants and RELION's axis orientations."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mrepo.kernels.symmetry import symmetry_matrices, symmetry_order

CASES = [
    ("C1", 1),
    ("C2", 2),
    ("C7", 7),
    ("D1", 2),
    ("D2", 4),
    ("D6", 12),
    ("T", 12),
    ("O", 24),
    ("I", 60),
    ("I1", 60),
    ("I2", 60),
    ("I3", 60),
    ("I4", 60),
    ("c3", 3),
    ("i", 60),
]


def _index_of(m: torch.Tensor, group: torch.Tensor) -> int:
    d = (group - m).abs().amax(dim=(-1, -2))
    hits = torch.nonzero(d < 1e-9).flatten()
    assert hits.numel() == 1, "product not (uniquely) in the group"
    return int(hits[0])


@pytest.mark.parametrize("symbol,order", CASES)
def test_order_closure_determinant(symbol, order):
    g = symmetry_matrices(symbol, dtype=torch.float64)
    assert symmetry_order(symbol) == order
    assert g.shape == (order, 3, 3)
    assert torch.equal(g[0], torch.eye(3, dtype=torch.float64))
    np.testing.assert_allclose(torch.linalg.det(g).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose((g @ g.transpose(-1, -2)).numpy(), np.broadcast_to(np.eye(3), g.shape), atol=1e-12)
    # closure: every product is in the group, and the elements are distinct
    table = [[_index_of(a @ b, g) for b in g] for a in g]
    for row in table:  # Latin square: each row a permutation
        assert sorted(row) == list(range(order))


def test_relion_axes():
    # D2: 2-fold about x present; I2: 2-fold about z, 5-fold about (1,0,phi); T: 2-fold about (0, .816, .577)
    def has_rotation(group, axis, angle):
        r = torch.from_numpy(Rotation.from_rotvec(np.asarray(axis) / np.linalg.norm(axis) * angle).as_matrix())
        return (group - r).abs().amax(dim=(-1, -2)).min() < 1e-5  # RELION axes are given to ~6 digits

    phi = (1 + 5**0.5) / 2
    assert has_rotation(symmetry_matrices("D3", torch.float64), [1, 0, 0], math.pi)
    i2 = symmetry_matrices("I", torch.float64)
    assert has_rotation(i2, [0, 0, 1], math.pi)
    assert has_rotation(i2, [1, 0, phi], 2 * math.pi / 5)
    assert has_rotation(i2, [0, 0.356822076, 0.934172364], 2 * math.pi / 3)
    assert not has_rotation(symmetry_matrices("I3", torch.float64), [0, 0, 1], math.pi)
    assert has_rotation(symmetry_matrices("I3", torch.float64), [0, 0, 1], 2 * math.pi / 5)
    assert has_rotation(symmetry_matrices("I1", torch.float64), [1, 0, 0], math.pi)
    assert has_rotation(symmetry_matrices("T", torch.float64), [0, 0.816496, 0.577350], math.pi)
    assert has_rotation(symmetry_matrices("O", torch.float64), [1, 1, 1], 2 * math.pi / 3)


def test_dtype_device_and_copy():
    a = symmetry_matrices("C4")
    assert a.dtype == torch.float32
    a.zero_()
    assert symmetry_matrices("C4")[0, 0, 0] == 1.0


@pytest.mark.parametrize("bad", ["", "C0", "X3", "D", "I5", "C3v", 3])
def test_unknown_symbol(bad):
    with pytest.raises(ValueError, match="symmetry symbol"):
        symmetry_matrices(bad)
