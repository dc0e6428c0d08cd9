"""Export a population as an M population folder (layout: :mod:`mrepo.io.m_format`).

No Fourier layout is involved in this module.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

from ..graph import Item, ParticleTable, Repository, Species
from .export_relion import population_items
from .identity import M_ID_COLUMN
from .m_xml import M_PREFIX, SPECIES_SIDECAR_FORMAT, guid_for, write_params, write_xml
from .mrc import write_mrc
from .raw_access import exports_raw_data, raw_paths
from .relion_passthrough import PREFIX, columns_from_extra
from .star import write_star
from .warp_export import SIDECAR, item_warp_meta, write_item_xml

__all__ = ["export_m"]


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
    write_params(proot, {"Name": pop.name})
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
        write_params(root, {"GUID": guid, "Version": sh[:8], "DontVersion": "False", "PreviousVersion": "",
                       "Name": sname, "RelativeWeight": 1, "PixelSize": repr(float(first.get("pixel_size", 1.0))),
                       "DimensionsX": dims[0], "DimensionsY": dims[1], "DimensionsZ": dims[2], "FrameLimit": -1,
                       "DosePerAngstromFrame": repr(float((first.get("exposure") or [0.0])[0])),
                       "GainPath": "", "DefectsPath": ""})
        ET.SubElement(root, "UsedSpecies")
        files = ET.SubElement(root, "Files")
        for it in its:
            ET.SubElement(files, "File", Hash=m_hashes[it.key], Name=_file_name(repo, it))
        written.append(write_xml(root, out / f"{sname}.source"))
    for name, h in sorted(pop.species.items()):
        sp = repo.species(h)
        guid = guid_for(h)
        folder = out / "species" / f"{name}_{guid[:8]}"
        rel = f"species/{name}_{guid[:8]}/{name}.species"
        ET.SubElement(sp_el, "Species", GUID=guid, Path=rel)
        sroot = ET.Element("Species")
        write_params(sroot, {"GUID": guid, "Version": h[:8], "DontVersion": "False", "PreviousVersion": "",
                        "Name": name, "PixelSize": repr(float(sp.pixel_size)),
                        "DiameterAngstrom": _m_diameter(sp), "Symmetry": sp.symmetry,
                        "TemporalResolutionMovement": sp.temporal_samples,
                        "TemporalResolutionRotation": sp.temporal_samples,
                        # M refines up to GlobalResolution (Species.PrepareRefinementRequisites divides by it):
                        # a species without a measured resolution gets Nyquist, 2 x pixel size
                        "GlobalResolution": _m_resolution(sp)})
        ET.SubElement(sroot, "UsedDataSources")
        written.append(write_xml(sroot, out / rel))
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
    written.append(write_xml(proot, out / f"{pop.name}.population"))
    return written


def _m_diameter(sp: Species) -> int:
    return int(round(sp.diameter))  # M's DiameterAngstrom is an integer


def _m_resolution(sp: Species) -> str:
    return repr(float(sp.resolution or 2.0 * float(sp.pixel_size)))


def _write_species_sidecar(sp: Species, table: ParticleTable, path: Path) -> Path:
    """Species metadata, the extra particle columns (by particle id), and the exact diameter and resolution
    M's integer DiameterAngstrom and Nyquist default stand for, which M's files do not hold."""
    extra = {k: {"dtype": v.dtype.str, "values": v.tolist()} for k, v in sorted(table.extra.items())}
    body = {"format": SPECIES_SIDECAR_FORMAT, "metadata": sp.metadata, "ids": table.ids.tolist(), "extra": extra,
            "diameter": sp.diameter, "resolution": sp.resolution,
            "exported": {"DiameterAngstrom": str(_m_diameter(sp)), "GlobalResolution": _m_resolution(sp)}}
    path.write_text(json.dumps(body, sort_keys=True))
    return path
