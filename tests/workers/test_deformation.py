"""M's volume warp (tilt series) and doming (frame series): float64 gradient checks, analytic
identities against the existing geometry, settings parsing and schedule placement (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from mrepo.kernels.tilt_geometry import project_points, tilt_matrices
from mrepo.workers.deformation import doming_defocus, volume_warp_displacement
from mrepo.workers.geometry import DEFOCUS_UNIT, Parameters, ParticleSet, particle_geometry, updated_models
from mrepo.workers.item_model import ItemModel
from mrepo.workers.schedule import plan_schedule
from mrepo.workers.settings import RefineSettings

_F = torch.float64


def _tilts(n: int = 5) -> ItemModel:
    angles = np.linspace(-40, 40, n)
    pre = np.arange(n) * 3.0
    return ItemModel(kind="tilts", pixel_size=2.0, voltage=300.0, cs=2.7, amplitude_contrast=0.07, width=100,
                     height=80, n=n, dose=np.full(n, 3.0), pre_exposure=pre, time=pre / pre.max(),
                     ctf=np.tile([30000.0, 29000.0, 10.0], (n, 1)), global_shifts=np.zeros((n, 2)),
                     stage_angles=np.stack([np.zeros(n), angles, np.full(n, 85.0)], 1), stage_corrections=None,
                     image_warp=None, weights=None, volume_size=np.array([200.0, 160.0, 120.0]), hand=1.0)


def _frames(n: int = 6) -> ItemModel:
    pre = np.arange(n) * 1.0
    return ItemModel(kind="frames", pixel_size=1.5, voltage=300.0, cs=2.7, amplitude_contrast=0.07, width=128,
                     height=96, n=n, dose=np.ones(n), pre_exposure=pre, time=pre / pre.max(),
                     ctf=np.tile([15000.0, 14000.0, 20.0], (n, 1)), global_shifts=np.zeros((n, 2)),
                     stage_angles=None, stage_corrections=None, image_warp=None, weights=None, volume_size=None,
                     hand=1.0)


def _particles(model: ItemModel, p: int = 7, seed: int = 0) -> ParticleSet:
    rng = np.random.default_rng(seed)
    extent = model.volume_size if model.kind == "tilts" else np.array([model.width * 1.5, model.height * 1.5, 50.0])
    coords = rng.uniform(0.15, 0.85, (p, 1, 3)) * extent
    if model.kind == "frames":
        coords[..., 2] = rng.normal(0, 20, (p, 1))
    return ParticleSet(coords, rng.uniform(-90, 90, (p, 1, 3)))


def test_gradcheck_volume_warp_displacement_in_node_values():
    rng = np.random.default_rng(1)
    nodes = torch.from_numpy(rng.normal(size=(3, 3, 2, 2, 4))).requires_grad_(True)
    pos = torch.from_numpy(rng.uniform(0, 1, (5, 4, 3)) * [200.0, 160.0, 120.0])
    vol, t = torch.tensor([200.0, 160.0, 120.0], dtype=_F), torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=_F)
    assert gradcheck(lambda nd: volume_warp_displacement(nd, pos, vol, t), (nodes,))


def test_gradcheck_doming_in_node_values():
    rng = np.random.default_rng(2)
    nodes = torch.from_numpy(rng.normal(size=(3, 3, 5))).requires_grad_(True)
    pos = torch.from_numpy(rng.uniform(0, 1, (6, 4, 2)) * [128.0, 96.0])
    t = torch.tensor([0.0, 0.2, 0.6, 1.0], dtype=_F)
    assert gradcheck(lambda nd: doming_defocus(nd, pos, 128, 96, t), (nodes,))


def test_volume_warp_reproduces_an_affine_field_exactly():
    """A quadrilinear grid holds any field affine in (x, y, z) and linear in t: the nodes sampled from
    d(r, t) = t (D (r / V - 1/2) + b) give back d at arbitrary points."""
    rng = np.random.default_rng(3)
    vol = np.array([200.0, 160.0, 120.0])
    d_mat, b = rng.normal(size=(3, 3)) * 4.0, rng.normal(size=3)
    shape = (3, 2, 4, 2)

    def field(r: np.ndarray, t: np.ndarray) -> np.ndarray:
        return t[..., None] * ((r / vol - 0.5) @ d_mat.T + b)

    axes = [np.linspace(0, 1, g) for g in shape]
    gx, gy, gz, gt = np.meshgrid(*axes, indexing="ij")
    nodes = np.moveaxis(field(np.stack([gx, gy, gz], -1) * vol, gt), -1, 0)
    pos = rng.uniform(0, 1, (9, 5, 3)) * vol
    t = rng.uniform(0, 1, 5)
    got = volume_warp_displacement(torch.from_numpy(nodes), torch.from_numpy(pos), torch.from_numpy(vol),
                                   torch.from_numpy(t))
    np.testing.assert_allclose(got.numpy(), field(pos, np.broadcast_to(t, (9, 5))), atol=1e-10)


def test_uniform_volume_warp_moves_particles_like_a_translation_and_projects_analytically():
    """All nodes = d Å: every particle's position and depth are those of the particle moved by d,
    which is a (P, T, 3) translation of d / pixel px and, analytically, project_points(c + d)."""
    model, parts = _tilts(), _particles(_tilts())
    d = np.array([3.0, -2.0, 5.0])
    warped = Parameters.zeros(model, parts, None, (2, 2, 2, 3))
    warped.volume_warp[:] = torch.from_numpy(d / model.pixel_size)[:, None, None, None, None]
    moved = Parameters.zeros(model, parts, None)
    moved.translation[:] = torch.from_numpy(d / model.pixel_size)
    g1, g2 = particle_geometry(model, parts, warped), particle_geometry(model, parts, moved)
    torch.testing.assert_close(g1.positions, g2.positions)
    torch.testing.assert_close(g1.defocus_u, g2.defocus_u)
    a = tilt_matrices(*(torch.deg2rad(torch.from_numpy(model.stage_angles[:, k])) for k in range(3)))
    xy, depth = project_points(torch.from_numpy(parts.coordinates[:, 0] + d), a, torch.zeros(model.n, 2),
                               torch.from_numpy(model.volume_size), (model.width, model.height), model.pixel_size)
    torch.testing.assert_close(g1.positions, xy.transpose(0, 1))
    torch.testing.assert_close(g1.defocus_u, torch.from_numpy(model.ctf[:, 0])[None] + model.hand * depth.T)


def test_gradcheck_particle_geometry_through_volume_warp_and_doming():
    model, parts = _tilts(4), _particles(_tilts(4), 4)
    params = Parameters.zeros(model, parts, None, (2, 2, 2, 3))
    rng = np.random.default_rng(4)
    params.volume_warp.copy_(torch.from_numpy(rng.normal(size=params.volume_warp.shape)))
    x = params.volume_warp.clone().requires_grad_(True)

    def tilt_out(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params.volume_warp = v
        g = particle_geometry(model, parts, params)
        return g.positions, g.defocus_u

    assert gradcheck(tilt_out, (x,))
    fmodel, fparts = _frames(4), _particles(_frames(4), 5)
    fparams = Parameters.zeros(fmodel, fparts, None, None, (3, 2, 3))
    y = torch.from_numpy(rng.normal(size=(3, 2, 3))).requires_grad_(True)

    def frame_out(v: torch.Tensor) -> torch.Tensor:
        fparams.doming = v
        g = particle_geometry(fmodel, fparts, fparams)
        return torch.stack([g.defocus_u, g.defocus_v])

    assert gradcheck(frame_out, (y,))


def test_uniform_dome_adds_its_defocus_and_is_written_back_in_angstrom():
    model, parts = _frames(), _particles(_frames())
    base = particle_geometry(model, parts, Parameters.zeros(model, parts, None))
    params = Parameters.zeros(model, parts, None, None, (3, 3, 4))
    params.doming[:] = 0.25  # 25 Å
    geo = particle_geometry(model, parts, params)
    torch.testing.assert_close(geo.defocus_u - base.defocus_u, torch.full_like(base.defocus_u, 25.0))
    torch.testing.assert_close(geo.positions, base.positions)
    out = updated_models(model, params)
    np.testing.assert_allclose(out["doming"], np.full((3, 3, 4), 0.25 * DEFOCUS_UNIT))
    again = Parameters.zeros(_frames_with(doming=out["doming"]), parts, None, None, (3, 3, 4))
    torch.testing.assert_close(again.doming, params.doming)


def _frames_with(**kw) -> ItemModel:
    m = _frames()
    for k, v in kw.items():
        setattr(m, k, v)
    return m


def test_volume_warp_round_trips_through_the_item_model_in_angstrom():
    model, parts = _tilts(), _particles(_tilts())
    params = Parameters.zeros(model, parts, None, (2, 3, 2, 4))
    params.volume_warp[:] = torch.arange(params.volume_warp.numel(), dtype=_F).reshape(params.volume_warp.shape)
    out = updated_models(model, params)
    np.testing.assert_allclose(out["volume_warp"], params.volume_warp.numpy() * model.pixel_size)
    model.volume_warp = out["volume_warp"]
    torch.testing.assert_close(Parameters.zeros(model, parts, None, (2, 3, 2, 4)).volume_warp, params.volume_warp)
    # a different grid starts from zeros; no grid requested keeps the stored one
    assert float(Parameters.zeros(model, parts, None, (2, 2, 2, 2)).volume_warp.abs().sum()) == 0.0
    torch.testing.assert_close(Parameters.zeros(model, parts, None).volume_warp, params.volume_warp)


def test_settings_parse_grids_and_round_trip_through_json():
    s = RefineSettings(volume_warp="4x4x2x10", doming="3x3x5")
    assert s.volume_warp == (4, 4, 2, 10) and s.doming == (3, 3, 5)
    assert s.refines_anything
    body = s.to_json()
    assert body["volume_warp"] == [4, 4, 2, 10] and body["doming"] == [3, 3, 5]
    assert RefineSettings.from_json(body) == s
    with pytest.raises(ValueError, match=r"volume_warp must be 4 positive sizes \(x, y, z, time\).*'4x4x2'"):
        RefineSettings(volume_warp="4x4x2")
    with pytest.raises(ValueError, match="doming must be 3 positive sizes"):
        RefineSettings(doming="3x0x5")
    with pytest.raises(ValueError, match="volume_warp"):
        RefineSettings(volume_warp="4xax2x1")


def test_schedule_places_volume_warp_with_the_geometry_of_tilts_and_doming_with_the_ctf_of_frames():
    s = RefineSettings(volume_warp=(2, 2, 2, 3), doming=(3, 3, 5))
    tilts = plan_schedule(s, "tilts", False, {"a": 6.0}, {"a": 50.0}, 2.0, 300.0, 10)
    assert "volume_warp" in tilts.geometry and "doming" not in tilts.ctf
    frames = plan_schedule(s, "frames", False, {"a": 6.0}, {"a": 50.0}, 1.5, 300.0, 10)
    assert "doming" in frames.ctf and "volume_warp" not in frames.geometry
    coarse = plan_schedule(s, "frames", False, {"a": 20.0}, {"a": 50.0}, 1.5, 300.0, 10)
    assert "doming" not in coarse.ctf and "ctf" in coarse.skipped


def test_movement_reports_deformation_node_moves_in_their_units():
    from mrepo.workers.movement import UNITS, item_moves

    old = {"volume_warp": np.zeros((3, 2, 2, 2, 2)), "doming": None}
    new_w = np.zeros((3, 2, 2, 2, 2))
    new_w[:, 0, 0, 0, 0] = [3.0, 4.0, 0.0]  # 5 Å = 2.5 px at 2 Å/px
    moves = item_moves(old, {"volume_warp": new_w, "doming": np.full((3, 3, 2), 20.0)}, 2.0)
    assert moves["volume_warp"].max() == 2.5 and moves["volume_warp"].size == 16
    np.testing.assert_array_equal(moves["doming"], np.full(18, 20.0))
    assert UNITS["volume_warp"] == "px" and UNITS["doming"] == "Å"
    # a new grid shape counts from zero
    assert item_moves({"doming": np.ones((2, 2, 2))}, {"doming": np.ones((3, 3, 2))}, 2.0)["doming"].max() == 1.0
