"""Issue 11 items 4–7: the safe schedule, half-set acceptance, particle depth for tilt series,
batched gradients, movement reports and divergence, FSC-weighted references and the
map-following mask — against simulator truth and analytic values."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from mrepo.graph import Population
from mrepo.kernels.ctf import electron_wavelength
from mrepo.kernels.fsc import fsc
from mrepo.sim import Optics, TiltSeriesConfig, simulate_tilt_series
from mrepo.workers.api import ItemTask
from mrepo.workers.driver import refine_population
from mrepo.workers.executors import LocalExecutor
from mrepo.workers.geometry import Parameters
from mrepo.workers.movement import divergence, settled, summarise
from mrepo.workers.references import follow_mask, fsc_weighted, load_references_from
from mrepo.workers.refine_item import _accept, _Context, load_item_particles, refine_item
from mrepo.workers.schedule import WARP_PARTICLES_PER_NODE, defocus_window, image_warp_grid, plan_schedule, stage_prior
from mrepo.workers.settings import RefineSettings
from tests.workers.simdata import ID_STRIDE, build_repo, frames_sim, small_species

torch.set_num_threads(1)
PIXEL, BOX = 1.5, 48


def _task(sr, settings: RefineSettings) -> ItemTask:
    pop = sr.repo.population()
    ih = sr.repo.source(pop.sources["sim"]).items[sr.item_key]
    return ItemTask(sr.repo.url, "sim", sr.item_key, ih, dict(pop.species), settings.to_json(), 1, 0)


def _context(sr, settings: RefineSettings) -> _Context:
    task = _task(sr, settings)
    return _Context(task, settings, sr.repo.objects, load_references_from(sr.repo.objects, task.species, settings))


# ---------------------------------------------------------------- schedule


def test_ctf_is_refined_only_beyond_the_ctf_min_resolution():
    s = RefineSettings(refine_defocus=True, refine_astigmatism=True, refine_poses=True)
    coarse = plan_schedule(s, "frames", False, {"a": 16.0}, {"a": 40.0}, 1.5, 300.0, 100)
    assert coarse.ctf == () and "ctf" in coarse.skipped and coarse.geometry == ("shifts", "translation", "rotation")
    fine = plan_schedule(s, "frames", False, {"a": 16.0, "b": 6.0}, {"a": 40.0, "b": 40.0}, 1.5, 300.0, 100)
    assert fine.ctf == ("defocus", "astigmatism") and fine.ctf_species == ("b",)
    # the window is the defocus that turns the CTF phase at 1/d by pi: d² / λ (capped by the requested range)
    assert fine.defocus_range == pytest.approx(min(3000.0, 36.0 / electron_wavelength(300.0)))
    assert fine.defocus_step <= fine.defocus_range / 10 + 1e-9
    assert fine.bounds["defocus"] * 100 == pytest.approx(1.25 * fine.defocus_range)
    # M's gate is the species' resolution, not the ramped limit: a 6.9 Å map refined at 8.6 Å (iteration 1
    # of the ramp) refines the CTF, within the window the 8.6 Å limit resolves
    ramped = plan_schedule(s, "frames", False, {"a": 8.6}, {"a": 40.0}, 1.5, 300.0, 100, {"a": 6.9})
    assert ramped.ctf == ("defocus", "astigmatism") and ramped.ctf_species == ("a",)
    assert ramped.defocus_range == pytest.approx(min(3000.0, 8.6 ** 2 / electron_wavelength(300.0)))
    assert plan_schedule(s, "frames", False, {"a": 6.0}, {"a": 40.0}, 1.5, 300.0, 100, {"a": 9.0}).ctf == ()
    few = plan_schedule(s.replace(min_particles_per_item=5), "frames", False, {"a": 6.0}, {"a": 40.0}, 1.5, 300.0, 4)
    assert few.geometry == () and few.ctf == () and "min_particles_per_item" in few.skipped["all"]


def test_auto_image_warp_grid_follows_particles_and_field():
    auto = RefineSettings(image_warp="auto")
    assert auto.to_json()["image_warp"] == "auto" and RefineSettings.from_json(auto.to_json()) == auto
    # the must-hold tilt set-up (60 particles per series, 498² px, 38 px particles): 5 x 5 per tilt
    assert image_warp_grid(auto, "tilts", (498, 498), 11, 60, 38.4) == (5, 5, 11)
    # the ablation tilt set-ups (12 particles per series): coarse; too few for two nodes: no warp
    assert image_warp_grid(auto, "tilts", (256, 256), 11, 12, 28.8) == (2, 2, 11)
    assert image_warp_grid(auto, "tilts", (256, 256), 11, 7, 28.8) is None
    assert image_warp_grid(auto, "frames", (466, 466), 6, 50, 38.4) == (5, 5, 3)
    assert image_warp_grid(auto, "frames", (466, 466), 2, 50, 38.4) == (5, 5, 2)
    # aspect follows the field; nodes at least two particle diameters apart
    assert image_warp_grid(auto, "frames", (5760, 4092), 40, 300, 150.0) == (14, 10, 3)
    assert image_warp_grid(auto, "tilts", (400, 400), 41, 10_000, 100.0) == (3, 3, 41)
    for n in range(0, 400, 7):  # never fewer than WARP_PARTICLES_PER_NODE particles per spatial node
        g = image_warp_grid(auto, "tilts", (3000, 2000), 41, n, 20.0)
        assert g is None or (g[0] * g[1] * WARP_PARTICLES_PER_NODE <= n and g[0] * g[1] >= 2)
    # an item's existing grid is refined on; an explicit grid and "off" are taken as given
    assert image_warp_grid(auto, "tilts", (498, 498), 11, 60, 38.4, existing=(3, 3, 11)) == (3, 3, 11)
    assert image_warp_grid(RefineSettings(image_warp="3x3x1"), "tilts", (498, 498), 11, 60, 38.4) == (3, 3, 1)
    assert image_warp_grid(RefineSettings(), "tilts", (498, 498), 11, 60, 38.4) is None
    with pytest.raises(ValueError, match="image_warp"):
        RefineSettings(image_warp="fine")


def test_defocus_window_never_exceeds_the_requested_range():
    assert defocus_window(30.0, 300.0, 3000.0) == 3000.0
    assert defocus_window(4.0, 300.0, 3000.0) == pytest.approx(16 / electron_wavelength(300.0))
    # pi of CTF phase at 1/d: pi * lambda * window / d² == pi
    assert math.pi * electron_wavelength(300.0) * defocus_window(4.0, 300.0, 1e9) / 16 == pytest.approx(math.pi)


def test_bounded_parameters_never_leave_their_bound():
    p = Parameters(*(torch.zeros(3, dtype=torch.float64) for _ in range(6)))
    p.bounds = {"defocus": 2.0}
    p.defocus.copy_(torch.tensor([-100.0, 0.5, 1e6]))
    v = p.value("defocus")
    assert float(v.abs().max()) <= 2.0 and float(v[1]) == pytest.approx(2 * math.tanh(0.25))
    back = p.raw_for("defocus", torch.tensor([0.3, -1.0, 1.5], dtype=torch.float64))
    assert torch.allclose(2 * torch.tanh(back / 2), torch.tensor([0.3, -1.0, 1.5], dtype=torch.float64))


def test_stage_prior_holds_the_common_correction_and_leaves_per_tilt_deviations_free():
    """A tilt's own correction (zero item mean) is not pulled back; a common rotation c of all
    n tilts costs weight · n · (c / σ)² / 2 and its gradient restores the mean only."""
    dev = torch.tensor([[0.4, -0.3, 0.2], [-0.4, 0.3, -0.2], [0.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    prior = stage_prior(dev, 2.0, 0.5)
    prior.backward()
    assert float(prior) == 0.0 and float(dev.grad.abs().max()) == 0.0
    common = (dev.detach() + torch.tensor([0.1, 0.0, -0.2], dtype=torch.float64)).requires_grad_(True)
    prior = stage_prior(common, 2.0, 0.5)
    prior.backward()
    assert float(prior) == pytest.approx(0.5 * 2.0 * 3 * (0.1**2 + 0.2**2) / 0.25)
    assert torch.allclose(common.grad, torch.tensor([[0.8, 0.0, -1.6]] * 3, dtype=torch.float64))
    assert float(stage_prior(common, 0.0, 0.5)) == 0.0


def test_item_below_min_particles_is_back_projected_unrefined():
    sr = build_repo(frames_sim(n_particles=6, n_frames=3), resolution=8.0)
    r = refine_item(_task(sr, RefineSettings(min_particles_per_item=7)))
    assert "min_particles_per_item" in r.stats["skipped"] and r.sums["alpha"].particles + r.sums.get(
        "beta", r.sums["alpha"]).particles >= 1
    before = sr.repo.population()
    item = sr.repo.source(before.sources["sim"]).items[sr.item_key]
    from mrepo.graph import Item

    assert Item.load(sr.repo.objects, r.item_hash).models == Item.load(sr.repo.objects, item).models


def test_frames_from_a_coarse_limit_leave_the_ctf_alone_and_never_go_negative():
    """At a 16 Å limit the CTF is not refined (MCore's 8 Å rule) however far off it is."""
    sr = build_repo(frames_sim(n_particles=8, n_frames=3, pixel=1.5, box=48, size=192, snr=1.0), resolution=16.0)
    s = RefineSettings(refine_defocus=True, refine_astigmatism=True, refine_poses=True, lbfgs_iterations=4, rounds=1)
    r = refine_item(_task(sr, s))
    assert r.stats["schedule"]["ctf"] == [] and "ctf" in r.stats["schedule"]["skipped"]
    from mrepo.graph import Item

    old = sr.repo.source(sr.repo.population().sources["sim"]).items[sr.item_key]
    a, b = (sr.repo.objects.get_array(Item.load(sr.repo.objects, h).models["ctf"]) for h in (old, r.item_hash))
    assert np.array_equal(a, b)


# ---------------------------------------------------------------- acceptance


def test_updates_that_worsen_a_half_set_are_undone():
    """From the true parameters, any move makes the targets worse: the guard restores every
    particle whose score fell and the shared shifts whose half-set targets fell."""
    sr = build_repo(frames_sim(n_particles=10, n_frames=3, pixel=1.5, box=48, size=192, snr=2.0), truth=True,
                    resolution=5.0)
    s = RefineSettings(refine_poses=True)
    ctx = _context(sr, s)
    params = Parameters.zeros(ctx.model, ctx.particles, None)
    own, other = ctx.subset_pairs(params)
    before = params.detached()
    with torch.no_grad():
        scores0 = (ctx.sums(own, params, True), ctx.sums(other, params, True))
    rng = np.random.default_rng(0)
    with torch.no_grad():
        params.translation.copy_(torch.from_numpy(rng.normal(0, 1.5, params.translation.shape)))
        params.shifts.add_(2.0)
    log: dict = {}
    _accept(ctx, own, other, params, before, scores0, ["shifts", "translation", "rotation"], True, log)
    assert log["particles_rejected"] >= 9
    assert float(params.shifts.abs().max()) == 0.0
    kept = params.translation.abs().sum((1, 2)) > 0
    assert int(kept.sum()) <= 1
    with torch.no_grad():
        for rows in ctx.half_rows(own).values():
            assert float(ctx.sums(own, params, True).target(rows)) >= float(scores0[0].target(rows)) - 1e-12


def test_refined_targets_do_not_fall_on_either_half():
    sr = build_repo(frames_sim(n_particles=10, n_frames=3, pixel=1.5, box=48, size=192, snr=1.0), resolution=6.0)
    s = RefineSettings(refine_poses=True, refine_defocus=True, lbfgs_iterations=5, rounds=1, resolution_fraction=1.0)
    r = refine_item(_task(sr, s))
    assert r.stats["target_after"] > r.stats["target_before"]
    assert "particles_rejected" in r.stats["acceptance"]


# ---------------------------------------------------------------- gradients in batches


def test_batched_streamed_gradient_equals_the_joint_gradient():
    sr = build_repo(frames_sim(n_particles=10, n_frames=3, pixel=1.5, box=48, size=192, snr=1.0), resolution=6.0)
    grads = []
    for batch, memory in ((2, 0.0), (1000, 2048.0)):  # batches of 2 streamed from the frames, or all kept
        s = RefineSettings(refine_poses=True, particle_batch=batch, resolution_fraction=1.0, patch_memory_mib=memory)
        ctx = _context(sr, s)
        assert ctx.stream == (memory == 0.0)
        params = Parameters.zeros(ctx.model, ctx.particles, None)
        with torch.no_grad():
            params.translation.copy_(torch.linspace(-0.3, 0.3, params.translation.numel()).reshape(
                params.translation.shape).double())
        subsets = ctx.subsets(params)
        assert max(len(x.index) for x in subsets) <= batch
        tensors = params.select(["shifts", "translation", "rotation"])
        loss = ctx.loss(subsets, params, ctf_frozen=False)
        grads.append((float(loss), [t.grad.clone() for t in tensors]))
    (l1, g1), (l2, g2) = grads
    # equal up to float32 rounding of the images (whitening averaged batch by batch)
    assert l1 == pytest.approx(l2, rel=1e-6)
    for a, b in zip(g1, g2):
        assert float((a - b).norm()) < 1e-3 * float(b.norm())


# ---------------------------------------------------------------- particle depth (tilts)


def test_tilt_series_particle_depth_is_refined():
    cfg = TiltSeriesConfig(image_size=(192, 192), volume_depth_px=96, optics=Optics(pixel_size=PIXEL),
                           species=small_species(BOX, PIXEL)[:1], box=BOX, n_particles=8, max_tilt=45.0,
                           tilt_step=9.0, snr=2.0, pad=3, slab_thickness=60.0, defocus=10000.0, contrast="light")
    sim = simulate_tilt_series(cfg, 4)
    sr = build_repo(sim, truth=True, resolution=5.0)
    repo = sr.repo
    pop = repo.population()
    name = next(iter(pop.species))
    sp = repo.species(pop.species[name])
    table = repo.particles(sp.particles)
    coords = table.coordinates.copy()
    dz = np.random.default_rng(1).choice([-1.0, 1.0], len(coords)) * 4.5  # Å (3 px, inside the 5 Å-limit bound)
    coords[:, :, 2] += dz[:, None]
    table = dataclasses.replace(table, coordinates=coords)
    sp = dataclasses.replace(sp, particles=table.save(repo.objects))
    new_pop = Population(pop.name, pop.sources, {name: sp.save(repo.objects)}, pop.metadata)
    repo.commit(new_pop, message="z perturbed", operation={"name": "test"})
    s = RefineSettings(refine_shifts=False, refine_poses=True, lbfgs_iterations=10, rounds=1, resolution_fraction=1.0)
    r = refine_item(_task(sr, s))
    ids, new_coords, _ = load_item_particles(repo.objects, r.particles[name])
    truth = sim.truth.particles
    order = np.array([int(np.flatnonzero(truth.ids == i % ID_STRIDE)[0]) for i in ids])
    err_before = np.sqrt(np.mean(dz**2))
    err_after = np.sqrt(np.mean((new_coords[:, 0, 2] - truth.coordinates[order, 0, 2]) ** 2))
    assert err_before == pytest.approx(4.5) and err_after < 0.4 * err_before


# ---------------------------------------------------------------- references


def test_fsc_weighting_keeps_signal_where_fsc_is_one_and_removes_it_where_zero():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(32, 32, 32)).astype(np.float32)
    assert np.allclose(fsc_weighted(v, np.ones(17)), v, atol=1e-5)
    curve = np.where(np.arange(17) <= 6, 1.0, 0.0)
    w = fsc_weighted(v, curve)
    f = np.abs(np.fft.rfftn(w))
    k = np.sqrt(sum(g**2 for g in np.meshgrid(np.fft.fftfreq(32) * 32, np.fft.fftfreq(32) * 32,
                                               np.fft.rfftfreq(32) * 32, indexing="ij")))
    assert f[np.round(k) > 7].max() < 1e-3 * f.max()
    # sqrt(2 FSC / (1 + FSC)) at FSC = 1/3 is 1/sqrt(2)
    half = fsc_weighted(v, np.full(17, 1 / 3))
    assert np.linalg.norm(half - v.mean()) == pytest.approx(np.linalg.norm(v - v.mean()) / math.sqrt(2), rel=1e-3)


def test_mask_follows_the_map():
    v = np.zeros((48, 48, 48), np.float32)
    v[16:24, 20:28, 18:34] = 1.0  # an elongated block off-centre
    m = follow_mask(v, 1.5, lowpass=6.0, threshold=0.2, extend=2.0, soft_edge=4.0)
    assert m.min() >= 0 and m.max() == pytest.approx(1.0)
    assert (m[16:24, 20:28, 18:34] > 0.99).all()  # the density is inside
    assert m[40, 40, 40] == 0.0 and m[20, 24, 8] < 0.5  # far away and along the short axis it falls off
    prof = m[20, 24, 34:46]
    assert np.all(np.diff(prof) <= 1e-6)  # the edge falls monotonically


# ---------------------------------------------------------------- movement, divergence, auto


def test_movement_summary_divergence_and_settling():
    summary = summarise([{"translation": np.array([0.1, 0.2, 0.3, 5.0]), "rotation": np.array([0.1, 0.1])},
                         {"translation": np.array([0.2])}])
    assert summary["translation"]["median"] == pytest.approx(0.2) and summary["translation"]["n"] == 5
    assert summary["translation"]["p95"] == pytest.approx(np.percentile([0.1, 0.2, 0.3, 5.0, 0.2], 95))
    # 4 Å map, 1.5 Å pixels: a particle cannot be placed better than 2.67 px; 95 % moved ~4 px
    reason = divergence(summary, 4.0, 30.0, 1.5, 300.0)
    assert reason and "translation" in reason
    assert divergence(summary, 20.0, 30.0, 1.5, 300.0) is None
    calm = summarise([{"translation": np.full(10, 0.05), "rotation": np.full(10, 0.05)}])
    assert settled(calm, {"a": 5.0}, {"a": 5.02}) and not settled(calm, {"a": 5.0}, {"a": 4.5})
    assert not settled(summary, {"a": 5.0}, {"a": 5.0})


def test_refine_records_movement_and_auto_stops(tmp_path):
    sr = build_repo(frames_sim(n_particles=6, n_frames=3), url=str(tmp_path / "r"), resolution=12.0)
    seen = []
    commits = refine_population(sr.repo, "main", "auto", RefineSettings(lbfgs_iterations=3, rounds=1, refine_poses=True),
                                LocalExecutor(), max_iterations=2,
                                on_iteration=lambda it, res, stats: seen.append(stats["movement"]))
    assert 1 <= len(commits) <= 2 and len(seen) == len(commits)
    op = sr.repo.get_commit(commits[0]).operation
    assert {"shifts", "translation", "rotation"} <= set(op["movement"])
    assert op["movement"]["shifts"]["unit"] == "px" and op["movement"]["shifts"]["p95"] >= 0
    # the recorded particle moves are those between the parent's and the commit's particle tables
    # (they were once all zero: the new table was built in place over the old one)
    parent = sr.repo.get_commit(commits[0]).parents[0]
    moved = []
    for name, h in sr.repo.population(parent).species.items():
        old_sp, new_sp = sr.repo.species(h), sr.repo.species(sr.repo.population(commits[0]).species[name])
        a, b = sr.repo.particles(old_sp.particles), sr.repo.particles(new_sp.particles)
        d = b.coordinates[:, 0] - a.coordinates[:, 0]
        moved.append(np.hypot(d[:, 0], d[:, 1]) / new_sp.pixel_size)
    moved = np.concatenate(moved)
    assert moved.max() > 1e-3
    assert op["movement"]["translation"]["median"] == pytest.approx(np.median(moved))
    with pytest.raises(Exception, match="iterations"):
        refine_population(sr.repo, "main", "often", RefineSettings(), LocalExecutor())


def test_first_reconstruction_mask_and_fsc_follow_the_map(tmp_path):
    sim = frames_sim(n_particles=10, n_frames=3)
    sr = build_repo(sim, url=str(tmp_path / "r"), resolution=12.0)
    refine_population(sr.repo, "main", 1, RefineSettings(refine_shifts=False), LocalExecutor())
    pop = sr.repo.population()
    for name, h in pop.species.items():
        sp = sr.repo.species(h)
        mask = sr.repo.objects.get_array(sp.mask)
        truth = next(s for s in sim.species if s.spec.name == name)
        assert not np.array_equal(mask, truth.mask)
        # the followed mask covers the true density
        covered = (mask * np.clip(truth.map, 0, None)).sum() / np.clip(truth.map, 0, None).sum()
        assert covered > 0.95
        h1, h2 = (torch.from_numpy(np.asarray(sr.repo.objects.get_array(x))) for x in (sp.half1, sp.half2))
        assert np.allclose(fsc(h1, h2, torch.from_numpy(np.asarray(mask))).numpy(),
                           sr.repo.objects.get_array(sp.fsc), atol=1e-5)
