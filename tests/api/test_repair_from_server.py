"""``mrepo verify --repair`` against a real server: damaged objects of a clone (a record, a blob,
an array chunk) are replaced by copies fetched from ``mrepo serve`` and checked against their names."""

from __future__ import annotations

from mrepo.graph import Repository, clone, push, repair, verify
from mrepo.store.objects import array_prefix, object_key
from tests.api.conftest import Served
from tests.factories import make_population


def test_verify_repair_from_a_server(served: Served, tmp_path) -> None:
    """Damaged objects of a clone are replaced by verified copies fetched from ``mrepo serve``."""
    local = Repository.init(str(tmp_path / "local"))
    head = local.commit(make_population(local, n_items=2), message="m", time="2024-06-01T00:00:01Z")
    push(local, served.url, "main", options=served.opts("maintain"))
    dst, _ = clone(served.url, str(tmp_path / "dst"), src_options=served.opts("read"))
    species = dst.species(dst.population().species["apo"])
    item = dst.item(next(iter(dst.source(dst.population().sources["grid1"]).items.values())))
    chunk = array_prefix(species.half1) + sorted(dst.objects.array_meta(species.half1).chunk_digests)[0]
    for key in (object_key(species.particles), object_key(item.raw.hash), chunk):
        data = bytearray(dst.storage.backend.get(key))
        data[len(data) // 2] ^= 1
        dst.storage.backend.put(key, bytes(data))
    assert len(verify(dst.storage).damaged) == 3
    remote = Repository.open(served.url, served.opts("read"))
    out, final = repair(dst.storage, remote.storage)
    assert final.ok, final.problems
    assert {h for _, h in out.repaired} == {species.particles, item.raw.hash, species.half1}
    assert dst.head() == head
