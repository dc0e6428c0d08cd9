"""``mrepo refine --refine-volume-warp / --refine-doming / --weights`` end to end on simulated populations
in a local folder: the groups land in the commit's operation record and in the items' models."""

from __future__ import annotations

import numpy as np
import torch
from typer.testing import CliRunner

from mrepo.cli import app
from mrepo.graph import Repository
from tests.workers.simdata import build_repo, frames_sim, tilts_sim

torch.set_num_threads(1)


def _items(repo: Repository):
    pop = repo.population()
    return [repo.item(h) for h in repo.source(pop.sources["sim"]).items.values()]


def test_cli_refine_volume_warp_and_source_weights_on_a_tilt_series(tmp_path):
    url = str(tmp_path / "repo")
    build_repo(tilts_sim(n_particles=6, size=128, max_tilt=20.0, tilt_step=10.0, volume_warp_A=3.0), url=url,
               resolution=12.0)
    res = CliRunner().invoke(app, ["refine", "--repo", url, "-n", "1", "--no-refine-shifts",
                                   "--refine-volume-warp", "2x2x2x3", "--weights"])
    assert res.exit_code == 0, res.output
    repo = Repository.open(url)
    _, c = repo.log("main")[0]
    assert c.operation["settings"]["volume_warp"] == [2, 2, 2, 3]
    assert c.operation["settings"]["weights_scope"] == "source" and "sim" in c.operation["weights"]
    assert c.operation["movement"]["volume_warp"]["unit"] == "px"
    (item,) = _items(repo)
    assert repo.objects.get_array(item.models["volume_warp"]).shape == (3, 2, 2, 2, 3)
    w = repo.objects.get_array(item.models["weights"])
    assert w.shape == (5, 2) and w[:, 0].min() == 0.0 and np.isclose(w[:, 1].max(), 1.0)


def test_cli_refine_doming_on_a_frame_series(tmp_path):
    url = str(tmp_path / "repo")
    build_repo(frames_sim(n_particles=6, n_frames=3), url=url, resolution=6.0)
    res = CliRunner().invoke(app, ["refine", "--repo", url, "-n", "1", "--no-refine-shifts", "--refine-doming",
                                   "--doming-grid", "2x2x3", "--ctf-min-resolution", "10"])
    assert res.exit_code == 0, res.output
    repo = Repository.open(url)
    _, c = repo.log("main")[0]
    assert c.operation["settings"]["doming"] == [2, 2, 3]
    (item,) = _items(repo)
    assert repo.objects.get_array(item.models["doming"]).shape == (2, 2, 3)


def test_cli_refine_rejects_bad_deformation_grids_and_commits_nothing(tmp_path):
    url = str(tmp_path / "repo")
    build_repo(frames_sim(n_particles=4, n_frames=3), url=url, resolution=12.0)
    for args, word in ((["--refine-volume-warp", "4x4x2"], "volume_warp"),
                       (["--refine-doming", "--doming-grid", "3x0x5"], "doming"),
                       (["--weights", "--weights-scope", "everything"], "weights_scope")):
        res = CliRunner().invoke(app, ["refine", "--repo", url, *args])
        assert res.exit_code == 2 and word in res.output, res.output
    assert len(Repository.open(url).log("main")) == 1
