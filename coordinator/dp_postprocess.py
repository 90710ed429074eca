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
post-processed release (the plug-in truth), each replicate post-processed and its KM curve computed; the noise
variance is the replicates' variance of S(t) (Efron & Tibshirani 1993, ch. 6; the same use
for DP releases in Ferrando, Wang & Sheldon 2022, "Parametric bootstrap for differentially
private confidence intervals", AISTATS). Limits follow the plan's conf_type on the total
standard error (coordinator.km.confidence_limits), centred on the bootstrap bias-corrected
estimate by default.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import isotonic_regression

from coordinator.km import confidence_limits
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
    return np.cumprod(factor, axis=-1), np.cumsum(green, axis=-1)


@dataclass(frozen=True)
class DPIntervals:
    """KM at every bin of a noisy histogram, with limits that include the noise."""

    estimate: np.ndarray         # bias-corrected if asked (the centre of the limits), else as post-processed
    estimate_postprocessed: np.ndarray  # KM of the post-processed counts
    bias: np.ndarray             # bootstrap estimate of the post-processing bias of the latter
    std_err: np.ndarray          # total: sqrt(Greenwood var + noise var)
    std_err_noise: np.ndarray    # the bootstrap part alone
    lower: np.ndarray
    upper: np.ndarray
    postprocessing: PostProcessing


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


def km_dp_intervals(hist: np.ndarray, sigma_total: float, n_boot: int, rng: np.random.Generator, cause: int = 1,
                    method: str = "clip", conf_level: float = 0.95, conf_type: str = "log-log",
                    bias_correct: bool = True, mechanism: str = "gaussian") -> DPIntervals:
    """KM and limits including the noise, for one stratum's noisy (bins, 1 + K) histogram.

    Var(S) = S^2 Var_Greenwood(-log S) + Var_boot(S*), the second from ``n_boot`` replicates
    S* of the post-processed (released + fresh noise of the mechanism's law, mechanism_noise) histogram.
    Clipping pushes small event counts up and so S down; with ``bias_correct`` the estimate
    and the centre of the limits are S - (mean S* - S), clipped to [0, 1] (bootstrap bias
    correction, Efron & Tibshirani 1993, section 10.6), which brings the limits' coverage of
    the cohort's exact S back to nominal where clipping is frequent.
    """
    if n_boot < 2:
        raise ValueError("the bootstrap needs at least 2 replicates")
    counts, pp = postprocess(hist, method)
    surv, var_log = km_on_grid(counts, cause)
    # the plug-in truth is the post-processed release; each replicate goes through the mechanism again
    replicates = counts[None] + mechanism_noise(sigma_total, (n_boot, *counts.shape), rng, mechanism)
    boot_counts, _ = postprocess(replicates, method)
    boot_surv, _ = km_on_grid(boot_counts, cause)
    var_noise = boot_surv.var(axis=0, ddof=1)
    bias = boot_surv.mean(axis=0) - surv
    centre = np.clip(surv - bias, 0.0, 1.0) if bias_correct else surv
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(surv**2 * var_log + var_noise)
        se_log = np.where(centre > 0, se / centre, np.nan)
    lower, upper = confidence_limits(centre, se_log, conf_level, conf_type)
    return DPIntervals(centre, surv, bias, se, np.sqrt(var_noise), lower, upper, pp)


MAX_PLAUSIBLE_COUNT = 2**40


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
    totals: list[tuple[str, int, int]] = []
    for b in tallies.blocks:
        if not b.key.startswith(("surv:", "dropped:", "count:")):
            continue
        a = tallies[b.key]
        if a.size and (int(a.min()) < -bands * sigma_total or int(a.max()) > MAX_PLAUSIBLE_COUNT):
            problems.append(f"block {b.key}: a cell lies outside what noise can explain")
        if b.key.startswith("surv:"):
            dropped = tallies[b.key.replace("surv:", "dropped:", 1)]
            totals.append((b.key, int(a.sum()) + int(dropped.sum()), a.size + dropped.size))
        elif b.key.startswith("count:"):
            totals.append((b.key, int(a.sum()), a.size))
    for (k1, t1, c1), (k2, t2, c2) in itertools.pairwise(totals):
        if abs(t1 - t2) > bands * sigma_total * np.sqrt(c1 + c2):
            problems.append(f"blocks {k1} and {k2}: totals {t1} and {t2} differ by more than noise can explain")
    return problems
