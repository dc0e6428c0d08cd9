"""The refinement device (``RefineSettings.device``): the CPU path explicitly equals the default, no
tensor of the refinement path is created on an implicit CPU device (static check of the source), and
on a machine with CUDA the CUDA path agrees with the CPU one."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import mrepo
from mrepo.cli import app
from mrepo.graph import Repository
from mrepo.store import InvalidInput
from mrepo.workers.api import ItemTask
from mrepo.workers.device import resolve_device
from mrepo.workers.refine_item import refine_item
from mrepo.workers.settings import RefineSettings
from tests.workers.simdata import build_repo, frames_sim, tilts_sim

torch.set_num_threads(1)
CUDA = torch.cuda.is_available()

#: Modules of the refinement and back-projection path (workers) and the kernels they call. Not here, host
#: code by design: workers/reconstruct.py (the driver's reconstruction of each species from the numpy
#: half-set sums, once per iteration), raw_data.py (reads exposures into host memory; extract_groups moves
#: the patches), kernels/denoise.py (the denoiser has its own --denoise-device).
_ROOT = Path(mrepo.__file__).parent
REFINEMENT_MODULES = [_ROOT / "workers" / f"{m}.py" for m in (
    "refine_item", "objective", "stages", "backproject", "imaging", "geometry", "deformation", "optics",
    "tilt_movie_stage", "tilt_movies", "exposure_spectra", "references")] + sorted(
    p for p in (_ROOT / "kernels").glob("*.py") if p.name not in ("__init__.py", "denoise.py"))

#: torch functions that make a new tensor on the default (CPU) device unless told ``device=``.
FACTORIES = {"zeros", "ones", "empty", "full", "arange", "linspace", "logspace", "eye", "tensor", "as_tensor",
             "rand", "randn", "randint", "fftfreq", "rfftfreq"}
#: A line with this comment (``# host`` or ``# host: why``) makes a deliberate host (CPU) tensor or array: bookkeeping that never
#: meets device data, or a result handed back as numpy.
HOST = "# host"


def _torch_call(node: ast.Call) -> str | None:
    """``zeros`` for ``torch.zeros(...)``/``torch.fft.rfftfreq(...)``; None for anything else."""
    f = node.func
    if isinstance(f, ast.Attribute):
        base = f.value
        if isinstance(base, ast.Name) and base.id == "torch":
            return f.attr
        if isinstance(base, ast.Attribute) and base.attr == "fft" and isinstance(base.value, ast.Name) \
                and base.value.id == "torch":
            return f.attr
    return None


def implicit_cpu_calls(path: Path, root: Path = _ROOT.parent) -> list[str]:
    """``file:line: reason`` for each tensor creation without a device, ``torch.from_numpy`` not moved
    with ``.to(device=...)``, and ``.numpy()`` not preceded by ``.cpu()`` (fails on a CUDA tensor)."""
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    out = []

    def marked(node: ast.AST) -> bool:
        return any(HOST in lines[i - 1] for i in range(node.lineno, node.end_lineno + 1))

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _torch_call(node)
        kw = {k.arg for k in node.keywords}
        reason = None
        if name in FACTORIES and "device" not in kw:
            reason = f"torch.{name}(...) without device="
        elif name == "from_numpy":
            up = parents.get(node)
            call = parents.get(up) if isinstance(up, ast.Attribute) and up.attr == "to" else None
            if not (isinstance(call, ast.Call) and "device" in {k.arg for k in call.keywords}):
                reason = "torch.from_numpy(...) not followed by .to(device=...)"
        elif isinstance(node.func, ast.Attribute) and node.func.attr == "numpy" and not node.args:
            recv = node.func.value
            if not (isinstance(recv, ast.Call) and isinstance(recv.func, ast.Attribute) and recv.func.attr == "cpu"):
                reason = ".numpy() without .cpu()"
        if reason and not marked(node):
            out.append((node.lineno, f"{path.relative_to(root)}:{node.lineno}: {reason}"))
    return [o for _, o in sorted(out)]


def test_no_implicit_cpu_tensors_in_the_refinement_path():
    offenders = [o for p in REFINEMENT_MODULES for o in implicit_cpu_calls(p)]
    assert not offenders, "tensors on an implicit CPU device (pass device=, or end the line with "\
        f"'{HOST}' for deliberate host data):\n" + "\n".join(offenders)


def test_the_static_check_finds_implicit_cpu_calls(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import torch\n"
                   "a = torch.zeros(3)\n"
                   "b = torch.zeros(3, device=x.device)\n"
                   "c = torch.from_numpy(n).to(torch.float64)\n"
                   "d = torch.from_numpy(n).to(device=x.device)\n"
                   "e = torch.fft.rfftfreq(4)\n"
                   "f = t.numpy()\n"
                   "g = t.cpu().numpy()\n"
                   "h = torch.arange(4)  # host\n")
    found = [o.split(": ", 1)[1] for o in implicit_cpu_calls(src, tmp_path)]
    assert found == ["torch.zeros(...) without device=", "torch.from_numpy(...) not followed by .to(device=...)",
                     "torch.rfftfreq(...) without device=", ".numpy() without .cpu()"]


# ----------------------------------------------------------------------------- settings and command line


def _said(res) -> str:
    """The command's output with rich's box and line wrapping removed."""
    return " ".join(res.output.replace("│", " ").split())


def test_device_spelling_is_checked_once_in_the_settings():
    assert RefineSettings().device == "cpu" and RefineSettings(device="cuda:1").to_json()["device"] == "cuda:1"
    for bad in ("gpu", "cuda:x", "CPU", ""):
        with pytest.raises(ValueError, match="refinement device .*use cpu, cuda or cuda:N"):
            RefineSettings(device=bad)
    # settings recorded before the device existed still parse (as cpu)
    body = RefineSettings().to_json()
    del body["device"]
    assert RefineSettings.from_json(body).device == "cpu"


@pytest.mark.skipif(CUDA, reason="checks the refusal on machines without CUDA")
def test_cuda_without_cuda_is_a_one_line_error(tmp_path):
    with pytest.raises(InvalidInput, match="refinement device 'cuda': CUDA is not available"):
        resolve_device("cuda", "refinement device")
    url = str(tmp_path / "repo")
    Repository.init(url)
    for cmd in ("refine", "reconstruct"):
        res = CliRunner().invoke(app, [cmd, "--repo", url, "--device", "cuda"])
        assert res.exit_code == 2 and "CUDA is not available on this machine" in _said(res), res.output


def test_ray_device_must_be_the_actor_gpu(tmp_path):
    url = str(tmp_path / "repo")
    Repository.init(url)
    res = CliRunner().invoke(app, ["refine", "--repo", url, "--device", "cuda:1", "--executor", "ray"])
    assert res.exit_code == 2 and "with --executor ray use --device cuda" in _said(res), res.output


def test_cli_device_is_recorded_in_the_operation(tmp_path):
    url = str(tmp_path / "repo")
    build_repo(frames_sim(n_particles=4, n_frames=3), url=url, resolution=12.0)
    res = CliRunner().invoke(app, ["refine", "--repo", url, "--no-refine-shifts", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["reconstruct", "--repo", url, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    ops = [c.operation for _, c in Repository.open(url).log("main")[:2]]
    assert [op["name"] for op in ops] == ["reconstruct", "refine"]
    assert all(op["settings"]["device"] == "cpu" for op in ops)


# ----------------------------------------------------------------------------- refine_item on a device


def _task(sr, settings: RefineSettings | dict) -> ItemTask:
    pop = sr.repo.population()
    ih = sr.repo.source(pop.sources["sim"]).items[sr.item_key]
    body = settings.to_json() if isinstance(settings, RefineSettings) else settings
    return ItemTask(sr.repo.url, "sim", sr.item_key, ih, dict(pop.species), body, 1, 0)


#: every geometry group of a tilt series and the CTF (the limit reaches ctf_min_resolution), short L-BFGS
RICH = RefineSettings(refine_shifts=True, image_warp=(2, 2, 2), refine_poses=True, refine_defocus=True,
                      refine_astigmatism=True, refine_stage_angles=True, ctf_min_resolution=20.0,
                      lbfgs_iterations=4, rounds=1, defocus_search_iterations=2, particle_batch=4)


def _outcome(sr, result) -> dict[str, np.ndarray]:
    """Every number refine_item hands back or stores: item models, particle arrays, half-set sums."""
    objects = sr.repo.objects
    item = sr.repo.item(result.item_hash)
    out = {f"model {k}": np.asarray(objects.get_array(h)) for k, h in sorted(item.models.items())}
    from mrepo.workers.refine_item import load_item_particles

    for name, h in sorted(result.particles.items()):
        for key, arr in zip(("ids", "coordinates", "angles"), load_item_particles(objects, h)):
            out[f"{name} {key}"] = np.asarray(arr)
    for name, sums in sorted(result.sums.items()):
        data, weight = sums.to_float()
        out[f"{name} data"], out[f"{name} weight"] = data, weight
    return out


def test_explicit_cpu_device_gives_the_default_results():
    sr = build_repo(tilts_sim(n_particles=6, snr=1.0), resolution=12.0)
    default = RICH.to_json()
    del default["device"]  # as settings recorded before the device setting existed
    a = refine_item(_task(sr, default))
    b = refine_item(_task(sr, RICH.replace(device="cpu")))
    assert a.stats["target_after"] != a.stats["target_before"]  # something was refined
    assert a.item_hash == b.item_hash and a.particles == b.particles
    oa, ob = _outcome(sr, a), _outcome(sr, b)
    assert oa.keys() == ob.keys()
    for k in oa:
        np.testing.assert_array_equal(oa[k], ob[k], err_msg=k)


@pytest.mark.skipif(not CUDA, reason="no CUDA on this machine")
@pytest.mark.parametrize("kind", ["frames", "tilts"])
def test_cuda_refinement_matches_cpu(kind):
    sim = tilts_sim(n_particles=6, snr=1.0) if kind == "tilts" else frames_sim(n_particles=8, n_frames=4, snr=1.0)
    sr = build_repo(sim, resolution=12.0)
    settings = RICH if kind == "tilts" else RICH.replace(refine_stage_angles=False)
    cpu = _outcome(sr, refine_item(_task(sr, settings)))
    gpu_result = refine_item(_task(sr, settings.replace(device="cuda")))
    gpu = _outcome(sr, gpu_result)
    assert cpu.keys() == gpu.keys()
    for k in cpu:
        a, b = cpu[k].astype(np.float64), gpu[k].astype(np.float64)
        if k.endswith(("data", "weight")):  # half-set sums: relative to their size
            assert np.linalg.norm(a - b) <= 1e-3 * np.linalg.norm(a), k
        else:  # refined parameters (Å, degrees): L-BFGS on float32 FFTs of two libraries
            np.testing.assert_allclose(b, a, rtol=0, atol=0.05 if "angles" in k else 0.5, err_msg=k)


@pytest.mark.skipif(not CUDA, reason="no CUDA on this machine")
def test_cuda_backprojection_matches_cpu():
    sr = build_repo(tilts_sim(n_particles=6, snr=1.0), resolution=12.0)
    off = RefineSettings(refine_shifts=False)
    cpu = refine_item(_task(sr, off)).sums
    gpu = refine_item(_task(sr, off.replace(device="cuda"))).sums
    for name in cpu:
        (a, wa), (b, wb) = cpu[name].to_float(), gpu[name].to_float()
        assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(a) and np.linalg.norm(wa - wb) <= 1e-5 * np.linalg.norm(wa)
