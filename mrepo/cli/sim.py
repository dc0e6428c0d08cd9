"""``mrepo sim``: write simulated frame or tilt series with ground truth (thin layer over mrepo.sim)."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ..store import InvalidInput

app = typer.Typer(help="Simulate cryo-EM frame or tilt series with exact ground truth.", no_args_is_help=True)
console = Console()


MAX_SIZE_PX = 4096
"""Largest simulated image side: 10 frames of 4096² px are 1.3 GB as float64, 100000² px would be 745 GB."""


def _check(size: int, pixel_size: float, box: int, snr: float, particles: int, species: int,
           seed: int = 0) -> None:
    """Refuse impossible numbers in one line (exit 2) before any work is done."""
    def bad(option: str, value: object, need: str) -> InvalidInput:
        return InvalidInput(f"{option} {value}: {need}")

    if seed < 0:
        raise bad("--seed", seed, "the random seed must be 0 or larger")
    if size < 16:
        raise bad("--size", size, "the image must be at least 16 pixels wide")
    if size > MAX_SIZE_PX:
        raise bad("--size", size, f"at most {MAX_SIZE_PX} pixels (the simulator holds the whole stack in memory "
                  "as float64)")
    if not math.isfinite(pixel_size) or pixel_size <= 0:
        raise bad("--pixel-size", pixel_size, "must be a positive number of Å")
    if box < 8:
        raise bad("--box", box, "the species box must be at least 8 pixels")
    if box > size:
        raise bad("--box", box, f"the species box is larger than the {size}-pixel image (--size)")
    if not math.isfinite(snr) or snr <= 0:
        raise bad("--snr", snr, "must be a positive, finite signal/noise variance ratio")
    if particles < 1:
        raise bad("--particles", particles, "need at least one particle")
    if species < 1:
        raise bad("--species", species, "need at least one species")


def _fresh_out(out: Path) -> None:
    """Refuse an --out folder that already holds files: a new dataset would overwrite them (and raw data
    a repository references in place would no longer match its hash)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInput(f"--out {out}: already exists and is not an empty folder; choose a new folder "
                           "(a simulation never overwrites files)")


def _numbers(option: str, text: str | None, count: int) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise InvalidInput(f"{option} {text!r}: need {count} comma-separated finite numbers")
    return values


def _aberrations(mag: str | None, tilt: str | None, trefoil: str | None, four_fold: str | None = None):
    """The injected optics of ``mrepo sim frames`` (:class:`mrepo.sim.optics.SimAberrations`)."""
    from mrepo.sim.optics import SimAberrations

    m = _numbers("--mag-matrix", mag, 4)
    kw: dict = {}
    if m is not None:
        kw["mag_matrix"] = ((m[0], m[1]), (m[2], m[3]))
    if tilt is not None:
        kw["beam_tilt_mrad"] = _numbers("--beam-tilt", tilt, 2)
    if trefoil is not None:
        kw["trefoil"] = _numbers("--trefoil", trefoil, 2)
    if four_fold is not None:
        kw["four_fold"] = _numbers("--four-fold", four_fold, 2)
    try:
        return SimAberrations(**kw)
    except ValueError as exc:
        raise InvalidInput(f"--mag-matrix {mag!r}: {exc}") from None


def _summary(kind: str, sim, manifest: Path) -> None:
    table = Table(title=f"simulated {kind}: {sim.truth.name}")
    table.add_column("quantity")
    table.add_column("value")
    table.add_row("images", f"{sim.data.shape[0]} x {sim.data.shape[1]} x {sim.data.shape[2]} px")
    table.add_row("pixel size", f"{sim.truth.optics.pixel_size} Å")
    table.add_row("particles", str(len(sim.truth.particles.ids)))
    table.add_row("species", ", ".join(f"{s.spec.name} ({s.spec.symmetry}, {s.spec.diameter} Å)" for s in sim.species))
    table.add_row("noise sigma", f"{sim.truth.noise_sigma:.4g} (SNR {sim.config.snr})")
    table.add_row("contrast", f"{sim.config.contrast}" + (f" on {sim.config.mean_counts:g} counts/px"
                                                          if sim.config.contrast == "dark" else ""))
    table.add_row("manifest", str(manifest))
    console.print(table)


def _damage(value: str) -> str:
    if value not in ("dose", "measured"):
        raise typer.BadParameter(f"--damage must be 'dose' or 'measured', got {value!r}")
    return value


def _finite(option: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidInput(f"{option} {value}: must be a finite number")
    return value


def _contrast(value: str) -> str:
    if value not in ("dark", "light"):
        raise typer.BadParameter(f"--contrast must be 'dark' or 'light', got {value!r}")
    return value


@app.command()
def frames(
    out: Path = typer.Option(..., help="output folder"),
    seed: int = typer.Option(0, help="random seed"),
    particles: int = typer.Option(16, help="number of particles"),
    species: int = typer.Option(2, help="number of species"),
    n_frames: int = typer.Option(10, "--frames", help="number of frames"),
    snr: float = typer.Option(0.1, help="signal/noise variance ratio in particle areas"),
    size: int = typer.Option(256, help="frame width and height in pixels"),
    pixel_size: float = typer.Option(1.5, help="pixel size in Å"),
    box: int = typer.Option(48, help="species box in pixels"),
    contrast: str = typer.Option("dark", help="detector contrast: dark (particles dark on ~19 counts/px, "
                                 "Poisson noise, as counting detectors) or light (bright on zero, Gaussian noise)"),
    one_file_per_image: bool = typer.Option(False, "--one-file-per-image",
                                            help="write each frame/tilt as its own MRC file"),
    mag_matrix: str = typer.Option(None, "--mag-matrix", metavar="M00,M01,M10,M11",
                                   help="inject anisotropic magnification: 2x2 matrix on frequencies as RELION's "
                                   "rlnMagMat (data(k) = projection(Mk)), e.g. 1.01,0,0,0.995 (default identity)"),
    beam_tilt: str = typer.Option(None, "--beam-tilt", metavar="X,Y",
                                  help="inject beam tilt in mrad (rlnBeamTiltX/Y), e.g. 0.5,-0.3 (default 0,0)"),
    trefoil: str = typer.Option(None, "--trefoil", metavar="A,B",
                                help="inject trefoil: odd Zernike coefficients 2 and 5 in rad (rlnOddZernike), "
                                "e.g. 20,0 (default 0,0)"),
    four_fold: str = typer.Option(None, "--four-fold", metavar="A,B",
                                  help="inject four-fold astigmatism: even Zernike coefficients 4 and 8 in rad "
                                  "(rlnEvenZernike), e.g. 0,150 (default 0,0)"),
    doming: float = typer.Option(40.0, "--doming", help="injected dome: defocus change in Å at the centre "
                                 "(M's doming; truth.json items[0].doming)"),
    damage: str = typer.Option("dose", "--damage", help="exposure damage: dose (B = 4 Å² per e-/Å²) or measured "
                               "(saturating per-frame B-factors and scales, truth.json items[0].damage)"),
) -> None:
    """Simulate one frame series and write it to OUT. Injected optics (--mag-matrix, --beam-tilt,
    --trefoil) are written to truth.json only (items[0].aberrations), never to initial.json."""
    _check(size, pixel_size, box, snr, particles, species, seed)
    _fresh_out(out)
    aberrations = _aberrations(mag_matrix, beam_tilt, trefoil, four_fold)
    if n_frames < 2:
        raise InvalidInput(f"--frames {n_frames}: a frame series needs at least 2 frames")
    from mrepo.sim import FrameSeriesConfig, Optics, simulate_frame_series, write_dataset  # torch: import lazily

    try:
        config = FrameSeriesConfig(
            image_size=(size, size), n_frames=n_frames, optics=Optics(pixel_size=pixel_size),
            n_species=species, box=box, n_particles=particles, snr=snr, contrast=_contrast(contrast),
            aberrations=aberrations, doming_A=_finite("--doming", doming), damage=_damage(damage),
        )
        sim = simulate_frame_series(config, seed)
    except ValueError as exc:  # the simulator's own checks (e.g. too many particles for the field)
        raise InvalidInput(f"{exc} (check --box, --pixel-size, --particles and --size)") from None
    _summary("frame series", sim, write_dataset(sim, out, one_file_per_image=one_file_per_image))


@app.command()
def tilts(
    out: Path = typer.Option(..., help="output folder"),
    seed: int = typer.Option(0, help="random seed"),
    particles: int = typer.Option(12, help="number of particles"),
    species: int = typer.Option(2, help="number of species"),
    max_tilt: float = typer.Option(60.0, help="largest tilt angle in degrees"),
    step: float = typer.Option(3.0, help="tilt increment in degrees"),
    snr: float = typer.Option(0.1, help="signal/noise variance ratio in particle areas"),
    size: int = typer.Option(256, help="tilt image width and height in pixels"),
    pixel_size: float = typer.Option(1.5, help="pixel size in Å"),
    box: int = typer.Option(48, help="species box in pixels"),
    contrast: str = typer.Option("dark", help="detector contrast: dark (particles dark on ~19 counts/px, "
                                 "Poisson noise, as counting detectors) or light (bright on zero, Gaussian noise)"),
    one_file_per_image: bool = typer.Option(False, "--one-file-per-image",
                                            help="write each frame/tilt as its own MRC file"),
    volume_warp: float = typer.Option(0.0, "--volume-warp", help="inject a smooth volume deformation of about "
                                      "this many Å by the last tilt (M's volume warp; truth.json "
                                      "items[0].volume_deformation)"),
    damage: str = typer.Option("dose", "--damage", help="exposure damage: dose (B = 4 Å² per e-/Å²) or measured "
                               "(saturating per-tilt B-factors and scales, truth.json items[0].damage)"),
    mag_matrix: str = typer.Option(None, "--mag-matrix", metavar="M00,M01,M10,M11",
                                   help="inject anisotropic magnification (as for frames; truth.json only)"),
    beam_tilt: str = typer.Option(None, "--beam-tilt", metavar="X,Y", help="inject beam tilt in mrad"),
    trefoil: str = typer.Option(None, "--trefoil", metavar="A,B", help="inject trefoil (odd Zernike 2, 5; rad)"),
    four_fold: str = typer.Option(None, "--four-fold", metavar="A,B",
                                  help="inject four-fold astigmatism (even Zernike 4, 8; rad)"),
    tilt_movies: int = typer.Option(0, "--tilt-movies", metavar="FRAMES",
                                    help="record each tilt as a movie of FRAMES frames (one MRC per tilt; the tilt "
                                    "image is their unaligned sum); 0: no movies"),
    tilt_movie_motion: float = typer.Option(1.0, "--tilt-movie-motion",
                                            help="with --tilt-movies: injected per-frame motion inside each tilt "
                                            "movie, RMS px (zero-mean per tilt; truth.json "
                                            "items[0].tilt_movie_shifts_px)"),
) -> None:
    """Simulate one tilt series (dose-symmetric scheme) and write it to OUT."""
    _check(size, pixel_size, box, snr, particles, species, seed)
    _fresh_out(out)
    aberrations = _aberrations(mag_matrix, beam_tilt, trefoil, four_fold)
    if not math.isfinite(max_tilt) or not 0 <= max_tilt < 90:
        raise InvalidInput(f"--max-tilt {max_tilt}: must be at least 0 and below 90 degrees")
    if not math.isfinite(step) or step <= 0:
        raise InvalidInput(f"--step {step}: the tilt increment must be a positive number of degrees")
    if tilt_movies < 0 or tilt_movies == 1:
        raise InvalidInput(f"--tilt-movies {tilt_movies}: 0 (no movies) or at least 2 frames per tilt")
    if not math.isfinite(tilt_movie_motion) or tilt_movie_motion < 0:
        raise InvalidInput(f"--tilt-movie-motion {tilt_movie_motion}: must be a finite number of px >= 0")
    from mrepo.sim import Optics, TiltSeriesConfig, simulate_tilt_series, write_dataset  # torch: import lazily

    try:
        config = TiltSeriesConfig(
            image_size=(size, size), optics=Optics(pixel_size=pixel_size), n_species=species, box=box,
            n_particles=particles, max_tilt=max_tilt, tilt_step=step, snr=snr, contrast=_contrast(contrast),
            volume_warp_A=_finite("--volume-warp", volume_warp), damage=_damage(damage), aberrations=aberrations,
            tilt_movie_frames=tilt_movies, tilt_movie_motion_px=tilt_movie_motion if tilt_movies else 0.0,
        )
        sim = simulate_tilt_series(config, seed)
    except ValueError as exc:  # the simulator's own checks (e.g. too many particles for the field)
        raise InvalidInput(f"{exc} (check --box, --pixel-size, --particles and --size)") from None
    _summary("tilt series", sim, write_dataset(sim, out, one_file_per_image=one_file_per_image))
