"""Species denoisers in a real repository: weights round-trip through the store, training is
deterministic, ``mrepo species denoise`` commits them, and refinement references use the denoised
half-maps when ``denoise`` is on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mrepo.cli import app
from mrepo.graph import ParticleTable, Repository, Species
from mrepo.kernels.denoise import DenoiserConfig, build_model
from mrepo.kernels.fourier_slice import prepare_volume
from mrepo.sim.species import SpeciesSpec, build_species
from mrepo.store import InvalidInput
from mrepo.workers.denoise import (
    DenoiseSettings,
    WeightsError,
    denoised_halves,
    load_denoiser,
    train_species_denoiser,
    weights_from_bytes,
    weights_to_bytes,
    with_denoiser,
)
from mrepo.workers.references import REFERENCE_PAD, load_references_from
from mrepo.workers.settings import RefineSettings
from tests.workers.simdata import build_repo, frames_sim

torch.set_num_threads(1)

TINY = DenoiserConfig(depth=1, width=4, max_width=8, patch=16, batch=2, window=32, overlap=8)
FAST = DenoiseSettings(steps=4, seed=3, config=TINY, lr=(1e-2, 1e-3))
TINY_CLI = ["--steps", "3", "--patch", "16", "--depth", "1", "--width", "4"]


def _noisy_species(repo: Repository, box: int = 32, pixel: float = 3.0) -> Species:
    sim = build_species(SpeciesSpec("noisy", diameter=box * pixel * 0.6, n_atoms=200, box=box), pixel, 2)
    rng = np.random.default_rng(0)
    truth = sim.map / sim.map.std()
    put = repo.objects.put_array
    halves = [put((truth + 2 * rng.standard_normal(truth.shape)).astype(np.float32)) for _ in range(2)]
    table = ParticleTable.build(np.array([1, 2]), ["ab" * 32] * 2, np.zeros((2, 3)), np.zeros((2, 3)),
                                np.array([1, 2])).save(repo.objects)
    return Species("noisy", box * pixel * 0.6, "C1", pixel, box, halves[0], halves[1],
                   put(sim.mask.astype(np.float32)), table, resolution=9.0)


def test_weights_round_trip_through_the_store(tmp_path):
    repo = Repository.init(str(tmp_path / "repo"))
    sp = _noisy_species(repo)
    res = train_species_denoiser(repo.objects, sp, FAST)
    new = with_denoiser(repo.objects, sp, res)
    h = new.save(repo.objects)
    assert h != sp.save(repo.objects)  # the weights are part of the species hash
    again = Species.load(Repository.open(str(tmp_path / "repo")).objects, h)
    assert again.denoiser == new.denoiser and again.metadata["denoised"] == new.metadata["denoised"]
    model, info = load_denoiser(repo.objects, again)
    assert weights_to_bytes(model, info) == repo.objects.get_blob(again.denoiser) == res.weights
    assert info["total_steps"] == 4 and info["lowpass_A"] == 9.0 and info["half1"] == sp.half1
    stored = np.asarray(repo.objects.get_array(again.metadata["denoised"]["@array"]))
    np.testing.assert_array_equal(stored, res.denoised)


def test_training_is_deterministic_and_warm_start_continues(tmp_path):
    repo = Repository.init(str(tmp_path / "repo"))
    sp = _noisy_species(repo)
    a = train_species_denoiser(repo.objects, sp, FAST)
    b = train_species_denoiser(repo.objects, sp, FAST)
    assert a.weights == b.weights and a.losses == b.losses
    trained = with_denoiser(repo.objects, sp, a)
    c = train_species_denoiser(repo.objects, trained, FAST)
    assert c.info["warm_start"] and c.info["total_steps"] == 8 and c.weights != a.weights
    fresh = train_species_denoiser(repo.objects, trained, DenoiseSettings(**{**FAST.__dict__, "warm_start": False}))
    assert not fresh.info["warm_start"] and fresh.weights == a.weights


def test_damaged_weights_are_one_line_errors():
    good = weights_to_bytes(build_model(TINY, 0), {"x": 1})
    model, info = weights_from_bytes(good)
    assert info == {"x": 1}
    with pytest.raises(WeightsError, match="magic"):
        weights_from_bytes(b"PK\x03\x04" + good)
    with pytest.raises(WeightsError, match="runs past the end"):
        weights_from_bytes(good[:-8])
    other = weights_to_bytes(build_model(DenoiserConfig(depth=1, width=8, max_width=8, patch=16, window=32), 0))
    header_len = int.from_bytes(other[15:19], "little")
    swapped = good[:15] + other[15:19 + header_len] + good[19 + int.from_bytes(good[15:19], "little"):]
    with pytest.raises(WeightsError, match="runs past the end|shape"):
        weights_from_bytes(swapped)


def test_each_half_is_denoised_on_its_own(tmp_path):
    repo = Repository.init(str(tmp_path / "repo"))
    sp = with_denoiser(repo.objects, (sp0 := _noisy_species(repo)), train_species_denoiser(repo.objects, sp0, FAST))
    d1, d2 = denoised_halves(repo.objects, sp)
    # half 1's result does not depend on half 2's noise beyond the shared normalisation (M: no shared artefacts)
    swapped = sp.evolve(half2=repo.objects.put_array(np.zeros((32, 32, 32), np.float32) + 1))
    e1, _ = denoised_halves(repo.objects, swapped)
    r = np.corrcoef(d1.ravel(), e1.ravel())[0, 1]
    assert r > 0.999 and not np.allclose(d1, d2)


def test_references_use_the_denoised_half_maps_when_enabled(tmp_path):
    repo = Repository.init(str(tmp_path / "repo"))
    sp0 = _noisy_species(repo)
    with pytest.raises(InvalidInput, match="mrepo species denoise noisy"):
        load_references_from(repo.objects, {"noisy": sp0.save(repo.objects)}, RefineSettings(denoise=True))
    sp = with_denoiser(repo.objects, sp0, train_species_denoiser(repo.objects, sp0, FAST))
    h = sp.save(repo.objects)
    on = load_references_from(repo.objects, {"noisy": h}, RefineSettings(denoise=True))["noisy"]
    off = load_references_from(repo.objects, {"noisy": h}, RefineSettings())["noisy"]
    d1, d2 = denoised_halves(repo.objects, sp)
    mask = np.asarray(repo.objects.get_array(sp.mask), np.float32)
    for got, want in zip(on.volumes_ft, (d1, d2)):
        torch.testing.assert_close(got, prepare_volume(torch.from_numpy(want * mask), REFERENCE_PAD))
    assert not torch.allclose(on.volumes_ft[0], off.volumes_ft[0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
def test_cuda_without_cuda_is_refused(tmp_path):
    repo = Repository.init(str(tmp_path / "repo"))
    with pytest.raises(InvalidInput, match="CUDA is not available"):
        train_species_denoiser(repo.objects, _noisy_species(repo), DenoiseSettings(device="cuda", config=TINY))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_cuda_training_improves_the_loss(tmp_path):
    repo = Repository.init(str(tmp_path / "repo"))
    res = train_species_denoiser(repo.objects, _noisy_species(repo),
                                 DenoiseSettings(steps=30, device="cuda", config=TINY, lr=(1e-2, 1e-3)))
    assert np.mean(res.losses[-5:]) < np.mean(res.losses[:5]) and np.isfinite(res.denoised).all()


def test_cli_species_denoise_commits_weights_and_refine_denoise_retrains(tmp_path):
    url = str(tmp_path / "repo")
    build_repo(frames_sim(n_particles=6, n_frames=3), url=url, resolution=12.0)
    repo = Repository.open(url)
    name = sorted(repo.population("main").species)[0]
    runner = CliRunner()
    before = len(repo.log("main"))
    for bad, text in ((["species", "denoise", "nope"], "no species 'nope'"),
                      (["species", "denoise", name, "--patch", "18", "--depth", "2"], "multiples of 2**depth")):
        res = runner.invoke(app, [*bad, "--repo", url])
        assert res.exit_code == 2 and text in res.output, res.output
    assert len(Repository.open(url).log("main")) == before
    res = runner.invoke(app, ["species", "denoise", name, *TINY_CLI, "--repo", url, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    repo = Repository.open(url)
    _, commit = repo.log("main")[0]
    assert commit.operation["name"] == "denoise" and commit.operation["species"] == name
    sp = repo.species(repo.population("main").species[name])
    assert sp.denoiser == out["denoiser"] and out["steps_total"] == 3
    show = json.loads(runner.invoke(app, ["species", "show", name, "--repo", url, "--json"]).stdout)
    assert show["denoiser"] == sp.denoiser

    res = runner.invoke(app, ["refine", "--repo", url, "--iterations", "1", "--no-refine-shifts", "--denoise",
                              "--denoise-steps", "2"])
    assert res.exit_code == 0, res.output
    repo = Repository.open(url)
    _, commit = repo.log("main")[0]
    assert commit.operation["name"] == "refine" and commit.operation["settings"]["denoise"] is True
    new = repo.species(repo.population("main").species[name])
    _, info = load_denoiser(repo.objects, new)
    # retrained on the iteration's new half-maps, continuing the CLI-trained network
    assert info["half1"] == new.half1 != sp.half1 and info["total_steps"] == 5 and info["warm_start"]
    assert new.metadata["denoised"] != sp.metadata["denoised"]
    res = runner.invoke(app, ["verify", "--repo", url])  # weights blob and denoised map pass verification
    assert res.exit_code == 0, res.output


def test_refinement_trains_a_missing_denoiser_with_a_cube_that_fits_the_box(tmp_path):
    from mrepo.workers.denoise import ensure_denoisers

    repo = Repository.init(str(tmp_path / "repo"))
    h = _noisy_species(repo, box=24).save(repo.objects)
    assert ensure_denoisers(repo.objects, {"noisy": h}, RefineSettings()) == {"noisy": h}
    out = ensure_denoisers(repo.objects, {"noisy": h}, RefineSettings(denoise=True, denoise_steps=1))
    sp = Species.load(repo.objects, out["noisy"])
    model, info = load_denoiser(repo.objects, sp)
    assert out["noisy"] != h and model.config.patch == 24 and info["total_steps"] == 1
    assert ensure_denoisers(repo.objects, out, RefineSettings(denoise=True)) == out  # has one: kept
