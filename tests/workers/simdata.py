"""Test populations built from the simulator (until ``mrepo import sim`` lands).

``frames_repo`` / ``tilts_repo`` simulate one item, store its MRC stack as a blob, and
commit a population with the simulator's *initial* parameters (what upstream delivers)
and the true maps as both half-maps. Ground truth stays on the returned object.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import mrcfile
import numpy as np

from mrepo.graph import DataSource, Item, ParticleTable, Population, RawData, Repository, Species
from mrepo.sim import (FrameSeriesConfig, SimulatedFrameSeries, SimulatedTiltSeries, SpeciesSpec, TiltSeriesConfig,
                       simulate_frame_series, simulate_tilt_series)

_counter = itertools.count()


@dataclass
class SimRepo:
    repo: Repository
    sim: SimulatedFrameSeries | SimulatedTiltSeries
    item_key: str
    species: list[str]


def mrc_bytes(stack: np.ndarray, pixel_size: float) -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "stack.mrc"
        with mrcfile.new(path) as m:
            m.set_data(np.ascontiguousarray(stack, dtype=np.float32))
            m.voxel_size = pixel_size
        return path.read_bytes()


def small_species(box: int = 32, pixel: float = 2.0) -> tuple[SpeciesSpec, ...]:
    return (SpeciesSpec("alpha", round(box * pixel * 0.6, 1), "C1", 300, box),
            SpeciesSpec("beta", round(box * pixel * 0.55, 1), "C2", 300, box))


def build_repo(sim: SimulatedFrameSeries | SimulatedTiltSeries, *, truth: bool = False,
               resolution: float = 10.0, url: str | None = None) -> SimRepo:
    """Commit ``sim`` as a one-item population (initial parameters, or the truth if ``truth``)."""
    url = url or f"memory://simrepo{next(_counter)}"
    repo = Repository.init(url)
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
    if sim.kind == "frames":
        ctf = np.array([[src.defocus_u, src.defocus_v, src.astigmatism_deg]] * n, dtype=np.float64)
        models = {"ctf": put(ctf), "global_shifts": put(np.asarray(src.global_shifts_px, np.float64) * ps)}
        parts = t.particles if truth else sim.initial.particles
        coords = parts.coordinates[:, :1].copy()
        if truth:  # reference positions: frame-0 positions and ice height
            coords = parts.coordinates[:, :1].copy()
            coords[..., :2] -= np.asarray(t.global_shifts_px[0]) * ps
        angles = parts.angles[:, :1]
    else:
        imaging.update(tilt_angles=t.nominal_tilts.tolist(), acquisition_order=t.acquisition_order.tolist(),
                       volume_dimensions=t.volume_size_A.tolist(), hand=t.handedness)
        ctf = np.stack([src.defocus_u, src.defocus_v, src.astigmatism_deg], 1).astype(np.float64)
        stage = np.stack([src.xtilt, src.ytilt, src.zrot], 1).astype(np.float64)
        models = {"ctf": put(ctf), "global_shifts": put(np.asarray(src.shifts_A, np.float64)),
                  "stage_angles": put(stage)}
        parts = t.particles if truth else sim.initial.particles
        coords, angles = parts.coordinates, parts.angles
    item = Item(sim.kind, t.name, RawData(h, len(raw), stored=True), imaging, models)
    names = []
    sp_hashes = {}
    for k, s in enumerate(sim.species):
        sel = parts.species == k
        table = ParticleTable.build(parts.ids[sel], [item.key] * int(sel.sum()), coords[sel], angles[sel],
                                    parts.half_set[sel])
        vol = put(s.map.astype(np.float32))
        sp = Species(s.spec.name, s.spec.diameter, s.atoms.symmetry, ps, s.spec.box, vol, vol,
                     put(s.mask.astype(np.float32)), table.save(repo.objects), resolution=resolution)
        sp_hashes[s.spec.name] = sp.save(repo.objects)
        names.append(s.spec.name)
    source = DataSource("sim", {item.key: item.save(repo.objects)})
    pop = Population("simpop", {"sim": source.save(repo.objects)}, sp_hashes)
    repo.commit(pop, message="simulated population", operation={"name": "import-sim"})
    return SimRepo(repo, sim, item.key, names)


def frames_sim(seed: int = 1, n_particles: int = 12, n_frames: int = 6, size: int = 160, box: int = 32,
               pixel: float = 2.0, snr: float = 0.5, **kw) -> SimulatedFrameSeries:
    from mrepo.sim import Optics

    cfg = FrameSeriesConfig(image_size=(size, size), n_frames=n_frames, optics=Optics(pixel_size=pixel),
                            species=small_species(box, pixel), box=box, n_particles=n_particles, snr=snr,
                            pad=2, **kw)
    return simulate_frame_series(cfg, seed)


def tilts_sim(seed: int = 1, n_particles: int = 10, size: int = 160, box: int = 32, pixel: float = 2.0,
              max_tilt: float = 30.0, tilt_step: float = 6.0, snr: float = 0.5, **kw) -> SimulatedTiltSeries:
    from mrepo.sim import Optics

    cfg = TiltSeriesConfig(image_size=(size, size), volume_depth_px=64, optics=Optics(pixel_size=pixel),
                           species=small_species(box, pixel), box=box, n_particles=n_particles, max_tilt=max_tilt,
                           tilt_step=tilt_step, snr=snr, pad=2, slab_thickness=60.0, **kw)
    return simulate_tilt_series(cfg, seed)
