"""``mrepo import ...``, ``mrepo export ...`` and ``mrepo checkout``: thin layers over mrepo.io."""

from __future__ import annotations

# mrepo.io (pandas via starfile, scipy) is imported inside each command: `mrepo --help` stays fast.
from pathlib import Path

import typer

from ..store import InvalidInput
from .common import JsonOption, RepoOption, console, err_console, open_repo, print_json

import_app = typer.Typer(help="Import RELION 5 tomography, RELION single-particle, M species or simulator data.",
                         no_args_is_help=True)
export_app = typer.Typer(help="Export a commit as RELION files or an M population.", no_args_is_help=True)

BranchOption = typer.Option(None, "--branch", "-b", help="Branch to commit to (default: the default branch).")
CopyOption = typer.Option(False, "--copy", help="Copy raw data into the repository (default: reference in place).")
PopulationOption = typer.Option("population", help="Population name, used when the repository has none yet.")
IgnoreUnmatchedOption = typer.Option(False, "--ignore-unmatched", help="Skip particles whose micrograph or "
                                     "tomogram is not in the population (default: refuse).")
SpeciesNameOption = typer.Option(None, "--species", help="Name of the species to create from the particle file "
                                 "(with --half1, --half2, --mask and --diameter).", show_default=False)
Half1Option = typer.Option(None, "--half1", help="Half-map 1 of the species (MRC).", show_default=False)
Half2Option = typer.Option(None, "--half2", help="Half-map 2 of the species (MRC).", show_default=False)
MaskOption = typer.Option(None, "--mask", help="Mask of the species (MRC).", show_default=False)
DiameterOption = typer.Option(None, "--diameter", help="Species diameter in Å.", show_default=False)
SymmetryOption = typer.Option("C1", "--symmetry", help="Point-group symmetry: Cn, Dn, T, O or I.")
TemporalOption = typer.Option(1, "--temporal-samples", min=1, help="Temporal samples per particle trajectory "
                              "(1: static particles).")
ContrastOption = typer.Option(None, "--contrast", help="How particles look in the raw data: dark (counting detectors) "
                              "or light. Default: detected against the imported species' maps when given, else dark.",
                              show_default=False)


def _polarity(contrast: str | None, detect: bool = False) -> PolarityChoice:  # noqa: F821
    """The import's polarity choice (:mod:`mrepo.io.contrast`); detection runs only without --contrast."""
    from ..io.contrast import PolarityChoice
    if contrast is not None and contrast not in ("dark", "light"):
        raise InvalidInput(f"--contrast {contrast!r}: use dark or light")
    if contrast is None and detect:
        from ..workers.polarity import detect_polarity
        return PolarityChoice(None, detect_polarity)
    return PolarityChoice(contrast)


def _species(name: str | None, half1: Path | None, half2: Path | None, mask: Path | None, diameter: float | None,
             symmetry: str, temporal_samples: int) -> SpeciesFiles | None:  # noqa: F821
    from ..io import SpeciesFiles
    given = [v is not None for v in (name, half1, half2, mask, diameter)]
    if not any(given):
        return None
    if not all(given):
        raise InvalidInput("a species needs --species, --half1, --half2, --mask and --diameter together")
    return SpeciesFiles(name, half1, half2, mask, diameter, symmetry, temporal_samples)  # type: ignore[arg-type]


def _report(res, json: bool) -> None:
    if json:
        print_json(res)
    else:
        console.print(f"commit {res.commit}  (population {res.population[:12]}; sources: "
                      f"{', '.join(res.sources) or '-'}; species: {', '.join(res.species) or '-'})")


@import_app.command("relion5-tomo")
def relion5_tomo(tomograms: Path = typer.Argument(..., help="tomograms.star"),
                 source: str = typer.Option(..., help="Name of the new data source."),
                 project: Path = typer.Option(Path("."), help="RELION project folder (STAR paths are relative to it)."),
                 particles: Path = typer.Option(None, help="Particle STAR file (with --species and maps)."),
                 species: str = SpeciesNameOption,
                 half1: Path = Half1Option, half2: Path = Half2Option, mask: Path = MaskOption,
                 diameter: float = DiameterOption,
                 symmetry: str = SymmetryOption, temporal_samples: int = TemporalOption,
                 ignore_unmatched: bool = IgnoreUnmatchedOption,
                 copy: bool = CopyOption, population: str = PopulationOption,
                 contrast: str = ContrastOption,
                 coordinate_pixel_size: float = typer.Option(
                     None, "--coordinate-pixel-size",
                     help="Å per pixel of rlnCoordinateX/Y/Z picks (default: RELION 4 tilt-series pixel, else the "
                          "tomogram's binned pixel from rlnTomoTomogramBinning)."),
                 branch: str = BranchOption, repo: str = RepoOption, json: bool = JsonOption) -> None:
    """Import RELION 5 tilt series (and optionally a species) into a new commit."""
    from ..io import import_relion5_tomo
    sp = _species(species, half1, half2, mask, diameter, symmetry, temporal_samples)
    res = import_relion5_tomo(open_repo(repo), tomograms, source=source, project=project, particles=particles,
                              species=sp, copy=copy, ignore_unmatched=ignore_unmatched, population=population,
                              branch=branch, polarity=_polarity(contrast, sp is not None),
                              coordinate_pixel_size=coordinate_pixel_size)
    _report(res, json)


@import_app.command("relion-spa")
def relion_spa(particles: Path = typer.Argument(..., help="Particle STAR file (run_data.star)."),
               source: str = typer.Option(..., help="Name of the new data source."),
               project: Path = typer.Option(Path("."), help="RELION project folder."),
               micrographs: Path = typer.Option(None, help="micrographs.star (per-micrograph CTF and pixel size)."),
               species: str = SpeciesNameOption, half1: Path = Half1Option, half2: Path = Half2Option,
               mask: Path = MaskOption, diameter: float = DiameterOption,
               symmetry: str = SymmetryOption, temporal_samples: int = TemporalOption,
               dose_per_frame: float = typer.Option(0.0, help="Dose per frame in e⁻/Å²."),
               ignore_unmatched: bool = IgnoreUnmatchedOption, copy: bool = CopyOption,
               population: str = PopulationOption, branch: str = BranchOption, repo: str = RepoOption,
               contrast: str = ContrastOption, json: bool = JsonOption) -> None:
    """Import RELION single-particle micrographs (and optionally a species) into a new commit."""
    from ..io import import_relion_spa
    sp = _species(species, half1, half2, mask, diameter, symmetry, temporal_samples)
    res = import_relion_spa(open_repo(repo), particles, source=source, project=project, micrographs=micrographs,
                            species=sp, copy=copy, dose_per_frame=dose_per_frame, ignore_unmatched=ignore_unmatched,
                            population=population, branch=branch, polarity=_polarity(contrast, sp is not None))
    _report(res, json)


@import_app.command("sim")
def sim(folder: Path = typer.Argument(..., help="Folder written by `mrepo sim`."),
        truth: bool = typer.Option(False, "--truth", help="Import the ground truth instead of the initial values."),
        source: str = typer.Option("sim", help="Name of the new data source."), copy: bool = CopyOption,
        population: str = PopulationOption,
        contrast: str = typer.Option(None, "--contrast", help="Override the dataset's recorded contrast "
                                     "(dark | light).", show_default=False),
        branch: str = BranchOption, repo: str = RepoOption, json: bool = JsonOption) -> None:
    """Import a simulated dataset into a new commit."""
    from ..io import import_sim
    _report(import_sim(open_repo(repo), folder, truth=truth, source=source, copy=copy, population=population,
                       branch=branch, contrast=_polarity(contrast).contrast), json)


@import_app.command("warp")
def warp(folder: Path = typer.Argument(..., help="Warp processing folder (one XML per movie or tilt series)."),
         source: str = typer.Option("warp", "--source", help="Name of the new data source."),
         settings: Path = typer.Option(None, "--settings", help="Warp settings file (e.g. previous.settings)."),
         copy: bool = CopyOption, population: str = PopulationOption, branch: str = BranchOption,
         contrast: str = ContrastOption, repo: str = RepoOption, json: bool = JsonOption) -> None:
    """Import a Warp processing folder as a new data source (one item per XML)."""
    from ..io.warp_import import import_warp
    _report(import_warp(open_repo(repo), folder, source=source, settings=settings, copy=copy, population=population,
                        branch=branch, polarity=_polarity(contrast)), json)


@import_app.command("m")
def m(population_file: Path = typer.Argument(..., help="M .population file."),
      ignore_unmatched: bool = IgnoreUnmatchedOption, copy: bool = CopyOption,
      contrast: str = ContrastOption,
      branch: str = BranchOption, repo: str = RepoOption, json: bool = JsonOption) -> None:
    """Import an M population: its sources (.source + per-item Warp XML) and species, in one commit."""
    from ..io.m_format import import_m
    _report(import_m(open_repo(repo), population_file, copy=copy, ignore_unmatched=ignore_unmatched, branch=branch,
                     polarity=_polarity(contrast, True)), json)


@export_app.command("m")
def m_export(commit: str = typer.Option("main", "--commit", "-c", help="Revision to export."),
             out: Path = typer.Option(..., help="Output folder."), repo: str = RepoOption,
             json: bool = JsonOption) -> None:
    """Write an M population folder (.population, .source, per-item Warp XML, .species and species folders)."""
    from ..io.m_format import export_m
    r = open_repo(repo)
    _wrote(r, commit, out, export_m(r, commit, out), json)


def _wrote(r, rev: str, out: Path, paths: list, json: bool) -> None:
    """Report written files: a line, or JSON ``{"commit", "out", "files"}`` (paths relative to OUT where inside it)."""
    if json:
        root = Path(out).resolve()
        files = sorted(str(Path(p).resolve().relative_to(root)) if Path(p).resolve().is_relative_to(root) else str(p)
                       for p in paths)
        print_json({"commit": r.resolve(rev), "out": str(root), "files": files})
    else:
        console.print(f"wrote {len(paths)} files under {out}")


@export_app.command("relion")
def relion(commit: str = typer.Option("main", "--commit", "-c", help="Revision to export."),
           out: Path = typer.Option(..., help="Output folder."),
           project: Path = typer.Option(None, help="RELION project folder the STAR paths are relative to "
                                                   "(default: --out); the source project gives its own paths back."),
           fold_stage: bool = typer.Option(True, "--fold-stage/--no-fold-stage",
                                           help="Fold M's stage-angle corrections into rlnTomoXTilt/YTilt/ZRot "
                                                "(orientations exact; projected positions move by |ω|·r), or keep "
                                                "the positions exact and write the corrections to a sidecar."),
           repo: str = RepoOption, json: bool = JsonOption) -> None:
    """Write the refined state as RELION files: tomograms.star, tilt-series STARs, micrographs.star with motion
    STARs, per-species particles/maps, image-warp sidecars; unmodelled columns come back as imported."""
    from ..io.export_relion import export_relion, relion_unexported
    from ..workers.positions import micrograph_positions
    r = open_repo(repo)
    paths = export_relion(r, commit, out, project=project, fold_stage=fold_stage,
                          positions=lambda item, coords, angles: micrograph_positions(r.objects, item, coords, angles))
    left_out = relion_unexported(r, commit)
    if left_out:  # stderr, so --json's stdout stays one JSON document
        what = "; ".join(f"{m} ({len(names)} item{'s' if len(names) > 1 else ''}: {', '.join(names[:3])}"
                         f"{', …' if len(names) > 3 else ''})" for m, names in left_out.items())
        err_console.print(f"warning: not exported, RELION has no field for {what}; see docs/relion.md "
                          "(export m keeps them)", soft_wrap=True, markup=False)
    _wrote(r, commit, out, paths, json)


def register(app: typer.Typer) -> None:
    """Add ``import``, ``export`` and ``checkout`` to ``app``."""
    app.add_typer(import_app, name="import")
    app.add_typer(export_app, name="export")

    @app.command()
    def checkout(rev: str = typer.Argument(..., help="Revision to materialise."),
                 out: Path = typer.Option(..., help="Output folder."), repo: str = RepoOption,
                 json: bool = JsonOption) -> None:
        """Write every species' maps (MRC) and particles (STAR) of a commit under OUT."""
        from ..io.checkout import checkout as checkout_files

        r = open_repo(repo)
        _wrote(r, rev, out, checkout_files(r, rev, out), json)
