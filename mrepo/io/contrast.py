"""Contrast polarity of imported raw data: chosen at import, changed later by a commit.

At import (:meth:`mrepo.io.staging.Staging.commit`) every new data source gets a polarity:

1. ``--contrast dark|light`` (``PolarityChoice.contrast``) when given;
2. else, when the import brings a species with maps and a detector is supplied
   (``PolarityChoice.detect``, e.g. :func:`mrepo.workers.polarity.detect_polarity`, handed in by
   the CLI so that io does not depend on workers), the sign of the correlation between the
   species' reference and its particles reconstructed from the raw data read as light;
3. else ``"dark"``: raw frames and tilts from counting detectors show particles dark on a
   positive mean, as RELION, Warp and M expect (M always inverts its input).

The choice and its reason go into the import commit's operation (``polarity``,
``polarity_from``). No Fourier layout here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..graph import DataSource, Item, ParticleTable, Repository, Species
from ..graph.model import check_polarity
from ..store import InvalidInput, ObjectStore
from .branches import branch_population

__all__ = ["DEFAULT_POLARITY", "PolarityChoice", "choose_polarity", "set_source_polarity"]

DEFAULT_POLARITY = "dark"

#: (objects, items, species, its particle table) -> a vote with ``polarity`` (None: undetermined),
#: ``correlation`` and ``particles``
PolarityDetector = Callable[[ObjectStore, list[Item], Species, ParticleTable], Any]


@dataclass(frozen=True)
class PolarityChoice:
    """How an import sets its sources' polarity (see the module docstring)."""

    contrast: str | None = None
    detect: PolarityDetector | None = None
    max_particles: int = 400


def choose_polarity(choice: PolarityChoice | None, objects: ObjectStore, source: DataSource,
                    species: dict[str, Species]) -> tuple[str, dict[str, Any]]:
    """(polarity, facts for the operation record) of a new ``source`` whose objects are in ``objects``."""
    choice = choice or PolarityChoice()
    if choice.contrast is not None:
        return check_polarity(choice.contrast, "--contrast"), {"polarity_from": "--contrast"}
    if choice.detect is not None and species:
        items = [Item.load(objects, h) for _, h in sorted(source.items.items())]
        for name, sp in sorted(species.items()):
            table = ParticleTable.load(objects, sp.particles)
            vote = choice.detect(objects, items, sp, table)
            facts = {"polarity_from": f"detected against species {name!r}",
                     "polarity_correlation": round(float(vote.correlation), 4), "polarity_particles": vote.particles}
            if vote.polarity is not None:
                return vote.polarity, facts
        return DEFAULT_POLARITY, {**facts, "polarity_from": f"default {DEFAULT_POLARITY!r} (detection undetermined)"}
    return DEFAULT_POLARITY, {"polarity_from": f"default {DEFAULT_POLARITY!r} (counting detectors)"}


def set_source_polarity(repo: Repository, source: str, polarity: str, *, branch: str | None = None,
                        message: str | None = None) -> str:
    """Commit ``source`` with a new polarity (items unchanged); returns the commit hash."""
    polarity = check_polarity(polarity, "contrast")
    pop, head = branch_population(repo, branch)
    if source not in pop.sources:
        raise InvalidInput(f"data source {source!r} is not in the population (have {sorted(pop.sources)})")
    src = repo.source(pop.sources[source])
    if src.polarity == polarity:
        raise InvalidInput(f"data source {source!r} already has contrast {polarity!r}")
    new = replace(src, polarity=polarity).save(repo.objects)
    pop = replace(pop, sources={**pop.sources, source: new})
    op = {"name": "source-contrast", "source": source, "polarity": polarity, "previous": src.polarity}
    return repo.commit(pop, message=message or f"source {source}: contrast {src.polarity} -> {polarity}",
                       branch=branch, operation=op, expected_head=head)
