"""M population folders (warpem/warp WarpLib/Sociology/Population.cs, DataSource.cs, Species.cs).

Layout written by :func:`export_m` (M's own layout)::

    <out>/<population>.population    <Population><Param Name=.. Value=../>
                                     <Species><Species GUID Path/></Species><Sources><Source GUID Path/></Sources>
    <out>/<source>.source            <DataSource> Params (GUID, Version, Name, PixelSize, DimensionsX/Y/Z,
                                     DosePerAngstromFrame, ...), UsedSpecies, <Files><File Hash Name/></Files>
    <out>/species/<name>_<guid8>/<name>.species       <Species> Params (GUID, Name, PixelSize,
                                     DiameterAngstrom, Symmetry, TemporalResolutionMovement/Rotation, ...)
    <out>/species/<name>_<guid8>/<name>_half1.mrc, _half2.mrc, _mask.mrc
    <out>/species/<name>_<guid8>/<name>_particles.star   wrpCoordinateX/Y/Z<t> (Å), wrpAngleRot/Tilt/Psi<t>
                                     (deg), wrpRandomSubset (1/2), wrpSourceName, wrpSourceHash, wrpMrepoParticleId
    <out>/species/<name>_<guid8>/<name>.mrepo.json  species metadata and extra particle columns by id

GUIDs are derived from the mrepo object hashes (deterministic). ``File Hash`` and ``wrpSourceHash``
hold M's OWN data hash of the item (:mod:`mrepo.io.m_hash`, ``Movie/TiltSeries.GetDataHash``),
computed at export from the files M will open: M refines a species' particles of an item only where
``wrpSourceHash`` equals that hash (``Species.GetParticles``). ``File Name`` is the item's raw file
name (tilt series: ``<name>.tomostar`` as M expects). ``wrpMrepoParticleId`` carries the particle ids
(M keeps extra particle columns). M's DiameterAngstrom is an integer: diameters are rounded. Next to the
.source, each item gets its Warp XML and, for tilt series, the files M opens, see
:mod:`mrepo.io.warp_export`. Before anything is written every item is checked for what M cannot
represent (:class:`~mrepo.io.warp_export.MCannotRepresent`).

:func:`import_m` reads a whole population: every .source (its ``<Files>`` and each item's Warp XML via
:func:`~mrepo.io.warp_import.warp_item`, plus an mrepo sidecar when present) and every species, in one
commit. :func:`import_m_species` reads the species of an M population folder and links particles to
items already in the repository. Particles link by wrpSourceHash (M's hash, through the .source
``<File Hash Name>`` list; or an mrepo item key), else by wrpSourceName (file name without extension or
``.tomostar`` = item name). Ids: wrpMrepoParticleId when present, else new (:mod:`mrepo.io.identity`).
Code: :mod:`mrepo.io.m_export` (export), :mod:`mrepo.io.m_import` (import), :mod:`mrepo.io.m_xml` (Param
XML helpers); this module is their public face. No Fourier layout is involved in this module.
"""

from __future__ import annotations

from .m_export import export_m
from .m_import import import_m, import_m_species
from .m_xml import M_PREFIX, guid_for

__all__ = ["export_m", "import_m", "import_m_species", "guid_for", "M_PREFIX"]
