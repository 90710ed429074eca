"""Descriptive statistics ("Table 1") from pooled counts and fixed-point sums.

Counts per level and the moments n, sum and sum of squares are additive across sites, so
the pooled description equals the one computed on the pooled rows. Sums of fixed-point
integers are exact in Python's unbounded ints; the SD uses the n - 1 denominator
(Bessel's correction), as R's sd().
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def describe_categorical(counts: np.ndarray, levels: tuple[str, ...]) -> dict:
    """Count and percent of each level; percent of the patients with a known level.

    ``counts`` holds one count per level followed by the count of missing values (the
    layout of a ``count:`` tally); without that last cell no value is missing. percent =
    100 * count / n with n the patients with a known level; None when n = 0.
    """
    c = [int(v) for v in np.asarray(counts).ravel()]
    if len(c) == len(levels):
        c.append(0)
    if len(c) != len(levels) + 1:
        raise ValueError(f"expected {len(levels)} level counts (+ missing), got {len(c)}")
    if any(v < 0 for v in c):
        raise ValueError("counts must not be negative")
    n = sum(c[:-1])
    return {
        "n": n,
        "levels": {
            str(lvl): {"count": k, "percent": (100 * k / n) if n else None}
            for lvl, k in zip(levels, c[:-1])
        },
        "missing": c[-1],
    }


def describe_numeric(n: int, sum_fixed: int, sumsq_fixed: int, n_missing: int, decimals: int) -> dict:
    """Mean and SD from sums of fixed-point values y = round(x * 10^decimals).

    mean = S1 / (n 10^d);  sd = sqrt((n S2 - S1^2) / (n (n - 1))) / 10^d,
    with S1 = sum y and S2 = sum y^2. Numerators stay exact integers and the ratio is rounded
    once, so no cancellation error enters the variance. mean is None when n = 0, sd when n < 2.
    """
    n, s1, s2 = int(n), int(sum_fixed), int(sumsq_fixed)
    if n < 0 or n_missing < 0 or s2 < 0:
        raise ValueError("n, the sum of squares and the missing count must not be negative")
    scale = 10 ** int(decimals)
    mean = float(Fraction(s1, n * scale)) if n else None
    sd = None
    if n >= 2:
        centred = n * s2 - s1 * s1
        if centred < 0:
            raise ValueError("inconsistent moments: n * sum of squares < sum^2")
        sd = math.sqrt(Fraction(centred, n * (n - 1) * scale * scale))
    return {"n": n, "mean": mean, "sd": sd, "missing": int(n_missing)}
