"""The population model: Item, DataSource, ParticleTable, Species, Population, Commit.

Each class is an immutable value that serialises to one record (canonical JSON)
whose references to other objects are ``{"@record"|"@array"|"@blob": hash}``,
so a record's hash covers everything it reaches. ``save(objects) -> hash`` stores
a value (children first), ``load(objects, hash)`` reads it back.

Units and layouts (DESIGN.md): lengths in Å, angles in degrees, defocus in Å
(positive underfocus), exposure in e⁻/Å². Particle coordinates are (N, T, 3) in Å
in the item's frame (x, y, z; z is height for frame series), Euler angles
(N, T, 3) RELION ZYZ (rot, tilt, psi) in degrees; T = temporal samples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from ..store import InvalidInput, ObjectStore, array_ref, blob_ref, check_hash, deref, record_ref

ItemKind = Literal["frames", "tilts"]
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+@-]{0,199}$")
_SYMMETRY = re.compile(r"^(C[1-9][0-9]*|D[1-9][0-9]*|T|O|I[1-5]?)$")


def check_object_name(name: object, what: str) -> str:
    """Names of species, sources and populations: letters, digits and ``._+@-``, no ``/``."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise InvalidInput(f"invalid {what} name {name!r}: use letters, digits and ._+@- (no '/', no '..')")
    return name


#: largest n of C<n> / D<n>: larger groups have no macromolecule and would expand to n (2n) operators
MAX_SYMMETRY_ORDER = 1000
#: largest species diameter (Å): 1 µm is beyond any particle a tilt series resolves
MAX_DIAMETER = 10000.0


def check_symmetry(symbol: object) -> str:
    """Point-group symbols C<n>, D<n> (n <= MAX_SYMMETRY_ORDER), T, O, I (I1-I5 orientations)."""
    if not isinstance(symbol, str) or not _SYMMETRY.match(symbol.upper()):
        raise InvalidInput(f"unknown symmetry {symbol!r}: use C<n>, D<n>, T, O or I")
    if symbol.upper()[0] in "CD" and int(symbol[1:]) > MAX_SYMMETRY_ORDER:
        raise InvalidInput(f"symmetry {symbol!r}: order {int(symbol[1:])} is larger than {MAX_SYMMETRY_ORDER}")
    return symbol.upper()


def check_diameter(value: object, what: str) -> float:
    """A species diameter in Å: positive, finite, at most MAX_DIAMETER."""
    v = _positive(value, what)  # type: ignore[arg-type]
    if v > MAX_DIAMETER:
        raise InvalidInput(f"{what} {value!r} Å is larger than {MAX_DIAMETER:g} Å")
    return v


def _positive(value: float, what: str) -> float:
    v = float(value)
    if not np.isfinite(v) or v <= 0:
        raise InvalidInput(f"{what} must be a positive number, got {value!r}")
    return v


# ----------------------------------------------------------------------------- Item


@dataclass(frozen=True)
class RawData:
    """A field of view's raw data: its whole-file blob hash (identity), size, where it lives.

    ``stored`` is True when the bytes are a blob in the repository (``--copy``);
    otherwise ``uri`` points at the file in place and readers verify the hash.
    ``parts``: for a ``manifest`` whose files were copied, the blob hashes of those files, so
    they are referenced (kept by ``gc``, copied by clone and push) like a stored stack.
    """

    hash: str
    size: int
    format: str = "mrc"
    uri: str | None = None
    stored: bool = False
    parts: tuple[str, ...] = ()

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"hash": check_hash(self.hash, "raw data hash"), "size": int(self.size),
                                "format": self.format, "uri": self.uri}
        if self.stored:
            body["blob"] = blob_ref(self.hash)
        if self.parts:
            body["parts"] = [blob_ref(h) for h in self.parts]
        return body

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> RawData:
        return cls(body["hash"], int(body["size"]), body.get("format", "mrc"), body.get("uri"), "blob" in body,
                   tuple(deref(p, "blob") for p in body.get("parts", [])))


@dataclass(frozen=True)
class Item:
    """One field of view (frame series or tilt series) and its refined models.

    ``imaging``: pixel_size (Å), voltage (kV), cs (mm), amplitude_contrast,
    dimensions (px, x y [z]), exposure (e⁻/Å² per frame or tilt, list), and for
    tilts tilt_angles (degrees), acquisition_order, volume_dimensions (Å).
    ``models``: name -> array hash (global_shifts (n, 2) Å, warp grids, defocus...).
    ``refined_with``: hashes of the species versions used to refine it.
    ``tilt_movies`` (tilt series only, optional): the raw tilt movies, a ``manifest`` of one MRC
    movie (frames, y, x) per tilt in stack order, as Warp keeps them; the frames' alignment is the
    item model ``tilt_movie_shifts``. Written to the record only when present, so items without
    movies keep their hashes.
    """

    kind: ItemKind
    name: str
    raw: RawData
    imaging: dict[str, Any] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    refined_with: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    tilt_movies: RawData | None = None

    KIND = "item"

    def to_body(self) -> dict[str, Any]:
        if self.kind not in ("frames", "tilts"):
            raise InvalidInput(f"item {self.name!r}: kind must be 'frames' or 'tilts', got {self.kind!r}")
        if "pixel_size" in self.imaging:
            _positive(self.imaging["pixel_size"], f"item {self.name!r} pixel size")
        body = {
            "kind": self.kind,
            "name": self.name,
            "raw": self.raw.to_body(),
            "imaging": self.imaging,
            "models": {k: array_ref(v) for k, v in sorted(self.models.items())},
            "refined_with": [record_ref(h) for h in sorted(set(self.refined_with))],
            "metadata": self.metadata,
        }
        if self.tilt_movies is not None:
            if self.kind != "tilts":
                raise InvalidInput(f"item {self.name!r}: tilt movies belong to tilt series, not {self.kind!r}")
            body["tilt_movies"] = self.tilt_movies.to_body()
        return body

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Item:
        return cls(
            kind=body["kind"], name=body["name"], raw=RawData.from_body(body["raw"]),
            imaging=body.get("imaging", {}), models={k: deref(v) for k, v in body.get("models", {}).items()},
            refined_with=tuple(deref(r) for r in body.get("refined_with", [])), metadata=body.get("metadata", {}),
            tilt_movies=RawData.from_body(body["tilt_movies"]) if "tilt_movies" in body else None,
        )

    @property
    def key(self) -> str:
        """Identity across versions: the raw data hash."""
        return self.raw.hash

    def save(self, objects: ObjectStore) -> str:
        return objects.put_record(self.KIND, self.to_body())

    @classmethod
    def load(cls, objects: ObjectStore, h: str) -> Item:
        return cls.from_body(objects.get_record(h, cls.KIND))


# ----------------------------------------------------------------------------- DataSource


Polarity = Literal["light", "dark"]
POLARITIES: tuple[str, ...] = ("light", "dark")


def check_polarity(value: object, what: str = "contrast polarity") -> str:
    """``"dark"`` (particles darker than the background: counting detectors) or ``"light"``."""
    if value not in POLARITIES:
        raise InvalidInput(f"invalid {what} {value!r}: use 'dark' or 'light'")
    return str(value)


@dataclass(frozen=True)
class DataSource:
    """A set of items from one grid and session, keyed by raw data hash (values: item hashes).

    ``polarity``: how particles appear in the raw data, ``"dark"`` (counting detectors: dark on a
    positive mean; image paths multiply by -1) or ``"light"`` (used as is). Written to the record
    only when ``"dark"``, so records made before the field existed keep their hashes and meaning.
    Rebuild a source with ``dataclasses.replace`` so the polarity is kept.
    """

    name: str
    items: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    polarity: Polarity = "light"

    KIND = "source"

    def to_body(self) -> dict[str, Any]:
        check_object_name(self.name, "data source")
        body = {
            "name": self.name,
            "items": {check_hash(k, "item key"): record_ref(v) for k, v in sorted(self.items.items())},
            "metadata": self.metadata,
        }
        if check_polarity(self.polarity, f"data source {self.name!r} polarity") != "light":
            body["polarity"] = self.polarity
        return body

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> DataSource:
        return cls(body["name"], {k: deref(v) for k, v in body["items"].items()}, body.get("metadata", {}),
                   check_polarity(body.get("polarity", "light"), f"data source {body['name']!r} polarity"))

    def save(self, objects: ObjectStore) -> str:
        return objects.put_record(self.KIND, self.to_body())

    @classmethod
    def load(cls, objects: ObjectStore, h: str) -> DataSource:
        return cls.from_body(objects.get_record(h, cls.KIND))


# ----------------------------------------------------------------------------- ParticleTable

_CORE_COLUMNS = ("id", "item_index", "coordinates", "angles", "half")


@dataclass(frozen=True, eq=False)
class ParticleTable:
    """Columnar particles of one species.

    ids (N,) int64 stable ids; item_index (N,) int32 into ``items`` (raw data hashes,
    sorted); coordinates (N, T, 3) float64 Å; angles (N, T, 3) float64 degrees ZYZ;
    half (N,) uint8 in {1, 2}; extra: free columns with leading dimension N.
    """

    ids: np.ndarray
    item_index: np.ndarray
    items: tuple[str, ...]
    coordinates: np.ndarray
    angles: np.ndarray
    half: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    KIND = "particles"

    def __post_init__(self) -> None:
        n = len(self.ids)
        object.__setattr__(self, "ids", np.asarray(self.ids, dtype=np.int64))
        object.__setattr__(self, "item_index", np.asarray(self.item_index, dtype=np.int32))
        object.__setattr__(self, "coordinates", np.asarray(self.coordinates, dtype=np.float64))
        object.__setattr__(self, "angles", np.asarray(self.angles, dtype=np.float64))
        object.__setattr__(self, "half", np.asarray(self.half, dtype=np.uint8))
        object.__setattr__(self, "items", tuple(self.items))
        if self.coordinates.ndim != 3 or self.coordinates.shape[0] != n or self.coordinates.shape[2] != 3:
            raise InvalidInput(f"particle coordinates must be (N, T, 3) with N={n}, got {self.coordinates.shape}")
        if self.angles.shape != self.coordinates.shape:
            raise InvalidInput(f"particle angles {self.angles.shape} do not match coordinates {self.coordinates.shape}")
        for name, col in (("item_index", self.item_index), ("half", self.half)):
            if col.shape != (n,):
                raise InvalidInput(f"particle column {name} must have shape ({n},), got {col.shape}")
        for name, col in self.extra.items():
            if name in _CORE_COLUMNS or not _NAME.match(name):
                raise InvalidInput(f"invalid extra particle column name {name!r}")
            if np.shape(col)[:1] != (n,):
                raise InvalidInput(f"extra particle column {name!r} has {np.shape(col)[:1]} rows, expected {n}")
        if n and (self.item_index.min() < 0 or self.item_index.max() >= len(self.items)):
            raise InvalidInput("particle item_index points outside the table's item list")
        if n and not np.isin(self.half, (1, 2)).all():
            raise InvalidInput(f"particle half-set must be 1 or 2, found {sorted(set(self.half.tolist()) - {1, 2})}")
        if n > 1:
            ordered = np.sort(self.ids)
            repeated = ordered[1:][ordered[1:] == ordered[:-1]]
            if repeated.size:
                raise InvalidInput(f"particle ids are not unique (e.g. id {int(repeated[0])} repeats)")
        for h in self.items:
            check_hash(h, "particle item")
        if list(self.items) != sorted(set(self.items)):
            raise InvalidInput("particle table items must be sorted and unique (use ParticleTable.build)")

    @classmethod
    def build(cls, ids: np.ndarray, item_keys: list[str] | np.ndarray, coordinates: np.ndarray,
              angles: np.ndarray, half: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> ParticleTable:
        """Build from per-particle item keys (raw data hashes); rows sorted by id."""
        keys = np.asarray(item_keys, dtype=object)
        items = sorted(set(keys.tolist()))
        lookup = {k: i for i, k in enumerate(items)}
        index = np.array([lookup[k] for k in keys.tolist()], dtype=np.int32)
        coords = np.asarray(coordinates, dtype=np.float64)
        if coords.ndim == 2:
            coords = coords[:, None, :]
        ang = np.asarray(angles, dtype=np.float64)
        if ang.ndim == 2:
            ang = ang[:, None, :]
        order = np.argsort(np.asarray(ids, dtype=np.int64), kind="stable")
        extra = {k: np.asarray(v)[order] for k, v in (extra or {}).items()}
        return cls(np.asarray(ids, dtype=np.int64)[order], index[order], tuple(items), coords[order], ang[order],
                   np.asarray(half)[order], extra)

    @classmethod
    def empty(cls, temporal_samples: int = 1) -> ParticleTable:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int32), (), np.zeros((0, temporal_samples, 3)),
                   np.zeros((0, temporal_samples, 3)), np.zeros(0, np.uint8))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def temporal_samples(self) -> int:
        return int(self.coordinates.shape[1])

    def item_keys(self) -> np.ndarray:
        """(N,) raw data hash of each particle's item."""
        return np.asarray(self.items, dtype=object)[self.item_index] if len(self) else np.zeros(0, dtype=object)

    def select(self, mask: np.ndarray) -> ParticleTable:
        """Rows where ``mask`` is True (items list compacted)."""
        mask = np.asarray(mask, dtype=bool)
        return ParticleTable.build(self.ids[mask], self.item_keys()[mask].tolist(), self.coordinates[mask],
                                   self.angles[mask], self.half[mask], {k: v[mask] for k, v in self.extra.items()})

    def to_body(self, objects: ObjectStore) -> dict[str, Any]:
        arrays = {"id": self.ids, "item_index": self.item_index, "coordinates": self.coordinates,
                  "angles": self.angles, "half": self.half, **self.extra}
        names = list(arrays)
        hashes = objects.put_arrays([arrays[n] for n in names])
        return {"count": len(self), "temporal_samples": self.temporal_samples, "items": list(self.items),
                "columns": {n: array_ref(h) for n, h in zip(names, hashes)}}

    def save(self, objects: ObjectStore) -> str:
        for name, col in (("coordinates", self.coordinates), ("angles", self.angles)):
            if not np.isfinite(col).all():
                raise InvalidInput(f"particle {name} contain NaN or Inf")
        return objects.put_record(self.KIND, self.to_body(objects))

    @classmethod
    def load(cls, objects: ObjectStore, h: str, *, verify: bool = True) -> ParticleTable:
        body = objects.get_record(h, cls.KIND)
        cols = {n: objects.get_array(deref(r), verify=verify) for n, r in body["columns"].items()}
        extra = {n: v for n, v in cols.items() if n not in _CORE_COLUMNS}
        return cls(cols["id"], cols["item_index"], tuple(body["items"]), cols["coordinates"], cols["angles"],
                   cols["half"], extra)

    def equals(self, other: ParticleTable) -> bool:
        return (self.items == other.items and set(self.extra) == set(other.extra)
                and all(np.array_equal(getattr(self, n), getattr(other, n))
                        for n in ("ids", "item_index", "coordinates", "angles", "half"))
                and all(np.array_equal(v, other.extra[k]) for k, v in self.extra.items()))


# ----------------------------------------------------------------------------- Species


@dataclass(frozen=True)
class Species:
    """A macromolecule or state: maps (array hashes), particles (record hash) and provenance.

    ``contributors``: hashes of the item versions whose data went into the half-maps.
    """

    name: str
    diameter: float
    symmetry: str
    pixel_size: float
    box: int
    half1: str
    half2: str
    mask: str
    particles: str
    temporal_samples: int = 1
    resolution: float | None = None
    denoiser: str | None = None
    fsc: str | None = None
    contributors: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    KIND = "species"

    def to_body(self) -> dict[str, Any]:
        check_object_name(self.name, "species")
        if self.box < 2 or int(self.box) != self.box:
            raise InvalidInput(f"species {self.name!r}: box must be an integer >= 2, got {self.box!r}")
        if self.temporal_samples < 1:
            raise InvalidInput(f"species {self.name!r}: temporal samples must be >= 1")
        return {
            "name": self.name,
            "diameter": check_diameter(self.diameter, f"species {self.name!r} diameter"),
            "symmetry": check_symmetry(self.symmetry),
            "pixel_size": _positive(self.pixel_size, f"species {self.name!r} pixel size"),
            "box": int(self.box),
            "temporal_samples": int(self.temporal_samples),
            "resolution": None if self.resolution is None else float(self.resolution),
            "half1": array_ref(self.half1),
            "half2": array_ref(self.half2),
            "mask": array_ref(self.mask),
            "denoiser": None if self.denoiser is None else blob_ref(self.denoiser),
            "fsc": None if self.fsc is None else array_ref(self.fsc),
            "particles": record_ref(self.particles),
            "contributors": [record_ref(h) for h in sorted(set(self.contributors))],
            "metadata": self.metadata,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Species:
        return cls(
            name=body["name"], diameter=body["diameter"], symmetry=body["symmetry"], pixel_size=body["pixel_size"],
            box=body["box"], half1=deref(body["half1"]), half2=deref(body["half2"]), mask=deref(body["mask"]),
            particles=deref(body["particles"]), temporal_samples=body.get("temporal_samples", 1),
            resolution=body.get("resolution"),
            denoiser=None if body.get("denoiser") is None else deref(body["denoiser"]),
            fsc=None if body.get("fsc") is None else deref(body["fsc"]),
            contributors=tuple(deref(r) for r in body.get("contributors", [])), metadata=body.get("metadata", {}),
        )

    def save(self, objects: ObjectStore) -> str:
        return objects.put_record(self.KIND, self.to_body())

    @classmethod
    def load(cls, objects: ObjectStore, h: str) -> Species:
        return cls.from_body(objects.get_record(h, cls.KIND))

    def evolve(self, **changes: Any) -> Species:
        return replace(self, **changes)


# ----------------------------------------------------------------------------- Population


@dataclass(frozen=True)
class Population:
    """Data sources and species by name (values: record hashes)."""

    name: str
    sources: dict[str, str] = field(default_factory=dict)
    species: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    KIND = "population"

    def to_body(self) -> dict[str, Any]:
        check_object_name(self.name, "population")
        return {
            "name": self.name,
            "sources": {check_object_name(k, "data source"): record_ref(v) for k, v in sorted(self.sources.items())},
            "species": {check_object_name(k, "species"): record_ref(v) for k, v in sorted(self.species.items())},
            "metadata": self.metadata,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Population:
        return cls(body["name"], {k: deref(v) for k, v in body["sources"].items()},
                   {k: deref(v) for k, v in body["species"].items()}, body.get("metadata", {}))

    def save(self, objects: ObjectStore) -> str:
        return objects.put_record(self.KIND, self.to_body())

    @classmethod
    def load(cls, objects: ObjectStore, h: str) -> Population:
        return cls.from_body(objects.get_record(h, cls.KIND))


# ----------------------------------------------------------------------------- Commit


@dataclass(frozen=True)
class Commit:
    """A point in history: parents, the population, who, when (UTC ISO 8601), why, how."""

    parents: tuple[str, ...]
    population: str
    author: str
    time: str
    message: str
    operation: dict[str, Any]
    mrepo_version: str

    KIND = "commit"

    def to_body(self) -> dict[str, Any]:
        if "name" not in self.operation:
            raise InvalidInput("commit operation needs a 'name'")
        return {
            "parents": [record_ref(p) for p in self.parents],
            "population": record_ref(self.population),
            "author": self.author,
            "time": self.time,
            "message": self.message,
            "operation": self.operation,
            "mrepo_version": self.mrepo_version,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Commit:
        return cls(tuple(deref(p) for p in body["parents"]), deref(body["population"]), body["author"],
                   body["time"], body["message"], body["operation"], body["mrepo_version"])

    def save(self, objects: ObjectStore) -> str:
        return objects.put_record(self.KIND, self.to_body())

    @classmethod
    def load(cls, objects: ObjectStore, h: str) -> Commit:
        return cls.from_body(objects.get_record(h, cls.KIND))
