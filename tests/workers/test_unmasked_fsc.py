"""A refinement stores the unmasked FSC next to the masked one (``metadata.fsc_curves.unmasked``),
computed from the committed half-maps without a mask; the web view draws both."""

from __future__ import annotations

import numpy as np
import torch

from mrepo.kernels.fsc import fsc
from mrepo.store import deref
from mrepo.workers.driver import refine_population
from mrepo.workers.executors import LocalExecutor
from mrepo.workers.settings import RefineSettings
from tests.workers.simdata import build_repo, frames_sim

torch.set_num_threads(1)


def test_refinement_commits_the_unmasked_fsc_of_its_half_maps() -> None:
    sr = build_repo(frames_sim(n_particles=8, n_frames=4), resolution=12.0)
    refine_population(sr.repo, "main", 1, RefineSettings(refine_shifts=False), LocalExecutor(use_cache=False))
    for h in sr.repo.population().species.values():
        sp = sr.repo.species(h)
        unmasked = sr.repo.objects.get_array(deref(sp.metadata["fsc_curves"]["unmasked"], "array"))
        h1, h2 = (torch.from_numpy(sr.repo.objects.get_array(a)) for a in (sp.half1, sp.half2))
        np.testing.assert_allclose(unmasked, fsc(h1, h2).double().numpy(), atol=1e-6)
        masked = sr.repo.objects.get_array(sp.fsc)
        assert unmasked.shape == masked.shape == (sp.box // 2 + 1,)
        assert not np.allclose(unmasked, masked)  # the mask matters
        assert "filtered" in sp.metadata
