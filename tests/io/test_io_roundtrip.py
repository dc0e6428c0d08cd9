"""import -> export -> import gives the same population hash; exported files read back exactly."""

from __future__ import annotations

import io
import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile
from io_projects import relion5_tomo, relion_spa, write_mrc

from mrepo.graph import Repository
from mrepo.io import SpeciesFiles, import_relion5_tomo, import_relion_spa, import_sim
from mrepo.io.export_relion import export_relion


def _species(folder: Path, name: str, diameter: float, symmetry: str) -> SpeciesFiles:
    return SpeciesFiles(name, folder / "half1.mrc", folder / "half2.mrc", folder / "mask.mrc", diameter, symmetry)


def _check_files(out: Path) -> None:
    for p in out.rglob("*.mrc"):
        buf = io.StringIO()
        assert mrcfile.validate(p, print_file=buf), buf.getvalue()
    for p in out.rglob("*.star"):
        assert starfile.read(p, always_dict=True)


def test_relion5_tomo_roundtrip(tmp_path):
    proj = relion5_tomo(tmp_path / "proj")
    repo = Repository.init(str(tmp_path / "repo"))
    sp = SpeciesFiles("ribo", proj["half1"], proj["half2"], proj["mask"], 250.0, "C1")
    res = import_relion5_tomo(repo, proj["tomograms"], source="ts", project=tmp_path / "proj",
                              particles=proj["particles"], species=sp)
    out = tmp_path / "out"
    export_relion(repo, "main", out)
    _check_files(out)
    with mrcfile.open(out / "ribo/half1.mrc") as m:
        assert float(m.voxel_size.x) == 4.0 and m.data.shape == (8, 8, 8)
        with mrcfile.open(proj["half1"]) as orig:
            np.testing.assert_array_equal(m.data, orig.data)
    ts = starfile.read(out / "tilt_series/TS_01.star")
    np.testing.assert_array_equal(ts["rlnTomoYTilt"], [-2.5, 0.5, 3.5])
    repo2 = Repository.init(str(tmp_path / "repo2"))
    res2 = import_relion5_tomo(repo2, out / "tomograms.star", source="ts", project=out,
                               particles=out / "ribo/particles.star", species=_species(out / "ribo", "ribo", 250.0,
                                                                                       "C1"))
    assert res2.population == res.population


def test_relion_spa_roundtrip(tmp_path):
    proj = relion_spa(tmp_path / "proj")
    repo = Repository.init(str(tmp_path / "repo"))
    sp = SpeciesFiles("apo", proj["half1"], proj["half2"], proj["mask"], 120.0, "C2")
    res = import_relion_spa(repo, proj["particles"], source="mics", project=tmp_path / "proj", species=sp)
    out = tmp_path / "out"
    export_relion(repo, "main", out)
    _check_files(out)
    repo2 = Repository.init(str(tmp_path / "repo2"))
    res2 = import_relion_spa(repo2, out / "apo/particles.star", source="mics", project=out,
                             micrographs=out / "micrographs.star", species=_species(out / "apo", "apo", 120.0, "C2"))
    assert res2.population == res.population


@pytest.fixture(scope="module")
def sim_tilts(tmp_path_factory) -> Path:
    """A tiny simulator folder written in the writer's layout (stack, maps, truth/initial JSON)."""
    root = tmp_path_factory.mktemp("sim")
    rng = np.random.default_rng(3)
    write_mrc(root / "tilts/ts0000.mrc", rng.normal(size=(3, 24, 32)), 2.0)
    write_mrc(root / "species/s1/map.mrc", rng.normal(size=(8, 8, 8)), 2.0)
    write_mrc(root / "species/s1/mask.mrc", np.ones((8, 8, 8)), 2.0)
    item = {"name": "ts0000", "kind": "tilts", "image_size_px": [32, 24], "n_images": 3, "dose": [3.0] * 3,
            "pre_exposure": [3.0, 0.0, 6.0], "acquisition_order": [1, 0, 2], "nominal_tilt_deg": [-3.0, 0.0, 3.0],
            "volume_size_A": [64.0, 48.0, 20.0], "handedness": 1.0}
    model = {"name": "ts0000", "kind": "tilts", "defocus_u_A": [3e4, 3.01e4, 3.02e4],
             "defocus_v_A": [2.9e4, 2.91e4, 2.92e4], "astigmatism_deg": [1.0, 2.0, 3.0], "xtilt_deg": [0.0] * 3,
             "ytilt_deg": [-3.1, 0.2, 3.3], "zrot_deg": [85.0] * 3, "shifts_A": [[0.5, 1.0], [0.0, 0.0], [-1.0, 2.0]]}
    particles = [{"id": i + 1, "species": "s1", "item": "ts0000", "half_set": 1 + i % 2,
                  "coordinates_A": [[10.0 + 7.3 * i, 20.1 - i, 5.7 + i]], "angles_deg": [[i * 10.0, 45.0, -i * 3.0]]}
                 for i in range(4)]
    optics = {"voltage_kv": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.07, "pixel_size": 2.0}
    species = [{"name": "s1", "diameter_A": 30.0, "symmetry": "C1", "pixel_size_A": 2.0, "box": 8,
                "map": "species/s1/map.mrc", "mask": "species/s1/mask.mrc"}]
    dump = {"truth.json": {"format": "mrepo-sim/1", "optics": optics, "species": species,
                           "items": [{**item, **model}], "particles": particles},
            "initial.json": {"format": "mrepo-sim/1", "optics": optics, "items": [model], "particles": particles},
            "dataset.json": {"format": "mrepo-sim/1", "kind": "tilts", "seed": 0,
                             "items": [{"name": "ts0000", "stack": "tilts/ts0000.mrc", "n_images": 3}]}}
    for name, obj in dump.items():
        (root / name).write_text(json.dumps(obj))
    return root


def test_sim_export_imports_back_to_same_content(tmp_path, sim_tilts):
    repo = Repository.init(str(tmp_path / "repo"))
    res = import_sim(repo, sim_tilts)
    out = tmp_path / "out"
    export_relion(repo, "main", out)
    _check_files(out)
    repo2 = Repository.init(str(tmp_path / "repo2"))
    res2 = import_relion5_tomo(repo2, out / "tomograms.star", source="sim", project=out,
                               particles=out / "s1/particles.star", species=_species(out / "s1", "s1", 30.0, "C1"))
    a, b = repo.population(res.commit), repo2.population(res2.commit)
    (ia,), (ib,) = repo.source(a.sources["sim"]).items.values(), repo2.source(b.sources["sim"]).items.values()
    item_a, item_b = repo.item(ia), repo2.item(ib)
    assert item_a.raw == item_b.raw and item_a.models == item_b.models
    assert {k: v for k, v in item_a.imaging.items()} == item_b.imaging
    sa, sb = repo.species(a.species["s1"]), repo2.species(b.species["s1"])
    assert (sa.half1, sa.half2, sa.mask, sa.pixel_size, sa.box) == (sb.half1, sb.half2, sb.mask, sb.pixel_size,
                                                                     sb.box)
    assert repo.particles(sa.particles).equals(repo2.particles(sb.particles))
