"""mrepo.graph: the population model, commits, history, diff, 3-way merge, transfers, maintenance.

Imports mrepo.store only.
"""

from .collisions import CollisionReport, check_collisions
from .dedup import DedupResult, dedup_species
from .diff import PopulationDiff, diff_populations
from .history import ancestors, is_ancestor, log, merge_base
from .maintenance import GcReport, RepairReport, VerifyReport, gc, repair, verify
from .merge import MERGE_POLICIES, MergeReport, merge_populations
from .model import Commit, DataSource, Item, ParticleTable, Population, RawData, Species
from .pulls import PULL_POLICIES, PullRequest, check_pull, close_pull, get_pull, list_pulls, merge_pull, open_pull
from .repository import MergeResult, Repository
from .transfer import TransferStats, clone, copy_closure, fetch, pull, push

__all__ = [
    "MERGE_POLICIES", "Commit", "DataSource", "GcReport", "Item", "MergeReport", "MergeResult", "ParticleTable",
    "Population", "PopulationDiff", "RawData", "Repository", "Species", "TransferStats", "VerifyReport",
    "ancestors", "clone", "copy_closure", "diff_populations", "fetch", "gc", "is_ancestor", "log", "merge_base",
    "merge_populations", "pull", "push", "verify", "RepairReport", "repair",
    "PULL_POLICIES", "CollisionReport", "DedupResult", "PullRequest", "check_collisions", "check_pull", "close_pull",
    "dedup_species", "get_pull", "list_pulls", "merge_pull", "open_pull",
]
