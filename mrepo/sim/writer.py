"""Write a simulated frame or tilt series to a folder (MRC + JSON).

Folder layout::

    <out>/dataset.json             manifest: format, kind, seed, item, file paths, conventions
    <out>/<kind>/<item>.mrc        data stack (I, H, W) float32, voxel size = pixel size
                                   (kind "frames": frames in acquisition order;
                                    kind "tilts": tilts in ascending nominal angle)
    <out>/<kind>/<item>/<item>_<k>.mrc  instead, with ``one_file_per_image``: image k (1-based,
                                   stack order) as its own MRC file (as RELION 5 lists tilts)
    <out>/tilts/<item>_movies/<item>_<k>.mrc  with tilt movies: tilt k's movie (F, H, W) (the tilt
                                   image is the unaligned sum of its frames; dataset.json ``tilt_movies``)
    <out>/species/<name>/map.mrc   true map (box, box, box) float32, mass per voxel
    <out>/species/<name>/mask.mrc  soft spherical mask
    <out>/truth.json               ground truth (optics, species, item models, particles)
    <out>/initial.json             perturbed starting parameters (what upstream delivers)

``dataset.json`` and ``truth.json`` record the detector contrast (``"dark"``: particles dark on
``mean_counts``, expectation = mean_counts - signal_scale * rendered image; ``"light"``), see
:mod:`mrepo.sim.detector`.

JSON conventions: lengths Å, angles degrees (ZYZ poses, ``euler_to_matrix``
convention), defocus Å positive underfocus, exposure e-/Å^2, image positions
(x, y) px with pixel (0, 0) at the image corner, shifts as in the module
docstrings of :mod:`mrepo.sim.frames` and :mod:`mrepo.sim.tilts` (tilt
geometry = RELION 5 rlnTomoXTilt/YTilt/ZRot/X,YShiftAngst, rlnTomoSize in px).
No Fourier layout is involved in this module.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mrepo.io.mrc import write_mrc
from mrepo.sim.frames import SimulatedFrameSeries
from mrepo.sim.records import Particles
from mrepo.sim.render import ParticleImages
from mrepo.sim.tilts import SimulatedTiltSeries

__all__ = ["write_dataset", "truth_record", "initial_record"]

FORMAT = "mrepo-sim/1"
_INITIAL_NAMES = {
    "defocus_u": "defocus_u_A",
    "defocus_v": "defocus_v_A",
    "xtilt": "xtilt_deg",
    "ytilt": "ytilt_deg",
    "zrot": "zrot_deg",
}


def _write_mrc(path: Path, data: np.ndarray, pixel_size: float) -> None:
    write_mrc(path, data, pixel_size)  # deterministic bytes: same seed, same raw-data hash


def _particles(p: Particles, names: list[str], plan: ParticleImages | None) -> list[dict]:
    rows = p.to_json(names)
    if plan is not None:
        for k, row in enumerate(rows):
            row["image_positions_px"] = plan.positions_px[k].tolist()
            row["image_angles_deg"] = plan.angles_deg[k].tolist()
            row["image_defocus_u_A"] = plan.defocus_u[k].tolist()
            row["image_defocus_v_A"] = plan.defocus_v[k].tolist()
    return rows


def _species(sim: SimulatedFrameSeries | SimulatedTiltSeries) -> list[dict]:
    return [
        {
            "name": s.spec.name,
            "diameter_A": s.spec.diameter,
            "symmetry": s.atoms.symmetry,
            "pixel_size_A": s.pixel_size,
            "box": s.spec.box,
            "n_atoms": int(len(s.atoms.centres)),
            "atom_sigma_A": s.spec.atom_sigma,
            "shell": s.spec.shell,
            "map": f"species/{s.spec.name}/map.mrc",
            "mask": f"species/{s.spec.name}/mask.mrc",
        }
        for s in sim.species
    ]


def truth_record(sim: SimulatedFrameSeries | SimulatedTiltSeries) -> dict:
    """The complete ground truth as a JSON-able dict."""
    t = sim.truth
    names = [s.spec.name for s in sim.species]
    item: dict = {
        "name": t.name,
        "kind": sim.kind,
        "image_size_px": list(t.image_size),
        "n_images": int(len(t.dose)),
        "dose": t.dose.tolist(),
        "pre_exposure": t.pre_exposure.tolist(),
        "damage_exposure": (t.pre_exposure + t.dose / 2).tolist(),
        "bfactor_per_exposure_A2": 4.0,
        "noise_sigma": t.noise_sigma,
        "snr": sim.config.snr,
        "contrast": sim.config.contrast,
        "mean_counts": sim.config.mean_counts if sim.config.contrast == "dark" else 0.0,
        "signal_scale": t.signal_scale,
    }
    if isinstance(sim, SimulatedFrameSeries):
        item.update(
            defocus_u_A=t.defocus_u,
            defocus_v_A=t.defocus_v,
            astigmatism_deg=t.astigmatism_deg,
            global_shifts_px=t.global_shifts_px.tolist(),
            local_warp=t.warp.to_json(),
            doming={"amplitude_A": t.doming_A, "formula": "dz = A (1 - exp(-t/0.2)) (1 - r^2), r = |xy - centre| / half diagonal"},
            ice_z_A=t.ice_z_A.tolist(),
            acquisition_order=list(range(len(t.dose))),
        )
        if t.aberrations.active:  # injected optics: truth only, never in initial.json
            item["aberrations"] = t.aberrations.to_json()
    else:
        p = t.optics.pixel_size
        item.update(
            defocus_u_A=t.defocus_u.tolist(),
            defocus_v_A=t.defocus_v.tolist(),
            astigmatism_deg=t.astigmatism_deg.tolist(),
            nominal_tilt_deg=t.nominal_tilts.tolist(),
            acquisition_order=t.acquisition_order.tolist(),
            xtilt_deg=t.xtilt.tolist(),
            ytilt_deg=t.ytilt.tolist(),
            zrot_deg=t.zrot.tolist(),
            shifts_A=t.shifts_A.tolist(),
            volume_size_A=t.volume_size_A.tolist(),
            tomo_size_px=[int(round(v / p)) for v in t.volume_size_A],
            handedness=t.handedness,
            tilt_weight="cos(ytilt)",
            image_warps=[w.to_json() for w in t.warps],
        )
        if t.aberrations.active:  # injected optics: truth only
            item["aberrations"] = t.aberrations.to_json()
        if t.volume_deformation is not None:  # injected volume warp: truth only
            item["volume_deformation"] = t.volume_deformation.to_json()
        if t.tilt_movie_shifts_px is not None:  # injected per-frame motion in the tilt movies: truth only
            item["tilt_movie_shifts_px"] = t.tilt_movie_shifts_px.tolist()
    if t.damage is not None:  # injected damage model (replaces bfactor_per_exposure_A2): truth only
        item["damage"] = t.damage.to_json()
    return {
        "format": FORMAT,
        "optics": asdict(t.optics),
        "species": _species(sim),
        "items": [item],
        "particles": _particles(t.particles, names, t.plan),
    }


def initial_record(sim: SimulatedFrameSeries | SimulatedTiltSeries) -> dict:
    """The perturbed initial parameters as a JSON-able dict."""
    i = sim.initial
    names = [s.spec.name for s in sim.species]
    item: dict = {"name": sim.truth.name, "kind": sim.kind}
    for key, value in vars(i).items():
        if key == "particles":
            continue
        name = _INITIAL_NAMES.get(key, key)
        item[name] = value.tolist() if isinstance(value, np.ndarray) else value
    return {
        "format": FORMAT,
        "optics": asdict(sim.truth.optics),
        "perturbation": asdict(sim.config.perturbation),
        "items": [item],
        "particles": _particles(i.particles, names, None),
    }


def _dump(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, allow_nan=False) + "\n")


def write_dataset(sim: SimulatedFrameSeries | SimulatedTiltSeries, out_dir: str | Path, *,
                  one_file_per_image: bool = False) -> Path:
    """Write ``sim`` into ``out_dir`` (layout in the module docstring); returns the manifest path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pix = sim.truth.optics.pixel_size
    name = sim.truth.name
    entry: dict = {"name": name, "n_images": int(sim.data.shape[0])}
    if one_file_per_image:
        entry["images"] = [f"{sim.kind}/{name}/{name}_{k + 1:03d}.mrc" for k in range(sim.data.shape[0])]
        for path, image in zip(entry["images"], sim.data):
            _write_mrc(out / path, image, pix)
    else:
        entry["stack"] = f"{sim.kind}/{name}.mrc"
        _write_mrc(out / entry["stack"], sim.data, pix)
    if getattr(sim, "movies", None) is not None:  # one MRC movie (F, H, W) per tilt, stack order
        entry["tilt_movies"] = [f"{sim.kind}/{name}_movies/{name}_{k + 1:03d}.mrc" for k in range(len(sim.movies))]
        for path, movie in zip(entry["tilt_movies"], sim.movies):
            _write_mrc(out / path, movie, pix)
    for s in sim.species:
        _write_mrc(out / "species" / s.spec.name / "map.mrc", s.map, pix)
        _write_mrc(out / "species" / s.spec.name / "mask.mrc", s.mask, pix)
    _dump(out / "truth.json", truth_record(sim))
    _dump(out / "initial.json", initial_record(sim))
    manifest = {
        "format": FORMAT,
        "kind": sim.kind,
        "seed": sim.seed,
        "contrast": sim.config.contrast,
        "items": [entry],
        "species": [{"name": s.spec.name, "map": f"species/{s.spec.name}/map.mrc",
                     "mask": f"species/{s.spec.name}/mask.mrc"} for s in sim.species],
        "truth": "truth.json",
        "initial": "initial.json",
        "units": {"length": "A", "angle": "deg", "defocus": "A, positive underfocus", "exposure": "e-/A^2"},
    }
    path = out / "dataset.json"
    _dump(path, manifest)
    return path
