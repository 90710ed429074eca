"""Utility of distributed DP: RMSE of S(24 months) against the exact pooled estimate.

Cohorts of N = 200, 1,000 and 10,000 patients with exponential survival (S(24) = 0.58,
the seed study's overall survival at 24 months), cut at a 36-month horizon, are tallied on
monthly and quarterly bins, under two censoring patterns:
- ``heavy``: uniform over 0 to 48 months (half the patients censored before 24 months);
- ``study``: uniform over 12 to 96 months, as in the seed study (accrual over 7 years, at
  least a year of follow-up for everyone alive): no censoring in the first year.
RMSE depends on the cohort, not only on N: the noise moves each hazard d_j / n_j by
sigma / n_j, so heavy early censoring (smaller n_j) costs accuracy. Each repetition draws a new cohort, adds
the noise of the requested epsilon (delta = 1e-6, one histogram per patient, deduplicated
sites) with the exact sampler, clips the cells at 0 (coordinator/dp_postprocess.py) and
compares the Kaplan-Meier S(24) with that of the same cohort without noise.

Three ways to put the noise on (columns):
- ``sigma``: the total noise the budget needs (central discrete Gaussian, sigma = 4.53, 1.64,
  0.57); this is also what 5 sites with 1 tolerated colluder add when sigma / 2 >= 1.5;
- ``floor``: 5 participants, 1 colluding, so t = 4 honest sites each adding
  N_Z(0, max(1.5, sigma/2)^2) (protocol.dp_sampler.noise_share, below_floor = "raise");
- ``skellam``: the same sites with the Skellam fallback below the floor, calibrated to
  Skellam's own privacy bound (protocol.dp_plan.noise_parameters).

A second table compares post-processings of the same releases at the budget's sigma (all
cost no privacy): cells clipped at 0 (the first table's); their bootstrap bias-corrected
estimate; the centre results.json reports for Kaplan-Meier (``KM default``: that one, or the
unclipped one where its bias correction is in doubt, coordinator.dp_postprocess.km_dp_intervals);
the unclipped noisy counts (what coordinator.dp_uncertainty centres incidence and RMST on);
isotonic numbers at risk; and the floor: sigma times the norm of the gradient of S(24) with
respect to every cell, on the exact counts (delta method). That is the Cramer-Rao bound for
any estimator unbiased to first order from one histogram with independent N(0, sigma^2)
noise per cell (Lehmann & Casella 1998, Theorem 2.6.2 with Fisher information I / sigma^2),
so no post-processing of the single release beats it without bias.

A third table (``--coverage``) is the Kaplan-Meier limits' coverage under noise: fixed cohorts
(R's colon_cr, any event, 30- and 90-day bins to 2,700 days; lung, 7-day bins to 1,022 days)
and fresh exponential cohorts (N = 200 and 1,000, monthly and quarterly bins), R releases each
at sigma 4.53 (epsilon 1, delta 1e-6): how often the 95% limits (plan default conf_type log)
contain the cohort's exact pooled S at the report times, and the RMSE of the released estimate,
for the clipped bias-corrected estimate with limits around it (``bias-corrected``) and for
km_dp_intervals's default (``auto``: limits of the unclipped estimate, the clipped estimate unless
another's estimated noise MSE is clearly smaller, limits widened to contain it). A fourth does the
same for the incidence of cause 1 (coordinator.dp_uncertainty.cif_dp, same rule): fresh
competing-risks cohorts of 100 to 1,000 and colon_cr's recurrence.

Run: python -m benchmarks.bench_dp_utility [--reps R] [--boot B] [--coverage]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from coordinator.dp_postprocess import (
    RELEASED_ESTIMATES,
    clip_histogram,
    km_dp_intervals,
    km_on_grid,
    postprocess,
)
from protocol.dp_plan import PrivacySpec, noise_parameters
from protocol.dp_sampler import NoiseShare, rational_variance
from protocol.plan import parse_plan

DELTA = 1e-6
HAZARD = -math.log(0.58) / 24.0
HORIZON, REPORT = 36, 24
PARTICIPANTS, COLLUDING = 5, 1

PLAN_TEXT = """
[plan]
title = "dp utility"
time_unit = "months"
bin_width = {w}
horizon = 36
[endpoints.os]
time = "t"
event = "s"
causes = {{ 1 = "death" }}
[[analyses]]
name = "os"
kind = "km"
endpoint = "os"
"""


CENSORING = {"heavy": (0.0, 48.0), "study": (12.0, 96.0)}


def grid_counts(time: np.ndarray, outcome: np.ndarray, width: float, horizon: float, columns: int = 2) -> np.ndarray:
    """(bins, columns) counts, column 0 censored and k cause k: bin ceil(t / width), censored past
    the horizon (site_node.tally's rule)."""
    past = time > horizon
    t, o = np.where(past, horizon, time), np.where(past, 0, outcome)
    n_bins = int(horizon // width) + 1
    b = np.ceil(t / width - 1e-9).astype(np.int64)
    return np.bincount(b * columns + o, minlength=n_bins * columns).reshape(n_bins, columns)


def cohort_histogram(n: int, width: int, rng: np.random.Generator, censoring: str = "heavy") -> np.ndarray:
    """(bins, 2) counts of one exponential cohort under the given censoring."""
    death = rng.exponential(1 / HAZARD, n)
    censor = rng.uniform(*CENSORING[censoring], n)
    return grid_counts(np.minimum(death, censor), (death <= censor).astype(np.int64), width, HORIZON)


def shares(epsilon: float, width: int) -> dict[str, tuple[NoiseShare, int]]:
    """Per column: the share each noising party adds and how many parties add it."""
    plan = parse_plan(PLAN_TEXT.format(w=width))
    spec = PrivacySpec(epsilon=epsilon, delta=DELTA, colluding_sites=COLLUDING, deduplicated=True)
    raise_ = noise_parameters(spec, plan, PARTICIPANTS)
    skel = noise_parameters(PrivacySpec(epsilon=epsilon, delta=DELTA, colluding_sites=COLLUDING,
                                        deduplicated=True, below_floor="skellam"), plan, PARTICIPANTS)
    return {"sigma": (NoiseShare("gaussian", rational_variance(raise_.sigma_target)), 1),
            "floor": (raise_.share, raise_.honest_sites),
            "skellam": (skel.share, skel.honest_sites)}


def rmse(n: int, width: int, share: NoiseShare, parties: int, reps: int, rng: np.random.Generator,
         censoring: str) -> float:
    col = REPORT // width
    errors = []
    hists = [cohort_histogram(n, width, rng, censoring) for _ in range(reps)]
    size = hists[0].size
    noise = share.sample(reps * parties * size).reshape(reps, parties, *hists[0].shape).sum(axis=1)
    for h, z in zip(hists, noise):
        exact = km_on_grid(h)[0][col]
        noisy = km_on_grid(clip_histogram(h + z)[0])[0][col]
        errors.append(noisy - exact)
    return float(np.sqrt(np.mean(np.square(errors))))


def km_floor(counts: np.ndarray, b: int, sigma: float) -> float:
    """sigma * |grad S(b)| over every cell of (bins, 2) exact counts (censored, events).

    log S(b) = sum_{j <= b} log(1 - d_j / n_j), n_j = sum_{k >= j} (d_k + c_k): a cell of bin k
    moves n_j for every j <= min(k, b) by d_j / (n_j (n_j - d_j)) and an event cell of bin
    k <= b moves d_k by -1 / (n_k - d_k) (Kaplan & Meier 1958; delta method).
    """
    d, c = counts[:, 1].astype(float), counts[:, 0].astype(float)
    n = np.cumsum((d + c)[::-1])[::-1]
    w = np.zeros(n.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        w[: b + 1] = np.where(d[: b + 1] > 0, d[: b + 1] / (n[: b + 1] * (n[: b + 1] - d[: b + 1])), 0.0)
        via_n = np.cumsum(w)
        g_event = via_n.copy()
        g_event[: b + 1] -= np.where(n[: b + 1] > d[: b + 1], 1.0 / (n[: b + 1] - d[: b + 1]), 0.0)
    s = km_on_grid(counts)[0][b]
    return float(s * sigma * math.sqrt((via_n**2).sum() + (g_event**2).sum()))


VARIANTS = ("clip", "clip, bias-corrected", "KM default", "unclipped", "isotonic")


def variants(n: int, width: int, sigma: float, reps: int, boot: int, rng: np.random.Generator,
             censoring: str) -> tuple[dict[str, float], float]:
    """RMSE of S(24) per post-processing of the same central-sigma releases, and the RMS floor."""
    col = REPORT // width
    share = NoiseShare("gaussian", rational_variance(sigma))
    errors: dict[str, list[float]] = {k: [] for k in VARIANTS}
    floors = []
    for _ in range(reps):
        h = cohort_histogram(n, width, rng, censoring)
        y = h + share.sample(h.size).reshape(h.shape)
        exact = km_on_grid(h)[0][col]
        errors["clip"].append(km_on_grid(clip_histogram(y)[0])[0][col] - exact)
        errors["clip, bias-corrected"].append(km_dp_intervals(y, sigma, boot, rng, centre="clipped").estimate[col]
                                              - exact)
        errors["KM default"].append(km_dp_intervals(y, sigma, boot, rng).estimate[col] - exact)
        errors["unclipped"].append(float(np.clip(km_on_grid(y)[0][col], 0, 1)) - exact)
        errors["isotonic"].append(km_on_grid(postprocess(y, "isotonic")[0])[0][col] - exact)
        floors.append(km_floor(h, col, sigma))
    return ({k: float(np.sqrt(np.mean(np.square(v)))) for k, v in errors.items()},
            float(np.sqrt(np.mean(np.square(floors)))))


DATA = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "data"
KM_CENTRES = ("clipped", "auto")


def fixed_cohorts() -> dict[str, tuple[np.ndarray, list[float]]]:
    """R's data sets on grids: (bins, 2) counts and report times (days)."""
    import pandas as pd

    colon = pd.read_csv(DATA / "colon_cr.csv")
    lung = pd.read_csv(DATA / "lung.csv")
    c_t, c_e = colon["cr_time"].to_numpy(float), (colon["cr_event"].to_numpy() > 0).astype(np.int64)
    colon_times = [365, 730, 1095, 1460, 1825]
    return {"colon_cr, 30-day bins": (grid_counts(c_t, c_e, 30.0, 2700.0), colon_times),
            "colon_cr, 90-day bins": (grid_counts(c_t, c_e, 90.0, 2700.0), colon_times),
            "lung, 7-day bins": (grid_counts(lung["time"].to_numpy(float), (lung["status"].to_numpy() == 2)
                                             .astype(np.int64), 7.0, 1022.0), [90, 180, 365, 540, 730])}


def km_coverage(cohort, width: float, times: list[float], sigma: float, reps: int, boot: int,
                rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Per centre: coverage and RMSE at the report times over ``reps`` releases, and how often the
    rule chose each estimate. ``cohort`` is a (bins, 2) array or a function of rng giving one."""
    idx = [int(t // width) for t in times]
    share = NoiseShare("gaussian", rational_variance(sigma))
    hits = {c: [] for c in KM_CENTRES}
    errs = {c: [] for c in KM_CENTRES}
    chosen = []
    for _ in range(reps):
        h = cohort(rng) if callable(cohort) else cohort
        exact = km_on_grid(h)[0][idx]
        y = h + share.sample(h.size).reshape(h.shape)
        for c in KM_CENTRES:
            iv = km_dp_intervals(y, sigma, boot, rng, conf_type="log", centre=c)
            hits[c].append((iv.lower[idx] <= exact) & (exact <= iv.upper[idx]))
            errs[c].append(iv.estimate[idx] - exact)
            if c == "auto":
                chosen.append(iv.centre)
    picks = " / ".join(f"{chosen.count(k) / len(chosen):.2f}" for k in RELEASED_ESTIMATES)
    return {c: (np.mean(hits[c], axis=0), np.sqrt(np.mean(np.square(errs[c]), axis=0)), picks) for c in KM_CENTRES}


def coverage_table(reps: int, boot: int, rng: np.random.Generator) -> None:
    sigma = 4.53
    print(f"\nKaplan-Meier limits under noise (sigma {sigma}, {reps} releases, {boot} bootstrap draws): coverage "
          f"of the cohort's exact pooled S by the 95% limits, and RMSE, at five report times; `bias-corrected` = "
          f"the clipped bias-corrected estimate with limits around it (centre='clipped'), `auto` = "
          f"km_dp_intervals's default, `released` = share of releases where it released the clipped / bias-corrected "
          f"/ unclipped estimate.\n")
    print("| cohort | times | coverage bias-corrected | coverage auto | RMSE bias-corrected | RMSE auto | released |")
    print("|---|---|---|---|---|---|---:|")
    for name, (h, times) in fixed_cohorts().items():
        width = float(name.split(", ")[1].split("-")[0])
        res = km_coverage(h, width, times, sigma, reps, boot, rng)
        _coverage_row(name, times, res)
    for n, width, label, cens in ((200, 1, "monthly", "heavy"), (200, 1, "monthly", "study"), (200, 3, "quarterly", "heavy"),
                                  (1_000, 1, "monthly", "heavy")):
        times = [6, 12, 24, 30]
        res = km_coverage(lambda r, n=n, w=width, c=cens: cohort_histogram(n, w, r, c), float(width), times, sigma,
                          reps, boot, rng)
        _coverage_row(f"exponential N = {n:,}, {label}, {cens} censoring", times, res)


def competing_histogram(n: int, width: float, rng: np.random.Generator) -> np.ndarray:
    """(bins, 3) censored, cause 1, cause 2: exponential cause-specific hazards 0.02 and 0.01 a month,
    censoring uniform on 0-60 months, 36-month horizon."""
    t1, t2, c = rng.exponential(50, n), rng.exponential(100, n), rng.uniform(0, 60, n)
    outcome = np.where(c <= np.minimum(t1, t2), 0, np.where(t1 <= t2, 1, 2))
    return grid_counts(np.minimum(np.minimum(t1, t2), c), outcome, width, 36.0, columns=3)


def cif_coverage_table(reps: int, boot: int, rng: np.random.Generator) -> None:
    """Incidence of cause 1 under noise: what coordinator.dp_uncertainty.cif_dp releases against the
    clipped and unclipped estimates, and its limits' coverage of the exact pooled incidence."""
    import pandas as pd

    from coordinator.dp_uncertainty import cif_dp, cif_on_grid, noise_replicates

    sigma = 4.53
    share = NoiseShare("gaussian", rational_variance(sigma))
    colon = pd.read_csv(DATA / "colon_cr.csv")
    c_t, c_o = colon["cr_time"].to_numpy(float), colon["cr_event"].to_numpy(np.int64)

    cohorts = [(f"competing risks N = {n:,}, {lab}", lambda r, n=n, w=w: competing_histogram(n, w, r), w, [12.0, 24.0])
               for n, w, lab in ((100, 1.0, "monthly"), (300, 1.0, "monthly"), (1_000, 1.0, "monthly"),
                                 (300, 3.0, "quarterly"))]
    cohorts += [(f"colon_cr recurrence, {w:g}-day bins", grid_counts(c_t, c_o, w, 2700.0, columns=3), w,
                 [365.0, 730.0, 1800.0]) for w in (90.0, 30.0)]
    print(f"\nCumulative incidence of cause 1 under noise (sigma {sigma}, {reps} releases, {boot} bootstrap draws): "
          f"coverage of the exact pooled incidence by the 95% limits of what cif_dp releases, RMSE of the released, "
          f"clipped and unclipped estimates, and the share of releases of the clipped / bias-corrected / unclipped "
          f"estimate.\n")
    print("| cohort | times | coverage | RMSE released | RMSE clipped | RMSE unclipped | released |")
    print("|---|---|---|---|---|---|---:|")
    for name, cohort, width, times in cohorts:
        idx = [int(t // width) for t in times]
        cover, errs, picks = [], {"released": [], "clipped": [], "unclipped": []}, []
        for _ in range(reps):
            h = cohort(rng) if callable(cohort) else cohort
            exact = cif_on_grid(h)[idx, 0]
            raw = h + share.sample(h.size).reshape(h.shape)
            pp = postprocess(raw)[0]
            dp = cif_dp(np.arange(h.shape[0]) * width, pp, raw, noise_replicates(raw, sigma, boot, rng))
            cover.append((dp.lower[idx, 0] <= exact) & (exact <= dp.upper[idx, 0]))
            errs["released"].append(dp.estimate[idx, 0] - exact)
            errs["clipped"].append(cif_on_grid(pp)[idx, 0] - exact)
            errs["unclipped"].append(dp.band_centre[idx, 0] - exact)
            picks.append(dp.centre)
        r = {k: " ".join(f"{x:.3f}" for x in np.sqrt(np.mean(np.square(v), axis=0))) for k, v in errs.items()}
        share_txt = " / ".join(f"{picks.count(k) / len(picks):.2f}" for k in RELEASED_ESTIMATES)
        print(f"| {name} | {' '.join(f'{t:g}' for t in times)} | {' '.join(f'{x:.3f}' for x in np.mean(cover, axis=0))} "
              f"| {r['released']} | {r['clipped']} | {r['unclipped']} | {share_txt} |", flush=True)


def _coverage_row(name: str, times: list[float], res: dict[str, tuple[np.ndarray, np.ndarray, str]]) -> None:
    def fmt(a: np.ndarray, d: int) -> str:
        return " ".join(f"{v:.{d}f}" for v in a)

    print(f"| {name} | {' '.join(f'{t:g}' for t in times)} | {fmt(res['clipped'][0], 3)} | {fmt(res['auto'][0], 3)} | "
          f"{fmt(res['clipped'][1], 3)} | {fmt(res['auto'][1], 3)} | {res['auto'][2]} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--coverage", action="store_true", help="only the Kaplan-Meier and incidence coverage tables")
    args = ap.parse_args()
    reps = args.reps
    rng = np.random.default_rng(2026)
    t0 = time.perf_counter()
    if args.coverage:
        coverage_table(reps, args.boot, rng)
        cif_coverage_table(reps, args.boot, rng)
        print(f"\n({time.perf_counter() - t0:.0f} s)")
        return
    print("## Distributed differential privacy: utility\n")
    print(f"RMSE of the Kaplan-Meier S(24 months) against the same cohort's exact pooled estimate, "
          f"{reps} cohorts per cell; exponential survival with S(24) = 0.58, censoring `heavy` (uniform on 0-48 "
          f"months) or `study` (uniform on 12-96 months, like the seed study's follow-up), delta = {DELTA:g}, one histogram "
          f"per patient, cells clipped at 0. Columns: `sigma` = the total noise the budget needs; "
          f"`floor` and `skellam` = {PARTICIPANTS} sites with {COLLUDING} tolerated colluder (t = "
          f"{PARTICIPANTS - COLLUDING} honest shares), below the 1.5 floor raised or Skellam.\n")
    print("| censoring | bins | N | epsilon | sigma | RMSE sigma | floor: sigma total | RMSE floor "
          "| skellam: sigma total | RMSE skellam |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cens in CENSORING:
        for width, label in ((1, "monthly"), (3, "quarterly")):
            for n in (200, 1_000, 10_000):
                for eps in (1.0, 3.0, 10.0):
                    sh = shares(eps, width)
                    row = [cens, label, f"{n:,}", f"{eps:g}", f"{sh['sigma'][0].sigma:.2f}"]
                    for key in ("sigma", "floor", "skellam"):
                        share, parties = sh[key]
                        if key != "sigma":
                            row.append(f"{share.sigma * math.sqrt(parties):.2f}")
                        row.append(f"{rmse(n, width, share, parties, reps, rng, cens):.4f}")
                    print("| " + " | ".join(row) + " |", flush=True)
    print(f"\nPost-processings of the same releases at the budget's sigma (central noise), RMSE of S(24) against "
          f"the exact pooled estimate, {reps} cohorts per cell, {args.boot} bootstrap draws for the bias "
          f"correction; `floor` = RMS over the cohorts of sigma |grad S(24)| on the exact counts (the first-order "
          f"bound for unbiased post-processing).\n")
    print("| censoring | bins | N | epsilon | sigma | " + " | ".join(f"RMSE {v}" for v in VARIANTS) + " | floor |")
    print("|---|---|---:|---:|---:|" + "---:|" * (len(VARIANTS) + 1))
    for cens in CENSORING:
        for width, label in ((1, "monthly"), (3, "quarterly")):
            for n in (200, 1_000, 10_000):
                for eps in ((1.0, 3.0, 10.0) if cens == "heavy" else (1.0,)):
                    sigma = shares(eps, width)["sigma"][0].sigma
                    res, floor = variants(n, width, sigma, reps, args.boot, rng, cens)
                    print(f"| {cens} | {label} | {n:,} | {eps:g} | {sigma:.2f} | "
                          + " | ".join(f"{res[v]:.4f}" for v in VARIANTS) + f" | {floor:.4f} |", flush=True)
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
