"""``mrepo reconstruct``: species maps from the current parameters, checked and committed (thin layer over
:func:`mrepo.workers.reconstruct_run.reconstruct_population`)."""

from __future__ import annotations

import typer
from rich.table import Table

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
    @app.command("reconstruct")
    def reconstruct(
        repo: str = RepoOption,
        branch: str = typer.Option(None, "--branch", "-b", help="Branch (default branch when omitted)."),
        sources: list[str] = typer.Option(None, "--sources", help="Data sources to use (default all)."),
        species: list[str] = typer.Option(None, "--species", help="Species to reconstruct (default all)."),
        threads: int = typer.Option(1, "--threads", min=1, help="CPU threads per worker (torch)."),
        device: str = typer.Option("cpu", "--device", help="Device of the back-projection: cpu, cuda or cuda:N "
                                   "(with --executor ray each actor reserves a GPU and uses 'cuda')."),
        executor: str = typer.Option("local", "--executor", help="Where items run: local (this process) or ray."),
        address: str = typer.Option(None, "--address", help="Ray cluster address (default: start a local one).",
                                    show_default=False),
        workers: int = typer.Option(None, "--workers", help="Ray actors.", show_default=False),
        message: str = typer.Option(None, "--message", "-m", help="Commit message.", show_default=False),
        json: bool = JsonOption,
    ) -> None:
        """Reconstruct half-maps, FSC and resolution of species from their current particles and item
        parameters (every item, both half-sets) and commit them. Refuses (exit 2, no commit) a map that
        anti-correlates with the species' current map (wrong contrast polarity) or whose half-maps agree
        only through a shared artefact."""
        from mrepo.workers.reconstruct_run import reconstruct_population, reconstruction_settings

        settings = reconstruction_settings(threads, device=check_device(device, executor))
        r = open_repo(repo)
        target, _ = branch_head(r, branch)
        ex = open_executor(executor, address=address, workers=workers, device=device)
        from .progress import iteration_progress

        try:
            with iteration_progress("reconstruct", console=err_console) as progress:
                res = reconstruct_population(r, target, ex, settings=settings,
                                             sources=sources or None, species=species or None, progress=progress,
                                             message=message)
        finally:
            ex.close()
        rows = {n: {"resolution_A": rec.resolution, "particles": res.particles[n], **res.checks[n].to_json()}
                for n, rec in res.reconstructions.items()}
        if json:
            print_json({"branch": target, "commit": res.commit, "species": rows})
            return
        table = Table("species", "particles", "resolution (Å)", "half-map r (low band)", "r vs previous map")
        for n, row in rows.items():
            ref = row["reference_correlation"]
            table.add_row(n, str(row["particles"]), f"{row['resolution_A']:.2f}", f"{row['half_correlation']:.2f}",
                          "-" if ref is None else f"{ref:.2f}")
        console.print(table)
        console.print(f"{res.commit[:12]} {r.get_commit(res.commit).message}")
