"""Table 1 from pooled counts and fixed-point moments, against numpy on the raw values."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.describe import describe_categorical, describe_numeric


def moments(x: np.ndarray, decimals: int) -> tuple[int, int, int]:
    y = [int(v) for v in np.round(x * 10**decimals)]
    return len(y), sum(y), sum(v * v for v in y)


@pytest.mark.parametrize("decimals", [0, 1, 2])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mean_sd_from_fixed_point_sums(seed, decimals):
    rng = np.random.default_rng(seed)
    # values already at the plan's precision, so the fixed-point encoding is exact
    x = np.round(rng.normal(61.5, 12.0, size=1000), decimals)
    n, s1, s2 = moments(x, decimals)
    d = describe_numeric(n, s1, s2, n_missing=7, decimals=decimals)
    assert d["n"] == 1000 and d["missing"] == 7
    assert d["mean"] == pytest.approx(np.mean(x), rel=1e-14)
    assert d["sd"] == pytest.approx(np.std(x, ddof=1), rel=1e-12)


def test_sums_split_over_sites_add_up():
    rng = np.random.default_rng(7)
    x = np.round(rng.gamma(2.0, 30.0, size=500), 1)
    parts = np.array_split(x, 6)
    sums = [moments(p, 1) for p in parts]
    n, s1, s2 = (sum(c) for c in zip(*sums))
    d = describe_numeric(n, s1, s2, 0, 1)
    assert d["mean"] == pytest.approx(np.mean(x), rel=1e-14)
    assert d["sd"] == pytest.approx(np.std(x, ddof=1), rel=1e-12)


def test_large_values_keep_their_precision():
    # A large offset cancels catastrophically in float sums of squares; Python ints do not.
    x = np.array([1e9 + 0.1, 1e9 + 0.2, 1e9 + 0.4])
    n, s1, s2 = moments(x, 1)
    d = describe_numeric(n, s1, s2, 0, 1)
    assert d["mean"] == pytest.approx(1e9 + 7 / 30, rel=1e-15)
    assert d["sd"] == pytest.approx(np.std(np.array([0.1, 0.2, 0.4]), ddof=1), rel=1e-12)


def test_small_n():
    assert describe_numeric(0, 0, 0, 4, 1) == {"n": 0, "mean": None, "sd": None, "missing": 4}
    one = describe_numeric(1, 625, 625 * 625, 0, 1)
    assert one["mean"] == 62.5 and one["sd"] is None


def test_categorical_counts_and_percents():
    d = describe_categorical(np.array([12, 20, 2, 3]), ("arm", "leg", "other"))
    assert d["n"] == 34 and d["missing"] == 3
    assert d["levels"]["arm"] == {"count": 12, "percent": pytest.approx(100 * 12 / 34)}
    assert d["levels"]["leg"]["percent"] == pytest.approx(100 * 20 / 34)
    assert sum(v["percent"] for v in d["levels"].values()) == pytest.approx(100.0)


def test_categorical_without_missing_cell_and_empty():
    d = describe_categorical(np.array([1, 3]), ("1", "2"))
    assert d["missing"] == 0 and d["levels"]["2"]["percent"] == 75.0
    e = describe_categorical(np.array([0, 0, 5]), ("1", "2"))
    assert e["n"] == 0 and e["missing"] == 5 and e["levels"]["1"]["percent"] is None
    with pytest.raises(ValueError):
        describe_categorical(np.array([1, 2, 3, 4]), ("1", "2"))
