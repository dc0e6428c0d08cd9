"""Noise2noise denoising of half-maps (M, Methods: Map denoising). Numerics only, no I/O.

M trains one small 3-D U-Net per species on its two half-maps, each the other's target
(noise2noise: the noise of the halves is independent, so the expected target is the signal).
Before training the maps are spectrum-whitened beyond 10 Å (:func:`whitening_filter`), low-passed
to the denoising resolution and normalised by their joint mean and standard deviation
(:func:`prepare_halves`). Training (:func:`train`) shows the network cubes of ``patch`` px cut at
the same random position and orientation from both halves, source and target swapped at random,
with Adam at a learning rate falling exponentially from 1e-3 to 1e-5 (M's paper) and an MSE loss.
The network predicts a correction that is added to its input (M's NoiseNet3D). Orientations are
the 24 proper rotations of the cube (:func:`cube_rotation`): exact on the voxel grid, so the noise
the network sees is not smoothed by interpolation as arbitrary rotations would smooth it.

Volumes are (z, y, x) float tensors; lengths in px unless named ``*_A`` (Å).
Randomness comes from ``torch.Generator`` seeds only (the global RNG is untouched).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from mrepo.kernels.fsc import shell_filter, shell_indices

__all__ = ["DenoiserConfig", "UNet3D", "Prepared", "whitening_filter", "lowpass_filter", "prepare_halves",
           "cube_rotation", "learning_rate", "train", "denoise_volume", "build_model", "N_CUBE_ROTATIONS"]

N_CUBE_ROTATIONS = 24


@dataclass(frozen=True)
class DenoiserConfig:
    """Network and training sizes.

    ``depth``: down-sampling levels; ``width``: channels of the first level, doubled per level up to
    ``max_width``; ``patch``: training cube edge (px, a multiple of 2**depth); ``batch``: cubes per
    step; ``window``/``overlap``: inference tiles (px) and their overlap (M: 64 and 24).
    M's current code uses 32 px cubes, one level, at most 64 channels; its paper 64 px and two.
    """

    depth: int = 2
    width: int = 16
    max_width: int = 64
    patch: int = 32
    batch: int = 4
    window: int = 64
    overlap: int = 24

    def __post_init__(self) -> None:
        for name in ("depth", "width", "max_width", "patch", "batch", "window"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"denoiser {name} must be >= 1, got {getattr(self, name)}")
        step = 2 ** self.depth
        if self.patch % step or self.window % step:
            raise ValueError(f"denoiser patch ({self.patch}) and window ({self.window}) must be multiples of "
                             f"2**depth = {step}")
        if not 0 <= self.overlap < self.window:
            raise ValueError(f"denoiser overlap must be in [0, window), got {self.overlap}")

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: dict) -> DenoiserConfig:
        known = set(cls.__dataclass_fields__)
        if set(body) - known:
            raise ValueError(f"unknown denoiser settings {sorted(set(body) - known)}")
        return cls(**{k: int(v) for k, v in body.items()})


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.Conv3d(c_out, c_out, 3, padding=1), nn.LeakyReLU(0.1))


class UNet3D(nn.Module):
    """A U-Net on (batch, 1, z, y, x) volumes whose sides are multiples of 2**depth; it returns
    the input plus a learned correction (the correction's last layer starts at zero, so an
    untrained network is the identity)."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config
        w = [min(config.width * 2**i, config.max_width) for i in range(config.depth + 1)]
        self.down = nn.ModuleList(_block(1 if i == 0 else w[i - 1], w[i]) for i in range(config.depth + 1))
        self.up = nn.ModuleList(nn.ConvTranspose3d(w[i + 1], w[i], 2, stride=2) for i in range(config.depth))
        self.merge = nn.ModuleList(_block(2 * w[i], w[i]) for i in range(config.depth))
        self.out = nn.Conv3d(w[0], 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        h = x
        for i, block in enumerate(self.down):
            h = block(h)
            if i < self.config.depth:
                skips.append(h)
                h = nn.functional.max_pool3d(h, 2)
        for i in reversed(range(self.config.depth)):
            h = self.merge[i](torch.cat([self.up[i](h), skips[i]], dim=1))
        return x + self.out(h)


def build_model(config: DenoiserConfig, seed: int, device: str | torch.device = "cpu") -> UNet3D:
    """A freshly initialised network; the same ``seed`` gives the same weights (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UNet3D(config)
    return model.to(device)


# ----------------------------------------------------------------------------- data preparation


def whitening_filter(average: Tensor, mask: Tensor | None, pixel_size: float, flat_from_A: float = 10.0) -> Tensor:
    """Per-shell factors (box // 2 + 1,) that flatten the rotationally averaged amplitude of
    ``average`` (× ``mask``) beyond ``flat_from_A`` Å to its value there; 1 below (M's whitening)."""
    box = average.shape[0]
    vol = average * mask if mask is not None else average
    amp = torch.fft.rfftn(vol).abs()
    shells = shell_indices(tuple(vol.shape), device=vol.device)
    n = box // 2 + 1
    total = torch.zeros(n, dtype=amp.dtype, device=amp.device).index_add_(0, shells.clamp(max=n - 1).flatten(),
                                                                       amp.flatten())
    count = torch.zeros(n, dtype=amp.dtype, device=amp.device).index_add_(
        0, shells.clamp(max=n - 1).flatten(), torch.ones_like(amp).flatten())
    spectrum = total / count.clamp(min=1)
    start = min(int(pixel_size * 2 / flat_from_A * (n - 1)), n - 1)
    ref = spectrum[start]
    shell = torch.arange(n, device=amp.device)
    return torch.where(shell < start, torch.ones_like(spectrum), ref / spectrum.clamp(min=1e-10 * float(ref) + 1e-30))


def lowpass_filter(box: int, pixel_size: float, resolution_A: float, edge: float = 0.05) -> Tensor:
    """Per-shell factors (box // 2 + 1,): 1 up to 1/``resolution_A``, a raised-cosine fall over
    ``edge`` × Nyquist, 0 beyond (M's Bandpass(0, 2 px/res, edge 0.05))."""
    n = box // 2 + 1
    nyquist_shell = box / 2
    cut = nyquist_shell * 2 * pixel_size / resolution_A
    width = max(edge * nyquist_shell, 1e-6)
    s = torch.arange(n, dtype=torch.float64)
    t = ((s - cut) / width).clamp(0, 1)
    return 0.5 * (1 + torch.cos(math.pi * t))


@dataclass(frozen=True)
class Prepared:
    """Half-maps ready for the network: whitened, low-passed, (v - mean) / std; ``mean``/``std``
    undo the normalisation (the whitening and low-pass stay)."""

    half1: Tensor
    half2: Tensor
    mean: float
    std: float


def prepare_halves(half1: Tensor, half2: Tensor, mask: Tensor | None, pixel_size: float,
                   lowpass_A: float | None) -> Prepared:
    """Whiten (one filter from the masked average) and low-pass both halves (z, y, x), then
    normalise them by their joint mean and standard deviation (computed in float64)."""
    a, b = half1.double(), half2.double()
    filt = whitening_filter((a + b) / 2, None if mask is None else mask.double(), pixel_size)
    if lowpass_A is not None and math.isfinite(lowpass_A) and lowpass_A > 2 * pixel_size:
        filt = filt * lowpass_filter(a.shape[0], pixel_size, lowpass_A).to(filt.device)
    a, b = shell_filter(a, filt), shell_filter(b, filt)
    both = torch.stack([a, b])
    mean, std = float(both.mean()), float(both.std())
    std = std if std > 0 else 1.0
    dtype = half1.dtype if half1.is_floating_point() else torch.float32
    return Prepared(((a - mean) / std).to(dtype), ((b - mean) / std).to(dtype), mean, std)


# ----------------------------------------------------------------------------- training


def cube_rotation(x: Tensor, k: int) -> Tensor:
    """Rotation ``k`` (0..23) of the 24 proper rotations of the cube, on the last three axes."""
    face, turn = divmod(int(k) % N_CUBE_ROTATIONS, 4)
    z, y, xx = x.dim() - 3, x.dim() - 2, x.dim() - 1
    if face in (1, 2, 3):
        x = torch.rot90(x, face, (z, xx))
    elif face == 4:
        x = torch.rot90(x, 1, (z, y))
    elif face == 5:
        x = torch.rot90(x, 3, (z, y))
    return torch.rot90(x, turn, (y, xx))


def learning_rate(step: int, steps: int, start: float = 1e-3, end: float = 1e-5) -> float:
    """Exponential decay from ``start`` at step 0 to ``end`` at the last step (M's schedule)."""
    if steps <= 1:
        return start
    return start * (end / start) ** (step / (steps - 1))


def _draw(rng: torch.Generator, high: int) -> int:
    return int(torch.randint(0, high, (1,), generator=rng))


def _crops(rng: torch.Generator, a: Tensor, b: Tensor, patch: int, batch: int) -> tuple[Tensor, Tensor]:
    """``batch`` cubes (batch, 1, p, p, p) cut at the same random positions and rotations from ``a``
    and ``b``; each pair's source and target swapped with probability 1/2."""
    shape = a.shape
    src, tgt = [], []
    for _ in range(batch):
        z, y, x = (_draw(rng, s - patch + 1) for s in shape)
        k = _draw(rng, N_CUBE_ROTATIONS)
        ca = cube_rotation(a[z:z + patch, y:y + patch, x:x + patch], k)
        cb = cube_rotation(b[z:z + patch, y:y + patch, x:x + patch], k)
        if _draw(rng, 2):
            ca, cb = cb, ca
        src.append(ca)
        tgt.append(cb)
    return torch.stack(src)[:, None].contiguous(), torch.stack(tgt)[:, None].contiguous()


def train(model: UNet3D, half1: Tensor, half2: Tensor, steps: int, seed: int, *,
          lr: tuple[float, float] = (1e-3, 1e-5),
          progress: Callable[[int, int, float], None] | None = None) -> list[float]:
    """Noise2noise training of ``model`` on prepared halves (z, y, x, on the model's device) for
    ``steps`` Adam steps; returns the loss per step. Crops come from a CPU ``torch.Generator``
    seeded with ``seed``, so the result is reproducible for a fixed seed, device and thread count."""
    cfg = model.config
    if min(half1.shape) < cfg.patch:
        raise ValueError(f"maps of {tuple(half1.shape)} px are smaller than the denoiser patch ({cfg.patch} px)")
    rng = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr[0])
    model.train()
    losses = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = learning_rate(step, steps, *lr)
        src, tgt = _crops(rng, half1, half2, cfg.patch, cfg.batch)
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(src), tgt)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, steps, losses[-1])
    model.eval()
    return losses


# ----------------------------------------------------------------------------- inference


def _starts(size: int, window: int, step: int) -> list[int]:
    if size <= window:
        return [0]
    out = list(range(0, size - window, step))
    return out + [size - window]


@torch.no_grad()
def denoise_volume(model: UNet3D, volume: Tensor) -> Tensor:
    """``volume`` (z, y, x, prepared like the training maps) through ``model`` in windows of
    ``config.window`` px overlapping by ``config.overlap`` px; each voxel is taken from the window
    whose centre is nearest (M). Volumes smaller than a window go through whole (padded to a
    multiple of 2**depth by edge replication)."""
    cfg = model.config
    model.eval()
    mult = 2 ** cfg.depth
    shape = tuple(volume.shape)
    window = [min(cfg.window, -(-s // mult) * mult) for s in shape]
    padded = volume
    pads = [max(0, w - s) for w, s in zip(window, shape)]
    if any(pads):
        padded = nn.functional.pad(volume[None, None], (0, pads[2], 0, pads[1], 0, pads[0]), mode="replicate")[0, 0]
    out = torch.empty(shape, dtype=volume.dtype, device=volume.device)
    step = [max(1, w - cfg.overlap) for w in window]
    starts = [_starts(s, w, st) for s, w, st in zip(padded.shape, window, step)]
    # each voxel's window: the one whose centre is nearest, i.e. the boundaries halfway between centres
    bounds = []
    for axis, st in enumerate(starts):
        centres = [s + window[axis] / 2 for s in st]
        cut = [0] + [int(math.floor((c0 + c1) / 2)) for c0, c1 in zip(centres, centres[1:])] + [shape[axis]]
        bounds.append([(st[i], min(cut[i], shape[axis]), min(cut[i + 1], shape[axis])) for i in range(len(st))])
    for sz, z0, z1 in bounds[0]:
        for sy, y0, y1 in bounds[1]:
            for sx, x0, x1 in bounds[2]:
                if z1 <= z0 or y1 <= y0 or x1 <= x0:
                    continue
                tile = padded[sz:sz + window[0], sy:sy + window[1], sx:sx + window[2]]
                pred = model(tile[None, None].contiguous())[0, 0]
                out[z0:z1, y0:y1, x0:x1] = pred[z0 - sz:z1 - sz, y0 - sy:y1 - sy, x0 - sx:x1 - sx]
    return out
