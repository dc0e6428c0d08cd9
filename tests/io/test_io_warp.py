"""Warp processing folders: every XML field lands where mrepo.io.warp_import says; bad input writes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from test_io_bad_input import listing
from warp_projects import warp_frames, warp_tilts

from mrepo.graph import Repository
from mrepo.io.warp_import import import_warp
from mrepo.store import InvalidInput


def _items(repo):
    pop = repo.population()
    (sh,) = pop.sources.values()
    return {it.name: it for it in (repo.item(h) for h in repo.source(sh).items.values())}


def test_frames(tmp_path):
    proj = warp_frames(tmp_path / "warp")
    repo = Repository.init(str(tmp_path / "repo"))
    import_warp(repo, proj["folder"], source="movies", settings=proj["settings"])
    items = _items(repo)
    assert set(items) == {"mov_001", "mov_002"}
    it = items["mov_002"]
    assert it.kind == "frames" and it.imaging["dimensions"] == [32, 24, 3]
    assert it.imaging["exposure"] == [1.5] * 3 and it.imaging["pre_exposure"] == [0.0, 1.5, 3.0]
    assert (it.imaging["voltage"], it.imaging["cs"], it.imaging["amplitude_contrast"]) == (300.0, 2.7, 0.07)
    ctf = repo.objects.get_array(it.models["ctf"])
    np.testing.assert_allclose(ctf, [[(2.5 + 0.05) * 1e4, (2.5 - 0.05) * 1e4, 30.0]] * 3)
    np.testing.assert_array_equal(repo.objects.get_array(it.models["global_shifts"]),
                                  [[-0.0, -0.0], [-1.0, 0.5], [-2.5, 1.0]])
    warp = repo.objects.get_array(it.models["image_warp"])
    assert warp.shape == (2, 2, 2, 2)
    # node (x=1, y=0, z=1) has flat index (1 * 2 + 0) * 2 + 1 = 5
    assert warp[0, 1, 0, 1] == -0.5 and warp[1, 1, 0, 1] == pytest.approx(1.0)
    assert "GridDoseBfacs" in it.metadata["warp"]["grids"] and "DataDirectory" not in it.metadata["warp"]["attributes"]


def test_tilts(tmp_path):
    proj = warp_tilts(tmp_path / "warp")
    repo = Repository.init(str(tmp_path / "repo"))
    import_warp(repo, proj["folder"], source="ts")
    it = _items(repo)["TS_01"]
    im = it.imaging
    assert it.kind == "tilts" and im["dimensions"] == [32, 24, 3] and im["volume_dimensions"] == [64.0, 48.0, 20.0]
    assert im["tilt_angles"] == [-3.0, 0.0, 3.0] and im["pre_exposure"] == [3.0, 0.0, 6.0]
    assert im["acquisition_order"] == [1, 0, 2] and im["exposure"] == [3.0, 3.0, 3.0]
    ctf = repo.objects.get_array(it.models["ctf"])
    np.testing.assert_allclose(ctf[:, 0], [30100, 31100, 32100])
    np.testing.assert_allclose(ctf[:, 2], [40, 41, 42])
    stage = repo.objects.get_array(it.models["stage_angles"])
    # Warp: Euler(0, tilt, -axis) (RELION matrix) = Rz(axis) Ry(-tilt) as right-handed rotations
    for (xt, yt, zr), tilt in zip(stage, (-3.0, 0.0, 3.0)):
        r = Rotation.from_euler("ZYX", [zr, yt, xt], degrees=True).as_matrix()
        expected = Rotation.from_euler("ZY", [85.0, -tilt], degrees=True).as_matrix()
        np.testing.assert_allclose(r, expected, atol=1e-12)
    shifts = repo.objects.get_array(it.models["global_shifts"])
    np.testing.assert_allclose(shifts, [[0.0, 0.0], [0.5 - 1.0, -0.25], [1.0 - 2.0, -0.5]], atol=1e-12)


CASES = {
    "bad_value": (lambda p: p.write_text(p.read_text().replace('Name="Defocus" Value="1.5"', 'Name="Defocus" Value="x"')),
                  ["mov_001.xml", "Defocus", "'x'"]),
    "missing_node": (lambda p: p.write_text(p.read_text().replace('<Node X="1" Y="0" Z="0" Value="0.1" />', "")),
                     ["mov_001.xml", "GridLocalMovementX", "(1, 0, 0)"]),
    "malformed": (lambda p: p.write_text(p.read_text()[:200]), ["mov_001.xml", "malformed XML"]),
    "wrong_depth": (lambda p: p.write_text(p.read_text().replace('<GridMovementX Width="1" Height="1" Depth="3"',
                                                                 '<GridMovementX Width="1" Height="1" Depth="2"')),
                    ["mov_001.xml", "GridMovementX"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(tmp_path, case):
    proj = warp_frames(tmp_path / "warp")
    mutate, needles = CASES[case]
    mutate(tmp_path / "warp/mov_001.xml")
    repo = Repository.init(str(tmp_path / "repo"))
    before = listing(tmp_path / "repo")
    with pytest.raises(InvalidInput) as err:
        import_warp(repo, proj["folder"], source="movies", settings=proj["settings"])
    msg = str(err.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    assert listing(tmp_path / "repo") == before


def test_cli_import_warp(tmp_path):
    from typer.testing import CliRunner

    from mrepo.cli import app

    proj = warp_frames(tmp_path / "warp")
    runner = CliRunner()
    r = str(tmp_path / "repo")
    assert runner.invoke(app, ["init", r]).exit_code == 0
    res = runner.invoke(app, ["import", "warp", str(proj["folder"]), "--settings", str(proj["settings"]), "--repo", r,
                              "--source", "mov", "--copy", "--json"])
    assert res.exit_code == 0, res.output
    assert set(_items(Repository.open(r))) == {"mov_001", "mov_002"}
    bad = runner.invoke(app, ["import", "warp", str(tmp_path / "nope"), "--repo", r])
    assert bad.exit_code != 0 and "does not exist" in bad.output
