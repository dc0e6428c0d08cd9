"""RELION projects written by hand the way RELION writes them (never by mrepo's exporter).

``tutorial_tomo``: the RELION 5 tomography tutorial layout: ``Tomograms/job006/tomograms.star``
(data_global: one row per tilt series with rlnTomoTiltSeriesStarFile, rlnTomoReconstructedTomogram,
rlnTomoTomogramBinning, rlnMtfFileName, rlnMicrographOriginalPixelSize, rlnEtomoDirectiveFile) and one
tilt-series STAR per tomogram (block ``data_<TomoName>``, one row per tilt with movie names, frame
counts, motion and CTF-fit statistics, the per-tilt alignment and a RELION 4 rlnTomoProjX..W row that
RELION 5 keeps when it converts), and ``Refine3D/job010/run_data.star``: data_general, data_optics
(two optics groups), data_particles with rlnTomoParticleName, rlnImageName, priors, subtomogram
angles, origins, rlnTomoVisibleFrames, class/group numbers (RELION 5 src/metadata_label.h,
src/jaz/tomography/tomogram_set.cpp, particle_set.cpp).

``ctfrefine_spa``: a RELION 3.1+ single-particle project after CtfRefine: ``CtfFind/job004/
micrographs_ctf.star`` (data_optics with rlnMtfFileName, data_micrographs with CTF-fit statistics)
and ``CtfRefine/job012/particles_ctf_refine.star`` whose data_optics holds two optics groups with
rlnBeamTiltX/Y, rlnOddZernike, rlnEvenZernike and rlnMagMat00..11, and whose particles carry their own
defocus, B-factor, scale and phase shift.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from io_projects import loop, maps, write_mrc

TS_PIX = 1.35  # tilt-series pixel size, Å
ORIG_PIX = 0.675  # movie pixel size (super-resolution), Å: rlnMicrographOriginalPixelSize, never overwritten
BINNING = 4.0

TILTS = [0.0, 3.0, -3.0, 6.0]  # dose-symmetric order: stack order is acquisition order here


def _tilt_rows(name: str, k0: int) -> list[list[object]]:
    rows = []
    for k, t in enumerate(TILTS):
        idx = k0 + k
        rows.append([
            f"frames/{name}_{idx:03d}_{t:.2f}_20230101.eer", 40, t, 85.0, 3.0 * k, 4.0,
            f"MotionCorr/job002/frames/{name}_{idx:03d}_{t:.2f}_20230101_EVN.mrc",
            f"MotionCorr/job002/frames/{name}_{idx:03d}_{t:.2f}_20230101_ODD.mrc",
            f"MotionCorr/job002/frames/{name}_{idx:03d}_{t:.2f}_20230101.mrc",
            f"MotionCorr/job002/frames/{name}_{idx:03d}_{t:.2f}_20230101.star", 1.25 + k, 0.5, 0.75 + 0.25 * k,
            f"CtfFind/job003/frames/{name}_{idx:03d}_{t:.2f}_20230101_PS.ctf:mrc",
            40000.5 + 100 * k, 39800.25 + 100 * k, 200.25, 44.5 + k, 0.125, 5.5 + k, 0.0625,
            0.05 * k, t + 0.25, 84.75, 1.5 * k, -0.5 * k, 1.0 - 0.01 * k, f"[1.0,0.0,{0.01 * k},0.0]"])
    return rows


TILT_COLUMNS = [
    "rlnMicrographMovieName", "rlnTomoTiltMovieFrameCount", "rlnTomoNominalStageTiltAngle",
    "rlnTomoNominalTiltAxisAngle", "rlnMicrographPreExposure", "rlnTomoNominalDefocus", "rlnMicrographNameEven",
    "rlnMicrographNameOdd", "rlnMicrographName", "rlnMicrographMetadata", "rlnAccumMotionTotal",
    "rlnAccumMotionEarly", "rlnAccumMotionLate", "rlnCtfImage", "rlnDefocusU", "rlnDefocusV", "rlnCtfAstigmatism",
    "rlnDefocusAngle", "rlnCtfFigureOfMerit", "rlnCtfMaxResolution", "rlnCtfIceRingDensity", "rlnTomoXTilt",
    "rlnTomoYTilt", "rlnTomoZRot", "rlnTomoXShiftAngst", "rlnTomoYShiftAngst", "rlnCtfScalefactor", "rlnTomoProjX"]

GLOBAL_COLUMNS = [
    "rlnTomoName", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnMicrographOriginalPixelSize",
    "rlnTomoHand", "rlnOpticsGroupName", "rlnTomoTiltSeriesPixelSize", "rlnTomoTiltSeriesStarFile",
    "rlnEtomoDirectiveFile", "rlnTomoTomogramBinning", "rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ",
    "rlnTomoReconstructedTomogram", "rlnMtfFileName"]

PARTICLE_COLUMNS = [
    "rlnTomoName", "rlnTomoParticleName", "rlnImageName", "rlnCenteredCoordinateXAngst",
    "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst", "rlnOriginXAngst", "rlnOriginYAngst",
    "rlnOriginZAngst", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnAngleTiltPrior", "rlnAnglePsiPrior",
    "rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi", "rlnTomoVisibleFrames",
    "rlnGroupNumber", "rlnClassNumber", "rlnNormCorrection", "rlnLogLikeliContribution",
    "rlnMaxValueProbDistribution", "rlnNrOfSignificantSamples", "rlnRandomSubset", "rlnOpticsGroup"]


def tomo_particle_rows() -> list[list[object]]:
    rows = []
    for name, group, k0 in (("TS_01", 1, 0), ("TS_03", 2, 10)):
        for p in range(3):
            pid = k0 + p + 1
            rows.append([name, f"{name}/{p + 1}", f"Extract/job008/Subtomograms/{name}/{p + 1}_stack2d.mrcs",
                         100.5 * (p + 1) - 150, -75.25 * p + 40, 12.5 * p - 20, 1.25 * p, -0.75, 0.5 * p,
                         15.0 * pid, 60.0 + pid, -20.0 * p, 90.0, 0.0, 10.0 * p, 30.0 + p, -45.0 * p,
                         "[1,1,1,0]" if p else "[1,1,1,1]", group, 1, 0.98 + 0.01 * p, 12345.5 + p, 0.25, 3,
                         1 + p % 2, group])
    return rows


def tutorial_tomo(root: Path) -> dict[str, Path]:
    """Two tilt series (TS_01, TS_03) with four tilt images each, their tomograms.star and particles."""
    rng = np.random.default_rng(5)
    grows = []
    for name, k0 in (("TS_01", 0), ("TS_03", 10)):
        rows = _tilt_rows(name, k0)
        for r in rows:
            write_mrc(root / r[8], rng.normal(size=(1, 20, 24)), TS_PIX)
        star = root / f"AlignTiltSeries/job005/tilt_series/{name}.star"
        star.parent.mkdir(parents=True, exist_ok=True)
        star.write_text(loop(name, TILT_COLUMNS, rows))
        grows.append([name, 300.0, 2.7, 0.1, ORIG_PIX, -1.0, "optics1" if name == "TS_01" else "optics2", TS_PIX,
                      f"AlignTiltSeries/job005/tilt_series/{name}.star",
                      f"AlignTiltSeries/job005/external/{name}/{name}.edf", BINNING, 24, 20, 16,
                      f"Tomograms/job006/tomograms/rec_{name}.mrc", "mtf_k3_300kV_FL2.star"])
    tomograms = root / "Tomograms/job006/tomograms.star"
    tomograms.parent.mkdir(parents=True, exist_ok=True)
    tomograms.write_text(loop("global", GLOBAL_COLUMNS, grows))
    general = "\n# version 50001\n\ndata_general\n\n_rlnTomoSubTomosAre2DStacks                       1\n \n"
    ocols = ["rlnOpticsGroup", "rlnOpticsGroupName", "rlnSphericalAberration", "rlnVoltage",
             "rlnTomoTiltSeriesPixelSize", "rlnCtfDataAreCtfPremultiplied", "rlnImageDimensionality",
             "rlnTomoSubtomogramBinning", "rlnImagePixelSize", "rlnImageSize", "rlnAmplitudeContrast"]
    optics = loop("optics", ocols, [[1, "optics1", 2.7, 300.0, TS_PIX, 1, 2, 2.0, 2.7, 8, 0.1],
                                    [2, "optics2", 2.7, 300.0, TS_PIX, 1, 2, 2.0, 2.7, 8, 0.1]])
    particles = root / "Refine3D/job010/run_data.star"
    particles.parent.mkdir(parents=True, exist_ok=True)
    particles.write_text(general + optics + loop("particles", PARTICLE_COLUMNS, tomo_particle_rows()))
    return {"tomograms": tomograms, "particles": particles, **maps(root, voxel=2.7)}


SPA_PIX = 1.77  # micrograph pixel size (binned 2x from 0.885 Å movies)
MIC_COLUMNS = ["rlnCtfPowerSpectrum", "rlnMicrographName", "rlnMicrographMetadata", "rlnOpticsGroup",
               "rlnAccumMotionTotal", "rlnAccumMotionEarly", "rlnAccumMotionLate", "rlnCtfImage", "rlnDefocusU",
               "rlnDefocusV", "rlnCtfAstigmatism", "rlnDefocusAngle", "rlnCtfFigureOfMerit", "rlnCtfMaxResolution"]
SPA_PARTICLE_COLUMNS = [
    "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnClassNumber", "rlnAnglePsi", "rlnImageName",
    "rlnMicrographName", "rlnOpticsGroup", "rlnCtfMaxResolution", "rlnCtfFigureOfMerit", "rlnDefocusU",
    "rlnDefocusV", "rlnDefocusAngle", "rlnCtfBfactor", "rlnCtfScalefactor", "rlnPhaseShift", "rlnAngleRot",
    "rlnAngleTilt", "rlnOriginXAngst", "rlnOriginYAngst", "rlnAngleRotPrior", "rlnAngleTiltPrior",
    "rlnAnglePsiPrior", "rlnNormCorrection", "rlnLogLikeliContribution", "rlnMaxValueProbDistribution",
    "rlnNrOfSignificantSamples", "rlnGroupNumber", "rlnRandomSubset"]
MICS = [("FoilHole_1_Data_1_1_20230101_120000_fractions", 1, 21000.5, 20700.25, 35.5),
        ("FoilHole_2_Data_2_2_20230101_120500_fractions", 2, 15000.0, 14800.75, -12.25)]


def spa_particle_rows() -> list[list[object]]:
    rows = []
    for m, (name, group, du, dv, da) in enumerate(MICS):
        for p in range(3):
            i = 3 * m + p
            rows.append([10.0 + 5.5 * p, 7.25 + 3 * p, 0.5 + 0.1 * p, 1, -30.5 * p, f"{i + 1:06d}@Extract/job007/Movies/"
                         f"{name}.mrcs", f"MotionCorr/job002/Movies/{name}.mrc", group, 3.5, 0.15,
                         du + 37.5 * p, dv + 12.25 * p, da + 0.5 * p, -5.0 * p, 1.0 - 0.001 * p, 0.0,
                         20.0 * i, 90.0 - i, 0.354 * p, -1.77 * p, 20.0 * i, 90.0, -30.5 * p, 0.9 + 0.01 * p,
                         45678.0 + p, 0.125, 4, group, 1 + (i % 2)])
    return rows


def ctfrefine_spa(root: Path) -> dict[str, Path]:
    """Two micrographs in two optics groups; CtfRefine aberrations in the particles' optics table."""
    rng = np.random.default_rng(6)
    mrows = []
    for name, group, du, dv, da in MICS:
        write_mrc(root / f"MotionCorr/job002/Movies/{name}.mrc", rng.normal(size=(1, 24, 32)), SPA_PIX)
        mrows.append([f"MotionCorr/job002/Movies/{name}_PS.mrc", f"MotionCorr/job002/Movies/{name}.mrc",
                      f"MotionCorr/job002/Movies/{name}.star", group, 12.5, 2.25, 10.25,
                      f"CtfFind/job004/Movies/{name}.ctf:mrc", du, dv, du - dv, da, 0.125, 3.25])
    mocols = ["rlnOpticsGroupName", "rlnOpticsGroup", "rlnMtfFileName", "rlnMicrographOriginalPixelSize",
              "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnMicrographPixelSize"]
    mics = root / "CtfFind/job004/micrographs_ctf.star"
    mics.parent.mkdir(parents=True, exist_ok=True)
    mics.write_text(loop("optics", mocols, [["opticsGroup1", 1, "mtf_k3_300kV.star", 0.885, 300.0, 2.7, 0.1, SPA_PIX],
                                            ["opticsGroup2", 2, "mtf_k3_300kV.star", 0.885, 300.0, 2.7, 0.1, SPA_PIX]])
                    + loop("micrographs", MIC_COLUMNS, mrows))
    pocols = ["rlnOpticsGroupName", "rlnOpticsGroup", "rlnMtfFileName", "rlnMicrographOriginalPixelSize",
              "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnImagePixelSize", "rlnImageSize",
              "rlnImageDimensionality", "rlnCtfDataAreCtfPremultiplied", "rlnBeamTiltX", "rlnBeamTiltY",
              "rlnOddZernike", "rlnEvenZernike", "rlnMagMat00", "rlnMagMat01", "rlnMagMat10", "rlnMagMat11"]
    porows = [["opticsGroup1", 1, "mtf_k3_300kV.star", 0.885, 300.0, 2.7, 0.1, 4.0, 8, 2, 0, 0.125, -0.25,
               "[0.470415,0.416253,34.386147,0,0,10.785281]",
               "[46.106517,61.308936,71.654850,-58.850637,-20.448174,21.154348,25.626344,-20.249181,-16.985185]",
               1.007178, 0.00768, 0.007699, 0.993671],
              ["opticsGroup2", 2, "mtf_k3_300kV.star", 0.885, 300.0, 2.7, 0.1, 4.0, 8, 2, 0, -0.5, 0.75,
               "[0.1,0.2,0.3,0.4,0.5,0.6]", "[1.0,2.0,3.0,4.0,5.0,6.0,7.0,8.0,9.0]", 0.998, -0.001, 0.002, 1.003]]
    particles = root / "CtfRefine/job012/particles_ctf_refine.star"
    particles.parent.mkdir(parents=True, exist_ok=True)
    particles.write_text(loop("optics", pocols, porows) + loop("particles", SPA_PARTICLE_COLUMNS,
                                                               spa_particle_rows()))
    return {"particles": particles, "micrographs": mics, **maps(root)}
