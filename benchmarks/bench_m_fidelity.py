"""RELION 5 -> mrepo -> M -> mrepo -> RELION 5 fidelity, side by side with RELION 5 -> mrepo -> RELION 5.

The RELION 5 tomography project of ``bench_io_fidelity.py`` (tilt-series STARs with constant rlnTomoXTilt,
tomograms.star with rlnTomoHand -1, particles with optics, priors, subtomogram angles, ...) is imported,
then (a) exported to RELION directly and (b) exported as an M population, imported back from M into a
fresh repository and exported to RELION. Every input table is compared with its exported counterpart
(columns preserved within 1e-9 relative / changed / dropped, largest numeric difference; angles modulo
360). Also: seconds for export m and import m, and whether M's data hash in every particle equals the
hash of its own item (what M's Species.GetParticles needs).

Usage: .venv/bin/python benchmarks/bench_m_fidelity.py [--series 3] [--tilts 5] [--size 32]
Writes benchmarks/results/bench_m_fidelity.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import starfile

sys.path.insert(0, str(Path(__file__).parent))
from bench_io_fidelity import _merge, compare, tomo_project  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def _tables(proj: dict[str, Path], root: Path, exp: Path) -> dict[str, dict]:
    g_in = starfile.read(proj["tomograms"], always_dict=True)["global"]
    g_out = starfile.read(exp / "tomograms.star", always_dict=True)["global"]
    rows = [compare(g_in.drop(columns=["rlnTomoTiltSeriesStarFile"]), g_out, "rlnTomoName")]
    for name, star in zip(g_in["rlnTomoName"], g_in["rlnTomoTiltSeriesStarFile"]):
        rows.append(compare(starfile.read(root / star, always_dict=True)[name],
                            starfile.read(exp / f"tilt_series/{name}.star", always_dict=True)[name], None))
    p_in = starfile.read(proj["particles"], always_dict=True)
    p_out = starfile.read(exp / "ribo/particles.star", always_dict=True)
    return {"tomograms + tilt series": _merge(rows),
            "particles + optics": _merge([compare(p_in["optics"], p_out["optics"], "rlnOpticsGroup"),
                                          compare(p_in["particles"], p_out["particles"], "rlnTomoParticleName")])}


def _hashes_match(m_folder: Path) -> bool:
    from mrepo.io.m_hash import m_data_hash

    pop = ET.parse(next(m_folder.glob("*.population"))).getroot()
    files = {}
    for src in pop.findall("Sources/Source"):
        for f in ET.parse(m_folder / src.get("Path")).getroot().findall("Files/File"):
            root_name = f.get("Name").removesuffix(".tomostar")
            first = ET.parse(m_folder / f"{root_name}.xml").getroot().find("MoviePath").text.split("\n")[0]
            files[f.get("Name")] = (f.get("Hash"), m_data_hash(root_name, m_folder / first))
    ok = all(a == b for a, b in files.values())
    for sp in pop.findall("Species/Species"):
        star = (m_folder / sp.get("Path")).parent / f"{Path(sp.get('Path')).stem}_particles.star"
        parts = starfile.read(star)
        ok &= all(files[n][1] == h for n, h in zip(parts["wrpSourceName"], parts["wrpSourceHash"]))
    return ok


def run(work: Path, series: int, tilts: int, size: int) -> dict:
    from mrepo.graph import Repository
    from mrepo.io import SpeciesFiles, import_relion5_tomo
    from mrepo.io.export_relion import export_relion
    from mrepo.io.m_format import export_m, import_m

    root = work / "tomo"
    proj = tomo_project(root, series, tilts, size)
    repo = Repository.init(str(work / "repo"))
    import_relion5_tomo(repo, proj["tomograms"], source="ts", project=root, particles=proj["particles"],
                        species=SpeciesFiles("ribo", proj["half1"], proj["half2"], proj["mask"], 250.0))
    direct = root / "External/direct"
    export_relion(repo, "main", direct, project=root)
    t0 = time.perf_counter()
    export_m(repo, "main", work / "m")
    t_export = time.perf_counter() - t0
    repo2 = Repository.init(str(work / "repo2"))
    t0 = time.perf_counter()
    import_m(repo2, work / "m/population.population")
    t_import = time.perf_counter() - t0
    via_m = root / "External/via_m"
    export_relion(repo2, "main", via_m, project=root)
    return {"series": series, "tilts": tilts, "size": size,
            "RELION 5 -> RELION 5": _tables(proj, root, direct),
            "RELION 5 -> M -> RELION 5": _tables(proj, root, via_m),
            "export_m_s": t_export, "import_m_s": t_import, "m_hashes_match": _hashes_match(work / "m"),
            "same_population_species": repo.population().species.keys() == repo2.population().species.keys()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=3)
    ap.add_argument("--tilts", type=int, default=5)
    ap.add_argument("--size", type=int, default=32)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mrepo-bench-m-") as tmp:
        res = run(Path(tmp), args.series, args.tilts, args.size)
    print(f"{'path':28s} {'tables':24s} {'preserved':>9s} {'max diff':>10s}  changed / dropped")
    for path in ("RELION 5 -> RELION 5", "RELION 5 -> M -> RELION 5"):
        for table, r in res[path].items():
            print(f"{path:28s} {table:24s} {r['preserved']:9d} {r['max_difference']:10.3g}  "
                  f"{', '.join(r['changed']) or '-'} / {', '.join(r['dropped']) or '-'}")
    print(f"export m {res['export_m_s']:.2f} s, import m {res['import_m_s']:.2f} s; "
          f"M data hashes match their items: {res['m_hashes_match']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_m_fidelity.json").write_text(json.dumps(res, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
