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

import dataclasses
import functools
import time
from typing import Any

import numpy as np
import torch

from mrepo.graph import Item, Repository
from mrepo.store import InvalidInput, ObjectStore, array_ref
from mrepo.store.heap import keep_freed_memory
from mrepo.workers.api import ItemResult, ItemTask
from mrepo.workers.backproject import backproject_species
from mrepo.workers.device import resolve_device
from mrepo.workers.exposure_spectra import exposure_spectra
from mrepo.workers.geometry import (
    DEFOCUS_UNIT,
    Geometry,
    Parameters,
    ParticleSet,
    particle_geometry,
    resample_trajectory,
    updated_models,
    updated_particles,
)
from mrepo.workers.imaging import PatchSource, big_box, exposure_sizes, extract_groups
from mrepo.workers.item_model import ItemModel, load_item_model
from mrepo.workers.objective import (
    Subset,
    Sums,
    backward_target,
    build_group_state,
    evaluate,
    group_amplitudes,
)
from mrepo.workers.optics import updated_optics
from mrepo.workers.optics_share import SHARED_OPTICS_KEYS
from mrepo.workers.references import (
    SpeciesReference,
    SpeciesReferences,
    load_references_from,
    refinement_resolution,
    species_resolution,
)
from mrepo.workers.schedule import image_warp_grid, plan_schedule, stage_prior, stage_prior_weight
from mrepo.workers.settings import RefineSettings
from mrepo.workers.stages import report_stage
from mrepo.workers.tilt_movie_stage import refine_tilt_movies
from mrepo.workers.tilt_movies import MODEL as TILT_MOVIE_SHIFTS
from mrepo.workers.tilt_movies import item_exposures
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
        #: where patches, references, slices, CTFs and grids live (RefineSettings.device, checked here)
        self.device = resolve_device(settings.device, "refinement device")
        self.item = Item.load(objects, task.item_hash)
        self.model: ItemModel = load_item_model(objects, self.item)
        # normalised exposures, particles as positive density (the source's polarity applied)
        self.objects = objects
        # tilt series with raw tilt movies and frame shifts: the tilts re-made from the aligned frames;
        # else the raw exposures, read per particle patch (the whole stack is never in memory)
        self.stack = item_exposures(objects, self.item, task.polarity, self.model.pixel_size, lazy=True)
        if self.stack.shape[0] != self.model.n:
            raise ValueError(f"item {self.item.name!r}: raw stack has {self.stack.shape[0]} images, "
                             f"imaging exposure lists {self.model.n}")
        if isinstance(self.stack, torch.Tensor):  # a read-on-demand source hands its patches over per batch
            self.stack = self.stack.to(device=self.device)
        self.refs = {name: _on_device(refs[name], self.device) for name in sorted(task.species)}
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
            self.rows[name] = (sel, torch.arange(start, start + len(sel), device=self.device),
                               torch.from_numpy(table.half[sel].astype(np.int64)).to(device=self.device))
            start += len(sel)
        self.n_particles = start
        self.particles = ParticleSet(np.concatenate(coords) if coords else np.zeros((0, t_max, 3)),
                                     np.concatenate(angles) if angles else np.zeros((0, t_max, 3)))
        self.iteration = task.iteration
        self.resolution = {n: refinement_resolution(r.species, settings, task.iteration) for n, r in self.refs.items()}
        self.half = torch.zeros(self.n_particles, dtype=torch.int64, device=self.device)
        for _, index, half in self.rows.values():
            self.half[index] = half
        present = {n: r for n, r in self.refs.items() if len(self.rows[n][0])}
        existing = None if self.model.image_warp is None else self.model.image_warp.shape[1:]
        #: image-warp grid (gx, gy, gt) this item refines, or None (``"auto"``: from its particles and field)
        self.warp_grid = image_warp_grid(settings, self.model.kind, (self.model.width, self.model.height),
                                         self.model.n, self.n_particles,
                                         max([r.species.diameter for r in present.values()] + [0.0])
                                         / self.model.pixel_size, existing)
        self.schedule = plan_schedule(settings, self.model.kind, self.warp_grid is not None,
                                      {n: self.resolution[n] for n in present},
                                      {n: r.species.diameter / 2 for n, r in present.items()},
                                      self.model.pixel_size, self.model.voltage, self.n_particles,
                                      {n: species_resolution(r.species) for n, r in present.items()}) if present else None
        tilts = self.model.kind == "tilts"
        geometry = self.schedule.geometry if self.schedule else ()
        #: groups whose particle-mean change is removed during L-BFGS (the shared models carry it)
        self.gauge = {g for g, shared in (("translation", "shifts"), ("rotation", "stage"))
                      if g in geometry and shared in geometry and (g == "translation" or tilts)}
        self.prior_weight = 0.0
        #: stream particle batches (re-extract patches per evaluation) when keeping them would
        #: exceed ``patch_memory_mib`` (estimate: complex64 rfft patches at the species box, all exposures)
        need = sum(len(self.rows[n][0]) * self.model.n * r.box * (r.box // 2 + 1) * 8 * 4 for n, r in present.items())
        self.patch_mib = need / 2**20  # per exposure count of the item; the tilt-movie stage has F times more
        self.stream = self.patch_mib > settings.patch_memory_mib

    def in_target(self, subsets: list[Subset]) -> torch.Tensor:
        """(P,) bool: particles that some subset scores."""
        mask = torch.zeros(self.n_particles, dtype=torch.bool, device=self.device)
        for sub in subsets:
            mask[sub.index] = True
        return mask

    def half_rows(self, subsets: list[Subset]) -> dict[int, torch.Tensor]:
        """Half-set -> particle rows scored by ``subsets``."""
        mask = self.in_target(subsets)
        return {h: torch.nonzero(mask & (self.half == h)).flatten() for h in (1, 2)
                if bool((mask & (self.half == h)).any())}

    def subsets(self, params: Parameters) -> list[Subset]:
        """Particle batches per species and half-set, each scored against its own half-map."""
        return self.subset_pairs(params)[0]

    def subset_pairs(self, params: Parameters, *, model: ItemModel | None = None,
                     stack: torch.Tensor | PatchSource | None = None,
                     geo: Geometry | None = None) -> tuple[list[Subset], list[Subset]]:
        """Particle batches (≤ ``particle_batch``) per species and half-set, each scored against its
        own half-map, and the same batches against the other half-map (cross-validation).
        ``model``/``stack``/``geo``: other exposures than the item's (tilt movie frames), else the item's."""
        model = self.model if model is None else model
        stack = self.stack if stack is None else stack
        if geo is None:
            with torch.no_grad():
                geo = particle_geometry(self.model, self.particles, params)
        own, other = [], []
        batch = self.settings.particle_batch
        for name, ref in self.refs.items():
            _, index, half = self.rows[name]
            if len(index) == 0:
                continue
            res = self.resolution[name]
            max_def = float(torch.maximum(geo.defocus_u[index], geo.defocus_v[index]).abs().max())
            max_def += self.schedule.defocus_range if "defocus" in self.schedule.ctf else 0.0
            big = big_box(model, ref.box, ref.species.diameter, res, max_def, self.settings.min_box_factor)
            sizes = exposure_sizes(model, ref.box, res)
            for h in (1, 2):
                idx = index[half == h]
                if len(idx) == 0:
                    continue
                chunks = [idx[i:i + batch] for i in range(0, len(idx), batch)]
                groups = [extract_groups(stack, torch.round(geo.positions[c]), ref.box, big, sizes,
                                         model.pixel_size) for c in chunks]
                # M's AS_i: mean amplitudes over all particles of this species and half-set
                amps = [sum(group_amplitudes(gs[j]) * len(c) for gs, c in zip(groups, chunks)) / len(idx)
                        for j in range(len(groups[0]))]
                for c, gs in zip(chunks, groups):
                    states = [build_group_state(model, g, ref.species.diameter, res, ref.box, self.settings.whiten,
                                                self.settings.weights, amps[j]) for j, g in enumerate(gs)]
                    load = None
                    if self.stream:
                        load = functools.partial(_extract_fts, stack, torch.round(geo.positions[c]), ref.box,
                                                 big, sizes, model.pixel_size)
                        for st in states:
                            st.group = dataclasses.replace(st.group, ft=st.group.ft[:, :, :0])
                    own.append(Subset(name, h, ref.box, c, ref.volumes_ft[h - 1], states, load))
                    other.append(Subset(name, h, ref.box, c, ref.volumes_ft[2 - h], states, load))
        return own, other

    def sums(self, subsets: list[Subset], params: Parameters, ctf_frozen: bool) -> Sums:
        geo = particle_geometry(self.model, self.particles, params)
        return evaluate(self.model, subsets, geo, self.n_particles, ctf_frozen=ctf_frozen)

    def loss(self, subsets: list[Subset], params: Parameters, ctf_frozen: bool) -> torch.Tensor:
        """``-1000 · target`` plus the stage-angle prior; gradients added to the selected groups."""
        geo = particle_geometry(self.model, self.particles, params)
        target = backward_target(self.model, subsets, geo, self.n_particles, ctf_frozen=ctf_frozen, scale=1000.0,
                                 joint_mib=self.settings.graph_memory_mib)
        loss = -1000.0 * target
        if self.prior_weight and params.stage.requires_grad:
            prior = stage_prior(params.value("stage"), self.prior_weight, self.settings.stage_prior_deg)
            prior.backward()
            loss += float(prior.detach())
        return torch.tensor(loss, dtype=torch.float64, device=self.device)


def _on_device(ref: SpeciesReference, device: torch.device) -> SpeciesReference:
    """``ref`` with its volumes and symmetry operators on ``device`` (itself when they are there)."""
    if ref.volumes_ft[0].device == device and ref.symmetry.device == device:
        return ref
    return dataclasses.replace(ref, volumes_ft=[v.to(device=device) for v in ref.volumes_ft],
                               symmetry=ref.symmetry.to(device=device))


def _extract_fts(stack: torch.Tensor | PatchSource, centres: torch.Tensor, box: int, big: int, sizes: np.ndarray,
                 pixel_size: float) -> list[torch.Tensor]:
    """The patches of one streamed particle batch, re-extracted (same layout as at set-up)."""
    return [g.ft for g in extract_groups(stack, centres, box, big, sizes, pixel_size)]


def _lbfgs(ctx: _Context, subsets: list[Subset], params: Parameters, groups: list[str], ctf_frozen: bool) -> None:
    tensors = params.select(groups)
    if not tensors or ctx.settings.lbfgs_iterations == 0:
        return
    params.gauge = set(ctx.gauge) & set(groups)
    params.set_anchor()
    opt = torch.optim.LBFGS(tensors, lr=1.0, max_iter=ctx.settings.lbfgs_iterations, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-10, tolerance_change=1e-12)

    steps, label = ctx.settings.lbfgs_iterations, "L-BFGS " + ",".join(groups)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        report_stage(ctx.item, label, min(int(opt.state[tensors[0]].get("n_iter", 0)) + 1, steps), steps)
        return ctx.loss(subsets, params, ctf_frozen)

    opt.step(closure)
    params.select([])
    with torch.no_grad():  # fold the gauge into the values: later stages start from what was applied
        t, r = params.effective()
        params.translation.copy_(params.raw_for("translation", t))
        params.rotation.copy_(params.raw_for("rotation", r))
    params.gauge = set()


def _defocus_search(ctx: _Context, subsets: list[Subset], params: Parameters) -> None:
    """M's exhaustive defocus search: ±window in steps, then halved steps around the two best
    values, per particle (frames) or per tilt (tilts), scored by its own NCC. The window and
    step come from the schedule (what the refinement limit resolves)."""
    s, sched = ctx.settings, ctx.schedule
    frames = ctx.model.kind == "frames"
    with torch.no_grad():
        base = params.value("defocus").detach().clone()
    step = sched.defocus_step / DEFOCUS_UNIT
    r = sched.defocus_range / DEFOCUS_UNIT
    grid = torch.arange(-r, r + 1e-9, step, dtype=torch.float64, device=base.device)
    cands = grid[None].expand(len(base), -1)
    best_two = None
    for it in range(s.defocus_search_iterations):
        report_stage(ctx.item, "defocus search", it + 1, s.defocus_search_iterations)
        if it > 0:
            step /= 2
            offs = torch.tensor([-step, 0.0, step], dtype=torch.float64, device=base.device)
            cands = (best_two[:, :, None] + offs).reshape(len(base), -1).clamp(-r, r)
        scores = torch.empty_like(cands)
        with torch.no_grad():
            for j in range(cands.shape[1]):
                params.defocus.copy_(params.raw_for("defocus", base + cands[:, j]))
                sm = ctx.sums(subsets, params, ctf_frozen=False)
                dim = 1 if frames else 0
                c, a, b = sm.cross.sum(dim), sm.power_a.sum(dim), sm.power_b.sum(dim)
                scores[:, j] = c / torch.sqrt(a * b).clamp_min(1e-30)
        order = torch.argsort(scores, dim=1, descending=True)
        best_two = torch.gather(cands, 1, order[:, :2])
    with torch.no_grad():
        params.defocus.copy_(params.raw_for("defocus", base + best_two[:, 0]))


def _restore_groups(params: Parameters, before: Parameters, groups: list[str]) -> None:
    with torch.no_grad():
        mine, old = params.named(), before.named()
        for g in groups:
            mine[g].copy_(old[g])


def _accept(ctx: _Context, own: list[Subset], other: list[Subset], params: Parameters, before: Parameters,
            scores0: tuple[Sums, Sums], groups: list[str], ctf_frozen: bool, log: dict[str, Any]) -> None:
    """Keep a stage's update only where it improves: a particle's per-particle groups where its
    score rose against both half-maps, the shared groups where the target of each half-set
    (against its own half-map) rose; otherwise the values from before the stage."""
    own0, other0 = scores0
    per_particle = [g for g in groups if g in ctx.schedule.per_particle(ctx.model.kind)]
    shared = [g for g in groups if g not in per_particle]
    with torch.no_grad():
        rejected = torch.zeros(ctx.n_particles, dtype=torch.bool, device=ctx.device)
        if per_particle:
            own1, other1 = ctx.sums(own, params, ctf_frozen), ctx.sums(other, params, ctf_frozen)
            worse = (own1.particle_scores() < own0.particle_scores()) | (
                other1.particle_scores() < other0.particle_scores())
            rejected = worse & ctx.in_target(own)
            for g in per_particle:
                getattr(params, g)[rejected] = getattr(before, g)[rejected]
        log["particles_rejected"] = log.get("particles_rejected", 0) + int(rejected.sum())
        if not shared and not per_particle:
            return
        now = ctx.sums(own, params, ctf_frozen)
        halves = ctx.half_rows(own)
        worse_half = [h for h, rows in halves.items() if float(now.target(rows)) < float(own0.target(rows))]
        if worse_half and shared:
            _restore_groups(params, before, shared)
            log.setdefault("shared_rejected", []).append(",".join(shared))
            now = ctx.sums(own, params, ctf_frozen)
            worse_half = [h for h, rows in halves.items() if float(now.target(rows)) < float(own0.target(rows))]
        if worse_half:
            _restore_groups(params, before, groups)
            log.setdefault("stage_rejected", []).append(",".join(groups))


def _stage(ctx: _Context, own: list[Subset], other: list[Subset], params: Parameters, groups: list[str],
           ctf_frozen: bool, log: dict[str, Any], search: bool = False) -> None:
    if not groups:
        return
    before = params.detached()
    guard = ctx.settings.require_both_halves
    if guard:
        with torch.no_grad():
            scores0 = (ctx.sums(own, params, ctf_frozen), ctx.sums(other, params, ctf_frozen))
    if search:
        _defocus_search(ctx, own, params)
    _lbfgs(ctx, own, params, groups, ctf_frozen)
    if guard:
        _accept(ctx, own, other, params, before, scores0, groups, ctf_frozen, log)
    for sub in (*own, *other):
        sub.drop_padded()  # the model norm's |FT|² grids live for one stage


def _refine(ctx: _Context, params: Parameters) -> dict[str, Any]:
    s, sched = ctx.settings, ctx.schedule
    params.bounds = dict(sched.bounds)
    params.scales = dict(sched.scales)
    own, other = ctx.subset_pairs(params)
    ctf_own = [x for x in own if x.species in sched.ctf_species]
    ctf_other = [x for x in other if x.species in sched.ctf_species]
    with torch.no_grad():
        before = float(ctx.sums(own, params, ctf_frozen=False).target())
    ctx.prior_weight = stage_prior_weight(s, ctx.n_particles, abs(before), ctx.model.n) if "stage" in sched.geometry else 0.0
    log: dict[str, Any] = {}
    for rnd in range(s.rounds):
        for sub in own:
            for st in sub.groups:
                st.cached = None
        _stage(ctx, own, other, params, list(sched.geometry), True, log)
        if sched.ctf and ctf_own:
            search = "defocus" in sched.ctf and rnd == 0 and sched.defocus_range > 0
            _stage(ctx, ctf_own, ctf_other, params, list(sched.ctf) + list(sched.geometry), False, log, search)
    params.bake()
    if not s.allow_negative_defocus:
        log["negative_defocus_reset"] = _keep_defocus_positive(ctx, params)
    with torch.no_grad():
        after = float(ctx.sums(own, params, ctf_frozen=False).target())
    return {"target_before": before, "target_after": after, "schedule": {
        "geometry": list(sched.geometry), "ctf": list(sched.ctf), "ctf_species": list(sched.ctf_species),
        "defocus_window_A": sched.defocus_range, "skipped": sched.skipped}, "acceptance": log}


def _keep_defocus_positive(ctx: _Context, params: Parameters) -> int:
    """Undo defocus offsets that make any particle's defocus negative (per particle for frames,
    per tilt for tilts); returns how many were undone."""
    with torch.no_grad():
        geo = particle_geometry(ctx.model, ctx.particles, params)
        low = torch.minimum(geo.defocus_u, geo.defocus_v) < 0  # (P, n)
        if ctx.model.kind == "frames":
            bad = low.any(1)
            params.defocus[bad] = 0.0
        else:
            bad = low.any(0)
            params.defocus[bad] = 0.0
            params.astigmatism[bad] = 0.0
    return int(bad.sum())


def _spectra(ctx: _Context, params: Parameters) -> np.ndarray | None:
    subsets = ctx.subsets(params)
    if not subsets:
        return None
    with torch.no_grad():
        geo = particle_geometry(ctx.model, ctx.particles, params)
    spec = {k: v.cpu().numpy() for k, v in exposure_spectra(ctx.model, subsets, geo).items()}
    shells = {v.shape[-1] for v in spec.values()}
    if len(shells) != 1:
        largest = max(shells)
        spec = {k: np.pad(v, ((0, 0), (0, 0), (0, largest - v.shape[-1]))) for k, v in spec.items()}
    return nc_spectra(spec, {n: ctx.refs[n].fsc for n in spec})


def refine_item(task: ItemTask, references: SpeciesReferences | None = None) -> ItemResult:
    """Refine one item and back-project it (see module docstring); returns hashes and half-set sums."""
    t0 = time.perf_counter()
    settings = RefineSettings.parse(task.settings)
    torch.set_num_threads(settings.threads)
    keep_freed_memory()  # the target's temporaries reuse heap pages instead of fresh mmaps
    repo = Repository.open(task.repo_url)
    objects = repo.objects
    missing = set(task.species) - set(references or {})
    refs = dict(references or {})
    if missing:
        refs.update(load_references_from(objects, {n: task.species[n] for n in missing}, settings))
    ctx = _Context(task, settings, objects, refs)
    report_stage(ctx.item, "refine")
    model = ctx.model
    params = Parameters.zeros(model, ctx.particles, ctx.warp_grid, settings.volume_warp, settings.doming,
                              device=ctx.device)
    stats: dict[str, Any] = {"particles": ctx.n_particles, "refine_resolution": ctx.resolution}
    if ctx.warp_grid is not None and params.warp is not None:
        stats["image_warp_grid"] = list(params.warp.shape[1:])
    sched = ctx.schedule
    if sched is not None and sched.skipped.get("all"):
        stats["skipped"] = sched.skipped["all"]
    elif settings.refines_anything and ctx.n_particles and sched is not None and (sched.geometry or sched.ctf):
        stats.update(_refine(ctx, params))
    new_models = {k: v for k, v in updated_models(model, params).items()}
    if settings.tilt_movies and model.kind == "tilts" and ctx.n_particles and sched is not None \
            and not sched.skipped.get("all"):
        if ctx.item.tilt_movies is None:
            raise InvalidInput(f"--refine-tilt-movies: item {ctx.item.name!r} has no raw tilt movies in the population")
        new_models[TILT_MOVIE_SHIFTS], stats["tilt_movies"] = refine_tilt_movies(ctx, params, task.polarity)
    nc_hash = None
    if ctx.n_particles:
        nc = _spectra(ctx, params)
        if nc is not None:
            nc_hash = objects.put_array(nc)
            if settings.weights and settings.weights_scope == "item":  # "source": fitted by the driver
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
    report_stage(ctx.item, "back-projection")
    for name, ref in ctx.refs.items():
        sel, index, half = ctx.rows[name]
        res = ref.species.resolution or 2 * model.pixel_size
        res = max(2 * model.pixel_size, res / 1.25)
        sums[name] = backproject_species(model, ctx.stack, geo, index, half, ref.box, ref.species.diameter, res,
                                         ref.symmetry, pad=settings.reconstruction_pad,
                                         min_box_factor=settings.min_box_factor, use_weights=settings.weights)
        ids = ref.particles.ids[sel]
        idx = index.cpu().numpy()
        arrays = objects.put_arrays([ids, new_particles.coordinates[idx], new_particles.angles[idx]])
        particle_hashes[name] = objects.put_record(ITEM_PARTICLES_KIND, {
            "species": name, "item": ctx.item.key, "ids": array_ref(arrays[0]),
            "coordinates": array_ref(arrays[1]), "angles": array_ref(arrays[2])})
    models = dict(ctx.item.models)
    changed = new_models if settings.refines_anything or settings.weights else {}
    for k, v in changed.items():
        models[k] = objects.put_array(np.ascontiguousarray(v, dtype=np.float64))
    imaging = ctx.item.imaging
    if settings.optics_groups:  # refined optics -> the item's imaging (RELION keys) and phase_shift model
        imaging, phase = updated_optics(model, imaging, params.optics)
        if phase is not None:
            models["phase_shift"] = objects.put_array(np.ascontiguousarray(phase, dtype=np.float64))
        stats["optics"] = {k: imaging[k] for k in SHARED_OPTICS_KEYS if k in imaging}
    item = dataclasses.replace(ctx.item, models=models, imaging=imaging,
                               refined_with=tuple(sorted(task.species.values())))
    item_hash = item.save(objects)
    stats["seconds"] = time.perf_counter() - t0
    return ItemResult(task, item_hash, particle_hashes, sums, nc_hash, stats)
