"""Import an M population folder (layout: :mod:`mrepo.io.m_format`): sources, items and species.

No Fourier layout is involved in this module.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..graph import DataSource, Item, ParticleTable, Population, Repository, Species
from ..store import InvalidInput
from .branches import branch_population
from .export_relion import population_items
from .identity import M_ID_COLUMN, import_context, read_id_column
from .m_optics import OPTICS_KEYS, same_optics
from .m_xml import M_PREFIX, MAX_TEMPORAL_SAMPLES, SPECIES_SIDECAR_FORMAT, param, param_or, parse_xml, source_name
from .relion_particles import ParticleRows
from .relion_passthrough import PREFIX, particle_columns
from .species_build import build_species, read_species_maps, species_ids
from .staging import (
    ImportResult,
    PolarityChoice,
    Staging,
    current_population,
    item_index_by_name,
    match_items,
    name_key,
)
from .star import integers, numeric, read_star, require_columns, strings
from .warp_export import SIDECAR
from .warp_import import warp_item
from .warp_xml import read_warp_xml

__all__ = ["import_m", "import_m_species"]


def _read_species_sidecar(path: Path, rows: ParticleRows) -> dict:
    """The sidecar's body (``{}`` when absent); fills ``rows.extra`` when every particle id is in it."""
    if not path.is_file():
        return {}
    try:
        body = json.loads(path.read_text())
        if body.get("format") != SPECIES_SIDECAR_FORMAT:
            raise ValueError("unknown format")
        where = {int(i): r for r, i in enumerate(body["ids"])}
        extra = {k: np.asarray(v["values"], dtype=np.dtype(v["dtype"])) for k, v in body["extra"].items()}
    except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: not an mrepo species sidecar ({exc})") from None
    if rows.ids is not None and all(int(i) in where for i in rows.ids):
        take = np.array([where[int(i)] for i in rows.ids], dtype=np.int64)
        rows.extra = {**{k: v[take] if len(v) else v for k, v in extra.items()}, **rows.extra}
    return body


def _restored(sroot: ET.Element, name: str, side: dict, value: float | None) -> float | None:
    """The sidecar's exact value when M still holds what mrepo exported for ``name``, else M's own."""
    m_value = param_or(sroot, name, "")
    if side and side.get("exported", {}).get(name) == m_value:
        return side.get({"DiameterAngstrom": "diameter", "GlobalResolution": "resolution"}[name])
    return value


def _m_rows(star: Path, temporal: int, repo_items: dict[str, Item], index: dict, ignore_unmatched: bool,
            m_keys: dict[str, str]) -> tuple[ParticleRows, int]:
    """Particles of an M species; each links to an item by wrpSourceHash (M's data hash, through the
    .source ``<File Hash>`` list in ``m_keys``, or an mrepo item key), else by wrpSourceName."""
    blocks = read_star(star)
    df = next(iter(blocks.values()))
    bname = next(iter(blocks))
    require_columns(df, ["wrpCoordinateX1", "wrpCoordinateY1", "wrpAngleRot1", "wrpAngleTilt1", "wrpAnglePsi1",
                         "wrpRandomSubset", "wrpSourceHash", "wrpSourceName"], star, bname)
    samples = 1
    while f"wrpCoordinateX{samples + 1}" in df.columns:
        samples += 1
    hashes = strings(df, "wrpSourceHash", star, bname)
    names = strings(df, "wrpSourceName", star, bname)
    resolved = [h if h in repo_items else m_keys.get(h) or source_name(n) for h, n in zip(hashes, names)]
    by_key = {k: [("", "", it)] for k, it in repo_items.items()}
    keep, matched = match_items(resolved, {**index, **by_key}, where=str(star), ignore_unmatched=ignore_unmatched)
    coords = np.stack([np.stack([numeric(df, f"wrpCoordinate{a}{t + 1}", star, bname) if
                                 f"wrpCoordinate{a}{t + 1}" in df.columns else np.zeros(len(df))
                                 for a in "XYZ"], 1) for t in range(samples)], 1)
    angles = np.stack([np.stack([numeric(df, f"wrpAngle{a}{min(t, samples - 1) + 1}", star, bname)
                                 for a in ("Rot", "Tilt", "Psi")], 1) for t in range(samples)], 1)
    half = integers(df, "wrpRandomSubset", star, bname)
    ids = read_id_column(df, star, bname, M_ID_COLUMN)
    reserved = {c for c in df.columns if c.startswith(("wrpCoordinate", "wrpAngle"))}
    reserved |= {"wrpRandomSubset", "wrpSourceName", "wrpSourceHash", M_ID_COLUMN}
    extra = {M_PREFIX + k[len(PREFIX):]: v[keep] for k, v in particle_columns(df, reserved).items()}
    kept = [it for it, k in zip(matched, keep) if k]
    rows = ParticleRows([it.key for it in kept], coords[keep][:, 0], angles[keep][:, 0], half[keep], extra, kept,
                        coordinates_t=coords[keep], angles_t=angles[keep])
    rows.ids = None if ids is None else ids[keep]
    return rows, samples


def _m_species(root: ET.Element, pfile: Path, items: dict[str, Item], index: dict, staging: Staging,
               ignore_unmatched: bool, m_keys: dict[str, str], repo: Repository, pop: Population | None,
               parent: str | None) -> dict[str, Species]:
    """Every species listed by a .population, built into ``staging`` (particles linked to ``items``).

    Ids come from the M_ID_COLUMN (``wrpMrepoParticleId``) when present, else are new for this import."""
    new: dict[str, Species] = {}
    for el in root.findall("Species/Species"):
        spath = pfile.parent / el.get("Path", "")
        sroot = parse_xml(spath, "Species")
        name = param(sroot, "Name", spath)
        if sroot.findall("Param") and param(sroot, "GUID", spath) != el.get("GUID"):
            raise InvalidInput(f"{spath}: GUID does not match the one in {pfile}")
        try:
            diameter = float(param(sroot, "DiameterAngstrom", spath))
            temporal = int(param(sroot, "TemporalResolutionMovement", spath))
        except ValueError as exc:
            raise InvalidInput(f"{spath}: bad numeric parameter ({exc})") from None
        if not 1 <= temporal <= MAX_TEMPORAL_SAMPLES:
            raise InvalidInput(f"{spath}: Param TemporalResolutionMovement is {temporal}, expected 1 to "
                               f"{MAX_TEMPORAL_SAMPLES}")
        folder = spath.parent
        maps = read_species_maps(folder / f"{name}_half1.mrc", folder / f"{name}_half2.mrc",
                                 folder / f"{name}_mask.mrc")
        star = folder / f"{name}_particles.star"
        rows, samples = _m_rows(star, temporal, items, index, ignore_unmatched, m_keys)
        side = _read_species_sidecar(folder / f"{name}{SIDECAR}", rows)
        metadata = dict(side.get("metadata", {}))
        try:
            m_resolution = float(param_or(sroot, "GlobalResolution", "-1") or -1)
        except ValueError:
            raise InvalidInput(f"{spath}: Param GlobalResolution is not a number") from None
        resolution = _restored(sroot, "GlobalResolution", side, m_resolution if m_resolution > 0 else None)
        diameter = _restored(sroot, "DiameterAngstrom", side, diameter) or diameter
        used = {it.key for it in rows.items}
        contributors = sorted({h for e in index.values() for _, h, it in e if it.key in used})
        sp = build_species(staging.objects, name=name, maps=maps, rows=rows, diameter=diameter,
                           symmetry=param(sroot, "Symmetry", spath), temporal_samples=1,
                           star_path=star, contributors=contributors, metadata=metadata,
                           id_context=import_context(repo, pop, parent, star))
        if samples > 1 or temporal > 1:
            t = max(samples, temporal)
            assert rows.coordinates_t is not None and rows.angles_t is not None
            c = np.repeat(rows.coordinates_t, t // samples, axis=1) if samples < t else rows.coordinates_t
            a = np.repeat(rows.angles_t, t // samples, axis=1) if samples < t else rows.angles_t
            ids = ParticleTable.load(staging.objects, sp.particles).ids  # sorted; rows sorted alike below
            order = np.argsort(species_ids(name, rows, star, import_context(repo, pop, parent, star)), kind="stable")
            keys = np.asarray(rows.item_keys, dtype=object)[order].tolist()
            table = ParticleTable.build(ids, keys, c[order], a[order], rows.half[order],
                                        {k: v[order] for k, v in rows.extra.items()})
            sp = sp.evolve(particles=table.save(staging.objects), temporal_samples=t)
        new[name] = sp.evolve(resolution=resolution) if resolution is not None else sp
    return new


def _m_source(spath: Path, staging: Staging, copy: bool, m_keys: dict[str, str]) -> DataSource:
    """A .source file (DataSource.cs ``Load``) and its items' Warp XML (``<folder>/<RootName>.xml``);
    records M's data hash of each item (``<File Hash>``) -> item key in ``m_keys``. An item sidecar
    ``<name>.mrepo.json`` written by mrepo's M export restores what M does not hold when its raw hash
    matches (:func:`~mrepo.io.warp_export.write_item_xml`)."""
    sroot = parse_xml(spath, "DataSource")
    name = param(sroot, "Name", spath)
    files = sroot.findall("Files/File")
    if not files:
        raise InvalidInput(f"{spath}: <Files> lists no items")
    items: list[Item] = []
    for f in files:
        fname = f.get("Name", "")
        if not fname:
            raise InvalidInput(f"{spath}: <File Hash={f.get('Hash')!r}> has no Name")
        stem = name_key(fname) if not fname.endswith(".tomostar") else fname[: -len(".tomostar")]
        xml = spath.parent / f"{stem}.xml"
        meta = read_warp_xml(xml)
        movie = None
        if meta.root == "Movie":
            base = spath.parent / meta.data_directory if meta.data_directory else spath.parent
            movie = base / fname
            if not movie.is_file():
                raise InvalidInput(f"{spath}: item {fname!r}: raw movie {movie} does not exist")
        settings = {"Import": {"DosePerAngstromFrame": param_or(sroot, "DosePerAngstromFrame", "0")}}
        if meta.root == "TiltSeries" and not meta.attributes.get("VolumeDimensionsAngstrom"):
            # an older Warp XML: the volume is the source's DimensionsX/Y/Z (px) at its PixelSize, as M's options
            if param_or(sroot, "PixelSize", ""):
                settings["Import"]["PixelSize"] = param_or(sroot, "PixelSize", "")
            settings["Tomo"] = {f"Dimensions{a}": param_or(sroot, f"Dimensions{a}", "") for a in "XYZ"}
            settings["Tomo"] = {k: v for k, v in settings["Tomo"].items() if v}
        item = warp_item(xml, staging, movie=movie, copy=copy, name=stem, settings=settings)
        item = _with_sidecar(item, spath.parent / f"{stem}{SIDECAR}")
        m_keys[f.get("Hash", "")] = item.key
        items.append(item)
    ds = DataSource(name, {it.key: it.save(staging.objects) for it in items}, {"origin": "m"})
    if len(ds.items) != len(items):
        raise InvalidInput(f"{spath}: two items have identical raw data")
    return ds


def _with_sidecar(item: Item, path: Path) -> Item:
    """``item`` with the nominal tilt angles, imaging fields and metadata an mrepo sidecar kept. Optics
    (:data:`~mrepo.io.m_optics.OPTICS_KEYS`) are M's unless M still holds what the sidecar's imply."""
    if not path.is_file():
        return item
    try:
        body = json.loads(path.read_text())
        if body.get("format") != "mrepo-m-sidecar/1":
            raise ValueError("unknown format")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: not an mrepo sidecar ({exc})") from None
    if body.get("raw_hash") != item.key:
        return item  # the raw data changed: the sidecar describes another item
    side = body.get("imaging", {})
    imaging = {**{k: v for k, v in side.items() if k not in item.imaging and k not in OPTICS_KEYS}, **item.imaging}
    if "cs" in side and "voltage" in side and same_optics(item.imaging, side):
        # M still holds the optics mrepo wrote: restore mrepo's exact values and form (beam tilt apart)
        imaging = {**{k: v for k, v in imaging.items() if k not in OPTICS_KEYS},
                   **{k: v for k, v in side.items() if k in OPTICS_KEYS}}
    if "tilt_angles" in body.get("imaging", {}):
        imaging["tilt_angles"] = body["imaging"]["tilt_angles"]
    return replace(item, imaging=imaging, metadata={**body.get("metadata", {}), **item.metadata})


def import_m(repo: Repository, population_file: str | Path, *, copy: bool = False, ignore_unmatched: bool = False,
             branch: str | None = None, polarity: PolarityChoice | None = None) -> ImportResult:
    """An M population: its sources (.source + per-item Warp XML) and species, in one commit.

    Without ``<Sources>`` only the species are added and their items must already be in the repository."""
    pfile = Path(population_file)
    root = parse_xml(pfile, "Population")
    pop = current_population(repo, branch)
    staging = Staging(repo)
    try:
        sources: dict[str, DataSource] = {}
        m_keys: dict[str, str] = {}
        for el in root.findall("Sources/Source"):
            ds = _m_source(pfile.parent / el.get("Path", ""), staging, copy, m_keys)
            if ds.name in sources:
                raise InvalidInput(f"{pfile}: two sources are named {ds.name!r}")
            sources[ds.name] = ds
        if pop is None and not sources:
            branch_population(repo, branch)  # no population and nothing to make one: refused, naming the branches
        items = population_items(repo, pop) if pop is not None else {}
        index = item_index_by_name(repo, pop) if pop is not None else {}
        for sname, ds in sorted(sources.items()):
            for ih in ds.items.values():
                it = Item.load(staging.objects, ih)
                items[it.key] = it
                index.setdefault(name_key(it.name), []).append((sname, ih, it))
        new = _m_species(root, pfile, items, index, staging, ignore_unmatched, m_keys, repo, pop, repo.head(branch))
        op = {"name": "import-m", "population": str(pfile), "ignore_unmatched": ignore_unmatched, "copy": copy}
        pname = param_or(root, "Name", "population") if pop is None else pop.name
        what = ", ".join([*sorted(sources), *sorted(new)])
        return staging.commit(population_name=pname, sources=sources, species=new, operation=op, branch=branch,
                              polarity=polarity,
                              message=f"Import M population {pfile.name} ({what})")
    finally:
        staging.close()


def _source_hashes(pfile: Path) -> dict[str, str]:
    """M data hash -> item name (``<File Hash Name>`` of the population's .source files that exist)."""
    out: dict[str, str] = {}
    for el in parse_xml(pfile, "Population").findall("Sources/Source"):
        spath = pfile.parent / el.get("Path", "")
        if spath.is_file():
            for f in parse_xml(spath, "DataSource").findall("Files/File"):
                out[f.get("Hash", "")] = source_name(f.get("Name", ""))
    return out


def import_m_species(repo: Repository, population_file: str | Path, *, ignore_unmatched: bool = False,
                     branch: str | None = None) -> ImportResult:
    """Add every species of an M population folder to the branch's population (items must exist)."""
    pfile = Path(population_file)
    root = parse_xml(pfile, "Population")
    pop, _ = branch_population(repo, branch)
    items = population_items(repo, pop)
    index = item_index_by_name(repo, pop)
    staging = Staging(repo)
    try:
        new = _m_species(root, pfile, items, index, staging, ignore_unmatched, _source_hashes(pfile), repo, pop,
                         repo.head(branch))
        op = {"name": "import-m", "population": str(pfile), "ignore_unmatched": ignore_unmatched}
        return staging.commit(population_name=pop.name, species=new, operation=op, branch=branch,
                              message=f"Import M species {', '.join(sorted(new))} from {pfile.name}")
    finally:
        staging.close()
