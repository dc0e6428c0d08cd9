"""Refine a small simulated population, export it as RELION files and compare every exported value with the
refined internal one (tilt series: folded stage angles, shifts, defocus; frames: per-particle defocus,
motion STAR, aligned micrograph; particles: positions and poses after re-import)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile
import torch
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workers"))
from simdata import build_repo, frames_sim, tilts_sim  # noqa: E402

from mrepo.graph import Repository  # noqa: E402
from mrepo.io import SpeciesFiles, import_relion5_tomo  # noqa: E402
from mrepo.io.export_relion import export_relion, population_items  # noqa: E402
from mrepo.kernels.rotations import xyz_to_matrix  # noqa: E402
from mrepo.kernels.tilt_geometry import project_points, tilt_matrices  # noqa: E402
from mrepo.workers.driver import refine_population  # noqa: E402
from mrepo.workers.executors import LocalExecutor  # noqa: E402
from mrepo.workers.settings import RefineSettings  # noqa: E402

torch.set_num_threads(1)
SETTINGS = RefineSettings(refine_shifts=True, refine_defocus=True, refine_astigmatism=True,
                          refine_stage_angles=True, refine_poses=True, image_warp=(3, 3, 2), lbfgs_iterations=4,
                          rounds=1, ctf_min_resolution=60.0, defocus_search_iterations=2, require_both_halves=False)


def _arr(repo, item, name):
    h = item.models.get(name)
    return None if h is None else np.asarray(repo.objects.get_array(h), np.float64)


def _refined(sim, name: str):
    """A memory repository built from ``sim`` and refined for one iteration (SETTINGS)."""
    sr = build_repo(sim, resolution=12.0, url=f"memory://relion-export-{name}-{uuid.uuid4().hex}")
    refine_population(sr.repo, "main", 1, SETTINGS, LocalExecutor(use_cache=False))
    return sr.repo


@pytest.fixture(scope="module")
def refined_tilts():
    return _refined(tilts_sim(n_particles=6, size=96, box=24, max_tilt=30.0, tilt_step=15.0), "tilts")


def test_tilt_series_export_equals_refined_state(refined_tilts, tmp_path):
    repo = refined_tilts
    out = tmp_path / "out"
    export_relion(repo, "main", out)
    pop = repo.population()
    (item,) = population_items(repo, pop).values()
    stage, corr = _arr(repo, item, "stage_angles"), _arr(repo, item, "stage_corrections")
    ctf, shifts = _arr(repo, item, "ctf"), _arr(repo, item, "global_shifts")
    assert corr is not None and np.abs(corr).max() > 0, "refinement should have corrected the stage angles"
    ts = starfile.read(out / f"tilt_series/{item.name}.star", always_dict=True)[item.name]
    # defocus and shifts: the refined arrays, bit for bit (shortest round-trip float text)
    np.testing.assert_array_equal(ts[["rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"]].to_numpy(), ctf)
    np.testing.assert_array_equal(ts[["rlnTomoXShiftAngst", "rlnTomoYShiftAngst"]].to_numpy(), shifts)
    # stage angles: RELION's matrix of the exported angles is the refined orientation Rxyz(ω) A
    exported = torch.deg2rad(torch.from_numpy(ts[["rlnTomoXTilt", "rlnTomoYTilt", "rlnTomoZRot"]].to_numpy()))
    a = tilt_matrices(*torch.deg2rad(torch.from_numpy(stage)).unbind(-1))
    refined = xyz_to_matrix(torch.deg2rad(torch.from_numpy(corr))) @ a
    np.testing.assert_allclose(tilt_matrices(*exported.unbind(-1)).numpy(), refined.numpy(), atol=1e-12)
    # image warp: not representable in RELION, written to the sidecar with the refined nodes
    warp = _arr(repo, item, "image_warp")
    if warp is not None:
        import json

        side = json.loads((out / f"image_warp/{item.name}.json").read_text())
        np.testing.assert_array_equal(np.reshape(side["nodes"], side["shape"]), warp)
    # particles: re-import the exported files and compare positions and poses with the refined table
    for name, h in pop.species.items():
        sp = repo.species(h)
        table = repo.particles(sp.particles)
        repo2 = Repository.init(str(tmp_path / f"re_{name}"))
        res = import_relion5_tomo(repo2, out / "tomograms.star", source="sim", project=out,
                                  particles=out / f"{name}/particles.star",
                                  species=SpeciesFiles(name, out / f"{name}/half1.mrc", out / f"{name}/half2.mrc",
                                                       out / f"{name}/mask.mrc", sp.diameter, sp.symmetry))
        back = repo2.particles(repo2.species(res.species[name]).particles)
        np.testing.assert_array_equal(back.ids, table.ids)
        np.testing.assert_allclose(back.coordinates[:, 0], table.coordinates[:, 0], rtol=0, atol=1e-9)
        r_in = Rotation.from_euler("ZYZ", table.angles[:, 0], degrees=True)
        r_out = Rotation.from_euler("ZYZ", back.angles[:, 0], degrees=True)
        assert np.max((r_in.inv() * r_out).magnitude()) < 1e-9
        # what a RELION user sees: projections with the exported (folded) angles vs mrepo's positions,
        # which M's orientation-only stage corrections leave unchanged: |ω| * distance from the centre
        vol = torch.tensor(item.imaging["volume_dimensions"])
        dims = item.imaging["dimensions"][:2]
        pix = float(item.imaging["pixel_size"])
        pts = torch.from_numpy(table.coordinates[:, 0])
        seen, _ = project_points(pts, tilt_matrices(*exported.unbind(-1)), torch.from_numpy(shifts), vol, dims, pix)
        internal, _ = project_points(pts, a, torch.from_numpy(shifts), vol, dims, pix)
        bound = np.deg2rad(np.abs(corr).sum(1).max()) * float(torch.linalg.norm(pts - vol / 2, dim=-1).max()) / pix
        assert float((seen - internal).norm(dim=-1).max()) <= bound + 1e-9


def test_tilt_series_export_without_folding_keeps_positions(refined_tilts, tmp_path):
    """--no-fold-stage: the stage angles as refined positions use them, ω in the sidecar."""
    import json

    repo = refined_tilts
    out = tmp_path / "out"
    export_relion(repo, "main", out, fold_stage=False)
    (item,) = population_items(repo, repo.population()).values()
    ts = starfile.read(out / f"tilt_series/{item.name}.star", always_dict=True)[item.name]
    np.testing.assert_array_equal(ts[["rlnTomoXTilt", "rlnTomoYTilt", "rlnTomoZRot"]].to_numpy(),
                                  _arr(repo, item, "stage_angles"))
    side = json.loads((out / f"stage_corrections/{item.name}.json").read_text())
    np.testing.assert_array_equal(side["corrections"], _arr(repo, item, "stage_corrections"))


@pytest.fixture(scope="module")
def refined_frames():
    return _refined(frames_sim(n_particles=6, n_frames=3, size=96, box=24), "frames")


def test_frame_series_export_equals_refined_state(refined_frames, tmp_path):
    from mrepo.workers.positions import micrograph_positions

    repo = refined_frames
    out = tmp_path / "out"
    export_relion(repo, "main", out, positions=lambda it, c, a: micrograph_positions(repo.objects, it, c, a))
    pop = repo.population()
    (item,) = population_items(repo, pop).values()
    ctf, shifts = _arr(repo, item, "ctf"), _arr(repo, item, "global_shifts")
    pix = float(item.imaging["pixel_size"])
    mics = starfile.read(out / "micrographs.star", always_dict=True)
    row = mics["micrographs"].iloc[0]
    np.testing.assert_array_equal([row["rlnDefocusU"], row["rlnDefocusV"], row["rlnDefocusAngle"]], ctf[0])
    # the micrograph is the movie summed with the refined shifts; its motion STAR holds them as RELION's aligning
    # shifts (pixels, opposite sign)
    assert row["rlnMicrographName"] == f"micrographs/{item.name}.mrc"
    assert (out / row["rlnMicrographName"]).is_file()
    motion = starfile.read(out / row["rlnMicrographMetadata"], always_dict=True)
    gs = motion["global_shift"]
    np.testing.assert_allclose(-gs[["rlnMicrographShiftX", "rlnMicrographShiftY"]].to_numpy() * pix, shifts,
                               rtol=0, atol=1e-9)
    assert motion["general"]["rlnImageSizeZ"] == len(shifts)
    with mrcfile.open(out / row["rlnMicrographName"]) as m:
        assert m.data.shape == tuple(item.imaging["dimensions"][1::-1])
    for name, h in pop.species.items():
        table = repo.particles(repo.species(h).particles)
        df = starfile.read(out / f"{name}/particles.star", always_dict=True)["particles"]
        df = df.set_index("rlnMrepoParticleId").loc[table.ids]
        # per-particle defocus: item CTF + the particle's refined height (no residual for simulated particles)
        z = table.coordinates[:, 0, 2]
        np.testing.assert_allclose((df["rlnDefocusU"] + df["rlnDefocusV"]).to_numpy() / 2,
                                   (ctf[0, 0] + ctf[0, 1]) / 2 + z, rtol=0, atol=1e-9)
        np.testing.assert_allclose((df["rlnDefocusU"] - df["rlnDefocusV"]).to_numpy(), ctf[0, 0] - ctf[0, 1],
                                   rtol=0, atol=1e-9)
        # position in the aligned micrograph as refinement sees it: trajectory + image warp averaged over the
        # frames (global shifts cancel in the aligned sum); the refined warp moves it off the bare trajectory
        x = df["rlnCoordinateX"].to_numpy() * pix - df.get("rlnOriginXAngst", 0.0)
        y = df["rlnCoordinateY"].to_numpy() * pix - df.get("rlnOriginYAngst", 0.0)
        internal = micrograph_positions(repo.objects, item, table.coordinates, table.angles)
        np.testing.assert_allclose(np.stack([x, y], 1), internal, rtol=0, atol=1e-9)
        assert _arr(repo, item, "image_warp") is not None
        assert np.abs(internal - table.coordinates[:, 0, :2]).max() > 1e-6


def test_micrograph_refined_state_export(tmp_path):
    """A RELION micrograph (one frame) after a model update as refinement writes it: the exported coordinates
    include its global shift, defocus = refined item CTF + the particle's height + its astigmatism residual."""
    from dataclasses import replace

    from relion5_layouts import MICS, ctfrefine_spa

    from mrepo.graph import ParticleTable, Population
    from mrepo.io import import_relion_spa

    root = tmp_path / "proj"
    proj = ctfrefine_spa(root)
    repo = Repository.init(str(tmp_path / "repo"))
    import_relion_spa(repo, proj["particles"], source="mics", project=root, micrographs=proj["micrographs"],
                      species=SpeciesFiles("apo", proj["half1"], proj["half2"], proj["mask"], 120.0, "C2"))
    pop = repo.population()
    src = repo.source(pop.sources["mics"])
    shift = np.array([[3.5, -2.25]])
    new_items, new_ctf = {}, {}
    for key, h in src.items.items():
        it = repo.item(h)
        ctf = _arr(repo, it, "ctf") + [[120.0, -80.0, 1.5]]
        new_ctf[key] = ctf[0]
        models = {**it.models, "ctf": repo.objects.put_array(ctf), "global_shifts": repo.objects.put_array(shift)}
        new_items[key] = replace(it, models=models).save(repo.objects)
    sp = repo.species(pop.species["apo"])
    t = repo.particles(sp.particles)
    coords = t.coordinates.copy()
    coords[:, :, 2] += np.arange(len(t))[:, None] * 7.5  # refined heights
    t2 = ParticleTable(t.ids, t.item_index, t.items, coords, t.angles, t.half, t.extra)
    sp2 = replace(sp, particles=t2.save(repo.objects))
    pop2 = Population(pop.name, {"mics": replace(src, items=new_items).save(repo.objects)},
                      {"apo": sp2.save(repo.objects)}, pop.metadata)
    repo.commit(pop2, message="model update", operation={"name": "test-refine"})
    out = tmp_path / "out"
    export_relion(repo, "main", out, project=root)
    mics = starfile.read(out / "micrographs.star", always_dict=True)["micrographs"].set_index("rlnMicrographName")
    items = {it.key: it for it in population_items(repo, repo.population()).values()}
    for key, it in items.items():
        row = mics.loc[f"MotionCorr/job002/Movies/{it.name}.mrc"]
        np.testing.assert_array_equal([row["rlnDefocusU"], row["rlnDefocusV"], row["rlnDefocusAngle"]], new_ctf[key])
    df = starfile.read(out / "apo/particles.star", always_dict=True)["particles"]
    df = df.set_index("rlnMrepoParticleId").loc[t2.ids]
    keys = t2.item_keys()
    pix = np.array([float(items[k].imaging["pixel_size"]) for k in keys])
    x = df["rlnCoordinateX"].to_numpy() * pix - df["rlnOriginXAngst"].to_numpy()
    y = df["rlnCoordinateY"].to_numpy() * pix - df["rlnOriginYAngst"].to_numpy()
    np.testing.assert_allclose(np.stack([x, y], 1), t2.coordinates[:, 0, :2] + shift[0], rtol=0, atol=1e-9)
    ictf = np.stack([new_ctf[k] for k in keys])
    res = t2.extra["ctf_residual"]
    mean = (ictf[:, 0] + ictf[:, 1]) / 2 + t2.coordinates[:, 0, 2]
    half = (ictf[:, 0] - ictf[:, 1]) / 2 + res[:, 0]
    np.testing.assert_allclose(df["rlnDefocusU"], mean + half, rtol=0, atol=1e-9)
    np.testing.assert_allclose(df["rlnDefocusV"], mean - half, rtol=0, atol=1e-9)
    np.testing.assert_allclose(df["rlnDefocusAngle"], ictf[:, 2] + res[:, 1], rtol=0, atol=1e-9)
    assert len(MICS) == len(items)
    # unrefined particle columns still come back as imported
    src_df = starfile.read(proj["particles"], always_dict=True)["particles"].set_index("rlnImageName")
    got = df.set_index("rlnImageName").loc[src_df.index]
    np.testing.assert_array_equal(got["rlnCtfBfactor"], src_df["rlnCtfBfactor"])
    np.testing.assert_array_equal(got["rlnCoordinateX"], src_df["rlnCoordinateX"])
