"""M's tilt movies (issue 15 item 4): the per-frame shift parametrisation (float64 gradient checks and
identities), raw tilt movies on an item (record hashes of items without them unchanged), recovery of
injected per-frame motion on simulated data, and ``mrepo sim --tilt-movies`` -> ``import sim`` ->
``refine --refine-tilt-movies`` end to end, refused where a tilt series has no movies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck
from typer.testing import CliRunner

from mrepo.cli import app
from mrepo.graph import Item, RawData, Repository
from mrepo.kernels.shifts import phase_shift
from mrepo.store import canonical_json, hash_record
from mrepo.workers.geometry import Geometry
from mrepo.workers.item_model import load_item_model
from mrepo.workers.raw_data import read_exposures
from mrepo.workers.refine_item import refine_item
from mrepo.workers.settings import RefineSettings
from mrepo.workers.tilt_movies import (
    MODEL,
    TiltMovies,
    aligned_tilts,
    centred_shifts,
    frame_exposures,
    frame_geometry,
    frame_model,
)
from tests.workers.simdata import build_repo, tilts_sim
from tests.workers.test_deformation_recovery import _fsc_vs_truth, _task

torch.set_num_threads(1)
_F = torch.float64


def _geometry(p: int, n: int, rng: np.random.Generator) -> Geometry:
    return Geometry(
        torch.from_numpy(rng.uniform(20, 100, (p, n, 2))),
        torch.eye(3, dtype=_F).expand(p, n, 3, 3),
        torch.full((p, n), 20000.0, dtype=_F),
        torch.full((p, n), 19000.0, dtype=_F),
        torch.zeros(n, dtype=_F),
        {"phase": torch.arange(n, dtype=_F)},
    )


def test_gradcheck_frame_positions_in_the_per_frame_shifts():
    rng = np.random.default_rng(1)
    geo = _geometry(3, 4, rng)
    x = torch.from_numpy(rng.normal(size=(4, 5, 2))).requires_grad_(True)
    assert gradcheck(lambda s: frame_geometry(geo, centred_shifts(s)).positions, (x,))


def test_gradcheck_shifted_frame_correlation_in_float64():
    """The forward model of one frame: the particle image moved back by (frame position - extraction
    centre), correlated with the reference; differentiable in the per-frame shifts."""
    rng = np.random.default_rng(2)
    size = 16
    ref = torch.fft.rfft2(torch.from_numpy(rng.normal(size=(2, 6, size, size))))  # (P, n * F, ...) complex128
    data = torch.fft.rfft2(torch.from_numpy(rng.normal(size=(2, 6, size, size))))
    geo = _geometry(2, 3, rng)
    centres = torch.round(frame_geometry(geo, torch.zeros(3, 2, 2, dtype=_F)).positions)

    def score(s: torch.Tensor) -> torch.Tensor:
        pos = frame_geometry(geo, centred_shifts(s)).positions
        img = phase_shift(data, -(pos - centres), (size, size))
        return (img * ref.conj()).real.sum() / torch.sqrt((img.abs() ** 2).sum() * (ref.abs() ** 2).sum())

    x = torch.from_numpy(rng.normal(size=(3, 2, 2)) * 0.3).requires_grad_(True)
    assert gradcheck(score, (x,))


def test_frame_geometry_and_model_repeat_the_tilt_and_split_its_dose():
    rng = np.random.default_rng(3)
    geo = _geometry(2, 3, rng)
    s = torch.from_numpy(rng.normal(size=(3, 4, 2)))
    fg = frame_geometry(geo, s)
    assert fg.positions.shape == (2, 12, 2) and fg.rotations.shape == (2, 12, 3, 3)
    torch.testing.assert_close(fg.positions[:, 5], geo.positions[:, 1] + s[1, 1])
    torch.testing.assert_close(fg.defocus_u[:, 11], geo.defocus_u[:, 2])
    torch.testing.assert_close(fg.optics["phase"], torch.arange(3, dtype=_F).repeat_interleave(4))
    torch.testing.assert_close(centred_shifts(s).mean(1), torch.zeros(3, 2, dtype=_F))
    start = torch.from_numpy(rng.normal(size=(3, 4, 2)))  # imported alignment: its per-tilt mean is kept
    torch.testing.assert_close(centred_shifts(s, start).mean(1), start.mean(1))
    torch.testing.assert_close(centred_shifts(start, start), start)


def test_sim_tilt_movies_sum_to_the_tilts_and_load_as_frames():
    sim = tilts_sim(n_particles=4, size=96, max_tilt=6.0, tilt_step=6.0, tilt_movie_frames=3, tilt_movie_motion_px=1.0)
    assert sim.movies.shape == (3, 3, 96, 96)
    np.testing.assert_allclose(sim.movies.sum(1), sim.data, atol=1e-4)
    m = sim.truth.tilt_movie_shifts_px
    assert m.shape == (3, 3, 2) and np.allclose(m.mean(1), 0) and np.isclose(np.sqrt((m**2).sum(-1).mean()), 1.0)
    sr = build_repo(sim, truth=True)
    item = sr.repo.item(sr.repo.source(sr.repo.population().sources["sim"]).items[sr.item_key])
    movies = TiltMovies.open(sr.repo.objects, item)
    assert (movies.n, movies.frames, movies.shape) == (3, 3, (96, 96))
    tilts = read_exposures(sr.repo.objects, item, "light")
    frames = frame_exposures(movies, "light")
    torch.testing.assert_close(frames.reshape(3, 3, 96, 96).sum(1), tilts, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(aligned_tilts(movies, np.zeros((3, 3, 2)), "light"), tilts, atol=2e-5, rtol=1e-4)
    fm = frame_model(load_item_model(sr.repo.objects, item), 3)
    assert fm.n == 9 and np.allclose(fm.dose, sim.truth.dose.repeat(3) / 3)
    assert np.allclose(fm.pre_exposure.reshape(3, 3)[:, 0], sim.truth.pre_exposure)
    assert np.allclose(np.diff(fm.pre_exposure.reshape(3, 3), axis=1), sim.truth.dose[0] / 3)


def test_items_without_tilt_movies_keep_their_record_hash():
    raw = RawData("ab" * 32, 10, stored=False, uri="/data/ts.mrc")
    item = Item("tilts", "ts", raw, {"pixel_size": 2.0}, {"ctf": "cd" * 32})
    body = {
        "kind": "tilts",
        "name": "ts",
        "raw": {"hash": "ab" * 32, "size": 10, "format": "mrc", "uri": "/data/ts.mrc"},
        "imaging": {"pixel_size": 2.0},
        "models": {"ctf": {"@array": "cd" * 32}},
        "refined_with": [],
        "metadata": {},
    }
    assert canonical_json(item.to_body()) == canonical_json(body)
    assert hash_record("item", item.to_body()) == hash_record("item", body)
    movies = RawData("ef" * 32, 5, "manifest", stored=True)
    with_movies = Item("tilts", "ts", raw, {"pixel_size": 2.0}, {"ctf": "cd" * 32}, tilt_movies=movies)
    assert Item.from_body(with_movies.to_body()) == with_movies
    assert hash_record("item", with_movies.to_body()) != hash_record("item", body)


def test_stored_tilt_movies_are_reachable_for_gc_and_transfer():
    from mrepo.graph.maintenance import reachable

    sim = tilts_sim(n_particles=3, size=64, box=16, max_tilt=6.0, tilt_step=6.0, tilt_movie_frames=2)
    sr = build_repo(sim, truth=True)
    item = sr.repo.item(sr.repo.source(sr.repo.population().sources["sim"]).items[sr.item_key])
    found = reachable(sr.repo.storage)
    assert found.get(item.tilt_movies.hash) == "blob"
    assert len(item.tilt_movies.parts) == 3 and all(found.get(h) == "blob" for h in item.tilt_movies.parts)


def _shifts_px(sr, result) -> np.ndarray:
    item = sr.repo.item(result.item_hash)
    return sr.repo.objects.get_array(item.models[MODEL]) / sr.sim.truth.optics.pixel_size


def test_streamed_frame_patches_give_the_same_shifts():
    """Above ``patch_memory_mib`` the frame stage streams its particle batches (patches re-extracted per
    evaluation): the result equals the in-memory one."""
    sim = tilts_sim(
        seed=2,
        n_particles=5,
        size=96,
        max_tilt=10.0,
        tilt_step=10.0,
        snr=2.0,
        warp_px=0.0,
        tilt_movie_frames=3,
        tilt_movie_motion_px=1.0,
    )
    sr = build_repo(sim, truth=True, resolution=6.0)
    out = []
    for cap in (2048.0, 1e-6):
        settings = RefineSettings(refine_shifts=False, tilt_movies=True, lbfgs_iterations=8, patch_memory_mib=cap)
        out.append(_shifts_px(sr, refine_item(_task(sr, settings))))
    np.testing.assert_allclose(out[1], out[0], atol=1e-4)
    assert np.abs(out[0]).max() > 0.1


def _refine_with_and_without_movies(motion_px: float):
    """One simulated tilt series with raw movies (``motion_px`` RMS per-frame motion), refined
    without and with the tilt-movie group (everything else at the truth): (sim, repo, plain, with)."""
    sim = tilts_sim(
        seed=3,
        n_particles=16,
        size=160,
        max_tilt=30.0,
        tilt_step=10.0,
        snr=2.0,
        warp_px=0.0,
        tilt_movie_frames=4,
        tilt_movie_motion_px=motion_px,
    )
    sr = build_repo(sim, truth=True, resolution=5.0)
    plain = refine_item(_task(sr, RefineSettings(refine_shifts=False)))
    result = refine_item(_task(sr, RefineSettings(refine_shifts=False, tilt_movies=True, lbfgs_iterations=30)))
    return sim, sr, plain, result


@pytest.mark.slow
def test_tilt_movie_motion_is_recovered_and_improves_the_map():
    sim, sr, plain, result = _refine_with_and_without_movies(1.0)
    true = sim.truth.tilt_movie_shifts_px
    residual = float(np.sqrt(((_shifts_px(sr, result) - true) ** 2).sum(-1).mean()))
    print(f"tilt movies: true rms 1.00 px, residual {residual:.3f} px; {result.stats['tilt_movies']}")
    assert result.stats["tilt_movies"]["kept"]
    assert residual < 0.2
    f0, f1 = _fsc_vs_truth(sim, plain), _fsc_vs_truth(sim, result)
    assert f1[1:].mean() > f0[1:].mean() + 0.01


@pytest.mark.slow
def test_tilt_movies_without_motion_stay_near_zero():
    sim, sr, plain, result = _refine_with_and_without_movies(0.0)
    rms = float(np.sqrt((_shifts_px(sr, result) ** 2).sum(-1).mean()))
    print(f"tilt movies without motion: fitted rms {rms:.3f} px")
    assert rms < 0.15
    f0, f1 = _fsc_vs_truth(sim, plain), _fsc_vs_truth(sim, result)
    assert np.abs(f1 - f0)[1:].max() < 0.03


def _cli(*args: str):
    return CliRunner().invoke(app, [*args])


def test_cli_sim_import_and_refine_tilt_movies(tmp_path):
    folder, url = tmp_path / "sim", str(tmp_path / "repo")
    res = _cli(
        "sim",
        "tilts",
        "--out",
        str(folder),
        "--size",
        "96",
        "--particles",
        "4",
        "--species",
        "1",
        "--box",
        "32",
        "--pixel-size",
        "2",
        "--max-tilt",
        "10",
        "--step",
        "10",
        "--tilt-movies",
        "3",
        "--tilt-movie-motion",
        "0.8",
    )
    assert res.exit_code == 0, res.output
    manifest = json.loads((folder / "dataset.json").read_text())
    assert len(manifest["items"][0]["tilt_movies"]) == 3
    truth = json.loads((folder / "truth.json").read_text())["items"][0]
    assert np.asarray(truth["tilt_movie_shifts_px"]).shape == (3, 3, 2)
    assert "tilt_movie_shifts_px" not in json.loads((folder / "initial.json").read_text())["items"][0]
    Repository.init(url)
    res = _cli("import", "sim", str(folder), "--truth", "--repo", url)
    assert res.exit_code == 0, res.output
    res = _cli("refine", "--repo", url, "-n", "1", "--no-refine-shifts", "--refine-tilt-movies")
    assert res.exit_code == 0, res.output
    repo = Repository.open(url)
    _, c = repo.log("main")[0]
    assert c.operation["settings"]["tilt_movies"] is True
    pop = repo.population()
    (item,) = [repo.item(h) for h in repo.source(pop.sources["sim"]).items.values()]
    assert item.tilt_movies is not None
    assert repo.objects.get_array(item.models[MODEL]).shape == (3, 3, 2)
    assert c.operation["movement"]["tilt_movies"]["unit"] == "px"


def test_cli_refine_tilt_movies_is_refused_without_raw_movies(tmp_path):
    url = str(tmp_path / "repo")
    build_repo(tilts_sim(n_particles=4, size=96, max_tilt=10.0, tilt_step=10.0), url=url, resolution=12.0)
    res = _cli("refine", "--repo", url, "-n", "1", "--refine-tilt-movies")
    assert res.exit_code == 2, res.output
    assert "ts0001" in res.output and "tilt movies" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert len(Repository.open(url).log("main")) == 1


def test_verify_hashes_tilt_movies_referenced_in_place(tmp_path):
    from mrepo.graph import verify
    from mrepo.io.sim_import import import_sim

    folder = tmp_path / "sim"
    res = _cli(
        "sim",
        "tilts",
        "--out",
        str(folder),
        "--size",
        "64",
        "--particles",
        "2",
        "--species",
        "1",
        "--box",
        "16",
        "--pixel-size",
        "2",
        "--max-tilt",
        "10",
        "--step",
        "10",
        "--tilt-movies",
        "2",
    )
    assert res.exit_code == 0, res.output
    repo = Repository.init(str(tmp_path / "repo"))
    import_sim(repo, folder)  # referenced in place (no --copy)
    assert verify(repo.storage).ok
    movie = folder / json.loads((folder / "dataset.json").read_text())["items"][0]["tilt_movies"][1]
    data = bytearray(movie.read_bytes())
    data[-1] ^= 0xFF
    movie.write_bytes(bytes(data))
    report = verify(repo.storage)
    assert not report.ok and any(movie.name in p and "changed" in p for p in report.problems), report.problems
