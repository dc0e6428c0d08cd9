"""Import a simulator dataset folder (layout: :mod:`mrepo.sim.writer`) into a new commit.

Acquisition facts (optics, dose, pre-exposure, tilt scheme, volume size, hand) come
from ``truth.json``; the models and particles come from ``initial.json`` (what
upstream processing would deliver) or, with ``truth=True``, from ``truth.json``.
Frames: ctf (n, 3) repeats the series defocus; global_shifts (n, 2) Å = px * pixel.
Tilts: ctf (n, 3), stage_angles (n, 3) (xtilt, ytilt, zrot), global_shifts (n, 2) Å.
Each species gets the true map as both half-maps and the simulator's mask. Tilt series written with
tilt movies get them as ``Item.tilt_movies`` (a manifest of one movie per tilt); their per-frame
motion is never imported (truth only).
No Fourier layout is involved in this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..graph import DataSource, Item, Repository
from ..store import InvalidInput
from .contrast import PolarityChoice
from .relion_particles import ParticleRows
from .species_build import build_species, read_species_maps
from .staging import ImportResult, Staging, raw_data, raw_manifest
from .star import check_path

__all__ = ["import_sim"]


def _load(path: Path) -> dict[str, Any]:
    p = check_path(path, "simulator JSON file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{p}: not valid UTF-8 JSON ({exc})") from None
    if data.get("format") != "mrepo-sim/1":
        raise InvalidInput(f"{p}: format {data.get('format')!r} is not mrepo-sim/1")
    return data


def _get(d: dict, key: str, where: str) -> Any:
    if key not in d:
        raise InvalidInput(f"{where}: missing field {key!r}")
    return d[key]


def _raw(folder: Path, entry: dict, staging: Staging, copy: bool):
    """The stack file, or a manifest of one file per image (``images`` in dataset.json)."""
    if "images" in entry:
        return raw_manifest([folder / p for p in entry["images"]], copy=copy, staging=staging)
    return raw_data(folder / _get(entry, "stack", f"{folder}/dataset.json item {entry.get('name')!r}"), copy=copy,
                    staging=staging)


def _item(folder: Path, entry: dict, truth_item: dict, model: dict, optics: dict, staging: Staging,
          copy: bool) -> Item:
    where = f"{folder}/truth.json item {truth_item.get('name')!r}"
    kind = _get(truth_item, "kind", where)
    pix = float(_get(optics, "pixel_size", where))
    n = int(_get(truth_item, "n_images", where))
    w, h = _get(truth_item, "image_size_px", where)
    imaging: dict[str, Any] = {"pixel_size": pix, "voltage": float(optics["voltage_kv"]), "cs": float(optics["cs_mm"]),
                               "amplitude_contrast": float(optics["amplitude_contrast"]),
                               "dimensions": [int(w), int(h), n], "exposure": [float(v) for v in truth_item["dose"]],
                               "pre_exposure": [float(v) for v in truth_item["pre_exposure"]],
                               "acquisition_order": [int(v) for v in truth_item["acquisition_order"]]}
    put = staging.objects.put_array
    if kind == "frames":
        ctf = np.tile([float(model["defocus_u_A"]), float(model["defocus_v_A"]), float(model["astigmatism_deg"])],
                      (n, 1))
        models = {"ctf": put(ctf), "global_shifts": put(np.asarray(model["global_shifts_px"], np.float64) * pix)}
    elif kind == "tilts":
        imaging.update(tilt_angles=[float(v) for v in truth_item["nominal_tilt_deg"]],
                       volume_dimensions=[float(v) for v in truth_item["volume_size_A"]],
                       hand=float(truth_item["handedness"]))
        models = {"ctf": put(np.stack([model["defocus_u_A"], model["defocus_v_A"], model["astigmatism_deg"]], 1)
                             .astype(np.float64)),
                  "stage_angles": put(np.stack([model["xtilt_deg"], model["ytilt_deg"], model["zrot_deg"]], 1)
                                      .astype(np.float64)),
                  "global_shifts": put(np.asarray(model["shifts_A"], np.float64))}
    else:
        raise InvalidInput(f"{where}: unknown kind {kind!r}")
    movies = None
    if "tilt_movies" in entry:  # one MRC movie per tilt (raw tilt movies of the series)
        if kind != "tilts":
            raise InvalidInput(f"{where}: tilt_movies given for a {kind!r} item")
        movies = raw_manifest([folder / p for p in entry["tilt_movies"]], copy=copy, staging=staging)
    return Item(kind, truth_item["name"], _raw(folder, entry, staging, copy), imaging, models, tilt_movies=movies)


def import_sim(repo: Repository, folder: str | Path, *, truth: bool = False, source: str = "sim", copy: bool = False,
               population: str = "population", branch: str | None = None,
               contrast: str | None = None) -> ImportResult:
    """Import a simulated dataset (initial parameters, or the ground truth with ``truth``) in one commit.

    The source's polarity is ``contrast`` when given, else the dataset's recorded contrast
    (datasets written before it was recorded were light)."""
    folder = Path(folder)
    manifest = _load(folder / "dataset.json")
    truth_rec = _load(folder / "truth.json")
    params = truth_rec if truth else _load(folder / "initial.json")
    staging = Staging(repo)
    try:
        truth_items = {it["name"]: it for it in truth_rec["items"]}
        model_items = {it["name"]: it for it in params["items"]}
        items: dict[str, tuple[Item, str]] = {}
        for entry in manifest["items"]:
            name = entry["name"]
            if name not in truth_items or name not in model_items:
                raise InvalidInput(f"{folder}: item {name!r} of dataset.json is missing from truth/initial JSON")
            it = _item(folder, entry, truth_items[name], model_items[name], truth_rec["optics"], staging,
                       copy)
            items[name] = (it, it.save(staging.objects))
        ds = DataSource(source, {it.key: h for it, h in items.values()}, {"origin": "mrepo-sim"})
        recorded = PolarityChoice(contrast=contrast or manifest.get("contrast", "light"))
        species = {}
        for sp in truth_rec["species"]:
            rows = [p for p in params["particles"] if p["species"] == sp["name"]]
            unknown = [p["item"] for p in rows if p["item"] not in items]
            if unknown:
                raise InvalidInput(f"{folder}: particles of {sp['name']!r} name unknown item {unknown[0]!r}")
            pr = ParticleRows([items[p["item"]][0].key for p in rows],
                              np.array([p["coordinates_A"][0] for p in rows], np.float64).reshape(-1, 3),
                              np.array([p["angles_deg"][0] for p in rows], np.float64).reshape(-1, 3),
                              np.array([p["half_set"] for p in rows], np.int64), {},
                              [items[p["item"]][0] for p in rows], float(sp["pixel_size_A"]))
            maps = read_species_maps(folder / sp["map"], folder / sp["map"], folder / sp["mask"])
            used = {it.key for it in pr.items}
            species[sp["name"]] = build_species(
                staging.objects, name=sp["name"], maps=maps, rows=pr, diameter=float(sp["diameter_A"]),
                symmetry=sp["symmetry"], star_path=folder / "initial.json",
                contributors=sorted(h for it, h in items.values() if it.key in used),
                metadata={"sim_ids": [int(p["id"]) for p in rows]})
        op = {"name": "import-sim", "folder": str(folder), "truth": truth, "source": source, "copy": copy,
              "seed": manifest.get("seed")}
        return staging.commit(population_name=population, sources={source: ds}, species=species, operation=op,
                              branch=branch, polarity=recorded, message=f"Import simulated {manifest.get('kind')} "
                                                     f"({'truth' if truth else 'initial'}) as source {source!r}")
    finally:
        staging.close()
