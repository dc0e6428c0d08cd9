"""An item's stored model arrays, read for export (RELION and M). No Fourier layout is involved here."""

from __future__ import annotations

import numpy as np

from ..graph import Item, Repository

__all__ = ["model_array"]


def model_array(repo: Repository, item: Item, name: str) -> np.ndarray | None:
    """Model ``name`` of ``item`` as float64 (its stored layout, :mod:`mrepo.workers.item_model`), or None
    when the item has no such model."""
    h = item.models.get(name)
    return None if h is None else np.asarray(repo.objects.get_array(h), dtype=np.float64)
