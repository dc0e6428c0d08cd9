"""Species of a simulation: specification, pseudo-atomic model, map and mask.

Maps/masks are (box, box, box) float32 (z, y, x), see :mod:`mrepo.sim.maps`.
No Fourier layout is involved in this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrepo.sim.atoms import PseudoAtomicModel, pseudo_atomic_species
from mrepo.sim.maps import render_map, soft_sphere_mask

__all__ = ["SpeciesChoice", "SpeciesSpec", "SimSpecies", "build_species", "default_species"]


@dataclass(frozen=True)
class SpeciesSpec:
    """A species to simulate: name, diameter (Å), point group, atom count, box (px), shell or globular."""

    name: str
    diameter: float
    symmetry: str = "C1"
    n_atoms: int = 600
    box: int = 48
    shell: bool = False
    atom_sigma: float = 1.0


@dataclass
class SimSpecies:
    """A built species: its spec, atoms, pixel size (Å), map and soft spherical mask."""

    spec: SpeciesSpec
    atoms: PseudoAtomicModel
    pixel_size: float
    map: np.ndarray
    mask: np.ndarray


def build_species(spec: SpeciesSpec, pixel_size: float, seed: int) -> SimSpecies:
    """Draw the atoms of ``spec`` and render its map and mask at ``pixel_size``."""
    if spec.diameter + 4 * spec.atom_sigma > spec.box * pixel_size:
        raise ValueError(
            f"species {spec.name!r}: diameter {spec.diameter} Å does not fit box {spec.box} x {pixel_size} Å"
        )
    atoms = pseudo_atomic_species(
        spec.diameter, spec.symmetry, spec.n_atoms, seed, shell=spec.shell, sigma_angstrom=spec.atom_sigma
    )
    volume = render_map(atoms, spec.box, pixel_size)
    mask = soft_sphere_mask(spec.box, pixel_size, spec.diameter / 2 + 2, edge_A=6.0)
    return SimSpecies(spec, atoms, pixel_size, volume, mask)


def default_species(n: int, box: int, pixel_size: float) -> list[SpeciesSpec]:
    """``n`` species alternating C1 globular / D2 / C4 shell with diameters filling ~70 % of the box."""
    kinds = [("C1", False), ("D2", False), ("C4", True)]
    out = []
    for i in range(n):
        sym, shell = kinds[i % len(kinds)]
        diameter = round(box * pixel_size * (0.7 - 0.08 * (i % 3)), 1)
        out.append(SpeciesSpec(f"species{i + 1}", diameter, sym, 480, box, shell))
    return out


class SpeciesChoice:
    """Mixin of the simulator configs: the species to simulate, given explicitly in
    ``species`` or made by :func:`default_species` from ``n_species``, ``box`` and the optics."""

    def species_specs(self) -> tuple[SpeciesSpec, ...]:
        if self.species:  # type: ignore[attr-defined]
            return self.species  # type: ignore[attr-defined]
        return tuple(default_species(self.n_species, self.box, self.optics.pixel_size))  # type: ignore[attr-defined]
