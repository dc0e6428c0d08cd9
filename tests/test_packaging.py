"""Packaging: declared dependencies are what the runtime imports; the extras (ray, server, s3) are
optional with a one-line ``pip install 'mrepo[...]'`` error (exit 10) when missing; the wheel carries
the web view's static files. (The full fresh-venv install check is scripts/check_wheel.sh, run by CI.)"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME_EXTRAS = ("ray", "server", "s3", "zarr", "gpu")
EXTRA_MODULES = ("ray", "fastapi", "uvicorn", "starlette", "s3fs", "botocore", "zarr")  # (typer needs pydantic)


def _names(requirements: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower().replace("_", "-") for r in requirements}


def _imported_top_level_modules() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "mrepo").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"mrepo"}


def test_runtime_dependencies_are_what_the_runtime_imports() -> None:
    core = _names(PYPROJECT["dependencies"])
    extras = PYPROJECT["optional-dependencies"]
    runtime = core | set().union(*(_names(extras[e]) for e in RUNTIME_EXTRAS))
    dists = importlib.metadata.packages_distributions()
    imported = {}
    for module in _imported_top_level_modules():
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        imported[module] = names
        assert names & runtime or module == "cupy", f"mrepo imports {module!r} but no runtime dependency declares it"
    imported_dists = set().union(*imported.values())
    assert not (core - imported_dists), f"declared but never imported: {core - imported_dists}"
    assert "zarr" not in core and "zarr" in _names(extras["dev"])  # tests and the named-map store only
    (everything,) = extras["all"]
    assert sorted(re.fullmatch(r"mrepo\[(.*)\]", everything).group(1).split(",")) == ["ray", "s3", "server", "zarr"]


def _run_without(modules: tuple[str, ...], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``mrepo ARGS`` in a fresh interpreter in which ``modules`` cannot be imported (an install
    without the extras)."""
    code = ("import sys\nfor m in sys.argv[1].split(','):\n    sys.modules[m] = None\n"
            "sys.argv = ['mrepo', *sys.argv[2:]]\nfrom mrepo.cli import main\nmain()\n")
    return subprocess.run([sys.executable, "-c", code, ",".join(modules), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_core_commands_work_without_any_extra(tmp_path: Path) -> None:
    for args in (["--help"], ["init", "lab"],
                 ["sim", "frames", "--out", "sim", "--particles", "3", "--species", "1", "--frames", "2", "--size", "64",
                  "--box", "24"],
                 ["--repo", "lab", "import", "sim", "sim"], ["--repo", "lab", "log", "--json"],
                 ["--repo", "lab", "verify"]):
        result = _run_without(EXTRA_MODULES, *args, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)


@pytest.mark.parametrize("blocked, args, extra", [
    (("fastapi", "uvicorn"), ["serve", "--repo", "lab"], "server"),
    (("fastapi",), ["token", "add", "alice", "--role", "read", "--tokens", "t.toml"], "server"),
    (("s3fs",), ["log", "--repo", "s3://bucket/lab"], "s3"),
    (("ray",), ["refine", "--repo", "lab", "--executor", "ray"], "ray"),
])
def test_missing_extra_is_one_line_naming_the_install(tmp_path: Path, blocked, args, extra) -> None:
    lab = tmp_path / "lab"
    from mrepo.graph import Repository
    from tests.factories import make_population

    r = Repository.init(str(lab))
    r.commit(make_population(r, n_items=1), message="one")
    result = _run_without(blocked, *args, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 10, result.stderr
    assert len(lines) == 1 and f"pip install 'mrepo[{extra}]'" in lines[0], result.stderr
    assert not (tmp_path / "t.toml").exists()


def test_wheel_carries_the_web_view(tmp_path: Path) -> None:
    """Build the wheel from a copy of this tree (no network: the venv's setuptools) and look inside."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "mrepo", src / "mrepo", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(src)], check=True, timeout=600, capture_output=True)
    (wheel,) = tmp_path.glob("mrepo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    static = {p.relative_to(ROOT).as_posix() for p in (ROOT / "mrepo/api/static").rglob("*") if p.is_file()}
    assert static and static <= names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Dist: pandas" in metadata and 'extra == "ray"' in metadata and "Provides-Extra: all" in metadata
