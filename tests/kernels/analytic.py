"""Analytic test images shared by the kernel tests."""

import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gaussian(h, w, cx, cy, sigma=2.0, device="cpu"):
    """(h, w) float64 image of a unit-height 2D Gaussian centred at pixel (cx, cy)."""
    y, x = torch.meshgrid(
        torch.arange(h, dtype=torch.float64, device=device),
        torch.arange(w, dtype=torch.float64, device=device),
        indexing="ij",
    )
    return torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
