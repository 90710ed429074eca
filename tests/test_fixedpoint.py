"""Fixed point modulo 2^128: exact against Python's rationals, and masked sums give R's fits."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from test_cox_r import design, expected

from coordinator.cox import CoxBinSums, cox_bin_sums, cox_fit
from coordinator.finegray import FineGrayBinSums, finegray_bin_sums, finegray_fit
from protocol.fixedpoint import FRACTION_BITS, decode, encode, encode_ints
from protocol.masking import add128, from_words128, sub128, to_words128

SCALE = 1 << FRACTION_BITS


def sample_values(seed=1):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=2000) * 10.0 ** rng.integers(-25, 22, 2000)
    edge = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0**-52, -(2.0**-52), 2.0**-53, 3 * 2.0**-54,
            3e22, -3e22, 2.0**63, -(2.0**64) - 2.0**13, 123456789.123456789]
    return np.concatenate([v, edge])


def test_encode_is_round_half_even_of_v_times_2_52():
    v = sample_values()
    got = from_words128(encode(v))
    want = [round(Fraction(x) * SCALE) for x in v.tolist()]
    assert got == want


def test_decode_is_the_nearest_double():
    rng = np.random.default_rng(2)
    ints = [int(i) for i in rng.integers(-(2**62), 2**62, 500)]
    ints += [((1 << 126) - 1) // 3, -((1 << 125) + 12345), (1 << 64) + 1, -(1 << 64), 2**53 + 1, 0, -1]
    ints = [i for i in ints if abs(i) < 1 << 127 and abs(i) < 1 << (75 + 52)]
    got = decode(to_words128(ints))
    want = np.array([float(Fraction(i, SCALE)) for i in ints])   # Python rounds to nearest
    assert np.array_equal(got, want)


def test_round_trip_of_dyadic_values_and_counts():
    v = np.array([0, 1, -7, 2.5, 2.0**-52 * 3, 1e15, -123456], dtype=float)
    assert np.array_equal(decode(encode(v)), v)
    c = np.array([0, 5, -3, 2**40])
    assert np.array_equal(decode(encode_ints(c)), c / SCALE)
    assert from_words128(encode_ints(c)) == c.tolist()


def test_range_and_finite_checks():
    with pytest.raises(ValueError):
        encode([np.inf])
    with pytest.raises(ValueError):
        encode([2.0**76])


def masked_sum(vectors, seed=0):
    """Each site adds pairwise 128-bit masks that cancel in the sum, as protocol.masking does."""
    rng = np.random.default_rng(seed)
    k = len(vectors)
    words = [encode(v) for v in vectors]
    for i in range(k):
        for j in range(i + 1, k):
            m = rng.integers(0, 2**64, size=words[i].shape, dtype=np.uint64)
            words[i] = add128(words[i], m)
            words[j] = sub128(words[j], m)
    total = words[0]
    for w in words[1:]:
        total = add128(total, w)
    return decode(total)


def split(n, k, seed):
    site = np.random.default_rng(seed).integers(0, k, n)
    return [np.flatnonzero(site == s) for s in range(k)]


@pytest.mark.parametrize("case", ["lung_age_sex_ecog_w1", "veteran_trt_karno_age_celltype_w1"])
def test_masked_fixed_point_cox_equals_r(case):
    b, ev, _, X, _ = design(case)
    Xc = X - np.round(X.mean(axis=0), 1)
    n_bins, p = int(b.max()) + 1, X.shape[1]
    parts = split(len(b), 5, 11)

    def pooled(beta):
        flats = [cox_bin_sums(b[i], ev[i], Xc[i], beta, n_bins).flat() for i in parts]
        return CoxBinSums.from_flat(masked_sum(flats), n_bins, p)

    fit = cox_fit(pooled, p, ties="efron")
    ref, rob = expected(case)["efron"], expected(case)["efron_robust"]
    assert np.max(np.abs(fit.coef - ref["coef"]) / np.abs(ref["coef"])) < 1e-10
    assert np.max(np.abs(fit.var - np.array(ref["var"]).reshape(p, p, order="F"))) < 1e-9
    assert np.max(np.abs(fit.robust_var - np.array(rob["robust_var"]).reshape(p, p, order="F"))) < 1e-9
    assert np.max(np.abs(np.array(fit.loglik) - ref["loglik"])) < 1e-9
    assert abs(fit.score_test - ref["score_test"]) < 1e-9
    assert abs(fit.lr_test - ref["lr_test"]) < 1e-9
    assert fit.iterations == ref["iter"]


def test_masked_fixed_point_finegray_equals_crr():
    case = "colon_cr_recurrence_rx_age_nodes_w7"
    b, _, code, X, _ = design(case)
    outcome = np.where(code == 1, 1, np.where(code == 0, 0, 2))
    Xc = X - np.round(X.mean(axis=0), 1)
    n_bins, p = int(b.max()) + 1, X.shape[1]
    parts = split(len(b), 4, 5)

    def pooled(beta):
        flats = [finegray_bin_sums(b[i], outcome[i], Xc[i], beta, n_bins).flat() for i in parts]
        return FineGrayBinSums.from_flat(masked_sum(flats), n_bins, p)

    fit = finegray_fit(pooled, p)
    ref = expected(case)["fine_gray"]
    assert np.max(np.abs(fit.coef - ref["coef"]) / np.abs(ref["coef"])) < 1e-9
    assert np.max(np.abs(fit.var - np.array(ref["var"]).reshape(p, p, order="F"))) < 1e-9
    assert abs(fit.loglik - ref["loglik"]) < 1e-9
