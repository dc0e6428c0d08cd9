"""Real RELION layouts import: no rlnRandomSubset, pixel coordinates (pickers, RELION 4, WarpTools),
``*.tomostar`` and picker names, RELION 3.0 tables without optics, pixel size in data_particles; refused
layouts name what was expected and what was found. Files are hand-written in each tool's layout."""

from __future__ import annotations

import numpy as np
import pytest
from io_projects import PIX, loop, maps, relion5_tomo, relion_spa

from mrepo.graph import Commit, Repository
from mrepo.io import SpeciesFiles, import_relion5_tomo, import_relion_spa
from mrepo.io.relion_particles import HALVES_RULE
from mrepo.store import InvalidInput

BINNING = 4.0  # rlnTomoTomogramBinning of io_projects.relion5_tomo


def _species(proj, name="ribo", voxel_maps=None):
    m = voxel_maps or proj
    return SpeciesFiles(name, m["half1"], m["half2"], m["mask"], 250.0, "C1")


def _tomo_with(tmp_path, text: str, **kw):
    root = tmp_path / "proj"
    proj = relion5_tomo(root)
    star = root / "picks/particles.star"
    star.parent.mkdir(parents=True, exist_ok=True)
    star.write_text(text)
    repo = Repository.init(str(tmp_path / "repo"))
    res = import_relion5_tomo(repo, proj["tomograms"], source="ts", project=root, particles=star,
                              species=_species(proj), **kw)
    sp = repo.species(res.species["ribo"])
    items = {repo.item(h).name: repo.item(h) for h in repo.source(res.sources["ts"]).items.values()}
    return repo, res, sp, repo.particles(sp.particles), items


PICKS = [["TS_01_bin4", 2.0, 3.0, 1.0, 10.0, 20.0, 30.0], ["TS_02_bin4", 1.0, 1.0, 2.0, 40.0, 50.0, 60.0],
         ["TS_01_bin4", 3.0, 2.0, 0.5, 70.0, 80.0, 90.0]]


def test_picker_table_binned_pixels_names_and_halves(tmp_path):
    """pytom/cylindra style: no optics, no rlnRandomSubset, tomogram-binned pixel coordinates,
    names extending the tomogram name."""
    text = loop("particles", ["rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnAngleRot",
                              "rlnAngleTilt", "rlnAnglePsi"], PICKS)
    repo, res, sp, t, items = _tomo_with(tmp_path, text)
    for i, r in enumerate(PICKS):
        row = int(np.nonzero((t.angles[:, 0] == r[4:7]).all(1))[0][0])
        np.testing.assert_allclose(t.coordinates[row, 0], np.array(r[1:4]) * PIX * BINNING)
        assert t.item_keys()[row] == items[r[0][:5]].key
        assert t.half[row] == 1 + i % 2  # deterministic halves in file order
    assert sp.metadata["relion"]["halves"] == HALVES_RULE
    assert Commit.load(repo.objects, res.commit).operation["halves"] == HALVES_RULE


def test_warptools_tomostar_names_with_given_pixel_size(tmp_path):
    rows = [[n.replace("_bin4", ".tomostar"), *r, 1 + i % 2] for i, (n, *r) in enumerate(PICKS)]
    text = loop("particles", ["rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnAngleRot",
                              "rlnAngleTilt", "rlnAnglePsi", "rlnRandomSubset"], rows)
    _, _, _, t, items = _tomo_with(tmp_path, text, coordinate_pixel_size=5.0)
    for r in rows:
        row = int(np.nonzero((t.angles[:, 0] == r[4:7]).all(1))[0][0])
        np.testing.assert_allclose(t.coordinates[row, 0], np.array(r[1:4]) * 5.0)
        assert t.item_keys()[row] == items[r[0].split(".")[0]].key


def test_relion4_table_unbinned_pixels_and_origins(tmp_path):
    optics = loop("optics", ["rlnOpticsGroup", "rlnOpticsGroupName", "rlnTomoTiltSeriesPixelSize", "rlnVoltage",
                             "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnImagePixelSize", "rlnImageSize",
                             "rlnImageDimensionality"], [[1, "opticsGroup1", PIX, 300.0, 2.7, 0.1, 4.0, 8, 3]])
    rows = [["TS_01", 10.0, 12.0, 4.0, 2.0, -1.0, 0.5, 5.0, 6.0, 7.0, "TS_01/1", 1, 1]]
    text = optics + loop("particles", ["rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ",
                                       "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst", "rlnAngleRot",
                                       "rlnAngleTilt", "rlnAnglePsi", "rlnTomoParticleName", "rlnRandomSubset",
                                       "rlnOpticsGroup"], rows)
    _, _, _, t, _ = _tomo_with(tmp_path, text)
    np.testing.assert_allclose(t.coordinates[0, 0], np.array([10.0, 12.0, 4.0]) * PIX - [2.0, -1.0, 0.5])


def test_pixel_coordinates_without_a_pixel_size_are_refused(tmp_path):
    root = tmp_path / "proj"
    proj = relion5_tomo(root)
    tomograms = proj["tomograms"]
    tomograms.write_text(tomograms.read_text().replace("_rlnTomoTomogramBinning", "_rlnTomoSomethingElse"))
    star = root / "picks.star"
    star.write_text(loop("particles", ["rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ",
                                       "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"], PICKS[:1]))
    repo = Repository.init(str(tmp_path / "repo"))
    with pytest.raises(InvalidInput, match="expected rlnTomoTiltSeriesPixelSize .* found none"):
        import_relion5_tomo(repo, tomograms, source="ts", project=root, particles=star, species=_species(proj))


def _rot(axis: int, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    if axis == 1:  # rotation about y: [[c, 0, s], [0, 1, 0], [-s, 0, c]]
        m[0, 2], m[2, 0] = s, -s
    return m


def _relion4_matrix(xtilt, ytilt, zrot, shift_px, size, image) -> np.ndarray:
    """RELION's Tomogram::setProjectionMatrix: S(shift) S(image centre) Rz Ry Rx S(-int(size/2))."""
    p = np.eye(4)
    r = _rot(2, zrot) @ _rot(1, ytilt) @ _rot(0, xtilt)
    p[:3, :3] = r
    p[:3, 3] = -r @ np.floor(np.asarray(size) / 2) + [image[0] // 2 + shift_px[0], image[1] // 2 + shift_px[1], 0]
    return p


def test_relion4_tomograms_star_with_projection_matrices(tmp_path):
    """RELION 4: tilt series as stacks (rlnTomoTiltSeriesName) and per-tomogram blocks of projection
    matrices in tomograms.star; read as RELION 5 converts them, written back consistent with the angles."""
    import starfile

    from mrepo.io.export_relion import export_relion

    root = tmp_path / "proj"
    relion5_tomo(root)  # provides Stacks/TS_02.mrcs (3 x 24 x 32) and maps
    size, image = [32, 24, 10], (32, 24)
    truth = [(0.5, -3.0, 85.0, (1.5, -2.0)), (-0.25, 0.0, 85.5, (0.0, 0.75)), (0.1, 3.0, 84.5, (-1.0, 0.5))]
    rows = []
    for k, (xt, yt, zr, sh) in enumerate(truth):
        p = _relion4_matrix(xt, yt, zr, sh, size, image)
        rows.append(["[" + ",".join(repr(float(v)) for v in p[i]) + "]" for i in range(4)]
                    + [30000.0 + k, 29900.0 + k, 45.0, 3.0 * k, 1.0])
    text = loop("global", ["rlnTomoName", "rlnTomoTiltSeriesName", "rlnTomoFrameCount", "rlnTomoSizeX",
                           "rlnTomoSizeY", "rlnTomoSizeZ", "rlnTomoHand", "rlnOpticsGroupName",
                           "rlnTomoTiltSeriesPixelSize", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast",
                           "rlnTomoImportFractionalDose"],
                [["TS_02", "Stacks/TS_02.mrcs", 3, *size, -1.0, "optics1", PIX, 300.0, 2.7, 0.1, 3.0]])
    text += loop("TS_02", ["rlnTomoProjX", "rlnTomoProjY", "rlnTomoProjZ", "rlnTomoProjW", "rlnDefocusU",
                           "rlnDefocusV", "rlnDefocusAngle", "rlnMicrographPreExposure", "rlnCtfScalefactor"], rows)
    star = root / "Tomograms/job004/tomograms.star"
    star.parent.mkdir(parents=True, exist_ok=True)
    star.write_text(text)
    repo = Repository.init(str(tmp_path / "repo"))
    res = import_relion5_tomo(repo, star, source="ts", project=root)
    (h,) = repo.source(res.sources["ts"]).items.values()
    item = repo.item(h)
    stage = repo.objects.get_array(item.models["stage_angles"])
    shifts = repo.objects.get_array(item.models["global_shifts"])
    np.testing.assert_allclose(stage, [t[:3] for t in truth], atol=1e-9)
    np.testing.assert_allclose(shifts, [np.array(t[3]) * PIX for t in truth], atol=1e-9)
    assert item.imaging["volume_dimensions"] == [s * PIX for s in size]
    out = tmp_path / "out"
    export_relion(repo, "main", out, project=root)
    ts = starfile.read(out / "tilt_series/TS_02.star", always_dict=True)["TS_02"]
    np.testing.assert_allclose(ts[["rlnTomoXTilt", "rlnTomoYTilt", "rlnTomoZRot"]].to_numpy(),
                               [t[:3] for t in truth], atol=1e-9)
    for i, c in enumerate(("rlnTomoProjX", "rlnTomoProjY", "rlnTomoProjZ", "rlnTomoProjW")):
        got = np.array([[float(v) for v in cell.strip("[]").split(",")] for cell in ts[c]])
        np.testing.assert_allclose(got, [_relion4_matrix(*t[:3], t[3], size, image)[i] for t in truth], atol=1e-9)
    g = starfile.read(out / "tomograms.star", always_dict=True)["global"]
    assert g["rlnTomoTiltSeriesName"].tolist() == ["Stacks/TS_02.mrcs"]
    assert g["rlnTomoImportFractionalDose"].tolist() == [3.0]


def test_unknown_tomograms_layout_is_refused_naming_both_layouts(tmp_path):
    root = tmp_path / "proj"
    proj = relion5_tomo(root)
    proj["tomograms"].write_text(loop("global", ["rlnTomoName", "rlnVoltage"], [["TS_01", 300.0]]))
    repo = Repository.init(str(tmp_path / "repo"))
    with pytest.raises(InvalidInput) as err:
        import_relion5_tomo(repo, proj["tomograms"], source="ts", project=root)
    msg = str(err.value)
    assert "expected RELION 5" in msg and "or RELION 4" in msg and "found columns rlnTomoName, rlnVoltage" in msg


def test_relion4_matrix_that_is_not_a_rotation_is_refused(tmp_path):
    root = tmp_path / "proj"
    relion5_tomo(root)
    text = loop("global", ["rlnTomoName", "rlnTomoTiltSeriesName", "rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ",
                           "rlnTomoHand", "rlnTomoTiltSeriesPixelSize", "rlnVoltage", "rlnSphericalAberration",
                           "rlnAmplitudeContrast"],
                [["TS_02", "Stacks/TS_02.mrcs", 32, 24, 10, 1.0, PIX, 300.0, 2.7, 0.1]])
    rows = [["[2,0,0,0]", "[0,1,0,0]", "[0,0,1,0]", "[0,0,0,1]", 1e4, 1e4, 0.0, 3.0 * k] for k in range(3)]
    text += loop("TS_02", ["rlnTomoProjX", "rlnTomoProjY", "rlnTomoProjZ", "rlnTomoProjW", "rlnDefocusU",
                           "rlnDefocusV", "rlnDefocusAngle", "rlnMicrographPreExposure"], rows)
    star = root / "t.star"
    star.write_text(text)
    with pytest.raises(InvalidInput, match="data_TS_02 column rlnTomoProjX row 1: the 3x3 block is not a rotation"):
        import_relion5_tomo(Repository.init(str(tmp_path / "repo")), star, source="ts", project=root)


SPA30 = ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnOriginX", "rlnOriginY", "rlnAngleRot",
         "rlnAngleTilt", "rlnAnglePsi", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnVoltage",
         "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnMagnification", "rlnDetectorPixelSize",
         "rlnImageName", "rlnRandomSubset"]


def test_relion30_star_without_optics_converts_as_relion_does(tmp_path):
    root = tmp_path / "proj"
    proj = relion_spa(root)  # micrographs (pixel 2 Å)
    m = maps(root / "maps30", voxel=2.0)
    rows = [["MotionCorr/job002/Movies/mic_001.mrc", 10.0, 12.0, 1.5, -0.5, 1.0, 2.0, 3.0, 15000.0, 14800.0, 30.0,
             300.0, 2.7, 0.1, 10000.0, 2.0, "000001@Extract/job007/particles.mrcs", 1],
            ["MotionCorr/job002/Movies/mic_002.mrc", 7.0, 3.0, 0.0, 0.0, 4.0, 5.0, 6.0, 20000.0, 19900.0, 10.0,
             300.0, 2.7, 0.1, 10000.0, 2.0, "000002@Extract/job007/particles.mrcs", 2]]
    star = root / "old/run_data.star"
    star.parent.mkdir(parents=True)
    star.write_text("\ndata_\n\nloop_\n" + "".join(f"_{c} #{i + 1}\n" for i, c in enumerate(SPA30))
                    + "".join(" ".join(str(v) for v in r) + "\n" for r in rows))
    repo = Repository.init(str(tmp_path / "repo"))
    res = import_relion_spa(repo, star, source="mics", project=root, species=_species(proj, "apo", m))
    sp = repo.species(res.species["apo"])
    (group,) = sp.metadata["relion"]["optics"]
    assert group["rlnOpticsGroupName"] == "opticsGroup1" and group["rlnImagePixelSize"] == 2.0
    assert sp.metadata["relion"]["layout"] == "relion-3.0"
    t = repo.particles(sp.particles)
    row = int(np.nonzero((t.angles[:, 0] == [1.0, 2.0, 3.0]).all(1))[0][0])
    # rlnOriginX (pixels) -> rlnOriginXAngst = origin * pixel
    np.testing.assert_allclose(t.coordinates[row, 0, :2], [10.0 * 2.0 - 1.5 * 2.0, 12.0 * 2.0 + 0.5 * 2.0])
    assert "relion.rlnMagnification" not in t.extra and "relion.rlnImageName" in t.extra


def test_pixel_size_given_in_data_particles(tmp_path):
    root = tmp_path / "proj"
    proj = relion_spa(root)
    star = proj["particles"]
    text = star.read_text()
    # move rlnImagePixelSize from data_optics into every particle row
    head, parts = text.split("data_particles", 1)
    head = head.replace("_rlnImagePixelSize #7 \n", "").replace("\t4.0\t8\t2 \n", "\t8\t2 \n")
    head = head.replace("_rlnImageSize #8", "_rlnImageSize #7").replace("_rlnImageDimensionality #9",
                                                                         "_rlnImageDimensionality #8")
    parts = parts.replace("_rlnOpticsGroup #14 \n", "_rlnOpticsGroup #14 \n_rlnImagePixelSize #15 \n")
    parts = "\n".join(line[:-1] + "\t4.0 " if line.endswith("\t1 ") else line for line in parts.split("\n"))
    star.write_text(head + "data_particles" + parts)
    repo = Repository.init(str(tmp_path / "repo"))
    res = import_relion_spa(repo, star, source="mics", project=root, species=_species(proj, "apo"))
    sp = repo.species(res.species["apo"])
    assert sp.metadata["relion"]["optics"][0]["rlnImagePixelSize"] == 4.0
    assert "relion.rlnImagePixelSize" not in repo.particles(sp.particles).extra
