"""mrepo.workers.lbfgs.LBFGS takes torch.optim.LBFGS's steps bit for bit (without importing torch._dynamo)."""

import subprocess
import sys

import pytest
import torch

from mrepo.workers.lbfgs import LBFGS


def _run(cls, line_search: str | None, steps: int) -> tuple[list[torch.Tensor], list[float], int]:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(7, dtype=torch.float64, generator=g).requires_grad_(True)
    y = torch.randn(2, 3, dtype=torch.float64, generator=g).requires_grad_(True)
    opt = cls([x, y], lr=1.0, max_iter=9, history_size=4, line_search_fn=line_search,
              tolerance_grad=1e-10, tolerance_change=1e-12)
    losses = []

    def closure() -> torch.Tensor:
        opt.zero_grad()
        # Rosenbrock chain plus a coupled quartic: non-convex, curvature changes along the path
        loss = (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum() + ((y ** 2).sum() - x[0]) ** 2 \
            + 0.1 * (y ** 4).sum()
        loss.backward()
        losses.append(float(loss))
        return loss

    for _ in range(steps):
        opt.step(closure)
    return [x.detach().clone(), y.detach().clone()], losses, opt.state[x]["n_iter"]


@pytest.mark.parametrize("line_search", ["strong_wolfe", None])
def test_same_steps_as_torch(line_search):
    ours, ours_losses, ours_iter = _run(LBFGS, line_search, 3)
    ref, ref_losses, ref_iter = _run(torch.optim.LBFGS, line_search, 3)
    assert ours_losses == ref_losses and ours_iter == ref_iter and len(ours_losses) > 20
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))


def test_does_not_import_dynamo():
    code = ("import sys, torch\nfrom mrepo.workers.lbfgs import LBFGS\nx = torch.zeros(2, requires_grad=True)\n"
            "opt = LBFGS([x], line_search_fn='strong_wolfe')\n"
            "def c():\n    opt.zero_grad(); l = ((x - 1) ** 2).sum(); l.backward(); return l\n"
            "opt.step(c)\nassert 'torch._dynamo' not in sys.modules, 'dynamo imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
