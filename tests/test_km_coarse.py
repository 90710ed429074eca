"""Kaplan-Meier on a coarse grid (bin_width 7 and 30) against lifelines on times rounded up.

Why lifelines is a valid independent reference here: ``KaplanMeierFitter`` computes the same
product-limit estimate (Kaplan & Meier 1958), the same Greenwood sum d/(n(n - d)) (kept as
``_cumulative_sq_``, the variance of log S) and its only interval is the "exponential
Greenwood" one, exp(-exp(log(-log S) -+ z sqrt(V) / log S)), which is R's conf.type =
"log-log" formula. Rounding the pooled rows' times up to the grid (ceil(t / w) * w) and
fitting lifelines on them is the centralized analysis that the pooled histogram must
reproduce. Measured agreement is within 2.4e-15 (lifelines forms S as exp(sum of logs),
we form the running product as R does); the test uses 1e-13.

Where they differ by convention only: where S = 1 R's log-log limits are NA and lifelines
fills 1.0; where S reaches 0 R's SE and limits are NA (the Greenwood term is infinite) and
lifelines gives SE 0 and limits 0. Those rows are checked for exactly these conventions.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from lifelines import KaplanMeierFitter

import r_reference as rr
from coordinator.km import kaplan_meier

TOL = 1e-13

CASES = [(case, stratum) for case in rr.CASES for stratum in rr.strata(case)]


@pytest.mark.parametrize("bin_width", [7, 30])
@pytest.mark.parametrize("case,stratum", CASES, ids=[f"{c}-{s}" for c, s in CASES])
def test_coarse_grid_equals_lifelines(case, stratum, bin_width):
    h = rr.histogram(case, stratum, bin_width=bin_width)
    event = h.counts[:, 1]
    ours = kaplan_meier(h.time, event, h.counts.sum(axis=1) - event, 0.95, "log-log")

    df = rr.rows(case)
    if stratum != "all":
        df = df[df["group"] == stratum]
    rounded = np.ceil(df["time"].to_numpy() / bin_width) * bin_width
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lifelines' divide-by-zero where S reaches 0
        kmf = KaplanMeierFitter().fit(rounded, df["event"].to_numpy() == 1, alpha=0.05)

    table = kmf.event_table.loc[ours.time]
    np.testing.assert_array_equal(ours.n_risk, table["at_risk"].to_numpy())
    np.testing.assert_array_equal(ours.n_event, table["observed"].to_numpy())
    np.testing.assert_array_equal(ours.n_censor, table["censored"].to_numpy())
    assert set(kmf.event_table.index[kmf.event_table["removed"] > 0]) == set(ours.time)

    surv = kmf.survival_function_.iloc[:, 0].loc[ours.time].to_numpy()
    se = surv * np.sqrt(kmf._cumulative_sq_.loc[ours.time].to_numpy())
    ci = kmf.confidence_interval_.loc[ours.time].to_numpy()
    np.testing.assert_allclose(ours.estimate, surv, rtol=0, atol=TOL)

    defined = np.isfinite(ours.lower)
    np.testing.assert_array_equal(defined, np.isfinite(ours.upper))
    np.testing.assert_allclose(ours.lower[defined], ci[defined, 0], rtol=0, atol=TOL)
    np.testing.assert_allclose(ours.upper[defined], ci[defined, 1], rtol=0, atol=TOL)
    has_se = np.isfinite(ours.std_err)
    np.testing.assert_allclose(ours.std_err[has_se], se[has_se], rtol=0, atol=TOL)

    # R's NA rows: S = 1 (lifelines fills 1.0) or S = 0 (lifelines gives 0 and SE 0).
    ones = ~defined & (ours.estimate == 1)
    zeros = ~defined & (ours.estimate == 0)
    np.testing.assert_array_equal(ones | zeros, ~defined)
    np.testing.assert_array_equal(ci[ones], 1.0)
    np.testing.assert_array_equal(ci[zeros], 0.0)
    np.testing.assert_array_equal(has_se, ours.estimate > 0)
    np.testing.assert_array_equal(se[~has_se], 0.0)


def test_coarsening_merges_times():
    fine = rr.histogram("lung_sex", "all")
    coarse = rr.histogram("lung_sex", "all", bin_width=30)
    f = kaplan_meier(fine.time, fine.counts[:, 1], fine.counts[:, 0])
    c = kaplan_meier(coarse.time, coarse.counts[:, 1], coarse.counts[:, 0])
    assert c.time.size < f.time.size
    assert np.all(c.time % 30 == 0)
    assert c.n_event.sum() == f.n_event.sum() and c.n_risk[0] == f.n_risk[0]
