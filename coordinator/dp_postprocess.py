"""Post-processing of noisy histograms, and intervals that include the privacy noise.

Everything here reads only the released noisy sum, so by the post-processing property of
differential privacy (Dwork & Roth 2014, Proposition 2.1; for zCDP Bun & Steinke 2016,
Lemma 1.8) none of it costs privacy.

Post-processing of a (bins, 1 + K) histogram, reported with the results:

- ``clip`` (default): every cell max(0, x). Numbers at risk, the reverse cumulative sum of
  non-negative cells, are then non-increasing by construction. Clipping biases empty cells
  upwards by E max(0, Z) = sigma / sqrt(2 pi) each, which matters only for long runs of
  empty bins (a fine grid on a small cohort).
- ``isotonic``: the noisy numbers at risk R_b = sum_{j >= b} (all outcomes in bin j) are
  projected by least squares onto non-increasing non-negative sequences (pool-adjacent-
  violators; Barlow et al. 1972, Statistical Inference under Order Restrictions) and
  rounded (rounding keeps the order); a bin's exits are R'_b - R'_{b+1}, split among its
  outcomes in proportion to the clipped noisy cells (largest remainder; all to censored
  when every clipped cell is 0). This keeps the total near n without the clipping bias.

Intervals (``km_dp_intervals``): the variance of S(t) is Greenwood's (Greenwood 1926) on
the post-processed counts plus the variance the noise adds, estimated by a parametric
bootstrap: B fresh noise draws of the known law N_Z(0, sigma_total^2) are added to the
release, and the spread of the replicates' KM curves is the noise variance (Efron &
Tibshirani 1993, ch. 6; the same use for DP releases in Ferrando, Wang & Sheldon 2022,
"Parametric bootstrap for differentially private confidence intervals", AISTATS). Limits
follow the plan's conf_type on the total standard error (coordinator.km.confidence_limits),
built around the unclipped counts' estimate, and the estimate released per curve is that one,
the clipped counts' one or its bootstrap bias-corrected version, by estimated MSE (km_dp_intervals).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import isotonic_regression

from coordinator.km import confidence_limits, z_value
from protocol.dp_sampler import discrete_gaussian_pmf
from protocol.tallies import Tallies

METHODS = ("clip", "isotonic")


@dataclass(frozen=True)
class PostProcessing:
    """What was done to a noisy histogram, for the results and the report."""

    method: str
    cells: int
    cells_clipped: int          # cells that were negative
    total_before: int           # sum of the noisy cells
    total_after: int            # sum after post-processing

    def describe(self) -> str:
        if self.method == "clip":
            how = "negative cells set to 0, so numbers at risk never increase"
        else:
            how = ("numbers at risk projected onto non-increasing, non-negative values (isotonic regression), "
                   "cells rebuilt from them")
        return (f"{how}; {self.cells_clipped} of {self.cells} cells were negative; "
                f"total {self.total_before} before, {self.total_after} after")


def clip_histogram(hist: np.ndarray) -> tuple[np.ndarray, PostProcessing]:
    """Cells clipped at 0; numbers at risk are then non-increasing."""
    h = np.asarray(hist, dtype=np.int64)
    out = np.maximum(h, 0)
    return out, PostProcessing("clip", h.size, int((h < 0).sum()), int(h.sum()), int(out.sum()))


def isotonic_histogram(hist: np.ndarray) -> tuple[np.ndarray, PostProcessing]:
    """Numbers at risk by isotonic least squares, per stratum of a (..., bins, 1 + K) histogram."""
    h = np.asarray(hist, dtype=np.int64)
    flat = h.reshape(-1, *h.shape[-2:])
    out = np.empty_like(flat)
    for i, cell in enumerate(flat):
        out[i] = _isotonic_stratum(cell)
    out = out.reshape(h.shape)
    return out, PostProcessing("isotonic", h.size, int((h < 0).sum()), int(h.sum()), int(out.sum()))


def _isotonic_stratum(counts: np.ndarray) -> np.ndarray:
    at_risk = np.cumsum(counts.sum(axis=1)[::-1])[::-1].astype(float)
    fitted = isotonic_regression(at_risk, increasing=False).x
    r = np.rint(np.maximum(fitted, 0.0)).astype(np.int64)
    exits = r - np.append(r[1:], 0)
    clipped = np.maximum(counts, 0)
    return _split(exits, clipped)


def _split(exits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Integers per row summing to exits, proportional to weights (largest remainder)."""
    w = weights.astype(float)
    tot = w.sum(axis=1, keepdims=True)
    share = np.where(tot > 0, w / np.where(tot > 0, tot, 1), 0.0)
    share[:, 0] = np.where(tot[:, 0] > 0, share[:, 0], 1.0)  # nothing to go by: censored
    raw = share * exits[:, None]
    base = np.floor(raw).astype(np.int64)
    short = exits - base.sum(axis=1)
    order = np.argsort(-(raw - base), axis=1, kind="stable")
    rank = np.argsort(order, axis=1, kind="stable")
    return base + (rank < short[:, None])


def postprocess(hist: np.ndarray, method: str = "clip") -> tuple[np.ndarray, PostProcessing]:
    if method == "clip":
        return clip_histogram(hist)
    if method == "isotonic":
        return isotonic_histogram(hist)
    raise ValueError(f"post-processing must be one of {', '.join(METHODS)}, got {method!r}")


def km_on_grid(counts: np.ndarray, cause: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """S and Greenwood Var(-log S) at every bin of (..., bins, 1 + K) non-negative counts.

    S(b) = prod_{j <= b} (1 - d_j / n_j), Var(-log S(b)) = sum_{j <= b} d_j / (n_j (n_j - d_j))
    (Kaplan & Meier 1958; Greenwood 1926), n_j = patients in bins >= j; other causes censor.
    Bins with nobody at risk leave S unchanged. Raw noisy counts (coordinator.dp_uncertainty)
    may be negative: there a bin counts as at risk only from n_j >= 1 and its hazard d_j / n_j
    is kept in [-1, 1], which changes nothing for non-negative counts.
    """
    c = np.asarray(counts, dtype=float)
    n = np.flip(np.cumsum(np.flip(c.sum(axis=-1), -1), axis=-1), -1)
    d = c[..., cause]
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(n >= 1, 1.0 - np.clip(d / np.where(n >= 1, n, 1.0), -1.0, 1.0), 1.0)
        green = np.where(d > 0, d / (n * (n - d)), 0.0)
        # Greenwood's sum is meaningless on raw counts (callers take only S from them): no warnings
        return np.cumprod(factor, axis=-1), np.cumsum(green, axis=-1)


@dataclass(frozen=True)
class DPIntervals:
    """KM at every bin of a noisy histogram, with limits that include the noise."""

    estimate: np.ndarray         # the centre of the limits (``centre`` says which)
    estimate_postprocessed: np.ndarray  # KM of the post-processed counts
    bias: np.ndarray             # bootstrap estimate of the post-processing bias of the latter
    std_err: np.ndarray          # total: sqrt(Greenwood var + noise var)
    std_err_noise: np.ndarray    # the bootstrap part alone
    lower: np.ndarray
    upper: np.ndarray
    postprocessing: PostProcessing
    centre: str = "bias-corrected"  # which estimate: one of RELEASED_ESTIMATES
    band_centre: np.ndarray | None = None  # the estimate the limits are built around (None: ``estimate``)
    mse: dict[str, float] | None = None    # per candidate estimate, mean over bins of the MSE the noise adds


RELEASED_ESTIMATES = ("clipped", "bias-corrected", "unclipped")


def discrete_gaussian_noise(sigma: float, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draws of N_Z(0, sigma^2) by inversion of its tabulated pmf, for inference (not for privacy)."""
    half = int(12 * sigma) + 12
    k = np.arange(-half, half + 1)
    p = discrete_gaussian_pmf(k, sigma * sigma)
    return rng.choice(k, size=shape, p=p / p.sum())


def mechanism_noise(sigma: float, shape: tuple[int, ...], rng: np.random.Generator,
                    mechanism: str = "gaussian") -> np.ndarray:
    """Draws of the total noise on a cell, for inference (not for privacy): N_Z(0, sigma^2) or Skellam.

    The sum of the sites' Skellam shares is Skellam with variance sigma^2, i.e. the difference of
    two Poisson(sigma^2 / 2) (Agarwal, Kairouz & Liu 2021); below sigma ~ 1 its law differs
    from the discrete Gaussian's, whose variance there falls short of sigma^2, so each is
    simulated as itself.
    """
    if mechanism == "skellam":
        mu = sigma * sigma / 2
        return rng.poisson(mu, shape) - rng.poisson(mu, shape)
    return discrete_gaussian_noise(sigma, shape, rng)


CENTRES = ("auto", "clipped", "unclipped")
# another estimate replaces the clipped one only if its estimated MSE is this much smaller: the
# estimates are noisy, and a swap on a near tie costs (bench_dp_utility: margins 1, 0.8, 0.6 give
# RMSE at 24 months 0.078, 0.071, 0.066 for cohorts of 200 on monthly bins, clipped 0.065, and
# 0.027, 0.027, 0.030 at 1,095 days for colon_cr on 30-day bins, clipped 0.060)
CLEARLY_BETTER = 0.8


def km_dp_intervals(hist: np.ndarray, sigma_total: float, n_boot: int, rng: np.random.Generator, cause: int = 1,
                    method: str = "clip", conf_level: float = 0.95, conf_type: str = "log-log",
                    bias_correct: bool = True, mechanism: str = "gaussian", centre: str = "auto") -> DPIntervals:
    """KM and limits including the noise, for one stratum's noisy (bins, 1 + K) histogram.

    Two estimates, each with a variance Greenwood's on the post-processed counts x_pp (which
    needs counts >= 0), S_pp^2 Var_G(-log S_pp), plus a noise variance from ``n_boot`` draws Z_b of
    the mechanism's law (mechanism_noise):

    - clipped: S_pp = KM of x_pp minus, with ``bias_correct``, the bootstrap bias
      b_pp = mean S(pp(x_pp + Z_b)) - S_pp (Efron & Tibshirani 1993, section 10.6), kept in
      [0, 1]; noise variance over those replicates. The more accurate with few patients per bin,
      but x_pp has fewer empty cells than the cohort, so b_pp understates the bias of clipping
      many empty cells, and its replicates understate the noise: alone, its limits under-cover
      (colon_cr on 30-day bins, 0.79-0.86).
    - unclipped: S(y) of the raw release y (coordinator.dp_uncertainty's centre: unbiased to
      first order, hazards kept in [-1, 1]), kept in [0, 1]; noise variance of the replicates
      S(y + Z_b), each kept in [0, 1] like the estimate. Its limits cover at about the nominal
      rate, but with few patients per bin it is the noisier.

    ``centre="auto"`` (default) releases, of three candidates, the one with the smallest estimated
    mean squared error from the noise over the curve's bins, and limits that are always the unclipped estimate's,
    widened where needed to contain the released estimate (so they cover at least as often as the
    unclipped ones alone). The two bootstrap estimates of the bias of clipping bracket it:
    b_raw = mean S(pp(y + Z_b)) - S(y), at the raw release, overstates it (y + Z_b carries twice
    the noise), b_pp understates it (x_pp has fewer empty cells than the cohort). Hence:

    - ``clipped``, S_pp itself: variance of the clipped replicates plus ((b_raw + b_pp) / 2)^2;
    - ``bias-corrected``, S_pp - b_pp: the same variance plus (b_raw - b_pp)^2, what the
      correction may leave;
    - ``unclipped``: variance of its replicates plus the square of their mean minus S(y), its
      second-order bias, which is large where the noisy numbers at risk are small.

    The clipped estimate (the plan's post-processing) is kept unless another's estimated MSE is
    below CLEARLY_BETTER times its own.

    With few patients per bin the plain clipped estimate wins (cohorts of 200 on monthly bins);
    with long runs of empty cells (no early censoring) the other two do.
    ``unclipped``: that estimate and its limits; ``clipped``: the clipped estimate (bias-corrected
    with ``bias_correct``) with limits around it on its own standard error (the rule before; it
    under-covers on sparse grids). Everything reads only the release, sigma and the plan: no
    privacy cost.

    Measured (benchmarks/bench_dp_utility.py --coverage; sigma 4.53, 400 releases, coverage of
    the cohort's exact pooled S by the 95% log limits at the report times; ``clipped`` -> ``auto``):
    colon_cr on 30-day bins 0.78-0.88 -> 0.975-0.983, RMSE 0.021-0.034 -> 0.020-0.030; on 90-day
    bins 0.985-1.0 -> 0.990-1.0, RMSE 0.010-0.017 -> 0.011-0.019; lung on 7-day bins (147 bins
    for 165 deaths) 0.00-0.30 -> 0.86-0.97; exponential cohorts of 200 on monthly bins 0.81-0.86
    -> 0.905-0.975, RMSE 0.050-0.099 -> 0.041-0.087; of 1,000 0.98-0.99 both.
    Lung's late times stay short of nominal: at 730 days the noisy number at risk has an SD of
    about 41 against some 10 patients; such a grid is too fine for the noise, and the release
    says so (coordinator.dp_warnings).
    Where the band's centre is 0 (or 1 with a non-zero standard error) and the transformed limits
    are undefined, the limits are (0, z se) (or (1 - z se, 1)).
    """
    if n_boot < 2:
        raise ValueError("the bootstrap needs at least 2 replicates")
    if centre not in CENTRES:
        raise ValueError(f"centre must be one of {', '.join(CENTRES)}, got {centre!r}")
    raw = np.asarray(hist, dtype=np.int64)
    counts, pp = postprocess(raw, method)
    surv, var_log = km_on_grid(counts, cause)
    # the same draws serve both plug-ins: the post-processed release and the raw one
    noise = mechanism_noise(sigma_total, (n_boot, *counts.shape), rng, mechanism)
    boot_surv = km_on_grid(postprocess(counts[None] + noise, method)[0], cause)[0]
    var_clip = boot_surv.var(axis=0, ddof=1)
    bias = boot_surv.mean(axis=0) - surv
    with np.errstate(invalid="ignore"):
        var_sampling = surv**2 * var_log
    clipped = np.clip(surv - bias, 0.0, 1.0) if bias_correct else surv
    se_clip = np.sqrt(var_sampling + var_clip)
    if centre == "clipped":
        lower, upper = _limits(clipped, se_clip, conf_level, conf_type)
        kind = "bias-corrected" if bias_correct else "clipped"
        return DPIntervals(clipped, surv, bias, se_clip, np.sqrt(var_clip), lower, upper, pp, kind)
    raw_surv = km_on_grid(raw, cause)[0]
    unclipped = np.clip(raw_surv, 0.0, 1.0)
    raw_reps = np.clip(km_on_grid(raw[None] + noise, cause)[0], 0.0, 1.0)
    var_raw = raw_reps.var(axis=0, ddof=1)
    se = np.sqrt(var_sampling + var_raw)
    bias_raw = km_on_grid(postprocess(raw[None] + noise, method)[0], cause)[0].mean(axis=0) - raw_surv
    ok = np.isfinite(se_clip) & np.isfinite(se)
    # the error the noise adds (the sampling variance is the same for every candidate)
    terms = noise_mse(var_clip, var_raw, bias, bias_raw, raw_reps.mean(axis=0) - unclipped)
    if not bias_correct:
        del terms["bias-corrected"]
    mse = {k: float(np.mean(v[ok])) if ok.any() else float("inf") for k, v in terms.items()}
    kind = release_choice(mse) if centre == "auto" else "unclipped"
    est = {"clipped": surv, "bias-corrected": clipped, "unclipped": unclipped}[kind]
    lower, upper = _limits(unclipped, se, conf_level, conf_type)
    with np.errstate(invalid="ignore"):
        lower, upper = np.fmin(lower, est), np.fmax(upper, est)
    return DPIntervals(est, surv, bias, se, np.sqrt(var_raw), lower, upper, pp, kind, unclipped, mse)


def bias_left(bias_pp: np.ndarray, bias_raw: np.ndarray, bias_unclipped: np.ndarray) -> dict[str, np.ndarray]:
    """Per candidate estimate, the bias the bootstrap leaves it (km_dp_intervals explains why):
    clipped the midpoint of the two estimates that bracket the bias of clipping, bias-corrected
    their difference, unclipped its own second-order bias."""
    return {"clipped": (bias_raw + bias_pp) / 2, "bias-corrected": bias_raw - bias_pp, "unclipped": bias_unclipped}


def noise_mse(var_pp: np.ndarray, var_raw: np.ndarray, bias_pp: np.ndarray, bias_raw: np.ndarray,
              bias_unclipped: np.ndarray) -> dict[str, np.ndarray]:
    """Per candidate, the noise variance of its replicates (the clipped ones' for both clipped
    candidates, the raw ones' for the unclipped) plus the square of bias_left."""
    left = bias_left(bias_pp, bias_raw, bias_unclipped)
    return {k: (var_raw if k == "unclipped" else var_pp) + b**2 for k, b in left.items()}


def release_choice(mse: dict[str, float]) -> str:
    """The estimate to release: the clipped one unless another's estimated MSE is below
    CLEARLY_BETTER times its own (then the smallest)."""
    best = min(mse, key=mse.__getitem__)
    return best if mse[best] < CLEARLY_BETTER * mse["clipped"] else "clipped"


def _limits(centre: np.ndarray, se: np.ndarray, conf_level: float, conf_type: str) -> tuple[np.ndarray, np.ndarray]:
    """coordinator.km.confidence_limits on SE(log S) = se / S; where they are undefined because the
    centre is 0, or 1 with se > 0 (noise can put either anywhere on the curve), plain limits."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # a tiny S with a large se: limit 0
        lower, upper = confidence_limits(centre, np.where(centre > 0, se / centre, np.nan), conf_level, conf_type)
    reach = z_value(conf_level) * se
    at_zero = centre == 0
    at_one = (centre == 1) & (se > 0) & ~(np.isfinite(lower) & np.isfinite(upper))
    lower = np.where(at_zero, 0.0, np.where(at_one, np.maximum(1.0 - reach, 0.0), lower))
    upper = np.where(at_zero, np.minimum(reach, 1.0), np.where(at_one, 1.0, upper))
    return lower, upper


MAX_PLAUSIBLE_COUNT = 2**40


def _block_totals(tallies: Tallies) -> list[tuple[str, int, int]]:
    """(block, total, cells) for every block that counts each patient once: each histogram with
    its dropped cells, each categorical count."""
    totals = []
    for b in tallies.blocks:
        if b.key.startswith("surv:"):
            dropped = tallies[b.key.replace("surv:", "dropped:", 1)]
            totals.append((b.key, int(tallies[b.key].sum()) + int(dropped.sum()), b.size + dropped.size))
        elif b.key.startswith("count:"):
            totals.append((b.key, int(tallies[b.key].sum()), b.size))
    return totals


def noisy_size(tallies: Tallies, sigma_total: float) -> tuple[float, float]:
    """The number of patients from a noisy sum, and the SD of its noise.

    Every block in _block_totals counts all n patients, each cell with independent noise of
    variance sigma^2, so block j's total is n plus noise of variance sigma^2 c_j (c_j its cells).
    Their inverse-variance weighted mean sum_j (T_j / c_j) / sum_j (1 / c_j) is unbiased with
    variance sigma^2 / sum_j (1 / c_j), below that of any one block (Cochran 1954, the weighted
    mean of independent estimates). Post-processing of the raw release: no privacy cost.
    """
    totals = _block_totals(tallies)
    if not totals:
        return 0.0, 0.0
    w = np.array([1.0 / c for _, _, c in totals])
    t = np.array([float(tot) for _, tot, _ in totals])
    return float(w @ t / w.sum()), float(sigma_total / np.sqrt(w.sum()))


def check_noisy_tallies(tallies: Tallies, sigma_total: float, bands: float = 12.0) -> list[str]:
    """Problems that show the masks did not cancel, in a noisy sum (empty: plausible).

    With DP the exact checks of coordinator.aggregate (no negative cell, every block adding
    up to n) cannot hold. Instead: no cell below -12 sigma or above 2^40, and the totals of
    the noisy blocks (each histogram with its dropped cell, each categorical count), which all
    estimate n, agree within 12 noise SDs of their difference. Masks that did not cancel leave
    cells spread over all of int64 and fail this with certainty; an honest sum fails it only
    through a 12-sigma draw.
    """
    problems = []
    for b in tallies.blocks:
        if not b.key.startswith(("surv:", "dropped:", "count:")):
            continue
        a = tallies[b.key]
        if a.size and (int(a.min()) < -bands * sigma_total or int(a.max()) > MAX_PLAUSIBLE_COUNT):
            problems.append(f"block {b.key}: a cell lies outside what noise can explain")
    for (k1, t1, c1), (k2, t2, c2) in itertools.pairwise(_block_totals(tallies)):
        if abs(t1 - t2) > bands * sigma_total * np.sqrt(c1 + c2):
            problems.append(f"blocks {k1} and {k2}: totals {t1} and {t2} differ by more than noise can explain")
    return problems
