"""mrepo.io: import and export of RELION 5 (tomography and single particle), M and simulator data.

Imports mrepo.graph and mrepo.store only; reads and writes files with ``starfile``
and ``mrcfile``. Every importer validates all input before writing anything
(:class:`~mrepo.io.staging.Staging`), so a bad file leaves the repository untouched;
errors are one-line :class:`~mrepo.store.InvalidInput` naming file, block/line/column
and value.

THE item convention (shared with refinement)
--------------------------------------------
``Item.imaging``:
  pixel_size (Å), voltage (kV), cs (mm), amplitude_contrast, dimensions [x, y, n] px,
  exposure: per-frame/per-tilt dose (e⁻/Å²) in frame/tilt (stack) order,
  pre_exposure: accumulated dose before each frame/tilt (e⁻/Å², stack order; when known),
  tilts only: tilt_angles (nominal, deg, stack order), acquisition_order (stack index of
  the k-th exposure), volume_dimensions [x, y, z] Å, hand (RELION rlnTomoHand, ±1).
``Item.models`` (array hashes, float64):
  ctf (n, 3): defocus_u, defocus_v (Å, positive underfocus), astigmatism angle (deg);
  phase_shift (n,) deg, optional; global_shifts (n, 2) Å (x, y);
  stage_angles (n, 3) deg for tilts: RELION 5 (rlnTomoXTilt, rlnTomoYTilt, rlnTomoZRot),
  whose tilt_series shifts are ``global_shifts`` (rlnTomoXShiftAngst, rlnTomoYShiftAngst).
Particle coordinates (Å, item frame):
  frames: x, y from the micrograph origin (pixel index × pixel size; RELION
  ``x = rlnCoordinateX * pixel - rlnOriginXAngst``), z = height: the particle's mean defocus minus
  its item's (RELION per-particle defocus; refinement's defocus is ``ctf + z``);
  tilts: x, y, z from voxel 0 of the tomogram; RELION 5 centred coordinates convert as
  ``x = rlnCenteredCoordinateXAngst - rlnOriginXAngst + (rlnTomoSizeX / 2) * pixel`` (real division,
  as RELION 5's ``Tomogram::centre``).
Particle ids (:mod:`mrepo.io.identity`): one id per pick, unique across independent imports,
inherited from the ``rlnMrepoParticleId`` / ``wrpMrepoParticleId`` column when a file carries it.
Item names: the micrograph file name without folders and extension, or rlnTomoName;
particles link to items by that name. RELION columns mrepo does not model are passed through
(:mod:`~mrepo.io.relion_passthrough`; docs/relion.md).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the submodule that defines it. Imported on first use (PEP 562): ``mrepo.io.branches``
#: and the other light submodules (which the refine and reconstruct commands use) do not pay for
#: pandas (starfile) and scipy.spatial, which the importers need (~0.7 s of CPU per process).
_EXPORTS = {
    "ImportResult": ".staging",
    "SpeciesFiles": ".relion_spa",
    "add_species": ".species_add",
    "import_relion5_tomo": ".relion_tomo",
    "import_relion_spa": ".relion_spa",
    "import_sim": ".sim_import",
    "new_particle_ids": ".identity",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
