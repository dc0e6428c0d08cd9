"""Noise2noise denoiser kernels against ground truth: simulated half-maps = true map + independent
noise; the denoised map must agree with the TRUE map better than the plain half-map average."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mrepo.kernels.denoise import (
    N_CUBE_ROTATIONS,
    DenoiserConfig,
    build_model,
    cube_rotation,
    denoise_volume,
    learning_rate,
    lowpass_filter,
    prepare_halves,
    train,
    whitening_filter,
)
from mrepo.kernels.fsc import fsc, shell_indices
from mrepo.sim.species import SpeciesSpec, build_species

torch.set_num_threads(1)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
TINY = DenoiserConfig(depth=1, width=8, max_width=16, patch=16, batch=2, window=32, overlap=8)


def _truth_and_halves(box: int = 32, pixel: float = 3.0, noise: float = 2.0, seed: int = 5):
    sp = build_species(SpeciesSpec("t", diameter=box * pixel * 0.6, n_atoms=300, box=box), pixel, 1)
    truth = torch.from_numpy(sp.map).double()
    truth = truth / truth.std()
    g = torch.Generator().manual_seed(seed)
    h1 = truth + noise * torch.randn(truth.shape, generator=g, dtype=torch.float64)
    h2 = truth + noise * torch.randn(truth.shape, generator=g, dtype=torch.float64)
    return truth, h1.float(), h2.float(), torch.from_numpy(sp.mask), pixel


def test_cube_rotations_are_the_24_proper_rotations():
    x = torch.randn(5, 6, 7, generator=torch.Generator().manual_seed(0))
    outs = [cube_rotation(x, k) for k in range(N_CUBE_ROTATIONS)]
    keys = {(tuple(o.shape), o.flatten()[:20].numpy().tobytes()) for o in outs}
    assert len(keys) == 24  # all distinct
    assert torch.equal(outs[0], x)
    mirror = torch.flip(x, (0,))
    assert not any(o.shape == mirror.shape and torch.equal(o, mirror) for o in outs)  # no reflections
    for o in outs:
        assert sorted(o.shape) == [5, 6, 7] and torch.isclose(o.sum(), x.sum())


def test_whitening_flattens_the_spectrum_beyond_10_angstrom():
    box, pixel = 32, 2.0
    shells = shell_indices((box,) * 3).clamp(max=box // 2)
    g = torch.Generator().manual_seed(1)
    phases = torch.exp(2j * math.pi * torch.rand(shells.shape, generator=g, dtype=torch.float64))
    ft = phases / (1.0 + shells.double()) ** 2
    vol = torch.fft.irfftn(ft, s=(box,) * 3)
    f = whitening_filter(vol, None, pixel)
    start = int(pixel * 2 / 10 * (box // 2))
    assert torch.all(f[:start] == 1)
    amp = torch.fft.rfftn(vol).abs() * f[shells]
    means = torch.stack([amp[shells == s].mean() for s in range(start, box // 2)])
    assert float(means.max() / means.min()) < 1.3  # falls by (1+s)^2 ~ 10x over these shells without it


def test_lowpass_filter_passes_below_and_stops_beyond_the_resolution():
    f = lowpass_filter(64, 1.0, 8.0)  # cut at shell 64 / 8 = 8, edge 0.05 * 32 = 1.6 shells
    assert torch.all(f[:9] == 1) and torch.all(f[10:] == 0) and 0 < float(f[9]) < 1


def test_learning_rate_falls_exponentially_from_1e3_to_1e5():
    assert learning_rate(0, 101) == pytest.approx(1e-3)
    assert learning_rate(50, 101) == pytest.approx(1e-4)
    assert learning_rate(100, 101) == pytest.approx(1e-5)


def test_untrained_network_is_the_identity_and_tiles_cover_every_voxel():
    model = build_model(TINY, seed=0)
    vol = torch.randn(20, 40, 37, generator=torch.Generator().manual_seed(2))
    assert torch.equal(denoise_volume(model, vol), vol)


def test_tiled_inference_matches_whole_volume_inference_away_from_tile_seams():
    model = build_model(TINY, seed=0)
    torch.nn.init.normal_(model.out.weight, std=0.3, generator=torch.Generator().manual_seed(3))
    vol = torch.randn(48, 48, 48, generator=torch.Generator().manual_seed(4))
    big = build_model(DenoiserConfig(**{**TINY.to_json(), "window": 48}), seed=1)
    big.load_state_dict(model.state_dict())
    whole = denoise_volume(big, vol)  # one window
    tiled = denoise_volume(model, vol)  # windows of 32 overlapping by 8
    assert torch.isfinite(tiled).all()
    # the correction differs only within the receptive field of a window edge
    corr = np.corrcoef((tiled - vol).flatten().numpy(), (whole - vol).flatten().numpy())[0, 1]
    assert corr > 0.8


@pytest.mark.parametrize("device", DEVICES)
def test_denoised_map_is_closer_to_the_truth_than_the_half_map_average(device):
    truth, h1, h2, mask, pixel = _truth_and_halves()
    prep = prepare_halves(h1.to(device), h2.to(device), mask.to(device), pixel, None)
    model = build_model(TINY, seed=0, device=device)
    losses = train(model, prep.half1, prep.half2, steps=50, seed=0, lr=(1e-2, 1e-3))
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    den = ((denoise_volume(model, prep.half1) + denoise_volume(model, prep.half2)) / 2).double().cpu()
    den = den * prep.std + prep.mean
    avg = (h1.double() + h2.double()) / 2
    f_den, f_avg = fsc(den, truth).numpy(), fsc(avg, truth).numpy()
    mid = slice(4, 12)  # 24 .. 8 Å at 3 Å/px in a 32 px box
    assert f_den[mid].mean() > f_avg[mid].mean() + 0.04, (f_den, f_avg)
    assert np.all(f_den[mid] > f_avg[mid] - 0.02)


def test_training_is_deterministic_for_a_fixed_seed():
    _, h1, h2, mask, pixel = _truth_and_halves(box=24)
    prep = prepare_halves(h1, h2, mask, pixel, None)
    states = []
    for seed in (7, 7, 8):
        model = build_model(TINY, seed=seed)
        train(model, prep.half1, prep.half2, steps=3, seed=seed)
        states.append(torch.cat([p.detach().flatten() for p in model.state_dict().values()]))
    assert torch.equal(states[0], states[1])
    assert not torch.equal(states[0], states[2])


def test_training_refuses_maps_smaller_than_the_patch():
    model = build_model(TINY, seed=0)
    small = torch.zeros(12, 12, 12)
    with pytest.raises(ValueError, match="smaller than the denoiser patch"):
        train(model, small, small, steps=1, seed=0)


def test_config_checks_sizes():
    with pytest.raises(ValueError, match="multiples of 2\\*\\*depth"):
        DenoiserConfig(depth=2, patch=18)


def test_denoise_kernel_imports_only_torch_and_the_standard_library():
    import ast
    from pathlib import Path

    import mrepo.kernels.denoise as mod

    roots = set()
    for node in ast.walk(ast.parse(Path(mod.__file__).read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
            assert node.module is None or not node.module.startswith("mrepo.") or node.module.startswith("mrepo.kernels")
    assert roots <= {"torch", "math", "collections", "dataclasses", "__future__", "mrepo"}
