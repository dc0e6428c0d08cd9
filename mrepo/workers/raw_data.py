"""An item's raw data (frames or tilts), read lazily per exposure and normalised as M does.

Layouts (``item.raw.format``):

- ``mrc``: one MRC stack (n, y, x) (or one image), stored in the repository or in place (``uri``);
- ``manifest``: a stored JSON list of files in stack order (:func:`mrepo.io.staging.raw_manifest`),
  one image each (RELION 5's one MRC per tilt, Warp's ``average/`` tilt images) or sections
  ``k`` of a stack (``"section"``, 0-based: RELION's ``k@stack`` references in any order or subset).

Every file is verified against its BLAKE3 blob hash (streamed, never loaded whole), then
memory-mapped, so an exposure costs memory only when it is read (:class:`RawStack`).

Normalisation (:func:`normalised_exposures`), following MCore's data loading
(``Movie.MPARefinement.cs`` / ``TiltSeries.MPARefinement.cs``, options ``Invert``,
``NormalizeInput``): tilts — each tilt minus its mean, divided by its standard deviation;
frames — the plane fitted to the frame average is subtracted from every frame, and all frames
are divided by the standard deviation of the average (frames keep their relative scale). Images
from a ``"dark"`` source are then multiplied by -1 so particles are positive density, like the
references. Arrays are (n, y, x) float32; no Fourier layout here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import mrcfile
import numpy as np
import torch
from mrcfile.dtypes import HEADER_DTYPE
from mrcfile.mrcinterpreter import MrcInterpreter

from mrepo.graph import Item
from mrepo.graph.model import check_polarity
from mrepo.store import CorruptObject, InvalidInput, ObjectStore, hash_file_cached

__all__ = ["RawStack", "NormalisedExposures", "read_raw", "read_exposures", "open_exposures", "normalised_exposures",
           "exposure_statistics"]


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(uri)
    return None


def _extended_size(raw: bytes) -> int:
    """``nsymbt`` (extended header bytes) of the MRC header ``raw[:1024]``, read without mrcfile (which
    cannot open a header whose extended header is not there)."""
    h = np.frombuffer(raw[:1024], dtype=HEADER_DTYPE, count=1)
    try:
        order = mrcfile.utils.byte_order_from_machine_stamp(h["machst"][0])
    except ValueError:  # the strict parse names the bad stamp
        order = "<"
    return int(h.view(HEADER_DTYPE.newbyteorder(order))["nsymbt"][0])


def _header(raw: bytes, what: str) -> tuple[int, np.dtype, tuple[int, ...]]:
    """(data offset, dtype, shape) of the MRC whose first bytes are ``raw``."""
    try:
        nsymbt = _extended_size(raw)
        with MrcInterpreter(iostream=io.BytesIO(raw[:1024 + nsymbt]), header_only=True, permissive=False) as m:
            header = m.header
            dtype = mrcfile.utils.data_dtype_from_header(header)
            shape = mrcfile.utils.data_shape_from_header(header)
    except Exception as exc:  # mrcfile raises ValueError and others on bad headers
        raise InvalidInput(f"{what} is not a readable MRC file: {exc}") from exc
    return 1024 + nsymbt, dtype, tuple(int(s) for s in shape)


def _as_stack(data: np.ndarray) -> np.ndarray:
    return data[None] if data.ndim == 2 else data


class _MrcFile:
    """One verified MRC file, memory-mapped (local) or held as bytes (remote stores): (k, y, x)."""

    def __init__(self, objects: ObjectStore, h: str, uri: str | None, stored: bool, what: str):
        path = _local_path(uri) if uri else None
        self.what = what
        if path is not None and path.is_file():
            if hash_file_cached(path) != h:  # hashed once per process while the file is unchanged
                raise CorruptObject(f"{what}: raw data {path} does not match its hash {h[:12]}")
            self.data = self._map(path, 0)
        elif stored or objects.has_object(h):
            try:
                local = objects.blob_file(h)  # a local store's file, verified, memory-mapped below
            except CorruptObject:
                raise CorruptObject(f"{what}: stored raw data {h[:12]} is corrupt") from None
            if local is not None:
                self.data = self._map(*local)
            else:
                data = objects.get_blob(h, verify=True)
                offset, dtype, shape = _header(data, what)
                self.data = _as_stack(np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)),
                                                    offset=offset).reshape(shape))
        elif path is not None:
            raise InvalidInput(f"{what}: raw data file {path} not found")
        else:
            raise InvalidInput(f"{what}: raw data is neither stored nor has a local uri ({uri})")
        if self.data.ndim != 3:
            raise InvalidInput(f"{what}: raw data must be images (n, y, x), got shape {self.data.shape}")

    def _map(self, path: Path, prefix: int) -> np.ndarray:
        with path.open("rb") as f:
            f.seek(prefix)
            head = f.read(1024)
            try:
                size = 1024 + _extended_size(head)
            except ValueError as exc:
                raise InvalidInput(f"{self.what}: {path} is not a readable MRC file: {exc}") from exc
            f.seek(prefix)
            head = f.read(size)
        offset, dtype, shape = _header(head, f"{self.what} ({path})")
        need = prefix + offset + int(np.prod(shape)) * dtype.itemsize
        if path.stat().st_size < need:
            raise InvalidInput(f"{self.what}: {path} is truncated ({path.stat().st_size} bytes, header needs {need})")
        return _as_stack(np.memmap(path, dtype=dtype, mode="r", offset=prefix + offset, shape=shape))


class RawStack:
    """The n exposures of an item in stack order, each read on demand as (y, x) float32."""

    def __init__(self, sections: list[tuple[_MrcFile, int]], name: str):
        self.name = name
        self._sections = sections
        shapes = {f.data.shape[1:] for f, _ in sections}
        if len(shapes) != 1:
            raise InvalidInput(f"item {name!r}: raw images differ in size: {sorted(shapes)}")
        self.shape: tuple[int, int] = shapes.pop()

    @classmethod
    def open(cls, objects: ObjectStore, item: Item) -> RawStack:
        """Verify and map the item's raw files (see the module docstring for layouts)."""
        raw, what = item.raw, f"item {item.name!r}"
        fmt = raw.format.lower()
        if fmt in ("mrc", "mrcs", "st"):
            f = _MrcFile(objects, raw.hash, raw.uri, raw.stored, what)
            return cls([(f, k) for k in range(f.data.shape[0])], item.name)
        if fmt != "manifest":
            raise InvalidInput(f"{what}: raw format {raw.format!r} is not supported (mrc stacks and manifests "
                               "of MRC images)")
        try:
            entries = json.loads(objects.get_blob(raw.hash))["files"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"{what}: raw data manifest {raw.hash[:12]} is not readable: {exc}") from None
        files: dict[str, _MrcFile] = {}
        sections = []
        for k, e in enumerate(entries):
            if e["hash"] not in files:
                files[e["hash"]] = _MrcFile(objects, e["hash"], e.get("uri"), bool(e.get("stored")),
                                            f"{what} image {k + 1}")
            f = files[e["hash"]]
            s = int(e.get("section", 0))
            if not 0 <= s < f.data.shape[0]:
                raise InvalidInput(f"{what} image {k + 1}: section {s + 1} of {e.get('uri')} does not exist "
                                   f"(the file holds {f.data.shape[0]})")
            sections.append((f, s))
        return cls(sections, item.name)

    @property
    def n(self) -> int:
        return len(self._sections)

    def exposure(self, i: int) -> np.ndarray:
        """Raw exposure ``i`` (y, x) float32 (a copy; only this exposure is read)."""
        f, s = self._sections[i]
        return np.array(f.data[s], dtype=np.float32)

    def stack(self) -> np.ndarray:
        """All exposures (n, y, x) float32, raw."""
        return np.stack([self.exposure(i) for i in range(self.n)])


def read_raw(objects: ObjectStore, item: Item) -> np.ndarray:
    """The item's raw stack (n, y, x) float32, verified against its hash(es), not normalised."""
    return RawStack.open(objects, item).stack()


def _plane(image: np.ndarray) -> np.ndarray:
    """Least-squares plane a + b x + c y fitted to ``image`` (y, x), evaluated on its grid (float64)."""
    h, w = image.shape
    y, x = np.mgrid[0:h, 0:w]
    x = (x - (w - 1) / 2) / max(w, 1)
    y = (y - (h - 1) / 2) / max(h, 1)
    a = np.stack([np.ones(h * w), x.ravel(), y.ravel()], 1)
    coef = np.linalg.lstsq(a, image.ravel().astype(np.float64), rcond=None)[0]
    return (a @ coef).reshape(h, w)


def exposure_statistics(raw: RawStack, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-exposure offset images and scales as M normalises (module docstring).

    Returns ``offset`` (n, y, x) or (n, 1, 1) float64 and ``scale`` (n,) float64 such that the
    normalised exposure is ``(raw_i - offset_i) / scale_i`` (before the polarity). Streams the
    exposures once."""
    n = raw.n
    if kind == "frames":
        total = np.zeros(raw.shape, np.float64)
        for i in range(n):
            total += raw.exposure(i)
        average = total / max(n, 1)
        plane = _plane(average)
        residual = average - plane
        scale = float(residual.std())
        offset = plane + residual.mean()
        return np.broadcast_to(offset, (n, *raw.shape)), np.full(n, scale if scale > 0 else 1.0)
    offsets, scales = np.zeros((n, 1, 1)), np.ones(n)
    for i in range(n):
        e = raw.exposure(i).astype(np.float64)
        offsets[i] = e.mean()
        s = float(e.std())
        scales[i] = s if s > 0 else 1.0
    return offsets, scales


class NormalisedExposures:
    """An item's exposures as every image path sees them, computed on demand: ``(raw - offset) * sign /
    scale`` per exposure (:func:`exposure_statistics`; sign -1 for ``polarity="dark"``). Only the
    statistics pass reads every exposure; :meth:`region` then reads just the pixels asked for."""

    def __init__(self, raw: RawStack, kind: str, polarity: str):
        self.raw = raw
        self.sign = -1.0 if check_polarity(polarity) == "dark" else 1.0
        self.offset, self.scale = exposure_statistics(raw, kind)

    @property
    def n(self) -> int:
        return self.raw.n

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n, y, x), as the stack :meth:`tensor` would be."""
        return (self.raw.n, *self.raw.shape)

    def region(self, i: int, y: slice = slice(None), x: slice = slice(None)) -> np.ndarray:
        """Normalised pixels ``[y, x]`` of exposure ``i`` (float32)."""
        f, s = self.raw._sections[i]
        offset = self.offset[i] if self.offset.shape[1:] == (1, 1) else self.offset[i][y, x]
        return ((np.asarray(f.data[s][y, x], np.float64) - offset) * (self.sign / self.scale[i])).astype(np.float32)

    def exposure(self, i: int) -> np.ndarray:
        """Normalised exposure ``i`` (y, x) float32."""
        return self.region(i)

    def patches(self, exposures: torch.Tensor, centres: torch.Tensor, box: int) -> torch.Tensor:
        """(g, P, box, box) float32: normalised (box x box) crops whose pixel ``box // 2`` sits at the
        integer ``centres`` (g, P, 2) px (x, y) of ``exposures`` (g,), zero outside the image — the
        crops :func:`mrepo.kernels.extraction.extract_patches_ft` takes from :meth:`tensor`, reading
        only their pixels."""
        g, p = centres.shape[:2]
        h, w = self.raw.shape
        out = np.zeros((g, p, box, box), np.float32)
        corner = torch.round(centres.detach()).long().numpy() - box // 2  # (g, P, 2) (x0, y0)
        for j, e in enumerate(exposures.tolist()):
            for k in range(p):
                x0, y0 = (int(v) for v in corner[j, k])
                ya, yb, xa, xb = max(y0, 0), min(y0 + box, h), max(x0, 0), min(x0 + box, w)
                if ya < yb and xa < xb:
                    out[j, k, ya - y0:yb - y0, xa - x0:xb - x0] = self.region(e, slice(ya, yb), slice(xa, xb))
        return torch.from_numpy(out)

    def tensor(self) -> torch.Tensor:
        """All exposures (n, y, x) float32."""
        out = np.empty(self.shape, np.float32)
        for i in range(self.n):
            out[i] = self.region(i)
        return torch.from_numpy(out)


def normalised_exposures(raw: RawStack, kind: str, polarity: str) -> torch.Tensor:
    """(n, y, x) float32: every exposure normalised (:func:`exposure_statistics`) and multiplied
    by -1 for ``polarity="dark"``, so particles are positive density."""
    return NormalisedExposures(raw, kind, polarity).tensor()


def read_exposures(objects: ObjectStore, item: Item, polarity: str) -> torch.Tensor:
    """The item's exposures ready for every image path: (n, y, x) float32, normalised, positive density."""
    return normalised_exposures(RawStack.open(objects, item), item.kind, polarity)


def open_exposures(objects: ObjectStore, item: Item, polarity: str) -> NormalisedExposures:
    """Like :func:`read_exposures`, but lazy: exposures or regions of them on demand (bounded memory)."""
    return NormalisedExposures(RawStack.open(objects, item), item.kind, polarity)
