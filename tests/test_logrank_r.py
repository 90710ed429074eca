"""Log-rank and G-rho tests against R's survdiff (survival 3.5-3), hand computations and lifelines.

R fixtures (tests/fixtures, PROVENANCE.md): survdiff(Surv(time, event == 1) ~ group, rho)
for rho = 0 and 1; codes >= 2 (colon_cr's deaths without recurrence) count as censored.
The stratified test has no R fixture: it is checked against per-stratum sums, a tiny
example worked by hand, and lifelines (which agrees with survdiff on each stratum).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.statistics import multivariate_logrank_test
from scipy.stats import chi2

from coordinator.logrank import logrank_test
from r_reference import CASES, DATA, expected, histogram, rows

TOL = 1e-10


def close(ours, r, tol=TOL):
    np.testing.assert_allclose(np.asarray(ours, dtype=float), np.asarray(r, dtype=float), rtol=0, atol=tol)


def risk_and_events(time: np.ndarray, event: np.ndarray, group: np.ndarray, stratum: np.ndarray,
                    groups: list, strata: list, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, G, m) events (event == 1) and numbers at risk #{T >= t} on an integer grid."""
    counts = np.zeros((len(strata), len(groups), n_bins), dtype=np.int64)
    events = np.zeros_like(counts)
    s = np.array([strata.index(x) for x in stratum])
    g = np.array([groups.index(x) for x in group])
    t = time.astype(np.int64)
    np.add.at(counts, (s, g, t), 1)
    np.add.at(events, (s, g, t), (event == 1).astype(np.int64))
    at_risk = np.cumsum(counts[:, :, ::-1], axis=2)[:, :, ::-1]
    return events, at_risk


@pytest.mark.parametrize("rho", ["rho0", "rho1"])
@pytest.mark.parametrize("case", list(CASES))
def test_equals_survdiff(case, rho):
    ref = expected(case)["logrank"][rho]
    hists = [histogram(case, g) for g in ref["groups"]]
    events = np.stack([h.counts[:, 1] for h in hists])[None]
    at_risk = np.stack([np.cumsum(h.counts.sum(axis=1)[::-1])[::-1] for h in hists])[None]
    res = logrank_test(events, at_risk, rho=ref["rho"])
    assert res.df == ref["df"]
    assert res.n.tolist() == ref["n"]
    close(res.chisq, ref["chisq"])
    close(res.p, ref["p"])
    close(res.observed, ref["observed"])
    close(res.expected, ref["expected"])
    close(res.var, ref["var"])


def test_stratified_tiny_example_by_hand():
    """Two strata, two groups; every number below is worked out by hand.

    Stratum A: group 1 dies at t=1, group 2 at t=2.
      t=1: n=(1,1), d=1 -> E=(1/2, 1/2), V11 = 1 * 1/2 * 1/2 = 1/4 (hypergeometric factor
      d(n-d)/(n-1) = 1); t=2: only group 2 at risk, E2 += 1, no variance (n = 1).
      O=(1,1), E=(1/2, 3/2), V11 = 1/4.
    Stratum B: group 1 censored at t=1 and dies at t=3; group 2 dies at t=2 and t=3.
      t=2: n=(1,2), d=1 -> E=(1/3, 2/3), V11 = 1/3 * 2/3 = 2/9;
      t=3: n=(1,1), d=2 -> E=(1, 1), factor 2*0/1 = 0.  O=(1,2), E=(4/3, 5/3), V11 = 2/9.
    Stratified: O=(2,3), E=(11/6, 19/6), V11 = 17/36, and survdiff's chisq drops the first
    group: (3 - 19/6)^2 / (17/36) = 1/17. Pooling the two strata instead gives O1 = E1 = 2,
    chisq 0: stratification matters.
    """
    time = np.array([1, 2, 1, 3, 2, 3])
    event = np.array([1, 1, 0, 1, 1, 1])
    group = np.array([1, 2, 1, 1, 2, 2])
    stratum = np.array(["A", "A", "B", "B", "B", "B"])
    events, at_risk = risk_and_events(time, event, group, stratum, [1, 2], ["A", "B"], 4)
    res = logrank_test(events, at_risk)
    close(res.observed, [2, 3], 1e-15)
    close(res.expected, [11 / 6, 19 / 6], 1e-15)
    close(res.var, [[17 / 36, -17 / 36], [-17 / 36, 17 / 36]], 1e-15)
    assert res.df == 1 and res.n.tolist() == [3, 3]
    close(res.chisq, 1 / 17, 1e-15)
    close(res.p, chi2.sf(1 / 17, 1), 1e-15)
    pooled = logrank_test(events.sum(axis=0, keepdims=True), at_risk.sum(axis=0, keepdims=True))
    close(pooled.observed[0], 2, 1e-15)
    close(pooled.expected[0], 2, 1e-15)
    close(pooled.chisq, 0, 1e-15)


def colon_by_sex() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    df = pd.read_csv(DATA / "colon_cr.csv")
    groups = sorted(df["rx"].unique())
    events, at_risk = risk_and_events(df["cr_time"].to_numpy(), df["cr_event"].to_numpy(),
                                      df["rx"].to_numpy(), df["sex"].to_numpy(), groups, [0, 1],
                                      int(df["cr_time"].max()) + 1)
    return df, events, at_risk


@pytest.mark.parametrize("rho", [0.0, 1.0])
def test_stratified_is_the_sum_over_strata(rho):
    """colon_cr recurrence by rx, stratified by sex: survdiff's per-stratum sums."""
    _, events, at_risk = colon_by_sex()
    res = logrank_test(events, at_risk, rho=rho)
    parts = [logrank_test(events[s:s + 1], at_risk[s:s + 1], rho=rho) for s in range(2)]
    close(res.observed, sum(p.observed for p in parts), 1e-12)
    close(res.expected, sum(p.expected for p in parts), 1e-12)
    close(res.var, sum(p.var for p in parts), 1e-12)
    assert res.n.tolist() == (parts[0].n + parts[1].n).tolist()
    diff = (res.observed - res.expected)[1:]
    close(res.chisq, diff @ np.linalg.solve(res.var[1:, 1:], diff), 1e-12)
    assert res.df == 2
    close(res.p, chi2.sf(res.chisq, 2), 1e-15)
    # The stratified statistic is not the pooled one: the weights and risk sets are per stratum.
    pooled = logrank_test(events.sum(axis=0, keepdims=True), at_risk.sum(axis=0, keepdims=True), rho=rho)
    assert abs(pooled.chisq - res.chisq) > 1e-3


@pytest.mark.parametrize("rho", [0.0, 1.0])
@pytest.mark.parametrize("sex", [0, 1])
def test_each_stratum_agrees_with_lifelines(sex, rho):
    """lifelines' multivariate log-rank (Fleming-Harrington p=1, q=0 for rho=1) on one stratum."""
    df, events, at_risk = colon_by_sex()
    part = df[df["sex"] == sex]
    kw = {"weightings": "fleming-harrington", "p": 1, "q": 0} if rho else {}
    ll = multivariate_logrank_test(part["cr_time"], part["rx"], (part["cr_event"] == 1).astype(int), **kw)
    ours = logrank_test(events[sex:sex + 1], at_risk[sex:sex + 1], rho=rho)
    close(ours.chisq, ll.test_statistic, 1e-9)
    close(ours.p, ll.p_value, 1e-12)


def test_lifelines_agrees_with_the_fixture_used_above():
    """The lifelines cross-check is only as good as its agreement with R on known data."""
    df = rows("lung_sex")
    ref = expected("lung_sex")["logrank"]
    close(multivariate_logrank_test(df.time, df.group, df.event).test_statistic, ref["rho0"]["chisq"], 1e-9)
    fh = multivariate_logrank_test(df.time, df.group, df.event, weightings="fleming-harrington", p=1, q=0)
    close(fh.test_statistic, ref["rho1"]["chisq"], 1e-9)


def test_a_group_without_patients_is_left_out():
    ref = expected("lung_sex")["logrank"]["rho0"]
    hists = [histogram("lung_sex", g) for g in ref["groups"]]
    events = np.stack([h.counts[:, 1] for h in hists] + [np.zeros_like(hists[0].counts[:, 1])])[None]
    at_risk = np.stack([np.cumsum(h.counts.sum(axis=1)[::-1])[::-1] for h in hists]
                       + [np.zeros_like(hists[0].counts[:, 1])])[None]
    res = logrank_test(events, at_risk)
    assert res.df == ref["df"]
    close(res.chisq, ref["chisq"])
    assert res.expected[-1] == 0 and res.n[-1] == 0


def test_one_group_gives_no_test():
    events = np.array([[[1, 0, 1]]])
    at_risk = np.array([[[3, 2, 1]]])
    res = logrank_test(events, at_risk)
    assert res.df == 0 and res.chisq == 0 and np.isnan(res.p)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="shape"):
        logrank_test(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="exceed"):
        logrank_test(np.array([[[2]]]), np.array([[[1]]]))
