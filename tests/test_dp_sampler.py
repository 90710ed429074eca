"""The exact samplers against their exact laws.

Draws come from the OS generator, so no seed: each goodness-of-fit test must pass with
p > 1e-6, a false-failure rate of one in a million per test, while samples of 10^4 to
10^5 draws detect a wrong variance of a few percent. Reference laws are written out
independently of the samplers (closed-form pmfs, scipy.stats for Poisson and Skellam).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from protocol.dp_sampler import (
    SIGMA_FLOOR,
    bernoulli_exp,
    bernoulli_exp_array,
    discrete_gaussian,
    discrete_gaussian_array,
    discrete_gaussian_pmf,
    discrete_laplace,
    discrete_laplace_array,
    discrete_laplace_pmf,
    noise_share,
    poisson,
    rational_variance,
    skellam,
)

P_MIN = 1e-6


def chi_square_p(sample: np.ndarray, pmf, min_expected: float = 20.0) -> float:
    """Pearson's goodness of fit over integer cells, tails pooled until each expects >= 20."""
    sample = np.asarray(sample)
    n = sample.size
    lo, hi = int(sample.min()) - 50, int(sample.max()) + 50
    k = np.arange(lo, hi + 1)
    p = pmf(k)
    expected = n * p
    observed = np.bincount(sample - lo, minlength=k.size).astype(float)
    # pool from each end inwards until the pooled tail expects enough
    cells_o, cells_e = [], []
    acc_o = acc_e = 0.0
    for o, e in zip(observed, expected):
        acc_o += o
        acc_e += e
        if acc_e >= min_expected:
            cells_o.append(acc_o)
            cells_e.append(acc_e)
            acc_o = acc_e = 0.0
    cells_o[-1] += acc_o
    cells_e[-1] += acc_e + (1 - p.sum()) * n
    cells_o, cells_e = np.array(cells_o), np.array(cells_e)
    stat = float(((cells_o - cells_e) ** 2 / cells_e).sum())
    return float(stats.chi2.sf(stat, cells_o.size - 1))


def moment_z_scores(sample: np.ndarray, pmf) -> tuple[float, float]:
    """z of the sample mean (true 0) and sample variance against the pmf's exact moments."""
    half = int(sample.std() * 60) + 60
    k = np.arange(-half, half + 1, dtype=float)
    p = pmf(k)
    var = float((k**2 * p).sum())
    mu4 = float((k**4 * p).sum())
    n = sample.size
    z_mean = sample.mean() / math.sqrt(var / n)
    z_var = (sample.astype(float) ** 2).mean() - var
    return float(z_mean), float(z_var / math.sqrt((mu4 - var**2) / n))


@pytest.mark.parametrize("sigma", [4.53, 1.64, 0.57, SIGMA_FLOOR])
def test_discrete_gaussian_fits_its_exact_law(sigma):
    s2 = rational_variance(sigma)
    x = discrete_gaussian_array(s2, 100_000)
    assert chi_square_p(x, lambda k: discrete_gaussian_pmf(k, float(s2))) > P_MIN
    z_mean, z_var = moment_z_scores(x, lambda k: discrete_gaussian_pmf(k, float(s2)))
    assert abs(z_mean) < 5 and abs(z_var) < 5


def test_discrete_gaussian_variance_is_close_to_sigma_squared():
    # N_Z(0, s^2) has variance s^2 - O(e^{-2 pi^2 s^2}) for s >= 1 (CKS 2020, Prop. 1 / Cor. 9)
    for sigma in (1.5, 4.53):
        s2 = float(rational_variance(sigma))
        k = np.arange(-2000, 2001, dtype=float)
        var = float((k**2 * discrete_gaussian_pmf(k, s2)).sum())
        assert abs(var - s2) < 1e-9


def test_scalar_discrete_gaussian_fits_its_exact_law():
    s2 = rational_variance(2.0)
    assert s2 == 4
    x = np.array([discrete_gaussian(s2) for _ in range(8_000)])
    assert chi_square_p(x, lambda k: discrete_gaussian_pmf(k, 4.0)) > P_MIN


def test_a_wrong_variance_is_detected():
    # the same test rejects N_Z(0, 1.1 * 4.53^2) as N_Z(0, 4.53^2): the test has power
    s2 = rational_variance(4.53)
    x = discrete_gaussian_array(s2 * Fraction(11, 10), 100_000)
    assert chi_square_p(x, lambda k: discrete_gaussian_pmf(k, float(s2))) < P_MIN


@pytest.mark.parametrize("scale", [1, 3, 10])
def test_discrete_laplace_fits_its_exact_law(scale):
    x = discrete_laplace_array(scale, 60_000)
    assert chi_square_p(x, lambda k: discrete_laplace_pmf(k, scale)) > P_MIN


def test_scalar_discrete_laplace_with_rational_scale():
    scale = Fraction(5, 2)
    x = np.array([discrete_laplace(scale) for _ in range(8_000)])
    assert chi_square_p(x, lambda k: discrete_laplace_pmf(k, 2.5)) > P_MIN


@pytest.mark.parametrize("num,den", [(0, 1), (1, 2), (1, 1), (7, 3), (13, 4)])
def test_bernoulli_exp_frequency(num, den):
    n = 60_000
    p = math.exp(-num / den)
    hits = int(bernoulli_exp_array(np.full(n, num), np.full(n, den)).sum())
    assert stats.binomtest(hits, n, p).pvalue > P_MIN
    scalar_hits = sum(bernoulli_exp(num, den) for _ in range(3_000))
    assert stats.binomtest(scalar_hits, 3_000, p).pvalue > P_MIN


@pytest.mark.parametrize("mu", [Fraction(1, 3), Fraction(3, 2), Fraction(17, 4)])
def test_poisson_fits_scipy(mu):
    x = np.array([poisson(mu) for _ in range(6_000)])
    assert chi_square_p(x, lambda k: stats.poisson.pmf(k, float(mu))) > P_MIN


def test_skellam_fits_scipy():
    mu = Fraction(9, 16)
    x = np.array([skellam(mu) for _ in range(6_000)])
    assert chi_square_p(x, lambda k: stats.skellam.pmf(k, float(mu), float(mu))) > P_MIN
    assert abs(x.mean()) / math.sqrt(2 * float(mu) / x.size) < 5


def test_rational_variance_rounds_up_to_multiples_of_1_over_1024():
    s2 = rational_variance(4.53)
    assert s2 == Fraction(math.ceil(Fraction(4.53) ** 2 * 1024), 1024)
    assert s2 >= Fraction(4.53) ** 2 and s2 - Fraction(4.53) ** 2 < Fraction(1, 1024)
    with pytest.raises(ValueError):
        rational_variance(0.0)


def test_floor_rule():
    # sigma_i = max(1.5, sigma / sqrt(t))
    share = noise_share(4.53, 3)
    assert share.mechanism == "gaussian"
    assert share.variance == rational_variance(4.53 / math.sqrt(3))
    share = noise_share(1.64, 3)  # 1.64 / sqrt(3) = 0.947 < 1.5
    assert share.mechanism == "gaussian" and share.variance == Fraction(9, 4)
    share = noise_share(1.64, 3, below_floor="skellam")
    assert share.mechanism == "skellam" and share.variance == rational_variance(1.64 / math.sqrt(3))
    with pytest.raises(ValueError):
        noise_share(4.53, 0)


def test_against_opendp():
    # test-only cross-check: OpenDP 0.16's discrete Gaussian (make_gaussian on integers) and ours
    # draw from the same law (chi-square test of homogeneity), and its zCDP map gives our rho
    dp = pytest.importorskip("opendp.prelude")
    dp.enable_features("contrib")
    sigma = 3.0
    meas = dp.m.make_gaussian(dp.vector_domain(dp.atom_domain(T=int)), dp.l2_distance(T=int), scale=sigma)
    theirs = np.array(meas([0] * 80_000), dtype=np.int64)
    ours = discrete_gaussian_array(rational_variance(sigma), 80_000)
    lo = min(theirs.min(), ours.min())
    hi = max(theirs.max(), ours.max())
    counts = np.stack([np.bincount(theirs - lo, minlength=hi - lo + 1), np.bincount(ours - lo, minlength=hi - lo + 1)])
    # pool neighbouring values into cells of about 400 draws, so every expected count is >= 20
    total = counts.sum(axis=0)
    edges = np.cumsum(total) // 400
    pooled = np.stack([np.bincount(edges, weights=row) for row in counts])
    pooled = pooled[:, pooled.sum(axis=0) > 0]
    assert stats.chi2_contingency(pooled)[1] > P_MIN
    from protocol.dp_accounting import rho_for_sigma

    assert meas.map(1) == pytest.approx(rho_for_sigma(sigma), rel=1e-12)
