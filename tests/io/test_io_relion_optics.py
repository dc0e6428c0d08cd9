"""Refined optics (rlnMagMat00..11, rlnBeamTiltX/Y, rlnOddZernike, rlnEvenZernike, rlnSphericalAberration)
reach every optics table RELION reads them from (micrographs.star and the particles' data_optics, whose
other columns are the imported ones) and come back on re-import. Projects hand-written in RELION's layout
(relion5_layouts)."""

from __future__ import annotations

import numpy as np
import starfile
from relion5_layouts import MICS, tutorial_tomo
from test_io_m_optics import _commit, _items
from test_io_relion_passthrough import _spa, assert_columns_back

from mrepo.graph import Repository
from mrepo.io import SpeciesFiles, import_relion5_tomo, import_relion_spa
from mrepo.io.export_relion import export_relion

REFINED = {
    "mag_matrix": [[1.004, -0.002], [0.001, 0.995]],
    "beam_tilt": [0.3, -0.1],
    "odd_zernike": [0.25, -0.5, 30.0, 0.0, 0.0, 11.0],
    "even_zernike": [0.0, 0.01, 0.0, -0.02, 40.0, 0.0, 7.5, 0.0, -3.0],
    "cs": 2.65,
}


def _row(optics, group: int) -> dict:
    return optics[optics["rlnOpticsGroup"] == group].iloc[0].to_dict()


def _expect(row: dict) -> None:
    assert [[row["rlnMagMat00"], row["rlnMagMat01"]], [row["rlnMagMat10"], row["rlnMagMat11"]]] == REFINED["mag_matrix"]
    assert [row["rlnBeamTiltX"], row["rlnBeamTiltY"]] == REFINED["beam_tilt"]
    assert [float(v) for v in row["rlnOddZernike"].strip("[]").split(",")] == REFINED["odd_zernike"]
    assert [float(v) for v in row["rlnEvenZernike"].strip("[]").split(",")] == REFINED["even_zernike"]
    assert row["rlnSphericalAberration"] == REFINED["cs"]


def test_spa_refined_optics_in_both_tables_and_back(tmp_path):
    root, proj, repo = _spa(tmp_path)
    _commit(repo, MICS[1][0], imaging=REFINED)  # the item of optics group 2
    out = root / "External/job200"
    export_relion(repo, "main", out, project=root)
    p_in = starfile.read(proj["particles"], always_dict=True)["optics"]
    p_out = starfile.read(out / "apo/particles.star", always_dict=True)["optics"]
    _expect(_row(p_out, 2))
    _expect(_row(starfile.read(out / "micrographs.star", always_dict=True)["optics"], 2))
    assert_columns_back(p_in[p_in["rlnOpticsGroup"] == 1], p_out, "rlnOpticsGroup", "group 1 as imported")
    kept = [
        c
        for c in p_in.columns
        if c
        not in {
            "rlnMagMat00",
            "rlnMagMat01",
            "rlnMagMat10",
            "rlnMagMat11",
            "rlnBeamTiltX",
            "rlnBeamTiltY",
            "rlnOddZernike",
            "rlnEvenZernike",
            "rlnSphericalAberration",
        }
    ]
    assert_columns_back(p_in[kept], p_out, "rlnOpticsGroup", "other optics columns as imported")

    repo2 = Repository.init(str(tmp_path / "repo2"))
    sp = SpeciesFiles("apo", out / "apo/half1.mrc", out / "apo/half2.mrc", out / "apo/mask.mrc", 120.0, "C2")
    import_relion_spa(
        repo2, out / "apo/particles.star", source="mics", project=root, micrographs=out / "micrographs.star", species=sp
    )
    im = _items(repo2)[MICS[1][0]].imaging
    assert {k: im[k] for k in REFINED} == REFINED


def test_tomo_refined_optics_in_particles_optics_and_back(tmp_path):
    root = tmp_path / "proj"
    proj = tutorial_tomo(root)
    blocks = starfile.read(proj["particles"], always_dict=True)
    blocks["optics"]["rlnBeamTiltX"], blocks["optics"]["rlnBeamTiltY"] = [0.0, 0.25], [0.0, -0.5]
    starfile.write(blocks, proj["particles"])
    repo = Repository.init(str(tmp_path / "repo"))
    sp = SpeciesFiles("ribo", proj["half1"], proj["half2"], proj["mask"], 250.0, "C1")
    import_relion5_tomo(repo, proj["tomograms"], source="ts", project=root, particles=proj["particles"], species=sp)
    _commit(repo, "TS_03", imaging=REFINED)  # TS_03's particles are in optics group 2
    out = root / "External/job201"
    export_relion(repo, "main", out, project=root)
    p_out = starfile.read(out / "ribo/particles.star", always_dict=True)["optics"]
    _expect(_row(p_out, 2))
    one = _row(p_out, 1)  # group 1 (TS_01): as imported, the new columns neutral
    assert (one["rlnBeamTiltX"], one["rlnMagMat00"], one["rlnMagMat01"]) == (0.0, 1.0, 0.0)
    assert one["rlnOddZernike"] == "[0.0,0.0,0.0,0.0,0.0,0.0]"

    repo2 = Repository.init(str(tmp_path / "repo2"))
    sp2 = SpeciesFiles("ribo", out / "ribo/half1.mrc", out / "ribo/half2.mrc", out / "ribo/mask.mrc", 250.0, "C1")
    import_relion5_tomo(
        repo2, out / "tomograms.star", source="ts", project=root, particles=out / "ribo/particles.star", species=sp2
    )
    im = _items(repo2)["TS_03"].imaging
    assert {k: im[k] for k in REFINED} == REFINED


def test_tomo_refined_phase_shift_per_tilt_and_back(tmp_path):
    """rlnPhaseShift (deg) of a tilt-series STAR carries the refined per-tilt phase_shift model (M's ctf_phase)."""
    root = tmp_path / "proj"
    proj = tutorial_tomo(root)
    repo = Repository.init(str(tmp_path / "repo"))
    import_relion5_tomo(repo, proj["tomograms"], source="ts", project=root)
    n = int(_items(repo)["TS_03"].imaging["dimensions"][2])
    phase = np.linspace(85.0, 95.0, n)
    _commit(repo, "TS_03", models={"phase_shift": phase})
    out = root / "External/job202"
    export_relion(repo, "main", out, project=root)
    tilts = starfile.read(out / "tilt_series/TS_03.star", always_dict=True)["TS_03"]
    np.testing.assert_array_equal(tilts["rlnPhaseShift"].to_numpy(), phase)
    repo2 = Repository.init(str(tmp_path / "repo2"))
    import_relion5_tomo(repo2, out / "tomograms.star", source="ts", project=root)
    it = _items(repo2)["TS_03"]
    np.testing.assert_array_equal(repo2.objects.get_array(it.models["phase_shift"]), phase)
