"""Cox regression from pooled per-bin sums equals R's coxph (tests/fixtures/expected/cox).

R's numbers come from coxph on the pooled rows with times put on the grid (PROVENANCE.md).
The fit here sees only CoxBinSums, summed over sites; splitting the rows over sites must not
change a digit beyond rounding.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from coordinator.cox import (
    CoxBinSums,
    CoxPoint,
    check_round_sums,
    cox_bin_sums,
    cox_fit,
    cox_point,
    cox_result_dict,
    cox_sums_from_patterns,
)
from protocol.errors import AggregationError

FIX = Path(__file__).parent / "fixtures"

# fixture -> (csv, time, event, cause, covariates, factors)
CASES = {
    "lung_age_sex_ecog_w1": ("lung.csv", "time", "event", 1, ["age", "sex", "ph.ecog"], []),
    "lung_age_sex_ecog_w30": ("lung.csv", "time", "event", 1, ["age", "sex", "ph.ecog"], []),
    "veteran_trt_karno_age_celltype_w1": ("veteran.csv", "time", "event", 1,
                                          ["trt", "karno", "age", "celltype"], ["celltype"]),
    "colon_cr_recurrence_rx_age_nodes_w7": ("colon_cr.csv", "cr_time", "cr_event", 1,
                                            ["rx", "age", "nodes"], ["rx"]),
}


def expected(case: str) -> dict:
    with open(FIX / "expected" / "cox" / f"{case}.json") as f:
        return json.load(f)


def design(case: str):
    """Rows R used: grid bin, event of interest, raw event code, design matrix, term names."""
    csv, tcol, ecol, cause, covs, factors = CASES[case]
    meta = expected(case)["meta"]
    df = pd.read_csv(FIX / "data" / csv)[[tcol, ecol] + covs].dropna().reset_index(drop=True)
    assert len(df) == meta["n_used"]
    cols, terms = [], []
    for c in covs:
        if c in factors:
            # treatment contrasts against the first level in alphabetical order, as R's factor()
            levels = sorted(df[c].astype(str).unique())
            for lev in levels[1:]:
                cols.append((df[c].astype(str) == lev).to_numpy(float))
                terms.append(f"{c}{lev}")
        else:
            cols.append(df[c].to_numpy(float))
            terms.append(c)
    X = np.column_stack(cols)
    w = meta["bin_width"]
    b = np.ceil(df[tcol].to_numpy(float) / w).astype(np.int64)
    code = df[ecol].to_numpy(int)
    return b, code == cause, code, X, terms


def fit_split(case: str, ties: str, n_sites: int = 1, seed: int = 0):
    b, ev, _, X, terms = design(case)
    # a public centre (any value gives the same fit in exact arithmetic); rounded means here
    Xc = X - np.round(X.mean(axis=0), 1)
    n_bins = int(b.max()) + 1
    site = np.random.default_rng(seed).integers(0, n_sites, len(b)) if n_sites > 1 else np.zeros(len(b), int)
    parts = [np.flatnonzero(site == k) for k in range(n_sites)]

    def pooled(beta):
        sums = [cox_bin_sums(b[i], ev[i], Xc[i], beta, n_bins) for i in parts]
        total = sums[0]
        for s in sums[1:]:
            total = total + s
        return total

    return cox_fit(pooled, X.shape[1], ties=ties), terms


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("ties", ["efron", "breslow"])
@pytest.mark.parametrize("n_sites", [1, 5])
def test_cox_equals_r(case, ties, n_sites):
    ref = expected(case)[ties]
    fit, terms = fit_split(case, ties, n_sites, seed=n_sites)
    p = len(terms)
    assert terms == ref["terms"]
    assert rel(fit.coef, ref["coef"]) < 1e-10
    assert np.max(np.abs(fit.var - np.array(ref["var"]).reshape(p, p, order="F"))) < 1e-9
    assert np.max(np.abs(np.array(fit.loglik) - ref["loglik"])) < 1e-9
    assert abs(fit.score_test - ref["score_test"]) < 1e-9
    assert abs(fit.lr_test - ref["lr_test"]) < 1e-9
    assert abs(fit.wald_test - ref["wald_test"]) < 0.005  # R's fixture rounds it to 2 decimals
    assert fit.iterations == ref["iter"]
    assert fit.converged
    assert (fit.n, fit.n_event) == (ref["n"], ref["nevent"])
    out = cox_result_dict(fit, terms, robust=False, ties=ties)
    assert rel(out["lower"], ref["hr_ci95"]["lower"]) < 1e-9
    assert rel(out["upper"], ref["hr_ci95"]["upper"]) < 1e-9


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("n_sites", [1, 7])
def test_cox_robust_equals_r(case, n_sites):
    ref = expected(case)["efron_robust"]
    fit, terms = fit_split(case, "efron", n_sites, seed=n_sites)
    p = len(terms)
    assert np.max(np.abs(fit.robust_var - np.array(ref["robust_var"]).reshape(p, p, order="F"))) < 1e-9
    assert np.max(np.abs(fit.var - np.array(ref["naive_var"]).reshape(p, p, order="F"))) < 1e-9
    out = cox_result_dict(fit, terms, robust=True)
    assert rel(out["robust_std_err"], ref["robust_se"]) < 1e-9
    assert abs(out["tests"]["wald"] - ref["wald_test"]) < 0.005
    assert rel(out["lower"], ref["hr_ci95"]["lower"]) < 1e-9
    assert rel(out["upper"], ref["hr_ci95"]["upper"]) < 1e-9


def test_split_invariance_exact_to_rounding():
    one, _ = fit_split("veteran_trt_karno_age_celltype_w1", "efron", 1)
    many, _ = fit_split("veteran_trt_karno_age_celltype_w1", "efron", 20, seed=3)
    assert one.iterations == many.iterations
    assert rel(many.coef, one.coef) < 1e-12
    assert np.max(np.abs(many.robust_var - one.robust_var)) < 1e-14


def test_flat_round_trip():
    b, ev, _, X, _ = design("lung_age_sex_ecog_w30")
    s = cox_bin_sums(b, ev, X - 60, np.array([0.01, -0.5, 0.4]), int(b.max()) + 1)
    back = CoxBinSums.from_flat(s.flat(), int(b.max()) + 1, 3)
    assert np.array_equal(back.flat(), s.flat())


def lung_strata_fit(by_site_points: bool):
    """lung, age + ph.ecog, stratified by sex: as two strata of bin sums, or strata = "site"
    where each site (one per sex) sends only its own point (loglik, score, information)."""
    df = pd.read_csv(FIX / "data" / "lung.csv")[["time", "event", "age", "sex", "ph.ecog"]].dropna()
    b = df["time"].to_numpy(np.int64)
    ev = df["event"].to_numpy() == 1
    X = df[["age", "ph.ecog"]].to_numpy(float) - [60.0, 1.0]
    n_bins = int(b.max()) + 1
    masks = [df["sex"].to_numpy() == k for k in (1, 2)]

    def strata(beta):
        return [cox_bin_sums(b[m], ev[m], X[m], beta, n_bins) for m in masks]

    def site_points(beta):
        # each site: a grid of its own is enough; only the sum of the points is pooled
        pts = [cox_point(cox_bin_sums(b[m], ev[m], X[m], beta, int(b[m].max()) + 1), beta, "efron")
               for m in masks]
        return CoxPoint.from_flat(pts[0].flat() + pts[1].flat(), 2)

    return cox_fit(site_points if by_site_points else strata, 2), df


@pytest.mark.parametrize("by_site_points", [False, True])
def test_stratified_cox_equals_lifelines(by_site_points):
    # lifelines' CoxPHFitter (Efron ties, exact Newton) agrees with R's coxph on stratified
    # models; it stops on its own step tolerance, hence 1e-6 on the coefficients.
    fit, df = lung_strata_fit(by_site_points)
    cph = CoxPHFitter().fit(df, "time", "event", strata=["sex"])
    assert rel(fit.coef, cph.params_[["age", "ph.ecog"]].to_numpy()) < 1e-6
    assert abs(fit.loglik[1] - cph.log_likelihood_) < 1e-9
    assert np.max(np.abs(fit.var - cph.variance_matrix_.loc[["age", "ph.ecog"], ["age", "ph.ecog"]].to_numpy())) < 1e-10
    assert (fit.n, fit.n_event) == (len(df), int(df["event"].sum()))


def test_iteration_limit_as_coxfit6():
    # lung needs 3 iterations; with iter.max 2 coxph warns and coxfit6's loop leaves iter = 3
    b, ev, _, X, _ = design("lung_age_sex_ecog_w1")
    n_bins = int(b.max()) + 1
    fit = cox_fit(lambda beta: cox_bin_sums(b, ev, X - 60, beta, n_bins), 3, iter_max=2)
    assert not fit.converged and fit.iterations == 3
    assert fit.warnings == ("Ran out of iterations and did not converge",)
    ref = expected("lung_age_sex_ecog_w1")["efron"]
    assert rel(fit.coef, ref["coef"]) < 1e-3    # the beta of the last accepted step (the second)


def test_monotone_likelihood_warns_infinite_beta():
    # every patient with x = 1 dies before every patient with x = 0: the MLE is +infinity
    b = np.arange(1, 13)
    ev = np.ones(12, bool)
    x = np.r_[np.ones(6), np.zeros(6)][:, None]
    fit = cox_fit(lambda beta: cox_bin_sums(b, ev, x, beta, 13), 1)
    assert fit.converged and fit.coef[0] > 5
    assert fit.warnings == ("Loglik converged before variable  1 ; beta may be infinite. ",)


@pytest.mark.parametrize("case", ["lung_age_sex_ecog_w30", "veteran_trt_karno_age_celltype_w1"])
def test_one_round_of_pattern_tallies_gives_r(case):
    # every covariate here takes integer values: tallies by (bin, pattern) are integers, and
    # the coordinator derives every Newton round's sums from them without asking again
    b, ev, _, X, terms = design(case)
    Xc = X - np.round(X.mean(axis=0), 1)
    patterns, which = np.unique(Xc, axis=0, return_inverse=True)
    n_bins = int(b.max()) + 1
    n_exit = np.zeros((n_bins, len(patterns)), np.int64)
    n_event = np.zeros_like(n_exit)
    np.add.at(n_exit, (b, which), 1)
    np.add.at(n_event, (b[ev], which[ev]), 1)
    fit = cox_fit(lambda beta: cox_sums_from_patterns(patterns, n_exit, n_event, beta), len(terms))
    ref, rob = expected(case)["efron"], expected(case)["efron_robust"]
    p = len(terms)
    assert rel(fit.coef, ref["coef"]) < 1e-10 and fit.iterations == ref["iter"]
    assert np.max(np.abs(fit.var - np.array(ref["var"]).reshape(p, p, order="F"))) < 1e-9
    assert np.max(np.abs(fit.robust_var - np.array(rob["robust_var"]).reshape(p, p, order="F"))) < 1e-9


def test_coordinator_checks_reject_inconsistent_rounds():
    b, ev, _, X, _ = design("lung_age_sex_ecog_w30")
    n_bins = int(b.max()) + 1
    s = cox_bin_sums(b, ev, X - 60, np.array([0.01, -0.5, 0.4]), n_bins)
    check_round_sums(s, s.n_exit, s.n_event)
    fewer = cox_bin_sums(b[1:], ev[1:], X[1:] - 60, np.array([0.01, -0.5, 0.4]), n_bins)
    with pytest.raises(AggregationError, match="differ from round 1"):
        check_round_sums(fewer, s.n_exit, s.n_event)
    bad = dataclasses.replace(s, exit_r=s.exit_r * np.where(np.arange(n_bins) == 3, -1.0, 1.0))
    with pytest.raises(AggregationError, match="risk-set sums"):
        check_round_sums(bad, s.n_exit, s.n_event)
