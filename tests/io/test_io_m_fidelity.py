"""RELION 5 -> mrepo -> M -> mrepo -> RELION 5: tilt alignment, hand, ids survive; M finds its particles.

The RELION 5 project is hand-written (io_projects.relion5_tomo, one x-tilt per series); what M reads is
checked against M's own rules (warpem/warp TiltSeries.cs / Movie.cs / Species.cs), not against mrepo's reader.
"""

from __future__ import annotations

import base64
import hashlib
import xml.etree.ElementTree as ET

import mrcfile
import numpy as np
import pytest
import starfile
from io_projects import relion5_tomo
from test_io_bad_input import listing
from test_io_m import _setup, constant_xtilt

from mrepo.graph import Repository
from mrepo.io import SpeciesFiles, import_relion5_tomo
from mrepo.io.export_relion import export_relion
from mrepo.io.m_format import export_m, import_m
from mrepo.io.m_hash import m_data_hash
from mrepo.io.warp_export import MCannotRepresent
from mrepo.store import InvalidInput

TILT_COLUMNS = ["rlnTomoXTilt", "rlnTomoYTilt", "rlnTomoZRot", "rlnTomoXShiftAngst", "rlnTomoYShiftAngst",
                "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"]


def _items(repo):
    pop = repo.population()
    return {it.name: it for sh in pop.sources.values() for it in (repo.item(h) for h in repo.source(sh).items.values())}


def _params(root) -> dict[str, str]:
    return {p.get("Name"): p.get("Value") for p in root.findall("Param")}


def test_m_data_hash_follows_getdatahash(tmp_path):
    """SHA-1 over UTF-16LE(RootName) + first 512 KiB, base64 without '=' and with '/'->'-', '+'->'_'."""
    data = bytes(range(256)) * 4096  # 1 MiB: only the first half counts
    f = tmp_path / "TS_01_001.mrc"
    f.write_bytes(data)
    name = "TS_01"
    utf16 = b"".join(bytes([ord(c), 0]) for c in name)  # C# char[] on little-endian: code unit, low byte first
    digest = hashlib.sha1(utf16 + data[: 1 << 19]).digest()
    expected = base64.b64encode(digest).decode().rstrip("=").replace("/", "-").replace("+", "_")
    assert m_data_hash(name, f) == expected and len(expected) == 27
    f.write_bytes(data[: 1 << 19] + b"other tail")
    assert m_data_hash(name, f) == expected  # bytes past 512 KiB do not count
    assert m_data_hash("TS_02", f) != expected
    small = tmp_path / "small.mrc"
    small.write_bytes(b"abc")
    assert m_data_hash("x", small) == base64.b64encode(hashlib.sha1(b"x\0abc").digest()).decode().rstrip("=") \
        .replace("/", "-").replace("+", "_")


def test_m_export_is_what_m_reads(tmp_path):
    """Particles carry M's data hash of their item; every file M opens for a tilt series exists."""
    _, repo, _ = _setup(tmp_path)
    out = tmp_path / "m"
    export_m(repo, "main", out)
    pop = ET.parse(out / "population.population").getroot()
    src = ET.parse(out / pop.find("Sources/Source").get("Path")).getroot()
    files = {f.get("Name"): f.get("Hash") for f in src.findall("Files/File")}
    assert set(files) == {"TS_01.tomostar", "TS_02.tomostar"}
    for name, h in files.items():
        root_name = name[: -len(".tomostar")]
        series = ET.parse(out / f"{root_name}.xml").getroot()  # TiltSeries.XMLPath: <folder>/<RootName>.xml
        movies = series.find("MoviePath").text.split("\n")
        base = out / series.get("DataDirectory") if series.get("DataDirectory") else out
        assert len(movies) == 3
        for m in movies:  # LoadMovieData: movie header, then <movie folder>/average/<movie root>.mrc
            movie = base / m
            assert movie.is_file() and (movie.parent / "average" / f"{movie.stem}.mrc").is_file()
        assert h == m_data_hash(root_name, base / movies[0])  # TiltSeries.GetDataHash: first tilt movie
    with mrcfile.open(tmp_path / "proj/Stacks/TS_02.mrcs") as stack:  # TS_02's tilts are sections of a stack
        for t, m in enumerate(ET.parse(out / "TS_02.xml").getroot().find("MoviePath").text.split("\n")):
            with mrcfile.open(out / m) as image:
                assert int(image.header.nz) == 1 and image.data.dtype == stack.data.dtype  # one image per movie
                np.testing.assert_array_equal(image.data.reshape(24, 32), stack.data[t])
                assert float(image.voxel_size.x) == float(stack.voxel_size.x)
    sp_path = out / pop.find("Species/Species").get("Path")
    parts = starfile.read(sp_path.parent / "ribo_particles.star")
    assert set(parts["wrpSourceHash"]) <= set(files.values())  # Species.GetParticles(GetDataHash())
    for name, h in files.items():  # each particle's hash is the hash of its own item
        assert set(parts.loc[parts["wrpSourceName"] == name, "wrpSourceHash"]) <= {h}
    table = repo.particles(repo.species(repo.population().species["ribo"]).particles)
    assert sorted(parts["wrpMrepoParticleId"].tolist()) == sorted(table.ids.tolist())


def test_tilt_alignment_and_hand_survive_relion_m_relion(tmp_path):
    proj, repo, _ = _setup(tmp_path)  # hand -1, XTilt 0.3 everywhere, YTilt = tilt + 0.5, ZRot 85.5, shifts
    export_m(repo, "main", tmp_path / "m")
    ts = ET.parse(tmp_path / "m/TS_02.xml").getroot()
    assert ts.get("AreAnglesInverted") == "True" and float(ts.get("LevelAngleX")) == pytest.approx(0.3)
    np.testing.assert_allclose([float(v) for v in ts.find("Angles").text.split("\n")], [2.5, -0.5, -3.5])
    np.testing.assert_allclose([float(v) for v in ts.find("AxisAngle").text.split("\n")], [85.5] * 3)
    repo2 = Repository.init(str(tmp_path / "repo2"))
    import_m(repo2, tmp_path / "m/population.population")
    a, b = _items(repo), _items(repo2)
    assert set(a) == set(b)
    for name in a:
        assert b[name].key == a[name].key  # same raw data, same identity
        assert b[name].imaging["hand"] == a[name].imaging["hand"] == -1.0
        assert b[name].imaging["tilt_angles"] == a[name].imaging["tilt_angles"]
        for model in ("stage_angles", "global_shifts", "ctf"):
            np.testing.assert_allclose(repo2.objects.get_array(b[name].models[model]),
                                       repo.objects.get_array(a[name].models[model]), rtol=0, atol=1e-9,
                                       err_msg=f"{name} {model}")
    t1 = repo.particles(repo.species(repo.population().species["ribo"]).particles)
    t2 = repo2.particles(repo2.species(repo2.population().species["ribo"]).particles)
    np.testing.assert_array_equal(t2.ids, t1.ids)
    np.testing.assert_allclose(t2.coordinates, t1.coordinates, atol=1e-5)  # M writes F5
    export_relion(repo2, "main", tmp_path / "rel", project=tmp_path / "proj")
    for name in ("TS_01", "TS_02"):
        original = starfile.read(tmp_path / f"proj/AlignTiltSeries/job005/tilt_series/{name}.star")
        (back_path,) = [p for p in (tmp_path / "rel").rglob(f"{name}.star")]
        back = starfile.read(back_path)
        for col in TILT_COLUMNS:
            np.testing.assert_allclose(back[col].to_numpy(float), original[col].to_numpy(float), rtol=0, atol=1e-6,
                                       err_msg=f"{name} {col}")


def test_varying_xtilt_refused_and_nothing_written(tmp_path):
    proj = relion5_tomo(tmp_path / "proj")  # rlnTomoXTilt 0, 0.1, 0.2: M has one LevelAngleX per series
    sp = SpeciesFiles("ribo", proj["half1"], proj["half2"], proj["mask"], 250.0, "C1")
    repo = Repository.init(str(tmp_path / "repo"))
    import_relion5_tomo(repo, proj["tomograms"], source="ts", project=tmp_path / "proj",
                        particles=proj["particles"], species=sp)
    out = tmp_path / "m"
    out.mkdir()
    with pytest.raises(MCannotRepresent, match=r"item 'TS_0[12]': x-tilt \(rlnTomoXTilt\) varies between tilts "
                                               r"\(0 to 0.2 deg\).*one LevelAngleX"):
        export_m(repo, "main", out)
    assert listing(out) == []
    assert issubclass(MCannotRepresent, InvalidInput)  # exit code 2 in the CLI


def test_cli_export_m_refusal_exit_2(tmp_path):
    from typer.testing import CliRunner

    from mrepo.cli import app

    proj = relion5_tomo(tmp_path / "proj")
    repo = Repository.init(str(tmp_path / "repo"))
    import_relion5_tomo(repo, proj["tomograms"], source="ts", project=tmp_path / "proj")
    res = CliRunner().invoke(app, ["export", "m", "--repo", str(tmp_path / "repo"), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "LevelAngleX" in res.output


def test_hand_plus_one_written_not_inverted(tmp_path):
    proj = relion5_tomo(tmp_path / "proj")
    constant_xtilt(tmp_path / "proj", 0.0)
    tomograms = proj["tomograms"]
    blocks = starfile.read(tomograms, always_dict=True)
    blocks["global"]["rlnTomoHand"] = 1.0
    starfile.write(blocks, tomograms)
    repo = Repository.init(str(tmp_path / "repo"))
    import_relion5_tomo(repo, tomograms, source="ts", project=tmp_path / "proj")
    assert {it.imaging["hand"] for it in _items(repo).values()} == {1.0}
    export_m(repo, "main", tmp_path / "m")
    assert ET.parse(tmp_path / "m/TS_01.xml").getroot().get("AreAnglesInverted") == "False"
    repo2 = Repository.init(str(tmp_path / "repo2"))
    import_m(repo2, tmp_path / "m/population.population")
    assert {it.imaging["hand"] for it in _items(repo2).values()} == {1.0}


def test_m_export_of_copied_raw_data_after_the_originals_are_gone(tmp_path):
    """--copy imports: the M export writes the raw data out of the repository and M's files point there."""
    proj = relion5_tomo(tmp_path / "proj")
    constant_xtilt(tmp_path / "proj")
    sp = SpeciesFiles("ribo", proj["half1"], proj["half2"], proj["mask"], 250.0, "C1")
    repo = Repository.init(str(tmp_path / "repo"))
    import_relion5_tomo(repo, proj["tomograms"], source="ts", project=tmp_path / "proj", particles=proj["particles"],
                        species=sp, copy=True)
    (tmp_path / "proj").rename(tmp_path / "gone")
    out = tmp_path / "m"
    export_m(repo, "main", out)
    src = ET.parse(out / "ts.source").getroot()
    for f in src.findall("Files/File"):
        root_name = f.get("Name")[: -len(".tomostar")]
        first = (out / ET.parse(out / f"{root_name}.xml").getroot().find("MoviePath").text.split("\n")[0])
        assert first.is_file() and f.get("Hash") == m_data_hash(root_name, first)
        assert str(first.resolve()).startswith(str(out.resolve()))  # nothing points into the removed project
    repo2 = Repository.init(str(tmp_path / "repo2"))
    import_m(repo2, out / "population.population")
    a, b = _items(repo), _items(repo2)
    assert b["TS_02"].key == a["TS_02"].key  # one stack: same bytes, same identity
    # TS_01's raw data is a manifest of per-tilt files, whose key includes where the files were (their uris):
    # exported from the repository they now live under <out>/raw, so it comes back as a new item
    t2 = repo2.particles(repo2.species(repo2.population().species["ribo"]).particles)
    assert len(t2) == 3 and set(t2.items) == {b["TS_01"].key, b["TS_02"].key}


def _with_models(repo, models: dict[str, dict[str, np.ndarray]]) -> None:
    """Commit the population with extra/replaced model arrays on named items (as refinement would)."""
    from dataclasses import replace

    pop = repo.population()
    sources = {}
    for sname, sh in pop.sources.items():
        src = repo.source(sh)
        items = {}
        for key, ih in src.items.items():
            it = repo.item(ih)
            new = {k: repo.objects.put_array(np.ascontiguousarray(v, np.float64))
                   for k, v in models.get(it.name, {}).items()}
            items[key] = replace(it, models={**it.models, **new}).save(repo.objects)
        sources[sname] = replace(src, items=items).save(repo.objects)
    repo.commit(replace(pop, sources=sources), message="refined models")


def test_refined_models_survive_m_roundtrip(tmp_path):
    """Per-frame astigmatism, phase, image warp and exposure weights (frames); stage corrections, per-tilt
    image warp and weights (tilts): written to M's grids and read back exactly."""
    from warp_projects import warp_frames

    from mrepo.io.warp_import import import_warp

    rng = np.random.default_rng(3)
    proj = warp_frames(tmp_path / "warp")
    repo = Repository.init(str(tmp_path / "repo"))
    import_warp(repo, proj["folder"], source="movies", settings=proj["settings"])
    frames = {"ctf": np.stack([15000 + rng.uniform(0, 50, 3), 14800 + rng.uniform(0, 50, 3),
                               rng.uniform(0, 90, 3)], 1),
              "phase_shift": rng.uniform(0, 90, 3), "weights": np.stack([rng.uniform(0, 40, 3), [1.0, 0.8, 0.5]], 1),
              "image_warp": rng.normal(size=(2, 3, 2, 3)), "global_shifts": rng.normal(size=(3, 2))}
    _with_models(repo, {"mov_001": frames})
    export_m(repo, "main", tmp_path / "m")
    repo2 = Repository.init(str(tmp_path / "repo2"))
    import_m(repo2, tmp_path / "m/population.population")
    it = _items(repo2)["mov_001"]
    assert set(frames) <= set(it.models)
    for k, v in frames.items():
        np.testing.assert_allclose(repo2.objects.get_array(it.models[k]), v, rtol=0, atol=1e-9, err_msg=k)

    _, trepo, _ = _setup(tmp_path / "t")
    tilts = {"stage_corrections": rng.normal(size=(3, 3)), "image_warp": rng.normal(size=(2, 2, 2, 3)),
             "weights": np.stack([rng.uniform(0, 40, 3), [1.0, 0.9, 0.7]], 1), "phase_shift": [10.0, 20.0, 30.0]}
    _with_models(trepo, {"TS_02": tilts})
    export_m(trepo, "main", tmp_path / "mt")
    repo3 = Repository.init(str(tmp_path / "repo3"))
    import_m(repo3, tmp_path / "mt/population.population")
    a, b = _items(trepo)["TS_02"], _items(repo3)["TS_02"]
    assert set(b.models) == set(a.models)
    for k in a.models:
        np.testing.assert_allclose(repo3.objects.get_array(b.models[k]), trepo.objects.get_array(a.models[k]),
                                   rtol=0, atol=1e-9, err_msg=k)


def test_models_m_has_no_place_for_are_refused(tmp_path):
    _, repo, _ = _setup(tmp_path)
    _with_models(repo, {"TS_01": {"beam_tilt": np.zeros((3, 2))}})
    with pytest.raises(MCannotRepresent, match=r"item 'TS_01': M has no place for model\(s\) beam_tilt"):
        export_m(repo, "main", tmp_path / "m")
    _, repo2, _ = _setup(tmp_path / "b")
    _with_models(repo2, {"TS_02": {"image_warp": np.zeros((2, 2, 2, 2))}})  # 2 temporal nodes for 3 tilts
    with pytest.raises(MCannotRepresent, match=r"item 'TS_02': image warp grid .* one node per tilt \(3\)"):
        export_m(repo2, "main", tmp_path / "m2")


def test_stage_corrections_are_the_rotation_m_applies():
    """M: Rotation = RotateZ(z) RotateY(y) RotateX(x) . tilt (Matrix3.cs, column-major constructors, i.e.
    the standard right-handed rotations); mrepo: xyz_to_matrix(ω) . tilt. Same matrices after conversion."""
    import torch

    from mrepo.io.warp_import import corrections_from_m, corrections_to_m
    from mrepo.kernels.rotations import xyz_to_matrix

    def rot(axis: int, deg: float) -> np.ndarray:
        c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
        i, j = [(1, 2), (2, 0), (0, 1)][axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m

    m_angles = np.array([[0.5, -1.25, 2.0], [3.0, 0.0, -0.75], [-2.0, 1.5, 0.25]])
    ours = corrections_from_m(m_angles)
    for (x, y, z), w in zip(m_angles, ours):
        m_matrix = rot(2, z) @ rot(1, y) @ rot(0, x)
        np.testing.assert_allclose(xyz_to_matrix(torch.deg2rad(torch.tensor(w))).numpy(), m_matrix, atol=1e-12)
    np.testing.assert_allclose(corrections_to_m(ours), m_angles, atol=1e-12)


def test_species_without_resolution_gets_nyquist_for_m(tmp_path):
    """M divides by GlobalResolution (Species.PrepareRefinementRequisites); 0 would break it."""
    _, repo, _ = _setup(tmp_path)
    sp = repo.species(repo.population().species["ribo"])
    assert sp.resolution is None
    export_m(repo, "main", tmp_path / "m")
    path = next((tmp_path / "m/species").rglob("ribo.species"))
    assert float(_params(ET.parse(path).getroot())["GlobalResolution"]) == 2.0 * sp.pixel_size


def test_exact_diameter_and_resolution_come_back_unless_m_changed_them(tmp_path):
    from dataclasses import replace

    _, repo, _ = _setup(tmp_path)
    pop = repo.population()
    sp = repo.species(pop.species["ribo"]).evolve(diameter=250.4, resolution=7.25)
    repo.commit(replace(pop, species={"ribo": sp.save(repo.objects)}), message="refined")
    export_m(repo, "main", tmp_path / "m")
    path = next((tmp_path / "m/species").rglob("ribo.species"))
    assert _params(ET.parse(path).getroot())["DiameterAngstrom"] == "250"  # M holds an integer
    repo2 = Repository.init(str(tmp_path / "repo2"))
    import_m(repo2, tmp_path / "m/population.population")
    back = repo2.species(repo2.population().species["ribo"])
    assert (back.diameter, back.resolution) == (250.4, 7.25)
    path.write_text(path.read_text().replace('Name="GlobalResolution" Value="7.25"',
                                             'Name="GlobalResolution" Value="6.5"'))  # M refined it
    repo3 = Repository.init(str(tmp_path / "repo3"))
    import_m(repo3, tmp_path / "m/population.population")
    back = repo3.species(repo3.population().species["ribo"])
    assert (back.diameter, back.resolution) == (250.4, 6.5)


def test_m_tilt_images_from_stack_sections_in_any_order(tmp_path):
    """rlnMicrographName k@stack out of order (RELION after excluding/reordering tilts): the M export cuts
    each tilt's section out of the stack, in the tilt-series order."""
    proj = relion5_tomo(tmp_path / "proj")
    constant_xtilt(tmp_path / "proj")
    star = tmp_path / "proj/AlignTiltSeries/job005/tilt_series/TS_02.star"
    blocks = starfile.read(star, always_dict=True)
    blocks["TS_02"]["rlnMicrographName"] = ["3@Stacks/TS_02.mrcs", "1@Stacks/TS_02.mrcs", "2@Stacks/TS_02.mrcs"]
    starfile.write(blocks, star)
    repo = Repository.init(str(tmp_path / "repo"))
    import_relion5_tomo(repo, proj["tomograms"], source="ts", project=tmp_path / "proj")
    assert _items(repo)["TS_02"].raw.format == "manifest"
    out = tmp_path / "m"
    export_m(repo, "main", out)
    movies = ET.parse(out / "TS_02.xml").getroot().find("MoviePath").text.split("\n")
    with mrcfile.open(tmp_path / "proj/Stacks/TS_02.mrcs") as stack:
        for m, section in zip(movies, (2, 0, 1)):
            with mrcfile.open(out / m) as image:
                np.testing.assert_array_equal(image.data.reshape(24, 32), stack.data[section])
    assert not (out / "tiltstack/TS_02/TS_02.st").exists()  # no single stack to link
