"""Refine one item (field of view) with every particle of every selected species in it.

Steps (M paper, Methods): read the original frames/tilts; extract each particle in every
exposure at the aliasing-free box, Fourier-cropped per exposure; maximise M's target
(:mod:`mrepo.workers.objective`) with L-BFGS on autograd gradients in stages — geometry
(global shifts, image warp, particle trajectories, stage-angle corrections) with the CTF
frozen, then the CTF (exhaustive defocus search first, then defocus/astigmatism jointly
with the geometry); compute NC spectra and, if asked, data-driven weights; back-project the
original images with the refined parameters into per-species half-set sums. The worker
stores the new item, models and per-species ``item-particles`` records itself.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from mrepo.graph import Item, Repository
from mrepo.store import ObjectStore, array_ref
from mrepo.workers.api import ItemResult, ItemTask
from mrepo.workers.backproject import backproject_species
from mrepo.workers.geometry import (
    DEFOCUS_UNIT,
    Parameters,
    ParticleSet,
    particle_geometry,
    resample_trajectory,
    updated_models,
    updated_particles,
)
from mrepo.workers.imaging import big_box, exposure_sizes, extract_groups
from mrepo.workers.item_model import ItemModel, load_item_model
from mrepo.workers.objective import Subset, Sums, build_group_state, evaluate
from mrepo.workers.raw_data import read_exposures
from mrepo.workers.references import SpeciesReferences, load_references_from, refinement_resolution
from mrepo.workers.settings import RefineSettings
from mrepo.workers.weights import fit_exposure_weights, nc_spectra

__all__ = ["refine_item", "ItemParticles", "load_item_particles", "ITEM_PARTICLES_KIND"]

ITEM_PARTICLES_KIND = "item-particles"


class ItemParticles(dict):
    """Body of an ``item-particles`` record: species, item key, ids, coordinates (N, T, 3) Å,
    angles (N, T, 3) deg (array references)."""


def load_item_particles(objects: ObjectStore, h: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids (N,), coordinates (N, T, 3), angles (N, T, 3)) of an ``item-particles`` record."""
    from mrepo.store import deref

    body = objects.get_record(h, ITEM_PARTICLES_KIND)
    return tuple(objects.get_array(deref(body[k])) for k in ("ids", "coordinates", "angles"))  # type: ignore


class _Context:
    """Everything one refinement of an item needs (built once)."""

    def __init__(self, task: ItemTask, settings: RefineSettings, objects: ObjectStore, refs: SpeciesReferences):
        self.settings = settings
        self.item = Item.load(objects, task.item_hash)
        self.model: ItemModel = load_item_model(objects, self.item)
        # normalised exposures, particles as positive density (the source's polarity applied)
        self.stack = read_exposures(objects, self.item, task.polarity)
        if self.stack.shape[0] != self.model.n:
            raise ValueError(f"item {self.item.name!r}: raw stack has {self.stack.shape[0]} images, "
                             f"imaging exposure lists {self.model.n}")
        self.refs = {name: refs[name] for name in sorted(task.species)}
        coords, angles, self.rows = [], [], {}
        t_max = max([r.particles.temporal_samples for r in self.refs.values()] + [1])
        if settings.refine_poses:
            t_max = max(t_max, settings.temporal_samples)
        self.temporal_samples = t_max
        start = 0
        for name, ref in self.refs.items():
            if abs(ref.species.pixel_size - self.model.pixel_size) > 1e-6 * self.model.pixel_size:
                raise ValueError(f"species {name!r} pixel size {ref.species.pixel_size} Å differs from item "
                                 f"{self.item.name!r} pixel size {self.model.pixel_size} Å")
            table = ref.particles
            sel = np.flatnonzero(table.item_keys() == self.item.key) if len(table) else np.zeros(0, int)
            coords.append(resample_trajectory(table.coordinates[sel], t_max))
            angles.append(resample_trajectory(table.angles[sel], t_max) if table.temporal_samples == t_max
                          else np.repeat(table.angles[sel][:, :1], t_max, 1))
            self.rows[name] = (sel, torch.arange(start, start + len(sel)), torch.from_numpy(table.half[sel].astype(np.int64)))
            start += len(sel)
        self.n_particles = start
        self.particles = ParticleSet(np.concatenate(coords) if coords else np.zeros((0, t_max, 3)),
                                     np.concatenate(angles) if angles else np.zeros((0, t_max, 3)))
        self.iteration = task.iteration
        self.resolution = {n: refinement_resolution(r.species, settings, task.iteration) for n, r in self.refs.items()}

    def subsets(self, params: Parameters) -> list[Subset]:
        with torch.no_grad():
            geo = particle_geometry(self.model, self.particles, params)
        out = []
        for name, ref in self.refs.items():
            _, index, half = self.rows[name]
            if len(index) == 0:
                continue
            res = self.resolution[name]
            max_def = float(torch.maximum(geo.defocus_u[index], geo.defocus_v[index]).abs().max())
            max_def += self.settings.defocus_search_range if self.settings.refine_defocus else 0.0
            big = big_box(self.model, ref.box, ref.species.diameter, res, max_def, self.settings.min_box_factor)
            sizes = exposure_sizes(self.model, ref.box, res)
            for h in (1, 2):
                idx = index[half == h]
                if len(idx) == 0:
                    continue
                groups = extract_groups(self.stack, torch.round(geo.positions[idx]), ref.box, big, sizes,
                                        self.model.pixel_size)
                states = [build_group_state(self.model, g, ref.species.diameter, res, ref.box, self.settings.whiten,
                                            self.settings.weights) for g in groups]
                out.append(Subset(name, h, ref.box, idx, ref.volumes_ft[h - 1], states))
        return out

    def sums(self, subsets: list[Subset], params: Parameters, ctf_frozen: bool, spectra: bool = False) -> Sums:
        geo = particle_geometry(self.model, self.particles, params)
        return evaluate(self.model, subsets, geo, self.n_particles, ctf_frozen=ctf_frozen, spectra=spectra)


def _lbfgs(ctx: _Context, subsets: list[Subset], params: Parameters, groups: list[str], ctf_frozen: bool) -> None:
    tensors = params.select(groups)
    if not tensors or ctx.settings.lbfgs_iterations == 0:
        return
    opt = torch.optim.LBFGS(tensors, lr=1.0, max_iter=ctx.settings.lbfgs_iterations, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -1000.0 * ctx.sums(subsets, params, ctf_frozen).target()
        loss.backward()
        return loss

    opt.step(closure)
    params.select([])


def _defocus_search(ctx: _Context, subsets: list[Subset], params: Parameters) -> None:
    """M's exhaustive defocus search: ±range in steps, then halved steps around the two best
    values, per particle (frames) or per tilt (tilts), scored by its own NCC."""
    s = ctx.settings
    frames = ctx.model.kind == "frames"
    base = params.defocus.detach().clone()
    step = s.defocus_search_step / DEFOCUS_UNIT
    r = s.defocus_search_range / DEFOCUS_UNIT
    grid = torch.arange(-r, r + 1e-9, step, dtype=torch.float64)
    cands = grid[None].expand(len(base), -1)
    best_two = None
    for it in range(s.defocus_search_iterations):
        if it > 0:
            step /= 2
            offs = torch.tensor([-step, 0.0, step], dtype=torch.float64)
            cands = (best_two[:, :, None] + offs).reshape(len(base), -1)
        scores = torch.empty_like(cands)
        with torch.no_grad():
            for j in range(cands.shape[1]):
                params.defocus.copy_(base + cands[:, j])
                sm = ctx.sums(subsets, params, ctf_frozen=False)
                dim = 1 if frames else 0
                c, a, b = sm.cross.sum(dim), sm.power_a.sum(dim), sm.power_b.sum(dim)
                scores[:, j] = c / torch.sqrt(a * b).clamp_min(1e-30)
        order = torch.argsort(scores, dim=1, descending=True)
        best_two = torch.gather(cands, 1, order[:, :2])
    with torch.no_grad():
        params.defocus.copy_(base + best_two[:, 0])


def _refine(ctx: _Context, params: Parameters) -> dict[str, float]:
    s = ctx.settings
    tilts = ctx.model.kind == "tilts"
    geometry = [g for g, on in (("shifts", s.refine_shifts), ("warp", params.warp is not None and s.image_warp),
                                ("translation", s.refine_poses), ("rotation", s.refine_poses),
                                ("stage", s.refine_stage_angles and tilts)) if on]
    ctf = [g for g, on in (("defocus", s.refine_defocus), ("astigmatism", s.refine_astigmatism)) if on]
    if s.refine_shifts and s.refine_poses:
        params.gauge.add("translation")
    if s.refine_stage_angles and s.refine_poses and tilts:
        params.gauge.add("rotation")
    subsets = ctx.subsets(params)
    with torch.no_grad():
        before = float(ctx.sums(subsets, params, ctf_frozen=False).target())
    for rnd in range(s.rounds):
        for sub in subsets:
            for st in sub.groups:
                st.cached = None
        _lbfgs(ctx, subsets, params, geometry, ctf_frozen=True)
        if ctf:
            if s.refine_defocus and rnd == 0 and s.defocus_search_range > 0:
                _defocus_search(ctx, subsets, params)
            _lbfgs(ctx, subsets, params, ctf + geometry, ctf_frozen=False)
    with torch.no_grad():
        after = float(ctx.sums(subsets, params, ctf_frozen=False).target())
    return {"target_before": before, "target_after": after}


def _spectra(ctx: _Context, params: Parameters) -> np.ndarray | None:
    subsets = ctx.subsets(params)
    if not subsets:
        return None
    with torch.no_grad():
        sm = ctx.sums(subsets, params, ctf_frozen=False, spectra=True)
    spec = {k: v.numpy() for k, v in (sm.spectra or {}).items()}
    shells = {v.shape[-1] for v in spec.values()}
    if len(shells) != 1:
        largest = max(shells)
        spec = {k: np.pad(v, ((0, 0), (0, 0), (0, largest - v.shape[-1]))) for k, v in spec.items()}
    return nc_spectra(spec, {n: ctx.refs[n].fsc for n in spec})


def refine_item(task: ItemTask, references: SpeciesReferences | None = None) -> ItemResult:
    """Refine one item and back-project it (see module docstring); returns hashes and half-set sums."""
    t0 = time.perf_counter()
    settings = RefineSettings.from_json(task.settings)
    torch.set_num_threads(settings.threads)
    repo = Repository.open(task.repo_url)
    objects = repo.objects
    missing = set(task.species) - set(references or {})
    refs = dict(references or {})
    if missing:
        refs.update(load_references_from(objects, {n: task.species[n] for n in missing}, settings))
    ctx = _Context(task, settings, objects, refs)
    model = ctx.model
    params = Parameters.zeros(model, ctx.particles, settings.image_warp)
    stats: dict[str, Any] = {"particles": ctx.n_particles, "refine_resolution": ctx.resolution}
    if settings.refines_anything and ctx.n_particles:
        stats.update(_refine(ctx, params))
    new_models = {k: v for k, v in updated_models(model, params).items()}
    nc_hash = None
    if ctx.n_particles:
        nc = _spectra(ctx, params)
        if nc is not None:
            nc_hash = objects.put_array(nc)
            if settings.weights:
                box = max(ref.box for ref in ctx.refs.values())
                freqs = np.arange(nc.shape[1]) / (box * model.pixel_size)
                limit = int(np.floor(box * model.pixel_size / min(ctx.resolution.values()))) + 1
                w = fit_exposure_weights(nc, freqs, shell_range=(1, min(limit, nc.shape[1])))
                new_models["weights"] = w
                model.weights = w
    with torch.no_grad():
        geo = particle_geometry(model, ctx.particles, params)
    new_particles = updated_particles(ctx.particles, params, model)
    sums, particle_hashes = {}, {}
    for name, ref in ctx.refs.items():
        sel, index, half = ctx.rows[name]
        res = ref.species.resolution or 2 * model.pixel_size
        res = max(2 * model.pixel_size, res / 1.25)
        sums[name] = backproject_species(model, ctx.stack, geo, index, half, ref.box, ref.species.diameter, res,
                                         ref.symmetry, pad=settings.reconstruction_pad,
                                         min_box_factor=settings.min_box_factor, use_weights=settings.weights)
        ids = ref.particles.ids[sel]
        idx = index.numpy()
        arrays = objects.put_arrays([ids, new_particles.coordinates[idx], new_particles.angles[idx]])
        particle_hashes[name] = objects.put_record(ITEM_PARTICLES_KIND, {
            "species": name, "item": ctx.item.key, "ids": array_ref(arrays[0]),
            "coordinates": array_ref(arrays[1]), "angles": array_ref(arrays[2])})
    models = dict(ctx.item.models)
    changed = new_models if settings.refines_anything or settings.weights else {}
    for k, v in changed.items():
        models[k] = objects.put_array(np.ascontiguousarray(v, dtype=np.float64))
    item = Item(ctx.item.kind, ctx.item.name, ctx.item.raw, ctx.item.imaging, models,
                tuple(sorted(task.species.values())), ctx.item.metadata)
    item_hash = item.save(objects)
    stats["seconds"] = time.perf_counter() - t0
    return ItemResult(task, item_hash, particle_hashes, sums, nc_hash, stats)
