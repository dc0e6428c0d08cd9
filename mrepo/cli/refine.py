"""``mrepo refine``: multi-particle refinement iterations of a branch (thin layer over
:func:`mrepo.workers.driver.refine_population`)."""

from __future__ import annotations

import typer

from .common import RepoOption, console, err_console, open_repo


def register(app: typer.Typer) -> None:
    @app.command("refine")
    def refine(
        repo: str = RepoOption,
        branch: str = typer.Option(None, "--branch", "-b", help="Branch to refine (default branch when omitted)."),
        iterations: int = typer.Option(1, "--iterations", "-n", min=1, help="Number of iterations (one commit each)."),
        sources: list[str] = typer.Option(None, "--sources", help="Data sources to refine (default all)."),
        species: list[str] = typer.Option(None, "--species", help="Species to refine (default all)."),
        refine_shifts: bool = typer.Option(True, "--refine-shifts/--no-refine-shifts"),
        refine_imagewarp: str = typer.Option(None, "--refine-imagewarp", help="Image-warp grid XxYxT, e.g. 6x4x10."),
        refine_poses: bool = typer.Option(False, "--refine-poses"),
        refine_defocus: bool = typer.Option(False, "--refine-defocus"),
        refine_astigmatism: bool = typer.Option(False, "--refine-astigmatism"),
        refine_stage_angles: bool = typer.Option(False, "--refine-stage-angles"),
        weights: bool = typer.Option(False, "--weights", help="Fit and apply data-driven exposure weights."),
        resolution_fraction: float = typer.Option(0.8, "--resolution-fraction"),
        temporal_samples: int = typer.Option(1, "--temporal-samples", min=1),
        threads: int = typer.Option(1, "--threads", min=1),
        executor: str = typer.Option("local", "--executor", help="local | ray"),
        address: str = typer.Option(None, "--address", help="Ray cluster address."),
        workers: int = typer.Option(None, "--workers", help="Ray actors."),
        gpus_per_worker: float = typer.Option(0, "--gpus-per-worker"),
    ) -> None:
        """Refine the population on a branch and commit once per iteration."""
        from mrepo.workers.driver import refine_population
        from mrepo.workers.settings import RefineSettings

        try:
            settings = RefineSettings(
                refine_shifts=refine_shifts, image_warp=refine_imagewarp, refine_poses=refine_poses,
                refine_defocus=refine_defocus, refine_astigmatism=refine_astigmatism,
                refine_stage_angles=refine_stage_angles, weights=weights, resolution_fraction=resolution_fraction,
                temporal_samples=temporal_samples, threads=threads)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        r = open_repo(repo)
        if executor == "local":
            from mrepo.workers.executors import LocalExecutor

            ex = LocalExecutor()
        elif executor == "ray":
            from mrepo.workers.executors import RayExecutor

            kwargs = {k: v for k, v in (("address", address), ("workers", workers),
                                        ("gpus_per_worker", gpus_per_worker)) if v}
            ex = RayExecutor(**kwargs)
        else:
            raise typer.BadParameter(f"--executor must be 'local' or 'ray', got {executor!r}")
        from mrepo.workers.ray_progress import iteration_progress, summary_table

        def report(iteration: int, resolutions: dict, stats: dict) -> None:
            console.print(summary_table(iteration, resolutions, stats))

        try:
            with iteration_progress("refine", console=err_console) as progress:
                commits = refine_population(r, branch or r.default_branch, iterations, settings, ex,
                                            sources=sources or None, species=species or None,
                                            progress=progress, on_iteration=report)
        finally:
            ex.close()
        for h in commits:
            console.print(f"{h[:12]} {r.get_commit(h).message}")
