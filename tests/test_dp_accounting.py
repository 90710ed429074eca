"""zCDP accounting against published values, closed forms and composition."""

from __future__ import annotations

import math

import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from protocol.dp_accounting import (
    compose,
    delta_for_rho,
    distributed_gaussian_rho,
    epsilon_bun_steinke,
    epsilon_for_rho,
    epsilon_for_spend,
    guarantee,
    rho_for_epsilon,
    rho_for_sigma,
    sigma_for_epsilon,
)

DELTA = 1e-6


@pytest.mark.parametrize("epsilon,sigma", [(1, 4.53), (3, 1.64), (10, 0.57)])
def test_published_sigma_values(epsilon, sigma):
    # issue 9: "Measured for delta = 1e-6: eps = 1 needs sigma ~ 4.53, eps = 3 sigma ~ 1.64, eps = 10 sigma ~ 0.57"
    assert sigma_for_epsilon(epsilon, DELTA) == pytest.approx(sigma, abs=0.01)


def test_rho_closed_form():
    assert rho_for_sigma(2.0) == 1 / 8
    assert rho_for_sigma(2.0, histograms=3) == 3 / 8
    # a patient counted at two sites: Delta_2 doubles, rho quadruples
    assert rho_for_sigma(2.0, histograms=3, copies=2) == 12 / 8


def test_m_histograms_scale_sigma_by_sqrt_m():
    s1 = sigma_for_epsilon(1, DELTA)
    assert sigma_for_epsilon(1, DELTA, histograms=4) == pytest.approx(2 * s1, rel=1e-12)
    assert sigma_for_epsilon(1, DELTA, copies=2) == pytest.approx(2 * s1, rel=1e-12)


def test_conversion_is_the_inverse_of_itself():
    for rho in (1e-3, 0.0243, 0.5, 3.0):
        eps = epsilon_for_rho(rho, DELTA)
        assert delta_for_rho(rho, eps) == pytest.approx(DELTA, rel=1e-6)
        assert epsilon_for_rho(rho_for_epsilon(eps, DELTA), DELTA) == pytest.approx(eps, rel=1e-9)


def test_conversion_between_optimal_and_bun_steinke():
    # no conversion can beat the exact privacy profile of the Gaussian mechanism (Balle & Wang
    # 2018, Theorem 8): delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2), mu = 1/sigma
    for sigma in (0.57, 1.64, 4.53, 20.0):
        mu = 1 / sigma
        exact = brentq(lambda e: norm.cdf(-e / mu + mu / 2) - math.exp(e) * norm.cdf(-e / mu - mu / 2) - DELTA,
                       1e-9, 200)
        ours = epsilon_for_rho(rho_for_sigma(sigma), DELTA)
        assert exact < ours < epsilon_bun_steinke(rho_for_sigma(sigma), DELTA)


def test_against_opendp_conversion():
    # test-only cross-check: OpenDP 0.16's zCDP -> approximate-DP profile
    dp = pytest.importorskip("opendp.prelude")
    dp.enable_features("contrib")
    for sigma in (0.57, 1.64, 4.53):
        meas = dp.m.make_gaussian(dp.vector_domain(dp.atom_domain(T=int)), dp.l2_distance(T=int), scale=sigma)
        profile = dp.c.make_zCDP_to_approxDP(meas).map(1)
        assert epsilon_for_rho(rho_for_sigma(sigma), DELTA) == pytest.approx(profile.epsilon(DELTA), rel=1e-9)


def test_composition_over_many_queries():
    # k releases at sigma compose to one release at sigma / sqrt(k): rho adds
    sigma = 4.53
    for k in (1, 2, 10, 100):
        total = compose([rho_for_sigma(sigma)] * k)
        assert total == pytest.approx(k / (2 * sigma**2), rel=1e-12)
        assert epsilon_for_rho(total, DELTA) == pytest.approx(
            epsilon_for_rho(rho_for_sigma(sigma / math.sqrt(k)), DELTA), rel=1e-12)
    # ten queries at epsilon = 1 each cost far less than 10 (advanced composition through zCDP)
    ten = epsilon_for_rho(compose([rho_for_epsilon(1, DELTA)] * 10), DELTA)
    assert 3.0 < ten < 5.0
    # and stay within the Bun-Steinke closed form of the summed rho
    assert ten < epsilon_bun_steinke(10 * rho_for_epsilon(1, DELTA), DELTA)


def test_distributed_gaussian_matches_central_above_the_floor():
    # t shares of sigma / sqrt(t) cost what one share of sigma costs, up to tau ~ 1e-9
    sigma = 4.53
    for t in (1, 3, 10):
        rho = distributed_gaussian_rho(sigma / math.sqrt(t), t)
        assert rho == pytest.approx(rho_for_sigma(sigma), rel=1e-6)
    # far below the floor the sum is far from Gaussian and costs much more
    assert distributed_gaussian_rho(0.3, 10) > 2 * rho_for_sigma(0.3 * math.sqrt(10))


def test_guarantee_of_the_floor():
    g = guarantee("gaussian", 1.5, 3, DELTA)
    assert g.sigma_total == pytest.approx(1.5 * math.sqrt(3))
    assert g.epsilon < 3  # the floor buys more privacy than the eps = 3 that asked for sigma 1.64
    sk = guarantee("skellam", 1.64 / math.sqrt(3), 3, DELTA)
    assert sk.xi == pytest.approx(3 / (2 * 1.64**2))
    assert sk.epsilon == pytest.approx(epsilon_for_spend(sk.rho, sk.xi, DELTA))
    assert sk.epsilon > 3  # Skellam's extra term costs something at small sigma
