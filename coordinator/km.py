"""Kaplan-Meier estimate, Greenwood standard errors, confidence limits and quantiles.

Pure functions from pooled per-bin counts to the numbers R's ``survival`` package (3.5-3)
prints for ``survfit(Surv(time, status) ~ 1)``, ``summary(fit, times = , extend = TRUE)``,
``quantile(fit)`` and the median of ``summary(fit)$table``. The arithmetic follows R's own
order of operations (a running product of fractions for S, a running sum of Greenwood
terms) so that ties in S, which decide medians, fall exactly where R finds them.

References: Kaplan & Meier (1958) JASA 53:457-481; Greenwood (1926) Reports on Public
Health and Medical Subjects 33; Kalbfleisch & Prentice (2002) The Statistical Analysis of
Failure Time Data, 2nd ed., sections 1.4 and 4.3; Klein & Moeschberger (2003) Survival
Analysis, section 4.3; Brookmeyer & Crowley (1982) Biometrics 38:29-41 (median CI);
Therneau, survival package documentation (survfit, quantile.survfit, summary.survfit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

CONF_TYPES = ("log", "log-log", "plain")

# quantile.survfit's default tolerance, and the one survmean's median uses:
# sqrt(.Machine$double.eps), as in all.equal().
R_TOLERANCE = float(np.sqrt(np.finfo(float).eps))


@dataclass(frozen=True)
class SurvivalTable:
    """One Kaplan-Meier curve; every column has one entry per reported time; NaN where R gives NA."""

    time: np.ndarray
    n_risk: np.ndarray      # int64
    n_event: np.ndarray     # int64
    n_censor: np.ndarray    # int64
    estimate: np.ndarray    # S(t)
    std_err: np.ndarray     # SE of S (S times std_err_log), as summary.survfit prints
    std_err_log: np.ndarray  # survfit()$std.err: Greenwood SE on the cumulative-hazard scale
    lower: np.ndarray
    upper: np.ndarray


@dataclass(frozen=True)
class Quantiles:
    """Times at which S (and each confidence band) crosses 1 - p; NaN where R gives NA."""

    probs: np.ndarray
    estimate: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


@dataclass(frozen=True)
class Median:
    """The median and its confidence limits as ``summary(fit)$table`` gives them."""

    estimate: float
    lower: float
    upper: float


def z_value(conf_level: float) -> float:
    """Two-sided normal quantile, qnorm(1 - (1 - conf_level) / 2) as survfit_confint forms it."""
    if not 0.0 < conf_level < 1.0:
        raise ValueError(f"conf_level must lie strictly between 0 and 1, got {conf_level}")
    return float(norm.ppf(1 - (1 - conf_level) / 2))


def confidence_limits(
    surv: np.ndarray, std_err_log: np.ndarray, conf_level: float = 0.95, conf_type: str = "log"
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise limits for S from the SE of log S, as survival's survfit_confint.

    With z = qnorm(1 - (1 - conf_level)/2) and se = SE(-log S):

    - ``log``:     S exp(-z se), min(S exp(z se), 1); NA where S = 0.
    - ``log-log``: exp(-exp(log(-log S) -+ z se / log S)); NA where S is 0 or 1
      (Kalbfleisch & Prentice 2002, eq. 1.12).
    - ``plain``:   max(S - z S se, 0), min(S + z S se, 1) (Klein & Moeschberger eq. 4.3.1).
    """
    if conf_type not in CONF_TYPES:
        raise ValueError(f"conf_type must be one of {CONF_TYPES}, got {conf_type!r}")
    z = z_value(conf_level)
    p = np.asarray(surv, dtype=float)
    se = np.asarray(std_err_log, dtype=float)
    # exp may overflow to inf for a huge SE (noisy DP counts); the cap at 1 is then the answer.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if conf_type == "plain":
            se2 = se * p * z
            return np.maximum(p - se2, 0.0), np.minimum(p + se2, 1.0)
        if conf_type == "log":
            xx = np.where(p == 0, np.nan, p)
            se2 = z * se
            return np.exp(np.log(xx) - se2), np.minimum(np.exp(np.log(xx) + se2), 1.0)
        xx = np.where((p == 0) | (p == 1), np.nan, p)
        se2 = z * se / np.log(xx)
        loglog = np.log(-np.log(xx))
        return np.exp(-np.exp(loglog - se2)), np.exp(-np.exp(loglog + se2))


def kaplan_meier(
    time: np.ndarray,
    n_event: np.ndarray,
    n_censor: np.ndarray,
    conf_level: float = 0.95,
    conf_type: str = "log",
) -> SurvivalTable:
    """Kaplan-Meier curve from event and censoring counts on an increasing time grid.

    Rows with neither an event nor a censoring are dropped, as survfit reports only observed
    times. With n_j = #{T >= t_j} (the reverse cumulative sum of events plus censorings) and
    d_j events at t_j:

        S(t) = prod_{t_j <= t} (n_j - d_j) / n_j                  (Kaplan & Meier 1958)
        Var(-log S(t)) = sum_{t_j <= t} d_j / (n_j (n_j - d_j))   (Greenwood 1926)

    S is a running product of the fractions (n_j - d_j)/n_j in the order survfitkm.c uses, so
    it equals R's double bit for bit. Where the last patients at risk all die the Greenwood
    term is infinite: R then gives std_err_log = Inf and NA for the SE of S and the limits;
    here Inf and NaN. Limits per ``confidence_limits``.
    """
    t = np.asarray(time, dtype=float)
    d_all = np.asarray(n_event)
    c_all = np.asarray(n_censor)
    if not (t.ndim == d_all.ndim == c_all.ndim == 1 and t.size == d_all.size == c_all.size):
        raise ValueError("time, n_event and n_censor must be 1-d arrays of one length")
    if np.any(np.diff(t) <= 0):
        raise ValueError("time must be strictly increasing")
    if np.any(d_all < 0) or np.any(c_all < 0):
        raise ValueError("event and censoring counts must not be negative")
    d_all = d_all.astype(np.int64)
    c_all = c_all.astype(np.int64)
    exits = d_all + c_all
    at_risk = np.cumsum(exits[::-1])[::-1]
    keep = exits > 0
    n = at_risk[keep]
    d = d_all[keep]
    nf = n.astype(float)
    df = d.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Rows without events multiply by exactly 1 and add exactly 0, as R skips them.
        fraction = np.where(d > 0, (nf - df) / nf, 1.0)
        greenwood = np.where(d > 0, df / (nf * (nf - df)), 0.0)
        surv = np.cumprod(fraction)
        se_log = np.sqrt(np.cumsum(greenwood))
        std_err = surv * se_log
    lower, upper = confidence_limits(surv, se_log, conf_level, conf_type)
    return SurvivalTable(
        time=t[keep],
        n_risk=n,
        n_event=d,
        n_censor=c_all[keep],
        estimate=surv,
        std_err=std_err,
        std_err_log=se_log,
        lower=lower,
        upper=upper,
    )


def _with_origin(table: SurvivalTable) -> SurvivalTable:
    """The curve with a row at time 0 (S = 1, SE 0, limits 1) in front, as survival's survfit0."""
    if table.time.size and table.time[0] == 0:
        return table
    n0 = table.n_risk[:1] if table.n_risk.size else np.zeros(1, dtype=np.int64)
    zero = np.zeros(1, dtype=np.int64)
    one = np.ones(1)
    return SurvivalTable(
        time=np.concatenate([[0.0], table.time]),
        n_risk=np.concatenate([n0, table.n_risk]),
        n_event=np.concatenate([zero, table.n_event]),
        n_censor=np.concatenate([zero, table.n_censor]),
        estimate=np.concatenate([one, table.estimate]),
        std_err=np.concatenate([[0.0], table.std_err]),
        std_err_log=np.concatenate([[0.0], table.std_err_log]),
        lower=np.concatenate([one, table.lower]),
        upper=np.concatenate([one, table.upper]),
    )


def km_at_times(
    table: SurvivalTable, times, conf_level: float = 0.95, conf_type: str = "log"
) -> SurvivalTable:
    """The curve read at report times, as R's ``summary(fit, times = times, extend = TRUE)``.

    Times are sorted. S, its SEs and limits are those of the last curve time <= t (S = 1 and
    SE 0 before the first); n_risk = #{T >= t}, 0 past the last time; n_event and n_censor
    count the curve's rows in (previous report time, t] (the first interval starts at 0
    inclusive). Limits are recomputed for the requested conf_type from S and SE(-log S),
    with survfit0's limits of 1 at the origin.
    """
    ptimes = np.sort(np.asarray(times, dtype=float))
    ptimes = ptimes[np.isfinite(ptimes)]
    fit = _with_origin(table)
    lower, upper = confidence_limits(fit.estimate, fit.std_err_log, conf_level, conf_type)
    if fit.time[0] == 0 and not (table.time.size and table.time[0] == 0):
        lower[0] = upper[0] = 1.0
    right = np.searchsorted(fit.time, ptimes, side="right")   # #{curve times <= t}
    left = np.searchsorted(fit.time, ptimes, side="left")     # #{curve times < t}
    row = np.maximum(right - 1, 0)
    risk_ext = np.concatenate([fit.n_risk, np.zeros(1, dtype=np.int64)])

    def interval_sums(x: np.ndarray) -> np.ndarray:
        cum = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(x)])[right]
        return np.diff(np.concatenate([np.zeros(1, dtype=np.int64), cum]))

    return SurvivalTable(
        time=ptimes,
        n_risk=risk_ext[left].astype(np.int64),
        n_event=interval_sums(fit.n_event).astype(np.int64),
        n_censor=interval_sums(fit.n_censor).astype(np.int64),
        estimate=fit.estimate[row],
        std_err=fit.std_err[row],
        std_err_log=fit.std_err_log[row],
        lower=lower[row],
        upper=upper[row],
    )


def _approx_first_at_or_above(x: np.ndarray, y: np.ndarray, xout: np.ndarray) -> np.ndarray:
    """R's ``approx(x, y, xout, method = "constant", f = 1)`` with its defaults (rule 1, ties mean).

    Pairs with NA are dropped, x is sorted, tied x collapse to the mean of their y; then each
    xout inside [min x, max x] takes the y of the first x >= xout, and NA outside.
    """
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    out = np.full(xout.shape, np.nan)
    if x.size == 0:
        return out
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    ux, inverse = np.unique(x, return_inverse=True)
    uy = np.bincount(inverse, weights=y) / np.bincount(inverse)
    inside = (xout >= ux[0]) & (xout <= ux[-1])
    k = np.searchsorted(ux, xout[inside], side="left")
    out[inside] = uy[k]
    return out


def _find_quantile(x: np.ndarray, y: np.ndarray, p: np.ndarray, tol: float) -> np.ndarray:
    """Where the step function y (a CDF, 1 - S) first reaches p, as quantile.survfit's findq.

    When y equals p within tol over an interval the answer is that interval's midpoint (the
    midpoint rule for the median; Brookmeyer & Crowley 1982); a flat at p that lasts to the end
    of follow-up gives the midpoint of its start and the last time; p = 0 gives x[0].
    """
    if np.all(np.isnan(y)) or np.nanmax(y) < p.min():
        return np.full(p.shape, np.nan)
    xmax = x[-1]
    # duplicated(): keep the first of equal y values (censoring rows), NA equal to NA.
    key = np.where(np.isnan(y), np.inf, y)
    _, first = np.unique(key, return_index=True)
    first = np.sort(first)
    x, y = x[first], y[first]
    index = np.arange(1, y.size + 1, dtype=float)
    i1 = _approx_first_at_or_above(y + tol, index, p)
    i2 = _approx_first_at_or_above(y - tol, index, p)

    def pick(i: np.ndarray) -> np.ndarray:
        # R truncates a fractional subscript (possible after tied x were averaged).
        got = np.full(i.shape, np.nan)
        ok = ~np.isnan(i)
        got[ok] = x[np.trunc(i[ok]).astype(np.int64) - 1]
        return got

    quant = (pick(i1) + pick(i2)) / 2
    quant[p == 0] = x[0]
    if not np.isnan(y[-1]):
        last = np.abs(p - y[-1]) < tol
        quant[last] = (pick(i1[last]) + xmax) / 2
    return quant


def km_quantiles(
    table: SurvivalTable,
    probs=(0.25, 0.5, 0.75),
    conf_level: float = 0.95,
    conf_type: str = "log",
) -> Quantiles:
    """Quantiles of the survival time with confidence limits, as R's ``quantile.survfit``.

    The p-quantile is the first time at which 1 - S(t) >= p, comparing within
    sqrt(.Machine$double.eps); where 1 - S equals p over an interval it is the interval's
    midpoint. The limits are the same rule applied to the pointwise confidence bands
    (lower from the lower band of S, upper from the upper band; Brookmeyer & Crowley 1982).
    The curve starts at time 0 with 1 - S = 0.
    """
    p = np.asarray(probs, dtype=float)
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("probabilities must lie in [0, 1]")
    lower, upper = confidence_limits(table.estimate, table.std_err_log, conf_level, conf_type)
    x = np.concatenate([[0.0], table.time])

    def cdf(s: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], 1 - s])

    return Quantiles(
        probs=p,
        estimate=_find_quantile(x, cdf(table.estimate), p, R_TOLERANCE),
        lower=_find_quantile(x, cdf(lower), p, R_TOLERANCE),
        upper=_find_quantile(x, cdf(upper), p, R_TOLERANCE),
    )


def _first_below_half(y: np.ndarray, x: np.ndarray) -> float:
    """survmean's rule: the first time y < 0.5 + tol; the midpoint to the next drop if y == 0.5."""
    keep = ~np.isnan(y) & (y < 0.5 + R_TOLERANCE)
    if not keep.any():
        return float("nan")
    x, y = x[keep], y[keep]
    below = np.flatnonzero(y < y[0])
    if abs(y[0] - 0.5) < R_TOLERANCE and below.size:
        return float((x[0] + x[below[0]]) / 2)
    return float(x[0])


def km_median(table: SurvivalTable, conf_level: float = 0.95, conf_type: str = "log") -> Median:
    """Median survival with confidence limits, as ``summary(fit)$table`` (survival's survmean).

    On the curve with an origin row (S = 1 at time 0): the first time S < 0.5 + tol
    (tol = sqrt(.Machine$double.eps)); if S equals 0.5 there (within tol) and drops later, the
    midpoint of that time and the next drop. The limits apply the rule to the upper and lower
    bands. Unlike ``km_quantiles`` a flat at 0.5 to the end of follow-up gives its start, not a
    midpoint with the last time, and a band that rises again is not revisited; R's print and
    summary report these values.
    """
    fit = _with_origin(table)
    lower, upper = confidence_limits(fit.estimate, fit.std_err_log, conf_level, conf_type)
    if not (table.time.size and table.time[0] == 0):
        lower[0] = upper[0] = 1.0
    return Median(
        estimate=_first_below_half(fit.estimate, fit.time),
        lower=_first_below_half(lower, fit.time),
        upper=_first_below_half(upper, fit.time),
    )
