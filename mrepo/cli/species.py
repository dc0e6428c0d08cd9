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
    if name not in pop.species:
        raise InvalidInput(f"no species {name!r} in population {pop.name!r} (have: {', '.join(pop.species) or '-'})")
    info = _summary(r, name, pop.species[name])
    sp = r.species(pop.species[name])
    info.update(half1=sp.half1, half2=sp.half2, mask=sp.mask, particles_record=sp.particles, fsc=sp.fsc)
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
            ("particle table", sp.particles), ("FSC curve", sp.fsc or "-")]
    for k, v in rows:
        console.print(f"{k:>16}: {v}", soft_wrap=True)
