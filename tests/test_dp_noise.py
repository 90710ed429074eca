"""Per-site noise shares on tallies: which blocks, how much, and through the masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dp_fixtures import HEAD, PLAN
from protocol.dp_sampler import NoiseShare, rational_variance
from protocol.masking import Masker, sum_masked
from protocol.plan import parse_plan
from protocol.tallies import Tallies, layout
from secure_fixtures import fixed_party
from site_node.dp_noise import add_noise_shares, noised_blocks


def site_tallies(rng: np.random.Generator) -> Tallies:
    blocks = layout(PLAN)
    return Tallies(blocks, {b.key: rng.integers(0, 20, b.shape).astype(np.int64) for b in blocks})


def test_every_count_block_is_noised_and_n_withheld():
    t = site_tallies(np.random.default_rng(1))
    share = NoiseShare("gaussian", rational_variance(3.0))
    noisy = add_noise_shares(t, share)
    assert noisy.blocks == t.blocks
    keys = [b.key for b in noised_blocks(t.blocks)]
    assert keys == [b.key for b in t.blocks if b.key != "n"]
    assert noisy.n == 0
    diff = np.concatenate([(noisy[k] - t[k]).ravel() for k in keys])
    assert diff.dtype == np.int64 and (diff != 0).mean() > 0.8
    # the added noise has the share's variance: chi-square test of the sum of squares
    stat = float((diff.astype(float) ** 2).sum() / 9.0)
    assert stats.chi2.sf(stat, diff.size) > 1e-6 and stats.chi2.cdf(stat, diff.size) > 1e-6
    assert np.array_equal(t["n"], site_tallies(np.random.default_rng(1))["n"])  # the input is untouched


def test_moments_are_not_covered():
    plan = parse_plan(HEAD + """
[[analyses]]
name = "t1"
kind = "describe"
variables = ["age"]
""")
    blocks = layout(plan)
    t = Tallies(blocks, {b.key: np.zeros(b.shape, dtype=np.int64) for b in blocks})
    with pytest.raises(ValueError, match="moments:age"):
        add_noise_shares(t, NoiseShare("gaussian", rational_variance(2.0)))


def test_skellam_shares():
    t = site_tallies(np.random.default_rng(2))
    noisy = add_noise_shares(t, NoiseShare("skellam", rational_variance(1.0)))
    diff = np.concatenate([(noisy[b.key] - t[b.key]).ravel() for b in noised_blocks(t.blocks)])
    assert abs(diff.mean()) < 5 * math.sqrt(1.0 / diff.size)


def test_noisy_shares_survive_masking_and_sum_to_the_noisy_total():
    rng = np.random.default_rng(3)
    names = ["a", "b", "c"]
    keys = {n: fixed_party(n, 40 + i) for i, n in enumerate(names)}
    peers = {n: k.public().masking_public for n, k in keys.items()}
    share = NoiseShare("gaussian", rational_variance(4.53 / math.sqrt(3)))
    exact = {n: site_tallies(rng) for n in names}
    noisy = {n: add_noise_shares(exact[n], share) for n in names}
    masked = [Masker(keys[n]).mask(noisy[n].flatten(), "q" * 32, "ab" * 32, names, peers) for n in names]
    total = Tallies.from_flat(layout(PLAN), sum_masked(masked))
    expected = noisy["a"] + noisy["b"] + noisy["c"]
    assert all(np.array_equal(total[b.key], expected[b.key]) for b in total.blocks)
    # the total noise has variance 3 sigma_i^2 = sigma^2 (test on the sum of squares)
    true = exact["a"] + exact["b"] + exact["c"]
    diff = np.concatenate([(total[b.key] - true[b.key]).ravel() for b in noised_blocks(total.blocks)])
    stat = float((diff.astype(float) ** 2).sum() / (3 * float(share.variance)))
    assert stats.chi2.sf(stat, diff.size) > 1e-6 and stats.chi2.cdf(stat, diff.size) > 1e-6
