"""RELION 5 conventions checked against independent transcriptions of RELION's source.

- pose: ``ParticleSet::getMatrix3x3 = A_subtomo @ A_particle`` with ``Euler::anglesToMatrix3``;
- centre: ``Tomogram::centre = Size / 2.0`` (real division) for rlnCenteredCoordinate*Angst.
"""

from __future__ import annotations

import numpy as np
import torch
from io_projects import PIX, TOMO_PARTICLES, relion5_tomo

from mrepo.graph import Repository
from mrepo.io import SpeciesFiles, import_relion5_tomo
from mrepo.io.poses import compose_subtomogram
from mrepo.kernels.rotations import euler_to_matrix


def relion_a(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION's ``Euler::anglesToMatrix3`` (src/jaz/math/Euler_angles_relion.h), degrees in."""
    sp, cp = np.sin(np.deg2rad(rot)), np.cos(np.deg2rad(rot))
    st, ct = np.sin(np.deg2rad(tilt)), np.cos(np.deg2rad(tilt))
    sc, cc = np.sin(np.deg2rad(psi)), np.cos(np.deg2rad(psi))
    return np.array([[cc * ct * cp - sc * sp, cc * ct * sp + sc * cp, -cc * st],
                     [-sc * ct * cp - cc * sp, -sc * ct * sp + cc * cp, sc * st],
                     [st * cp, st * sp, ct]])


def test_compose_subtomogram_is_relion_matrix3x3():
    rng = np.random.default_rng(5)
    angles = rng.uniform([-180, 0, -180], [180, 180, 180], size=(20, 3))
    sub = rng.uniform([-180, 0, -180], [180, 180, 180], size=(20, 3))
    out = compose_subtomogram(angles, sub)
    for a, s, o in zip(angles, sub, out):
        expected = relion_a(*s) @ relion_a(*a)  # A_subtomo * A_particle
        np.testing.assert_allclose(relion_a(*o), expected, atol=1e-10)
        # mrepo's matrix is the transpose of RELION's
        r = euler_to_matrix(torch.tensor(np.deg2rad(o))).numpy()
        np.testing.assert_allclose(r, expected.T, atol=1e-10)


def test_reverse_order_would_differ():
    a, s = np.array([10.0, 40.0, 70.0]), np.array([30.0, 60.0, -20.0])
    o = compose_subtomogram(a[None], s[None])[0]
    assert not np.allclose(relion_a(*o), relion_a(*a) @ relion_a(*s), atol=1e-3)


def test_odd_tomogram_size_centre(tmp_path):
    root = tmp_path / "proj"
    proj = relion5_tomo(root)
    text = proj["tomograms"].read_text().replace("\t32\t24\t10 \n", "\t33\t25\t11 \n")
    assert text.count("\t33\t25\t11 \n") == 2
    proj["tomograms"].write_text(text)
    repo = Repository.init(str(tmp_path / "repo"))
    sp = SpeciesFiles("ribo", proj["half1"], proj["half2"], proj["mask"], 250.0, "C1")
    import_relion5_tomo(repo, proj["tomograms"], source="ts", project=root, particles=proj["particles"], species=sp)
    pop = repo.population()
    t = repo.particles(repo.species(pop.species["ribo"]).particles)
    got = sorted(map(tuple, t.coordinates[:, 0].tolist()))
    centre = np.array([33, 25, 11]) / 2.0 * PIX  # (16.5, 12.5, 5.5) px, RELION's w0/2.0
    expected = sorted(tuple((np.array(r[1:4], float) + centre).tolist()) for r in TOMO_PARTICLES)
    np.testing.assert_array_equal(got, expected)
