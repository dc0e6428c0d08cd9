"""RELION single-particle import and species add: fields, name matching, unmatched/ambiguous names."""

from __future__ import annotations

import numpy as np
import pytest
from io_projects import PIX, SPA_PARTICLES, relion_spa

from mrepo.graph import Repository
from mrepo.io import SpeciesFiles, add_species, import_relion_spa
from mrepo.io.relion_passthrough import decode_text
from mrepo.store import InvalidInput


def _species(proj, name="apo"):
    return SpeciesFiles(name, proj["half1"], proj["half2"], proj["mask"], 120.0, "C2")


def test_spa_fields(tmp_path):
    proj = relion_spa(tmp_path / "proj")
    repo = Repository.init(str(tmp_path / "repo"))
    res = import_relion_spa(repo, proj["particles"], source="mics", project=tmp_path / "proj",
                            species=_species(proj), dose_per_frame=1.5)
    pop = repo.population()
    items = {it.name: it for it in (repo.item(h) for h in repo.source(pop.sources["mics"]).items.values())}
    assert sorted(items) == ["mic_001", "mic_002"]
    m1 = items["mic_001"]
    assert m1.kind == "frames" and m1.imaging == {"pixel_size": PIX, "voltage": 300.0, "cs": 2.7,
                                                  "amplitude_contrast": 0.1, "dimensions": [32, 24, 1],
                                                  "exposure": [1.5], "optics_group": 1,
                                                  "optics_group_name": "opticsGroup1"}
    # unmodelled optics columns are kept, rlnMicrographOriginalPixelSize included
    assert m1.metadata["relion_optics"] == {"rlnMicrographOriginalPixelSize": PIX, "rlnImagePixelSize": 4.0,
                                            "rlnImageSize": 8, "rlnImageDimensionality": 2}
    np.testing.assert_array_equal(repo.objects.get_array(m1.models["ctf"]), [[15000.0, 14800.0, 30.0]])
    sp = repo.species(res.species["apo"])
    assert (sp.symmetry, sp.pixel_size, sp.box, sp.diameter) == ("C2", 4.0, 8, 120.0)
    t = repo.particles(sp.particles)
    item_ctf = {"mic_001": np.array([15000.0, 14800.0, 30.0]), "mic_002": np.array([20000.0, 19900.0, 10.0])}
    names = decode_text(t.extra["relion.rlnImageName"])
    for i, r in enumerate(SPA_PARTICLES):
        row = names.index(f"{i + 1:06d}@Extract/job007/particles.mrcs")
        mic = r[0].split("/")[-1][:-4]
        ictf = item_ctf[mic]
        # per-particle defocus: height z = mean defocus - the micrograph's; astigmatism residual kept
        z = (r[8] + r[9]) / 2 - (ictf[0] + ictf[1]) / 2
        np.testing.assert_array_equal(t.coordinates[row, 0], [r[1] * PIX - r[3], r[2] * PIX - r[4], z])
        np.testing.assert_array_equal(t.angles[row, 0], r[5:8])
        np.testing.assert_allclose(t.extra["ctf_residual"][row],
                                   [(r[8] - r[9]) / 2 - (ictf[0] - ictf[1]) / 2, r[10] - ictf[2]])
        assert t.half[row] == r[11] and t.item_keys()[row] == items[mic].key
        np.testing.assert_array_equal([t.extra["relion.rlnCoordinateX"][row], t.extra["relion.rlnCoordinateY"][row]],
                                      r[1:3])
    assert sp.metadata["relion"]["optics"][0]["rlnOpticsGroupName"] == "opticsGroup1"


def test_species_add_matching(tmp_path):
    proj = relion_spa(tmp_path / "proj")
    repo = Repository.init(str(tmp_path / "repo"))
    import_relion_spa(repo, proj["particles"], source="mics", project=tmp_path / "proj")
    res = add_species(repo, _species(proj), proj["particles"])
    t = repo.particles(repo.species(res.species["apo"]).particles)
    assert len(t) == 3 and len(repo.log()) == 2
    # a particle naming an unknown micrograph: error names it; --ignore-unmatched skips it
    rows = SPA_PARTICLES + [["Other/mic_999.mrc", 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1e4, 1e4, 0.0, 1]]
    proj2 = relion_spa(tmp_path / "proj2", particles=rows)
    with pytest.raises(InvalidInput, match="mic_999"):
        add_species(repo, _species(proj2, "b"), proj2["particles"])
    res2 = add_species(repo, _species(proj2, "b"), proj2["particles"], ignore_unmatched=True)
    assert len(repo.particles(repo.species(res2.species["b"]).particles)) == 3


def test_ambiguous_name_is_an_error(tmp_path):
    proj = relion_spa(tmp_path / "proj")
    repo = Repository.init(str(tmp_path / "repo"))
    import_relion_spa(repo, proj["particles"], source="s1", project=tmp_path / "proj")
    proj2 = relion_spa(tmp_path / "proj2")  # same micrograph names, different data
    import_relion_spa(repo, proj2["particles"], source="s2", project=tmp_path / "proj2")
    with pytest.raises(InvalidInput, match="ambiguous"):
        add_species(repo, _species(proj), proj["particles"], ignore_unmatched=True)
