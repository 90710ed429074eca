"""The in-process secure run (masking on) against lifelines on the same rows pooled in one
DataFrame, both starting from data already in memory; and 100 sites x 10^4 in one process."""

from __future__ import annotations

import resource
import subprocess
import sys
import warnings
from functools import partial

import numpy as np
import pandas as pd

from benchmarks.timing import median_times
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


def peak_gib() -> float:
    """This process's peak resident memory. VmHWM belongs to the process image, while ru_maxrss
    on Linux carries over the parent's peak through fork and exec."""
    try:
        with open("/proc/self/status") as f:
            kib = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
        return kib / 2**20
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20 * (1 if sys.platform != "darwin" else 2**-10)


def hundred_sites() -> None:
    """100 sites x 10^4 patients, run in a process of its own so its peak memory is its own."""
    p = plan()
    rng = np.random.default_rng(4)
    data = {f"s{i:03d}": prepared(frame(10**4, rng), f"s{i:03d}") for i in range(100)}
    wall, cpu = median_times(lambda: run_prepared(p, data), repeat=3)
    peak = peak_gib()
    print(f"100 sites x 10^4 patients in one process: {wall:.2f} s per run ({cpu:.2f} s CPU), "
          f"peak memory of the whole process {peak:.2f} GiB (target: under 10 s within 4 GB).")


def main() -> None:
    warnings.simplefilter("ignore")
    p = plan()
    rng = np.random.default_rng(2)
    print("Both sides start from data in memory: fedsurv from each site's prepared arrays (it runs the "
          "whole round: signed queries, every site's checks, tallies and pairwise masks, the masked sum, "
          "decoding, KM, both CIFs and the log-rank test with results assembled as JSON values); lifelines "
          "from one pooled DataFrame (KaplanMeierFitter, AalenJohansenFitter for both causes with jitter "
          "off, multivariate_logrank_test). Medians of 5 runs (3 from 10^6 pooled rows, 1 at 10^7); CPU is "
          "the process's time.process_time, steadier than wall time on a shared machine.\n")
    print("| sites | patients per site | pooled rows | fedsurv wall | fedsurv CPU | lifelines wall | lifelines CPU "
          "| lifelines / fedsurv (wall) | (CPU) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n_sites in (3, 10, 30, 100):
        for per_site in (10**3, 10**4, 10**5):
            rows = n_sites * per_site
            frames = [frame(per_site, rng) for _ in range(n_sites)]
            data = {f"s{i:03d}": prepared(f, f"s{i:03d}") for i, f in enumerate(frames)}
            pooled = pd.concat(frames, ignore_index=True)
            del frames
            repeat = 5 if rows < 10**6 else 3 if rows < 10**7 else 1
            f_wall, f_cpu = median_times(partial(run_prepared, p, data), repeat=repeat)
            l_wall, l_cpu = median_times(partial(lifelines_pooled, pooled), repeat=repeat)
            print(f"| {n_sites} | {per_site:,} | {rows:,} | {f_wall:.3f} s | {f_cpu:.3f} s | {l_wall:.3f} s "
                  f"| {l_cpu:.3f} s | {l_wall / f_wall:.1f}x | {l_cpu / f_cpu:.1f}x |", flush=True)
            del data, pooled
    print("\nTarget: 30 sites x 10^5 patients at least 5 times faster than lifelines on the 3 million pooled rows.\n")
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_pooled", "--hundred"], capture_output=True,
                         text=True, check=True)
    print(out.stdout.strip())


if __name__ == "__main__":
    if "--hundred" in sys.argv:
        hundred_sites()
    else:
        main()
