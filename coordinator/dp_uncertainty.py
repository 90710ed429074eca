"""Uncertainty that includes the privacy noise, for every DP estimate other than Kaplan-Meier's
(coordinator.dp_postprocess.km_dp_intervals, which uses the same unclipped centre where needed).

The coordinator knows the law of the noise on every released cell (independent N_Z(0, sigma^2)
or Skellam of variance sigma^2, sigma the total of the sites' shares) and the post-processing it applied, so it can simulate
the mechanism around the release. Everything here reads only the released sum and public plan
parameters: post-processing, no privacy cost (Dwork & Roth 2014, Proposition 2.1).

Centre: the estimator on the unclipped noisy counts. Every estimate here is a smooth function
theta of the cells (the incidence, the area under the Kaplan-Meier curve, the log-rank and
Gray scores), and the noise has mean 0, so theta(y) of the raw release y = x + Z is unbiased
for theta(x) to first order (delta method), where clipping at 0 is not: each empty cell gains
E max(0, Z) = 0.4 sigma, and a histogram with many empty cells (no censoring in the first
years, say) shifts the numbers at risk by tens of patients (the incidence of recurrence in
colon_cr at 2 years drops by 0.03 on 90-day and 0.09 on 30-day bins at sigma 4.5, on average
over releases; benchmarks/NOTES.md). The post-processed counts still give the tables' numbers
at risk and events and the exact estimator's sampling variance, which needs non-negative
counts. Where raw counts are negative the estimators count a bin as at risk only from n >= 1
and keep each hazard in [-1, 1] (no change for non-negative counts). The price of the raw
centre: with dense censoring and few patients per bin it is noisier than the clipped estimate
(the limits stay valid, only wider).

Noise variance: parametric bootstrap (``noise_replicates``). B replicates y + Z_b, Z_b fresh
draws of the mechanism's law on every cell of the histogram block (sigma the total noise,
known to the coordinator), give B replicates theta(y + Z_b) whose spread estimates the
variance the noise adds around the release (Efron & Tibshirani 1993, chapter 6; for DP
releases Ferrando, Wang & Sheldon 2022, AISTATS, "Parametric bootstrap for differentially
private confidence intervals"); the spread is read robustly from the -+1 SD quantiles
(``noise_variance``), since in a few replicates a number at risk near 0 makes 1 / n explode.
Noise and sampling are independent, so the total variance is the exact estimator's sampling
variance plus the noise variance:

- cumulative incidence (``cif_dp``): the infinitesimal-jackknife variance survfit gives
  (coordinator.cif) plus the replicates' variance of the Aalen-Johansen F_k on the grid;
  limits by the plan's conf_type around F_k of the raw release, kept in [0, 1].
- RMST (``rmst_dp``): Miller's (1981) Greenwood-type variance plus the noise MSE of the
  area under the grid Kaplan-Meier curve (released estimate chosen as for Kaplan-Meier); groups' noise is independent (disjoint
  cells), so contrasts follow coordinator.rmst.compare_rmst on the noise-aware SEs.
- log-rank and Gray's test (``noise_aware_wald``): the score U (O - E for the log-rank,
  Gray's z) of the raw release is U_exact + (noise effect) with mean U_exact to first order;
  under the null it is taken as N(0, V + C), V the exact test's variance on the post-processed
  counts and C the replicates' covariance of U (``noise_covariance``). The statistic U' (V + C)^-1 U is referred to
  chi-square with the exact test's df: a Wald test with the noise in its variance (the
  simulations in tests/test_dp_uncertainty.py check its p-values under the null). Without it
  a p-value reads noise as signal.
- proportions (``proportion_dp_ci``): analytic. With S successes and F failures each the sum
  of k_s and k_f noisy level counts, p = S / (S + F) and the delta method gives
  Var p = p (1 - p) / n + sigma^2 (k_s (1 - p)^2 + k_f p^2) / n^2. Wilson's interval then
  solves (p_hat - p)^2 = z^2 Var p for p (a quadratic: Wilson 1927 with the noise term
  added); Clopper-Pearson's uses the effective sample size n* = p (1 - p) / Var p and
  x* = p_hat n* (Korn & Graubard 1998, Survey Methodology 24:193-201). Both equal the exact
  intervals when sigma = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta, chi2

from coordinator.cif import aalen_johansen, confidence_limits
from coordinator.dp_postprocess import bias_left, km_on_grid, mechanism_noise, noise_mse, postprocess, release_choice
from coordinator.gray import full_rank, stratum_score
from coordinator.km import z_value

ONE_SD_LOW = 0.15865525393145707  # Phi(-1)

NOTE_CIF = ("includes the DP noise: limits around the unclipped noisy counts' estimate (unbiased to first order), "
            "widened to contain the estimate released (each stratum's dp_centre says which and why); variance = the "
            "exact estimator's sampling variance on the post-processed counts plus the noise variance from a "
            "parametric bootstrap of {b} noise draws")
NOTE_RMST = ("includes the DP noise: the area under the clipped counts' curve unless its bootstrap bias-corrected "
             "version or the unclipped counts' one has a clearly smaller estimated noise error (dp_centre says which); "
             "variance = Miller's sampling variance on the post-processed counts plus that noise mean squared error "
             "(variance and remaining bias) from a parametric bootstrap of {b} noise draws")
NOTE_TEST = ("includes the DP noise: Wald test U' (V + C)^-1 U on chi-square, U the score of the unclipped noisy "
             "counts, V the exact test's variance on the post-processed counts, C the score's covariance over a "
             "parametric bootstrap of {b} noise draws")
NOTE_PROPORTION = ("includes the DP noise: variance p(1-p)/n + sigma^2 (k_s (1-p)^2 + k_f p^2)/n^2 (delta method), "
                   "{how}")


def noise_replicates(released: np.ndarray, sigma: float, n_boot: int, rng: np.random.Generator,
                     method: str | None = None, mechanism: str = "gaussian") -> np.ndarray:
    """(n_boot, *released.shape): released + fresh noise of the mechanism's law (N_Z(0, sigma^2) or
    Skellam of variance sigma^2, coordinator.dp_postprocess.mechanism_noise) on every cell,
    post-processed by ``method`` if given."""
    if n_boot < 2:
        raise ValueError("the bootstrap needs at least 2 replicates")
    counts = np.asarray(released, dtype=np.int64)
    boot = counts[None] + mechanism_noise(sigma, (n_boot, *counts.shape), rng, mechanism)
    return boot if method is None else postprocess(boot, method)[0]


def noise_variance(replicates: np.ndarray) -> np.ndarray:
    """The noise's share of an estimate's variance from its replicates (axis 0), robustly.

    The square of half the range between the replicates' 15.87% and 84.13% quantiles (mean
    -+ 1 SD for normal replicates, so the variance there), which a few replicates in which a
    noisy number at risk nears 0 (where 1 / n is unstable) cannot blow up.
    """
    r = np.asarray(replicates, dtype=float)
    lo, hi = np.nanquantile(r, [ONE_SD_LOW, 1 - ONE_SD_LOW], axis=0)
    return ((hi - lo) / 2) ** 2


def noise_covariance(replicates: np.ndarray) -> np.ndarray:
    """(G, G) covariance of (B, G) score replicates: robust scales (noise_variance) and the
    correlation of the replicates winsorised at their 2.5% and 97.5% quantiles."""
    r = np.asarray(replicates, dtype=float)
    lo, hi = np.quantile(r, [0.025, 0.975], axis=0)  # winsorising keeps the correlation robust too
    scale = np.sqrt(noise_variance(r))
    if r.shape[1] == 1:
        return np.outer(scale, scale)
    # A constant score (no noise reached it) has no correlation: 0, not a warning and NaN.
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.atleast_2d(np.corrcoef(np.clip(r, lo, hi), rowvar=False)))
    np.fill_diagonal(corr, 1.0)
    return corr * np.outer(scale, scale)


# --------------------------------------------------------------------------- cumulative incidence

def cif_on_grid(counts: np.ndarray) -> np.ndarray:
    """Aalen-Johansen F_k at every bin of (..., bins, 1 + K) non-negative counts: (..., bins, K).

    S_j = S_{j-1} (1 - d_j / n_j), F_kj = F_k,j-1 + S_{j-1} d_kj / n_j (Aalen & Johansen 1978),
    n_j the patients in bins >= j; bins with nobody at risk (n_j < 1) change nothing.
    """
    c = np.asarray(counts, dtype=float)
    n = np.flip(np.cumsum(np.flip(c.sum(axis=-1), -1), axis=-1), -1)
    d = c[..., 1:]
    live = n >= 1
    safe = np.where(live, n, 1.0)
    # raw noisy counts may be negative: hazards kept in [-1, 1] (no change for counts >= 0)
    hazard = np.clip(d / safe[..., None], -1.0, 1.0) * live[..., None]
    s = np.cumprod(1.0 - np.clip(hazard.sum(axis=-1), -1.0, 1.0), axis=-1)
    s_prev = np.concatenate([np.ones_like(s[..., :1]), s[..., :-1]], axis=-1)
    return np.cumsum(s_prev[..., None] * hazard, axis=-2)


def cif_sampling_variance(time: np.ndarray, counts: np.ndarray, variance: str = "ij") -> np.ndarray:
    """The exact estimator's variance of every F_k at every bin (bins, K), carried over empty bins."""
    tables = aalen_johansen(time, counts, variance=variance)
    rows = np.searchsorted(tables[0].time, time, side="right") - 1
    out = np.zeros((len(time), len(tables)))
    for k, t in enumerate(tables):
        if t.time.size:
            out[:, k] = np.where(rows >= 0, t.std_err[np.maximum(rows, 0)] ** 2, 0.0)
    return out


@dataclass(frozen=True)
class CifDP:
    """F_k at every bin (bins, K) with limits that include the noise."""

    estimate: np.ndarray         # the released estimate (``centre`` says which)
    std_err: np.ndarray
    std_err_noise: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    centre: str = "unclipped"    # one of coordinator.dp_postprocess.RELEASED_ESTIMATES
    band_centre: np.ndarray | None = None  # F_k of the raw release, which the limits are built around
    mse: dict[str, float] | None = None    # per candidate, mean over bins and causes of the noise MSE


def cif_dp(time: np.ndarray, counts: np.ndarray, raw: np.ndarray, replicates: np.ndarray, conf_level: float = 0.95,
           conf_type: str = "log", method: str = "clip") -> CifDP:
    """Incidence of every cause on the grid: limits around F_k of the raw release, IJ variance plus
    the noise variance, and the released estimate chosen as for Kaplan-Meier.

    ``counts`` (bins, 1 + K) the post-processed release (sampling variance), ``raw`` the
    unclipped noisy release (centre of the limits), ``replicates`` (B, bins, 1 + K)
    noise_replicates of raw. Limits per conf_type (coordinator.cif.confidence_limits); where F_k
    is 0 and its log undefined, plain limits (0, z se).

    Released estimate: of F_k on the post-processed counts (``clipped``), the same minus its
    bootstrap bias (``bias-corrected``) and F_k of the raw release (``unclipped``), the one
    coordinator.dp_postprocess.release_choice picks by the noise MSEs estimated as in
    km_dp_intervals (the replicates' noise variance plus the bias the bootstrap leaves each),
    jointly over the causes so the released F_k still add up with S; the limits are widened where
    needed to contain it. On colon_cr (90-day bins, no early censoring) the unclipped estimate
    wins; with few patients per bin and censoring throughout, the clipped one (benchmarks/NOTES.md).
    """
    raw_f = cif_on_grid(raw)
    centre = np.clip(raw_f, 0.0, 1.0)
    replicates_f = cif_on_grid(replicates)
    var_noise = noise_variance(replicates_f)
    se = np.sqrt(cif_sampling_variance(time, counts) + var_noise)
    with np.errstate(over="ignore"):  # a tiny F with a large se: the log limit runs to 0, as it should
        lower, upper = confidence_limits(centre, se, conf_level, conf_type)
    at_zero = centre == 0
    lower = np.where(at_zero, 0.0, lower)
    upper = np.where(at_zero, np.minimum(z_value(conf_level) * se, 1.0), upper)
    # the same draws, around the post-processed release and post-processed themselves
    draws = np.asarray(replicates, dtype=np.int64) - np.asarray(raw, dtype=np.int64)[None]
    pp_f = cif_on_grid(counts)
    boot_pp = cif_on_grid(postprocess(np.asarray(counts, dtype=np.int64)[None] + draws, method)[0])
    bias_pp = boot_pp.mean(axis=0) - pp_f
    bias_raw = cif_on_grid(postprocess(np.asarray(replicates, dtype=np.int64), method)[0]).mean(axis=0) - raw_f
    var_pp = noise_variance(boot_pp)
    raw_reps = np.clip(replicates_f, 0.0, 1.0)
    terms = noise_mse(var_pp, var_noise, bias_pp, bias_raw, raw_reps.mean(axis=0) - centre)
    mse = {k: float(np.nanmean(v)) for k, v in terms.items()}
    kind = release_choice(mse)
    est = {"clipped": pp_f, "bias-corrected": np.clip(pp_f - bias_pp, 0.0, 1.0), "unclipped": centre}[kind]
    with np.errstate(invalid="ignore"):
        lower, upper = np.fmin(lower, est), np.fmax(upper, est)
    return CifDP(est, se, np.sqrt(var_noise), lower, upper, kind, centre, mse)


# --------------------------------------------------------------------------- RMST

def rmst_on_grid(surv: np.ndarray, time: np.ndarray, tau: float) -> np.ndarray:
    """Area under the step function S (value surv[..., b] on [time_b, time_b+1)) from 0 to tau.

    Equals coordinator.rmst.rmst on the same curve: S = 1 before the first bin, and a bin
    without events leaves S unchanged, so the rectangles of R's event times add up the same.
    """
    t = np.asarray(time, dtype=float)
    right = np.minimum(np.append(t[1:], np.inf), tau)
    width = np.maximum(right - t, 0.0)
    return np.asarray(surv, dtype=float) @ width + max(min(t[0], tau), 0.0)


@dataclass(frozen=True)
class RmstDP:
    estimate: float      # the released estimate (``centre`` says which)
    std_err: float       # sqrt(Miller's variance + the released estimate's noise MSE)
    std_err_noise: float  # sqrt(its noise MSE: the replicates' variance plus the bias left)
    centre: str = "unclipped"


def rmst_dp(time: np.ndarray, raw: np.ndarray, replicates: np.ndarray, tau: float, std_err_sampling: float,
            cause: int = 1, method: str = "clip") -> RmstDP:
    """RMST to tau of one group from its raw release (bins, 1 + K) and noise_replicates of it.

    ``std_err_sampling``: coordinator.rmst.rmst on the post-processed counts. Three candidates, as
    for Kaplan-Meier (coordinator.dp_postprocess.km_dp_intervals): the area under the curve of the
    post-processed counts (``clipped``), that minus its bootstrap bias (``bias-corrected``) and the
    area under the raw release's curve (``unclipped``), each with a noise MSE (robust variance of its
    replicates plus the bias the bootstrap leaves it); release_choice picks one by the mean noise
    MSEs of their curves over the bins before tau. Its standard error
    is sqrt(sampling variance + noise MSE), so a Wald interval counts what bias may remain. The
    estimate is kept in [0, tau]. Why: the area integrates the curve's noise, and with few patients
    per bin the raw curve wanders (RMST to 24 months, cohorts of 200 on monthly bins: RMSE 1.6 to 1.8
    months raw, 1.0 clipped, 1.07 released; at 1,000 all 0.3).
    """
    raw = np.asarray(raw, dtype=np.int64)
    reps = np.asarray(replicates, dtype=np.int64)
    pp = postprocess(raw, method)[0]
    # curves (the estimate, its replicates) for each candidate; the choice is made on the curve's
    # bins before tau, whose mean squared errors are far steadier than the one area's
    s_raw, s_pp = km_on_grid(raw, cause)[0], km_on_grid(pp, cause)[0]
    raw_reps = np.clip(km_on_grid(reps, cause)[0], 0.0, 1.0)
    pp_reps = km_on_grid(postprocess(pp[None] + (reps - raw[None]), method)[0], cause)[0]
    bias_pp = pp_reps.mean(axis=0) - s_pp
    bias_raw = km_on_grid(postprocess(reps, method)[0], cause)[0].mean(axis=0) - s_raw
    unclipped = np.clip(s_raw, 0.0, 1.0)
    bias_unclipped = raw_reps.mean(axis=0) - unclipped
    before = np.asarray(time, dtype=float) < tau
    terms = noise_mse(noise_variance(pp_reps), noise_variance(raw_reps), bias_pp, bias_raw, bias_unclipped)
    kind = release_choice({k: float(np.mean(v[before])) for k, v in terms.items()})
    curve, curve_reps = {"clipped": (s_pp, pp_reps),
                         "bias-corrected": (np.clip(s_pp - bias_pp, 0.0, 1.0), pp_reps - bias_pp),
                         "unclipped": (unclipped, raw_reps)}[kind]
    bias = bias_left(bias_pp, bias_raw, bias_unclipped)[kind]
    est = float(np.clip(rmst_on_grid(curve, time, tau), 0.0, tau))
    # the area is linear in the curve plus the constant before the first bin, which a bias lacks
    bias_area = rmst_on_grid(bias, time, tau) - rmst_on_grid(np.zeros_like(bias), time, tau)
    mse = float(noise_variance(rmst_on_grid(curve_reps, time, tau))) + float(bias_area) ** 2
    return RmstDP(est, float(np.sqrt(std_err_sampling**2 + mse)), float(np.sqrt(mse)), kind)


# --------------------------------------------------------------------------- tests

def logrank_scores(events: np.ndarray, at_risk: np.ndarray, rho: float = 0.0) -> np.ndarray:
    """O - E per group, (..., G), from (..., S, G, m) events and numbers at risk.

    The score of coordinator.logrank.logrank_test (Kalbfleisch & Prentice 2002, section 7.2),
    with the G-rho weight S(t-)^rho of the stratum's pooled Kaplan-Meier (Harrington &
    Fleming 1982), for many releases at once.
    """
    d = np.asarray(events, dtype=float)
    r = np.maximum(np.asarray(at_risk, dtype=float), 0.0)  # raw noisy numbers at risk may dip below 0
    dead, n = d.sum(axis=-2), r.sum(axis=-2)              # (..., S, m)
    live = n >= 1
    safe = np.where(live, n, 1.0)
    if rho != 0:
        km = np.cumprod(np.where(live, 1.0 - np.clip(dead / safe, -1.0, 1.0), 1.0), axis=-1)
        weight = np.concatenate([np.ones_like(km[..., :1]), km[..., :-1]], axis=-1) ** rho
    else:
        weight = np.ones_like(dead)
    expected = (weight * dead / safe)[..., None, :] * r
    return ((weight[..., None, :] * d) - expected).sum(axis=(-3, -1))


def gray_scores(counts: np.ndarray, cause: int, rho: float = 0.0) -> np.ndarray:
    """Gray's score z_g for one cause, (..., G), from (..., S, G, m, 1 + K) counts, summed over strata.

    z_g = sum_t W (d1_g - d1 R_g / sum_r R_r), R_g = n_g (1 - F_g(t-)) / S_g(t-), W = (1 - F(t-))^rho,
    F the pooled incidence F(t) = F(t-) + d1 / sum_g n_g / S_g(t-) (Gray 1988, eq. 2.3; the score of
    coordinator.gray.stratum_score, here over every bin at once: bins without an event add 0).
    """
    c = np.asarray(counts, dtype=float)
    n = np.flip(np.cumsum(np.flip(c.sum(axis=-1), -1), axis=-1), -1)  # (..., S, G, m)
    d_all = c[..., 1:].sum(axis=-1)
    d1 = c[..., cause]
    live = n >= 1  # raw noisy counts: hazards kept in [-1, 1], no change for counts >= 0
    safe = np.where(live, n, 1.0)
    km = np.cumprod(np.where(live, 1.0 - np.clip(d_all / safe, -1.0, 1.0), 1.0), axis=-1)
    km_prev = np.concatenate([np.ones_like(km[..., :1]), km[..., :-1]], axis=-1)
    inc = np.cumsum(np.where(live, km_prev * np.clip(d1 / safe, -1.0, 1.0), 0.0), axis=-1)
    inc_prev = np.concatenate([np.zeros_like(inc[..., :1]), inc[..., :-1]], axis=-1)
    safe_km = np.where(live & (km_prev > 0), km_prev, 1.0)
    h_sum = np.where(live, n / safe_km, 0.0).sum(axis=-2)              # (..., S, m)
    r_g = np.where(live, n * (1.0 - inc_prev) / safe_km, 0.0)
    r_sum = r_g.sum(axis=-2)
    total_d1 = d1.sum(axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.where(h_sum > 0, total_d1 / np.where(h_sum > 0, h_sum, 1.0), 0.0)
        share = np.where(r_sum > 0, total_d1 / np.where(r_sum > 0, r_sum, 1.0), 0.0)
    pooled_prev = np.cumsum(step, axis=-1) - step
    weight = (1.0 - pooled_prev) ** rho
    term = np.where(live, d1 - share[..., None, :] * r_g, 0.0)
    return (weight[..., None, :] * term).sum(axis=(-3, -1))


@dataclass(frozen=True)
class NoiseAwareTest:
    stat: float
    df: int
    p: float
    var: np.ndarray        # V + C over the tested groups


def noise_aware_wald(score: np.ndarray, var: np.ndarray, replicates: np.ndarray, groups: np.ndarray) -> NoiseAwareTest:
    """U' (V + C)^-1 U over ``groups`` on chi-square with len(groups) df.

    ``score`` U (G,) of the raw release, ``var`` V (G, G) of the exact test on the post-processed
    counts, ``replicates`` (B, G) the score of noise replicates of the raw release, C = Cov(U*).
    """
    idx = np.asarray(groups, dtype=np.int64)
    diff = np.asarray(score, dtype=float)[idx]
    boot = np.asarray(replicates, dtype=float)[:, idx]
    total = np.asarray(var, dtype=float)[np.ix_(idx, idx)] + noise_covariance(boot)
    try:
        solved = np.linalg.solve(total, diff)
    except np.linalg.LinAlgError:
        solved = np.linalg.pinv(total) @ diff
    stat = float(diff @ solved)
    return NoiseAwareTest(stat, idx.size, float(chi2.sf(stat, idx.size)), total)


# --------------------------------------------------------------------------- proportions

def proportion_noise_variance(p: float, n: float, sigma: float, k_success: int, k_failure: int) -> float:
    """Delta-method variance of p = S / (S + F) from noise sigma^2 on each of k_s + k_f level counts."""
    return sigma * sigma * (k_success * (1 - p) ** 2 + k_failure * p * p) / (n * n)


def proportion_dp_ci(successes: int, n: int, sigma: float, k_success: int, k_failure: int,
                     conf_level: float = 0.95, method: str = "clopper-pearson") -> tuple[float, float, float]:
    """(estimate, lower, upper) for a proportion of post-processed noisy counts (module docstring).

    ``wilson``: the roots of (p_hat - p)^2 = z^2 (p (1 - p) / n + noise variance at p), i.e.
    a (1 + z^2/n - z^2 sigma^2 (k_s + k_f) / n^2) p^2 - (2 p_hat + z^2/n - 2 z^2 sigma^2 k_s / n^2) p
    + p_hat^2 - z^2 sigma^2 k_s / n^2 = 0, clipped to [0, 1]. ``clopper-pearson``: Beta limits at
    x* = p_hat n*, n* = n p~ (1 - p~) / (p~ (1 - p~) + n Var_noise(p~)), p~ = p_hat kept 1/(2n) inside (0, 1).
    """
    if n <= 0:
        raise ValueError(f"a proportion needs n >= 1, got n = {n}")
    alpha = 1.0 - conf_level
    z = z_value(conf_level)
    p_hat = successes / n
    if method == "wilson":
        q = z * z * sigma * sigma / (n * n)
        a = 1 + z * z / n - q * (k_success + k_failure)
        b = -(2 * p_hat + z * z / n - 2 * q * k_success)
        c = p_hat * p_hat - q * k_success
        disc = max(b * b - 4 * a * c, 0.0)
        if a > 0:
            lo, hi = (-b - np.sqrt(disc)) / (2 * a), (-b + np.sqrt(disc)) / (2 * a)
        else:  # the noise swamps the counts: nothing is ruled out
            lo, hi = 0.0, 1.0
        return p_hat, float(np.clip(lo, 0.0, 1.0)), float(np.clip(hi, 0.0, 1.0))
    if method != "clopper-pearson":
        raise ValueError(f"method must be clopper-pearson or wilson, got {method!r}")
    p_eval = min(max(p_hat, 0.5 / n), 1 - 0.5 / n)
    binom = p_eval * (1 - p_eval)
    n_eff = n * binom / (binom + n * proportion_noise_variance(p_eval, n, sigma, k_success, k_failure))
    x = p_hat * n_eff
    lower = 0.0 if x <= 0 else float(beta.ppf(alpha / 2, x, n_eff - x + 1))
    upper = 1.0 if x >= n_eff else float(beta.ppf(1 - alpha / 2, x + 1, n_eff - x))
    return p_hat, lower, upper


def gray_score_var(counts: np.ndarray, cause: int, rho: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Gray's score z (G,), variance V (G, G), the groups tested and whether cmprsk would test.

    ``counts`` (S, G, m, 1 + K). As coordinator.gray.gray_test: strata's scores and variances
    (coordinator.gray.stratum_score on each stratum's event times) are summed, groups with no
    patient are left out and so is the last remaining one; the test exists only where that V
    has full rank by R's QR rule.
    """
    c = np.asarray(counts, dtype=float)
    n_groups = c.shape[1]
    present = np.flatnonzero(c.sum(axis=(0, 2, 3)) > 0)
    at_risk = np.flip(np.cumsum(np.flip(c.sum(axis=3), -1), axis=-1), -1)
    events = c[..., 1:].sum(axis=3)
    z = np.zeros(n_groups)
    v = np.zeros((n_groups, n_groups))
    for s in range(c.shape[0]):
        rows = events[s][present].sum(axis=0) > 0
        if not rows.any():
            continue
        d1 = c[s][present][:, rows, cause].T
        d2 = events[s][present][:, rows].T - d1
        zs, vs = stratum_score(d1, d2, at_risk[s][present][:, rows].T, rho)
        z[present] += zs
        v[np.ix_(present, present)] += vs
    tested = present[:-1]
    return z, v, tested, bool(tested.size) and full_rank(v[np.ix_(tested, tested)])
