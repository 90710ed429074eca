"""Privacy accounting for the noisy histograms: zero-concentrated DP and its (epsilon, delta).

Sensitivity. Adding or removing one patient changes exactly one cell of each histogram the
patient is counted in by one, so with m histograms per patient the L2 sensitivity squared
is Delta_2^2 = m (and c^2 m if a patient may be counted at c sites: a referral counted twice
moves one cell by 2). The discrete Gaussian mechanism N_Z(0, sigma^2) then satisfies
rho-zCDP with

    rho = Delta_2^2 / (2 sigma^2)            (Canonne, Kamath & Steinke 2020, Theorem 4)

zCDP composes by addition: k queries of rho_1..rho_k are (sum rho_j)-zCDP (Bun & Steinke
2016, Lemma 2.3).

Conversion to (epsilon, delta). rho-zCDP implies (epsilon, delta)-DP for

    delta = inf_{a > 1} exp((a - 1)(a rho - epsilon)) / (a - 1) * (1 - 1/a)^a
                                           (Canonne, Kamath & Steinke 2020, Proposition 12 / Cor. 13)

equivalently epsilon = inf_{a > 1} a rho + (log(1/delta) + (a - 1) log(1 - 1/a) - log a) / (a - 1),
tighter than Bun & Steinke's rho + 2 sqrt(rho log(1/delta)). At delta = 1e-6 and m = 1 it
gives sigma = 4.53 for epsilon = 1, 1.64 for 3, 0.57 for 10.

Distributed noise. When t honest sites each add N_Z(0, sigma_i^2), the sum is close to, but
not exactly, N_Z(0, t sigma_i^2); Kairouz, Liu & Steinke 2021 (ICML, Theorem 1 of "The
distributed discrete Gaussian mechanism for federated learning with secure aggregation")
show it is (eps^2/2)-zCDP with eps = min( sqrt(Delta_2^2/(t sigma_i^2) + tau Delta_1 / 2),
Delta_2/(sqrt(t) sigma_i) + tau sqrt(Delta_1) ), tau = 10 sum_{k=1}^{t-1} exp(-2 pi^2 sigma_i^2 k/(k+1)).

Skellam shares sum to an exact Skellam of variance sigma^2 = 2 mu, which is
(a, eps(a))-RDP with eps(a) = a Delta_2^2/(2 sigma^2) + min(((2a - 1) Delta_2^2 + 6 Delta_1)/(4 sigma^4),
3 Delta_1/(2 sigma^2)) (Agarwal, Kairouz & Liu 2021, NeurIPS, "The Skellam mechanism", their
RDP bound written with mu = sigma^2/2); the ledger keeps its looser linear form
xi + a rho with xi = 3 Delta_1/(2 sigma^2). RDP converts to (epsilon, delta) by the same
infimum (Canonne, Kamath & Steinke 2020, Proposition 12).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
from scipy.optimize import brentq, minimize_scalar


def rho_for_sigma(sigma: float, histograms: int = 1, copies: int = 1) -> float:
    """rho = c^2 m / (2 sigma^2) for m histograms per patient counted at up to c sites."""
    if sigma <= 0 or histograms < 1 or copies < 1:
        raise ValueError("sigma must be positive; histograms and copies at least 1")
    return copies**2 * histograms / (2.0 * sigma * sigma)


def compose(rhos: Iterable[float]) -> float:
    """zCDP composition: the rho of several releases is the sum of their rhos."""
    return float(sum(rhos))


def _minimise_over_order(f: Callable[[float], float], hint: float) -> float:
    """inf over a > 1 of f(a), searched on x = log(a - 1): a grid, then a bounded refinement."""
    lo, hi = -20.0, max(5.0, math.log(max(hint, 1.0)) + 8.0)
    xs = np.linspace(lo, hi, 400)
    vals = np.array([f(1.0 + math.exp(x)) for x in xs])
    i = int(np.nanargmin(vals))
    a, b = xs[max(i - 1, 0)], xs[min(i + 1, xs.size - 1)]
    r = minimize_scalar(lambda x: f(1.0 + math.exp(x)), bounds=(a, b), method="bounded",
                        options={"xatol": 1e-12})
    return float(min(r.fun, vals[i]))


def epsilon_from_rdp(rdp: Callable[[float], float], delta: float, hint: float = 10.0) -> float:
    """epsilon = inf_a rdp(a) + (log(1/delta) + (a-1) log(1-1/a) - log a)/(a-1) (CKS 2020, Prop. 12)."""
    if not 0 < delta < 1:
        raise ValueError("delta must lie strictly between 0 and 1")
    log_inv_delta = -math.log(delta)

    def f(a: float) -> float:
        return rdp(a) + (log_inv_delta + (a - 1) * math.log1p(-1 / a) - math.log(a)) / (a - 1)

    return max(0.0, _minimise_over_order(f, hint))


def epsilon_for_rho(rho: float, delta: float) -> float:
    """The epsilon that rho-zCDP gives at this delta (CKS 2020, Prop. 12 / Cor. 13)."""
    if rho < 0:
        raise ValueError("rho must not be negative")
    if rho == 0:
        return 0.0
    return epsilon_from_rdp(lambda a: a * rho, delta, hint=math.sqrt(-math.log(delta) / rho))


def delta_for_rho(rho: float, epsilon: float) -> float:
    """delta = inf_a exp((a-1)(a rho - epsilon)) / (a-1) * (1 - 1/a)^a (CKS 2020, Prop. 12)."""
    if rho <= 0:
        return 0.0

    def log_delta(a: float) -> float:
        return (a - 1) * (a * rho - epsilon) + a * math.log1p(-1 / a) - math.log(a - 1)

    return min(1.0, math.exp(_minimise_over_order(log_delta, (epsilon + rho) / (2 * rho))))


def epsilon_bun_steinke(rho: float, delta: float) -> float:
    """The simpler bound rho + 2 sqrt(rho log(1/delta)) (Bun & Steinke 2016, Proposition 1.3)."""
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


def rho_for_epsilon(epsilon: float, delta: float) -> float:
    """The largest rho whose (epsilon, delta) conversion stays within epsilon."""
    if epsilon <= 0:
        raise ValueError("epsilon must be positive")
    hi = epsilon
    while epsilon_for_rho(hi, delta) < epsilon:
        hi *= 2
    return brentq(lambda r: epsilon_for_rho(r, delta) - epsilon, 1e-12, hi, xtol=1e-15, rtol=1e-13)


def sigma_for_epsilon(epsilon: float, delta: float, histograms: int = 1, copies: int = 1) -> float:
    """The total noise sigma that makes m histograms per patient (epsilon, delta)-DP.

    sigma = c sqrt(m / (2 rho)) with rho = rho_for_epsilon(epsilon, delta).
    """
    rho = rho_for_epsilon(epsilon, delta)
    return copies * math.sqrt(histograms / (2.0 * rho))


def distributed_gaussian_rho(sigma_i: float, honest_sites: int, histograms: int = 1, copies: int = 1) -> float:
    """zCDP of the sum of t honest discrete Gaussian shares (Kairouz, Liu & Steinke 2021, Thm 1).

    With Delta_2^2 = c^2 m and Delta_1 = c m (c copies, m histograms):
    rho = eps^2 / 2, eps = min(sqrt(Delta_2^2/(t s^2) + tau Delta_1/2), Delta_2/(sqrt(t) s) + tau sqrt(Delta_1)).
    """
    t = honest_sites
    d2sq = copies**2 * histograms
    d1 = copies * histograms
    k = np.arange(1, t, dtype=float)
    tau = 10.0 * float(np.exp(-2 * math.pi**2 * sigma_i**2 * k / (k + 1)).sum())
    eps = min(math.sqrt(d2sq / (t * sigma_i**2) + tau * d1 / 2),
              math.sqrt(d2sq) / (math.sqrt(t) * sigma_i) + tau * math.sqrt(d1))
    return eps * eps / 2


def skellam_rdp(alpha: float, sigma: float, histograms: int = 1, copies: int = 1) -> float:
    """RDP of order alpha of Skellam noise of total variance sigma^2 (Agarwal, Kairouz & Liu 2021)."""
    d2sq = copies**2 * histograms
    d1 = copies * histograms
    s2 = sigma * sigma
    return alpha * d2sq / (2 * s2) + min(((2 * alpha - 1) * d2sq + 6 * d1) / (4 * s2 * s2), 3 * d1 / (2 * s2))


@dataclass(frozen=True)
class Guarantee:
    """What one release spends, as approximate zCDP: RDP(a) <= xi + a rho for every a > 1.

    xi = 0 is plain rho-zCDP (discrete Gaussian); Skellam has xi = 3 Delta_1 / (2 sigma^2),
    the second branch of its RDP bound. (xi, rho) pairs compose by addition (Bun & Steinke
    2016, Definition 1.2 and Lemma 2.3), which is what the site's ledger sums.
    """

    mechanism: str
    sigma_total: float
    rho: float
    xi: float
    epsilon: float
    delta: float


def epsilon_for_spend(rho: float, xi: float, delta: float) -> float:
    """epsilon of (xi, rho)-approximate zCDP at delta, by the CKS 2020 Prop. 12 infimum."""
    if rho == 0 and xi == 0:
        return 0.0
    if rho == 0:
        return xi
    return epsilon_from_rdp(lambda a: xi + a * rho, delta, hint=math.sqrt(-math.log(delta) / rho))


def guarantee(mechanism: str, sigma_i: float, honest_sites: int, delta: float,
              histograms: int = 1, copies: int = 1) -> Guarantee:
    """The guarantee t honest shares of sigma_i buy (the floor may make it better than asked)."""
    sigma_total = math.sqrt(honest_sites) * sigma_i
    if mechanism == "gaussian":
        rho, xi = distributed_gaussian_rho(sigma_i, honest_sites, histograms, copies), 0.0
    elif mechanism == "skellam":
        rho = rho_for_sigma(sigma_total, histograms, copies)
        xi = 3.0 * copies * histograms / (2.0 * sigma_total**2)
    else:
        raise ValueError(f"unknown mechanism {mechanism!r}")
    return Guarantee(mechanism, sigma_total, rho, xi, epsilon_for_spend(rho, xi, delta), delta)
