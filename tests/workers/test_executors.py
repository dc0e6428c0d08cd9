"""Executors without Ray: exact reduction, the per-item result cache, the local executor,
resuming an interrupted iteration, progress. Items are refined by the real ``refine_item``
on small simulated frame series (:func:`build_population`, also used by ``test_ray*.py``)."""

from __future__ import annotations

import dataclasses
import io
import tempfile
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch
from rich.console import Console

from mrepo.cli.progress import eta_seconds, iteration_progress, summary_table
from mrepo.graph import DataSource, Item, ParticleTable, Population, RawData, Repository, Species
from mrepo.sim import FrameSeriesConfig, Optics, SpeciesSpec, simulate_frame_series
from mrepo.store.objects import array_prefix
from mrepo.workers.api import FIXED_POINT_BITS, HalfSums, ItemTask, IterationOutput
from mrepo.workers.cache import CACHE_PREFIX, ResultCache, cache_key, cache_roots, prune_cache
from mrepo.workers.executors import LocalExecutor, ProgressEvent, accumulate_sums, check_tasks
from mrepo.workers.ray_progress import iteration_stats
from mrepo.workers.refine_item import refine_item
from mrepo.workers.settings import RefineSettings

torch.set_num_threads(1)

#: Small but real refinement: global shifts by L-BFGS, then back-projection.
SETTINGS = RefineSettings(lbfgs_iterations=2, rounds=1).to_json()


# ----------------------------------------------------------------------------- test population


def _mrc_bytes(stack: np.ndarray, pixel_size: float) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "stack.mrc"
        with mrcfile.new(path) as m:
            m.set_data(np.ascontiguousarray(stack, dtype=np.float32))
            m.voxel_size = pixel_size
            m.header.label[:] = b""  # mrcfile stamps the creation time here: keep the bytes reproducible
            m.header.nlabl = 0
        return path.read_bytes()


def build_population(repo: Repository, n_items: int = 4, *, seed: int = 0) -> Population:
    """``n_items`` simulated frame series (2 to 4 particles each, so sizes differ) with one
    species ``apo`` (box 24, 1.5 Å/px, map of the first simulation as both half-maps),
    committed on ``main``. Deterministic: the same arguments give the same hashes in any repo."""
    spec = SpeciesSpec("apo", 24.0, "C1", 120, 24)
    items, keys, ids, coords, angles, halves, first = [], [], [], [], [], [], None
    for i in range(n_items):
        cfg = FrameSeriesConfig(image_size=(96, 96), n_frames=4, optics=Optics(pixel_size=1.5), species=(spec,),
                                box=24, n_particles=2 + i % 3, snr=1.0, pad=2, name="mic", contrast="light")
        sim = simulate_frame_series(cfg, seed + i)
        first = first or sim.species[0]
        raw = _mrc_bytes(sim.data, 1.5)
        ini, n = sim.initial, cfg.n_frames
        imaging = {"pixel_size": 1.5, "voltage": 300.0, "cs": 2.7, "amplitude_contrast": 0.07,
                   "dimensions": [96, 96], "exposure": [1.0] * n}
        models = {"ctf": repo.objects.put_array(np.tile([ini.defocus_u, ini.defocus_v, ini.astigmatism_deg], (n, 1))),
                  "global_shifts": repo.objects.put_array(ini.global_shifts_px * 1.5)}
        item = Item("frames", sim.truth.name, RawData(repo.objects.put_blob(raw), len(raw), stored=True), imaging,
                    models)
        items.append(item)
        p = ini.particles
        ids.append(p.ids + 100 * i)
        keys += [item.key] * len(p.ids)
        coords.append(p.coordinates)
        angles.append(p.angles)
        halves.append(p.half_set)
    table = ParticleTable.build(np.concatenate(ids), keys, np.concatenate(coords), np.concatenate(angles),
                                np.concatenate(halves))
    vol = repo.objects.put_array(first.map.astype(np.float32))
    species = Species("apo", 24.0, "C1", 1.5, 24, vol, vol, repo.objects.put_array(first.mask.astype(np.float32)),
                      table.save(repo.objects), resolution=6.0)
    source = DataSource("grid1", {it.key: it.save(repo.objects) for it in items})
    pop = Population("pop", {"grid1": source.save(repo.objects)}, {"apo": species.save(repo.objects)})
    repo.commit(pop, message="simulated", operation={"name": "import-sim"}, time="2024-01-01T00:00:00Z")
    return pop


def make_tasks(repo: Repository, pop: Population, iteration: int = 1) -> list[ItemTask]:
    """One task per item, particle counts from the species tables."""
    source = repo.source(pop.sources["grid1"])
    counts: dict[str, int] = {}
    for h in pop.species.values():
        for key in repo.particles(repo.species(h).particles).item_keys().tolist():
            counts[key] = counts.get(key, 0) + 1
    return [ItemTask(repo.url, "grid1", key, h, dict(pop.species), SETTINGS, iteration, counts.get(key, 0))
            for key, h in sorted(source.items.items())]


def assert_same_output(a: IterationOutput, b: IterationOutput) -> None:
    """Bit-identical results: item and particle hashes per item, reduced sums per species."""
    assert [(r.task.item_key, r.item_hash, r.particles, r.nc_spectra) for r in a.results] == \
        [(r.task.item_key, r.item_hash, r.particles, r.nc_spectra) for r in b.results]
    assert sorted(a.sums) == sorted(b.sums)
    for name in a.sums:
        assert np.array_equal(a.sums[name].data, b.sums[name].data)
        assert np.array_equal(a.sums[name].weight, b.sums[name].weight)
        assert a.sums[name].particles == b.sums[name].particles


@pytest.fixture
def population(tmp_path: Path) -> tuple[Repository, Population]:
    repo = Repository.init(str(tmp_path / "a"))
    yield repo, build_population(repo)
    repo.close()


@pytest.fixture
def twin(tmp_path: Path) -> tuple[Repository, Population]:
    """A second repository with the same population (same hashes), for undisturbed reference runs."""
    repo = Repository.init(str(tmp_path / "b"))
    yield repo, build_population(repo)
    repo.close()


# ----------------------------------------------------------------------------- reduction


def _random_sums(rng: np.random.Generator, grid: tuple[int, ...] = (5, 5, 3)) -> HalfSums:
    data = rng.normal(size=(2, *grid)) * 100 + 1j * rng.normal(size=(2, *grid)) * 100
    return HalfSums.from_float(data, rng.uniform(0, 50, (2, *grid)), int(rng.integers(1, 9)))


def _reference_total(parts: list[dict[str, HalfSums]]) -> dict[str, HalfSums]:
    """The exact total written independently: an int64 sum over stacked parts per species."""
    names = sorted({n for p in parts for n in p})
    return {n: HalfSums(np.sum([p[n].data for p in parts if n in p], axis=0),
                        np.sum([p[n].weight for p in parts if n in p], axis=0),
                        sum(p[n].particles for p in parts if n in p)) for n in names}


def _readonly_copy(part: dict[str, HalfSums]) -> dict[str, HalfSums]:
    out = {n: HalfSums(s.data.copy(), s.weight.copy(), s.particles) for n, s in part.items()}
    for s in out.values():
        s.data.flags.writeable = s.weight.flags.writeable = False
    return out


def test_accumulate_sums_is_exact_in_any_order() -> None:
    """The Ray driver's reduction (accumulate_sums, one actor's sums at a time) gives the same integers
    in any order, equal to the independent sum and to the float sum within one rounding per term;
    read-only parts (as ray.get returns them) are copied once, never written."""
    rng = np.random.default_rng(1)
    parts = [{"a": _random_sums(rng), "b": _random_sums(rng)} for _ in range(7)]
    parts[3].pop("b")  # a worker that saw no particle of b
    parts = [_readonly_copy(p) for p in parts]
    ref = _reference_total(parts)
    for perm in [range(7), *(rng.permutation(7) for _ in range(5))]:
        total: dict = {}
        for i in perm:
            accumulate_sums(total, parts[i])
        assert sorted(total) == ["a", "b"]
        for n in "ab":
            assert np.array_equal(total[n].data, ref[n].data) and np.array_equal(total[n].weight, ref[n].weight)
            assert total[n].particles == ref[n].particles
        assert all(total[n].data is not p[n].data for p in parts for n in p)  # inputs untouched
    # against the float sum (each term rounded once to 2**-24)
    data, weight = total["a"].to_float()
    fd = sum(p["a"].to_float()[0] for p in parts)
    assert np.abs(data - fd).max() <= 7 * 2.0 ** -FIXED_POINT_BITS
    assert total["b"].particles == sum(p["b"].particles for p in parts if "b" in p)
    mine = _random_sums(rng)
    owned: dict = {}
    accumulate_sums(owned, {"a": mine}, owned=True)
    assert owned["a"] is mine  # an owned part is taken over without a copy
    with pytest.raises(ValueError, match="differ"):
        accumulate_sums(owned, {"a": _random_sums(rng, (7, 7, 4))})


def test_sum_owned_is_exact_without_copies() -> None:
    """LocalExecutor's in-place reduction of its runners' own sums gives the exact total and adds
    into the first part's arrays instead of allocating new ones."""
    from mrepo.workers.executors import sum_owned

    rng = np.random.default_rng(4)
    parts = [{"a": _random_sums(rng), "b": _random_sums(rng)} for _ in range(4)]
    parts[0].pop("b")  # the first runner saw no particle of b
    ref = _reference_total(parts)
    first_a, first_b = parts[0]["a"].data, parts[1]["b"].data
    got = sum_owned([{n: HalfSums(s.data.copy(), s.weight.copy(), s.particles) for n, s in p.items()} for p in parts])
    for n in "ab":
        assert np.array_equal(got[n].data, ref[n].data) and np.array_equal(got[n].weight, ref[n].weight)
        assert got[n].particles == ref[n].particles
    owned = [{"a": parts[0]["a"]}, {"a": parts[1]["a"], "b": parts[1]["b"]}]
    total = sum_owned(owned)
    assert total["a"].data is first_a and total["b"].data is first_b and owned == [{}, {}]
    with pytest.raises(ValueError, match="differ"):
        sum_owned([{"a": _random_sums(rng, (5, 5, 3))}, {"a": _random_sums(rng, (7, 7, 4))}])


def test_fixed_point_in_place_equals_from_float() -> None:
    """HalfSums.from_float_planes converts (half, (real, imag), grid) float64 planes in their own memory to
    the same integers as from_float, and refuses NaN/Inf."""
    rng = np.random.default_rng(3)
    grid = (9, 9, 5)
    data = rng.normal(size=(2, *grid)) * 1e3 + 1j * rng.normal(size=(2, *grid)) * 1e3
    data[0, 0, 0, 0] = 0.5 * 2.0 ** -FIXED_POINT_BITS  # a tie: rint rounds half to even
    weight = rng.uniform(0, 50, (2, *grid))
    ref = HalfSums.from_float(data, weight, 4)
    planes = np.ascontiguousarray(np.stack([data.real, data.imag], axis=1))
    w = weight.copy()
    got = HalfSums.from_float_planes(planes, w, 4)
    assert got.data.dtype == np.int64 and np.array_equal(got.data, ref.data) and np.array_equal(got.weight, ref.weight)
    assert np.shares_memory(got.data, planes) and np.shares_memory(got.weight, w) and got.particles == 4
    bad = np.ascontiguousarray(np.stack([data.real, data.imag], axis=1))
    bad[1, 1, 8, 8, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        HalfSums.from_float_planes(bad, weight.copy())
    with pytest.raises(ValueError, match="float64"):
        HalfSums.from_float_planes(planes.astype(np.float32), weight.copy())


def test_accumulate_sums_rejects_mismatched_grids() -> None:
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="differ"):
        accumulate_sums({"a": _random_sums(rng, (5, 5, 3))}, {"a": _random_sums(rng, (7, 7, 4))})


def test_check_tasks_rejects_duplicates_and_non_tasks(population: tuple[Repository, Population]) -> None:
    repo, pop = population
    tasks = make_tasks(repo, pop)
    with pytest.raises(ValueError, match="appears twice"):
        check_tasks([*tasks, tasks[0]])
    with pytest.raises(ValueError, match="expected ItemTask"):
        check_tasks([{"item": 1}])


# ----------------------------------------------------------------------------- cache


def test_cache_key_covers_the_inputs_only(population: tuple[Repository, Population]) -> None:
    repo, pop = population
    t = make_tasks(repo, pop)[0]
    other = make_tasks(repo, pop)[1]
    k = cache_key(t)
    for change in ({"item_hash": other.item_hash}, {"item_key": other.item_key}, {"species": {"apo": other.item_hash}},
                   {"settings": {**SETTINGS, "rounds": 2}}, {"iteration": 2}, {"source": "grid2"}):
        assert cache_key(dataclasses.replace(t, **change)) != k, change
    assert cache_key(dataclasses.replace(t, repo_url="s3://elsewhere/x", particles_total=99)) == k


def test_cache_round_trip_and_damaged_entries(population: tuple[Repository, Population]) -> None:
    repo, pop = population
    task = make_tasks(repo, pop)[0]
    cache = ResultCache(repo.objects)
    assert cache.get(task) is None
    result = refine_item(task)
    h = cache.put(task, result)
    assert repo.storage.backend.get(CACHE_PREFIX + cache_key(task)).decode().strip() == h
    got = cache.get(task)
    assert got is not None and got.stats["cached"] is True
    assert (got.item_hash, got.particles, got.nc_spectra) == (result.item_hash, result.particles, result.nc_spectra)
    assert np.array_equal(got.sums["apo"].data, result.sums["apo"].data)
    assert np.array_equal(got.sums["apo"].weight, result.sums["apo"].weight)
    assert cache_roots(repo.storage.backend, grace_seconds=3600) == {h}
    assert cache_roots(repo.storage.backend, grace_seconds=3600, now=1e12) == set()  # all older than the grace
    assert prune_cache(repo.objects, grace_seconds=3600) == 0
    # a swept sums array makes the pointer dangle: a miss, then pruned
    body = repo.objects.get_record(h, "item-result")
    repo.storage.backend.delete(array_prefix(body["sums"]["apo"]["weight"]["@array"]) + "zarr.json")
    assert cache.get(task) is None
    assert prune_cache(repo.objects, grace_seconds=3600, dry_run=True) == 1
    assert prune_cache(repo.objects, grace_seconds=3600) == 1
    assert list(repo.storage.backend.list(CACHE_PREFIX)) == []
    with pytest.raises(ValueError, match="half-set sums"):
        cache.put(task, dataclasses.replace(result, sums=None))


# ----------------------------------------------------------------------------- local executor


def test_local_executor_threads_give_identical_results(population, twin) -> None:
    (repo_a, pop_a), (repo_b, pop_b) = population, twin
    one, two = LocalExecutor(threads=1), LocalExecutor(threads=2)
    out_a = one.run(make_tasks(repo_a, pop_a))
    out_b = two.run(make_tasks(repo_b, pop_b))
    assert_same_output(out_a, out_b)
    assert one.references.loads == 1 and two.references.loads == 1  # one reference load per iteration
    assert out_a.sums["apo"].particles == sum(t.particles_total for t in make_tasks(repo_a, pop_a))
    assert [r.task for r in out_a.results] == make_tasks(repo_a, pop_a)  # input order
    one.run([dataclasses.replace(t, iteration=2) for t in make_tasks(repo_a, pop_a)])
    assert one.references.loads == 1  # same species versions and settings: references stay resident
    one.close()
    two.close()


class _Interrupt(Exception):
    pass


def test_interrupted_iteration_resumes_without_repeating_work(population, twin) -> None:
    (repo, pop), (repo_b, pop_b) = population, twin
    tasks = make_tasks(repo, pop)

    def stop_after_two(event: ProgressEvent) -> None:
        if event.done == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        LocalExecutor().run(tasks, progress=stop_after_two)
    resumed = LocalExecutor().run(tasks)
    assert sorted(r.stats["cached"] for r in resumed.results) == [False, False, True, True]
    undisturbed = LocalExecutor().run(make_tasks(repo_b, pop_b))
    assert_same_output(resumed, undisturbed)
    again = LocalExecutor().run(tasks)  # a finished iteration re-run is all cache hits, same bits
    assert all(r.stats["cached"] for r in again.results)
    assert_same_output(again, undisturbed)


def test_progress_events_and_summary(population) -> None:
    repo, pop = population
    tasks = make_tasks(repo, pop)
    events: list[ProgressEvent] = []
    out = LocalExecutor(use_cache=False).run(tasks, progress=events.append)
    assert [e.done for e in events] == [1, 2, 3, 4]
    assert [e.result.task.particles_total for e in events] == sorted((t.particles_total for t in tasks), reverse=True)
    assert events[-1].particles_done == events[-1].particles_total == sum(t.particles_total for t in tasks)
    assert eta_seconds(events[-1]) == 0.0
    e = dataclasses.replace(events[0], particles_done=3, particles_total=12, elapsed=6.0)
    assert eta_seconds(e) == pytest.approx(18.0)  # 9 particles left at 0.5 particles/s
    stats = iteration_stats(out, 2.0)
    assert stats["items"] == 4 and stats["cached"] == 0 and stats["particles_per_second"] == stats["particles"] / 2
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    with iteration_progress("iteration 1", console=console) as update:
        for ev in events:
            update(ev)
    console.print(summary_table(1, {"apo": (6.0, 5.2)}, stats))
    text = buf.getvalue()
    assert "particles/s" in text and "5.20" in text and "4 items (0 cached)" in text


def test_interrupted_refinement_commits_nothing_and_resumes_to_the_same_population(population, twin) -> None:
    from mrepo.workers.driver import refine_population

    (repo, _), (repo_b, _) = population, twin
    settings = RefineSettings.from_json(SETTINGS)
    head = repo.head("main")

    def stop_at_the_last_item(event: ProgressEvent) -> None:
        if event.done == event.total:
            raise _Interrupt  # every item refined and cached, the sums never reach the driver

    with pytest.raises(_Interrupt):
        refine_population(repo, "main", 1, settings, LocalExecutor(), progress=stop_at_the_last_item)
    assert repo.head("main") == head  # no partial commit
    torch.set_num_threads(2)  # resumed in another process state; all cache hits: refine_item never runs here
    try:
        (resumed,) = refine_population(repo, "main", 1, settings, LocalExecutor())
    finally:
        torch.set_num_threads(1)
    (undisturbed,) = refine_population(repo_b, "main", 1, settings, LocalExecutor())
    assert repo.get_commit(resumed).population == repo_b.get_commit(undisturbed).population
