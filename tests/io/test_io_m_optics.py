"""M's optics and deformation models through M's item XML and a whole M population.

The M files are written by hand in the layout M saves (Movie.SaveMeta / TiltSeries.SaveMeta: root attribute
``MagnificationCorrection`` = ``Matrix2.ToString()`` "M11, M21, M12, M22"; ``<CTF>`` Params
``ZernikeCoeffsOdd`` / ``ZernikeCoeffsEven`` as ``;``-joined C# floats; ``<GridCTFCs>`` a CubicGrid of Cs
offsets in mm), not by mrepo's exporter. Conventions: :mod:`mrepo.io.m_optics`.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from test_io_m import _setup
from warp_projects import grid, warp_frames

from mrepo.graph import Repository
from mrepo.io.m_format import export_m, import_m
from mrepo.io.warp_export import MCannotRepresent, write_item_xml
from mrepo.io.warp_import import import_warp
from mrepo.kernels.aberrations import insert_beam_tilt
from mrepo.store import InvalidInput

MAG_M = "1.01, 0.002, 0.003, 0.99"  # M11, M21, M12, M22 (column order)
MAG = [[1.01, 0.003], [0.002, 0.99]]  # RELION rlnMagMat00, 01 / 10, 11
ODD_M = "0.1;-0.2;0.3;0;1E-05;0.05"  # C# float.ToString() writes 1E-05
EVEN_M = "0;0;0;1.5;0;0;0;-2"
CS_GRID = [0.01 * (i + 1) for i in range(9)]  # mm, 3 x 3 x 1, mean 0.05


def _m_frames(root):
    """A Warp/M frame-series folder whose mov_001.xml carries M's optics."""
    proj = warp_frames(root)
    xml = root / "mov_001.xml"
    text = xml.read_text().replace('MagnificationCorrection="1, 0, 0, 1"', f'MagnificationCorrection="{MAG_M}"')
    text = text.replace(
        "\t</CTF>\n",
        f'\t\t<Param Name="ZernikeCoeffsOdd" Value="{ODD_M}" />\n'
        f'\t\t<Param Name="ZernikeCoeffsEven" Value="{EVEN_M}" />\n\t</CTF>\n',
    )
    xml.write_text(text.replace("</Movie>", grid("GridCTFCs", (3, 3, 1), CS_GRID) + "</Movie>"))
    return proj


def _items(repo):
    pop = repo.population()
    return {it.name: it for sh in pop.sources.values() for it in (repo.item(h) for h in repo.source(sh).items.values())}


def _commit(repo, name: str, *, models=None, imaging=None) -> None:
    """Commit the population with item ``name``'s models / imaging replaced (as refinement would)."""
    pop = repo.population()
    sources = {}
    for sname, sh in pop.sources.items():
        src = repo.source(sh)
        items = {}
        for key, ih in src.items.items():
            it = repo.item(ih)
            if it.name == name:
                new = {
                    k: repo.objects.put_array(np.ascontiguousarray(v, np.float64)) for k, v in (models or {}).items()
                }
                it = dataclasses.replace(it, models={**it.models, **new}, imaging={**it.imaging, **(imaging or {})})
            items[key] = it.save(repo.objects)
        sources[sname] = dataclasses.replace(src, items=items).save(repo.objects)
    repo.commit(dataclasses.replace(pop, sources=sources), message="refined")


def _imported(tmp_path):
    proj = _m_frames(tmp_path / "warp")
    repo = Repository.init(str(tmp_path / "repo"))
    import_warp(repo, proj["folder"], source="movies", settings=proj["settings"])
    return repo


def test_m_optics_import_in_relion_conventions(tmp_path):
    im = _items(_imported(tmp_path))["mov_001"].imaging
    assert im["mag_matrix"] == MAG
    assert im["odd_zernike"] == [-0.1, 0.2, -0.3, -0.0, -1e-05, -0.05]  # M demodulates with exp(+i phi)
    assert im["even_zernike"] == [0.0, 0.0, 0.0, 0.0, 1.5, 0.0, 0.0, 0.0, -2.0]  # M's even[i] = RELION's [i + 1]
    assert im["cs"] == pytest.approx(2.7 + 0.05, abs=1e-12)  # <CTF> Cs + mean of GridCTFCs
    plain = _items(_imported(tmp_path / "b"))["mov_002"].imaging  # identity, no Zernike, no Cs grid
    assert "mag_matrix" not in plain and "odd_zernike" not in plain and plain["cs"] == 2.7


def test_unchanged_optics_are_written_back_verbatim(tmp_path):
    repo = _imported(tmp_path)
    written, _ = write_item_xml(repo, _items(repo)["mov_001"], tmp_path / "out")
    root = ET.parse(written[0]).getroot()
    ctf = {p.get("Name"): p.get("Value") for p in root.find("CTF").findall("Param")}
    assert root.get("MagnificationCorrection") == MAG_M
    assert (ctf["ZernikeCoeffsOdd"], ctf["ZernikeCoeffsEven"], ctf["Cs"]) == (ODD_M, EVEN_M, "2.7")


def test_refined_optics_are_written_in_m_fields(tmp_path):
    """Refined magnification, Zernike, beam tilt and Cs read from the XML as M reads it (ElementTree, M's
    layouts), not with mrepo's reader."""
    repo = _imported(tmp_path)
    refined = {
        "mag_matrix": [[1.004, -0.001], [0.0015, 0.997]],
        "odd_zernike": [0.0, 0.0, 0.4, 0.0, 0.0, -0.3],
        "beam_tilt": [0.5, -0.25],
        "even_zernike": [0.0, 0.0, 0.0, 0.0, 12.0, 0.0, 0.0, 0.0, 3.0],
        "cs": 2.6,
    }
    _commit(repo, "mov_001", imaging=refined)
    it = _items(repo)["mov_001"]
    written, _ = write_item_xml(repo, it, tmp_path / "out")
    root = ET.parse(written[0]).getroot()
    m11, m21, m12, m22 = (float(v) for v in root.get("MagnificationCorrection").split(","))
    assert [[m11, m12], [m21, m22]] == refined["mag_matrix"]
    ctf = {p.get("Name"): p.get("Value") for p in root.find("CTF").findall("Param")}
    odd = [float(v) for v in ctf["ZernikeCoeffsOdd"].split(";")]
    expected = insert_beam_tilt(refined["odd_zernike"], 0.5, -0.25, 2.6, it.imaging["voltage"])  # the kernels'
    np.testing.assert_allclose(odd, -np.asarray(expected), rtol=1e-12, atol=1e-15)
    assert [float(v) for v in ctf["ZernikeCoeffsEven"].split(";")] == refined["even_zernike"][1:]
    cs_nodes = [float(n.get("Value")) for n in root.find("GridCTFCs").findall("Node")]
    assert float(ctf["Cs"]) + np.mean(cs_nodes) == pytest.approx(2.6, abs=1e-12)  # Movie.GetCs


def test_optics_and_doming_survive_export_m_import_m(tmp_path):
    repo = _imported(tmp_path)
    optics = {
        "mag_matrix": [[1.004, -0.001], [0.0015, 0.997]],
        "beam_tilt": [0.5, -0.25],
        "odd_zernike": [0.0, 0.0, 0.4, 0.0, 0.0, -0.3],
        "cs": 2.6,
        "even_zernike": [0.0, 0.01, -0.02, 0.0, 12.0, 0.0, 0.0, 0.0, 3.0],
    }
    dome = np.random.default_rng(2).normal(scale=50.0, size=(3, 3, 3))  # Å over x, y, t
    _commit(repo, "mov_001", imaging=optics, models={"doming": dome})
    export_m(repo, "main", tmp_path / "m")
    repo2 = Repository.init(str(tmp_path / "repo2"))
    import_m(repo2, tmp_path / "m/population.population")
    it = _items(repo2)["mov_001"]
    assert {k: it.imaging[k] for k in optics} == optics  # the sidecar restores mrepo's form (beam tilt apart)
    np.testing.assert_allclose(repo2.objects.get_array(it.models["doming"]), dome, rtol=0, atol=1e-9)

    # M refines the odd aberrations: M's values win, the sidecar's beam tilt is not added a second time
    xml = tmp_path / "m/mov_001.xml"
    root = ET.parse(xml).getroot()
    (p,) = [p for p in root.find("CTF").findall("Param") if p.get("Name") == "ZernikeCoeffsOdd"]
    p.set("Value", "0.25;-0.5;0;0;0;0.125")
    ET.ElementTree(root).write(xml, encoding="utf-8", xml_declaration=True)
    repo3 = Repository.init(str(tmp_path / "repo3"))
    import_m(repo3, tmp_path / "m/population.population")
    im = _items(repo3)["mov_001"].imaging
    assert im["odd_zernike"] == [-0.25, 0.5, -0.0, -0.0, -0.0, -0.125] and "beam_tilt" not in im
    assert im["mag_matrix"] == optics["mag_matrix"] and im["cs"] == pytest.approx(2.6, abs=1e-12)


def test_volume_warp_and_magnification_survive_export_m_import_m(tmp_path):
    _, repo, _ = _setup(tmp_path)
    warp = np.random.default_rng(1).normal(scale=3.0, size=(3, 2, 3, 2, 4))  # Å, (3, gx, gy, gz, gt)
    mag = [[1.008, 0.001], [0.001, 0.993]]
    _commit(repo, "TS_01", models={"volume_warp": warp}, imaging={"mag_matrix": mag, "cs": 2.65})
    export_m(repo, "main", tmp_path / "m")
    root = ET.parse(tmp_path / "m/TS_01.xml").getroot()
    assert [float(v) for v in root.get("MagnificationCorrection").split(",")] == [1.008, 0.001, 0.001, 0.993]
    assert root.find("GridVolumeWarpZ").get("Duration") == "4"
    repo2 = Repository.init(str(tmp_path / "repo2"))
    import_m(repo2, tmp_path / "m/population.population")
    it = _items(repo2)["TS_01"]
    np.testing.assert_allclose(repo2.objects.get_array(it.models["volume_warp"]), warp, rtol=0, atol=1e-9)
    assert it.imaging["mag_matrix"] == mag and it.imaging["cs"] == 2.65
    assert "mag_matrix" not in _items(repo2)["TS_02"].imaging


def test_constant_even_zernike_term_is_refused_and_nothing_written(tmp_path):
    repo = _imported(tmp_path)
    _commit(repo, "mov_001", imaging={"even_zernike": [0.3, 0.0, 0.0, 0.0, 1.0]})
    with pytest.raises(MCannotRepresent, match=r"item 'mov_001': even Zernike coefficient 0 .*0\.3 rad"):
        export_m(repo, "main", tmp_path / "m")
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            f'MagnificationCorrection="{MAG_M}"',
            'MagnificationCorrection="1, 0, 0"',
            r"mov_001.xml: attribute MagnificationCorrection '1, 0, 0' is not 4 numbers",
        ),
        (ODD_M, "0.1;abc", r"mov_001.xml: <CTF> Param ZernikeCoeffsOdd: '0.1;abc' is not a list of numbers"),
        (EVEN_M, "0;NaN", r"mov_001.xml: <CTF> Param ZernikeCoeffsEven: '0;NaN' is not finite"),
    ],
)
def test_bad_m_optics_are_refused_naming_file_and_field(tmp_path, old, new, message):
    proj = _m_frames(tmp_path / "warp")
    xml = tmp_path / "warp/mov_001.xml"
    xml.write_text(xml.read_text().replace(old, new))
    repo = Repository.init(str(tmp_path / "repo"))
    with pytest.raises(InvalidInput, match=message):
        import_warp(repo, proj["folder"], source="movies", settings=proj["settings"])
    assert repo.head("main") is None
