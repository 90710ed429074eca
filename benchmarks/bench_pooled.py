"""The in-process secure run (masking on) against lifelines on the same rows pooled in one
DataFrame, both starting from data already in memory; and 100 sites x 10^4 in one process."""

from __future__ import annotations

import resource
import sys
import warnings

import numpy as np
import pandas as pd

from benchmarks.timing import median_seconds
from benchmarks.workload import frame, plan, prepared
from fedsurv.runner import run_prepared


def lifelines_pooled(df: pd.DataFrame) -> None:
    from lifelines import AalenJohansenFitter, KaplanMeierFitter
    from lifelines.statistics import multivariate_logrank_test

    KaplanMeierFitter().fit(df["time"], df["event"] == 1)
    for cause in (1, 2):
        ajf = AalenJohansenFitter(calculate_variance=True)
        # Jitter off: lifelines would otherwise perturb tied times (it has no switch for it).
        ajf._check_for_duplicates = lambda **_kw: False
        ajf.fit(df["time"], df["event"], event_of_interest=cause)
    multivariate_logrank_test(df["time"], df["group"], df["event"] == 1)


def main() -> None:
    warnings.simplefilter("ignore")
    p = plan()
    rng = np.random.default_rng(2)
    print("| sites | patients per site | fedsurv secure run | lifelines pooled | lifelines / fedsurv |")
    print("|---:|---:|---:|---:|---:|")
    for n_sites in (3, 10, 30, 100):
        for per_site in (10**3, 10**4, 10**5):
            if n_sites * per_site > 3 * 10**6:
                continue
            frames = [frame(per_site, rng) for _ in range(n_sites)]
            data = {f"s{i:03d}": prepared(f, f"s{i:03d}") for i, f in enumerate(frames)}
            pooled = pd.concat(frames, ignore_index=True)
            t_fed = median_seconds(lambda: run_prepared(p, data), repeat=3)
            t_ll = median_seconds(lambda: lifelines_pooled(pooled), repeat=3)
            print(f"| {n_sites} | {per_site:,} | {t_fed:.3f} s | {t_ll:.3f} s | {t_ll / t_fed:.1f}x |", flush=True)
    print("\nTarget: 30 sites x 10^5 patients at least 5 times faster than lifelines on the 3 million pooled rows.")

    frames = [frame(10**4, rng) for _ in range(100)]
    data = {f"s{i:03d}": prepared(f, f"s{i:03d}") for i, f in enumerate(frames)}
    del frames
    t = median_seconds(lambda: run_prepared(p, data), repeat=3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20 * (1 if sys.platform != "darwin" else 2**-10)
    print(f"\n100 sites x 10^4 patients in one process: {t:.2f} s per run, peak memory {peak:.2f} GiB "
          "(target: under 10 s within 4 GB).")


if __name__ == "__main__":
    main()
