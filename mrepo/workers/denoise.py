"""Species denoising (M, Methods: Map denoising): train the noise2noise network of
:mod:`mrepo.kernels.denoise` on a species' half-maps, keep its weights as ``species.denoiser`` (a
blob) and the denoised average map as ``metadata["denoised"]`` (an array), and denoise each half-map
on its own for use as a refinement reference.

Weights are stored as bytes (:func:`weights_to_bytes`): magic, a canonical JSON header (format,
network sizes, tensor names/shapes/offsets, training facts) and raw little-endian float32 tensors,
no pickle, so reading a denoiser from a shared repository never runs code. Training is
deterministic for a fixed seed, device and thread count (``threads`` is set for the duration).
Maps are (box, box, box) (z, y, x) float32 at the species pixel size (Å).
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mrepo.graph import Species
from mrepo.kernels.denoise import (
    DenoiserConfig,
    UNet3D,
    build_model,
    denoise_volume,
    prepare_halves,
    train,
)
from mrepo.store import InvalidInput, ObjectStore
from mrepo.store.objects import array_ref
from mrepo.workers.device import resolve_device as _resolve_device

__all__ = ["DenoiseSettings", "DenoiseResult", "WeightsError", "weights_to_bytes", "weights_from_bytes",
           "load_denoiser", "train_species_denoiser", "with_denoiser", "denoised_halves", "resolve_device",
           "refine_denoise_settings", "refresh_denoiser", "ensure_denoisers"]

_MAGIC = b"MREPO-DENOISER\x00"
_FORMAT = 1


class WeightsError(InvalidInput):
    """Stored denoiser weights that cannot be read (magic, header, tensor names or sizes)."""


@dataclass(frozen=True)
class DenoiseSettings:
    """How to (re)train a species denoiser.

    ``steps``: Adam steps (M's paper: 800 per training, M's code more); ``warm_start``: continue
    from the species' current weights when their network sizes match (M retrains after every
    refinement); ``lowpass``: low-pass the maps to the species resolution first (M denoises at
    ≤ the global resolution); ``lr``: learning rate at the first and last step.
    """

    steps: int = 800
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    warm_start: bool = True
    lowpass: bool = True
    lr: tuple[float, float] = (1e-3, 1e-5)
    config: DenoiserConfig = field(default_factory=DenoiserConfig)

    def __post_init__(self) -> None:
        if int(self.steps) < 1 or int(self.threads) < 1:
            raise InvalidInput(f"denoiser steps and threads must be >= 1, got {self.steps}, {self.threads}")
        if not (0 < self.lr[1] <= self.lr[0]):
            raise InvalidInput(f"denoiser learning rates must satisfy 0 < end <= start, got {self.lr}")

    def to_json(self) -> dict[str, Any]:
        return {"steps": int(self.steps), "seed": int(self.seed), "threads": int(self.threads),
                "device": self.device, "warm_start": self.warm_start, "lowpass": self.lowpass,
                "lr": list(self.lr), "config": self.config.to_json()}


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; a CUDA device without CUDA is a one-line error
    (:func:`mrepo.workers.device.resolve_device`)."""
    return _resolve_device(device, "denoiser device")


# ----------------------------------------------------------------------------- weights as bytes


def weights_to_bytes(model: UNet3D, info: dict[str, Any] | None = None) -> bytes:
    """The model as bytes (see the module docstring); equal weights give equal bytes."""
    state = model.state_dict()
    tensors, offset, chunks = [], 0, []
    for name in sorted(state):
        arr = np.ascontiguousarray(state[name].detach().cpu().numpy().astype("<f4"))
        tensors.append({"name": name, "shape": list(arr.shape), "offset": offset})
        chunks.append(arr.tobytes())
        offset += arr.nbytes
    header = {"format": _FORMAT, "config": model.config.to_json(), "tensors": tensors, "info": info or {}}
    raw = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    return _MAGIC + struct.pack("<I", len(raw)) + raw + b"".join(chunks)


def weights_from_bytes(data: bytes, device: str | torch.device = "cpu") -> tuple[UNet3D, dict[str, Any]]:
    """(model in eval mode, info) from :func:`weights_to_bytes` output; :class:`WeightsError` otherwise."""
    if len(data) < len(_MAGIC) + 4 or not data.startswith(_MAGIC):
        raise WeightsError("denoiser weights: not mrepo denoiser weights (magic bytes missing)")
    (n,) = struct.unpack_from("<I", data, len(_MAGIC))
    start = len(_MAGIC) + 4
    try:
        header = json.loads(bytes(data[start:start + n]))
        fmt = header.get("format")
        config = DenoiserConfig.from_json(header["config"])
        entries = list(header["tensors"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise WeightsError(f"denoiser weights: header unreadable ({e})") from None
    if fmt != _FORMAT:
        raise WeightsError(f"denoiser weights: format {fmt!r}, this mrepo reads {_FORMAT}")
    model = UNet3D(config)
    expected = model.state_dict()
    if sorted(e.get("name") for e in entries) != sorted(expected):
        raise WeightsError("denoiser weights: tensor names do not match the network the header describes")
    body = memoryview(data)[start + n:]
    state = {}
    for e in entries:
        shape = tuple(expected[e["name"]].shape)
        if tuple(e["shape"]) != shape:
            raise WeightsError(f"denoiser weights: tensor {e['name']} has shape {e['shape']}, the network needs "
                               f"{list(shape)}")
        lo = int(e["offset"])
        hi = lo + 4 * math.prod(shape)
        if lo < 0 or hi > len(body):
            raise WeightsError(f"denoiser weights: tensor {e['name']} runs past the end of the data")
        state[e["name"]] = torch.from_numpy(np.frombuffer(body[lo:hi], "<f4").reshape(shape).copy())
    model.load_state_dict(state)
    return model.to(device).eval(), dict(header.get("info") or {})


def load_denoiser(objects: ObjectStore, species: Species,
                  device: str | torch.device = "cpu") -> tuple[UNet3D, dict[str, Any]]:
    """The species' stored denoiser; a one-line error naming the species when it has none."""
    if species.denoiser is None:
        raise InvalidInput(f"species {species.name!r} has no denoiser: train one with "
                           f"`mrepo species denoise {species.name}`")
    try:
        return weights_from_bytes(objects.get_blob(species.denoiser), device)
    except WeightsError as e:
        raise WeightsError(f"species {species.name!r}: {e}") from None


# ----------------------------------------------------------------------------- training and use


@dataclass(frozen=True)
class DenoiseResult:
    """A trained denoiser: its bytes, the denoised average map (box³ float32, same scale as the
    half-maps after whitening/low-pass), the loss per step and the facts stored with the weights."""

    weights: bytes
    denoised: np.ndarray
    losses: list[float]
    info: dict[str, Any]
    seconds: float


class _Threads:
    def __init__(self, n: int):
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)


def _maps(objects: ObjectStore, sp: Species, device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.asarray(objects.get_array(h), np.float32)).to(device)
                 for h in (sp.half1, sp.half2, sp.mask))


def _lowpass_A(sp: Species, settings: DenoiseSettings) -> float | None:
    res = sp.resolution
    return float(res) if settings.lowpass and res is not None and math.isfinite(res) else None


def train_species_denoiser(objects: ObjectStore, sp: Species, settings: DenoiseSettings = DenoiseSettings(),
                           progress: Callable[[int, int, float], None] | None = None) -> DenoiseResult:
    """Train (or, with ``warm_start``, continue training) ``sp``'s denoiser on its half-maps and
    denoise the average of the prepared halves (M's denoised map)."""
    dev = resolve_device(settings.device)
    cfg = settings.config
    if sp.box < cfg.patch:
        raise InvalidInput(f"species {sp.name!r}: box {sp.box} px is smaller than the denoiser patch "
                           f"({cfg.patch} px); choose a smaller --patch")
    started = time.perf_counter()
    with _Threads(settings.threads):
        h1, h2, mask = _maps(objects, sp, dev)
        lowpass = _lowpass_A(sp, settings)
        prep = prepare_halves(h1, h2, mask, sp.pixel_size, lowpass)
        model, total, warm = None, 0, False
        if settings.warm_start and sp.denoiser is not None:
            old, old_info = load_denoiser(objects, sp, dev)
            if old.config == cfg:
                model, total, warm = old, int(old_info.get("total_steps", 0)), True
        if model is None:
            model = build_model(cfg, settings.seed, dev)
        losses = train(model, prep.half1, prep.half2, settings.steps, settings.seed + total, lr=settings.lr,
                       progress=progress)
        den = denoise_volume(model, (prep.half1 + prep.half2) / 2)
        denoised = (den.double() * prep.std + prep.mean).float().cpu().numpy()
    info = {"half1": sp.half1, "half2": sp.half2, "steps": int(settings.steps), "total_steps": total + settings.steps,
            "seed": int(settings.seed), "warm_start": warm, "lowpass_A": lowpass,
            "final_loss": float(np.mean(losses[-max(1, len(losses) // 10):]))}
    return DenoiseResult(weights_to_bytes(model, info), denoised, losses, info, time.perf_counter() - started)


def with_denoiser(objects: ObjectStore, sp: Species, result: DenoiseResult) -> Species:
    """``sp`` with the trained weights as ``denoiser`` and the denoised map as ``metadata["denoised"]``
    (objects stored first; the caller saves the species and commits)."""
    blob = objects.put_blob(result.weights)
    arr = objects.put_array(np.ascontiguousarray(result.denoised, dtype=np.float32))
    meta = {**sp.metadata, "denoised": array_ref(arr),
            "denoiser": {k: result.info[k] for k in ("total_steps", "lowpass_A", "final_loss")}}
    return sp.evolve(denoiser=blob, metadata=meta)


def denoised_halves(objects: ObjectStore, sp: Species, *, device: str = "cpu",
                    threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each half-map of ``sp`` denoised on its own by ``sp``'s denoiser (M: the network sees one half
    at a time, so whatever it invents is independent between the halves). Prepared as in training
    (whitened, low-passed to the resolution the weights were trained at), then rescaled."""
    dev = resolve_device(device)
    with _Threads(threads or torch.get_num_threads()):
        model, info = load_denoiser(objects, sp, dev)
        h1, h2, mask = _maps(objects, sp, dev)
        lowpass = info.get("lowpass_A")
        prep = prepare_halves(h1, h2, mask, sp.pixel_size, None if lowpass is None else float(lowpass))
        return tuple((denoise_volume(model, h).double() * prep.std + prep.mean).float().cpu().numpy()
                     for h in (prep.half1, prep.half2))  # type: ignore[return-value]


# ----------------------------------------------------------------------------- refinement hooks


def refine_denoise_settings(settings: Any) -> DenoiseSettings:
    """The :class:`DenoiseSettings` a refinement with ``settings`` (RefineSettings) trains with."""
    return DenoiseSettings(steps=settings.denoise_steps, threads=settings.threads, device=settings.denoise_device)


def refresh_denoiser(objects: ObjectStore, sp: Species, settings: Any) -> Species:
    """``sp`` with its denoiser (re)trained on its current half-maps when ``settings.denoise`` is on
    (M retrains after every refinement, continuing from the previous weights and network sizes);
    else ``sp``."""
    if not getattr(settings, "denoise", False):
        return sp
    ds = refine_denoise_settings(settings)
    if sp.denoiser is not None:  # continue the species' own network, whatever its sizes
        ds = dataclasses.replace(ds, config=load_denoiser(objects, sp)[0].config)
    else:  # default sizes, the training cube shrunk to fit a small box
        step = 2 ** ds.config.depth
        ds = dataclasses.replace(ds, config=dataclasses.replace(
            ds.config, patch=max(step, min(ds.config.patch, sp.box // step * step))))
    return with_denoiser(objects, sp, train_species_denoiser(objects, sp, ds))


def ensure_denoisers(objects: ObjectStore, species: dict[str, str], settings: Any) -> dict[str, str]:
    """name -> species hash, where with ``settings.denoise`` every species without a denoiser gets
    one trained first (a new species version, saved; committed with the iteration that uses it)."""
    if not getattr(settings, "denoise", False):
        return species
    out = {}
    for name, h in species.items():
        sp = Species.load(objects, h)
        out[name] = h if sp.denoiser is not None else refresh_denoiser(objects, sp, settings).save(objects)
    return out
