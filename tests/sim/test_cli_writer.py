"""The `mrepo sim` CLI and the written dataset (MRC headers, JSON completeness)."""

from __future__ import annotations

import json
from pathlib import Path

import mrcfile
import numpy as np
import torch
from typer.testing import CliRunner

from mrepo.cli.sim import app

torch.set_num_threads(1)


def test_frames_command_writes_complete_dataset(tmp_path: Path) -> None:
    out = tmp_path / "f"
    res = CliRunner().invoke(app, ["frames", "--out", str(out), "--seed", "3", "--particles", "4",
                                   "--frames", "3", "--size", "128", "--box", "40"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "dataset.json").read_text())
    stack = out / manifest["items"][0]["stack"]
    with mrcfile.open(stack) as m:
        assert m.data.shape == (3, 128, 128) and m.data.dtype == np.float32
        assert np.isclose(float(m.voxel_size.x), 1.5)
    truth = json.loads((out / "truth.json").read_text())
    assert set(truth["optics"]) == {"voltage_kv", "cs_mm", "amplitude_contrast", "pixel_size"}
    item = truth["items"][0]
    assert len(item["global_shifts_px"]) == 3 and len(item["dose"]) == 3
    part = truth["particles"][0]
    assert np.array(part["coordinates_A"]).shape == (3, 3) and np.array(part["angles_deg"]).shape == (3, 3)
    assert part["half_set"] in (1, 2) and part["item"] == item["name"]
    for s in truth["species"]:
        with mrcfile.open(out / s["map"]) as m:
            assert m.data.shape == (s["box"],) * 3
    initial = json.loads((out / "initial.json").read_text())
    assert len(initial["particles"]) == 4 and "global_shifts_px" in initial["items"][0]


def test_tilts_command(tmp_path: Path) -> None:
    out = tmp_path / "t"
    res = CliRunner().invoke(app, ["tilts", "--out", str(out), "--seed", "1", "--particles", "3",
                                   "--max-tilt", "20", "--step", "10", "--size", "128", "--box", "40"])
    assert res.exit_code == 0, res.output
    assert "tilt series" in res.output
    item = json.loads((out / "truth.json").read_text())["items"][0]
    assert item["nominal_tilt_deg"] == [-20.0, -10.0, 0.0, 10.0, 20.0]
    assert item["tomo_size_px"][:2] == [128, 128] and len(item["xtilt_deg"]) == 5
