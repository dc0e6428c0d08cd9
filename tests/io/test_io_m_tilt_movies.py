"""Tilt movies through an M population: ``export_m`` writes each tilt's raw movie with its own Warp XML
(GridMovementX/Y (1, 1, frames) Å = −``tilt_movie_shifts``) and the tilt image in ``average/``;
``import_m`` reads them back with the Warp importer, so the refined shifts, the movies and the item key
survive. The source folder is hand-written in Warp's layout (Movie.SaveMeta / TiltSeries.SaveMeta), one
tilt movie XML with every element Movie.SaveMeta writes and C# float text."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from test_io_m_optics import _commit, _items
from test_io_warp_tilt_movies import _folder
from warp_projects import ctf, grid

from mrepo.graph import Repository
from mrepo.io.m_format import export_m, import_m
from mrepo.io.m_hash import m_data_hash
from mrepo.io.warp_export import MCannotRepresent
from mrepo.io.warp_import import import_warp
from mrepo.store import InvalidInput
from mrepo.workers.tilt_movies import MODEL

#: GridMovementX/Y of tilt 0's movie as Warp's C# float.ToString() writes them (mean zero: ProcessShift
#: centres the global shifts), Å
WARP_X = ["-1.2345679", "1E-05", "1.2345579"]
WARP_Y = ["0.33333334", "-0.6666667", "0.33333334"]


def _warp_movie_xml(xs: list[str], ys: list[str]) -> str:
    """A tilt movie's XML element by element as Movie.SaveMeta writes it (attributes, options, CTF, every
    grid in order; CubicGrid.Save with margins)."""
    n = len(xs)

    def text_grid(tag: str, values: list[str]) -> str:
        nodes = "".join(f'\t\t<Node X="0" Y="0" Z="{z}" Value="{v}" />\n' for z, v in enumerate(values))
        return f'\t<{tag} Width="1" Height="1" Depth="{n}" MarginX="0" MarginY="0" MarginZ="0">\n{nodes}\t</{tag}>\n'

    one = (1, 1, 1)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<Movie DataDirectory="" UnselectFilter="False" '
        'UnselectManual="null" CTFResolutionEstimate="4.2" MeanFrameMovement="0.87" MaskPercentage="-1" '
        'Bfactor="0" Weight="1" MagnificationCorrection="1, 0, 0, 1">\n'
        '\t<OptionsCTF>\n\t\t<Param Name="Window" Value="512" />\n\t</OptionsCTF>\n'
        "\t<PS1D>0|1;0.5|0.8</PS1D>\n"
        + ctf(3.0, 0.05, 12.0)
        + grid("GridCTF", one, [3.0])
        + grid("GridCTFDefocusDelta", one, [0.05])
        + grid("GridCTFDefocusAngle", one, [12.0])
        + grid("GridCTFCs", one, [0.0])
        + grid("GridCTFPhase", one, [0.0])
        + grid("GridCTFDoming", one, [0.0])
        + '\t<OptionsMovement>\n\t\t<Param Name="Bfactor" Value="-500" />\n\t</OptionsMovement>\n'
        + text_grid("GridMovementX", xs)
        + text_grid("GridMovementY", ys)
        + grid("GridLocalMovementX", one, [0.0])
        + grid("GridLocalMovementY", one, [0.0])
        + "".join(grid(f"GridAngle{a}", one, [0.0]) for a in "XYZ")
        + "".join(grid(g, one, [0.0]) for g in ("GridDoseBfacs", "GridDoseBfacsDelta", "GridDoseBfacsAngle"))
        + grid("GridDoseWeights", one, [1.0])
        + grid("GridLocationBfacs", one, [0.0])
        + grid("GridLocationWeights", one, [1.0])
        + "</Movie>\n"
    )


def _imported(tmp_path, *, copy: bool = False) -> Repository:
    _folder(tmp_path / "warp")
    (tmp_path / "warp/frames/tilt_0.xml").write_text(_warp_movie_xml(WARP_X, WARP_Y))
    repo = Repository.init(str(tmp_path / "repo"))
    import_warp(repo, tmp_path / "warp", source="ts", copy=copy)
    return repo


def _nodes(el: ET.Element) -> list[float]:
    return [float(n.get("Value")) for n in el.findall("Node")]


def test_refined_tilt_movie_shifts_survive_export_m_import_m(tmp_path):
    repo = _imported(tmp_path)
    before = _items(repo)["TS_01"]
    warp = repo.objects.get_array(before.models[MODEL])
    assert warp[0].tolist() == [[-float(x), -float(y)] for x, y in zip(WARP_X, WARP_Y)]
    refined = warp + np.random.default_rng(5).normal(scale=0.3, size=warp.shape)  # Å, as refinement moves them
    _commit(repo, "TS_01", models={MODEL: refined})
    item = _items(repo)["TS_01"]
    export_m(repo, "main", tmp_path / "m")

    folder = tmp_path / "m/tilts/TS_01"
    for t in range(3):
        movie = folder / f"TS_01_{t:03d}.mrc"
        assert movie.resolve() == (tmp_path / f"warp/frames/tilt_{t}.mrc").resolve()  # the raw movie
        assert (folder / "average" / movie.name).resolve() == (tmp_path / f"warp/frames/average/tilt_{t}.mrc")
        root = ET.parse(movie.with_suffix(".xml")).getroot()
        assert root.tag == "Movie"
        for a, axis in (("X", 0), ("Y", 1)):
            g = root.find(f"GridMovement{a}")
            assert (g.get("Width"), g.get("Height"), g.get("Depth")) == ("1", "1", "3")
            assert [int(n.get("Z")) for n in g.findall("Node")] == [0, 1, 2]
            assert _nodes(g) == (-refined[t, :, axis]).tolist()  # Å, Warp's sign, exact text
    (el,) = ET.parse(tmp_path / "m/ts.source").getroot().findall("Files/File")
    assert el.get("Hash") == m_data_hash("TS_01", tmp_path / "warp/frames/tilt_0.mrc")  # M hashes the movie

    repo2 = Repository.init(str(tmp_path / "repo2"))
    import_m(repo2, tmp_path / "m/population.population")
    back = _items(repo2)["TS_01"]
    assert back.key == item.key and back.tilt_movies == item.tilt_movies
    np.testing.assert_array_equal(repo2.objects.get_array(back.models[MODEL]), refined)
    for name in item.models:
        np.testing.assert_array_equal(
            repo2.objects.get_array(back.models[name]), repo.objects.get_array(item.models[name])
        )


def test_unrefined_warp_alignment_goes_back_as_warp_wrote_it(tmp_path):
    repo = _imported(tmp_path)
    export_m(repo, "main", tmp_path / "m")
    root = ET.parse(tmp_path / "m/tilts/TS_01/TS_01_000.xml").getroot()
    assert _nodes(root.find("GridMovementX")) == [float(v) for v in WARP_X]
    assert _nodes(root.find("GridMovementY")) == [float(v) for v in WARP_Y]


def test_tilt_movies_held_in_the_repository_are_written_out(tmp_path):
    repo = _imported(tmp_path, copy=True)
    item = _items(repo)["TS_01"]
    shifts = repo.objects.get_array(item.models[MODEL])
    originals = [(tmp_path / f"warp/frames/tilt_{t}.mrc").read_bytes() for t in range(3)]
    shutil.rmtree(tmp_path / "warp")
    export_m(repo, "main", tmp_path / "m")
    for t in range(3):
        movie = (tmp_path / f"m/tilts/TS_01/TS_01_{t:03d}.mrc").resolve()
        assert movie.is_relative_to((tmp_path / "m/raw").resolve()) and movie.read_bytes() == originals[t]
    repo2 = Repository.init(str(tmp_path / "repo2"))
    import_m(repo2, tmp_path / "m/population.population")
    back = _items(repo2)["TS_01"]
    assert back.tilt_movies is not None
    np.testing.assert_array_equal(repo2.objects.get_array(back.models[MODEL]), shifts)


def test_tilt_movie_shifts_without_movies_are_refused_and_nothing_written(tmp_path):
    _folder(tmp_path / "warp", xml=False)  # no movie XMLs: the movies are not attached
    repo = Repository.init(str(tmp_path / "repo"))
    import_warp(repo, tmp_path / "warp", source="ts")
    _commit(repo, "TS_01", models={MODEL: np.zeros((3, 3, 2))})
    with pytest.raises(MCannotRepresent, match="'TS_01'.*tilt_movie_shifts but no raw tilt movies"):
        export_m(repo, "main", tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_tilt_movie_shifts_of_the_wrong_shape_are_refused(tmp_path):
    repo = _imported(tmp_path)
    _commit(repo, "TS_01", models={MODEL: np.zeros((2, 3, 2))})
    with pytest.raises(MCannotRepresent, match=r"tilt_movie_shifts is \(2, 3, 2\), expected \(3, frames, 2\)"):
        export_m(repo, "main", tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_simulated_tilt_movies_go_out_with_a_synthesised_series_and_come_back(tmp_path):
    """An item without Warp metadata (simulated, stack + stored movies): the M XML is synthesised from the
    models, the movies are written out of the repository, and the shifts come back exactly."""
    import json

    from tests.workers.simdata import build_repo, tilts_sim

    sim = tilts_sim(n_particles=3, size=64, box=16, max_tilt=6.0, tilt_step=6.0, tilt_movie_frames=2)
    repo = build_repo(sim, truth=True, url=str(tmp_path / "repo")).repo
    (name,) = _items(repo)
    shifts = np.random.default_rng(3).normal(scale=1.5, size=(3, 2, 2))  # Å
    stage = repo.objects.get_array(_items(repo)[name].models["stage_angles"]).copy()
    stage[:, 0] = 0.0  # M holds one x-tilt per series
    _commit(repo, name, models={MODEL: shifts, "stage_angles": stage})
    item = _items(repo)[name]
    assert "warp" not in item.metadata
    export_m(repo, "main", tmp_path / "m")
    repo2 = Repository.init(str(tmp_path / "repo2"))
    (population,) = (tmp_path / "m").glob("*.population")
    import_m(repo2, population)
    back = _items(repo2)[name]
    assert back.key == item.key
    np.testing.assert_array_equal(repo2.objects.get_array(back.models[MODEL]), shifts)

    def movie_hashes(r, it):
        return [f["hash"] for f in json.loads(r.objects.get_blob(it.tilt_movies.hash))["files"]]

    assert movie_hashes(repo2, back) == movie_hashes(repo, item)


def test_missing_in_place_movies_refuse_export_m_but_not_export_relion(tmp_path):
    from mrepo.io.export_relion import export_relion

    repo = _imported(tmp_path)
    (tmp_path / "warp/frames/tilt_2.mrc").unlink()  # imported in place, then lost
    with pytest.raises(InvalidInput, match=r"'TS_01': a raw tilt movie lives neither .*tilt_2\.mrc"):
        export_m(repo, "main", tmp_path / "m")
    assert not (tmp_path / "m").exists()
    export_relion(repo, "main", tmp_path / "relion")  # RELION gets the tilt images, not the movies
    assert (tmp_path / "relion/tomograms.star").is_file()


def test_movies_of_another_size_than_the_averages_are_not_attached(tmp_path):
    """Averages binned by BinTimes are smaller than the movies: the movies are left out (documented limit),
    the averages stay the tilt images."""
    from io_projects import write_mrc
    from warp_projects import PIX

    _folder(tmp_path / "warp")
    for t in range(3):  # unbinned movies, twice the averages' size
        write_mrc(tmp_path / f"warp/frames/tilt_{t}.mrc", np.zeros((3, 48, 64)), PIX / 2)
    repo = Repository.init(str(tmp_path / "repo"))
    import_warp(repo, tmp_path / "warp", source="ts")
    item = _items(repo)["TS_01"]
    assert item.tilt_movies is None and MODEL not in item.models
    assert item.imaging["dimensions"] == [32, 24, 3]
