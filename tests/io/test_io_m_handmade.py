"""An M population folder written by hand the way M saves one (Population.Save, DataSource.Save,
Species.Save / ParticlesToStar, Star.Save, Movie.SaveMeta), not by mrepo's exporter.

M's ``<File Hash>`` and ``wrpSourceHash`` are M's own SHA-1 data hashes, opaque to mrepo: particles must
link through the .source list even when wrpSourceName is stale; M files carry no mrepo ids, so the import
gives new ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import starfile
from io_projects import maps, write_mrc
from warp_projects import movie_xml

from mrepo.graph import Repository
from mrepo.io.m_format import export_m, import_m
from mrepo.store import InvalidInput

GUID_SOURCE = "0f0e0d0c-0b0a-0908-0706-050403020100"
GUID_SPECIES = "a1b2c3d4-e5f6-4711-8899-aabbccddeeff"
HASHES = {"mov_001.mrc": "q0zP1q8b2i2pK8B8qQyH4m0s_3E", "mov_002.mrc": "Xj-2aPq9Lw7CkVb0_nM1sT5uYzA"}


def star(columns: list[str], rows: list[list[str]]) -> str:
    """Star.Save: blank line, data_, blank, loop_, '_name #i', right-aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    body = "".join("  ".join(v.rjust(w) for v, w in zip(r, widths)) + "\n" for r in rows)
    return "\ndata_\n\nloop_\n" + "".join(f"_{c} #{i + 1}\n" for i, c in enumerate(columns)) + body


def m_population(root: Path, *, stale_names: bool = False) -> Path:
    rng = np.random.default_rng(11)
    for i, name in enumerate(HASHES):
        write_mrc(root / name, rng.normal(size=(3, 24, 32)), 2.0)
        (root / name.replace(".mrc", ".xml")).write_text(movie_xml(1.5 + i, [(0.0, 0.0), (1.0, -0.5), (2.5, -1.0)]))
    files = "".join(f'\t\t<File Hash="{h}" Name="{n}" Weight="1" Bfactor="0" />\n' for n, h in HASHES.items())
    (root / "grid.source").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<DataSource>\n'
        f'\t<Param Name="GUID" Value="{GUID_SOURCE}" />\n\t<Param Name="Name" Value="grid" />\n'
        '\t<Param Name="PixelSize" Value="2" />\n\t<Param Name="DosePerAngstromFrame" Value="1.5" />\n'
        '\t<Param Name="GainPath" Value="" />\n\t<Param Name="DefectsPath" Value="" />\n'
        f"\t<UsedSpecies />\n\t<Files>\n{files}\t</Files>\n</DataSource>\n")
    folder = root / "species" / f"apo_{GUID_SPECIES[:8]}"
    folder.mkdir(parents=True)
    (folder / "apo.species").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<Species>\n'
        f'\t<Param Name="GUID" Value="{GUID_SPECIES}" />\n\t<Param Name="Name" Value="apo" />\n'
        '\t<Param Name="PixelSize" Value="4" />\n\t<Param Name="DiameterAngstrom" Value="120" />\n'
        '\t<Param Name="Symmetry" Value="C2" />\n\t<Param Name="TemporalResolutionMovement" Value="2" />\n'
        '\t<Param Name="TemporalResolutionRotation" Value="2" />\n</Species>\n')
    m = maps(root / "mapsrc")
    for suffix in ("half1", "half2", "mask"):
        (folder / f"apo_{suffix}.mrc").write_bytes(m[suffix].read_bytes())
    cols = [f"wrpCoordinate{a}{t}" for t in (1, 2) for a in "XYZ"] + \
        [f"wrpAngle{a}{t}" for t in (1, 2) for a in ("Rot", "Tilt", "Psi")] + \
        ["wrpRandomSubset", "wrpSourceName", "wrpSourceHash", "wrpDefocusScore"]
    parts = [("mov_001.mrc", 10.0, 12.5), ("mov_001.mrc", 30.25, 20.0), ("mov_002.mrc", 40.0, 8.0)]
    rows = []
    for k, (name, x, y) in enumerate(parts):
        rows.append([f"{v:.5f}" for v in (x, y, 0.0, x + 0.5, y - 0.25, 0.0)]
                    + [f"{v:.5f}" for v in (10.0 * k, 20.0, 30.0, 10.0 * k, 21.0, 30.0)]
                    + [str(1 + k % 2), "stale.mrc" if stale_names else name, HASHES[name], "0.5"])
    (folder / "apo_particles.star").write_text(star(cols, rows))
    pop = root / "proj.population"
    pop.write_text('<?xml version="1.0" encoding="utf-8"?>\n<Population>\n\t<Param Name="Name" Value="proj" />\n'
                   f'\t<Species>\n\t\t<Species GUID="{GUID_SPECIES}" Path="species/apo_{GUID_SPECIES[:8]}/apo.species" />'
                   f'\n\t</Species>\n\t<Sources>\n\t\t<Source GUID="{GUID_SOURCE}" Path="grid.source" />\n'
                   "\t</Sources>\n</Population>\n")
    return pop


def test_handmade_m_population_links_by_m_hash(tmp_path):
    pop = m_population(tmp_path / "m", stale_names=True)
    repo = Repository.init(str(tmp_path / "repo"))
    import_m(repo, pop)
    p = repo.population()
    assert p.name == "proj" and set(p.sources) == {"grid"} and set(p.species) == {"apo"}
    items = {repo.item(h).key: repo.item(h).name for h in repo.source(p.sources["grid"]).items.values()}
    sp = repo.species(p.species["apo"])
    assert (sp.diameter, sp.symmetry, sp.temporal_samples) == (120.0, "C2", 2)
    t = repo.particles(sp.particles)
    assert len(t) == 3 and len(set(t.ids.tolist())) == 3
    by_x = np.argsort(t.coordinates[:, 0, 0])
    assert [items[k] for k in t.item_keys()[by_x].tolist()] == ["mov_001", "mov_001", "mov_002"]
    np.testing.assert_allclose(t.coordinates[by_x, 1, :2], [[10.5, 12.25], [30.75, 19.75], [40.5, 7.75]])
    np.testing.assert_allclose(t.angles[by_x, 1], [[0.0, 21.0, 30.0], [10.0, 21.0, 30.0], [20.0, 21.0, 30.0]])
    np.testing.assert_array_equal(t.extra["m.wrpDefocusScore"], [0.5] * 3)  # M's extra column kept
    export_m(repo, "main", tmp_path / "out")
    back = starfile.read(next((tmp_path / "out/species").rglob("apo_particles.star")))
    assert back["wrpDefocusScore"].tolist() == [0.5] * 3
    again = Repository.init(str(tmp_path / "again"))
    import_m(again, pop)
    t2 = again.particles(again.species(again.population().species["apo"]).particles)
    np.testing.assert_array_equal(t2.ids, t.ids)  # same folder, same ids


def test_unknown_hash_and_name_is_refused(tmp_path):
    pop = m_population(tmp_path / "m", stale_names=True)
    star_path = next((tmp_path / "m/species").rglob("apo_particles.star"))
    star_path.write_text(star_path.read_text().replace(HASHES["mov_002.mrc"], "NoSuchHash0000000000000000a"))
    repo = Repository.init(str(tmp_path / "repo"))
    with pytest.raises(InvalidInput, match=r"apo_particles.star: 1 name\(s\) match no item.*'stale.mrc'"):
        import_m(repo, pop)
    assert repo.head("main") is None


@pytest.mark.parametrize("value", ["0", "1000000000"])
def test_impossible_temporal_resolution_refused(tmp_path, value):
    pop = m_population(tmp_path / "m")
    spath = next((tmp_path / "m/species").rglob("apo.species"))
    spath.write_text(spath.read_text().replace('"TemporalResolutionMovement" Value="2"',
                                               f'"TemporalResolutionMovement" Value="{value}"'))
    repo = Repository.init(str(tmp_path / "repo"))
    with pytest.raises(InvalidInput, match=f"apo.species: Param TemporalResolutionMovement is {value}, expected 1"):
        import_m(repo, pop)
    assert repo.head("main") is None


def test_handmade_m_tilt_series_without_volume_uses_source_dimensions(tmp_path):
    """An older TiltSeries XML without VolumeDimensionsAngstrom: M takes the volume from the source's
    DimensionsX/Y/Z (px) at its PixelSize (DataSource.cs; Tomo options)."""
    from warp_projects import tilt_xml

    root = tmp_path / "m"
    rng = np.random.default_rng(5)
    for i in range(3):
        write_mrc(root / f"frames/average/tilt_{i}.mrc", rng.normal(size=(1, 24, 32)), 2.0)
    (root / "TS_01.xml").write_text(tilt_xml([-3.0, 0.0, 3.0], [3.0, 0.0, 6.0], 85.0)
                                    .replace(' VolumeDimensionsAngstrom="64,48,20"', ""))
    (root / "ts.source").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<DataSource>\n\t<Param Name="GUID" Value="' + GUID_SOURCE + '" />\n'
        '\t<Param Name="Name" Value="ts" />\n\t<Param Name="PixelSize" Value="2" />\n'
        '\t<Param Name="DimensionsX" Value="32" />\n\t<Param Name="DimensionsY" Value="24" />\n'
        '\t<Param Name="DimensionsZ" Value="10" />\n\t<Param Name="DosePerAngstromFrame" Value="3" />\n'
        '\t<UsedSpecies />\n\t<Files>\n\t\t<File Hash="aGFzaG9mVFNfMDE" Name="TS_01.tomostar" />\n\t</Files>\n'
        "</DataSource>\n")
    pop = root / "proj.population"
    pop.write_text('<?xml version="1.0" encoding="utf-8"?>\n<Population>\n\t<Param Name="Name" Value="proj" />\n'
                   "\t<Species />\n\t<Sources>\n"
                   f'\t\t<Source GUID="{GUID_SOURCE}" Path="ts.source" />\n\t</Sources>\n</Population>\n')
    repo = Repository.init(str(tmp_path / "repo"))
    import_m(repo, pop)
    (h,) = repo.source(repo.population().sources["ts"]).items.values()
    it = repo.item(h)
    assert it.name == "TS_01" and it.imaging["volume_dimensions"] == [64.0, 48.0, 20.0] and it.imaging["hand"] == 1.0
