"""Fine-Gray from pooled per-bin sums equals cmprsk::crr (tests/fixtures/expected/cox)."""

from __future__ import annotations

import numpy as np
import pytest
from test_cox_r import design, expected

from coordinator.finegray import (
    censoring_km,
    finegray_bin_sums,
    finegray_fit,
    finegray_result_dict,
)

CASE = "colon_cr_recurrence_rx_age_nodes_w7"


def fit_split(n_sites: int, seed: int = 0):
    b, _, code, X, terms = design(CASE)
    outcome = np.where(code == 1, 1, np.where(code == 0, 0, 2))
    Xc = X - np.round(X.mean(axis=0), 1)
    n_bins = int(b.max()) + 1
    site = np.random.default_rng(seed).integers(0, n_sites, len(b))
    parts = [np.flatnonzero(site == k) for k in range(n_sites)]

    def pooled(beta):
        sums = [finegray_bin_sums(b[i], outcome[i], Xc[i], beta, n_bins) for i in parts]
        total = sums[0]
        for s in sums[1:]:
            total = total + s
        return total

    return finegray_fit(pooled, X.shape[1]), terms


@pytest.mark.parametrize("n_sites", [1, 6])
def test_finegray_equals_crr(n_sites):
    ref = expected(CASE)["fine_gray"]
    fit, terms = fit_split(n_sites, seed=n_sites)
    p = len(terms)
    assert terms == ref["terms"]
    assert fit.converged is ref["converged"]
    assert np.max(np.abs(fit.coef - ref["coef"]) / np.abs(ref["coef"])) < 1e-9
    assert np.max(np.abs(fit.var - np.array(ref["var"]).reshape(p, p, order="F"))) < 1e-9
    assert abs(fit.loglik - ref["loglik"]) < 1e-9
    assert np.max(np.abs(np.sqrt(np.diag(fit.var)) - ref["se"]) / np.array(ref["se"])) < 1e-9


def test_censoring_km_by_hand():
    # bins 0..3: at risk 5, 5, 3, 1; censored 0, 1, 1, 0 -> G(b-) = 1, 1, 4/5, 4/5 * 2/3
    n = np.array([[0, 0, 0], [1, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float)
    assert np.allclose(censoring_km(n), [1, 1, 0.8, 0.8 * 2 / 3], rtol=0, atol=1e-15)


def test_result_dict_from_crr_numbers():
    ref = expected(CASE)["fine_gray"]
    fit, terms = fit_split(3, seed=9)
    out = finegray_result_dict(fit, terms)
    coef, se = np.array(ref["coef"]), np.array(ref["se"])
    z = 1.959963984540054
    assert np.allclose(out["std_err"], se, rtol=1e-9, atol=0)
    assert np.allclose(out["lower"], np.exp(coef - z * se), rtol=1e-9, atol=0)
    assert np.allclose(out["upper"], np.exp(coef + z * se), rtol=1e-9, atol=0)
    assert out["loglik"][1] == pytest.approx(ref["loglik"], abs=1e-9)
    assert (out["n"], out["n_event"]) == (911, 456)
