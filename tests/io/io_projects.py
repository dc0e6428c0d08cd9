"""Small hand-written RELION 5 tomography and RELION single-particle projects (STAR text + MRC)."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np

PIX = 2.0  # tilt-series / micrograph pixel size, Å
BOX = 8


def write_mrc(path: Path, data: np.ndarray, voxel: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(data, dtype=np.float32))
        m.voxel_size = voxel
    return path


def loop(name: str, columns: list[str], rows: list[list[object]]) -> str:
    head = f"\n# version 50001\n\ndata_{name}\n\nloop_ \n" + "".join(f"_{c} #{i + 1} \n" for i, c in enumerate(columns))
    return head + "".join("\t".join(str(v) for v in r) + " \n" for r in rows) + " \n"


def maps(root: Path, voxel: float = 4.0, box: int = BOX) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    v = rng.normal(size=(box, box, box)).astype(np.float32)
    return {"half1": write_mrc(root / "Refine3D/job010/run_half1_class001_unfil.mrc", v, voxel),
            "half2": write_mrc(root / "Refine3D/job010/run_half2_class001_unfil.mrc", v * 0.5, voxel),
            "mask": write_mrc(root / "MaskCreate/job011/mask.mrc", np.ones_like(v), voxel)}


TOMO_PARTICLES = [  # TomoName, centred x y z Å, rot tilt psi, subtomo rot tilt psi, subset
    ["TS_01", 10.5, -20.25, 3.0, 10.0, 20.0, 30.0, 0.0, 0.0, 0.0, 1],
    ["TS_01", -40.0, 12.0, -8.5, -50.0, 90.0, 170.0, 0.0, 0.0, 0.0, 2],
    ["TS_02", 0.0, 0.0, 0.0, 5.0, 6.0, 7.0, 0.0, 0.0, 0.0, 1],
]


def relion5_tomo(root: Path, *, particles: list[list[object]] | None = None) -> dict[str, Path]:
    """Two tilt series (TS_01: per-tilt images; TS_02: one stack, k@file), tomograms.star, particles."""
    rng = np.random.default_rng(0)
    tilts = [-3.0, 0.0, 3.0]
    pre = [3.0, 0.0, 6.0]
    for name in ("TS_01", "TS_02"):
        rows = []
        for k, t in enumerate(tilts):
            if name == "TS_01":
                img = write_mrc(root / f"MotionCorr/job002/frames/{name}_{k + 1:03d}_{t}.mrc",
                                rng.normal(size=(1, 24, 32)), PIX)
                mic = str(img.relative_to(root))
            else:
                mic = f"{k + 1}@Stacks/{name}.mrcs"
            rows.append([f"frames/{name}_{k + 1:03d}.tiff", t, 85.0, pre[k], 30000.0 + 100 * k, 29800.0 + 100 * k,
                         45.0 + k, 0.1 * k, t + 0.5, 85.5, 1.25 * k, -0.75 * k, mic])
        if name == "TS_02":
            write_mrc(root / f"Stacks/{name}.mrcs", rng.normal(size=(3, 24, 32)), PIX)
        cols = ["rlnMicrographMovieName", "rlnTomoNominalStageTiltAngle", "rlnTomoNominalTiltAxisAngle",
                "rlnMicrographPreExposure", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnTomoXTilt",
                "rlnTomoYTilt", "rlnTomoZRot", "rlnTomoXShiftAngst", "rlnTomoYShiftAngst", "rlnMicrographName"]
        (root / "AlignTiltSeries/job005/tilt_series").mkdir(parents=True, exist_ok=True)
        (root / f"AlignTiltSeries/job005/tilt_series/{name}.star").write_text(loop(name, cols, rows))
    gcols = ["rlnTomoName", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast",
             "rlnMicrographOriginalPixelSize", "rlnTomoHand", "rlnTomoTiltSeriesPixelSize",
             "rlnTomoTiltSeriesStarFile", "rlnTomoTomogramBinning", "rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ"]
    grows = [[n, 300.0, 2.7, 0.1, 1.0, -1.0, PIX, f"AlignTiltSeries/job005/tilt_series/{n}.star", 4.0, 32, 24, 10]
             for n in ("TS_01", "TS_02")]
    (root / "Tomograms/job006").mkdir(parents=True, exist_ok=True)
    (root / "Tomograms/job006/tomograms.star").write_text(loop("global", gcols, grows))
    general = "\n# version 50001\n\ndata_general\n\n_rlnTomoSubTomosAre2DStacks                       1\n \n"
    ocols = ["rlnOpticsGroup", "rlnOpticsGroupName", "rlnSphericalAberration", "rlnVoltage",
             "rlnTomoTiltSeriesPixelSize", "rlnCtfDataAreCtfPremultiplied", "rlnImageDimensionality",
             "rlnTomoSubtomogramBinning", "rlnImagePixelSize", "rlnImageSize", "rlnAmplitudeContrast"]
    optics = loop("optics", ocols, [[1, "optics1", 2.7, 300.0, PIX, 1, 2, 2.0, 4.0, BOX, 0.1]])
    pcols = ["rlnTomoName", "rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
             "rlnCenteredCoordinateZAngst", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnTomoSubtomogramRot",
             "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi", "rlnRandomSubset", "rlnOpticsGroup"]
    prows = [list(r) + [1] for r in (particles if particles is not None else TOMO_PARTICLES)]
    (root / "Refine3D/job010").mkdir(parents=True, exist_ok=True)
    (root / "Refine3D/job010/run_data.star").write_text(general + optics + loop("particles", pcols, prows))
    return {"tomograms": root / "Tomograms/job006/tomograms.star", "particles": root / "Refine3D/job010/run_data.star",
            **maps(root)}


SPA_PARTICLES = [  # micrograph, x px, y px, origin x/y Å, rot tilt psi, dU dV dA, subset
    ["MotionCorr/job002/Movies/mic_001.mrc", 10.0, 12.5, 0.0, 0.0, 1.0, 2.0, 3.0, 15000.0, 14800.0, 30.0, 1],
    ["MotionCorr/job002/Movies/mic_001.mrc", 20.0, 5.0, 1.5, -2.0, 4.0, 5.0, 6.0, 15010.0, 14810.0, 31.0, 2],
    ["MotionCorr/job002/Movies/mic_002.mrc", 7.25, 3.0, 0.0, 0.0, 7.0, 8.0, 9.0, 20000.0, 19900.0, 10.0, 2],
]


def relion_spa(root: Path, *, particles: list[list[object]] | None = None, mic_voxel: float = PIX
               ) -> dict[str, Path]:
    rng = np.random.default_rng(2)
    for n in ("mic_001", "mic_002"):
        write_mrc(root / f"MotionCorr/job002/Movies/{n}.mrc", rng.normal(size=(1, 24, 32)), mic_voxel)
    ocols = ["rlnOpticsGroupName", "rlnOpticsGroup", "rlnMicrographOriginalPixelSize", "rlnVoltage",
             "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnImagePixelSize", "rlnImageSize",
             "rlnImageDimensionality"]
    optics = loop("optics", ocols, [["opticsGroup1", 1, PIX, 300.0, 2.7, 0.1, 4.0, BOX, 2]])
    pcols = ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnOriginXAngst", "rlnOriginYAngst",
             "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
             "rlnRandomSubset", "rlnImageName", "rlnOpticsGroup"]
    prows = [list(r) + [f"{i + 1:06d}@Extract/job007/particles.mrcs", 1]
             for i, r in enumerate(particles if particles is not None else SPA_PARTICLES)]
    (root / "Refine3D/job010").mkdir(parents=True, exist_ok=True)
    (root / "Refine3D/job010/run_data.star").write_text(optics + loop("particles", pcols, prows))
    return {"particles": root / "Refine3D/job010/run_data.star", **maps(root)}
