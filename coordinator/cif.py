"""Cumulative incidence with competing risks (Aalen-Johansen), its variances and limits.

Pure functions from pooled per-bin counts to the numbers R gives on the pooled rows:
``survfit(Surv(time, factor(event)) ~ 1)`` of R's ``survival`` package (3.5-3, multi-state
curves with the infinitesimal-jackknife standard error, ``summary(fit, times =, extend =
TRUE)``) and, as an option, the variance of ``cmprsk::cuminc`` (2.2-11).

Every patient starts in the event-free state at time 0 and leaves it once, censored or by
one of K causes, so all patients who leave in the same bin with the same outcome have the
same influence on every estimate. The per-patient sums of squares R forms therefore reduce
to sums over (bin, outcome) cells weighted by their counts, which is what makes the
jackknife variance computable from tallies alone.

References: Aalen & Johansen (1978) Scand J Statist 5:141-150; Gray (1988) Ann Statist
16:1141-1154 (and Aalen (1978) for the variance cuminc uses); Therneau, Crowson & Atkinson,
"Multi-state models and competing risks" (survival vignette) and Therneau, "The survival
package: methods" (survfit influence / infinitesimal jackknife), survival package
documentation for survfit_confint and summary.survfit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

CONF_TYPES = ("log", "log-log", "plain")
VARIANCES = ("ij", "gray")


@dataclass(frozen=True)
class IncidenceTable:
    """The cumulative incidence of one cause; one entry per reported time; NaN where R gives NA."""

    cause: int
    time: np.ndarray
    n_risk: np.ndarray      # int64, #{T >= t}
    n_event: np.ndarray     # int64, events of this cause
    n_censor: np.ndarray    # int64
    estimate: np.ndarray
    std_err: np.ndarray     # standard error of the incidence itself
    lower: np.ndarray
    upper: np.ndarray


def confidence_limits(estimate: np.ndarray, std_err: np.ndarray, conf_level: float = 0.95,
                      conf_type: str = "log") -> tuple[np.ndarray, np.ndarray]:
    """Pointwise limits for a probability p with standard error se, as survfit gives for pstate.

    With z the normal quantile of (1 + conf_level) / 2 and s = se / p (0 where se = 0), the
    standard error of log p (Kalbfleisch & Prentice 2002, section 1.4):
      plain:   p -+ z s p, clipped to [0, 1];
      log:     p exp(-+ z s), upper clipped to 1; undefined where p = 0;
      log-log: p ** exp(-+ z s / log p), undefined where p is 0 or 1.
    This is survival's survfit_confint(p, se, logse = FALSE) (3.5-3), which survfit applies
    to the state probabilities of a multi-state curve.
    """
    if conf_type not in CONF_TYPES:
        raise ValueError(f"conf_type must be one of {', '.join(CONF_TYPES)}, not {conf_type!r}")
    if not 0.0 < conf_level < 1.0:
        raise ValueError(f"conf_level must lie strictly between 0 and 1, not {conf_level}")
    p = np.asarray(estimate, dtype=float)
    se = np.asarray(std_err, dtype=float)
    z = norm.ppf(1.0 - (1.0 - conf_level) / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        se_log = np.where(se == 0, 0.0, se / p)
        if conf_type == "plain":
            half = se_log * p * z
            return np.maximum(p - half, 0.0), np.minimum(p + half, 1.0)
        if conf_type == "log":
            xx = np.where(p == 0, np.nan, p)
            return np.exp(np.log(xx) - z * se_log), np.minimum(np.exp(np.log(xx) + z * se_log), 1.0)
        xx = np.where((p == 0) | (p == 1), np.nan, p)
        half = z * se_log / np.log(xx)
        loglog = np.log(-np.log(xx))
        return np.exp(-np.exp(loglog - half)), np.exp(-np.exp(loglog + half))


def _ij_variance(n: np.ndarray, d: np.ndarray, censored: np.ndarray, s_prev: np.ndarray,
                 s: np.ndarray, incidence: np.ndarray) -> np.ndarray:
    """Infinitesimal-jackknife variance of every incidence at every row, shape (rows, K).

    The influence of patient i on the Aalen-Johansen estimate is the derivative with respect
    to its case weight (Therneau, survival methods vignette). Differentiating
    S_j = S_{j-1} (1 - d_j / n_j) and F_kj = F_k,j-1 + S_{j-1} d_kj / n_j gives, for a
    patient still at risk and event-free at t_j,
      a_j  = a_{j-1} (1 - d_j / n_j) + S_{j-1} d_j / n_j^2            (influence on S)
      f_kj = f_k,j-1 + a_{j-1} d_kj / n_j - S_{j-1} d_kj / n_j^2       (influence on F_k);
    a patient censored at t_j keeps (a_j, f_j); one with an event of cause o at t_j has
    a_j - S_{j-1}/n_j and f_kj + [k = o] S_{j-1}/n_j. After leaving at t_b its influence only
    propagates: a -> a S_j / S_b and f_k -> f_k + g (F_kj - F_kb) with g = a / S_b. R's
    standard error is the square root of the sum of squared influences,
      Var F_kj = N_j f_kj^2 + sum_{b <= j} sum_cells w (f_kb + g (F_kj - F_kb))^2
    (N_j still at risk after t_j, w the cell counts). With h = f_kb - g F_kb the square
    expands into three running sums, so the whole curve costs O(rows * K). Where that
    expansion cancels too much for the square root (a variance near 0, e.g. an incidence
    that reaches 1), the rows are summed cell by cell instead (_ij_variance_rows).
    """
    m = d.shape[0]
    d_all = d.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # The survivor path a_j solves a linear recursion whose factor is S_j / S_{j-1}:
        # a_j = S_j sum_{l <= j} beta_l / S_l while S_j > 0; where S reaches 0 (the last row
        # then) a_j = beta_j.
        beta = s_prev * d_all / (n * n)
        pos = s > 0
        a = np.where(pos, s * np.cumsum(np.where(pos, beta / np.where(pos, s, 1.0), 0.0)), beta)
        a_prev = np.concatenate(([0.0], a[:-1]))
        f = np.cumsum(a_prev[:, None] * d / n[:, None] - (s_prev / (n * n))[:, None] * d, axis=0)
        jump = s_prev / n
        inv_s = np.where(pos, 1.0 / np.where(pos, s, 1.0), 0.0)
    g_cens = a * inv_s
    g_ev = (a - jump) * inv_s                       # the same for every cause o
    h_cens = f - g_cens[:, None] * incidence
    h_other = f - g_ev[:, None] * incidence          # an event of another cause
    h_own = h_other + jump[:, None]                  # an event of this cause
    other = d_all[:, None] - d
    w0 = censored[:, None] * h_cens ** 2 + other * h_other ** 2 + d * h_own ** 2
    w1 = (censored[:, None] * h_cens * g_cens[:, None]
          + (other * h_other + d * h_own) * g_ev[:, None])
    w1_abs = (censored[:, None] * np.abs(h_cens * g_cens[:, None])
              + (other * np.abs(h_other) + d * np.abs(h_own)) * np.abs(g_ev)[:, None])
    w2 = censored * g_cens ** 2 + d_all * g_ev ** 2
    after = (n - d_all - censored)[:, None] * f ** 2
    c0, c2 = np.cumsum(w0, axis=0), np.cumsum(w2)[:, None]
    var = after + c0 + 2.0 * incidence * np.cumsum(w1, axis=0) + incidence ** 2 * c2
    scale = after + c0 + 2.0 * incidence * np.cumsum(w1_abs, axis=0) + incidence ** 2 * c2
    err = (8 + m) * np.finfo(float).eps * scale
    var = np.maximum(var, 0.0)
    unsure = np.sqrt(var + err) - np.sqrt(np.maximum(var - err, 0.0)) > 1e-13
    if unsure.any():
        rows, causes = np.nonzero(unsure)
        var[rows, causes] = _ij_variance_rows(rows, causes, f, g_cens, g_ev, jump, censored,
                                              d, n - d_all - censored, incidence)
    return var


def _ij_variance_rows(rows: np.ndarray, causes: np.ndarray, f: np.ndarray, g_cens: np.ndarray,
                      g_ev: np.ndarray, jump: np.ndarray, censored: np.ndarray, d: np.ndarray,
                      after: np.ndarray, incidence: np.ndarray) -> np.ndarray:
    """The same variance at chosen (row, cause) pairs, as a sum of squared cell influences."""
    out = np.empty(len(rows))
    m = len(jump)
    b = np.arange(m)
    d_all = d.sum(axis=1)
    for i, (j, k) in enumerate(zip(rows.tolist(), causes.tolist())):
        live = b <= j
        delta = incidence[j, k] - incidence[live, k]
        fk = f[live, k]
        u_cens = fk + g_cens[live] * delta
        u_other = fk + g_ev[live] * delta
        u_own = u_other + jump[live]
        out[i] = (after[j] * f[j, k] ** 2 + np.sum(censored[live] * u_cens ** 2)
                  + np.sum((d_all[live] - d[live, k]) * u_other ** 2) + np.sum(d[live, k] * u_own ** 2))
    return out


def _gray_variance(n: np.ndarray, d: np.ndarray, s_prev: np.ndarray, s: np.ndarray,
                   incidence: np.ndarray) -> np.ndarray:
    """cmprsk::cuminc's variance of every incidence at every row, shape (rows, K).

    Aalen's (1978) estimator as Gray's cinc routine accumulates it: at each time with d1
    events of the cause and d2 of the others, among n at risk, with S- = S(t-), S = S(t) and
    F = F(t), and t5(x) = 1 - (x - 1)/(n - 1) (1 for x <= 1) correcting for ties,
      others (if S > 0): q = S-^2 t5(d2) d2 / n^2; v1 += (F/S)^2 q; v2 += F/S^2 q; v3 += q/S^2
      cause:  q = S-^2 t5(d1) d1 / n^2; u = 1/S (0 if S = 0); v1 += (1 + u F)^2 q;
              v2 += u (1 + u F) q; v3 += u^2 q
    and Var F = v1 + F^2 v3 - 2 F v2, updated only at times with an event of the cause (the
    step function cuminc returns and timepoints() reads).
    """
    m, k = d.shape
    d_all = d.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_minus_1 = np.where(n > 1, n - 1.0, 1.0)
        base = s_prev * s_prev / (n * n)
        safe_s = np.where(s > 0, s, 1.0)
        u = np.where(s > 0, 1.0 / safe_s, 0.0)
        out = np.zeros((m, k))
        for c in range(k):
            d1 = d[:, c].astype(float)
            d2 = (d_all - d[:, c]).astype(float)
            fc = incidence[:, c]
            q2 = np.where((d2 > 0) & (s > 0), base * np.where(d2 > 1, 1.0 - (d2 - 1.0) / n_minus_1, 1.0) * d2, 0.0)
            q1 = np.where(d1 > 0, base * np.where(d1 > 1, 1.0 - (d1 - 1.0) / n_minus_1, 1.0) * d1, 0.0)
            t4 = 1.0 + u * fc
            v1 = np.cumsum((fc * u) ** 2 * q2 + t4 * t4 * q1)
            v2 = np.cumsum(fc * u * u * q2 + u * t4 * q1)
            v3 = np.cumsum(u * u * q2 + u * u * q1)
            var = v1 + fc * fc * v3 - 2.0 * fc * v2
            # Carry the value at the last time with an event of this cause forward.
            last = np.maximum.accumulate(np.where(d1 > 0, np.arange(m), -1))
            out[:, c] = np.where(last >= 0, var[np.maximum(last, 0)], 0.0)
    return out


def aalen_johansen(time, counts, conf_level: float = 0.95, conf_type: str = "log",
                   variance: str = "ij") -> tuple[IncidenceTable, ...]:
    """The Aalen-Johansen cumulative incidence of every cause, from pooled per-bin counts.

    ``counts`` is int64 (bins, 1 + K) on the grid ``time``: column 0 censored, column k the
    patients leaving by cause k. Rows with no patient are dropped, as R reports only times
    at which something happens. With n_j = #{T >= t_j} and d_kj the events of cause k,
      S(t_j) = S(t_j-1) (1 - sum_k d_kj / n_j),  F_k(t_j) = F_k(t_j-1) + S(t_j-1) d_kj / n_j
    (Aalen & Johansen 1978); the arithmetic follows survival 3.5-3's survfitci.c.

    variance = "ij": the infinitesimal-jackknife standard error survfit reports for a
    multi-state curve (see _ij_variance); "gray": the square root of cmprsk::cuminc's
    variance (see _gray_variance). Limits per conf_type as survfit_confint (see
    confidence_limits). Returns one IncidenceTable per cause 1..K.
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {', '.join(VARIANCES)}, not {variance!r}")
    time = np.asarray(time, dtype=float)
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[0] != time.shape[0] or counts.shape[1] < 2:
        raise ValueError(f"counts must have shape (len(time), 1 + K), not {counts.shape}")
    if np.any(counts < 0):
        raise ValueError("counts must not be negative")
    counts = counts.astype(np.int64)
    total = counts.sum(axis=1)
    n_risk_all = np.cumsum(total[::-1])[::-1]
    keep = total > 0
    t = time[keep]
    n_risk = n_risk_all[keep]
    censored = counts[keep, 0]
    d = counts[keep, 1:]
    n = n_risk.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        hazards = d / n[:, None]
    # survival 3.5-3 (survfitci.c) multiplies the event-free probability by the row sum
    # 1 - d/n of the transition matrix and adds S(t-) * d_k/n to each incidence, in this
    # order; repeating its arithmetic lands an incidence that reaches 1 on exactly 1.0 as
    # in R, which decides where log-log limits are undefined.
    s = np.cumprod(1.0 - d.sum(axis=1) / n)
    s_prev = np.concatenate(([1.0], s[:-1]))[:len(s)]
    incidence = np.cumsum(s_prev[:, None] * hazards, axis=0)
    if variance == "ij":
        var = _ij_variance(n, d.astype(float), censored.astype(float), s_prev, s, incidence)
    else:
        # cinc's v1 + F^2 v3 - 2 F v2 can round a zero variance just below 0.
        var = np.maximum(_gray_variance(n, d, s_prev, s, incidence), 0.0)
    std_err = np.sqrt(var)
    tables = []
    for c in range(d.shape[1]):
        lower, upper = confidence_limits(incidence[:, c], std_err[:, c], conf_level, conf_type)
        tables.append(IncidenceTable(
            cause=c + 1, time=t, n_risk=n_risk.astype(np.int64), n_event=d[:, c].astype(np.int64),
            n_censor=censored.astype(np.int64), estimate=incidence[:, c], std_err=std_err[:, c],
            lower=lower, upper=upper))
    return tuple(tables)


def cif_at_times(table: IncidenceTable, times, conf_level: float = 0.95,
                 conf_type: str = "log") -> IncidenceTable:
    """The incidence at report times, as summary(fit, times =, extend = TRUE) gives it.

    At each report time t (in increasing order): the estimate and standard error of the
    last reported time <= t (before the first one, the starting values 0 and 0, whose
    limits summary.survfit reports as 0 and 0); n_risk = #{T >= t}; n_event and n_censor
    counted over (previous report time, t], from the start for the first. Limits per
    conf_type from the estimate and standard error (confidence_limits).
    """
    times = np.asarray(times, dtype=float)
    if times.ndim != 1:
        raise ValueError("times must be a one-dimensional sequence")
    if np.any(np.diff(times) < 0):
        raise ValueError("report times must be in increasing order")
    idx = np.searchsorted(table.time, times, side="right") - 1
    before = idx < 0
    safe = np.maximum(idx, 0)
    estimate = np.where(before, 0.0, table.estimate[safe]) if len(table.time) else np.zeros(len(times))
    std_err = np.where(before, 0.0, table.std_err[safe]) if len(table.time) else np.zeros(len(times))
    lower, upper = confidence_limits(estimate, std_err, conf_level, conf_type)
    lower = np.where(before, 0.0, lower)
    upper = np.where(before, 0.0, upper)
    first_after = np.searchsorted(table.time, times, side="left")
    n_risk = np.append(table.n_risk, 0)[first_after].astype(np.int64)
    cum_event = np.concatenate(([0], np.cumsum(table.n_event)))[idx + 1]
    cum_censor = np.concatenate(([0], np.cumsum(table.n_censor)))[idx + 1]
    return IncidenceTable(
        cause=table.cause, time=times, n_risk=n_risk,
        n_event=np.diff(cum_event, prepend=0).astype(np.int64),
        n_censor=np.diff(cum_censor, prepend=0).astype(np.int64),
        estimate=estimate, std_err=std_err, lower=lower, upper=upper)
