"""The refiner's tilt geometry follows RELION's two centres for odd tomogram sizes, as the kernel does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrepo.kernels.tilt_geometry import project_points, tilt_matrices
from mrepo.workers.geometry import Parameters, ParticleSet, particle_geometry
from mrepo.workers.item_model import ItemModel


def _model(volume_px: tuple[int, int, int], n: int = 5) -> ItemModel:
    ps = 2.0
    angles = np.linspace(-40, 40, n)
    pre = np.arange(n) * 3.0
    return ItemModel(
        kind="tilts",
        pixel_size=ps,
        voltage=300.0,
        cs=2.7,
        amplitude_contrast=0.07,
        width=101,
        height=81,
        n=n,
        dose=np.full(n, 3.0),
        pre_exposure=pre,
        time=pre / pre.max(),
        ctf=np.tile([30000.0, 29000.0, 10.0], (n, 1)),
        global_shifts=np.zeros((n, 2)),
        stage_angles=np.stack([np.full(n, 1.5), angles, np.full(n, 85.0)], 1),
        stage_corrections=None,
        image_warp=None,
        weights=None,
        volume_size=np.asarray(volume_px, np.float64) * ps,
        hand=1.0,
    )


@pytest.mark.parametrize("volume_px", [(101, 81, 61), (100, 80, 60), (101, 80, 61)])
def test_positions_and_depth_match_project_points(volume_px: tuple[int, int, int]) -> None:
    model = _model(volume_px)
    rng = np.random.default_rng(3)
    parts = ParticleSet(rng.uniform(0.2, 0.8, (9, 1, 3)) * model.volume_size, rng.uniform(-90, 90, (9, 1, 3)))
    geo = particle_geometry(model, parts, Parameters.zeros(model, parts, None))
    a = tilt_matrices(*(torch.deg2rad(torch.from_numpy(model.stage_angles[:, k])) for k in range(3)))
    xy, depth = project_points(
        torch.from_numpy(parts.coordinates[:, 0]),
        a,
        torch.zeros(model.n, 2),
        torch.from_numpy(model.volume_size),
        (model.width, model.height),
        model.pixel_size,
    )
    torch.testing.assert_close(geo.positions, xy.transpose(0, 1))
    torch.testing.assert_close(geo.defocus_u, torch.from_numpy(model.ctf[:, 0])[None] + model.hand * depth.T)
