"""The per-exposure NC spectra behind the data-driven weights, on simulated tilt series with the
simulator's measured damage (``mrepo sim tilts --damage measured``), everything at the truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrepo.workers.refine_item import refine_item
from mrepo.workers.settings import RefineSettings
from mrepo.workers.source_weights import fit_source_weights
from mrepo.workers.weights import normalised_correlation
from tests.workers.simdata import build_population, tilts_sim
from tests.workers.test_recovery import _task


@pytest.mark.slow
def test_spectra_are_normalised_correlations_and_the_source_fit_recovers_the_injected_damage():
    """Three series × 30 particles at SNR 0.3, rendered in 6 × box (tilts_sim's 2 × box wraps the
    CTF-delocalised signal and hides part of the injected B; about 1 min): every NC value lies in [-1, 1]
    (the spectra before reached 8.7: the whitening did not cancel), and the per-source fit on the
    regression coefficient recovers the injected damage: scales (cos tilt × damage scale / the tilt's
    standard deviation, the data's normalisation) within 0.08 in log RMS, B-factors within 20 Å² RMS
    (both sides minus their mean: the weights are relative) and 25 Å² (minus their minimum), the ±45°
    tilts' relative B within 0.4–2× the injected, the blurred first tilt (+46 Å² over the second)
    found with ≥ 20 Å². Measured 0.03, 17, 18 Å², 0.7×, 33 Å²; the fit on the NC (M's quantity, the
    input before) gives 0.17, 34, 45 Å², 2.9×, 14 Å² (saturated low shells read a low scale as a
    B-factor; docs/ablation.md, "The NC spectra the fit gets")."""
    torch.set_num_threads(1)
    spectra, orders, true_b, true_s, high, first = [], [], [], [], [], []
    for seed in (11, 12, 13):
        sim = tilts_sim(
            seed=seed,
            n_particles=30,
            size=192,
            max_tilt=45.0,
            tilt_step=9.0,
            snr=0.3,
            warp_px=0.0,
            damage="measured",
            species_seed=7,
            pad=6,
        )
        sr = build_population([sim], truth=True, resolution=5.0)
        result = refine_item(_task(sr, RefineSettings(refine_shifts=False)))
        sums = np.asarray(sr.repo.objects.get_array(result.nc_spectra), np.float64)
        nc = normalised_correlation(sums)
        assert sums.shape == (len(sim.truth.dose), 17, 3)
        assert np.all(np.abs(nc) <= 1.0)
        assert nc[:, 1:9].mean() > 0.2  # signal, not an all-zero spectrum
        spectra.append(sums)
        orders.append(sim.truth.acquisition_order)
        t = sim.truth
        std = np.asarray(sim.data, np.float64).reshape(len(t.dose), -1).std(1)
        true_b.append(t.damage.bfactors_A2)
        true_s.append(np.cos(np.deg2rad(t.ytilt)) * t.damage.scales / std)
        high.append(np.abs(t.ytilt) > 40)
        first.append(t.acquisition_order[:2])
    freqs = np.arange(17) / (32 * 2.0)  # box 32 at 2 Å/px
    fit = fit_source_weights(spectra, orders, freqs, shell_range=(1, 13))  # to 4.9 Å (limit 5 Å)
    fb, tb = np.concatenate([w[:, 0] for w in fit.per_item]), np.concatenate(true_b)
    ls = np.concatenate([np.log(w[:, 1]) for w in fit.per_item]) - np.log(np.concatenate(true_s))
    hi = np.concatenate(high)
    scale_rms = float(np.sqrt(np.mean((ls - ls.mean()) ** 2)))
    rel_rms = float(np.sqrt(np.mean(((fb - fb.mean()) - (tb - tb.mean())) ** 2)))
    b_rms = float(np.sqrt(np.mean(((fb - fb.min()) - (tb - tb.min())) ** 2)))
    ratio = float((fb[hi] - fb.mean()).mean() / (tb[hi] - tb.mean()).mean())
    blur = float(np.mean([w[o[0], 0] - w[o[1], 0] for w, o in zip(fit.per_item, first)]))
    print(f"log scale rms {scale_rms:.3f}, B rms {rel_rms:.1f} / {b_rms:.1f} Å², ±45° B / injected {ratio:.2f}, "
          f"first tilt +{blur:.0f} Å²")
    assert scale_rms <= 0.08
    assert rel_rms <= 20.0 and b_rms <= 25.0
    assert 0.4 <= ratio <= 2.0
    assert blur >= 20.0


def test_spectra_stay_within_one_at_high_snr():
    """At SNR 3 (one series, 12 particles) NC is large but never above 1: pairing the unpremultiplied, masked
    image's power with CTF·P reached 1.6 here, the old whitened sums 8.7."""
    torch.set_num_threads(1)
    sim = tilts_sim(
        seed=11,
        n_particles=12,
        size=160,
        max_tilt=45.0,
        tilt_step=15.0,
        snr=3.0,
        warp_px=0.0,
        damage="measured",
        species_seed=7,
    )
    sr = build_population([sim], truth=True, resolution=5.0)
    sums = np.asarray(sr.repo.objects.get_array(refine_item(_task(sr, RefineSettings(refine_shifts=False))).nc_spectra))
    nc = normalised_correlation(sums)
    assert nc.shape == (len(sim.truth.dose), 17)
    assert np.all(np.abs(nc) <= 1.0)
    assert nc[:, 1:9].max() > 0.7
