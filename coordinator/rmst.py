"""Restricted mean survival time from a Kaplan-Meier curve, and its comparison between groups.

References: Royston & Parmar (2013) BMC Med Res Methodol 13:152; Miller (1981) Survival
Analysis, pp. 195-196 (variance of the restricted mean); Therneau, survival package
(summary.survfit with ``rmean``); Uno et al. (2014) J Clin Oncol 32:2380-2385 and the
survRM2 package (unadjusted two-sample contrasts of RMST).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from coordinator.km import SurvivalTable, z_value


def rmst(table: SurvivalTable, tau: float) -> tuple[float, float]:
    """RMST up to tau and its SE, as ``summary(survfit(...), rmean = tau)$table`` (survmean).

    With curve times t_1 < ... < t_m <= tau, t_0 = 0 and S(t_0) = 1:

        RMST(tau) = sum_{i=0}^{m} (t_{i+1} - t_i) S(t_i),  with t_{m+1} = tau
        Var       = sum_{j=1}^{m} A_j^2 d_j / (n_j (n_j - d_j)),  A_j = integral_{t_j}^{tau} S(u) du

    the Greenwood-type variance of the area (Miller 1981), with the term of a time where
    n_j = d_j set to 0 as R does. R refuses a tau before the curve's first time (event or
    censoring); then (nan, nan).
    """
    tau = float(tau)
    if table.time.size == 0 or tau < table.time[0] or not np.isfinite(tau):
        return float("nan"), float("nan")
    # The origin row (time 0, S = 1) that survfit0 adds contributes a rectangle of width 0.
    keep = table.time <= tau
    time = np.concatenate([[0.0], table.time[keep], [tau]])
    surv = np.concatenate([[1.0], table.estimate[keep]])
    n = table.n_risk[keep].astype(float)
    d = table.n_event[keep].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        hazard_term = np.where(n - d == 0, 0.0, d / (n * (n - d)))
    rectangles = np.diff(time) * surv
    # Area from each curve time to tau: reverse cumulative sum of the rectangles after it.
    area_after = np.cumsum(rectangles[::-1])[::-1][1:]
    variance = float(np.sum(area_after**2 * hazard_term))
    return float(np.sum(rectangles)), float(np.sqrt(variance))


@dataclass(frozen=True)
class RmstContrast:
    """``group`` against ``reference``: difference and ratio of RMST (and of RMTL if tau is known)."""

    group: str
    reference: str
    difference: float
    difference_std_err: float
    difference_lower: float
    difference_upper: float
    difference_p: float
    ratio: float
    ratio_log_std_err: float
    ratio_lower: float
    ratio_upper: float
    ratio_p: float
    rmtl_ratio: float | None = None
    rmtl_ratio_lower: float | None = None
    rmtl_ratio_upper: float | None = None
    rmtl_ratio_p: float | None = None


@dataclass(frozen=True)
class RmstComparison:
    """Each group's RMST with its confidence interval, and every pairwise contrast."""

    labels: tuple[str, ...]
    estimate: np.ndarray
    std_err: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    conf_level: float
    contrasts: tuple[RmstContrast, ...]

    def to_dict(self) -> dict:
        """Plain Python values for results.json (NaN stays NaN; the caller maps it to null)."""
        groups = {
            lab: {"estimate": float(e), "std_err": float(s), "lower": float(lo), "upper": float(hi)}
            for lab, e, s, lo, hi in zip(self.labels, self.estimate, self.std_err, self.lower, self.upper)
        }
        contrasts = []
        for c in self.contrasts:
            entry = {
                "group": c.group,
                "reference": c.reference,
                "difference": {"estimate": c.difference, "std_err": c.difference_std_err,
                               "lower": c.difference_lower, "upper": c.difference_upper, "p": c.difference_p},
                "ratio": {"estimate": c.ratio, "log_std_err": c.ratio_log_std_err,
                          "lower": c.ratio_lower, "upper": c.ratio_upper, "p": c.ratio_p},
            }
            if c.rmtl_ratio is not None:
                entry["rmtl_ratio"] = {"estimate": c.rmtl_ratio, "lower": c.rmtl_ratio_lower,
                                       "upper": c.rmtl_ratio_upper, "p": c.rmtl_ratio_p}
            contrasts.append(entry)
        return {"conf_level": self.conf_level, "groups": groups, "contrasts": contrasts}


def _two_sided_p(z: float) -> float:
    return float(2 * norm.sf(abs(z)))


def compare_rmst(
    labels,
    estimates,
    std_errs,
    conf_level: float = 0.95,
    tau: float | None = None,
) -> RmstComparison:
    """Unadjusted RMST contrasts between independent groups, as survRM2's ``rmst2``.

    Per group: mu_g +- z se_g. For each pair (labels[j] against an earlier labels[i]):

        difference  D = mu_j - mu_i,  se(D) = sqrt(se_j^2 + se_i^2),  CI D +- z se(D)
        ratio       R = mu_j / mu_i,  se(log R) = sqrt(se_j^2/mu_j^2 + se_i^2/mu_i^2)
                    (delta method),   CI exp(log R +- z se(log R))

    with two-sided normal p-values 2 (1 - Phi(|D| / se(D))) and 2 (1 - Phi(|log R| / se(log R))).
    If tau is given, the ratio of restricted mean time lost (tau - mu) likewise, with
    se(log RMTL ratio) = sqrt(se_j^2/(tau - mu_j)^2 + se_i^2/(tau - mu_i)^2). Groups are
    independent (disjoint patients), so their variances add (Royston & Parmar 2013).
    """
    labels = tuple(str(x) for x in labels)
    mu = np.asarray(estimates, dtype=float)
    se = np.asarray(std_errs, dtype=float)
    if not (len(labels) == mu.size == se.size):
        raise ValueError("labels, estimates and std_errs must have one length")
    if len(set(labels)) != len(labels):
        raise ValueError("group labels must be distinct")
    z = z_value(conf_level)
    contrasts = []
    for i, j in itertools.combinations(range(len(labels)), 2):
        diff = mu[j] - mu[i]
        diff_se = float(np.sqrt(se[j] ** 2 + se[i] ** 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            log_ratio = float(np.log(mu[j]) - np.log(mu[i]))
            log_ratio_se = float(np.sqrt(se[j] ** 2 / mu[j] ** 2 + se[i] ** 2 / mu[i] ** 2))
        extra = {}
        if tau is not None:
            lost_j, lost_i = tau - mu[j], tau - mu[i]
            with np.errstate(divide="ignore", invalid="ignore"):
                log_lost = float(np.log(lost_j) - np.log(lost_i))
                log_lost_se = float(np.sqrt(se[j] ** 2 / lost_j**2 + se[i] ** 2 / lost_i**2))
            extra = dict(
                rmtl_ratio=float(np.exp(log_lost)),
                rmtl_ratio_lower=float(np.exp(log_lost - z * log_lost_se)),
                rmtl_ratio_upper=float(np.exp(log_lost + z * log_lost_se)),
                rmtl_ratio_p=_two_sided_p(log_lost / log_lost_se),
            )
        contrasts.append(RmstContrast(
            group=labels[j],
            reference=labels[i],
            difference=float(diff),
            difference_std_err=diff_se,
            difference_lower=float(diff - z * diff_se),
            difference_upper=float(diff + z * diff_se),
            difference_p=_two_sided_p(diff / diff_se),
            ratio=float(np.exp(log_ratio)),
            ratio_log_std_err=log_ratio_se,
            ratio_lower=float(np.exp(log_ratio - z * log_ratio_se)),
            ratio_upper=float(np.exp(log_ratio + z * log_ratio_se)),
            ratio_p=_two_sided_p(log_ratio / log_ratio_se),
            **extra,
        ))
    return RmstComparison(
        labels=labels,
        estimate=mu,
        std_err=se,
        lower=mu - z * se,
        upper=mu + z * se,
        conf_level=conf_level,
        contrasts=tuple(contrasts),
    )
