"""Test populations built from the simulator (until ``mrepo import sim`` lands).

``frames_repo`` / ``tilts_repo`` simulate one item, store its MRC stack as a blob, and
commit a population with the simulator's *initial* parameters (what upstream delivers)
and the true maps as both half-maps. Ground truth stays on the returned object.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

from mrepo.graph import DataSource, Item, ParticleTable, Population, RawData, Repository, Species
from mrepo.io.mrc import write_mrc
from mrepo.sim import (
    FrameSeriesConfig,
    SimulatedFrameSeries,
    SimulatedTiltSeries,
    SpeciesSpec,
    TiltSeriesConfig,
    simulate_frame_series,
    simulate_tilt_series,
)


@dataclass
class SimRepo:
    repo: Repository
    sim: SimulatedFrameSeries | SimulatedTiltSeries
    item_key: str
    species: list[str]
    item_keys: list[str] = field(default_factory=list)


def mrc_bytes(stack: np.ndarray, pixel_size: float) -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "stack.mrc"
        write_mrc(path, stack, pixel_size)  # deterministic bytes: the raw-data hash is reproducible
        return path.read_bytes()


def small_species(box: int = 32, pixel: float = 2.0) -> tuple[SpeciesSpec, ...]:
    return (SpeciesSpec("alpha", round(box * pixel * 0.6, 1), "C1", 300, box),
            SpeciesSpec("beta", round(box * pixel * 0.55, 1), "C2", 300, box))


#: particle ids of the k-th simulated item are ``k * ID_STRIDE + simulator id`` (unique in a population)
ID_STRIDE = 1_000_000


def oracle_tilt_warp(sim: SimulatedTiltSeries, grid: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares spline fit of the simulator's per-tilt warps: image_warp nodes (2, grid, grid, n) Å
    and the global shifts (n, 2) Å that absorb the nodes' mean (removed by the refiner's warp)."""
    import torch

    from mrepo.kernels.splines import CubicSplineGrid

    t = sim.truth
    n, (w, h) = len(t.warps), t.image_size
    g = CubicSplineGrid((grid, grid, n))
    u = np.linspace(0.02, 0.98, 20)
    xy = np.stack(np.meshgrid(u * w, u * h, indexing="ij"), -1).reshape(-1, 2)
    rows, values = [], []
    for i, warp in enumerate(t.warps):
        tt = np.full((len(xy), 1), i / max(n - 1, 1))
        rows.append(g.weights(torch.from_numpy(np.concatenate([xy / [w, h], tt], 1))).numpy())
        values.append(warp(xy, 1.0))
    nodes = np.linalg.lstsq(np.concatenate(rows), np.concatenate(values), rcond=None)[0]  # (N, 2) px
    nodes = nodes.T.reshape(2, grid, grid, n)
    shifts = t.shifts_A + nodes.mean(axis=(1, 2)).T * t.optics.pixel_size
    return nodes * t.optics.pixel_size, shifts


def _stored_movies(repo: Repository, movies: np.ndarray, pixel_size: float) -> RawData:
    """Raw tilt movies (n, F, H, W) stored as one MRC blob per tilt and a manifest (as ``--copy`` imports)."""
    import json

    entries = []
    for movie in movies:
        data = mrc_bytes(movie, pixel_size)
        entries.append({"hash": repo.objects.put_blob(data), "size": len(data), "format": "mrc", "uri": None})
    manifest = json.dumps({"format": "mrepo-raw-manifest/1", "files": entries}, sort_keys=True).encode()
    return RawData(repo.objects.put_blob(manifest), len(manifest), "manifest", stored=True,
                   parts=tuple(dict.fromkeys(e["hash"] for e in entries)))


def _item_and_particles(repo: Repository, sim, truth: bool | str) -> tuple[Item, np.ndarray, np.ndarray, np.ndarray]:
    """Store ``sim``'s stack and models; return its item and particle coordinates, angles (N, T, 3)
    and species (N,): initial parameters, the truth (``True``: no warp/doming) or ``"oracle"``
    (frames: per-frame true trajectories incl. warp and doming; tilts: spline-fitted true warps)."""
    opt = sim.truth.optics
    ps = opt.pixel_size
    raw = mrc_bytes(sim.data, ps)
    h = repo.objects.put_blob(raw)
    t = sim.truth
    n = sim.data.shape[0]
    imaging = {"pixel_size": ps, "voltage": opt.voltage_kv, "cs": opt.cs_mm, "amplitude_contrast":
               opt.amplitude_contrast, "dimensions": [int(t.image_size[0]), int(t.image_size[1]), n],
               "exposure": t.dose.tolist()}
    src = t if truth else sim.initial
    put = repo.objects.put_array
    parts = t.particles if truth else sim.initial.particles
    if sim.kind == "frames":
        ctf = np.array([[src.defocus_u, src.defocus_v, src.astigmatism_deg]] * n, dtype=np.float64)
        models = {"ctf": put(ctf), "global_shifts": put(np.asarray(src.global_shifts_px, np.float64) * ps)}
        coords = parts.coordinates[:, :1].copy()
        if truth == "oracle":  # one trajectory node per frame: exact positions and heights, no shifts
            coords = parts.coordinates.copy()
            models["global_shifts"] = put(np.zeros((n, 2)))
        elif truth:  # reference positions: frame-0 positions and ice height
            coords[..., :2] -= np.asarray(t.global_shifts_px[0]) * ps
    else:
        imaging.update(tilt_angles=t.nominal_tilts.tolist(), acquisition_order=t.acquisition_order.tolist(),
                       volume_dimensions=t.volume_size_A.tolist(), hand=t.handedness)
        ctf = np.stack([src.defocus_u, src.defocus_v, src.astigmatism_deg], 1).astype(np.float64)
        stage = np.stack([src.xtilt, src.ytilt, src.zrot], 1).astype(np.float64)
        models = {"ctf": put(ctf), "global_shifts": put(np.asarray(src.shifts_A, np.float64)),
                  "stage_angles": put(stage)}
        coords = parts.coordinates
        if truth == "oracle":
            warp, shifts = oracle_tilt_warp(sim)
            models.update(image_warp=put(warp), global_shifts=put(shifts))
    item = Item(sim.kind, t.name, RawData(h, len(raw), stored=True), imaging, models,
                tilt_movies=_stored_movies(repo, sim.movies, ps) if getattr(sim, "movies", None) is not None else None)
    angles = np.repeat(parts.angles[:, :1], coords.shape[1], 1)
    return item, coords, angles, parts.species


def build_population(sims: list, *, truth: bool | str = False, resolution: float = 10.0, url: str | None = None,
                     species: list[int] | None = None) -> SimRepo:
    """Commit simulated items sharing one species set (same ``species_seed``) as a population.

    ``species`` limits which species indices enter the population (particles of the others stay
    in the images, unmodelled); ``SimRepo.sim`` is the first simulation."""
    url = url or f"memory://simrepo-{uuid.uuid4().hex}"  # unique even if imported twice
    repo = Repository.init(url)
    first = sims[0]
    keep = list(range(len(first.species))) if species is None else list(species)
    items, tables = {}, {k: [] for k in keep}
    for i, sim in enumerate(sims):
        if sim.truth.optics != first.truth.optics or [s.spec for s in sim.species] != [s.spec for s in first.species]:
            raise ValueError("all simulations of a population need the same optics and species")
        item, coords, angles, labels = _item_and_particles(repo, sim, truth)
        items[item.key] = item.save(repo.objects)
        parts = sim.truth.particles
        for k in keep:
            sel = labels == k
            tables[k].append((parts.ids[sel] + i * ID_STRIDE, [item.key] * int(sel.sum()), coords[sel], angles[sel],
                              parts.half_set[sel]))
    ps = first.truth.optics.pixel_size
    put = repo.objects.put_array
    names, sp_hashes = [], {}
    for k in keep:
        s = first.species[k]
        cols = list(zip(*tables[k]))
        table = ParticleTable.build(np.concatenate(cols[0]), sum(cols[1], []), np.concatenate(cols[2]),
                                    np.concatenate(cols[3]), np.concatenate(cols[4]))
        vol = put(s.map.astype(np.float32))
        sp = Species(s.spec.name, s.spec.diameter, s.atoms.symmetry, ps, s.spec.box, vol, vol,
                     put(s.mask.astype(np.float32)), table.save(repo.objects), resolution=resolution)
        sp_hashes[s.spec.name] = sp.save(repo.objects)
        names.append(s.spec.name)
    source = DataSource("sim", items, polarity="dark" if getattr(first.config, "contrast", "light") == "dark"
                        else "light")
    pop = Population("simpop", {"sim": source.save(repo.objects)}, sp_hashes)
    repo.commit(pop, message="simulated population", operation={"name": "import-sim"})
    return SimRepo(repo, first, next(iter(items)), names, list(items))


def build_repo(sim: SimulatedFrameSeries | SimulatedTiltSeries, *, truth: bool = False,
               resolution: float = 10.0, url: str | None = None) -> SimRepo:
    """Commit ``sim`` as a one-item population (initial parameters, or the truth if ``truth``)."""
    return build_population([sim], truth=truth, resolution=resolution, url=url)


def frames_sim(seed: int = 1, n_particles: int = 12, n_frames: int = 6, size: int = 160, box: int = 32,
               pixel: float = 2.0, snr: float = 0.5, **kw) -> SimulatedFrameSeries:
    """A small frame series; ``contrast`` defaults to "light" here (pass ``contrast="dark"`` for detector data)."""
    from mrepo.sim import Optics

    kw.setdefault("contrast", "light")
    cfg = FrameSeriesConfig(image_size=(size, size), n_frames=n_frames, optics=Optics(pixel_size=pixel),
                            species=small_species(box, pixel), box=box, n_particles=n_particles, snr=snr,
                            pad=2, **kw)
    return simulate_frame_series(cfg, seed)


def tilts_sim(seed: int = 1, n_particles: int = 10, size: int = 160, box: int = 32, pixel: float = 2.0,
              max_tilt: float = 30.0, tilt_step: float = 6.0, snr: float = 0.5, pad: int = 2,
              **kw) -> SimulatedTiltSeries:
    """A small tilt series; ``contrast`` defaults to "light" here (pass ``contrast="dark"`` for detector data).
    ``pad``: particles are rendered (CTF, damage) in boxes of ``pad × box``; 2 wraps the CTF-delocalised
    signal at high defocus and 5 Å around, which hides part of an injected B-factor (docs/ablation.md,
    "The fit on the regression coefficient"); 6 keeps it."""
    from mrepo.sim import Optics

    kw.setdefault("contrast", "light")
    cfg = TiltSeriesConfig(image_size=(size, size), volume_depth_px=64, optics=Optics(pixel_size=pixel),
                           species=small_species(box, pixel), box=box, n_particles=n_particles, max_tilt=max_tilt,
                           tilt_step=tilt_step, snr=snr, pad=pad, slab_thickness=60.0, **kw)
    return simulate_tilt_series(cfg, seed)
