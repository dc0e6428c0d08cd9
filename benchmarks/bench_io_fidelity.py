"""RELION import/export fidelity per format, and import throughput of a 200-tilt-series project against b3sum.

1. Fidelity: a RELION 5 tomography project (tomograms.star, one tilt-series STAR per tomogram, particles with
   optics, priors, subtomogram angles, visible frames, ...) and a RELION 3.1+ CtfRefine single-particle project
   (micrographs STAR, two optics groups with beam tilt, Zernike and magnification columns, per-particle CTF)
   are written in RELION's layout, imported, exported with the source project folder (``--project``) and
   every input table compared with its exported counterpart: columns preserved (every value equal within
   1e-9 relative; angles modulo 360), changed, dropped, and the largest numeric difference.
2. Throughput: ``import relion5-tomo`` of N tilt series (each a stack of T tilts of S x S int16 pixels)
   versus ``b3sum`` (the BLAKE3 CLI, multithreaded, mmap) and blake3-py (``max_threads=AUTO``) over the same
   files; page cache warmed first. Reports bytes per second and the ratio import / b3sum.

Usage: .venv/bin/python benchmarks/bench_io_fidelity.py [--quick] [--series 200] [--tilts 41] [--size 128]
(--quick = 20 series). Writes benchmarks/results/bench_io_fidelity.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile

RESULTS = Path(__file__).parent / "results"
ANGLES = {"rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnDefocusAngle"}


def loop(name: str, columns: list[str], rows: list[list[object]]) -> str:
    """A STAR loop block as RELION writes it (``# version``, ``_label #i``)."""
    head = f"\n# version 50001\n\ndata_{name}\n\nloop_ \n" + "".join(f"_{c} #{i + 1} \n" for i, c in enumerate(columns))
    return head + "".join("\t".join(str(v) for v in r) + " \n" for r in rows) + " \n"


def write_mrc(path: Path, data: np.ndarray, voxel: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        m.voxel_size = voxel


def _maps(root: Path, voxel: float, box: int = 8) -> dict[str, Path]:
    v = np.random.default_rng(1).normal(size=(box,) * 3).astype(np.float32)
    out = {}
    for name, data in (("half1", v), ("half2", v * 0.5), ("mask", np.ones_like(v))):
        out[name] = root / f"Refine3D/job010/{name}.mrc"
        write_mrc(out[name], data, voxel)
    return out


TILT_COLS = ["rlnMicrographMovieName", "rlnTomoTiltMovieFrameCount", "rlnTomoNominalStageTiltAngle",
             "rlnTomoNominalTiltAxisAngle", "rlnMicrographPreExposure", "rlnMicrographName", "rlnMicrographMetadata",
             "rlnAccumMotionTotal", "rlnCtfImage", "rlnDefocusU", "rlnDefocusV", "rlnCtfAstigmatism",
             "rlnDefocusAngle", "rlnCtfFigureOfMerit", "rlnCtfMaxResolution", "rlnTomoXTilt", "rlnTomoYTilt",
             "rlnTomoZRot", "rlnTomoXShiftAngst", "rlnTomoYShiftAngst", "rlnCtfScalefactor"]
GLOBAL_COLS = ["rlnTomoName", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast",
               "rlnMicrographOriginalPixelSize", "rlnTomoHand", "rlnOpticsGroupName", "rlnTomoTiltSeriesPixelSize",
               "rlnTomoTiltSeriesStarFile", "rlnEtomoDirectiveFile", "rlnTomoTomogramBinning", "rlnTomoSizeX",
               "rlnTomoSizeY", "rlnTomoSizeZ", "rlnTomoReconstructedTomogram", "rlnMtfFileName"]
PART_COLS = ["rlnTomoName", "rlnTomoParticleName", "rlnImageName", "rlnCenteredCoordinateXAngst",
             "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst", "rlnOriginXAngst", "rlnOriginYAngst",
             "rlnOriginZAngst", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnAngleTiltPrior",
             "rlnAnglePsiPrior", "rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi",
             "rlnTomoVisibleFrames", "rlnGroupNumber", "rlnClassNumber", "rlnNormCorrection", "rlnRandomSubset",
             "rlnOpticsGroup"]


def tomo_project(root: Path, n_series: int, n_tilts: int, size: int, particles_per_series: int = 5
                 ) -> dict[str, Path]:
    """RELION 5 layout: one int16 stack per series (``k@stack.mrcs``), tilt-series STARs, tomograms.star."""
    rng = np.random.default_rng(0)
    pix = 1.35
    grows, prows = [], []
    tilts = np.linspace(-60, 60, n_tilts)
    for s in range(n_series):
        name = f"TS_{s + 1:03d}"
        stack = root / f"Stacks/{name}.mrcs"
        write_mrc(stack, rng.integers(-200, 200, size=(n_tilts, size, size), dtype=np.int16), pix)
        rows = []
        for k, t in enumerate(tilts):
            rows.append([f"frames/{name}_{k:03d}.eer", 40, round(float(t), 2), 85.0, 3.0 * k,
                         f"{k + 1}@Stacks/{name}.mrcs", f"MotionCorr/job002/frames/{name}_{k:03d}.star", 1.5,
                         f"CtfFind/job003/frames/{name}_{k:03d}.ctf:mrc", 40000.5 + 10 * k, 39800.25 + 10 * k, 200.25,
                         44.5, 0.125, 5.5, 0.05, round(float(t), 2) + 0.25, 84.75, 0.5 * k, -0.25 * k, 1.0])
        star = root / f"AlignTiltSeries/job005/tilt_series/{name}.star"
        star.parent.mkdir(parents=True, exist_ok=True)
        star.write_text(loop(name, TILT_COLS, rows))
        grows.append([name, 300.0, 2.7, 0.1, 0.675, -1.0, "optics1", pix, str(star.relative_to(root)),
                      f"AlignTiltSeries/job005/external/{name}/{name}.edf", 4.0, size, size, size // 2,
                      f"Tomograms/job006/tomograms/rec_{name}.mrc", "mtf_k3_300kV_FL2.star"])
        for p in range(particles_per_series):
            prows.append([name, f"{name}/{p + 1}", f"Extract/job008/Subtomograms/{name}/{p + 1}_stack2d.mrcs",
                          10.5 * p - 20, -7.25 * p + 4, 1.5 * p - 2, 0.25 * p, -0.75, 0.5, 15.0 * p, 60.0 + p,
                          -20.0 * p, 90.0, 0.0, 10.0 * p, 30.0 + p, -45.0 * p, "[1,1,1,0]", 1, 1, 0.98,
                          1 + p % 2, 1])
    tomograms = root / "Tomograms/job006/tomograms.star"
    tomograms.parent.mkdir(parents=True, exist_ok=True)
    tomograms.write_text(loop("global", GLOBAL_COLS, grows))
    general = "\n# version 50001\n\ndata_general\n\n_rlnTomoSubTomosAre2DStacks                       1\n \n"
    ocols = ["rlnOpticsGroup", "rlnOpticsGroupName", "rlnSphericalAberration", "rlnVoltage",
             "rlnTomoTiltSeriesPixelSize", "rlnCtfDataAreCtfPremultiplied", "rlnImageDimensionality",
             "rlnTomoSubtomogramBinning", "rlnImagePixelSize", "rlnImageSize", "rlnAmplitudeContrast"]
    particles = root / "Refine3D/job010/run_data.star"
    particles.parent.mkdir(parents=True, exist_ok=True)
    particles.write_text(general + loop("optics", ocols, [[1, "optics1", 2.7, 300.0, pix, 1, 2, 2.0, 2.7, 8, 0.1]])
                         + loop("particles", PART_COLS, prows))
    return {"tomograms": tomograms, "particles": particles, **_maps(root, 2.7)}


def spa_project(root: Path) -> dict[str, Path]:
    """RELION 3.1+ after CtfRefine: micrographs STAR and particles with two optics groups and aberrations."""
    rng = np.random.default_rng(2)
    prows, mrows = [], []
    for m in range(4):
        name = f"MotionCorr/job002/Movies/FoilHole_{m}_fractions.mrc"
        write_mrc(root / name, rng.normal(size=(1, 64, 64)).astype(np.float32), 1.77)
        g = 1 + m % 2
        mrows.append([f"MotionCorr/job002/Movies/FoilHole_{m}_PS.mrc", name,
                      f"MotionCorr/job002/Movies/FoilHole_{m}_fractions.star", g, 12.5,
                      f"CtfFind/job004/Movies/FoilHole_{m}.ctf:mrc", 20000.5 + 100 * m, 19800.25 + 100 * m,
                      15.0 + m, 0.125, 3.25])
        for p in range(6):
            i = 6 * m + p
            prows.append([10.0 + 5 * p, 8.0 + 3 * p, f"{i + 1:06d}@Extract/job007/particles.mrcs", name, g, 3.5,
                          20000.5 + 100 * m + 17.5 * p, 19800.25 + 100 * m + 11.25 * p, 15.0 + m + 0.5 * p,
                          -5.0 * p, 1.0, 0.0, 20.0 * i, 90.0 - i, -30.0 * p, 0.354 * p, -1.77 * p, 90.0, 0.9, 4, g,
                          1 + i % 2])
    mcols = ["rlnCtfPowerSpectrum", "rlnMicrographName", "rlnMicrographMetadata", "rlnOpticsGroup",
             "rlnAccumMotionTotal", "rlnCtfImage", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
             "rlnCtfFigureOfMerit", "rlnCtfMaxResolution"]
    mo = ["rlnOpticsGroupName", "rlnOpticsGroup", "rlnMtfFileName", "rlnMicrographOriginalPixelSize", "rlnVoltage",
          "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnMicrographPixelSize"]
    micstar = root / "CtfFind/job004/micrographs_ctf.star"
    micstar.parent.mkdir(parents=True, exist_ok=True)
    micstar.write_text(loop("optics", mo, [[f"opticsGroup{g}", g, "mtf.star", 0.885, 300.0, 2.7, 0.1, 1.77]
                                           for g in (1, 2)]) + loop("micrographs", mcols, mrows))
    po = ["rlnOpticsGroupName", "rlnOpticsGroup", "rlnMtfFileName", "rlnMicrographOriginalPixelSize", "rlnVoltage",
          "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnImagePixelSize", "rlnImageSize",
          "rlnImageDimensionality", "rlnBeamTiltX", "rlnBeamTiltY", "rlnOddZernike", "rlnEvenZernike", "rlnMagMat00",
          "rlnMagMat01", "rlnMagMat10", "rlnMagMat11"]
    porows = [[f"opticsGroup{g}", g, "mtf.star", 0.885, 300.0, 2.7, 0.1, 4.0, 8, 2, 0.1 * g, -0.2 * g,
               "[0.47,0.41,34.38,0,0,10.78]", "[46.1,61.3,71.6,-58.8,-20.4,21.1,25.6,-20.2,-16.9]", 1.007, 0.0076,
               0.0077, 0.9936] for g in (1, 2)]
    pcols = ["rlnCoordinateX", "rlnCoordinateY", "rlnImageName", "rlnMicrographName", "rlnOpticsGroup",
             "rlnCtfMaxResolution", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnCtfBfactor",
             "rlnCtfScalefactor", "rlnPhaseShift", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst",
             "rlnOriginYAngst", "rlnAngleTiltPrior", "rlnNormCorrection", "rlnNrOfSignificantSamples",
             "rlnGroupNumber", "rlnRandomSubset"]
    particles = root / "CtfRefine/job012/particles_ctf_refine.star"
    particles.parent.mkdir(parents=True, exist_ok=True)
    particles.write_text(loop("optics", po, porows) + loop("particles", pcols, prows))
    return {"particles": particles, "micrographs": micstar, **_maps(root, 4.0)}


def compare(before: pd.DataFrame, after: pd.DataFrame, key: str | None) -> dict:
    """Columns of ``before`` preserved / changed / dropped in ``after`` and the largest numeric difference."""
    if key is not None:
        after = after.set_index(key).loc[before[key].tolist()].reset_index()
    out = {"preserved": 0, "changed": [], "dropped": [], "max_difference": 0.0}
    for c in before.columns:
        if c not in after.columns:
            out["dropped"].append(c)
            continue
        same = True
        for x, y in zip(before[c].tolist(), after[c].tolist()):
            if isinstance(x, (int, float, np.integer, np.floating)) and isinstance(y, (int, float, np.integer,
                                                                                         np.floating)):
                d = float(x) - float(y)
                if c in ANGLES:
                    d = (d + 180.0) % 360.0 - 180.0
                out["max_difference"] = max(out["max_difference"], abs(d))
                same &= abs(d) <= 1e-9 * max(1.0, abs(float(x)))
            else:
                same &= str(x) == str(y)
        if same:
            out["preserved"] += 1
        else:
            out["changed"].append(c)
    return out


def _merge(rows: list[dict]) -> dict:
    return {"preserved": sum(r["preserved"] for r in rows), "changed": sorted({c for r in rows for c in r["changed"]}),
            "dropped": sorted({c for r in rows for c in r["dropped"]}),
            "max_difference": max(r["max_difference"] for r in rows)}


def fidelity(work: Path) -> dict[str, dict]:
    from mrepo.graph import Repository
    from mrepo.io import SpeciesFiles, import_relion5_tomo, import_relion_spa
    from mrepo.io.export_relion import export_relion

    out: dict[str, dict] = {}
    root = work / "tomo"
    proj = tomo_project(root, 3, 5, 32)
    repo = Repository.init(str(work / "repo_tomo"))
    import_relion5_tomo(repo, proj["tomograms"], source="ts", project=root, particles=proj["particles"],
                        species=SpeciesFiles("ribo", proj["half1"], proj["half2"], proj["mask"], 250.0))
    exp = root / "External/job100"
    export_relion(repo, "main", exp, project=root)
    g_in = starfile.read(proj["tomograms"], always_dict=True)["global"]
    g_out = starfile.read(exp / "tomograms.star", always_dict=True)["global"]
    rows = [compare(g_in.drop(columns=["rlnTomoTiltSeriesStarFile"]), g_out, "rlnTomoName")]
    for name, star in zip(g_in["rlnTomoName"], g_in["rlnTomoTiltSeriesStarFile"]):
        rows.append(compare(starfile.read(root / star, always_dict=True)[name],
                            starfile.read(exp / f"tilt_series/{name}.star", always_dict=True)[name], None))
    out["RELION 5 tomo: tomograms + tilt series"] = _merge(rows)
    p_in = starfile.read(proj["particles"], always_dict=True)
    p_out = starfile.read(exp / "ribo/particles.star", always_dict=True)
    out["RELION 5 tomo: particles + optics"] = _merge([compare(p_in["optics"], p_out["optics"], "rlnOpticsGroup"),
                                                       compare(p_in["particles"], p_out["particles"],
                                                               "rlnTomoParticleName")])
    root = work / "spa"
    proj = spa_project(root)
    repo = Repository.init(str(work / "repo_spa"))
    import_relion_spa(repo, proj["particles"], source="mics", project=root, micrographs=proj["micrographs"],
                      species=SpeciesFiles("apo", proj["half1"], proj["half2"], proj["mask"], 120.0, "C2"))
    exp = root / "External/job101"
    export_relion(repo, "main", exp, project=root)
    m_in = starfile.read(proj["micrographs"], always_dict=True)
    m_out = starfile.read(exp / "micrographs.star", always_dict=True)
    out["RELION SPA: micrographs + optics"] = _merge([compare(m_in["optics"], m_out["optics"], "rlnOpticsGroup"),
                                                      compare(m_in["micrographs"], m_out["micrographs"],
                                                              "rlnMicrographName")])
    p_in = starfile.read(proj["particles"], always_dict=True)
    p_out = starfile.read(exp / "apo/particles.star", always_dict=True)
    out["RELION SPA (CtfRefine): particles + optics"] = _merge([
        compare(p_in["optics"], p_out["optics"], "rlnOpticsGroup"),
        compare(p_in["particles"], p_out["particles"], "rlnImageName")])
    return out


def throughput(work: Path, n_series: int, n_tilts: int, size: int) -> dict:
    import blake3

    from mrepo.graph import Repository
    from mrepo.io import import_relion5_tomo

    root = work / "big"
    t0 = time.perf_counter()
    proj = tomo_project(root, n_series, n_tilts, size, particles_per_series=0)
    made = time.perf_counter() - t0
    files = sorted((root / "Stacks").glob("*.mrcs"))
    total = sum(f.stat().st_size for f in files)
    b3 = shutil.which("b3sum")
    for f in files:  # warm the page cache
        f.read_bytes()
    res = {"series": n_series, "tilts": n_tilts, "size": size, "bytes": total, "write_s": made}
    if b3:
        t0 = time.perf_counter()
        subprocess.run([b3, "--no-names", *map(str, files)], check=True, stdout=subprocess.DEVNULL)
        res["b3sum_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for f in files:
        blake3.blake3(f.read_bytes(), max_threads=blake3.blake3.AUTO).digest()
    res["blake3py_mt_s"] = time.perf_counter() - t0
    from mrepo.store import hash_file

    t0 = time.perf_counter()
    for f in files:
        hash_file(f)
    res["mrepo_hash_file_s"] = time.perf_counter() - t0
    repo = Repository.init(str(work / "repo_big"))
    t0 = time.perf_counter()
    import_relion5_tomo(repo, proj["tomograms"], source="ts", project=root)
    res["import_s"] = time.perf_counter() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 tilt series instead of --series")
    ap.add_argument("--series", type=int, default=200)
    ap.add_argument("--tilts", type=int, default=41)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args(argv)
    n = 20 if args.quick else args.series
    with tempfile.TemporaryDirectory(prefix="bench_io_") as d:
        work = Path(d)
        fid = fidelity(work)
        thr = throughput(work, n, args.tilts, args.size)
    print("Fidelity (import -> export with the source project folder; every input column compared)")
    print(f"{'format / tables':46s} {'preserved':>9s} {'changed':>8s} {'dropped':>8s} {'max diff':>10s}")
    for name, r in fid.items():
        print(f"{name:46s} {r['preserved']:9d} {len(r['changed']):8d} {len(r['dropped']):8d} "
              f"{r['max_difference']:10.3g}")
        for kind in ("changed", "dropped"):
            if r[kind]:
                print(f"    {kind}: {', '.join(r[kind])}")
    mib = thr["bytes"] / 2**20
    print(f"\nImport throughput: {thr['series']} tilt series x {thr['tilts']} tilts of {thr['size']}^2 int16 "
          f"({mib:.0f} MiB, page cache warm)")
    rate = {k: thr["bytes"] / thr[k] / 2**20 for k in ("import_s", "b3sum_s", "blake3py_mt_s", "mrepo_hash_file_s")
            if k in thr}
    for k, label in (("import_s", "mrepo import relion5-tomo"), ("b3sum_s", "b3sum (BLAKE3 CLI)"),
                     ("blake3py_mt_s", "blake3-py max_threads=AUTO"),
                     ("mrepo_hash_file_s", "mrepo hash_file (1 thread)")):
        if k in thr:
            print(f"  {label:30s} {thr[k]:8.2f} s {rate[k]:9.1f} MiB/s")
    if "b3sum_s" in thr:
        thr["ratio_import_vs_b3sum"] = rate["import_s"] / rate["b3sum_s"]
        print(f"  ratio import / b3sum: {thr['ratio_import_vs_b3sum']:.2f}  (import = per-series metadata "
              f"{(thr['import_s'] - thr['mrepo_hash_file_s']) / thr['series'] * 1e3:.1f} ms + hashing)")
    else:
        print("  b3sum not installed: compare with blake3-py above")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_io_fidelity.json").write_text(json.dumps({"fidelity": fid, "throughput": thr,
                                                                "rates_mib_s": rate}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
