"""The in-process population loop: one commit per refinement iteration.

Each iteration builds one :class:`~mrepo.workers.api.ItemTask` per item holding particles
of the selected species, runs them on an :class:`~mrepo.workers.api.Executor`, then
reconstructs every species from the reduced half-set sums (half-maps, masked FSC,
resolution, filtered map), writes new species versions (new poses, ``contributors`` = the
refined items) and new item versions, and commits with ``operation = {"name": "refine",
"iteration": i, "settings": ..., "image_warp_grids": {item key: [gx, gy, gt]}}`` (the warp grid
each item refined) by compare-and-swap on the branch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from mrepo.graph import ParticleTable, Population, Repository, Species
from mrepo.store import InvalidInput
from mrepo.workers.api import Executor, ItemTask
from mrepo.workers.denoise import ensure_denoisers, refresh_denoiser
from mrepo.workers.geometry import resample_trajectory
from mrepo.workers.movement import divergence, item_version_moves, settled, species_moves, summarise
from mrepo.workers.optics_share import share_optics
from mrepo.workers.reconstruct import check_reconstruction, reconstruct_species, species_average, species_metadata
from mrepo.workers.references import remasked
from mrepo.workers.refine_item import load_item_particles
from mrepo.workers.settings import RefineSettings
from mrepo.workers.source_weights import refit_source_weights

__all__ = ["refine_population", "build_tasks", "DivergenceError"]


def build_tasks(repo: Repository, pop: Population, species: dict[str, str], settings: RefineSettings,
                iteration: int, sources: list[str]) -> list[ItemTask]:
    """One task per item (in the chosen sources) that holds particles of the chosen species."""
    counts: dict[str, int] = {}
    for h in species.values():
        table = repo.particles(repo.species(h).particles)
        keys, n = np.unique(table.item_keys().astype(str), return_counts=True) if len(table) else ([], [])
        for k, c in zip(keys, n):
            counts[str(k)] = counts.get(str(k), 0) + int(c)
    tasks = []
    for name in sources:
        src = repo.source(pop.sources[name])
        for key, ih in sorted(src.items.items()):
            if counts.get(key):
                tasks.append(ItemTask(repo.url, name, key, ih, dict(species), settings.to_json(), iteration,
                                      counts[key], src.polarity))
    return tasks


def _new_table(repo: Repository, table: ParticleTable, name: str, results: list[Any]) -> ParticleTable:
    updates = {}
    t_new = table.temporal_samples
    for r in results:
        if name in r.particles:
            ids, coords, angles = load_item_particles(repo.objects, r.particles[name])
            t_new = max(t_new, coords.shape[1])
            for i, c, a in zip(ids, coords, angles):
                updates[int(i)] = (c, a)
    coords = np.array(resample_trajectory(table.coordinates, t_new))  # a copy: ``table`` is the old version
    angles = table.angles if table.temporal_samples == t_new else np.repeat(table.angles[:, :1], t_new, 1)
    angles = angles.copy()
    for row, pid in enumerate(table.ids.tolist()):
        if pid in updates:
            c, a = updates[pid]
            coords[row] = resample_trajectory(c[None], t_new)[0]
            angles[row] = a if a.shape[0] == t_new else np.repeat(a[:1], t_new, 0)
    return ParticleTable(table.ids, table.item_index, table.items, coords, angles, table.half, dict(table.extra))


def refine_population(repo: Repository, branch: str, iterations: int | str, settings: RefineSettings,
                      executor: Executor, *, sources: list[str] | None = None, species: list[str] | None = None,
                      progress: Any = None, author: str | None = None, on_iteration: Any = None,
                      max_iterations: int = 10) -> list[str]:
    """Run ``iterations`` refinement iterations on ``branch``; returns the new commit hashes.

    ``iterations="auto"``: iterate until resolution and parameters settle
    (:func:`mrepo.workers.movement.settled`), at most ``max_iterations``.
    Each commit's operation records per group how far the parameters moved (median, 95th
    percentile; :mod:`mrepo.workers.movement`); an iteration whose moves exceed what the
    previous resolution allows raises :class:`DivergenceError` and is not committed.
    ``progress`` is handed to the executor (per-item ``ProgressEvent`` callbacks);
    ``on_iteration(iteration, {species: (resolution before, after)}, stats)`` is called after
    each commit (stats: see :func:`mrepo.workers.ray_progress.iteration_stats`, plus
    ``"movement"``).
    """
    import time

    import torch

    from mrepo.workers.ray_progress import iteration_stats

    auto = iterations == "auto"
    if not auto and (not isinstance(iterations, int) or iterations < 1):
        raise InvalidInput(f"iterations must be >= 1 or 'auto', got {iterations!r}")
    last = max_iterations if auto else int(iterations)
    commits = []
    for it in range(1, last + 1):
        head = repo.head(branch)
        if head is None:
            raise InvalidInput(f"branch {branch!r} has no commits")
        pop = repo.population(head)
        names = sorted(species or pop.species)
        src_names = sorted(sources or pop.sources)
        for n in names:
            if n not in pop.species:
                raise InvalidInput(f"species {n!r} is not in the population (have {sorted(pop.species)})")
        for s in src_names:
            if s not in pop.sources:
                raise InvalidInput(f"data source {s!r} is not in the population (have {sorted(pop.sources)})")
        if settings.tilt_movies:  # refused before any work when a tilt series has no raw tilt movies
            from mrepo.workers.tilt_movies import check_tilt_movies

            check_tilt_movies(repo, pop, src_names)
        sp_hashes = ensure_denoisers(repo.objects, {n: pop.species[n] for n in names}, settings)
        tasks = build_tasks(repo, pop, sp_hashes, settings, it, src_names)
        if not tasks:
            raise InvalidInput("no item holds particles of the selected species")
        started = time.perf_counter()
        out = executor.run(tasks, progress=progress)
        fitted_weights = None
        finest = min((repo.species(sp_hashes[n]).resolution or np.inf) for n in names)
        if settings.weights and settings.weights_scope == "source":  # M: weights over a source's items
            out.results, fitted_weights = refit_source_weights(repo.objects, out.results, finest)
        # The reconstruction's float results depend on torch's thread count: fix it, so that every
        # executor (and a resumed run) commits bit-identical maps.
        torch.set_num_threads(settings.threads)
        if settings.optics_groups:  # one magnification/aberration value per source and optics group
            out.results = share_optics(repo.objects, out.results)
        new_sources = dict(pop.sources)
        by_source: dict[str, dict[str, str]] = {}
        for r in out.results:
            by_source.setdefault(r.task.source, {})[r.task.item_key] = r.item_hash
        for s, items in by_source.items():
            src = repo.source(pop.sources[s])
            new_sources[s] = replace(src, items={**src.items, **items}).save(repo.objects)
        new_species = dict(pop.species)
        moves: list[dict[str, np.ndarray]] = []
        kinds: dict[str, str] = {}
        for r in out.results:
            kind, m = item_version_moves(repo.objects, r.task.item_hash, r.item_hash)
            kinds[r.task.item_key] = kind
            moves.append(m)
        reasons = []
        voltage = _voltage(repo, out.results)
        for n in names:
            sp = repo.species(sp_hashes[n])
            table = repo.particles(sp.particles)
            mask = repo.objects.get_array(sp.mask)
            rec = reconstruct_species(out.sums[n], sp.box, sp.pixel_size, mask, pad=settings.reconstruction_pad,
                                      wiener_fraction=settings.wiener_fraction)
            # refuse (no commit) a map that anti-correlates with its reference or shares only an artefact
            check_reconstruction(rec, mask, sp.pixel_size, name=n, reference=species_average(repo.objects, sp))
            put = repo.objects.put_array
            mask_hash = sp.mask
            if settings.mask_follows_map:
                new_mask, rec = remasked(rec, sp.pixel_size, sp.diameter)
                mask_hash = put(new_mask)
            new_table = _new_table(repo, table, n, out.results)
            sp_moves = species_moves(table, new_table, kinds, sp.pixel_size)
            moves.extend(sp_moves)
            reason = divergence(summarise(sp_moves), sp.resolution, sp.diameter / 2, sp.pixel_size, voltage)
            if reason:
                reasons.append(f"species {n!r}: {reason}")
            contributors = tuple(sorted(r.item_hash for r in out.results if n in r.particles))
            new = Species(sp.name, sp.diameter, sp.symmetry, sp.pixel_size, sp.box, put(rec.half1), put(rec.half2),
                          mask_hash, new_table.save(repo.objects),
                          max(sp.temporal_samples, settings.temporal_samples if settings.refine_poses else 1),
                          float(rec.resolution) if np.isfinite(rec.resolution) else None, sp.denoiser,
                          put(rec.fsc), contributors, species_metadata(sp.metadata, rec, put))
            new_species[n] = refresh_denoiser(repo.objects, new, settings).save(repo.objects)
        movement = summarise(moves)
        item_reason = divergence({k: v for k, v in movement.items() if k == "defocus"}, finest, 1.0, 1.0, voltage)
        if item_reason:
            reasons.append(f"items: {item_reason}")
        if reasons:
            raise DivergenceError(f"refine iteration {it} diverged, nothing committed: {'; '.join(reasons)}")
        new_pop = Population(pop.name, new_sources, new_species, pop.metadata)
        op = {"name": "refine", "iteration": it, "settings": settings.to_json(), "species": names,
              "sources": src_names, "movement": movement}
        if fitted_weights:
            op["weights"] = fitted_weights
        grids = {r.task.item_key: r.stats["image_warp_grid"] for r in out.results if "image_warp_grid" in r.stats}
        if grids:  # the image-warp grid each item refined (settings.image_warp "auto" sizes it per item)
            op["image_warp_grids"] = grids
        res = ", ".join(f"{n} {repo.species(new_species[n]).resolution or float('nan'):.2f} Å" for n in names)
        commits.append(repo.commit(new_pop, message=f"refine iteration {it}/{'auto' if auto else last}: {res}",
                                   branch=branch, operation=op, author=author, expected_head=head))
        before = {n: repo.species(sp_hashes[n]).resolution for n in names}
        after = {n: repo.species(new_species[n]).resolution for n in names}
        if on_iteration is not None:
            on_iteration(it, {n: (before[n], after[n]) for n in names},
                         {**iteration_stats(out, time.perf_counter() - started), "movement": movement})
        if auto and settled(movement, before, after):
            break
    return commits


class DivergenceError(InvalidInput):
    """A refinement iteration moved parameters further than the previous resolution allows."""


def _voltage(repo: Repository, results: list[Any]) -> float:
    """Acceleration voltage (kV) of the first refined item (300 when unknown)."""
    from mrepo.graph import Item

    for r in results:
        return float(Item.load(repo.objects, r.item_hash).imaging.get("voltage", 300.0))
    return 300.0
