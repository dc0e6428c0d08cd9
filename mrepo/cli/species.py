"""``mrepo species add|list|show``: species from RELION refinements (thin layer over mrepo.io.species_add)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..store import InvalidInput
from .common import JsonOption, RepoOption, console, open_repo, print_json

app = typer.Typer(help="Species: add from a RELION refinement, list, show.", no_args_is_help=True)


@app.command("add")
def add(name: str = typer.Argument(..., help="Name of the new species."),
        half1: Path = typer.Option(..., help="Half-map 1 (MRC)."), half2: Path = typer.Option(..., help="Half-map 2."),
        mask: Path = typer.Option(..., help="Mask (MRC)."),
        particles: Path = typer.Option(..., help="RELION particle STAR file."),
        diameter: float = typer.Option(..., help="Diameter in Å."), symmetry: str = typer.Option("C1", help="Point-group symmetry: Cn, Dn, T, O or I."),
        temporal_samples: int = typer.Option(1, help="Temporal samples per particle trajectory."),
        ignore_unmatched: bool = typer.Option(False, "--ignore-unmatched",
                                              help="Skip particles whose micrograph/tomogram is not in the population."),
        branch: str = typer.Option(None, "--branch", "-b", help="Branch to commit to (default: the default branch)."),
        repo: str = RepoOption, json: bool = JsonOption) -> None:
    """Add a species, linking particles to items by micrograph or tomogram name."""
    from ..io import SpeciesFiles, add_species
    res = add_species(open_repo(repo), SpeciesFiles(name, half1, half2, mask, diameter, symmetry, temporal_samples),
                      particles, ignore_unmatched=ignore_unmatched, branch=branch)
    if json:
        print_json(res)
    else:
        console.print(f"commit {res.commit}: added species {name!r}")


def _require_species(pop, name: str) -> None:
    """InvalidInput naming the species there are when ``pop`` has no species ``name``."""
    if name not in pop.species:
        raise InvalidInput(f"no species {name!r} in population {pop.name!r} (have: {', '.join(pop.species) or '-'})")


def _summary(r, name: str, h: str) -> dict:
    """One species as JSON (units in the key names: docs/json.md)."""
    s = r.species(h)
    count = r.objects.get_record(s.particles, "particles")["count"]
    return {"name": name, "hash": h, "particles": count, "diameter_A": s.diameter, "symmetry": s.symmetry,
            "pixel_size_A": s.pixel_size, "box_px": s.box, "box_A": s.box * s.pixel_size,
            "temporal_samples": s.temporal_samples, "resolution_A": s.resolution, "contributors": len(s.contributors)}


@app.command("list")
def list_species(rev: str = typer.Argument(None, help="Revision (default: the default branch)."),
                 repo: str = RepoOption, json: bool = JsonOption) -> None:
    """List the species of a commit."""
    r = open_repo(repo)
    rows = [_summary(r, n, h) for n, h in sorted(r.population(rev).species.items())]
    if json:
        print_json(rows)
        return
    table = Table("name", "hash", "particles", "symmetry", "box (px)", "pixel (Å)", "resolution (Å)")
    for s in rows:
        table.add_row(s["name"], s["hash"][:12], str(s["particles"]), s["symmetry"], str(s["box_px"]),
                      f"{s['pixel_size_A']:g}", "-" if s["resolution_A"] is None else f"{s['resolution_A']:.2f}")
    console.print(table)


@app.command("show")
def show(name: str = typer.Argument(..., help="Species name."),
         rev: str = typer.Option(None, "--rev", help="Revision (default: the default branch)."),
         repo: str = RepoOption, json: bool = JsonOption) -> None:
    """Show one species: parameters, maps and particle count."""
    r = open_repo(repo)
    pop = r.population(rev)
    _require_species(pop, name)
    info = _summary(r, name, pop.species[name])
    sp = r.species(pop.species[name])
    info.update(half1=sp.half1, half2=sp.half2, mask=sp.mask, particles_record=sp.particles, fsc=sp.fsc,
                denoiser=sp.denoiser)
    if json:
        print_json(info)
        return
    res = "not measured" if info["resolution_A"] is None else f"{info['resolution_A']:.2f} Å (FSC 0.143)"
    rows = [("name", name), ("hash", info["hash"]), ("particles", str(info["particles"])),
            ("symmetry", info["symmetry"]), ("diameter", f"{info['diameter_A']:g} Å"),
            ("pixel size", f"{info['pixel_size_A']:g} Å"),
            ("box", f"{info['box_px']} px ({info['box_A']:g} Å)"),
            ("temporal samples", str(info["temporal_samples"])), ("resolution", res),
            ("contributors", f"{info['contributors']} item version(s)"),
            ("half-map 1", sp.half1), ("half-map 2", sp.half2), ("mask", sp.mask),
            ("particle table", sp.particles), ("FSC curve", sp.fsc or "-"), ("denoiser", sp.denoiser or "-")]
    for k, v in rows:
        console.print(f"{k:>16}: {v}", soft_wrap=True)


@app.command("denoise")
def denoise(name: str = typer.Argument(..., help="Species name."),
            steps: int = typer.Option(800, "--steps", min=1, help="Training steps (Adam; M: 800 per training)."),
            seed: int = typer.Option(0, "--seed", help="Seed of the initial weights and training crops."),
            threads: int = typer.Option(1, "--threads", min=1, help="CPU threads (torch); results depend on it."),
            device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
            patch: int = typer.Option(32, "--patch", min=4, help="Training cube edge (px, multiple of 2^depth)."),
            depth: int = typer.Option(2, "--depth", min=1, help="U-Net down-sampling levels."),
            width: int = typer.Option(16, "--width", min=1, help="Channels of the first U-Net level."),
            fresh: bool = typer.Option(False, "--fresh", help="Start from random weights, not the stored ones."),
            no_lowpass: bool = typer.Option(False, "--no-lowpass",
                                            help="Do not low-pass the maps to the species resolution first."),
            branch: str = typer.Option(None, "--branch", "-b", help="Branch to commit to (default: the default branch)."),
            message: str = typer.Option(None, "--message", "-m", help="Commit message.", show_default=False),
            repo: str = RepoOption, json: bool = JsonOption) -> None:
    """Train the species' noise2noise denoiser on its half-maps (M, Methods: Map denoising) and commit
    its weights (species.denoiser) and the denoised map; `mrepo refine --denoise` then refines against
    the denoised half-maps."""
    from dataclasses import replace

    from ..kernels.denoise import DenoiserConfig
    from ..workers.denoise import DenoiseSettings, train_species_denoiser, with_denoiser
    from .common import branch_head, progress_bar

    r = open_repo(repo)
    target, head = branch_head(r, branch)
    pop = r.population(head)
    _require_species(pop, name)
    try:
        config = DenoiserConfig(depth=depth, width=width, max_width=max(64, width), patch=patch)
    except ValueError as e:
        raise InvalidInput(str(e)) from None
    settings = DenoiseSettings(steps=steps, seed=seed, threads=threads, device=device, warm_start=not fresh,
                               lowpass=not no_lowpass, config=config)
    sp = r.species(pop.species[name])
    with progress_bar("denoise", not json) as progress:
        res = train_species_denoiser(r.objects, sp, settings,
                                     progress=lambda done, total, loss: progress("train", done, total))
    new = with_denoiser(r.objects, sp, res)
    new_pop = replace(pop, species={**pop.species, name: new.save(r.objects)})
    op = {"name": "denoise", "species": name, "settings": settings.to_json(),
          "steps_total": res.info["total_steps"], "warm_start": res.info["warm_start"]}
    commit = r.commit(new_pop, message=message or f"denoise {name}: {steps} steps (loss {res.info['final_loss']:.4g})",
                      branch=target, operation=op, expected_head=head)
    out = {"commit": commit, "species": name, "denoiser": new.denoiser, "denoised_map": new.metadata["denoised"],
           "steps": steps, "steps_total": res.info["total_steps"], "warm_start": res.info["warm_start"],
           "lowpass_A": res.info["lowpass_A"], "final_loss": res.info["final_loss"], "seconds": round(res.seconds, 3)}
    if json:
        print_json(out)
    else:
        console.print(f"commit {commit}: species {name!r} denoiser trained ({res.info['total_steps']} steps in total, "
                      f"final loss {res.info['final_loss']:.4g}, {res.seconds:.1f} s)")
