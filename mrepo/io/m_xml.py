"""M population XML helpers: Param lists, deterministic GUIDs, parsing with one-line errors.

M (warpem/warp WarpLib/Sociology, WarpBase.WriteToXML) stores settings as ``<Param Name=.. Value=../>``.
No Fourier layout is involved in this module.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from ..store import InvalidInput
from .warp_xml import write_xml, xml_root

__all__ = ["guid_for", "write_params", "write_xml", "parse_xml", "param", "param_or", "source_name", "M_PREFIX",
           "MAX_TEMPORAL_SAMPLES", "SPECIES_SIDECAR_FORMAT"]

MAX_TEMPORAL_SAMPLES = 100  # M uses a handful; the particle table holds N x T x 3 values
M_PREFIX = "m."  # ParticleTable.extra names of M particle columns mrepo does not model (Particle.Extra)
SPECIES_SIDECAR_FORMAT = "mrepo-m-species/1"


def guid_for(h: str) -> str:
    """A deterministic GUID for an mrepo object hash."""
    return str(uuid.UUID(hex=h[:32]))


def write_params(parent: ET.Element, params: dict[str, object]) -> None:
    for k, v in params.items():
        ET.SubElement(parent, "Param", Name=k, Value=str(v))


def parse_xml(path: Path, tag: str) -> ET.Element:
    root = xml_root(path, "M XML file")
    if root.tag != tag:
        raise InvalidInput(f"{path}: root element is <{root.tag}>, expected <{tag}>")
    return root


def param(root: ET.Element, name: str, path: Path) -> str:
    for p in root.findall("Param"):
        if p.get("Name") == name:
            return p.get("Value", "")
    raise InvalidInput(f"{path}: no <Param Name=\"{name}\">")


def param_or(root: ET.Element, name: str, default: str) -> str:
    for p in root.findall("Param"):
        if p.get("Name") == name:
            return p.get("Value", default)
    return default


def source_name(name: str) -> str:
    """A wrpSourceName as an item name: tilt series are ``<name>.tomostar``, movies keep their file name."""
    return name[: -len(".tomostar")] if name.endswith(".tomostar") else name
