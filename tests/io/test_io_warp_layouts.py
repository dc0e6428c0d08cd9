"""Warp/WarpTools tilt-series layouts: .tif/.eer movies read through Warp's average/ images, volume size from
the settings file, AreAnglesInverted, and refusals that name what was expected and what was found.

Files are hand-written in the layout WarpTools writes (warp_frameseries/average/<movie>.mrc from
Movie.AveragePath, warp_tiltseries/<name>.xml from TiltSeries.SaveMeta, <Settings> from OptionsWarp.Save).
"""

from __future__ import annotations

import time
import tracemalloc
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from io_projects import write_mrc
from test_io_bad_input import listing
from warp_projects import ctf, grid, tilt_xml

from mrepo.graph import Repository
from mrepo.io.m_format import export_m, import_m
from mrepo.io.warp_import import import_warp
from mrepo.io.warp_xml import read_warp_xml
from mrepo.store import InvalidInput

SETTINGS = """<?xml version="1.0" encoding="utf-8"?>
<Settings>
\t<Import>
\t\t<Param Name="Extension" Value="*.tif" />
\t\t<Param Name="PixelSize" Value="1.0" />
\t\t<Param Name="BinTimes" Value="1" />
\t\t<Param Name="DosePerAngstromFrame" Value="0.5" />
\t</Import>
\t<Tomo>
\t\t<Param Name="DimensionsX" Value="64" />
\t\t<Param Name="DimensionsY" Value="48" />
\t\t<Param Name="DimensionsZ" Value="20" />
\t</Tomo>
</Settings>
"""


def warptools_tilts(root, *, inverted: str = "True", volume: bool = False, movie_ext: str = ".tif"):
    """warp_frameseries/average/*.mrc (2 Å, BinTimes 1), warp_tiltseries/TS_01.xml with .tif MoviePath."""
    rng = np.random.default_rng(7)
    angles = [-3.0, 0.0, 3.0]
    movies = [f"TS_01_{i + 1:03d}_{a}{movie_ext}" for i, a in enumerate(angles)]
    for m in movies:
        write_mrc(root / "warp_frameseries/average" / (m.rsplit(".", 1)[0] + ".mrc"), rng.normal(size=(1, 24, 32)),
                  2.0)
    xml = tilt_xml(angles, [3.0, 0.0, 6.0], 85.0)
    xml = xml.replace('AreAnglesInverted="False"', f'AreAnglesInverted="{inverted}"')
    xml = xml.replace('DataDirectory=""', 'DataDirectory="../tomostar"')
    if not volume:
        xml = xml.replace(' VolumeDimensionsAngstrom="64,48,20"', "")
    for i in range(3):
        xml = xml.replace(f"frames/tilt_{i}.tif", f"../warp_frameseries/{movies[i]}")
    (root / "warp_tiltseries").mkdir(parents=True, exist_ok=True)
    (root / "tomostar").mkdir(parents=True, exist_ok=True)
    (root / "warp_tiltseries/TS_01.xml").write_text(xml)
    (root / "warp_tiltseries.settings").write_text(SETTINGS)
    return {"folder": root / "warp_tiltseries", "settings": root / "warp_tiltseries.settings", "movies": movies}


def _item(repo):
    pop = repo.population()
    (sh,) = pop.sources.values()
    (h,) = repo.source(sh).items.values()
    return repo.item(h)


def test_tif_tilts_read_through_warp_averages(tmp_path):
    proj = warptools_tilts(tmp_path)
    repo = Repository.init(str(tmp_path / "repo"))
    import_warp(repo, proj["folder"], source="ts", settings=proj["settings"])
    it = _item(repo)
    assert it.raw.format == "manifest"
    import json

    files = [f["uri"] for f in json.loads(repo.objects.get_blob(it.raw.hash))["files"]]
    assert [f.rsplit("/", 2)[-2:] for f in files] == [["average", m.replace(".tif", ".mrc")] for m in proj["movies"]]
    im = it.imaging
    assert im["pixel_size"] == 2.0  # PixelSize 1.0 x 2^BinTimes, the averages' voxel size
    assert im["volume_dimensions"] == [64.0, 48.0, 20.0]  # Tomo DimensionsX/Y/Z (unbinned px) x PixelSize
    assert im["hand"] == -1.0 and im["dimensions"] == [32, 24, 3]


def test_are_angles_inverted_false_gives_hand_plus_one_and_survives_m(tmp_path):
    proj = warptools_tilts(tmp_path, inverted="False", volume=True)
    repo = Repository.init(str(tmp_path / "repo"))
    import_warp(repo, proj["folder"], source="ts", settings=proj["settings"])
    assert _item(repo).imaging["hand"] == 1.0
    export_m(repo, "main", tmp_path / "m")
    assert ET.parse(tmp_path / "m/TS_01.xml").getroot().get("AreAnglesInverted") == "False"
    repo2 = Repository.init(str(tmp_path / "repo2"))
    import_m(repo2, tmp_path / "m/population.population")
    assert _item(repo2).imaging["hand"] == 1.0 and _item(repo2).key == _item(repo).key


def test_inverted_hand_survives_m_roundtrip(tmp_path):
    proj = warptools_tilts(tmp_path)
    repo = Repository.init(str(tmp_path / "repo"))
    import_warp(repo, proj["folder"], source="ts", settings=proj["settings"])
    export_m(repo, "main", tmp_path / "m")
    assert ET.parse(tmp_path / "m/TS_01.xml").getroot().get("AreAnglesInverted") == "True"
    repo2 = Repository.init(str(tmp_path / "repo2"))
    import_m(repo2, tmp_path / "m/population.population")
    a, b = _item(repo), _item(repo2)
    assert b.key == a.key and b.imaging["hand"] == -1.0
    for model in ("stage_angles", "global_shifts", "ctf"):
        np.testing.assert_allclose(repo2.objects.get_array(b.models[model]), repo.objects.get_array(a.models[model]),
                                   atol=1e-9)


def test_missing_average_names_expected_and_found(tmp_path):
    proj = warptools_tilts(tmp_path)
    (tmp_path / "warp_frameseries/average" / proj["movies"][1].replace(".tif", ".mrc")).unlink()
    repo = Repository.init(str(tmp_path / "repo"))
    before = listing(tmp_path / "repo")
    with pytest.raises(InvalidInput) as err:
        import_warp(repo, proj["folder"], source="ts", settings=proj["settings"])
    msg = str(err.value)
    assert "\n" not in msg and "TS_01.xml" in msg and "average/TS_01_002_0.0.mrc" in msg and "found neither" in msg
    assert "TS_01_002_0.0.tif" in msg and "tiltstack/TS_01/TS_01.st" in msg
    assert listing(tmp_path / "repo") == before


def test_eer_movies_use_averages_too(tmp_path):
    proj = warptools_tilts(tmp_path, movie_ext=".eer")
    repo = Repository.init(str(tmp_path / "repo"))
    import_warp(repo, proj["folder"], source="ts", settings=proj["settings"])
    assert _item(repo).imaging["dimensions"] == [32, 24, 3]


def test_no_volume_and_no_settings_refused(tmp_path):
    proj = warptools_tilts(tmp_path)
    repo = Repository.init(str(tmp_path / "repo"))
    with pytest.raises(InvalidInput, match=r"TS_01.xml: expected attribute VolumeDimensionsAngstrom on <TiltSeries> "
                                           r"or a settings file with Tomo DimensionsX/Y/Z and Import PixelSize; "
                                           r"found neither"):
        import_warp(repo, proj["folder"], source="ts")


@pytest.mark.parametrize("value", ["yes", ""])
def test_bad_are_angles_inverted(tmp_path, value):
    proj = warptools_tilts(tmp_path, inverted=value)
    repo = Repository.init(str(tmp_path / "repo"))
    with pytest.raises(InvalidInput, match=f"AreAnglesInverted is '{value}', expected True or False"):
        import_warp(repo, proj["folder"], source="ts", settings=proj["settings"])


def test_huge_declared_grid_refused_without_allocating(tmp_path):
    """A 2 KB XML declaring a 30,000 x 30,000 grid is refused before any grid-sized allocation."""
    body = ('<?xml version="1.0" encoding="utf-8"?>\n<Movie DataDirectory="">\n' + ctf(1.5, 0.1, 30.0)
            + '\t<GridCTF Width="30000" Height="30000" Depth="1" MarginX="0" MarginY="0" MarginZ="0">\n'
            + '\t\t<Node X="0" Y="0" Z="0" Value="1.5" />\n\t</GridCTF>\n'
            + grid("GridMovementX", (1, 1, 1), [0.0]) + "</Movie>\n")
    xml = tmp_path / "mov.xml"
    xml.write_text(body)
    assert xml.stat().st_size < 2048
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(InvalidInput) as err:
        read_warp_xml(xml)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "<GridCTF> lacks node (1, 0, 0): it declares a 30000 x 30000 x 1 grid (900000000 nodes) but holds 1" \
        in str(err.value)
    assert peak < 10 * 2**20 and elapsed < 1.0


def test_impossible_volume_from_settings_refused(tmp_path):
    proj = warptools_tilts(tmp_path)
    settings = proj["settings"]
    settings.write_text(settings.read_text().replace('"DimensionsX" Value="64"', '"DimensionsX" Value="1e300"'))
    repo = Repository.init(str(tmp_path / "repo"))
    with pytest.raises(InvalidInput, match=r"TS_01.xml: settings Tomo DimensionsX/Y/Z x Import PixelSize .* not physical"):
        import_warp(repo, proj["folder"], source="ts", settings=settings)
