"""mrepo.kernels names the public functions of every kernel module and imports cheaply."""

import ast
import importlib
import inspect
from pathlib import Path

import mrepo.kernels as kernels

MODULES = [
    "rotations", "symmetry", "ctf", "aliasing", "fourier_slice", "gridding", "interpolation",
    "shifts", "extraction", "fourier_crop", "splines", "fsc", "tilt_geometry", "shapes",
]
# gridding's stencil helpers serve insertion inside fourier_slice, not callers
INTERNAL = {"gridding": {"Stencil", "trilinear_stencil", "gather", "scatter", "sinc2"}}


def test_every_public_definition_is_exported():
    missing = []
    for name in MODULES:
        module = importlib.import_module(f"mrepo.kernels.{name}")
        for attr, obj in vars(module).items():
            defined_here = getattr(obj, "__module__", None) == module.__name__
            if attr.startswith("_") or not defined_here or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if attr not in INTERNAL.get(name, set()) and attr not in kernels.__all__:
                missing.append(f"{name}.{attr}")
    assert missing == []


def test_all_names_resolve_to_their_module_objects():
    for attr in kernels.__all__:
        obj = getattr(kernels, attr)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            home = importlib.import_module(obj.__module__)
            assert getattr(home, attr) is obj
    assert len(set(kernels.__all__)) == len(kernels.__all__)


def test_kernel_modules_import_only_torch_and_the_standard_library():
    allowed = {"torch", "math", "functools", "dataclasses", "typing", "collections", "re", "__future__", "mrepo"}
    bad = []
    for name in ["__init__", *MODULES]:
        path = Path(kernels.__file__).with_name(f"{name}.py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                roots = [(node.module or "").split(".")[0]] if node.level == 0 else ["mrepo"]
            else:
                continue
            bad += [f"{name}: {r}" for r in roots if r not in allowed]
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mrepo."):
                if not node.module.startswith("mrepo.kernels"):
                    bad.append(f"{name}: {node.module}")
    assert bad == []
