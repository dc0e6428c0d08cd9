"""M population folders: export in M's XML layout; import of M species back gives the same population hash."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import mrcfile
import pytest
import starfile
from io_projects import relion5_tomo

from mrepo.graph import Repository
from mrepo.io import SpeciesFiles, import_relion5_tomo
from mrepo.io.m_format import export_m, guid_for, import_m_species
from mrepo.store import InvalidInput


def constant_xtilt(proj_root, value: float = 0.3) -> None:
    """Give every tilt of the RELION 5 project the same rlnTomoXTilt (M holds one LevelAngleX per series)."""
    for star in sorted((proj_root / "AlignTiltSeries/job005/tilt_series").glob("*.star")):
        blocks = starfile.read(star, always_dict=True)
        for df in blocks.values():
            df["rlnTomoXTilt"] = value
        starfile.write(blocks, star)


def _setup(tmp_path):
    proj = relion5_tomo(tmp_path / "proj")
    constant_xtilt(tmp_path / "proj")
    sp = SpeciesFiles("ribo", proj["half1"], proj["half2"], proj["mask"], 250.0, "C1")
    repo = Repository.init(str(tmp_path / "repo"))
    res = import_relion5_tomo(repo, proj["tomograms"], source="ts", project=tmp_path / "proj",
                              particles=proj["particles"], species=sp)
    return proj, repo, res


def test_m_layout(tmp_path):
    _, repo, res = _setup(tmp_path)
    out = tmp_path / "m"
    export_m(repo, "main", out)
    pop = ET.parse(out / "population.population").getroot()
    (sp_el,) = pop.findall("Species/Species")
    assert sp_el.get("GUID") == guid_for(res.species["ribo"])
    species = ET.parse(out / sp_el.get("Path")).getroot()
    params = {p.get("Name"): p.get("Value") for p in species.findall("Param")}
    assert params["Name"] == "ribo" and params["DiameterAngstrom"] == "250" and params["PixelSize"] == "4.0"
    folder = (out / sp_el.get("Path")).parent
    table = starfile.read(folder / "ribo_particles.star")
    assert {"wrpCoordinateX1", "wrpAngleRot1", "wrpRandomSubset", "wrpSourceName", "wrpSourceHash"} <= set(table)
    assert set(table["wrpSourceName"]) == {"TS_01.tomostar", "TS_02.tomostar"}
    with mrcfile.open(folder / "ribo_half1.mrc") as m:
        assert float(m.voxel_size.x) == 4.0
    (src_el,) = pop.findall("Sources/Source")
    source = ET.parse(out / src_el.get("Path")).getroot()
    files = {f.get("Name"): f.get("Hash") for f in source.findall("Files/File")}
    assert set(files) == {"TS_01.tomostar", "TS_02.tomostar"}
    assert set(files.values()) == set(table["wrpSourceHash"])


def test_m_species_roundtrip_same_hash(tmp_path):
    proj, repo, res = _setup(tmp_path)
    out = tmp_path / "m"
    export_m(repo, "main", out)
    repo2 = Repository.init(str(tmp_path / "repo2"))
    import_relion5_tomo(repo2, proj["tomograms"], source="ts", project=tmp_path / "proj")
    res2 = import_m_species(repo2, out / "population.population")
    assert res2.population == res.population


def test_m_bad_xml(tmp_path):
    _, repo, _ = _setup(tmp_path)
    bad = tmp_path / "bad.population"
    bad.write_text("<Population><Species>")
    with pytest.raises(InvalidInput, match="malformed XML"):
        import_m_species(repo, bad)
    # a missing file is named as missing, not as malformed XML ("malformed XML ([Errno 2] ...)")
    with pytest.raises(InvalidInput, match=r"nothere.population does not exist or is not a file"):
        import_m_species(repo, tmp_path / "nothere.population")


def test_cli_export_and_checkout(tmp_path):
    from typer.testing import CliRunner

    from mrepo.cli import app

    _setup(tmp_path)
    runner = CliRunner()
    r = str(tmp_path / "repo")
    for args in (["export", "m", "--repo", r, "--out", str(tmp_path / "m")],
                 ["export", "relion", "--repo", r, "--out", str(tmp_path / "rel")],
                 ["checkout", "main", "--repo", r, "--out", str(tmp_path / "co")]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
    with mrcfile.open(tmp_path / "co/ribo/half2.mrc") as m:
        assert float(m.voxel_size.x) == 4.0 and tuple(float(v) for v in m.header.origin.tolist()) == (0.0, 0.0, 0.0)
        assert mrcfile.validate(tmp_path / "co/ribo/half2.mrc")
    parts = starfile.read(tmp_path / "co/ribo/particles.star")["particles"]
    assert len(parts) == 3
    assert runner.invoke(app, ["checkout", "nope", "--repo", r, "--out", str(tmp_path / "x")]).exit_code != 0


def test_m_full_roundtrip_same_population_hash(tmp_path):
    """import m -> export m -> import m: sources (per-item Warp XML) and species give the same hash."""
    from mrepo.io.m_format import import_m

    _, repo, _ = _setup(tmp_path)
    export_m(repo, "main", tmp_path / "m1")
    repo2 = Repository.init(str(tmp_path / "repo2"))
    res2 = import_m(repo2, tmp_path / "m1/population.population")
    assert set(repo2.population().sources) == {"ts"} and set(repo2.population().species) == {"ribo"}
    export_m(repo2, "main", tmp_path / "m2")
    assert (tmp_path / "m2/TS_01.xml").is_file() and (tmp_path / "m2/TS_02.tomostar").is_file()
    repo3 = Repository.init(str(tmp_path / "repo3"))
    res3 = import_m(repo3, tmp_path / "m2/population.population")
    assert res3.population == res2.population
    assert len(repo3.particles(repo3.species(repo3.population().species["ribo"]).particles)) == 3


def test_m_warp_frames_roundtrip(tmp_path):
    from warp_projects import warp_frames

    from mrepo.io.m_format import import_m
    from mrepo.io.warp_import import import_warp

    proj = warp_frames(tmp_path / "warp")
    repo = Repository.init(str(tmp_path / "repo"))
    import_warp(repo, proj["folder"], source="movies", settings=proj["settings"])
    export_m(repo, "main", tmp_path / "m1")
    repo2 = Repository.init(str(tmp_path / "repo2"))
    res2 = import_m(repo2, tmp_path / "m1/population.population")
    items1 = {repo.item(h).name: repo.item(h) for h in repo.source(repo.population().sources["movies"]).items.values()}
    items2 = {repo2.item(h).name: repo2.item(h) for h in
              repo2.source(repo2.population().sources["movies"]).items.values()}
    assert items1 == items2  # Warp metadata written back verbatim, movies found via DataDirectory
    export_m(repo2, "main", tmp_path / "m2")
    repo3 = Repository.init(str(tmp_path / "repo3"))
    assert import_m(repo3, tmp_path / "m2/population.population").population == res2.population


def test_m_source_bad_item_xml_writes_nothing(tmp_path):
    from test_io_bad_input import listing

    from mrepo.io.m_format import import_m

    _, repo, _ = _setup(tmp_path)
    export_m(repo, "main", tmp_path / "m1")
    xml = tmp_path / "m1/TS_02.xml"
    xml.write_text(xml.read_text().replace("<Angles>", "<Angles>abc\n", 1))
    repo2 = Repository.init(str(tmp_path / "repo2"))
    before = listing(tmp_path / "repo2")
    with pytest.raises(InvalidInput, match=r"TS_02.xml: <Angles> line 1: 'abc'"):
        import_m(repo2, tmp_path / "m1/population.population")
    assert listing(tmp_path / "repo2") == before
