"""Exact samplers for integer privacy noise: discrete Gaussian, discrete Laplace, Skellam.

Every sample is produced from uniform random integers of the operating system
(``secrets``/``os.urandom``) and integer arithmetic only; no floating-point number is
ever drawn or rounded, so the output follows its distribution exactly (up to the quality
of the OS generator) and has none of the floating-point holes that make textbook
samplers leak (Mironov 2012, "On significance of the least significant bits for DP").

Algorithms (Canonne, Kamath & Steinke 2020, "The Discrete Gaussian for Differential
Privacy", NeurIPS; arXiv:2004.00010):

- Bernoulli(exp(-gamma)) for rational gamma = num/den (their Algorithm 1): for gamma <= 1
  draw A_k ~ Bernoulli(gamma / k) for k = 1, 2, ... until the first failure at K; return
  1 iff K is odd. For gamma > 1, floor(gamma) draws of Bernoulli(exp(-1)) must all succeed,
  then one of Bernoulli(exp(-(gamma - floor(gamma)))).
- Discrete Laplace, P(x) proportional to exp(-|x| s / t) (their Algorithm 2).
- Discrete Gaussian N_Z(0, sigma^2), P(x) proportional to exp(-x^2 / (2 sigma^2)) (their
  Algorithm 3): propose Y from the discrete Laplace of scale t = floor(sigma) + 1 and accept
  with probability exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)).

Poisson (for the Skellam fallback) is sampled by rejection from a geometric proposal: for
lambda <= 1/2, K with P(K = k) = (1 - lambda) lambda^k (count successes of
Bernoulli(lambda) before the first failure) is accepted with probability 1/K!, which leaves
P(k) proportional to lambda^k / k!, the Poisson law; a larger mean is the sum of
ceil(2 mu) such pieces. Skellam(mu) = Poisson(mu) - Poisson(mu), variance 2 mu; sums of
independent Skellam shares are exactly Skellam, which is why it is the fallback below the
floor of ``noise_share`` (see there).

sigma^2 is always a rational number (a ``Fraction``). ``rational_variance`` rounds a float
sigma up to a variance with denominator 2^10, so a share never carries less noise than
asked and the vectorised path's integers stay far from int64 overflow.
"""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np

VARIANCE_DENOMINATOR = 2**10
# sigma_i below this makes the sum of t discrete Gaussians measurably non-Gaussian:
# Kairouz, Liu & Steinke 2021 (ICML, "The distributed discrete Gaussian mechanism") bound the
# gap by tau = 10 sum_{k=1}^{t-1} exp(-2 pi^2 sigma_i^2 k / (k+1)), about 2.3e-9 per site at 1.5.
SIGMA_FLOOR = 1.5


class RandomSource(Protocol):
    """Uniform random integers; the only randomness the samplers use."""

    def randbelow(self, n: int) -> int: ...

    def randbelow_array(self, n: np.ndarray) -> np.ndarray: ...


class OSRandom:
    """The operating system's CSPRNG: ``secrets.randbelow`` and ``os.urandom`` words.

    ``randbelow_array`` draws uniform integers in [0, n_i) for an int64 array n (each
    below 2^62) by masking 64-bit OS words to the bit length of n_i - 1 and redrawing the
    ones that land at or above n_i: exactly uniform, accepting at least half each pass.
    """

    def randbelow(self, n: int) -> int:
        return secrets.randbelow(n)

    def randbelow_array(self, n: np.ndarray) -> np.ndarray:
        n = np.asarray(n, dtype=np.int64)
        if n.size and (n.min() < 1 or n.max() >= 2**62):
            raise ValueError("randbelow_array needs bounds in [1, 2^62)")
        mask = n - 1
        for shift in (1, 2, 4, 8, 16, 32):
            mask |= mask >> shift
        out = np.empty(n.shape, dtype=np.int64)
        todo = np.arange(n.size)
        flat_n, flat_mask, flat_out = n.ravel(), mask.ravel(), out.reshape(-1)
        while todo.size:
            words = np.frombuffer(os.urandom(8 * todo.size), dtype=np.int64) & flat_mask[todo]
            ok = words < flat_n[todo]
            flat_out[todo[ok]] = words[ok]
            todo = todo[~ok]
        return out


OS_RANDOM = OSRandom()

# ------------------------------------------------------------------ scalar samplers


def bernoulli(num: int, den: int, rs: RandomSource = OS_RANDOM) -> bool:
    """Bernoulli(num / den) for integers 0 <= num <= den."""
    return rs.randbelow(den) < num


def bernoulli_exp(num: int, den: int, rs: RandomSource = OS_RANDOM) -> bool:
    """Bernoulli(exp(-num/den)) for integers num >= 0, den > 0 (CKS 2020, Algorithm 1)."""
    if num < 0 or den <= 0:
        raise ValueError("bernoulli_exp needs num >= 0 and den > 0")
    whole, num = divmod(num, den)
    for _ in range(whole):
        if not _bernoulli_exp_le1(1, 1, rs):
            return False
    return _bernoulli_exp_le1(num, den, rs)


def _bernoulli_exp_le1(num: int, den: int, rs: RandomSource, k: int = 1) -> bool:
    while rs.randbelow(den * k) < num:
        k += 1
    return k % 2 == 1


def geometric_exp(num: int, den: int, rs: RandomSource = OS_RANDOM) -> int:
    """Successes of Bernoulli(exp(-num/den)) before the first failure."""
    v = 0
    while bernoulli_exp(num, den, rs):
        v += 1
    return v


def discrete_laplace(scale: Fraction | int, rs: RandomSource = OS_RANDOM) -> int:
    """One draw with P(x) proportional to exp(-|x| / scale) (CKS 2020, Algorithm 2)."""
    scale = Fraction(scale)
    if scale <= 0:
        raise ValueError("scale must be positive")
    t, s = scale.numerator, scale.denominator
    while True:
        u = rs.randbelow(t)
        if not bernoulli_exp(u, t, rs):
            continue
        x = u + t * geometric_exp(1, 1, rs)
        y = x // s
        negative = rs.randbelow(2) == 1
        if negative and y == 0:
            continue
        return -y if negative else y


def discrete_gaussian(sigma2: Fraction, rs: RandomSource = OS_RANDOM) -> int:
    """One draw of N_Z(0, sigma2): P(x) proportional to exp(-x^2 / (2 sigma2)) (CKS 2020, Alg. 3)."""
    a, b = _variance_parts(sigma2)
    t = math.isqrt(a // b) + 1
    den = 2 * a * b * t * t
    while True:
        y = discrete_laplace(t, rs)
        # (|y| - sigma2/t)^2 / (2 sigma2) with sigma2 = a/b, over one integer denominator
        if bernoulli_exp((abs(y) * b * t - a) ** 2, den, rs):
            return y


def poisson(mu: Fraction, rs: RandomSource = OS_RANDOM) -> int:
    """One Poisson(mu) draw for rational mu >= 0, by geometric proposals accepted w.p. 1/K!."""
    mu = Fraction(mu)
    if mu < 0:
        raise ValueError("mu must not be negative")
    if mu == 0:
        return 0
    pieces = math.ceil(2 * mu)
    lam = mu / pieces  # <= 1/2, so each proposal is accepted with probability >= (1-lam) e^lam > 0.82
    total = 0
    for _ in range(pieces):
        while True:
            k = 0
            while bernoulli(lam.numerator, lam.denominator, rs):
                k += 1
            if rs.randbelow(math.factorial(k)) == 0:
                total += k
                break
    return total


def skellam(mu: Fraction, rs: RandomSource = OS_RANDOM) -> int:
    """Poisson(mu) - Poisson(mu): the Skellam law of variance 2 mu."""
    return poisson(mu, rs) - poisson(mu, rs)


def _variance_parts(sigma2: Fraction) -> tuple[int, int]:
    sigma2 = Fraction(sigma2)
    if sigma2 <= 0:
        raise ValueError("the variance must be positive")
    return sigma2.numerator, sigma2.denominator


def rational_variance(sigma: float, denominator: int = VARIANCE_DENOMINATOR) -> Fraction:
    """sigma^2 rounded up to a multiple of 1/denominator (never less noise than asked)."""
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    exact = Fraction(sigma) ** 2
    return Fraction(math.ceil(exact * denominator), denominator)


# -------------------------------------------------------------- vectorised samplers
# The same algorithms, run on arrays of independent draws at once: every loop iterates
# over the draws still undecided, so each draw sees exactly the sequence of uniform
# integers the scalar code would consume for it. Integers stay below 2^62; draws whose
# numbers would not (astronomically rare tails) finish in the scalar code above.

_LIMIT = 2**62


def _bernoulli_exp_le1_array(num: np.ndarray, den: np.ndarray, rs: RandomSource) -> np.ndarray:
    k = np.ones(num.shape, dtype=np.int64)
    active = np.ones(num.shape, dtype=bool)
    result = np.empty(num.shape, dtype=bool)
    while True:
        idx = np.flatnonzero(active)
        if not idx.size:
            return result
        big = den[idx] >= _LIMIT // (k[idx] + 1)
        for i in idx[big]:
            result[i] = _bernoulli_exp_le1(int(num[i]), int(den[i]), rs, int(k[i]))
            active[i] = False
        idx = idx[~big]
        success = rs.randbelow_array(den[idx] * k[idx]) < num[idx]
        k[idx[success]] += 1
        stop = idx[~success]
        result[stop] = k[stop] % 2 == 1
        active[stop] = False


def bernoulli_exp_array(num: np.ndarray, den: np.ndarray, rs: RandomSource = OS_RANDOM) -> np.ndarray:
    """Bernoulli(exp(-num_i/den_i)) for int64 arrays (CKS 2020, Algorithm 1, vectorised)."""
    num = np.asarray(num, dtype=np.int64)
    den = np.broadcast_to(np.asarray(den, dtype=np.int64), num.shape)
    whole, frac = np.divmod(num, den)
    out = np.ones(num.shape, dtype=bool)
    done = np.zeros(num.shape, dtype=np.int64)
    while True:
        idx = np.flatnonzero(out & (done < whole))
        if not idx.size:
            break
        ones = np.ones(idx.size, dtype=np.int64)
        out[idx] = _bernoulli_exp_le1_array(ones, ones, rs)
        done[idx] += 1
    idx = np.flatnonzero(out)
    out[idx] = _bernoulli_exp_le1_array(frac[idx], den[idx], rs)
    return out


def _geometric_exp1_array(n: int, rs: RandomSource) -> np.ndarray:
    v = np.zeros(n, dtype=np.int64)
    idx = np.arange(n)
    while idx.size:
        ones = np.ones(idx.size, dtype=np.int64)
        success = _bernoulli_exp_le1_array(ones, ones, rs)
        v[idx[success]] += 1
        idx = idx[success]
    return v


def discrete_laplace_array(t: int, size: int, rs: RandomSource = OS_RANDOM) -> np.ndarray:
    """``size`` draws with P(x) proportional to exp(-|x| / t), t a positive integer."""
    if t < 1 or t >= 2**20:
        raise ValueError("the vectorised discrete Laplace takes an integer scale from 1 to 2^20")
    out = np.empty(size, dtype=np.int64)
    todo = np.arange(size)
    tt = np.int64(t)
    while todo.size:
        u = rs.randbelow_array(np.full(todo.size, tt))
        keep = bernoulli_exp_array(u, np.full(todo.size, tt), rs)
        todo_k, u = todo[keep], u[keep]
        x = u + tt * _geometric_exp1_array(todo_k.size, rs)
        negative = rs.randbelow_array(np.full(todo_k.size, 2, dtype=np.int64)) == 1
        ok = ~(negative & (x == 0))
        out[todo_k[ok]] = np.where(negative, -x, x)[ok]
        todo = np.concatenate([todo[~keep], todo_k[~ok]])
    return out


def discrete_gaussian_array(sigma2: Fraction, size: int, rs: RandomSource = OS_RANDOM) -> np.ndarray:
    """``size`` independent draws of N_Z(0, sigma2) (CKS 2020, Algorithm 3, vectorised).

    Falls back to the scalar sampler when sigma2's numerator and denominator are too large
    for int64 arithmetic (a variance not made by ``rational_variance``).
    """
    a, b = _variance_parts(sigma2)
    t = math.isqrt(a // b) + 1
    den = 2 * a * b * t * t
    if den >= 2**52 or t >= 2**20:
        return np.array([discrete_gaussian(sigma2, rs) for _ in range(size)], dtype=np.int64)
    # |y| up to y_safe keeps (|y| b t - a)^2 below 2^62
    y_safe = (math.isqrt(_LIMIT) - a) // (b * t)
    out = np.empty(size, dtype=np.int64)
    todo = np.arange(size)
    while todo.size:
        y = discrete_laplace_array(t, todo.size, rs)
        ay = np.abs(y)
        small = ay <= y_safe
        accept = np.empty(todo.size, dtype=bool)
        num = (ay[small] * (b * t) - a) ** 2
        accept[small] = bernoulli_exp_array(num, np.full(num.size, den, dtype=np.int64), rs)
        for i in np.flatnonzero(~small):
            accept[i] = bernoulli_exp((int(ay[i]) * b * t - a) ** 2, den, rs)
        out[todo[accept]] = y[accept]
        todo = todo[~accept]
    return out


def skellam_array(mu: Fraction, size: int, rs: RandomSource = OS_RANDOM) -> np.ndarray:
    """``size`` independent Skellam(mu) draws (variance 2 mu); scalar loop, used rarely."""
    return np.array([skellam(mu, rs) for _ in range(size)], dtype=np.int64)


# ------------------------------------------------------------ per-site noise shares


@dataclass(frozen=True)
class NoiseShare:
    """The noise one site adds to each cell.

    ``mechanism`` is "gaussian" (N_Z(0, variance)) or "skellam" (Skellam with
    ``variance`` = 2 mu). ``variance`` is the exact rational variance of one share.
    """

    mechanism: str
    variance: Fraction

    @property
    def sigma(self) -> float:
        return math.sqrt(self.variance)

    def sample(self, size: int, rs: RandomSource = OS_RANDOM) -> np.ndarray:
        if self.mechanism == "gaussian":
            return discrete_gaussian_array(self.variance, size, rs)
        return skellam_array(self.variance / 2, size, rs)


def noise_share(sigma_total: float, honest_sites: int, below_floor: str = "raise") -> NoiseShare:
    """The share each site adds so that any ``honest_sites`` honest shares sum to >= sigma_total^2.

    The floor rule: sigma_i = max(1.5, sigma_total / sqrt(t)) with t = honest_sites.
    While sigma_total / sqrt(t) >= 1.5 each site adds N_Z(0, sigma_total^2 / t). Below the
    floor a sum of small discrete Gaussians is no longer close to a discrete Gaussian
    (Kairouz, Liu & Steinke 2021), so:

    - ``below_floor = "raise"`` (default): each site adds N_Z(0, 1.5^2), more noise than
      the budget needs (the accountant then reports the smaller epsilon it buys);
    - ``below_floor = "skellam"``: each site adds Skellam noise of variance
      sigma_total^2 / t; Skellam shares sum to an exact Skellam of variance sigma_total^2,
      accounted with the Skellam bound (protocol.dp_accounting.skellam_rdp).
    """
    if honest_sites < 1:
        raise ValueError("at least one honest site must add noise")
    if below_floor not in ("raise", "skellam"):
        raise ValueError("below_floor must be 'raise' or 'skellam'")
    share = sigma_total / math.sqrt(honest_sites)
    if share >= SIGMA_FLOOR:
        return NoiseShare("gaussian", rational_variance(share))
    if below_floor == "raise":
        return NoiseShare("gaussian", rational_variance(SIGMA_FLOOR))
    return NoiseShare("skellam", rational_variance(share))


# ---------------------------------------------------------------- exact reference pmfs


def discrete_gaussian_pmf(x: np.ndarray, sigma2: float) -> np.ndarray:
    """exp(-x^2/(2 sigma2)) / sum_k exp(-k^2/(2 sigma2)), the normaliser summed to double precision."""
    half = int(40 * math.sqrt(sigma2)) + 40
    k = np.arange(-half, half + 1, dtype=float)
    z = np.exp(-(k * k) / (2 * sigma2)).sum()
    x = np.asarray(x, dtype=float)
    return np.exp(-(x * x) / (2 * sigma2)) / z


def discrete_laplace_pmf(x: np.ndarray, scale: float) -> np.ndarray:
    """(1 - e^{-1/scale}) / (1 + e^{-1/scale}) e^{-|x|/scale} (Inusah & Kozubowski 2006)."""
    q = math.exp(-1.0 / scale)
    return (1 - q) / (1 + q) * np.exp(-np.abs(np.asarray(x, dtype=float)) / scale)
