"""Hand-written Warp processing folders in the layout Movie.SaveMeta / TiltSeries.SaveMeta write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from io_projects import write_mrc

PIX = 2.0


def grid(tag: str, dims: tuple[int, int, int], values: list[float]) -> str:
    w, h, d = dims
    nodes = "".join(f'\t\t<Node X="{x}" Y="{y}" Z="{z}" Value="{values[(z * h + y) * w + x]}" />\n'
                    for z in range(d) for y in range(h) for x in range(w))
    return (f'\t<{tag} Width="{w}" Height="{h}" Depth="{d}" MarginX="0" MarginY="0" MarginZ="0">\n'
            f"{nodes}\t</{tag}>\n")


def ctf(defocus: float, delta: float, angle: float, phase: float = 0.0) -> str:
    params = {"PixelSize": PIX, "PixelSizeDeltaPercent": 0, "PixelSizeAngle": 0, "Cs": 2.7, "Cc": 2.7,
              "Voltage": 300, "Defocus": defocus, "DefocusDelta": delta, "DefocusAngle": angle,
              "Amplitude": 0.07, "Bfactor": 0, "Scale": 1, "PhaseShift": phase}
    return "\t<CTF>\n" + "".join(f'\t\t<Param Name="{k}" Value="{v}" />\n' for k, v in params.items()) + "\t</CTF>\n"


def movie_xml(defocus: float, shifts: list[tuple[float, float]]) -> str:
    n = len(shifts)
    return ('<?xml version="1.0" encoding="utf-8"?>\n<Movie DataDirectory="" UnselectFilter="False" '
            'UnselectManual="null" CTFResolutionEstimate="3.5" MeanFrameMovement="1.2" MaskPercentage="-1" '
            'Bfactor="0" Weight="1" MagnificationCorrection="1, 0, 0, 1">\n'
            + ctf(defocus, 0.1, 30.0) + grid("GridCTF", (1, 1, 1), [defocus])
            + grid("GridMovementX", (1, 1, n), [s[0] for s in shifts])
            + grid("GridMovementY", (1, 1, n), [s[1] for s in shifts])
            + grid("GridLocalMovementX", (2, 2, 2), [0.1 * i for i in range(8)])
            + grid("GridLocalMovementY", (2, 2, 2), [-0.2 * i for i in range(8)])
            + grid("GridDoseBfacs", (1, 1, 1), [0.0]) + "</Movie>\n")


def tilt_xml(angles: list[float], dose: list[float], axis: float) -> str:
    n = len(angles)
    per = {"Angles": angles, "Dose": dose, "UseTilt": ["True"] * n, "AxisAngle": [axis] * n,
           "AxisOffsetX": [0.5 * i for i in range(n)], "AxisOffsetY": [-0.25 * i for i in range(n)],
           "MoviePath": [f"frames/tilt_{i}.tif" for i in range(n)], "FOVFraction": [1] * n}
    body = "".join(f"\t<{k}>" + "\n".join(str(v) for v in vals) + f"</{k}>\n" for k, vals in per.items())
    return ('<?xml version="1.0" encoding="utf-8"?>\n<TiltSeries DataDirectory="" AreAnglesInverted="False" '
            'PlaneNormal="0, 0, 1" LevelAngleX="0" LevelAngleY="0" Bfactor="0" Weight="1" '
            'ImageDimensionsAngstrom="64, 48" VolumeDimensionsAngstrom="64,48,20" UnselectFilter="False" '
            'UnselectManual="" CTFResolutionEstimate="0">\n' + body + ctf(3.0, 0.0, 0.0)
            + grid("GridCTF", (1, 1, n), [3.0 + 0.1 * i for i in range(n)])
            + grid("GridCTFDefocusDelta", (1, 1, n), [0.02] * n)
            + grid("GridCTFDefocusAngle", (1, 1, n), [40.0 + i for i in range(n)])
            + grid("GridMovementX", (1, 1, n), [1.0 * i for i in range(n)])
            + grid("GridMovementY", (1, 1, n), [0.0] * n)
            + grid("GridAngleX", (1, 1, n), [0.0] * n) + "</TiltSeries>\n")


SETTINGS = """<?xml version="1.0" encoding="utf-8"?>
<Settings>
\t<Param Name="ProcessCTF" Value="True" />
\t<Import>
\t\t<Param Name="Extension" Value="*.mrc" />
\t\t<Param Name="PixelSize" Value="2.0" />
\t\t<Param Name="BinTimes" Value="0" />
\t\t<Param Name="DosePerAngstromFrame" Value="1.5" />
\t</Import>
\t<CTF>
\t\t<Param Name="Voltage" Value="300" />
\t</CTF>
</Settings>
"""


def warp_frames(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(4)
    for i, name in enumerate(("mov_001", "mov_002")):
        write_mrc(root / f"{name}.mrc", rng.normal(size=(3, 24, 32)), PIX)
        (root / f"{name}.xml").write_text(movie_xml(1.5 + i, [(0.0, 0.0), (1.0, -0.5), (2.5, -1.0)]))
    (root / "previous.settings").write_text(SETTINGS)
    return {"folder": root, "settings": root / "previous.settings"}


def warp_tilts(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(5)
    write_mrc(root / "tiltstack/TS_01/TS_01.st", rng.normal(size=(3, 24, 32)), PIX)
    (root / "TS_01.xml").write_text(tilt_xml([-3.0, 0.0, 3.0], [3.0, 0.0, 6.0], 85.0))
    return {"folder": root}
