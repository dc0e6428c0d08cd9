"""``mrepo refine``: multi-particle refinement iterations of a branch (thin layer over
:func:`mrepo.workers.driver.refine_population`)."""

from __future__ import annotations

import typer

from .common import (
    JsonOption,
    RepoOption,
    branch_head,
    check_device,
    console,
    err_console,
    open_executor,
    open_repo,
    print_json,
)


def register(app: typer.Typer) -> None:
    @app.command("refine")
    def refine(
        repo: str = RepoOption,
        branch: str = typer.Option(None, "--branch", "-b", help="Branch to refine (default branch when omitted)."),
        iterations: str = typer.Option("1", "--iterations", "-n",
                                       help="Number of iterations (one commit each), or 'auto': until resolution "
                                       "and parameters settle (at most --max-iterations)."),
        max_iterations: int = typer.Option(10, "--max-iterations", min=1, help="Cap for --iterations auto."),
        ctf_min_resolution: float = typer.Option(8.0, "--ctf-min-resolution",
                                                 help="Refine defocus/astigmatism only with species whose "
                                                 "refinement limit reaches this resolution (Å; MCore: 8)."),
        min_particles: int = typer.Option(1, "--min-particles", min=1,
                                          help="Refine only items with at least this many particles (MCore)."),
        sources: list[str] = typer.Option(None, "--sources", help="Data sources to refine (default all)."),
        species: list[str] = typer.Option(None, "--species", help="Species to refine (default all)."),
        refine_shifts: bool = typer.Option(True, "--refine-shifts/--no-refine-shifts",
                                           help="Refine per-particle shift trajectories."),
        refine_imagewarp: str = typer.Option(
            None, "--refine-imagewarp", metavar="auto|XxYxT|off", show_default=False,
            help="Image-warp grid per item. Default: 'auto' with --refine-shifts (image motion = per-exposure "
            "shifts + local warp, as Warp's motion model), 'off' with --no-refine-shifts. 'auto' sizes the grid "
            "from the item's particles and field of view (at least 2 particles per spatial control point, aspect "
            "of the image, nodes >= 2 particle diameters apart; tilt series one grid per tilt: 60 particles -> "
            "5x5, 12 -> 2x2, fewer than 8 -> no warp; frames 3 time nodes; an item's existing warp grid is "
            "kept); XxYxT a fixed grid, e.g. 6x4x10 (tilt series: T = the tilt count); 'off' no image warp. "
            "M leaves the grid to the user; the grid each item used is in the commit's operation record."),
        refine_poses: bool = typer.Option(False, "--refine-poses", help="Refine particle orientations."),
        refine_defocus: bool = typer.Option(False, "--refine-defocus",
                                            help="Refine defocus per item (per tilt for tilt series)."),
        refine_astigmatism: bool = typer.Option(False, "--refine-astigmatism",
                                                help="Refine astigmatism (magnitude and angle) with defocus."),
        refine_stage_angles: bool = typer.Option(False, "--refine-stage-angles",
                                                 help="Refine tilt-series stage angles (tilt series only)."),
        weights: bool = typer.Option(False, "--weights", help="Fit and apply data-driven exposure weights."),
        weights_scope: str = typer.Option("source", "--weights-scope",
                                          help="With --weights: 'source' fits B-factor and scale per exposure "
                                          "index and per item over each data source (M; used from the next "
                                          "iteration), 'item' fits each item alone."),
        refine_mag: bool = typer.Option(False, "--refine-mag",
                                        help="Refine the anisotropic magnification: a 2x2 matrix on image "
                                        "frequencies, changed by a symmetric traceless part (stretch and angle, "
                                        "‰; the pixel size and rotation stay) (RELION rlnMagMat00..11; default "
                                        "identity; MCore --refine_mag); shared by a data source's items. With "
                                        "the CTF, at --ctf-min-resolution."),
        ctf_zernike3: bool = typer.Option(False, "--ctf-zernike3",
                                          help="Refine odd aberrations up to order 3: beam tilt (x, y mrad, "
                                          "rlnBeamTiltX/Y) and trefoil (odd Zernike 2 and 5, rad, "
                                          "rlnOddZernike); default 0 (MCore --ctf_zernike3)."),
        ctf_zernike4: bool = typer.Option(False, "--ctf-zernike4",
                                          help="Refine even aberrations of order 4: four-fold and secondary "
                                          "astigmatism, spherical (even Zernike 4..8, rad, rlnEvenZernike); "
                                          "default 0 (MCore --ctf_zernike4)."),
        ctf_cs: bool = typer.Option(False, "--ctf-cs", help="Refine the spherical aberration Cs (mm; default: "
                                    "the item's imaging cs) (MCore --ctf_cs)."),
        ctf_phase: bool = typer.Option(False, "--ctf-phase",
                                       help="Refine the phase-plate phase shift (deg, one offset per item added "
                                       "to every exposure's phase_shift; default 0) (MCore --ctf_phase)."),
        refine_volume_warp: str = typer.Option(None, "--refine-volume-warp", metavar="XxYxZxT",
                                               help="Tilt series: refine M's volume warp, a quadrilinear grid of 3-D "
                                               "particle displacements (Å) with X x Y x Z x T nodes over the volume "
                                               "and accumulated exposure, e.g. 4x4x2x10 (M's example; MCore "
                                               "--refine_volumewarp). Off by default."),
        refine_doming: bool = typer.Option(False, "--refine-doming",
                                           help="Frame series: refine M's doming, a cubic spline grid of defocus "
                                           "offsets (Å) over the image and exposure (--doming-grid nodes), with the "
                                           "CTF at --ctf-min-resolution (MCore --refine_doming)."),
        doming_grid: str = typer.Option("3x3x5", "--doming-grid", metavar="XxYxT",
                                        help="Doming grid nodes (x, y, exposure); M fits 3 x 3 spatial points."),
        refine_tilt_movies: bool = typer.Option(False, "--refine-tilt-movies",
                                                help="Tilt series with raw tilt movies: refine per-frame (x, y) "
                                                "shifts inside each tilt's movie (item model tilt_movie_shifts, Å, "
                                                "each tilt's frame mean kept; default 0) after the other groups, and use "
                                                "the aligned frames as the tilt images (MCore --refine_tiltmovies). "
                                                "Refused when a tilt series has no raw tilt movies."),
        resolution_fraction: float = typer.Option(0.8, "--resolution-fraction",
                                                  help="Use spatial frequencies up to this fraction of the "
                                                  "species' current FSC resolution (0-1]."),
        temporal_samples: int = typer.Option(1, "--temporal-samples", min=1,
                                             help="Temporal samples per particle trajectory (1: static)."),
        threads: int = typer.Option(1, "--threads", min=1, help="CPU threads per worker (torch)."),
        patch_memory: float = typer.Option(2048.0, "--patch-memory", metavar="MIB",
                                           help="Keep an item's extracted particle patches in memory up to this "
                                                "estimate (MiB); above it, patches are re-extracted for each "
                                                "evaluation (memory of one batch, more CPU; 0: always)."),
        graph_memory: float = typer.Option(512.0, "--graph-memory", metavar="MIB",
                                           help="Back-propagate all particle batches of an item in one pass up to "
                                                "this estimated autograd graph (MiB); above it, one batch at a time "
                                                "after a pass without gradients (~4/3 the CPU; 0: always)."),
        device: str = typer.Option("cpu", "--device", help="Device of refinement and back-projection: cpu, cuda "
                                   "or cuda:N (with --executor ray each actor reserves a GPU and uses 'cuda')."),
        denoise: bool = typer.Option(False, "--denoise", help="Refine against half-maps denoised by the species' "
                                     "noise2noise network (trained if missing, retrained each iteration; M)."),
        denoise_steps: int = typer.Option(800, "--denoise-steps", min=1,
                                          help="Training steps of each denoiser (re)training."),
        denoise_device: str = typer.Option("cpu", "--denoise-device", help="Device of the denoiser: cpu or cuda[:N]."),
        executor: str = typer.Option("local", "--executor", help="Where items run: local (this process) or ray."),
        address: str = typer.Option(None, "--address", help="Ray cluster address (default: start a local one).",
                                    show_default=False),
        workers: int = typer.Option(None, "--workers", help="Ray actors (default: one per GPU, else per CPU).",
                                    show_default=False),
        gpus_per_worker: float = typer.Option(0, "--gpus-per-worker", help="GPUs reserved per Ray actor "
                                              "(fractions share a GPU; 0: CPU only)."),
        json: bool = JsonOption,
    ) -> None:
        """Refine the population on a branch and commit once per iteration."""
        from mrepo.workers.driver import refine_population
        from mrepo.workers.settings import RefineSettings

        try:
            settings = RefineSettings(
                refine_shifts=refine_shifts, refine_poses=refine_poses,
                image_warp=_image_warp(refine_imagewarp, refine_shifts),
                refine_defocus=refine_defocus, refine_astigmatism=refine_astigmatism,
                refine_stage_angles=refine_stage_angles, weights=weights, resolution_fraction=resolution_fraction,
                temporal_samples=temporal_samples, threads=threads, ctf_min_resolution=ctf_min_resolution,
                min_particles_per_item=min_particles, denoise=denoise, denoise_steps=denoise_steps,
                denoise_device=denoise_device, refine_mag=refine_mag, ctf_zernike3=ctf_zernike3,
                ctf_zernike4=ctf_zernike4, ctf_cs=ctf_cs, ctf_phase=ctf_phase, volume_warp=refine_volume_warp,
                doming=doming_grid if refine_doming else None, weights_scope=weights_scope,
                tilt_movies=refine_tilt_movies, device=check_device(device, executor), patch_memory_mib=patch_memory,
                graph_memory_mib=graph_memory)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        n_iter: int | str = iterations.strip().lower()
        if n_iter != "auto":
            try:
                n_iter = int(n_iter)
            except ValueError:
                n_iter = 0
            if n_iter < 1:
                raise typer.BadParameter(f"--iterations must be a positive number or 'auto', got {iterations!r}")
        r = open_repo(repo)
        target, _ = branch_head(r, branch)
        ex = open_executor(executor, address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                           device=device)
        from .progress import iteration_progress, summary_table

        iterations_json: list[dict] = []

        def report(iteration: int, resolutions: dict, stats: dict) -> None:
            if json:
                iterations_json.append({
                    "iteration": iteration,
                    "resolution_A": {n: after for n, (_, after) in resolutions.items()},
                    "resolution_before_A": {n: before for n, (before, _) in resolutions.items()},
                    "stats": stats})
            else:
                console.print(summary_table(iteration, resolutions, stats))
                if stats.get("movement"):
                    console.print(movement_table(stats["movement"]))

        try:
            with iteration_progress("refine", console=err_console) as progress:
                commits = refine_population(r, target, n_iter, settings, ex,
                                            sources=sources or None, species=species or None,
                                            progress=progress, on_iteration=report, max_iterations=max_iterations)
        finally:
            ex.close()
        if json:
            for entry, h in zip(iterations_json, commits):
                entry["commit"] = h
            print_json({"branch": target, "commits": commits, "iterations": iterations_json})
            return
        for h in commits:
            console.print(f"{h[:12]} {r.get_commit(h).message}")


def _image_warp(option: str | None, refine_shifts: bool) -> str | None:
    """``--refine-imagewarp`` as a settings value: omitted -> "auto" with shift refinement, else off;
    "off"/"none" -> None; "auto" or a grid XxYxT as given (checked by the settings)."""
    if option is None:
        return "auto" if refine_shifts else None
    return None if option.strip().lower() in ("off", "none") else option


def movement_table(movement: dict):
    """Rich table: per parameter group, how far this iteration moved it (median, 95th percentile, max)."""
    from rich.table import Table

    table = Table(title="parameter moves", title_justify="left", min_width=64)
    for col in ("group", "median", "95th percentile", "max", "values"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for name, m in sorted(movement.items()):
        unit = m.get("unit", "")
        table.add_row(name, f"{m['median']:.3g} {unit}", f"{m['p95']:.3g} {unit}", f"{m['max']:.3g} {unit}",
                      str(m["n"]))
    return table
