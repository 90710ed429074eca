"""Binomial proportion with an exact (Clopper-Pearson) or Wilson score confidence interval.

References: Clopper & Pearson (1934) Biometrika 26:404-413; Wilson (1927) JASA 22:209-212;
Brown, Cai & DasGupta (2001) Statistical Science 16:101-133 (comparison of the intervals).
"""

from __future__ import annotations

from scipy.stats import binomtest

METHODS = {"clopper-pearson": "exact", "wilson": "wilson"}


def proportion_ci(
    successes: int, n: int, conf_level: float = 0.95, method: str = "clopper-pearson"
) -> tuple[float, float, float]:
    """(estimate, lower, upper) for x successes out of n.

    Clopper-Pearson: the limits solve P(X >= x | p_L) = alpha/2 and P(X <= x | p_U) = alpha/2,
    i.e. p_L = Beta(alpha/2; x, n - x + 1), p_U = Beta(1 - alpha/2; x + 1, n - x), with
    p_L = 0 at x = 0 and p_U = 1 at x = n (so 0 of n gives 0 to 1 - (alpha/2)^(1/n)).
    Wilson (score, no continuity correction), with p = x/n and z = Phi^-1(1 - alpha/2):
    (p + z^2/(2n) -+ z sqrt(p(1 - p)/n + z^2/(4n^2))) / (1 + z^2/n).
    Computed by scipy.stats.binomtest(...).proportion_ci.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}")
    successes, n = int(successes), int(n)
    if n <= 0:
        raise ValueError(f"a proportion needs n >= 1, got n = {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in 0..n, got {successes} of {n}")
    if not 0.0 < conf_level < 1.0:
        raise ValueError(f"conf_level must lie strictly between 0 and 1, got {conf_level}")
    ci = binomtest(successes, n).proportion_ci(confidence_level=conf_level, method=METHODS[method])
    return successes / n, float(ci.low), float(ci.high)
