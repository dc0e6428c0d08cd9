"""mrepo: a distributed, content-addressed repository for cryo-EM populations."""

__version__ = "0.1.0"

from .graph import (  # noqa: E402
    Commit,
    DataSource,
    Item,
    ParticleTable,
    Population,
    RawData,
    Repository,
    Species,
)
from .store import MrepoError, RefConflict  # noqa: E402

__all__ = ["Commit", "DataSource", "Item", "MrepoError", "ParticleTable", "Population", "RawData", "RefConflict",
           "Repository", "Species", "__version__"]
