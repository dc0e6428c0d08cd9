"""RELION 5 tomo -> mrepo -> RELION 5 and RELION SPA (CtfRefine) -> mrepo -> RELION give back every input
column with its value (files written by hand in RELION's layout, exported with the source project folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import starfile
from relion5_layouts import MICS, ORIG_PIX, ctfrefine_spa, tutorial_tomo

from mrepo.graph import Repository
from mrepo.io import SpeciesFiles, import_relion5_tomo, import_relion_spa
from mrepo.io.export_relion import export_relion

ANGLES = {"rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnDefocusAngle"}


def assert_columns_back(before: pd.DataFrame, after: pd.DataFrame, key: str | None, where: str) -> None:
    """Every column of ``before`` is in ``after`` with the same values (rows matched by ``key``; angles
    modulo 360 degrees)."""
    if key is not None:
        after = after.set_index(key).loc[before[key].tolist()].reset_index()
    assert len(after) == len(before), where
    for c in before.columns:
        assert c in after.columns, f"{where}: column {c} dropped"
        a, b = before[c].tolist(), after[c].tolist()
        for i, (x, y) in enumerate(zip(a, b)):
            if isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool):
                assert isinstance(y, (int, float, np.integer, np.floating)), f"{where}: {c} row {i}: {y!r}"
                d = float(x) - float(y)
                if c in ANGLES:
                    d = (d + 180.0) % 360.0 - 180.0
                assert abs(d) <= 1e-9 * max(1.0, abs(float(x))), f"{where}: {c} row {i}: {x} {y}"
            else:
                assert str(x) == str(y), f"{where}: {c} row {i}: {x!r} != {y!r}"


def _tomo(tmp_path: Path):
    root = tmp_path / "proj"
    proj = tutorial_tomo(root)
    repo = Repository.init(str(tmp_path / "repo"))
    sp = SpeciesFiles("ribo", proj["half1"], proj["half2"], proj["mask"], 250.0, "C1")
    import_relion5_tomo(repo, proj["tomograms"], source="ts", project=root, particles=proj["particles"], species=sp)
    return root, proj, repo


def test_relion5_tomo_every_column_comes_back(tmp_path):
    root, proj, repo = _tomo(tmp_path)
    out = root / "External/job100"
    export_relion(repo, "main", out, project=root)
    g_in = starfile.read(proj["tomograms"], always_dict=True)["global"]
    g_out = starfile.read(out / "tomograms.star", always_dict=True)["global"]
    # the tilt-series STAR files are mrepo's (relative to the project); everything else as imported
    assert g_out["rlnTomoTiltSeriesStarFile"].tolist() == ["External/job100/tilt_series/TS_01.star",
                                                           "External/job100/tilt_series/TS_03.star"]
    assert_columns_back(g_in.drop(columns=["rlnTomoTiltSeriesStarFile"]), g_out, "rlnTomoName", "tomograms.star")
    assert (g_out["rlnMicrographOriginalPixelSize"] == ORIG_PIX).all()
    for name, star in zip(g_in["rlnTomoName"], g_in["rlnTomoTiltSeriesStarFile"]):
        t_in = starfile.read(root / star, always_dict=True)[name]
        t_out = starfile.read(out / f"tilt_series/{name}.star", always_dict=True)[name]
        assert_columns_back(t_in, t_out, None, f"tilt series {name}")  # paths relative as in the source
    p_in = starfile.read(proj["particles"], always_dict=True)
    p_out = starfile.read(out / "ribo/particles.star", always_dict=True)
    assert p_out["general"] == p_in["general"] or dict(p_out["general"]) == {"rlnTomoSubTomosAre2DStacks": 1}
    assert_columns_back(p_in["optics"], p_out["optics"], "rlnOpticsGroup", "optics")
    assert_columns_back(p_in["particles"], p_out["particles"], "rlnTomoParticleName", "particles")
    assert "rlnMrepoParticleId" in p_out["particles"].columns


def test_relion5_tomo_reimport_of_export_is_the_same_population(tmp_path):
    root, proj, repo = _tomo(tmp_path)
    out = root / "External/job100"
    export_relion(repo, "main", out, project=root)
    repo2 = Repository.init(str(tmp_path / "repo2"))
    sp = SpeciesFiles("ribo", out / "ribo/half1.mrc", out / "ribo/half2.mrc", out / "ribo/mask.mrc", 250.0, "C1")
    import_relion5_tomo(repo2, out / "tomograms.star", source="ts", project=root, particles=out / "ribo/particles.star",
                        species=sp)
    a, b = repo.population(), repo2.population()
    items_a = {repo.item(h).name: repo.item(h) for h in repo.source(a.sources["ts"]).items.values()}
    items_b = {repo2.item(h).name: repo2.item(h) for h in repo2.source(b.sources["ts"]).items.values()}
    for name, it in items_a.items():
        ib = items_b[name]
        assert it.raw == ib.raw and it.imaging == ib.imaging and it.models == ib.models
        assert it.metadata["relion_tomogram"] == {k: v for k, v in ib.metadata["relion_tomogram"].items()
                                                  if k in it.metadata["relion_tomogram"]}
    ta = repo.particles(repo.species(a.species["ribo"]).particles)
    tb = repo2.particles(repo2.species(b.species["ribo"]).particles)
    np.testing.assert_array_equal(ta.ids, tb.ids)  # ids travel in rlnMrepoParticleId
    np.testing.assert_allclose(ta.coordinates, tb.coordinates, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(ta.half, tb.half)


def _spa(tmp_path: Path):
    root = tmp_path / "proj"
    proj = ctfrefine_spa(root)
    repo = Repository.init(str(tmp_path / "repo"))
    sp = SpeciesFiles("apo", proj["half1"], proj["half2"], proj["mask"], 120.0, "C2")
    import_relion_spa(repo, proj["particles"], source="mics", project=root, micrographs=proj["micrographs"],
                      species=sp)
    return root, proj, repo


def test_ctfrefine_optics_groups_and_per_particle_ctf(tmp_path):
    root, proj, repo = _spa(tmp_path)
    pop = repo.population()
    items = {it.name: it for it in (repo.item(h) for h in repo.source(pop.sources["mics"]).items.values())}
    m1, m2 = items[MICS[0][0]], items[MICS[1][0]]
    assert m1.imaging["optics_group"] == 1 and m2.imaging["optics_group"] == 2
    assert m1.imaging["optics_group_name"] == "opticsGroup1"
    assert m1.imaging["beam_tilt"] == [0.125, -0.25] and m2.imaging["beam_tilt"] == [-0.5, 0.75]
    assert m1.imaging["odd_zernike"] == [0.470415, 0.416253, 34.386147, 0, 0, 10.785281]
    assert len(m1.imaging["even_zernike"]) == 9
    assert m2.imaging["mag_matrix"] == [[0.998, -0.001], [0.002, 1.003]]
    assert m1.metadata["relion_optics"]["rlnMicrographOriginalPixelSize"] == 0.885
    assert m1.metadata["relion_micrograph"]["rlnCtfMaxResolution"] == 3.25
    t = repo.particles(repo.species(pop.species["apo"]).particles)
    # each particle has its own defocus: heights differ within a micrograph (not the first particle's value)
    z = t.coordinates[:, 0, 2]
    assert len(set(np.round(z, 6).tolist())) == 3 and set(t.extra) >= {"ctf_residual", "ctf_bfactor", "ctf_scale",
                                                                      "phase_shift", "optics_group"}


def test_ctfrefine_spa_every_column_comes_back(tmp_path):
    root, proj, repo = _spa(tmp_path)
    out = root / "External/job101"
    export_relion(repo, "main", out, project=root)
    m_in = starfile.read(proj["micrographs"], always_dict=True)
    m_out = starfile.read(out / "micrographs.star", always_dict=True)
    assert_columns_back(m_in["optics"], m_out["optics"], "rlnOpticsGroup", "micrograph optics")
    assert_columns_back(m_in["micrographs"], m_out["micrographs"], "rlnMicrographName", "micrographs")
    p_in = starfile.read(proj["particles"], always_dict=True)
    p_out = starfile.read(out / "apo/particles.star", always_dict=True)
    assert_columns_back(p_in["optics"], p_out["optics"], "rlnOpticsGroup", "particle optics")
    assert_columns_back(p_in["particles"], p_out["particles"], "rlnImageName", "particles")
    # the micrographs are the source's, named relative to the project, not raw movies
    assert all((root / n).is_file() for n in p_out["particles"]["rlnMicrographName"])


def test_tomo_ctfrefine_optics_reach_the_tilt_series(tmp_path):
    """RELION 5 tomo CtfRefine writes beam tilt / Zernike / magnification into the particles' optics groups:
    each tilt series takes its particles' group, and the export gives the optics table back."""
    root = tmp_path / "proj"
    proj = tutorial_tomo(root)
    blocks = starfile.read(proj["particles"], always_dict=True)
    optics = blocks["optics"]
    optics["rlnBeamTiltX"], optics["rlnBeamTiltY"] = [0.0, 0.25], [0.0, -0.5]
    optics["rlnOddZernike"] = ["[0,0,0,0,0,0]", "[0.1,0.2,0.3,0.4,0.5,0.6]"]
    optics["rlnMagMat00"], optics["rlnMagMat11"] = [1.0, 1.002], [1.0, 0.998]
    starfile.write(blocks, proj["particles"])
    repo = Repository.init(str(tmp_path / "repo"))
    sp = SpeciesFiles("ribo", proj["half1"], proj["half2"], proj["mask"], 250.0, "C1")
    import_relion5_tomo(repo, proj["tomograms"], source="ts", project=root, particles=proj["particles"], species=sp)
    pop = repo.population()
    items = {repo.item(h).name: repo.item(h) for h in repo.source(pop.sources["ts"]).items.values()}
    assert items["TS_03"].imaging["beam_tilt"] == [0.25, -0.5]
    assert items["TS_03"].imaging["odd_zernike"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert items["TS_03"].imaging["mag_matrix"][0][0] == 1.002 and items["TS_01"].imaging["beam_tilt"] == [0.0, 0.0]
    out = root / "External/job100"
    export_relion(repo, "main", out, project=root)
    p_out = starfile.read(out / "ribo/particles.star", always_dict=True)
    assert_columns_back(optics, p_out["optics"], "rlnOpticsGroup", "optics")


def test_binned_micrographs_take_the_header_pixel_not_the_movie_pixel(tmp_path):
    """Particles only (no micrographs STAR): rlnMicrographOriginalPixelSize is the movies' pixel size (0.885 Å);
    the 2x-binned micrographs' pixel comes from their MRC header, and the original value is kept and written back."""
    from relion5_layouts import SPA_PIX

    root = tmp_path / "proj"
    proj = ctfrefine_spa(root)
    repo = Repository.init(str(tmp_path / "repo"))
    import_relion_spa(repo, proj["particles"], source="mics", project=root,
                      species=SpeciesFiles("apo", proj["half1"], proj["half2"], proj["mask"], 120.0, "C2"))
    pop = repo.population()
    items = [repo.item(h) for h in repo.source(pop.sources["mics"]).items.values()]
    assert all(abs(it.imaging["pixel_size"] - SPA_PIX) < 1e-6 for it in items)
    assert all(it.metadata["relion_optics"]["rlnMicrographOriginalPixelSize"] == 0.885 for it in items)
    out = root / "External/job102"
    export_relion(repo, "main", out, project=root)
    p_in = starfile.read(proj["particles"], always_dict=True)
    p_out = starfile.read(out / "apo/particles.star", always_dict=True)
    assert_columns_back(p_in["particles"], p_out["particles"], "rlnImageName", "particles")
