"""mrepo.workers: refinement of one field of view, reconstruction, the population driver and
its executors (in-process and Ray).

Imports mrepo.kernels, mrepo.graph and mrepo.store. ``RayExecutor`` is imported on first use
(``from mrepo.workers import RayExecutor``) so that importing this package does not load Ray.
"""

from __future__ import annotations

from typing import Any

from .api import HalfSums, ItemResult, ItemTask, IterationOutput
from .cache import ResultCache
from .driver import refine_population
from .executors import LocalExecutor
from .refine_item import refine_item
from .settings import RefineSettings

__all__ = ["HalfSums", "ItemResult", "ItemTask", "IterationOutput", "LocalExecutor", "RayExecutor", "RefineSettings",
           "ResultCache", "refine_item", "refine_population"]


def __getattr__(name: str) -> Any:
    if name == "RayExecutor":
        from .ray_pool import RayExecutor

        return RayExecutor
    raise AttributeError(f"module 'mrepo.workers' has no attribute {name!r}")
