"""Refinement settings: one frozen, JSON-round-trippable dataclass recorded in every commit.

Units: resolutions in Å, defocus in Å, angles in degrees. No Fourier layout here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["RefineSettings"]


def _grid(value: Any, name: str) -> tuple[int, int, int]:
    if isinstance(value, str):
        value = [int(v) for v in value.lower().split("x")]
    t = tuple(int(v) for v in value)
    if len(t) != 3 or min(t) < 1:
        raise ValueError(f"{name} must be three positive sizes (x, y, time), got {value!r}")
    return t  # type: ignore[return-value]


@dataclass(frozen=True)
class RefineSettings:
    """What to refine and how (M's parameter groups, switchable one by one).

    ``image_warp``: spline grid (x, y, time) nodes, or None; for tilts the time axis is
    forced to the number of tilts (per-tilt temporal resolution, as M).
    ``resolution_fraction``: in the first iteration the refinement frequency limit is
    this fraction of the species' resolution frequency; it rises linearly to 1 at the
    last iteration (``resolution_limit``). ``temporal_samples``: per-particle
    trajectory samples used when refining poses (species keep their own if larger).
    """

    refine_shifts: bool = True
    image_warp: tuple[int, int, int] | None = None
    refine_poses: bool = False
    refine_defocus: bool = False
    refine_astigmatism: bool = False
    refine_stage_angles: bool = False
    weights: bool = False
    resolution_fraction: float = 0.8
    resolution_ramp: int = 3
    temporal_samples: int = 1
    threads: int = 1
    lbfgs_iterations: int = 20
    rounds: int = 2
    defocus_search_range: float = 3000.0
    defocus_search_step: float = 100.0
    defocus_search_iterations: int = 5
    reconstruction_pad: int = 2
    min_box_factor: float = 2.0
    whiten: bool = True
    symmetrize: bool = True
    wiener_fraction: float = 1e-3

    def __post_init__(self) -> None:
        if self.image_warp is not None:
            object.__setattr__(self, "image_warp", _grid(self.image_warp, "image_warp"))
        if not 0 < self.resolution_fraction <= 1:
            raise ValueError(f"resolution_fraction must be in (0, 1], got {self.resolution_fraction}")
        for name in ("threads", "temporal_samples", "rounds", "reconstruction_pad", "defocus_search_iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lbfgs_iterations < 0 or self.defocus_search_range < 0 or self.defocus_search_step <= 0:
            raise ValueError("lbfgs_iterations and defocus_search_range must be >= 0, defocus_search_step > 0")

    @property
    def refines_anything(self) -> bool:
        return bool(self.refine_shifts or self.image_warp or self.refine_poses or self.refine_defocus
                    or self.refine_astigmatism or self.refine_stage_angles)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_warp"] = None if self.image_warp is None else list(self.image_warp)
        return d

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RefineSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(body) - known
        if unknown:
            raise ValueError(f"unknown refinement settings: {sorted(unknown)}")
        return cls(**body)

    def replace(self, **changes: Any) -> RefineSettings:
        return RefineSettings.from_json({**self.to_json(), **changes})
