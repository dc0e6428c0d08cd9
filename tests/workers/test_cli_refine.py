"""``mrepo refine`` end to end on a simulated population in a local folder."""

from __future__ import annotations

import numpy as np
import torch
from typer.testing import CliRunner

from mrepo.cli import app
from mrepo.graph import Repository
from tests.workers.simdata import build_repo, frames_sim

torch.set_num_threads(1)


def test_cli_refine_one_iteration(tmp_path):
    url = str(tmp_path / "repo")
    build_repo(frames_sim(n_particles=6, n_frames=3), url=url, resolution=12.0)
    res = CliRunner().invoke(app, ["refine", "--repo", url, "--iterations", "1", "--no-refine-shifts"])
    assert res.exit_code == 0, res.output
    repo = Repository.open(url)
    _, c = repo.log("main")[0]
    assert c.operation["name"] == "refine" and "refine iteration 1/1" in res.output


def test_cli_refine_image_warp_grid_is_sized_per_item_and_recorded(tmp_path):
    url = str(tmp_path / "repo")
    build_repo(frames_sim(n_particles=10, n_frames=3), url=url, resolution=12.0)
    res = CliRunner().invoke(app, ["refine", "--repo", url, "--iterations", "1"])
    assert res.exit_code == 0, res.output
    repo = Repository.open(url)
    _, c = repo.log("main")[0]
    # default with shift refinement: "auto"; 10 particles on a square field -> 2 x 2 nodes, 3 time nodes
    assert c.operation["settings"]["image_warp"] == "auto"
    assert list(c.operation["image_warp_grids"].values()) == [[2, 2, 3]]
    res = CliRunner().invoke(app, ["refine", "--repo", url, "--iterations", "1", "--refine-imagewarp", "off"])
    assert res.exit_code == 0, res.output
    _, c = Repository.open(url).log("main")[0]
    assert c.operation["settings"]["image_warp"] is None and "image_warp_grids" not in c.operation


def test_cli_refine_rejects_bad_grid(tmp_path):
    url = str(tmp_path / "repo")
    Repository.init(url)
    res = CliRunner().invoke(app, ["refine", "--repo", url, "--refine-imagewarp", "3x3"])
    assert res.exit_code != 0 and "image_warp" in res.output


def test_cli_refine_auto_reports_parameter_moves(tmp_path):
    url = str(tmp_path / "repo")
    build_repo(frames_sim(n_particles=6, n_frames=3), url=url, resolution=12.0)
    res = CliRunner().invoke(app, ["refine", "--repo", url, "--iterations", "auto", "--max-iterations", "1"])
    assert res.exit_code == 0, res.output
    assert "parameter moves" in res.output and "shifts" in res.output and "95th percentile" in res.output
    _, c = Repository.open(url).log("main")[0]
    assert "refine iteration 1/auto" in c.message and c.operation["movement"]["shifts"]["unit"] == "px"


def test_cli_refine_rejects_bad_iteration_count(tmp_path):
    url = str(tmp_path / "repo")
    build_repo(frames_sim(n_particles=6, n_frames=3), url=url, resolution=12.0)
    for bad in ("0", "often"):
        res = CliRunner().invoke(app, ["refine", "--repo", url, "--iterations", bad])
        assert res.exit_code == 2 and "--iterations" in res.output
    assert len(Repository.open(url).log("main")) == 1


def test_cli_refine_patch_memory_streams_with_the_same_result(tmp_path):
    """--patch-memory below the item's patch estimate re-extracts patches per evaluation (streaming):
    the refined particles are the same as with patches kept in memory; a negative size is refused."""
    tables = []
    for name, extra in (("kept", []), ("streamed", ["--patch-memory", "0.01"])):
        url = str(tmp_path / name)
        build_repo(frames_sim(n_particles=6, n_frames=3), url=url, resolution=12.0)
        res = CliRunner().invoke(app, ["refine", "--repo", url, "--iterations", "1", "--refine-poses", *extra])
        assert res.exit_code == 0, res.output
        repo = Repository.open(url)
        _, c = repo.log("main")[0]
        assert c.operation["settings"]["patch_memory_mib"] == (0.01 if extra else 2048.0)
        tables.append(c.population)
    assert tables[0] == tables[1]  # the same population record: the same refined parameters and maps
    url = str(tmp_path / "kept")
    res = CliRunner().invoke(app, ["refine", "--repo", url, "--patch-memory", "-1"])
    assert res.exit_code != 0 and "patch_memory_mib must be >= 0" in res.output


def _angles(url: str, rev: str | None = None) -> dict[str, np.ndarray]:
    """Each species' particle angles (N, T, 3) degrees at ``rev`` (default: the branch head)."""
    repo = Repository.open(url)
    pop = repo.population(rev)
    return {n: repo.particles(repo.species(h).particles).angles for n, h in sorted(pop.species.items())}


def test_cli_refine_graph_memory_back_propagates_batch_by_batch_with_the_same_result(tmp_path):
    """--graph-memory 0 back-propagates one particle batch at a time after a pass without gradients
    (objective.backward_target's bounded path): recorded in the commit's settings, and the refined
    angles agree with the one-pass gradient's to float rounding; a negative size is refused."""
    refined, before = [], None
    for name, extra in (("joint", []), ("batched", ["--graph-memory", "0"])):
        url = str(tmp_path / name)
        build_repo(frames_sim(n_particles=6, n_frames=3), url=url, resolution=12.0)
        before = _angles(url)
        res = CliRunner().invoke(app, ["refine", "--repo", url, "--iterations", "1", "--refine-poses", *extra])
        assert res.exit_code == 0, res.output
        _, c = Repository.open(url).log("main")[0]
        assert c.operation["settings"]["graph_memory_mib"] == (0.0 if extra else 512.0)
        refined.append(_angles(url))
    joint, batched = refined
    assert joint.keys() == batched.keys() == before.keys()
    for name in joint:
        assert np.abs(joint[name] - before[name]).max() > 1e-2  # the poses moved
        np.testing.assert_allclose(batched[name], joint[name], rtol=0, atol=1e-3)
    res = CliRunner().invoke(app, ["refine", "--repo", str(tmp_path / "joint"), "--graph-memory", "-1"])
    assert res.exit_code != 0 and "graph_memory_mib must be >= 0" in res.output
