"""``mrepo source add|list``: data sources from raw MRC files (thin layer over mrepo.io.source_add)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .common import JsonOption, RepoOption, console, open_repo, print_json

app = typer.Typer(help="Data sources: add raw frame or tilt series, list them.", no_args_is_help=True)


def _floats(text: str | None) -> list[float] | None:
    return None if text is None else [float(v) for v in text.split(",") if v.strip()]


@app.command("add")
def add(name: str = typer.Argument(..., help="Name of the new data source."),
        files: list[Path] = typer.Argument(..., help="MRC files, one item each."),
        kind: str = typer.Option(..., help="frames | tilts"), copy: bool = typer.Option(False, "--copy", help="Copy the files into the "
                                                                             "repository (default: reference in place)."),
        pixel_size: float = typer.Option(None, help="Å (default: the MRC header)."),
        voltage: float = typer.Option(300.0, help="kV"), cs: float = typer.Option(2.7, help="mm"),
        amplitude_contrast: float = typer.Option(0.07, help="Amplitude contrast (fraction, 0-1)."), dose: float = typer.Option(0.0, help="e⁻/Å² per frame/tilt"),
        defocus: float = typer.Option(None, help="Initial defocus in Å."),
        tilt_angles: str = typer.Option(None, help="Comma-separated nominal tilt angles (deg, stack order)."),
        volume_dimensions: str = typer.Option(None, help="Comma-separated tomogram size x,y,z in Å."),
        hand: float = typer.Option(1.0, help="Tomogram handedness: 1 or -1 (RELION's rlnTomoHand)."),
        branch: str = typer.Option(None, "--branch", "-b", help="Branch to commit to (default: the default branch)."),
        contrast: str = typer.Option("dark", "--contrast", help="How particles look in the raw data: dark "
                                     "(counting detectors) or light."),
        repo: str = RepoOption, json: bool = JsonOption) -> None:
    """Add a data source with one item per file, in a new commit."""
    from ..io.contrast import PolarityChoice
    from ..io.source_add import add_source
    res = add_source(open_repo(repo), name, files, kind=kind, copy=copy, pixel_size=pixel_size, voltage=voltage,
                     cs=cs, amplitude_contrast=amplitude_contrast, dose=dose, defocus=defocus,
                     tilt_angles=_floats(tilt_angles), volume_dimensions=_floats(volume_dimensions), hand=hand,
                     branch=branch, polarity=PolarityChoice(contrast))
    if json:
        print_json(res)
    else:
        console.print(f"commit {res.commit}: added source {name!r}")


@app.command("list")
def list_sources(rev: str = typer.Argument(None, help="Revision (default: the default branch)."),
                 repo: str = RepoOption, json: bool = JsonOption) -> None:
    """List the data sources of a commit with their item counts."""
    r = open_repo(repo)
    pop = r.population(rev)
    rows = []
    for name, h in sorted(pop.sources.items()):
        src = r.source(h)
        kinds = sorted({r.item(ih).kind for ih in src.items.values()})
        rows.append({"name": name, "hash": h, "items": len(src.items), "kinds": kinds, "contrast": src.polarity})
    if json:
        print_json(rows)
        return
    table = Table("name", "hash", "items", "kind", "contrast")
    for row in rows:
        table.add_row(row["name"], row["hash"][:12], str(row["items"]), ",".join(row["kinds"]), row["contrast"])
    console.print(table)


@app.command("contrast")
def contrast(name: str = typer.Argument(..., help="Data source."),
             polarity: str = typer.Argument(..., help="dark (particles dark on a positive mean) or light."),
             branch: str = typer.Option(None, "--branch", "-b", help="Branch to commit to (default: the default "
                                        "branch)."),
             repo: str = RepoOption, json: bool = JsonOption) -> None:
    """Set how particles look in a source's raw data (every image path inverts dark data), in a new commit."""
    from ..io.contrast import set_source_polarity
    h = set_source_polarity(open_repo(repo), name, polarity, branch=branch)
    if json:
        print_json({"commit": h, "source": name, "contrast": polarity})
    else:
        console.print(f"commit {h}: source {name!r} contrast {polarity}")
