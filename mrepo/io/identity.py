"""Particle identity: how an imported particle gets its stable id, and the column that carries it.

An id names one *pick* (DESIGN.md, ParticleTable). Rules:

- **Inherited**: a particle file that has the id column (RELION STAR: :data:`ID_COLUMN`
  ``rlnMrepoParticleId``; M particle STAR: :data:`M_ID_COLUMN` ``wrpMrepoParticleId``) keeps those ids.
  mrepo's RELION and M exporters write it; RELION 3.1+ keeps unknown labels and M keeps extra particle
  columns (``Species.ParticlesToStar``), so a species derived in RELION or M from exported particles
  (reclassification, subset, re-refinement) comes back with the ids of its particles.
- **New**: otherwise each particle gets ``prefix << ROW_BITS | row``, ``row`` its 0-based index among the
  rows the import keeps (file order; rows skipped by ``--ignore-unmatched`` take no index) and ``prefix``
  38 bits of BLAKE3 over (domain tag, the branch head the import is based on, the species name, the
  BLAKE3 of the particle file, a salt). Two independent imports (another file, another species name,
  another parent commit) get unrelated prefixes, so picks made independently on one micrograph never
  share an id; one import is reproducible (same inputs, same ids) and its ids sort in file order.
  The chance that two of k imports share a prefix is about k² / 2³⁹ (1e-6 for k = 1000); the importer
  also refuses a prefix already used by the population it adds to and takes the next salt.

Ids are positive int64 (< 2⁶³); at most 2²⁵ (33.5 M) rows per file.
No Fourier layout is involved in this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import blake3
import numpy as np
import pandas as pd

from ..graph import ParticleTable, Population, Repository, Species
from ..store import InvalidInput, deref, hash_file
from .star import check_path

__all__ = ["ID_COLUMN", "M_ID_COLUMN", "ROW_BITS", "PREFIX_BITS", "IdContext", "new_particle_ids", "read_id_column", "id_prefixes",
           "import_context"]

ID_COLUMN = "rlnMrepoParticleId"
M_ID_COLUMN = "wrpMrepoParticleId"
ROW_BITS = 25
PREFIX_BITS = 63 - ROW_BITS
_DOMAIN = b"mrepo-particle-ids\0"


@dataclass(frozen=True)
class IdContext:
    """What makes an import independent of any other: the commit it builds on (None for a new branch),
    the BLAKE3 of the particle file and ids already used in the population (prefixes to avoid)."""

    parent: str | None
    source_hash: str
    taken_prefixes: frozenset[int] = frozenset()


def _prefix(ctx: IdContext, species: str, salt: int) -> int:
    h = blake3.blake3(_DOMAIN + "\0".join([ctx.parent or "", species, ctx.source_hash, str(salt)]).encode())
    return int.from_bytes(h.digest()[:8], "big") >> (64 - PREFIX_BITS)


def new_particle_ids(rows: np.ndarray, *, species: str, context: IdContext) -> np.ndarray:
    """(N,) int64 ids for the particles of one import at 0-based indices ``rows`` (module docstring)."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= 1 << ROW_BITS):
        raise InvalidInput(f"species {species!r}: particle files hold at most {1 << ROW_BITS} rows")
    salt = 0
    prefix = _prefix(context, species, salt)
    while prefix == 0 or prefix in context.taken_prefixes:
        salt += 1
        prefix = _prefix(context, species, salt)
    return (np.int64(prefix) << np.int64(ROW_BITS)) | rows


def id_prefixes(ids: np.ndarray) -> set[int]:
    """Import prefixes of ``ids`` (to pass as ``IdContext.taken_prefixes``)."""
    return {int(p) for p in np.unique(np.asarray(ids, dtype=np.int64) >> ROW_BITS)}


def read_id_column(df: pd.DataFrame, path: str | Path, block: str, column: str = ID_COLUMN) -> np.ndarray | None:
    """The id ``column`` of a STAR block as (N,) int64, or None when absent.

    Values must be integers in [1, 2⁶³) and unique; errors name file, block, column and row."""
    if column not in df.columns:
        return None
    series = df[column]
    if series.dtype.kind == "i":  # typed int64 by the STAR parser: check the range without a per-row parse
        out = series.to_numpy(dtype=np.int64, copy=True)
        bad = np.flatnonzero(out < 1)
        if len(bad):
            raise InvalidInput(f"{path}: data_{block} column {column} row {bad[0] + 1}: {str(out[bad[0]])!r} is not "
                               "a particle id (an integer from 1 to 2^63-1)")
    else:
        out = _parsed_ids(series.tolist(), path, block, column)
    if len(out) > 1:
        order = np.argsort(out, kind="stable")
        same = np.flatnonzero(out[order][1:] == out[order][:-1])
        if len(same):
            a, b = sorted((int(order[same[0]]), int(order[same[0] + 1])))
            raise InvalidInput(f"{path}: data_{block} column {column} rows {a + 1} and {b + 1} carry the same "
                               f"id {int(out[a])}")
    return out


def _parsed_ids(values: list, path: str | Path, block: str, column: str) -> np.ndarray:
    out = np.empty(len(values), dtype=np.int64)
    for r, v in enumerate(values):
        text = str(v).strip()
        try:
            value = int(text)
        except ValueError:
            value = -1
        if not 1 <= value < 1 << 63:
            raise InvalidInput(f"{path}: data_{block} column {column} row {r + 1}: {text!r} is not a particle id "
                               "(an integer from 1 to 2^63-1)")
        out[r] = value
    return out


def import_context(repo: Repository, population: Population | None, parent: str | None,
                   particle_file: str | Path) -> IdContext:
    """The :class:`IdContext` of an import of ``particle_file`` into ``population`` at commit ``parent``:
    the file's BLAKE3 and every id prefix the population already uses."""
    taken: set[int] = set()
    if population is not None:
        for h in population.species.values():
            sp = Species.load(repo.objects, h)
            body = repo.objects.get_record(sp.particles, ParticleTable.KIND)
            taken |= id_prefixes(repo.objects.get_array(deref(body["columns"]["id"])))
    return IdContext(parent, hash_file(check_path(particle_file, "particle file")), frozenset(taken))
