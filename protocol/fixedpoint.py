"""Real-valued sums as fixed-point integers modulo 2^128, so masked sums stay exact.

A float v is sent as the integer V = round(v 2^52) in two's complement modulo 2^128, stored
as (lo, hi) uint64 words, the layout of ``protocol.masking.mask128``. Integers add exactly
and modulo 2^128 the pairwise masks cancel, so the decoded sum over sites is the exact sum
of the rounded encodings: each site's value carries one rounding of at most 2^-53 in
absolute terms, and nothing else. 2^64 would leave only 11 integer bits above the 52
fraction bits, too few for sums of exp(x'beta)-weighted covariate products; 2^128 leaves
75 (|sum| < 2^75, about 3.8e22), checked on encoding per value and reported on decoding.

Decoding rounds the 128-bit integer to the nearest double exactly (the leading 64 bits with a
sticky bit for the rest, then a power-of-two scale), so decode(encode(v)) == v whenever v
is a multiple of 2^-52, e.g. any integer count.

Reference: the fixed-point encoding of real inputs for secure aggregation, e.g. Bonawitz et
al. (2017) CCS, section 3; IEEE 754-2008 for the round-to-nearest-even conversions used.
"""

from __future__ import annotations

import numpy as np

FRACTION_BITS = 52
RANGE_BITS = 75  # largest magnitude of a value (or of the consortium's sum) is 2^RANGE_BITS
_U64 = np.uint64
_ONE = _U64(1)


def _neg128(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two's complement negation modulo 2^128."""
    nlo = ~lo + _ONE
    nhi = ~hi + (nlo == 0).astype(_U64)
    return nlo, nhi


def _shift_left(a: np.ndarray, s: np.ndarray) -> np.ndarray:
    """a << s for 0 <= s, with 0 for s >= 64 (numpy's shift is undefined there)."""
    big = s >= 64
    return np.where(big, _U64(0), a << np.where(big, 0, s).astype(_U64))


def _shift_right(a: np.ndarray, s: np.ndarray) -> np.ndarray:
    big = s >= 64
    return np.where(big, _U64(0), a >> np.where(big, 0, s).astype(_U64))


def encode(values) -> np.ndarray:
    """Floats -> (n, 2) uint64 (lo, hi) words of round(v 2^52) modulo 2^128 (ties to even)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(v)):
        raise ValueError("fixed-point encoding needs finite values")
    if np.any(np.abs(v) >= 2.0 ** RANGE_BITS):
        raise ValueError(f"a value exceeds the fixed-point range of +-2^{RANGE_BITS}")
    x = np.abs(np.rint(np.ldexp(v, FRACTION_BITS)))   # an integer-valued double < 2^127
    m, e = np.frexp(x)                                 # x = m 2^e, 0.5 <= m < 1
    mant = np.ldexp(m, 53).astype(_U64)                # exact: 53 significant bits
    s = e.astype(np.int64) - 53                        # x = mant 2^s
    small = s <= 0
    s_pos = np.where(small, 0, s)
    lo = np.where(small, np.where(small, x, 0.0).astype(_U64), _shift_left(mant, s_pos))
    hi_from_lo = _shift_right(mant, np.where(s_pos > 0, 64 - s_pos, 64))
    hi_high = _shift_left(mant, np.maximum(s_pos - 64, 0))
    hi = np.where(small, _U64(0), np.where(s_pos >= 64, hi_high, hi_from_lo))
    neg = v < 0
    nlo, nhi = _neg128(lo, hi)
    return np.stack([np.where(neg, nlo, lo), np.where(neg, nhi, hi)], axis=1).astype(_U64)


def decode(words) -> np.ndarray:
    """(n, 2) uint64 (lo, hi) two's complement words -> the nearest doubles of V 2^-52."""
    w = np.asarray(words, dtype=_U64).reshape(-1, 2)
    lo, hi = w[:, 0].copy(), w[:, 1].copy()
    neg = (hi >> _U64(63)) == 1
    nlo, nhi = _neg128(lo, hi)
    lo, hi = np.where(neg, nlo, lo), np.where(neg, nhi, hi)
    if np.any(hi >= _U64(1) << _U64(RANGE_BITS + FRACTION_BITS - 64)):
        raise OverflowError(f"a decoded sum exceeds the fixed-point range of +-2^{RANGE_BITS}")
    # count leading zeros of hi (hi > 0) by binary search, vectorised
    lz = np.zeros(len(hi), dtype=np.int64)
    h = hi.copy()
    for step in (32, 16, 8, 4, 2, 1):
        top_empty = (h >> _U64(64 - step)) == 0
        lz += np.where(top_empty, step, 0)
        h = np.where(top_empty, h << _U64(step), h)
    wide = hi > 0
    k = np.where(wide, lz, 0)
    top = np.where(wide, (hi << k.astype(_U64)) | _shift_right(lo, np.where(wide, 64 - k, 64)), lo)
    rest = np.where(wide, _shift_left(lo, k), _U64(0))
    # a sticky bit below the rounding position makes the one conversion round correctly
    top = top | (rest != 0).astype(_U64)
    mag = np.ldexp(top.astype(np.float64), np.where(wide, 64 - k, 0) - FRACTION_BITS)
    return np.where(neg, -mag, mag)


def encode_ints(values) -> np.ndarray:
    """Exact integers (|v| < 2^63), e.g. counts, in the same 128-bit layout without scaling."""
    v = np.asarray(values, dtype=np.int64).ravel()
    lo = v.view(_U64)
    hi = np.where(v < 0, ~_U64(0), _U64(0))
    return np.stack([lo, hi], axis=1)
