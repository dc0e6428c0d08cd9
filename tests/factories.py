"""Small hand-built populations for tests of the repository core."""

from __future__ import annotations

import numpy as np

from mrepo.graph import DataSource, Item, ParticleTable, Population, RawData, Repository, Species
from mrepo.store import hash_blob


def make_item(repo: Repository, name: str, *, kind: str = "frames", seed: int = 0, copy: bool = True) -> Item:
    """An item whose raw data is a small random blob stored in the repository."""
    raw = np.random.default_rng(seed).integers(0, 255, size=256, dtype=np.uint8).tobytes() + name.encode()
    h = repo.objects.put_blob(raw) if copy else hash_blob(raw)
    imaging = {"pixel_size": 1.5, "voltage": 300.0, "cs": 2.7, "amplitude_contrast": 0.07,
               "dimensions": [512, 512], "exposure": [1.0] * 8}
    shifts = np.random.default_rng(seed).normal(size=(8, 2)).astype(np.float32)
    return Item(kind, name, RawData(h, len(raw), stored=copy, uri=None if copy else f"/data/{name}.mrc"),
                imaging, {"global_shifts": repo.objects.put_array(shifts)})


def make_species(repo: Repository, name: str, items: list[Item], *, n: int = 10, seed: int = 0, box: int = 16,
                 diameter: float = 100.0, id_offset: int = 0) -> Species:
    rng = np.random.default_rng(seed)
    keys = [items[i % len(items)].key for i in range(n)]
    table = ParticleTable.build(np.arange(id_offset, id_offset + n), keys, rng.uniform(0, 700, (n, 3)),
                                rng.uniform(-180, 180, (n, 3)), 1 + (np.arange(n) % 2))
    vol = rng.normal(size=(box, box, box)).astype(np.float32)
    return Species(name, diameter, "C1", 1.5, box, repo.objects.put_array(vol), repo.objects.put_array(vol * 0.9),
                   repo.objects.put_array(np.ones_like(vol)), table.save(repo.objects),
                   contributors=tuple(i.save(repo.objects) for i in items))


def make_population(repo: Repository, *, n_items: int = 3, species: tuple[str, ...] = ("apo",),
                    seed: int = 0) -> Population:
    items = [make_item(repo, f"mic{i:03d}", seed=seed + i) for i in range(n_items)]
    source = DataSource("grid1", {it.key: it.save(repo.objects) for it in items})
    sp = {name: make_species(repo, name, items, seed=seed + k, id_offset=1000 * k).save(repo.objects)
          for k, name in enumerate(species)}
    return Population("pop", {"grid1": source.save(repo.objects)}, sp)
