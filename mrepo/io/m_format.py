"""M population folders (warpem/warp WarpLib/Sociology/Population.cs, DataSource.cs, Species.cs).

Layout written by :func:`export_m` (M's own layout)::

    <out>/<population>.population    <Population><Param Name=.. Value=../>
                                     <Species><Species GUID Path/></Species><Sources><Source GUID Path/></Sources>
    <out>/<source>.source            <DataSource> Params (GUID, Version, Name, PixelSize, DimensionsX/Y/Z,
                                     DosePerAngstromFrame, ...), UsedSpecies, <Files><File Hash Name/></Files>
    <out>/species/<name>_<guid8>/<name>.species       <Species> Params (GUID, Name, PixelSize,
                                     DiameterAngstrom, Symmetry, TemporalResolutionMovement/Rotation, ...)
    <out>/species/<name>_<guid8>/<name>_half1.mrc, _half2.mrc, _mask.mrc
    <out>/species/<name>_<guid8>/<name>_particles.star   wrpCoordinateX/Y/Z<t> (Å), wrpAngleRot/Tilt/Psi<t>
                                     (deg), wrpRandomSubset (1/2), wrpSourceName, wrpSourceHash, wrpMrepoParticleId
    <out>/species/<name>_<guid8>/<name>.mrepo.json  species metadata and extra particle columns by id

GUIDs are derived from the mrepo object hashes (deterministic). ``File Hash`` and ``wrpSourceHash``
hold M's OWN data hash of the item (:mod:`mrepo.io.m_hash`, ``Movie/TiltSeries.GetDataHash``),
computed at export from the files M will open: M refines a species' particles of an item only where
``wrpSourceHash`` equals that hash (``Species.GetParticles``). ``File Name`` is the item's raw file
name (tilt series: ``<name>.tomostar`` as M expects). ``wrpMrepoParticleId`` carries the particle ids
(M keeps extra particle columns). M's DiameterAngstrom is an integer: diameters are rounded. Next to the
.source, each item gets its Warp XML and, for tilt series, the files M opens, see
:mod:`mrepo.io.warp_export`. Before anything is written every item is checked for what M cannot
represent (:class:`~mrepo.io.warp_export.MCannotRepresent`).

:func:`import_m` reads a whole population: every .source (its ``<Files>`` and each item's Warp XML via
:func:`~mrepo.io.warp_import.warp_item`, plus an mrepo sidecar when present) and every species, in one
commit. :func:`import_m_species` reads the species of an M population folder and links particles to
items already in the repository. Particles link by wrpSourceHash (M's hash, through the .source
``<File Hash Name>`` list; or an mrepo item key), else by wrpSourceName (file name without extension or
``.tomostar`` = item name). Ids: wrpMrepoParticleId when present, else new (:mod:`mrepo.io.identity`).
No Fourier layout is involved in this module.
"""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..graph import DataSource, Item, ParticleTable, Population, Repository, Species
from ..store import InvalidInput
from .export_relion import population_items
from .identity import M_ID_COLUMN, import_context, read_id_column
from .mrc import write_mrc
from .raw_access import exports_raw_data, raw_paths
from .relion_particles import ParticleRows
from .relion_passthrough import PREFIX, columns_from_extra, particle_columns
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
from .star import integers, numeric, read_star, require_columns, strings, write_star
from .warp_export import SIDECAR, item_warp_meta, write_item_xml
from .warp_import import warp_item
from .warp_xml import read_warp_xml

__all__ = ["export_m", "import_m", "import_m_species", "guid_for", "M_PREFIX"]

MAX_TEMPORAL_SAMPLES = 100  # M uses a handful; the particle table holds N x T x 3 values
M_PREFIX = "m."  # ParticleTable.extra names of M particle columns mrepo does not model (Particle.Extra)


def guid_for(h: str) -> str:
    """A deterministic GUID for an mrepo object hash."""
    return str(uuid.UUID(hex=h[:32]))


def _params(parent: ET.Element, params: dict[str, object]) -> None:
    for k, v in params.items():
        ET.SubElement(parent, "Param", Name=k, Value=str(v))


def _write_xml(root: ET.Element, path: Path) -> Path:
    ET.indent(root, space="\t")
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def _file_name(repo: Repository, item: Item) -> str:
    return f"{item.name}.tomostar" if item.kind == "tilts" else raw_paths(repo, item)[0].name


@exports_raw_data
def export_m(repo: Repository, rev: str, out: str | Path) -> list[Path]:
    """Write the population at ``rev`` as an M population folder; returns written paths. Raw data held
    only in the repository is written under ``<out>/raw/`` (:func:`~mrepo.io.raw_access.exports_raw_data`)."""
    out = Path(out)
    commit = repo.resolve(rev)
    pop = repo.population(commit)
    items = population_items(repo, pop)
    written: list[Path] = []
    proot = ET.Element("Population")
    _params(proot, {"Name": pop.name})
    sp_el, src_el = ET.SubElement(proot, "Species"), ET.SubElement(proot, "Sources")
    m_hashes: dict[str, str] = {}
    for it in items.values():  # refuses what M cannot represent before anything else is written
        item_warp_meta(repo, it)
    for key, it in sorted(items.items()):
        files, m_hashes[key] = write_item_xml(repo, it, out)
        written += files
    for sname, sh in sorted(pop.sources.items()):
        src = repo.source(sh)
        its = [items[k] for k in sorted(src.items)]
        first = its[0].imaging if its else {}
        guid = guid_for(sh)
        ET.SubElement(src_el, "Source", GUID=guid, Path=f"{sname}.source")
        root = ET.Element("DataSource")
        pix = float(first.get("pixel_size", 1.0))
        # DataSource.DimensionsX/Y/Z are pixels at PixelSize (M shows "X x Y x Z px"; Tomo.DimensionsX/Y/Z)
        dims = ([int(round(v / pix)) for v in first["volume_dimensions"]] if first.get("volume_dimensions")
                else [int(v) for v in first.get("dimensions", [0, 0, 0])[:2]] + [0])
        _params(root, {"GUID": guid, "Version": sh[:8], "DontVersion": "False", "PreviousVersion": "",
                       "Name": sname, "RelativeWeight": 1, "PixelSize": repr(float(first.get("pixel_size", 1.0))),
                       "DimensionsX": dims[0], "DimensionsY": dims[1], "DimensionsZ": dims[2], "FrameLimit": -1,
                       "DosePerAngstromFrame": repr(float((first.get("exposure") or [0.0])[0])),
                       "GainPath": "", "DefectsPath": ""})
        ET.SubElement(root, "UsedSpecies")
        files = ET.SubElement(root, "Files")
        for it in its:
            ET.SubElement(files, "File", Hash=m_hashes[it.key], Name=_file_name(repo, it))
        written.append(_write_xml(root, out / f"{sname}.source"))
    for name, h in sorted(pop.species.items()):
        sp = repo.species(h)
        guid = guid_for(h)
        folder = out / "species" / f"{name}_{guid[:8]}"
        rel = f"species/{name}_{guid[:8]}/{name}.species"
        ET.SubElement(sp_el, "Species", GUID=guid, Path=rel)
        sroot = ET.Element("Species")
        _params(sroot, {"GUID": guid, "Version": h[:8], "DontVersion": "False", "PreviousVersion": "",
                        "Name": name, "PixelSize": repr(float(sp.pixel_size)),
                        "DiameterAngstrom": _m_diameter(sp), "Symmetry": sp.symmetry,
                        "TemporalResolutionMovement": sp.temporal_samples,
                        "TemporalResolutionRotation": sp.temporal_samples,
                        # M refines up to GlobalResolution (Species.PrepareRefinementRequisites divides by it):
                        # a species without a measured resolution gets Nyquist, 2 x pixel size
                        "GlobalResolution": _m_resolution(sp)})
        ET.SubElement(sroot, "UsedDataSources")
        written.append(_write_xml(sroot, out / rel))
        for suffix, ah in (("half1", sp.half1), ("half2", sp.half2), ("mask", sp.mask)):
            written.append(write_mrc(folder / f"{name}_{suffix}.mrc", repo.objects.get_array(ah), sp.pixel_size))
        table = repo.particles(sp.particles)
        names = np.array([items[k].name for k in table.item_keys().tolist()], dtype=object)
        order = np.lexsort((table.ids, names)) if len(table) else np.zeros(0, np.int64)  # ids of one import: file order
        keys = table.item_keys()[order].tolist()
        cols: dict[str, object] = {}
        for t in range(table.temporal_samples):
            for i, a in enumerate("XYZ"):
                cols[f"wrpCoordinate{a}{t + 1}"] = table.coordinates[order, t, i]
        for t in range(table.temporal_samples):
            for i, a in enumerate(("Rot", "Tilt", "Psi")):
                cols[f"wrpAngle{a}{t + 1}"] = table.angles[order, t, i]
        cols["wrpRandomSubset"] = table.half[order].astype(np.int64)
        cols["wrpSourceName"] = [_file_name(repo, items[k]) for k in keys]
        cols["wrpSourceHash"] = [m_hashes[k] for k in keys]
        cols[M_ID_COLUMN] = table.ids[order]
        m_extra = {PREFIX + k[len(M_PREFIX):]: v for k, v in table.extra.items() if k.startswith(M_PREFIX)}
        cols.update(columns_from_extra(m_extra, order))  # M's extra particle columns, back as they came
        written.append(write_star(folder / f"{name}_particles.star", {"": pd.DataFrame(cols)}))
        written.append(_write_species_sidecar(sp, table, folder / f"{name}{SIDECAR}"))
    written.append(_write_xml(proot, out / f"{pop.name}.population"))
    return written


def _m_diameter(sp: Species) -> int:
    return int(round(sp.diameter))  # M's DiameterAngstrom is an integer


def _m_resolution(sp: Species) -> str:
    return repr(float(sp.resolution or 2.0 * float(sp.pixel_size)))


def _write_species_sidecar(sp: Species, table: ParticleTable, path: Path) -> Path:
    """Species metadata, the extra particle columns (by particle id), and the exact diameter and resolution
    M's integer DiameterAngstrom and Nyquist default stand for, which M's files do not hold."""
    extra = {k: {"dtype": v.dtype.str, "values": v.tolist()} for k, v in sorted(table.extra.items())}
    body = {"format": "mrepo-m-species/1", "metadata": sp.metadata, "ids": table.ids.tolist(), "extra": extra,
            "diameter": sp.diameter, "resolution": sp.resolution,
            "exported": {"DiameterAngstrom": str(_m_diameter(sp)), "GlobalResolution": _m_resolution(sp)}}
    path.write_text(json.dumps(body, sort_keys=True))
    return path


def _read_species_sidecar(path: Path, rows: ParticleRows) -> dict:
    """The sidecar's body (``{}`` when absent); fills ``rows.extra`` when every particle id is in it."""
    if not path.is_file():
        return {}
    try:
        body = json.loads(path.read_text())
        if body.get("format") != "mrepo-m-species/1":
            raise ValueError("unknown format")
        where = {int(i): r for r, i in enumerate(body["ids"])}
        extra = {k: np.asarray(v["values"], dtype=np.dtype(v["dtype"])) for k, v in body["extra"].items()}
    except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: not an mrepo species sidecar ({exc})") from None
    if rows.ids is not None and all(int(i) in where for i in rows.ids):
        take = np.array([where[int(i)] for i in rows.ids], dtype=np.int64)
        rows.extra = {**{k: v[take] if len(v) else v for k, v in extra.items()}, **rows.extra}
    return body


def _restored(sroot: ET.Element, spath: Path, name: str, side: dict, value: float | None) -> float | None:
    """The sidecar's exact value when M still holds what mrepo exported for ``name``, else M's own."""
    m_value = _param_or(sroot, name, "")
    if side and side.get("exported", {}).get(name) == m_value:
        return side.get({"DiameterAngstrom": "diameter", "GlobalResolution": "resolution"}[name])
    return value


def _parse_xml(path: Path, tag: str) -> ET.Element:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: malformed XML ({exc})") from None
    if root.tag != tag:
        raise InvalidInput(f"{path}: root element is <{root.tag}>, expected <{tag}>")
    return root


def _param(root: ET.Element, name: str, path: Path) -> str:
    for p in root.findall("Param"):
        if p.get("Name") == name:
            return p.get("Value", "")
    raise InvalidInput(f"{path}: no <Param Name=\"{name}\">")


def _source_name(name: str) -> str:
    """A wrpSourceName as an item name: tilt series are ``<name>.tomostar``, movies keep their file name."""
    return name[: -len(".tomostar")] if name.endswith(".tomostar") else name


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
    resolved = [h if h in repo_items else m_keys.get(h) or _source_name(n) for h, n in zip(hashes, names)]
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
        sroot = _parse_xml(spath, "Species")
        name = _param(sroot, "Name", spath)
        if sroot.findall("Param") and _param(sroot, "GUID", spath) != el.get("GUID"):
            raise InvalidInput(f"{spath}: GUID does not match the one in {pfile}")
        try:
            diameter = float(_param(sroot, "DiameterAngstrom", spath))
            temporal = int(_param(sroot, "TemporalResolutionMovement", spath))
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
            m_resolution = float(_param_or(sroot, "GlobalResolution", "-1") or -1)
        except ValueError:
            raise InvalidInput(f"{spath}: Param GlobalResolution is not a number") from None
        resolution = _restored(sroot, spath, "GlobalResolution", side, m_resolution if m_resolution > 0 else None)
        diameter = _restored(sroot, spath, "DiameterAngstrom", side, diameter) or diameter
        used = {it.key for it in rows.items}
        contributors = sorted({h for e in index.values() for _, h, it in e if it.key in used})
        sp = build_species(staging.objects, name=name, maps=maps, rows=rows, diameter=diameter,
                           symmetry=_param(sroot, "Symmetry", spath), temporal_samples=1,
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
    sroot = _parse_xml(spath, "DataSource")
    name = _param(sroot, "Name", spath)
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
        settings = {"Import": {"DosePerAngstromFrame": _param_or(sroot, "DosePerAngstromFrame", "0")}}
        if meta.root == "TiltSeries" and not meta.attributes.get("VolumeDimensionsAngstrom"):
            # an older Warp XML: the volume is the source's DimensionsX/Y/Z (px) at its PixelSize, as M's options
            if _param_or(sroot, "PixelSize", ""):
                settings["Import"]["PixelSize"] = _param_or(sroot, "PixelSize", "")
            settings["Tomo"] = {f"Dimensions{a}": _param_or(sroot, f"Dimensions{a}", "") for a in "XYZ"}
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
    """``item`` with the nominal tilt angles, imaging fields and metadata an mrepo sidecar kept."""
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
    imaging = {**{k: v for k, v in body.get("imaging", {}).items() if k not in item.imaging}, **item.imaging}
    if "tilt_angles" in body.get("imaging", {}):
        imaging["tilt_angles"] = body["imaging"]["tilt_angles"]
    return replace(item, imaging=imaging, metadata={**body.get("metadata", {}), **item.metadata})


def _param_or(root: ET.Element, name: str, default: str) -> str:
    for p in root.findall("Param"):
        if p.get("Name") == name:
            return p.get("Value", default)
    return default


def import_m(repo: Repository, population_file: str | Path, *, copy: bool = False, ignore_unmatched: bool = False,
             branch: str | None = None, polarity: PolarityChoice | None = None) -> ImportResult:
    """An M population: its sources (.source + per-item Warp XML) and species, in one commit.

    Without ``<Sources>`` only the species are added and their items must already be in the repository."""
    pfile = Path(population_file)
    root = _parse_xml(pfile, "Population")
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
            raise InvalidInput(f"branch {branch or repo.default_branch!r} has no population yet: import data first")
        items = population_items(repo, pop) if pop is not None else {}
        index = item_index_by_name(repo, pop) if pop is not None else {}
        for sname, ds in sorted(sources.items()):
            for ih in ds.items.values():
                it = Item.load(staging.objects, ih)
                items[it.key] = it
                index.setdefault(name_key(it.name), []).append((sname, ih, it))
        new = _m_species(root, pfile, items, index, staging, ignore_unmatched, m_keys, repo, pop, repo.head(branch))
        op = {"name": "import-m", "population": str(pfile), "ignore_unmatched": ignore_unmatched, "copy": copy}
        pname = _param_or(root, "Name", "population") if pop is None else pop.name
        what = ", ".join([*sorted(sources), *sorted(new)])
        return staging.commit(population_name=pname, sources=sources, species=new, operation=op, branch=branch,
                              polarity=polarity,
                              message=f"Import M population {pfile.name} ({what})")
    finally:
        staging.close()


def _source_hashes(pfile: Path) -> dict[str, str]:
    """M data hash -> item name (``<File Hash Name>`` of the population's .source files that exist)."""
    out: dict[str, str] = {}
    for el in _parse_xml(pfile, "Population").findall("Sources/Source"):
        spath = pfile.parent / el.get("Path", "")
        if spath.is_file():
            for f in _parse_xml(spath, "DataSource").findall("Files/File"):
                out[f.get("Hash", "")] = _source_name(f.get("Name", ""))
    return out


def import_m_species(repo: Repository, population_file: str | Path, *, ignore_unmatched: bool = False,
                     branch: str | None = None) -> ImportResult:
    """Add every species of an M population folder to the branch's population (items must exist)."""
    pfile = Path(population_file)
    root = _parse_xml(pfile, "Population")
    pop = current_population(repo, branch)
    if pop is None:
        raise InvalidInput(f"branch {branch or repo.default_branch!r} has no population yet: import data first")
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
