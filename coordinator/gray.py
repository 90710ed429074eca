"""Gray's k-sample test for the cumulative incidence of each cause, as cmprsk::cuminc.

A pure function from pooled per-bin counts (strata x groups x bins x outcome) to the tests
``cmprsk::cuminc(ftime, fstatus, group, strata, rho)$Tests`` (cmprsk 2.2-11) reports on the
pooled rows, one per cause.

Reference: Gray (1988) "A class of K-sample tests for comparing the cumulative incidence of
a competing risk", Ann Statist 16:1141-1154 (score, section 2; variance estimator,
section 3). The formulas below restate that paper in the notation of its estimator; the
order in which the terms are accumulated follows cmprsk so the numbers agree with R.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

# R's qr() (LINPACK dqrdc2) treats a column as dependent below this relative norm;
# cuminc computes the statistic only if the variance matrix has full rank by that rule.
QR_TOLERANCE = 1e-7


@dataclass(frozen=True)
class GrayTest:
    """Gray's test for one cause: chi-square statistic, p-value, degrees of freedom."""

    cause: int
    stat: float
    p: float
    df: int


def stratum_score(d1: np.ndarray, d2: np.ndarray, at_risk: np.ndarray,
                   rho: float) -> tuple[np.ndarray, np.ndarray]:
    """Gray's score for every group and its (G, G) variance matrix, in one stratum.

    d1, d2, at_risk: (T, G) at the T times of the stratum with an event of any cause:
    events of the cause, events of other causes, numbers at risk. With, per group g,
    S_g(t-) the all-cause Kaplan-Meier and F_g(t-) the incidence of the cause just before t,
    R_g = n_g (1 - F_g(t-)) / S_g(t-), h_g = n_g / S_g(t-), and the pooled incidence under
    the null hypothesis F(t) = F(t-) + d1 / sum_g h_g, the score with weight
    W = (1 - F(t-))^rho is (Gray 1988, eq. 2.3)
      z_g = sum_t W (d1_g - d1 R_g / sum_r R_r).
    Its variance (Gray 1988, section 3) sums, over the event times and groups k, squared
    combinations of a_gk = W (h_g [g = k] - h_g h_k / sum_r h_r) and of
    c_gk(t) = sum_{u <= t} a_gk(u) d1(u) / (sum_r h_r (u) (1 - F(u-))):
      events of the cause, for groups k at risk:  q = t5 S_k(t-) d1 / (sum_r h_r n_k),
        t4 = 1 - (1 - F(t)) / S_k(t) (1 if S_k(t) = 0), t5 = 1 - (d1 - 1)/(S_k(t-) sum_r h_r - 1);
        v3_k += t4^2 q, v2_gk += (a_gk - t4 c_gk) t4 q, V_gh += (a_gk - t4 c_gk)(a_hk - t4 c_hk) q;
      events of other causes in group k (S_k(t) > 0):  q = t5 S_k(t-)^2 d2_k / n_k^2,
        t4 = (1 - F(t)) / S_k(t), t5 = 1 - (d2_k - 1)/(n_k - 1);
        v3_k += t4^2 q, v2_gk -= t4^2 c_gk q, V_gh += t4^2 c_gk c_hk q;
    and finally V_gh += sum_k c_gk c_hk v3_k + c_gk v2_hk + c_hk v2_gk with c at the last time.
    """
    n_times, n_groups = d1.shape
    total_d1 = d1.sum(axis=1)
    live = at_risk > 0
    safe_n = np.where(live, at_risk, 1.0)
    # Per-group all-cause Kaplan-Meier and incidence, left and right continuous; a group
    # whose risk set is empty keeps its last values.
    km = np.cumprod(np.where(live, (safe_n - d1 - d2) / safe_n, 1.0), axis=0)
    km_prev = np.vstack((np.ones((1, n_groups)), km[:-1]))
    inc = np.cumsum(np.where(live, km_prev * d1 / safe_n, 0.0), axis=0)
    inc_prev = np.vstack((np.zeros((1, n_groups)), inc[:-1]))
    # A group at risk has S_g(t-) > 0; the others only need a harmless denominator.
    safe_km = np.where(live, km_prev, 1.0)
    h = np.where(live, at_risk / safe_km, 0.0)
    h_sum = h.sum(axis=1)
    r_sum = np.where(live, at_risk * (1.0 - inc_prev) / safe_km, 0.0).sum(axis=1)
    pooled = np.cumsum(total_d1 / h_sum)
    pooled_prev = np.concatenate(([0.0], pooled[:-1]))
    weight = (1.0 - pooled_prev) ** rho
    score = np.sum(weight[:, None] * np.where(
        live, d1 - total_d1[:, None] * at_risk * (1.0 - inc_prev) / (safe_km * r_sum[:, None]), 0.0), axis=0)

    a = weight[:, None, None] * (np.einsum("tg,gk->tgk", h, np.eye(n_groups))
                                 - h[:, :, None] * h[:, None, :] / h_sum[:, None, None])
    c = np.cumsum(a * (total_d1 / (h_sum * (1.0 - pooled_prev)))[:, None, None], axis=0)

    # Events of the cause, for every group k at risk.
    with np.errstate(divide="ignore", invalid="ignore"):
        t4 = np.where(km > 0, 1.0 - (1.0 - pooled[:, None]) / np.where(km > 0, km, 1.0), 1.0)
        t5 = np.where(total_d1[:, None] > 1,
                      1.0 - (total_d1[:, None] - 1.0) / (h_sum[:, None] * km_prev - 1.0), 1.0)
        q1 = np.where(live & (total_d1[:, None] > 0),
                      t5 * km_prev * total_d1[:, None] / (h_sum[:, None] * safe_n), 0.0)
        # Events of other causes in group k.
        t4o = np.where(km > 0, (1.0 - pooled[:, None]) / np.where(km > 0, km, 1.0), 0.0)
        n_minus_1 = np.where(at_risk > 1, at_risk - 1.0, 1.0)
        t5o = np.where(d2 > 1, 1.0 - (d2 - 1.0) / n_minus_1, 1.0)
        q2 = np.where((km > 0) & (d2 > 0), t5o * km_prev ** 2 * d2 / safe_n ** 2, 0.0)
    b = a - t4[:, None, :] * c                           # (T, G, K): a_gk - t4_k c_gk
    v3 = np.sum(t4 ** 2 * q1 + t4o ** 2 * q2, axis=0)
    v2 = np.sum(b * (t4 * q1)[:, None, :] - c * (t4o ** 2 * q2)[:, None, :], axis=0)
    var = (np.einsum("tgk,thk,tk->gh", b, b, q1)
           + np.einsum("tgk,thk,tk->gh", c, c, t4o ** 2 * q2))
    c_end = c[-1]
    var += (c_end * v3[None, :]) @ c_end.T + c_end @ v2.T + v2 @ c_end.T
    return score, var


def full_rank(matrix: np.ndarray) -> bool:
    """Whether R's qr() finds full rank: no column's residual norm, after projecting out the
    columns before it, falls below QR_TOLERANCE times its own norm (dqrdc2's rule)."""
    kept: list[np.ndarray] = []
    for col in matrix.T:
        norm0 = np.linalg.norm(col)
        resid = col.copy()
        for q in kept:
            resid -= (q @ resid) * q
        norm1 = np.linalg.norm(resid)
        if norm0 == 0 or norm1 < QR_TOLERANCE * norm0:
            return False
        kept.append(resid / norm1)
    return True


def gray_test(time, counts, rho: float = 0.0) -> tuple[GrayTest, ...]:
    """Gray's (1988) k-sample test of equal cumulative incidence, one per cause 1..K.

    ``counts`` is int64 (S, G, m, 1 + K): strata x groups x bins x outcome (0 censored,
    k cause k) on the grid ``time``. For each cause, the score z and variance V of every
    stratum (stratum_score) are summed over strata; as cuminc does, groups with no patient
    at all are left out, the last of the remaining G groups is dropped, and
      stat = z' V^-1 z  ~  chi-square with G - 1 degrees of freedom,  p = 1 - F(stat).
    Where V is singular by R's QR rule (for example a cause with no event), cuminc reports
    stat = -1; here stat and p are NaN (no test).
    """
    counts = np.asarray(counts)
    time = np.asarray(time, dtype=float)
    if counts.ndim != 4 or counts.shape[2] != time.shape[0] or counts.shape[3] < 2:
        raise ValueError(f"counts must have shape (S, G, len(time), 1 + K), not {counts.shape}")
    if np.any(counts < 0):
        raise ValueError("counts must not be negative")
    present = counts.sum(axis=(0, 2, 3)) > 0
    counts = counts[:, present].astype(float)
    n_groups = counts.shape[1]
    n_causes = counts.shape[3] - 1
    df = n_groups - 1
    if df < 1:
        raise ValueError("Gray's test needs patients in at least two groups")
    totals = counts.sum(axis=3)                                  # (S, G, m)
    at_risk = np.cumsum(totals[:, :, ::-1], axis=2)[:, :, ::-1]
    events = counts[..., 1:].sum(axis=3)                         # (S, G, m)
    tests = []
    for cause in range(1, n_causes + 1):
        score = np.zeros(n_groups)
        var = np.zeros((n_groups, n_groups))
        for s in range(counts.shape[0]):
            rows = events[s].sum(axis=0) > 0
            if not rows.any():
                continue
            d1 = counts[s][:, rows, cause].T                     # (T, G)
            d2 = events[s][:, rows].T - d1
            z, v = stratum_score(d1, d2, at_risk[s][:, rows].T, rho)
            score += z
            var += v
        z, v = score[:-1], var[:-1, :-1]
        if full_rank(v):
            stat = float(z @ np.linalg.solve(v, z))
            tests.append(GrayTest(cause, stat, float(1.0 - chi2.cdf(stat, df)), df))
        else:
            tests.append(GrayTest(cause, float("nan"), float("nan"), df))
    return tuple(tests)
