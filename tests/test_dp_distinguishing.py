"""An empirical distinguishing attack on the noisy histogram stays within what (epsilon, delta) allow.

Two neighbouring cohorts differ by one patient, who lands in one cell of the histogram. Each
run releases the histogram with the distributed noise: three participants, one of them
colluding with the attacker (so its share is known and subtracted), the two honest sites
each adding N_Z(0, sigma^2 / 2) for sigma = sigma_for_epsilon(1, 1e-6). The differing cell is
the attacker's sufficient statistic (every other cell has the same law under both cohorts),
so the best tests are thresholds on it. For every threshold tau and both directions, DP
requires P_1(A) <= e^eps P_0(A) + delta; we check it with a 5-standard-error allowance for the
sampling error of the two frequencies (about 60 thresholds: a false failure has probability
below 1e-5), and the attack's advantage against the (e^eps - 1 + 2 delta)/(e^eps + 1) bound
(Kairouz, Oh & Viswanath 2015). A release with too little noise fails the same check.
"""

from __future__ import annotations

import math

import numpy as np

from protocol.dp_accounting import sigma_for_epsilon
from protocol.dp_sampler import NoiseShare, noise_share, rational_variance

EPSILON, DELTA = 1.0, 1e-6
RUNS = 40_000
CELLS = np.array([12, 7, 3, 0, 5])  # cohort D0; D1 adds one patient to cell 2


def releases(share: NoiseShare, honest: int, cohort: np.ndarray) -> np.ndarray:
    """RUNS noisy releases of the cohort's histogram: the honest shares' noise summed."""
    noise = share.sample(RUNS * honest * cohort.size).reshape(RUNS, honest, cohort.size).sum(axis=1)
    return cohort[None] + noise


def violations(x0: np.ndarray, x1: np.ndarray, epsilon: float, delta: float, z: float = 5.0) -> tuple[list, float]:
    """Threshold events whose frequencies break P_a(A) <= e^eps P_b(A) + delta beyond z SEs; best advantage."""
    e = math.exp(epsilon)
    bad, advantage = [], 0.0
    for tau in range(int(min(x0.min(), x1.min())), int(max(x0.max(), x1.max())) + 2):
        for a_name, a, b in (("D1", x1, x0), ("D0", x0, x1)):
            for event in ("ge", "lt"):
                pa = float(np.mean(a >= tau if event == "ge" else a < tau))
                pb = float(np.mean(b >= tau if event == "ge" else b < tau))
                advantage = max(advantage, pa - pb)
                se = math.sqrt(pa * (1 - pa) / a.size + e * e * pb * (1 - pb) / b.size)
                if pa > e * pb + delta + z * se + 1.0 / a.size:
                    bad.append((a_name, event, tau, pa, pb))
    return bad, advantage


def test_threshold_attack_within_the_dp_bound():
    participants, colluding = 3, 1
    sigma = sigma_for_epsilon(EPSILON, DELTA)
    share = noise_share(sigma, participants - colluding)
    assert share.mechanism == "gaussian" and share.sigma >= sigma / math.sqrt(2)
    d1 = CELLS.copy()
    d1[2] += 1
    x0 = releases(share, participants - colluding, CELLS)[:, 2]
    x1 = releases(share, participants - colluding, d1)[:, 2]
    bad, advantage = violations(x0, x1, EPSILON, DELTA)
    assert bad == []
    bound = (math.exp(EPSILON) - 1 + 2 * DELTA) / (math.exp(EPSILON) + 1)
    assert advantage < bound
    # and the attack does see the patient a little: the advantage of N_Z(0, sigma^2) shifted by
    # one is about 2 Phi(1 / (2 sigma)) - 1 = 0.088 at sigma = 4.53
    assert 0.04 < advantage < 0.14


def test_too_little_noise_is_caught():
    # the same attack against a release claiming epsilon = 1 with sigma = 0.6 (floor ignored):
    # the check has power
    weak = NoiseShare("gaussian", rational_variance(0.6))
    d1 = CELLS.copy()
    d1[2] += 1
    x0 = releases(weak, 1, CELLS)[:, 2]
    x1 = releases(weak, 1, d1)[:, 2]
    bad, advantage = violations(x0, x1, EPSILON, DELTA)
    assert bad
    assert advantage > (math.exp(EPSILON) - 1) / (math.exp(EPSILON) + 1)
