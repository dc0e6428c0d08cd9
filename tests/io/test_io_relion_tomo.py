"""RELION 5 tomography import: every field lands where the convention says."""

from __future__ import annotations

import numpy as np
import pytest
from io_projects import PIX, TOMO_PARTICLES, relion5_tomo
from scipy.spatial.transform import Rotation

from mrepo.graph import Repository
from mrepo.io import SpeciesFiles, import_relion5_tomo
from mrepo.io.raw_access import raw_paths, verify_raw
from mrepo.store import hash_file


def _import(tmp_path, **kw):
    proj = relion5_tomo(tmp_path / "proj", **kw)
    repo = Repository.init(str(tmp_path / "repo"))
    sp = SpeciesFiles("ribo", proj["half1"], proj["half2"], proj["mask"], 250.0, "C1")
    res = import_relion5_tomo(repo, proj["tomograms"], source="ts", project=tmp_path / "proj",
                              particles=proj["particles"], species=sp)
    return repo, res, proj


def test_items_fields(tmp_path):
    repo, res, _ = _import(tmp_path)
    pop = repo.population()
    assert set(pop.sources) == {"ts"} and set(pop.species) == {"ribo"}
    items = {it.name: it for it in (repo.item(h) for h in repo.source(pop.sources["ts"]).items.values())}
    ts1, ts2 = items["TS_01"], items["TS_02"]
    im = ts1.imaging
    assert im["pixel_size"] == PIX and im["voltage"] == 300.0 and im["cs"] == 2.7 and im["amplitude_contrast"] == 0.1
    assert im["hand"] == -1.0 and im["dimensions"] == [32, 24, 3]
    assert im["volume_dimensions"] == [64.0, 48.0, 20.0]
    assert im["pre_exposure"] == [3.0, 0.0, 6.0] and im["exposure"] == [3.0, 3.0, 3.0]
    assert im["acquisition_order"] == [1, 0, 2] and im["tilt_angles"] == [-3.0, 0.0, 3.0]
    ctf = repo.objects.get_array(ts1.models["ctf"])
    np.testing.assert_array_equal(ctf, [[30000, 29800, 45], [30100, 29900, 46], [30200, 30000, 47]])
    np.testing.assert_array_equal(repo.objects.get_array(ts1.models["stage_angles"]),
                                  [[0.0, -2.5, 85.5], [0.1, 0.5, 85.5], [0.2, 3.5, 85.5]])
    np.testing.assert_array_equal(repo.objects.get_array(ts1.models["global_shifts"]),
                                  [[0.0, 0.0], [1.25, -0.75], [2.5, -1.5]])
    # TS_01: three tilt images -> manifest; TS_02: one stack file referenced in place
    assert ts1.raw.format == "manifest" and len(raw_paths(repo, ts1)) == 3
    stack = tmp_path / "proj/Stacks/TS_02.mrcs"
    assert ts2.raw.hash == hash_file(stack) and raw_paths(repo, ts2) == [stack.resolve()] and not ts2.raw.stored
    verify_raw(repo, ts1.raw)
    verify_raw(repo, ts2.raw)


def test_particles_fields(tmp_path):
    repo, res, _ = _import(tmp_path)
    pop = repo.population()
    sp = repo.species(pop.species["ribo"])
    assert (sp.pixel_size, sp.box, sp.diameter, sp.symmetry) == (4.0, 8, 250.0, "C1")
    t = repo.particles(sp.particles)
    assert len(t) == len(TOMO_PARTICLES) and len(set(t.ids.tolist())) == len(t)
    items = {repo.item(h).name: repo.item(h) for h in repo.source(pop.sources["ts"]).items.values()}
    assert sorted(sp.contributors) == sorted(repo.source(pop.sources["ts"]).items.values())
    centre = np.array([16, 12, 5]) * PIX  # (Size / 2) * pixel
    for r in TOMO_PARTICLES:
        row = int(np.nonzero((t.angles[:, 0] == r[4:7]).all(1))[0][0])
        np.testing.assert_allclose(t.coordinates[row, 0], np.array(r[1:4]) + centre, rtol=0, atol=1e-12)
        assert t.half[row] == r[10] and t.item_keys()[row] == items[r[0]].key
    # every optics group and the general block are kept with the species
    assert sp.metadata["relion"]["general"] == {"rlnTomoSubTomosAre2DStacks": 1}
    assert sp.metadata["relion"]["optics"][0]["rlnTomoSubtomogramBinning"] == 2.0


def test_subtomogram_angles_compose(tmp_path):
    rows = [["TS_01", 0.0, 0.0, 0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 1]]
    repo, _, _ = _import(tmp_path, particles=rows)
    t = repo.particles(repo.species(repo.population().species["ribo"]).particles)
    # RELION: A = A_subtomo @ A_particle with A = Euler_angles2matrix = R^T  ->  R = R_particle @ R_subtomo
    a_sub = Rotation.from_euler("ZYZ", [40, 50, 60], degrees=True).as_matrix().T
    a_par = Rotation.from_euler("ZYZ", [10, 20, 30], degrees=True).as_matrix().T
    got = Rotation.from_euler("ZYZ", t.angles[0, 0], degrees=True).as_matrix()
    np.testing.assert_allclose(got, (a_sub @ a_par).T, atol=1e-12)


def test_reimport_same_hash_and_copy(tmp_path):
    repo, res, proj = _import(tmp_path)
    sp = SpeciesFiles("ribo", proj["half1"], proj["half2"], proj["mask"], 250.0, "C1")
    repo2 = Repository.init(str(tmp_path / "repo2"))
    res2 = import_relion5_tomo(repo2, proj["tomograms"], source="ts", project=tmp_path / "proj",
                               particles=proj["particles"], species=sp)
    assert res2.population == res.population
    repo3 = Repository.init(str(tmp_path / "repo3"))
    res3 = import_relion5_tomo(repo3, proj["tomograms"], source="ts", project=tmp_path / "proj", copy=True)
    item = repo3.item(next(iter(repo3.source(res3.sources["ts"]).items.values())))
    assert item.raw.stored
    assert repo3.objects.get_blob(item.raw.hash) is not None


if __name__ == "__main__":
    pytest.main([__file__])
