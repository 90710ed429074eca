"""Gray's k-sample test against R's cmprsk::cuminc (2.2-11) and by reasoning about strata.

R fixtures (tests/fixtures, PROVENANCE.md): cuminc(time, event, group)$Tests, rho = 0, for
colon_cr by rx (recurrence, and death without recurrence) and, with a single cause, for
lung by sex and by institution and veteran by treatment. The stratified test has no R
fixture; it is checked by properties that follow from its definition as a sum over strata.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coordinator.gray import gray_test, stratum_score
from r_reference import CASES, DATA, expected, histogram

TOL = 1e-8


def grouped(case: str) -> tuple[np.ndarray, np.ndarray]:
    """(1, G, m, 1 + K) counts with groups in R's factor-level order."""
    hists = [histogram(case, g) for g in expected(case)["meta"]["group_levels"]]
    return hists[0].time, np.stack([h.counts for h in hists])[None]


@pytest.mark.parametrize("case", list(CASES))
def test_equals_cuminc(case):
    time, counts = grouped(case)
    ref = expected(case)["gray_test"]
    tests = gray_test(time, counts)
    assert [t.cause for t in tests] == [int(c) for c in ref]
    for t in tests:
        r = ref[str(t.cause)]
        assert t.df == r["df"]
        assert t.stat == pytest.approx(r["stat"], abs=TOL, rel=0)
        assert t.p == pytest.approx(r["p"], abs=TOL, rel=0)


@pytest.mark.parametrize("case", ["lung_sex", "veteran_trt", "lung_inst"])
def test_single_cause_score_is_log_rank_observed_minus_expected(case):
    """Without competing causes 1 - F_g = S_g, so Gray's R_g = n_g and his score
    sum_t (d_g - d n_g / n) is survdiff's O - E (the variance differs, so the statistics do not)."""
    time, counts = grouped(case)
    c = counts[0]
    events = c[..., 1:].sum(axis=2)
    at_risk = np.cumsum(c.sum(axis=2)[:, ::-1], axis=1)[:, ::-1]
    rows = events.sum(axis=0) > 0
    score, _ = stratum_score(c[:, rows, 1].T.astype(float), np.zeros((rows.sum(), c.shape[0])),
                              at_risk[:, rows].T.astype(float), 0.0)
    ref = expected(case)["logrank"]["rho0"]
    np.testing.assert_allclose(score, np.subtract(ref["observed"], ref["expected"]), rtol=0, atol=1e-10)


def test_one_stratum_equals_unstratified():
    """An empty second stratum adds nothing; the single-stratum call is cuminc without strata."""
    time, counts = grouped("colon_cr_rx")
    with_empty = np.concatenate([counts, np.zeros_like(counts)], axis=0)
    for a, b in zip(gray_test(time, counts), gray_test(time, with_empty)):
        assert a == b


def test_a_duplicated_stratum_doubles_the_statistic():
    """Per-stratum sums: with a stratum repeated, score and variance both double, so
    (2z)' (2V)^-1 (2z) = 2 z' V^-1 z. Doubling the counts within one stratum is not the
    same (the tie corrections and risk sets change), which the second check shows."""
    time, counts = grouped("colon_cr_rx")
    single = gray_test(time, counts)
    twice = gray_test(time, np.concatenate([counts, counts], axis=0))
    for a, b in zip(single, twice):
        assert b.stat == pytest.approx(2 * a.stat, rel=1e-12)
        assert b.df == a.df
    doubled = gray_test(time, 2 * counts)
    assert abs(doubled[0].stat - 2 * single[0].stat) > 1e-6


def colon_by_sex() -> tuple[np.ndarray, np.ndarray]:
    df = pd.read_csv(DATA / "colon_cr.csv")
    levels = expected("colon_cr_rx")["meta"]["group_levels"]
    counts = np.zeros((2, len(levels), int(df["cr_time"].max()) + 1, 3), dtype=np.int64)
    g = df["rx"].map({v: i for i, v in enumerate(levels)}).to_numpy()
    np.add.at(counts, (df["sex"].to_numpy(), g, df["cr_time"].to_numpy(), df["cr_event"].to_numpy()), 1)
    return np.arange(counts.shape[2], dtype=float), counts


def test_stratified_by_sex_is_the_sum_of_the_strata():
    """colon_cr by rx, stratified by sex: the statistic is z' V^-1 z with z and V the sums of
    each stratum's score and variance (cuminc's crstm), here rebuilt stratum by stratum."""
    time, counts = colon_by_sex()
    tests = gray_test(time, counts)
    totals = counts.sum(axis=3)
    at_risk = np.cumsum(totals[:, :, ::-1], axis=2)[:, :, ::-1].astype(float)
    for t in tests:
        z, v = np.zeros(3), np.zeros((3, 3))
        for s in range(2):
            rows = counts[s, :, :, 1:].sum(axis=(0, 2)) > 0
            d1 = counts[s][:, rows, t.cause].T.astype(float)
            d2 = counts[s][:, rows, 1:].sum(axis=2).T - d1
            zs, vs = stratum_score(d1, d2, at_risk[s][:, rows].T, 0.0)
            z += zs
            v += vs
        assert t.stat == pytest.approx(z[:2] @ np.linalg.solve(v[:2, :2], z[:2]), rel=1e-12)
    # and stratifying changes the answer
    pooled = gray_test(time, counts.sum(axis=0, keepdims=True))
    assert abs(pooled[0].stat - tests[0].stat) > 1e-3


def test_a_group_without_patients_is_left_out():
    time, counts = grouped("colon_cr_rx")
    padded = np.concatenate([counts, np.zeros_like(counts[:, :1])], axis=1)
    for a, b in zip(gray_test(time, counts), gray_test(time, padded)):
        assert a == b


def test_a_cause_without_events_gives_no_test():
    time, counts = grouped("colon_cr_rx")
    counts = np.concatenate([counts, np.zeros_like(counts[..., :1])], axis=3)
    last = gray_test(time, counts)[-1]
    assert last.cause == 3 and np.isnan(last.stat) and np.isnan(last.p) and last.df == 2


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="shape"):
        gray_test(np.arange(3.0), np.zeros((2, 3, 2), dtype=np.int64))
    one_group = np.zeros((1, 2, 3, 2), dtype=np.int64)
    one_group[0, 0, 1, 1] = 1
    with pytest.raises(ValueError, match="two groups"):
        gray_test(np.arange(3.0), one_group)
