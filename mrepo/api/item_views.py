"""Per-item views of the web view: summary numbers, a thumbnail of the raw data and a CTF fit plot.

- :func:`item_summary`: defocus (mean of U and V over exposures, Å, underfocus > 0),
  astigmatism (|U − V| / 2, Å), total dose (e⁻/Å²), exposures, pixel size (Å).
- :func:`raw_image`: the item's raw data as one (y, x) image — the average of up to 8 frames of
  a frame series, the tilt nearest 0° of a tilt series — memory-mapped from the repository's
  object file (stored raw data, local store) or from the file in place, so a large movie costs
  a few frames of memory.
- :func:`ctf_fit`: the rotational average of that image's power spectrum, flattened by
  removing a running mean over shells, next to CTF² of the item's fitted defocus
  (RELION's CTF: γ = πλΔf k² − (π/2) C_s λ³ k⁴ + arctan(Q/√(1 − Q²)), CTF = sin γ, no
  envelope) and their correlation beyond the first CTF zero. Shell i is at frequency
  i / (N · pixel size) 1/Å for the image's smaller side N.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from ..graph import Item, Repository
from ..store import InvalidInput, ObjectNotFound
from ..store.hashing import BLOB_TAG
from ..store.objects import object_key

MAX_THUMBNAIL = 256


def _model(repo: Repository, item: Item, name: str) -> np.ndarray | None:
    h = item.models.get(name)
    return None if h is None else np.asarray(repo.objects.get_array(h), dtype=np.float64)


def item_summary(repo: Repository, item: Item) -> dict[str, Any]:
    """Defocus, astigmatism (Å), total dose (e⁻/Å²), number of exposures and pixel size (Å)."""
    exposure = [float(e) for e in item.imaging.get("exposure", [])]
    out: dict[str, Any] = {"dose_e_per_A2": round(sum(exposure), 3) if exposure else None,
                           "exposures": len(exposure) or None, "pixel_size_A": item.imaging.get("pixel_size")}
    ctf = _model(repo, item, "ctf")
    if ctf is not None and ctf.ndim == 2 and ctf.shape[1] >= 2 and len(ctf):
        out["defocus_A"] = round(float(np.mean((ctf[:, 0] + ctf[:, 1]) / 2)), 1)
        out["astigmatism_A"] = round(float(np.mean(np.abs(ctf[:, 0] - ctf[:, 1]) / 2)), 1)
    return out


def _local(uri: str | None) -> Path | None:
    if not uri:
        return None
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme in ("", "file") else None


#: MRC modes a thumbnail reads (MRC2014): 0 int8, 1 int16, 2 float32, 6 uint16, 12 float16.
_MRC_DTYPES = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16, 12: np.float16}
#: Frames averaged for a thumbnail at most (evenly spaced through the movie).
MAX_THUMBNAIL_FRAMES = 8
#: Raw data read whole into memory at most (stored on a backend without local files, e.g. S3).
MAX_REMOTE_RAW_BYTES = 256 << 20


def mrc_frames(buffer: Any, offset: int = 0) -> np.ndarray:
    """(n, y, x) view of the MRC image data in ``buffer`` (bytes or a memory map) starting at
    ``offset``, without copying: the header gives nx, ny, nz, mode and the extended header size."""
    head = np.frombuffer(buffer, dtype="<i4", count=24, offset=offset)
    nx, ny, nz, mode = (int(v) for v in head[:4])
    nsymbt = int(head[23])
    if mode not in _MRC_DTYPES or min(nx, ny, nz) < 1:
        raise InvalidInput(f"raw data is not a readable MRC stack (mode {mode}, size {nx} x {ny} x {nz})")
    count = nx * ny * nz
    data = np.frombuffer(buffer, dtype=np.dtype(_MRC_DTYPES[mode]).newbyteorder("<"), count=count,
                         offset=offset + 1024 + nsymbt)
    return data.reshape(nz, ny, nx)


def _open_raw(repo: Repository, h: str, uri: str | None) -> tuple[Any, int]:
    """(buffer, offset) of one raw MRC file: a memory map of the stored blob's object file (local
    store; the file starts with ``blob\0``) or of the file in place, else the blob's bytes."""
    if repo.objects.has_object(h):
        root = getattr(repo.storage.backend, "root", None)
        if root is not None:
            return np.memmap(Path(root) / object_key(h), dtype=np.uint8, mode="r"), len(BLOB_TAG)
        size = repo.storage.backend.get_size(object_key(h))
        if size > MAX_REMOTE_RAW_BYTES:
            raise InvalidInput(f"raw data {h[:12]} ({size >> 20} MiB) is too large to read for a thumbnail")
        return repo.objects.get_blob(h), 0
    path = _local(uri)
    if path is None or not path.is_file():
        raise ObjectNotFound(f"raw data {h[:12]} is neither in the repository nor at {uri}")
    return np.memmap(path, dtype=np.uint8, mode="r"), 0


def raw_image(repo: Repository, item: Item) -> np.ndarray:
    """One (y, x) float image of the item's raw data: the average of up to
    :data:`MAX_THUMBNAIL_FRAMES` evenly spaced frames, or the tilt nearest 0°. Memory holds
    those frames only (the files are memory-mapped)."""
    tilts = np.asarray(item.imaging.get("tilt_angles") or [], dtype=np.float64)
    if item.raw.format == "manifest":
        files = json.loads(repo.objects.get_blob(item.raw.hash))["files"]
        pick = int(np.argmin(np.abs(tilts[:len(files)]))) if len(tilts) else 0
        f = files[pick]
        frames = mrc_frames(*_open_raw(repo, f["hash"], f.get("uri")))
        section = int(f.get("section", 0) or 0)
        frames = frames[section:section + 1] if frames.shape[0] > 1 else frames
    else:
        frames = mrc_frames(*_open_raw(repo, item.raw.hash, item.raw.uri))
        if item.kind == "tilts" and len(tilts) and frames.shape[0] > 1:
            k = int(np.argmin(np.abs(tilts[:frames.shape[0]])))
            frames = frames[k:k + 1]
    pick = np.unique(np.linspace(0, frames.shape[0] - 1, min(frames.shape[0], MAX_THUMBNAIL_FRAMES)).round()
                     .astype(int))
    total = np.zeros(frames.shape[1:], np.float32)  # one frame of memory beyond the page cache
    for i in pick:
        total += frames[i]
    return total / len(pick)


def thumbnail(image: np.ndarray, size: int = MAX_THUMBNAIL) -> np.ndarray:
    """Block-averaged copy of ``image`` no larger than ``size`` on either side."""
    f = max(1, math.ceil(max(image.shape) / size))
    h, w = (image.shape[0] // f) * f, (image.shape[1] // f) * f
    return image[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def ctf_curve(frequency: np.ndarray, defocus: float, voltage_kv: float, cs_mm: float,
              amplitude_contrast: float) -> np.ndarray:
    """RELION's CTF (no envelope) at spatial frequencies ``frequency`` (1/Å), mean defocus ``defocus`` (Å)."""
    v = voltage_kv * 1e3
    lam = 12.2643247 / math.sqrt(v * (1.0 + 0.978466e-6 * v))
    k2 = np.asarray(frequency, dtype=np.float64) ** 2
    amp = math.atan(amplitude_contrast / math.sqrt(1.0 - amplitude_contrast ** 2))
    gamma = math.pi * lam * defocus * k2 - 0.5 * math.pi * cs_mm * 1e7 * lam ** 3 * k2 * k2 + amp
    return np.sin(gamma)


def radial_power(image: np.ndarray) -> np.ndarray:
    """Rotational average of |FFT|² of the centre square of ``image`` over integer shells 0 .. N // 2."""
    n = min(image.shape)
    y0, x0 = (image.shape[0] - n) // 2, (image.shape[1] - n) // 2
    sq = image[y0:y0 + n, x0:x0 + n].astype(np.float64)
    power = np.abs(np.fft.rfft2(sq - sq.mean())) ** 2
    ky = np.fft.fftfreq(n)[:, None] * n
    kx = np.fft.rfftfreq(n)[None, :] * n
    shell = np.rint(np.sqrt(kx ** 2 + ky ** 2)).astype(int)
    keep = shell <= n // 2
    sums = np.bincount(shell[keep], power[keep], minlength=n // 2 + 1)
    counts = np.bincount(shell[keep], minlength=n // 2 + 1)
    return sums / np.maximum(counts, 1)


def ctf_fit(repo: Repository, item: Item) -> dict[str, Any]:
    """Flattened power spectrum and CTF² of the item's defocus, on shells in 1/Å (see module docstring)."""
    summary = item_summary(repo, item)
    if "defocus_A" not in summary:
        raise ObjectNotFound(f"item {item.name!r} has no CTF model")
    image = raw_image(repo, item)
    px = float(item.imaging["pixel_size"])
    power = radial_power(image)
    n = (len(power) - 1) * 2
    freq = np.arange(len(power)) / (n * px)
    logp = np.log(power + 1e-30)
    win = max(3, len(power) // 12) | 1
    pad = np.pad(logp, win // 2, mode="edge")
    flat = logp - np.convolve(pad, np.ones(win) / win, mode="valid")
    flat[0] = 0.0
    top = np.max(np.abs(flat[2:])) if len(flat) > 2 else 1.0
    flat = flat / (top or 1.0)
    ctf2 = ctf_curve(freq, float(summary["defocus_A"]), float(item.imaging["voltage"]), float(item.imaging["cs"]),
                     float(item.imaging["amplitude_contrast"])) ** 2
    zeros = np.nonzero(np.diff(np.sign(np.diff(ctf2))) > 0)[0]
    start = int(zeros[0]) + 1 if len(zeros) else 1
    corr = None
    if len(flat) - start > 3 and np.std(flat[start:]) > 0 and np.std(ctf2[start:]) > 0:
        corr = round(float(np.corrcoef(flat[start:], ctf2[start:])[0, 1]), 3)
    return {"item": item.name, "defocus_A": summary["defocus_A"], "pixel_size_A": px,
            "frequency": [round(float(f), 6) for f in freq], "power": [round(float(p), 4) for p in flat],
            "ctf2": [round(float(c), 4) for c in ctf2], "correlation": corr, "first_zero_shell": start}
