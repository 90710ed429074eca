"""Site tallies: rows per second, file parsing and tallying reported apart."""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.timing import median_seconds, median_times
from benchmarks.workload import frame, plan, prepared
from site_node.prepare import prepare_site_data
from site_node.tally import compute_tallies


def main() -> None:
    p = plan()
    rng = np.random.default_rng(1)
    print("Workload: whole-day times, two competing causes, a two-level group; the plan's KM, CIF and "
          "log-rank need an unstratified and a by-group histogram of 3,651 bins x 3 outcomes. "
          "Parsing is `prepare_site_data` (read, map, validate every row); tallying is `compute_tallies` "
          "on the prepared arrays.\n")
    print("| rows | parse CSV (rows/s) | parse Parquet (rows/s) | tally (rows/s, wall) | tally (rows/s, CPU) "
          "| tally time |")
    print("|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (10**4, 10**5, 10**6, 10**7):
            df = frame(n, rng)
            data = prepared(df)
            reps = 30 if n <= 10**5 else 7 if n < 10**7 else 5
            t_tally, c_tally = median_times(partial(compute_tallies, p, data), repeat=reps)
            parquet = Path(tmp) / "d.parquet"
            df.to_parquet(parquet)
            t_pq = median_seconds(partial(prepare_site_data, p, parquet), repeat=3 if n < 10**7 else 1)
            if n <= 10**6:
                csv = Path(tmp) / "d.csv"
                df.to_csv(csv, index=False)
                t_csv = median_seconds(partial(prepare_site_data, p, csv), repeat=3)
                csv_rate = f"{n / t_csv:,.0f}"
            else:
                csv_rate = "(not run: 10^7-row CSV)"
            print(f"| {n:,} | {csv_rate} | {n / t_pq:,.0f} | {n / t_tally:,.0f} | {n / c_tally:,.0f} "
                  f"| {t_tally * 1e3:.2f} ms |", flush=True)
    print("\nTarget: tallying at least 50 million rows per second after parsing.")


if __name__ == "__main__":
    main()
