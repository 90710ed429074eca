"""Proportion confidence intervals against closed forms and published values."""

from __future__ import annotations

import math

import pytest
from scipy.stats import binom

from coordinator.proportion import proportion_ci

Z975 = 1.959963984540054  # qnorm(0.975)


def test_zero_of_34_is_0_to_10_3_percent():
    est, lo, hi = proportion_ci(0, 34)
    assert (est, lo) == (0.0, 0.0)
    # With no successes the exact upper limit solves (1 - p)^n = alpha/2.
    assert hi == pytest.approx(1 - 0.025 ** (1 / 34), rel=1e-12)
    assert round(100 * hi, 1) == 10.3


def test_all_successes_closed_form():
    est, lo, hi = proportion_ci(34, 34)
    assert (est, hi) == (1.0, 1.0)
    assert lo == pytest.approx(0.025 ** (1 / 34), rel=1e-12)


@pytest.mark.parametrize("x,n", [(1, 10), (5, 34), (17, 34), (33, 34), (682, 925)])
def test_clopper_pearson_solves_its_defining_equations(x, n):
    # P(X >= x | p_L) = alpha/2 and P(X <= x | p_U) = alpha/2 (Clopper & Pearson 1934)
    _, lo, hi = proportion_ci(x, n, 0.95)
    assert binom.sf(x - 1, n, lo) == pytest.approx(0.025, rel=1e-9)
    assert binom.cdf(x, n, hi) == pytest.approx(0.025, rel=1e-9)


def test_clopper_pearson_as_r_binom_test():
    # R: binom.test(c(682, 243), p = 3/4) prints the 95% CI 0.7076683 0.7654066 (?binom.test)
    _, lo, hi = proportion_ci(682, 925)
    assert lo == pytest.approx(0.7076683, abs=5e-8)
    assert hi == pytest.approx(0.7654066, abs=5e-8)


def wilson_by_hand(x: int, n: int, z: float) -> tuple[float, float]:
    p = x / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


@pytest.mark.parametrize("x,n", [(0, 34), (1, 29), (5, 34), (81, 263), (34, 34)])
def test_wilson_closed_form(x, n):
    est, lo, hi = proportion_ci(x, n, 0.95, method="wilson")
    want_lo, want_hi = wilson_by_hand(x, n, Z975)
    assert est == x / n
    assert lo == pytest.approx(want_lo, abs=1e-12)
    assert hi == pytest.approx(want_hi, abs=1e-12)


@pytest.mark.parametrize(
    "x,n,lo,hi",
    # Newcombe (1998) Stat Med 17:857-872, Table II, method 3 (Wilson score)
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_published(x, n, lo, hi):
    _, got_lo, got_hi = proportion_ci(x, n, method="wilson")
    assert got_lo == pytest.approx(lo, abs=5e-5)
    assert got_hi == pytest.approx(hi, abs=5e-5)


def test_other_levels_and_bad_input():
    _, lo90, hi90 = proportion_ci(0, 34, 0.90)
    assert hi90 == pytest.approx(1 - 0.05 ** (1 / 34), rel=1e-12) and lo90 == 0.0
    with pytest.raises(ValueError, match="method"):
        proportion_ci(1, 2, method="wald")
    with pytest.raises(ValueError, match="n >= 1"):
        proportion_ci(0, 0)
    with pytest.raises(ValueError, match="0..n"):
        proportion_ci(3, 2)
