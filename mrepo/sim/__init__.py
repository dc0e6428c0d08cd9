"""mrepo.sim: ground-truth simulator of frame and tilt series.

Public surface: species models and maps (:func:`pseudo_atomic_species`,
:func:`render_map`, masks), analytic particle rendering, the frame- and
tilt-series simulators with their truth / initial dataclasses, and
:func:`write_dataset` (folder layout documented in :mod:`mrepo.sim.writer`).
"""

from mrepo.sim.atoms import PseudoAtomicModel, point_group_matrices, pseudo_atomic_species
from mrepo.sim.frames import (
    FrameSeriesConfig,
    FrameSeriesInitial,
    FrameSeriesTruth,
    SimulatedFrameSeries,
    render_frames,
    simulate_frame_series,
)
from mrepo.sim.maps import density_mask, render_map, soft_sphere_mask
from mrepo.sim.motion import SmoothWarp
from mrepo.sim.records import Particles, Perturbation
from mrepo.sim.render import Optics, ParticleImages, project_atoms, render_stack
from mrepo.sim.species import SimSpecies, SpeciesSpec, build_species
from mrepo.sim.tilts import (
    SimulatedTiltSeries,
    TiltSeriesConfig,
    TiltSeriesInitial,
    TiltSeriesTruth,
    dose_symmetric_scheme,
    render_tilts,
    simulate_tilt_series,
)
from mrepo.sim.writer import write_dataset

__all__ = [
    "PseudoAtomicModel",
    "pseudo_atomic_species",
    "point_group_matrices",
    "render_map",
    "soft_sphere_mask",
    "density_mask",
    "SmoothWarp",
    "Particles",
    "Perturbation",
    "Optics",
    "ParticleImages",
    "project_atoms",
    "render_stack",
    "SpeciesSpec",
    "SimSpecies",
    "build_species",
    "FrameSeriesConfig",
    "FrameSeriesTruth",
    "FrameSeriesInitial",
    "SimulatedFrameSeries",
    "simulate_frame_series",
    "render_frames",
    "TiltSeriesConfig",
    "TiltSeriesTruth",
    "TiltSeriesInitial",
    "SimulatedTiltSeries",
    "simulate_tilt_series",
    "render_tilts",
    "dose_symmetric_scheme",
    "write_dataset",
]
