"""End-to-end demo of mrepo on the embedded defaults (local folder store, local Ray).

Run by ``make demo``. Every step is a real ``mrepo`` command, printed before it runs:
simulate a frame series with ground truth, create a repository, import the simulation,
inspect it, refine on local Ray, branch, merge, clone, push, verify and gc.
Output goes to ``demo-out/`` (removed first).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"
MREPO = [sys.executable, "-m", "mrepo"]


def run(*args: str, capture: bool = False) -> str:
    """Run one mrepo command, echoing it like a shell session."""
    print(f"\n$ mrepo {' '.join(shlex.quote(a) for a in args)}", flush=True)
    proc = subprocess.run([*MREPO, *args], cwd=OUT, text=True, capture_output=capture)
    if capture:  # machine-readable output is parsed by the demo, not shown
        sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"demo step failed (exit {proc.returncode}): mrepo {' '.join(args)}")
    return proc.stdout if capture else ""


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    lab = str(OUT / "lab.mrepo")

    run("sim", "frames", "--out", "sim", "--seed", "7", "--particles", "40", "--size", "384", "--snr", "0.5")
    run("init", lab)
    run("--repo", lab, "import", "sim", "sim", "--copy")
    run("--repo", lab, "show")

    # Iteration 0: reconstruct from the initial parameters (what Warp + RELION delivered).
    run("--repo", lab, "refine", "--iterations", "1", "--no-refine-shifts", "--executor", "ray", "--workers", "2")
    before = json.loads(run("--repo", lab, "show", "--json", capture=True))
    # Two iterations of multi-particle refinement on local Ray (M's staged order inside each item).
    run("--repo", lab, "refine", "--iterations", "2", "--refine-shifts", "--refine-poses", "--refine-defocus",
        "--executor", "ray", "--workers", "2")
    after = json.loads(run("--repo", lab, "show", "--json", capture=True))
    print("\nResolution per species (Å, FSC = 0.143), initial parameters -> after 2 iterations:")
    for name, sp in after["species"].items():
        old = before["species"][name]["resolution"]
        print(f"  {name:12} {old:6.2f} -> {sp['resolution']:6.2f}")

    run("--repo", lab, "log", "-n", "4")
    run("--repo", lab, "branch", "lab2")
    run("--repo", lab, "tag", "refined-2")
    run("clone", lab, str(OUT / "mirror.mrepo"))
    run("--repo", str(OUT / "mirror.mrepo"), "push", "origin", "main")
    run("--repo", lab, "verify")
    run("--repo", lab, "gc", "--grace", "0", "--dry-run")
    print(f"\nDemo finished; repositories are in {OUT}")


if __name__ == "__main__":
    main()
