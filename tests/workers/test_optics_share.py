"""One optics value per data source and optics group (mrepo.workers.optics_share) and the
``mrepo refine --refine-mag --ctf-zernike3`` command end to end on simulated data with injected optics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mrepo.cli import app
from mrepo.graph import Item, Repository
from mrepo.sim import FrameSeriesConfig, Optics, simulate_frame_series
from mrepo.sim.optics import SimAberrations
from mrepo.workers.api import ItemResult, ItemTask
from mrepo.workers.optics_share import share_optics
from tests.factories import make_item
from tests.workers.simdata import build_population, small_species

torch.set_num_threads(1)


def _result(repo: Repository, item: Item, source: str, particles: int) -> ItemResult:
    h = item.save(repo.objects)
    task = ItemTask(repo.url, source, item.key, h, {}, {}, 1, particles)
    return ItemResult(task, h, {}, None, None, {"particles": particles})


def test_items_of_one_source_and_optics_group_share_the_particle_weighted_mean():
    repo = Repository.init("memory://optics-share")
    def item(name: str, mag: list, tilt: list, group: int | None = None) -> Item:
        it = make_item(repo, name)
        im = {**it.imaging, "mag_matrix": mag, "beam_tilt": tilt, "odd_zernike": [0, 0, 3.0, 0, 0, 0]}
        if group is not None:
            im["optics_group"] = group
        return dataclasses.replace(it, imaging=im)

    a = _result(repo, item("a", [[1.01, 0.0], [0.0, 0.99]], [0.4, 0.0]), "s1", 30)
    b = _result(repo, item("b", [[1.02, 0.0], [0.0, 1.0]], [0.1, 0.3]), "s1", 10)
    empty = _result(repo, item("c", [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0]), "s1", 0)
    other_source = _result(repo, item("d", [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0]), "s2", 10)
    other_group = _result(repo, item("e", [[1.03, 0.0], [0.0, 1.0]], [0.0, 0.0], group=2), "s1", 10)
    out = share_optics(repo.objects, [a, b, empty, other_source, other_group])
    ims = [Item.load(repo.objects, r.item_hash).imaging for r in out]
    for im in ims[:3]:  # the two voters' weighted mean (30:10), handed to the empty item too
        np.testing.assert_allclose(im["mag_matrix"], [[1.0125, 0.0], [0.0, 0.9925]])
        np.testing.assert_allclose(im["beam_tilt"], [0.325, 0.075])
        assert im["odd_zernike"] == [0, 0, 3.0, 0, 0, 0]
    assert out[3].item_hash == other_source.item_hash and out[4].item_hash == other_group.item_hash
    assert out[0].stats["optics_item"] is None and out[0].stats["optics"]["beam_tilt"] == [0.325, 0.075]


@pytest.mark.slow
def test_cli_refine_mag_and_zernike3_share_recovered_optics_and_export_them(tmp_path):
    injected = SimAberrations(mag_matrix=((1.005, 0.002), (0.002, 0.995)), beam_tilt_mrad=(0.5, -0.3))
    cfg = FrameSeriesConfig(image_size=(192, 192), n_frames=2, optics=Optics(pixel_size=1.5),
                            species=small_species(48, 1.5)[:1], box=48, n_particles=10, snr=1.0, pad=3,
                            defocus=10000.0, contrast="light", aberrations=injected, species_seed=7)
    url = str(tmp_path / "repo")
    build_population([simulate_frame_series(cfg, s) for s in (3, 4)], truth="oracle", resolution=3.5, url=url)
    res = CliRunner().invoke(app, ["refine", "--repo", url, "--iterations", "1", "--no-refine-shifts",
                                   "--refine-mag", "--ctf-zernike3", "--resolution-fraction", "1.0"])
    assert res.exit_code == 0, res.output
    repo = Repository.open(url)
    _, commit = repo.log("main")[0]
    settings = commit.operation["settings"]
    assert settings["refine_mag"] and settings["ctf_zernike3"] and not settings["ctf_zernike4"]
    pop = repo.population()
    items = [Item.load(repo.objects, h) for h in repo.source(pop.sources["sim"]).items.values()]
    assert items[0].imaging["mag_matrix"] == items[1].imaging["mag_matrix"]
    assert items[0].imaging["beam_tilt"] == items[1].imaging["beam_tilt"]
    assert np.abs(np.asarray(items[0].imaging["mag_matrix"]) - np.asarray(injected.mag_matrix)).max() < 1e-3
    assert np.abs(np.asarray(items[0].imaging["beam_tilt"]) - np.asarray(injected.beam_tilt_mrad)).max() < 0.05
    # the shared values leave through RELION's optics table (rlnMagMat*, rlnBeamTiltX/Y)
    import starfile

    out = tmp_path / "export"
    res = CliRunner().invoke(app, ["export", "relion", "--repo", url, "--out", str(out)])
    assert res.exit_code == 0, res.output
    tables = [starfile.read(p, always_dict=True) for p in sorted(out.rglob("*.star"))]
    optics = [t["optics"] for t in tables if "optics" in t and "rlnMagMat00" in t["optics"].columns]
    assert optics, [list(t) for t in tables]
    row = optics[0].iloc[0]
    mag = items[0].imaging["mag_matrix"]
    assert abs(row["rlnMagMat00"] - mag[0][0]) < 1e-9 and abs(row["rlnMagMat11"] - mag[1][1]) < 1e-9
    assert abs(row["rlnBeamTiltX"] - items[0].imaging["beam_tilt"][0]) < 1e-9
