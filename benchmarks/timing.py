"""Medians of repeated calls: wall time, and the process's CPU time beside it.

The benchmark machine is shared, so wall time is noisy; CPU time (time.process_time) counts
only this process's work and is the steadier number when other jobs run. fedsurv's in-process
paths are single-threaded, so on an idle machine the two agree.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], repeat: int = 5) -> float:
    """Median wall time of `repeat` calls."""
    return median_times(fn, repeat)[0]


def median_times(fn: Callable[[], object], repeat: int = 5) -> tuple[float, float]:
    """Median wall time and median CPU time of `repeat` calls, in seconds."""
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)
