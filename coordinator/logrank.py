"""The k-sample log-rank test and its G-rho weighted form, stratified or not, as R's survdiff.

Pure functions from pooled per-bin counts (events and numbers at risk per group) to the
numbers ``survdiff(Surv(time, status) ~ group + strata(s), rho = rho)`` of R's ``survival``
package (3.5-3) gives on the pooled rows.

References: Mantel (1966) Cancer Chemother Rep 50:163-170; Peto & Peto (1972) J R Statist
Soc A 135:185-207; Harrington & Fleming (1982) Biometrika 69:553-566 (the G-rho family);
Kalbfleisch & Prentice (2002) The Statistical Analysis of Failure Time Data, 2nd ed.,
section 7.2; Therneau, survival package documentation (survdiff).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2


@dataclass(frozen=True)
class LogrankResult:
    """survdiff's test: per-group (weighted) observed and expected events, their variance."""

    chisq: float
    df: int
    p: float
    observed: np.ndarray   # (G,), summed over strata
    expected: np.ndarray   # (G,)
    var: np.ndarray        # (G, G)
    n: np.ndarray          # (G,) patients per group, summed over strata


def logrank_test(n_event, n_risk, rho: float = 0.0) -> LogrankResult:
    """Stratified k-sample log-rank (rho = 0) or Peto-Peto / Harrington-Fleming G-rho test.

    ``n_event`` and ``n_risk`` have shape (S, G, m): strata x groups x time bins, with
    n_risk[s, g, j] = #{T >= t_j} in group g of stratum s. Within each stratum, at each bin
    with d = sum_g d_g events among n = sum_g n_g at risk, and weight w = S(t-)^rho, the
    left-continuous Kaplan-Meier estimate of the stratum's pooled survival:
      O_g   += w d_g
      E_g   += w d n_g / n
      V_gh  += w^2 d (n - d) / (n - 1) * (n_g / n) ([g = h] - n_h / n)     (n > 1)
    and O, E, V are summed over strata (Kalbfleisch & Prentice 2002, section 7.2;
    Harrington & Fleming 1982). As survdiff: groups with E = 0 are left out, df is the
    number left minus 1, and chisq = (O - E)' V^-1 (O - E) over the remaining groups but
    the first, by solving V (the full V has rank G - 1); a Moore-Penrose inverse is used
    only where that matrix is singular, where R stops with an error. p is the upper tail of
    chi-square with df degrees of freedom (NaN when df = 0: there is no test).
    """
    d = np.asarray(n_event)
    r = np.asarray(n_risk)
    if d.ndim != 3 or d.shape != r.shape:
        raise ValueError(f"n_event and n_risk must have the same shape (S, G, m), not {d.shape} and {r.shape}")
    if np.any(d < 0) or np.any(r < d):
        raise ValueError("counts must not be negative and events cannot exceed the number at risk")
    d = d.astype(float)
    r = r.astype(float)
    n_strata, n_groups, _ = d.shape
    dead = d.sum(axis=1)                     # (S, m)
    at_risk = r.sum(axis=1)                  # (S, m)
    live = at_risk > 0
    safe_n = np.where(live, at_risk, 1.0)
    if rho != 0:
        # survdiff2.c's left-continuous Kaplan-Meier of the stratum, all groups pooled.
        factor = np.where(live, (safe_n - dead) / safe_n, 1.0)
        km = np.cumprod(factor, axis=1)
        km_prev = np.concatenate((np.ones((n_strata, 1)), km[:, :-1]), axis=1)
        weight = km_prev ** rho
    else:
        weight = np.ones_like(dead)
    observed = np.einsum("sm,sgm->g", weight, d)
    share = r / safe_n[:, None, :]           # n_g / n
    expected = np.einsum("sm,sm,sgm->g", weight, dead, share)
    with np.errstate(divide="ignore", invalid="ignore"):
        hyper = np.where(at_risk > 1, weight ** 2 * dead * (at_risk - dead) / (at_risk - 1.0), 0.0)
    var = (np.diag(np.einsum("sm,sgm->g", hyper, share))
           - np.einsum("sm,sgm,shm->gh", hyper, share, share))
    n = r.max(axis=2).sum(axis=0).astype(np.int64)
    used = expected > 0
    df = int(used.sum()) - 1
    if df < 1:
        return LogrankResult(0.0, max(df, 0), float("nan"), observed, expected, var, n)
    idx = np.flatnonzero(used)[1:]
    diff = (observed - expected)[idx]
    sub = var[np.ix_(idx, idx)]
    try:
        solved = np.linalg.solve(sub, diff)
    except np.linalg.LinAlgError:
        solved = np.linalg.pinv(sub) @ diff
    chisq = float(np.sum(solved * diff))
    return LogrankResult(chisq, df, float(chi2.sf(chisq, df)), observed, expected, var, n)
