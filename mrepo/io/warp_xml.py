"""Warp per-item XML metadata (frame and tilt series) and Warp settings files: read and write.

Formats read from warpem/warp's public sources (not guessed):

- ``WarpLib/Movie/Movie.cs`` ``LoadMeta``/``SaveMeta``: root ``<Movie>`` with attributes
  (DataDirectory, UnselectFilter, UnselectManual, CTFResolutionEstimate, MeanFrameMovement,
  MaskPercentage, Bfactor, Weight, MagnificationCorrection) and child elements ``<CTF>``,
  grids ``<GridCTF>`` (absolute defocus, µm), ``<GridCTFDefocusDelta>``, ``<GridCTFDefocusAngle>``,
  ``<GridCTFCs>``, ``<GridCTFPhase>`` (units of π), ``<GridCTFDoming>``, ``<GridMovementX/Y>``
  (Å; a particle at x sits at ``x - grid`` in frame f, ``GetPositionInAllFrames``),
  ``<GridLocalMovementX/Y>``, ``<PyramidShiftX/Y>``, ``<GridAngleX/Y/Z>``, dose/location
  weight grids, and options/PS1D elements.
- ``WarpLib/TiltSeries/TiltSeries.cs`` ``LoadMeta``/``SaveMeta``: root ``<TiltSeries>`` with
  attributes (… AreAnglesInverted, PlaneNormal, LevelAngleX/Y, ImageDimensionsAngstrom,
  VolumeDimensionsAngstrom ``"x,y,z"`` Å) and newline-separated per-tilt elements ``<Angles>``
  (deg), ``<Dose>`` (accumulated e⁻/Å²), ``<UseTilt>``, ``<AxisAngle>`` (deg), ``<AxisOffsetX/Y>``
  (Å), ``<MoviePath>``, ``<FOVFraction>``; per-tilt grids (1, 1, n): ``GetTiltDefocus`` etc. read
  ``FlatValues[t]`` (0 when the grid is shorter).
- ``WarpLib/CTF.cs`` (``WarpBase.WriteToXML``: ``<Param Name Value/>``): PixelSize (Å), Cs (mm),
  Voltage (kV), Amplitude, Defocus and DefocusDelta (µm, underfocus positive), DefocusAngle (deg),
  PhaseShift (π). RELION's DefocusU/V = (Defocus ± DefocusDelta / 2) · 10⁴ Å, as Warp's exporters
  (WarpTools ExportParticlesFrameseries.cs / ExportParticlesTiltseries.cs) write them.
- ``WarpLib/CubicGrid.cs`` ``Save``/``Load``: attributes Width, Height, Depth, MarginX/Y/Z and
  ``<Node X Y Z Value/>``; values flat in order ``(z * Height + y) * Width + x``.
- ``WarpLib/OptionsWarp.cs`` ``Save``/``Load``: ``<Settings>`` with sections Import (PixelSize,
  BinTimes, DosePerAngstromFrame, Extension, …), CTF (Voltage, Cs, Amplitude, …), Tomo, … as Params.

Values are kept as the strings Warp wrote, so writing them back reproduces them exactly.
No Fourier layout is involved in this module.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..store import InvalidInput

__all__ = ["WarpGrid", "WarpMeta", "read_warp_xml", "write_warp_xml", "read_settings", "PER_TILT"]

PER_TILT = ("Angles", "Dose", "UseTilt", "AxisAngle", "AxisOffsetX", "AxisOffsetY", "MoviePath", "FOVFraction")
_LOCATION_ATTRIBUTES = ("DataDirectory",)
_CTF_DECIMALS = ("PixelSize", "PixelSizeDeltaPercent", "PixelSizeAngle", "Cs", "Cc", "Voltage", "Defocus",
                 "DefocusDelta", "DefocusAngle", "Amplitude", "Bfactor", "BfactorDelta", "BfactorAngle", "Scale",
                 "PhaseShift", "Thickness")  # decimal properties of WarpLib/CTF.cs  # where the data lives, not what it is


@dataclass(frozen=True)
class WarpGrid:
    """A Warp CubicGrid: dims (Width, Height, Depth), margins, values (strings, flat z-y-x order); or an M
    LinearGrid4D (``GridVolumeWarpX/Y/Z``: dims (Width, Height, Depth, Duration), no margins, flat w-z-y-x)."""

    dims: tuple[int, ...]
    margins: tuple[str, str, str]
    values: tuple[str, ...]

    def array(self) -> np.ndarray:
        """Values as float64 (Depth, Height, Width)."""
        return np.asarray([float(v) for v in self.values], dtype=np.float64).reshape(self.dims[::-1])

    def flat(self) -> np.ndarray:
        return np.asarray([float(v) for v in self.values], dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        return {"dims": list(self.dims), "margins": list(self.margins), "values": list(self.values)}


@dataclass
class WarpMeta:
    """One Warp item XML: root tag, attributes, CTF params, grids (repeated tags: list) and per-tilt lists."""

    root: str
    attributes: dict[str, str] = field(default_factory=dict)
    ctf: dict[str, str] = field(default_factory=dict)
    grids: dict[str, list[WarpGrid]] = field(default_factory=dict)
    per_tilt: dict[str, list[str]] = field(default_factory=dict)
    data_directory: str = ""

    def ctf_value(self, name: str, default: float, path: Path | str) -> float:
        if name not in self.ctf:
            return default
        return _float(self.ctf[name], path, f"<CTF> Param {name}")

    def grid(self, name: str) -> WarpGrid | None:
        g = self.grids.get(name)
        return g[0] if g else None

    def to_json(self) -> dict[str, Any]:
        """JSON for Item.metadata (location attributes excluded)."""
        return {"root": self.root, "attributes": dict(sorted(self.attributes.items())),
                "ctf": dict(sorted(self.ctf.items())),
                "grids": {k: [g.to_json() for g in v] for k, v in sorted(self.grids.items())},
                "per_tilt": {k: list(v) for k, v in self.per_tilt.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WarpMeta:
        grids = {k: [WarpGrid(tuple(g["dims"]), tuple(g["margins"]), tuple(g["values"])) for g in v]
                 for k, v in d.get("grids", {}).items()}
        return cls(d["root"], dict(d.get("attributes", {})), dict(d.get("ctf", {})), grids,
                   {k: list(v) for k, v in d.get("per_tilt", {}).items()})


def _float(text: str, path: Path | str, where: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise InvalidInput(f"{path}: {where}: {text!r} is not a number") from None
    if not np.isfinite(v):
        raise InvalidInput(f"{path}: {where}: {text!r} is not finite")
    return v


def _int(text: str | None, path: Path, where: str) -> int:
    try:
        return int(text or "")
    except ValueError:
        raise InvalidInput(f"{path}: {where}: {text!r} is not an integer") from None


def xml_root(path: Path, what: str = "Warp XML") -> ET.Element:
    """The root element of an XML file; a missing or malformed file is an InvalidInput naming it."""
    if not Path(path).is_file():
        raise InvalidInput(f"{what} {path} does not exist or is not a file")
    try:
        return ET.parse(path).getroot()
    except (ET.ParseError, OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: malformed XML ({exc})") from None


_AXES = ("X", "Y", "Z", "W")


def _grid(el: ET.Element, path: Path) -> WarpGrid:
    """A Warp CubicGrid (``CubicGrid.Save``: Width, Height, Depth, MarginX/Y/Z; nodes X Y Z Value) or, for
    ``GridVolumeWarp*``, M's LinearGrid4D (``LinearGrid4D.Save``: Width, Height, Depth, Duration, no margins;
    nodes X Y Z W Value); values kept as written, flat with x fastest. The declared size is checked against
    the ``<Node>`` count before anything is allocated (a tiny file may declare a huge grid)."""
    tag = el.tag
    four = tag.startswith("GridVolumeWarp")
    names = ("Width", "Height", "Depth", "Duration") if four else ("Width", "Height", "Depth")
    dims = tuple(_int(el.get(a, "1"), path, f"<{tag}> attribute {a}") for a in names)
    if min(dims) < 1:
        raise InvalidInput(f"{path}: <{tag}> has dimensions {dims}, all must be >= 1")
    margins: tuple[str, ...] = () if four else tuple(el.get(a, "0") for a in ("MarginX", "MarginY", "MarginZ"))
    for a, m in zip(("MarginX", "MarginY", "MarginZ"), margins):
        _float(m, path, f"<{tag}> attribute {a}")
    axes, size = _AXES[: len(dims)], " x ".join(str(d) for d in dims)
    total = int(np.prod(dims))

    def node_of(i: int) -> tuple[int, ...]:
        out = []
        for d in dims:
            out.append(i % d)
            i //= d
        return tuple(out)

    nodes = el.findall("Node")
    if total > len(nodes):
        held = {tuple(node.get(a) for a in axes) for node in nodes}
        i = next(i for i in range(len(nodes) + 1) if tuple(str(v) for v in node_of(i)) not in held)
        raise InvalidInput(f"{path}: <{tag}> lacks node {node_of(i)}: it declares a {size} grid ({total} nodes) "
                           f"but holds {len(nodes)} <Node> elements")
    values: list[str | None] = [None] * total
    for node in nodes:
        at = tuple(_int(node.get(a), path, f"<{tag}> <Node> attribute {a}") for a in axes)
        if not all(0 <= v < d for v, d in zip(at, dims)):
            raise InvalidInput(f"{path}: <{tag}> node {at} outside its {size} grid")
        value = node.get("Value")
        _float(value or "", path, f"<{tag}> node {at} attribute Value")
        flat = 0
        for v, d in zip(reversed(at), reversed(dims)):
            flat = flat * d + v
        values[flat] = value
    if None in values:
        raise InvalidInput(f"{path}: <{tag}> lacks node {node_of(values.index(None))}")
    return WarpGrid(dims, margins, tuple(v for v in values if v is not None))  # type: ignore[arg-type]


def read_warp_xml(path: str | Path) -> WarpMeta:
    """Parse a Warp ``<Movie>`` or ``<TiltSeries>`` XML; every number is checked, errors name the element."""
    path = Path(path)
    root = xml_root(path)
    if root.tag not in ("Movie", "TiltSeries"):
        raise InvalidInput(f"{path}: root element is <{root.tag}>, expected <Movie> or <TiltSeries>")
    attrs = {k: v for k, v in root.attrib.items() if k not in _LOCATION_ATTRIBUTES}
    meta = WarpMeta(root.tag, attrs, data_directory=root.get("DataDirectory", ""))
    ctf = root.find("CTF")
    if ctf is not None:
        for p in ctf.findall("Param"):
            meta.ctf[p.get("Name", "")] = p.get("Value", "")
        for name in _CTF_DECIMALS:
            if name in meta.ctf:
                _float(meta.ctf[name], path, f"<CTF> Param {name}")
    for el in root:
        if el.find("Node") is not None or el.tag.startswith("Grid") or el.tag.startswith("PyramidShift"):
            meta.grids.setdefault(el.tag, []).append(_grid(el, path))
    if root.tag == "TiltSeries":
        for tag in PER_TILT:
            el = root.find(tag)
            if el is not None and el.text is not None:
                meta.per_tilt[tag] = [v.strip() for v in el.text.split("\n")]
        if "Angles" not in meta.per_tilt:
            raise InvalidInput(f"{path}: <TiltSeries> lacks <Angles>")
        n = len(meta.per_tilt["Angles"])
        for tag, vals in meta.per_tilt.items():
            if len(vals) != n:
                raise InvalidInput(f"{path}: <{tag}> has {len(vals)} values, <Angles> has {n}")
            if tag not in ("UseTilt", "MoviePath"):
                for i, v in enumerate(vals):
                    _float(v, path, f"<{tag}> line {i + 1}")
    return meta


def _write_grid(parent: ET.Element, tag: str, g: WarpGrid) -> None:
    """``g`` as ``CubicGrid.Save`` (3-D, margins) or ``LinearGrid4D.Save`` (4-D) write it, nodes x fastest."""
    names = ("Width", "Height", "Depth", "Duration")[: len(g.dims)]
    attrs = {n: str(d) for n, d in zip(names, g.dims)}
    attrs.update({a: m for a, m in zip(("MarginX", "MarginY", "MarginZ"), g.margins)})
    el = ET.SubElement(parent, tag, attrs)
    axes = _AXES[: len(g.dims)]
    for flat, index in enumerate(np.ndindex(*g.dims[::-1])):  # slowest axis first, so flat order is x fastest
        ET.SubElement(el, "Node", {**{a: str(v) for a, v in zip(axes, index[::-1])}, "Value": g.values[flat]})


def write_warp_xml(meta: WarpMeta, path: str | Path, *, data_directory: str = "") -> Path:
    """Write ``meta`` as Warp XML (the elements above; options and PS1D are not kept)."""
    path = Path(path)
    root = ET.Element(meta.root, {"DataDirectory": data_directory, **meta.attributes})
    for tag in PER_TILT:
        if tag in meta.per_tilt:
            ET.SubElement(root, tag).text = "\n".join(meta.per_tilt[tag])
    ctf = ET.SubElement(root, "CTF")
    for k, v in meta.ctf.items():
        ET.SubElement(ctf, "Param", Name=k, Value=v)
    for tag, grids in meta.grids.items():
        for g in grids:
            _write_grid(root, tag, g)
    return write_xml(root, path)


def write_xml(root: ET.Element, path: Path) -> Path:
    """``root`` as a tab-indented UTF-8 XML file with declaration, as Warp and M write theirs."""
    ET.indent(root, space="\t")
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def read_settings(path: str | Path) -> dict[str, dict[str, str]]:
    """A Warp settings file (``<Settings>``, OptionsWarp.Save): section -> {Param name: value}; root Params
    under ``""``."""
    path = Path(path)
    root = xml_root(path)
    if root.tag != "Settings":
        raise InvalidInput(f"{path}: root element is <{root.tag}>, expected <Settings>")
    out: dict[str, dict[str, str]] = {"": {p.get("Name", ""): p.get("Value", "") for p in root.findall("Param")}}
    for section in root:
        if section.tag != "Param":
            out[section.tag] = {p.get("Name", ""): p.get("Value", "") for p in section.findall("Param")}
    return out
