"""Restricted mean survival time: against R's summary(fit, rmean = tau) and by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

import r_reference as rr
from coordinator.km import kaplan_meier
from coordinator.rmst import compare_rmst, rmst

TOL = 1e-10
Z975 = 1.959963984540054  # qnorm(0.975), as R prints it

CURVES = [
    (case, stratum, key)
    for case in rr.CASES
    for stratum in rr.strata(case)
    for key in ("km", "km_any_event")
    if key in rr.expected(case)["strata"][stratum]
]


@pytest.mark.parametrize("case,stratum,key", CURVES, ids=[f"{c}-{s}-{k}" for c, s, k in CURVES])
def test_rmst_equals_r(case, stratum, key):
    r = rr.expected(case)["strata"][stratum][key]["rmst"]
    h = rr.histogram(case, stratum)
    event = h.counts[:, 1] if key == "km" else h.counts[:, 1:].sum(axis=1)
    table = kaplan_meier(h.time, event, h.counts.sum(axis=1) - event)
    for tau, mean, se in zip(r["tau"], r["rmean"], r["se"]):
        got_mean, got_se = rmst(table, tau)
        if mean is None:  # R refuses a tau before the stratum's first time
            assert se is None and math.isnan(got_mean) and math.isnan(got_se)
            assert tau < table.time[0]
        else:
            assert got_mean == pytest.approx(mean, abs=TOL, rel=0)
            assert got_se == pytest.approx(se, abs=TOL, rel=0)


def tiny() -> object:
    # Four patients: event at 2, censored at 3, event at 5, censored at 8.
    # S = 1 on [0, 2), 3/4 on [2, 5), 3/8 from 5 on; Greenwood terms 1/(4*3) at 2, 1/(2*1) at 5.
    time = np.arange(9, dtype=float)
    event = np.zeros(9, dtype=np.int64)
    censor = np.zeros(9, dtype=np.int64)
    event[[2, 5]] = 1
    censor[[3, 8]] = 1
    return kaplan_meier(time, event, censor)


@pytest.mark.parametrize(
    "tau,area,variance",
    [
        # area = 2*1 + 3*(3/4) + (tau-5)*(3/8); A(2) = area after 2, A(5) = area after 5;
        # Var = A(2)^2/12 + A(5)^2/2 (Miller 1981, pp. 195-196)
        (6.0, 2 + 2.25 + 0.375, (2.25 + 0.375) ** 2 / 12 + 0.375**2 / 2),
        (10.0, 2 + 2.25 + 1.875, (2.25 + 1.875) ** 2 / 12 + 1.875**2 / 2),
        (4.0, 2 + 1.5, 1.5**2 / 12),
        (2.0, 2.0, 0.0),  # tau on the first event: its area-after is 0
    ],
)
def test_rmst_by_hand(tau, area, variance):
    mean, se = rmst(tiny(), tau)
    assert mean == pytest.approx(area, abs=1e-14)
    assert se == pytest.approx(math.sqrt(variance), abs=1e-14)


def test_rmst_refused_before_first_time():
    mean, se = rmst(tiny(), 1.5)
    assert math.isnan(mean) and math.isnan(se)


def test_rmst_when_everyone_dies():
    # Deaths at 1 and 2 of two patients: S = 1/2 on [1, 2), 0 from 2. R drops the infinite
    # Greenwood term where n = d: Var = A(1)^2 * 1/(2*1) with A(1) = 1/2.
    time = np.arange(3, dtype=float)
    table = kaplan_meier(time, np.array([0, 1, 1]), np.zeros(3, dtype=np.int64))
    mean, se = rmst(table, 3.0)
    assert mean == pytest.approx(1.5, abs=1e-15)
    assert se == pytest.approx(math.sqrt(0.125), abs=1e-15)


def test_compare_rmst_by_hand():
    cmp = compare_rmst(["A", "B"], [10.0, 12.0], [1.0, 2.0], conf_level=0.95, tau=20.0)
    np.testing.assert_allclose(cmp.lower, [10 - Z975, 12 - 2 * Z975], atol=1e-12)
    np.testing.assert_allclose(cmp.upper, [10 + Z975, 12 + 2 * Z975], atol=1e-12)
    (c,) = cmp.contrasts
    assert (c.group, c.reference) == ("B", "A")
    se = math.sqrt(1 + 4)
    assert c.difference == 2.0
    assert c.difference_std_err == pytest.approx(se, abs=1e-15)
    assert c.difference_lower == pytest.approx(2 - Z975 * se, abs=1e-12)
    assert c.difference_upper == pytest.approx(2 + Z975 * se, abs=1e-12)
    assert c.difference_p == pytest.approx(math.erfc(2 / se / math.sqrt(2)), rel=1e-12)
    log_se = math.sqrt(4 / 144 + 1 / 100)
    assert c.ratio == pytest.approx(1.2, rel=1e-15)
    assert c.ratio_log_std_err == pytest.approx(log_se, rel=1e-14)
    assert c.ratio_lower == pytest.approx(1.2 * math.exp(-Z975 * log_se), rel=1e-12)
    assert c.ratio_upper == pytest.approx(1.2 * math.exp(Z975 * log_se), rel=1e-12)
    assert c.ratio_p == pytest.approx(math.erfc(abs(math.log(1.2)) / log_se / math.sqrt(2)), rel=1e-12)
    # restricted mean time lost: 20 - 12 = 8 against 20 - 10 = 10
    lost_se = math.sqrt(4 / 64 + 1 / 100)
    assert c.rmtl_ratio == pytest.approx(0.8, rel=1e-15)
    assert c.rmtl_ratio_lower == pytest.approx(0.8 * math.exp(-Z975 * lost_se), rel=1e-12)
    assert c.rmtl_ratio_upper == pytest.approx(0.8 * math.exp(Z975 * lost_se), rel=1e-12)
    assert c.rmtl_ratio_p == pytest.approx(math.erfc(abs(math.log(0.8)) / lost_se / math.sqrt(2)), rel=1e-12)


def test_compare_rmst_all_pairs():
    cmp = compare_rmst(["1", "2", "3"], [5.0, 6.0, 8.0], [0.5, 0.5, 1.0])
    pairs = [(c.reference, c.group, c.difference) for c in cmp.contrasts]
    assert pairs == [("1", "2", 1.0), ("1", "3", 3.0), ("2", "3", 2.0)]
    assert all(c.rmtl_ratio is None for c in cmp.contrasts)


def test_comparison_as_plain_values():
    d = compare_rmst(["A", "B"], [10.0, 12.0], [1.0, 2.0], tau=20.0).to_dict()
    assert d["groups"]["B"] == {"estimate": 12.0, "std_err": 2.0,
                                "lower": pytest.approx(12 - 2 * Z975), "upper": pytest.approx(12 + 2 * Z975)}
    (c,) = d["contrasts"]
    assert (c["group"], c["reference"], c["difference"]["estimate"]) == ("B", "A", 2.0)
    assert c["ratio"]["estimate"] == pytest.approx(1.2) and c["rmtl_ratio"]["estimate"] == pytest.approx(0.8)
    assert "rmtl_ratio" not in compare_rmst(["A", "B"], [10.0, 12.0], [1.0, 2.0]).to_dict()["contrasts"][0]
