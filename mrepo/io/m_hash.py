"""M's own data hash of an item, the key M selects a species' particles by.

warpem/warp ``WarpLib/Movie/Movie.cs`` ``GetDataHash``: the first ``min(2^19, file size)`` bytes of the
movie's ``DataPath``, prefixed with the item's ``RootName`` as UTF-16 little-endian (C# ``char[]`` copied
with ``Buffer.BlockCopy``), hashed with SHA-1 and formatted by ``MathHelper.GetSHA1``: base64 without
``=`` padding, ``/`` -> ``-``, ``+`` -> ``_``. ``TiltSeries.GetDataHash`` uses the series' RootName (the
.tomostar name without extension) and the data of its FIRST tilt movie (``TiltMoviePaths[0]`` resolved
against the series' data/processing folder). M's ``MPARefinement`` then takes
``species.GetParticles(GetDataHash())``: particles whose ``wrpSourceHash`` equals that string, and
DataSource ``<Files><File Hash=...>`` holds the same string.
No Fourier layout is involved in this module.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

__all__ = ["m_data_hash", "M_HASH_BYTES"]

M_HASH_BYTES = 1 << 19


def m_data_hash(root_name: str, data_path: str | Path) -> str:
    """M's ``GetDataHash`` for an item named ``root_name`` whose (first) movie is ``data_path``."""
    with open(data_path, "rb") as f:
        head = f.read(M_HASH_BYTES)
    digest = hashlib.sha1(root_name.encode("utf-16-le") + head).digest()
    return base64.b64encode(digest).decode("ascii").replace("=", "").replace("/", "-").replace("+", "_")
