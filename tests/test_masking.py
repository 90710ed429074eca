"""Pairwise masks: they cancel exactly in the sum, nowhere else, and look uniform on their own."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from protocol.masking import Masker, keystream, pair_key, payload_bytes, payload_vector, sum_masked
from secure_fixtures import fixed_party, lung_plan, split
from site_node.tally import compute_tallies

QID, PLAN_HASH = "0123456789abcdef0123456789abcdef", "ab" * 32


def parties(n: int, seed: int = 10):
    keys = {f"s{i:02d}": fixed_party(f"s{i:02d}", seed + i) for i in range(n)}
    peers = {k: v.public().masking_public for k, v in keys.items()}
    return keys, peers


@pytest.mark.parametrize("n_parties", [2, 3, 7, 20])
def test_masks_cancel_exactly_including_wraparound(n_parties):
    keys, peers = parties(n_parties)
    names = sorted(keys)
    rng = np.random.default_rng(n_parties)
    xs = {n: rng.integers(-(2**62), 2**62, 70_001, dtype=np.int64) for n in names}
    masked = [Masker(keys[n]).mask(xs[n], QID, PLAN_HASH, names, peers) for n in names]
    expected = np.zeros(70_001, dtype=np.uint64)
    for x in xs.values():
        expected += x.view(np.uint64)  # the true sum modulo 2^64
    assert np.array_equal(sum_masked(masked).view(np.uint64), expected)


def test_both_sides_of_a_pair_derive_the_same_key():
    keys, peers = parties(3)
    a, b = keys["s00"], keys["s01"]
    names = sorted(keys)
    k_ab = pair_key(a.shared_secret(peers["s01"]), QID, PLAN_HASH, names, "s00", "s01")
    k_ba = pair_key(b.shared_secret(peers["s00"]), QID, PLAN_HASH, names, "s01", "s00")
    assert k_ab == k_ba and len(k_ab) == 32


def test_masked_vector_is_plain_plus_later_peers_minus_earlier_peers():
    """The chunked masking equals the definition, computed one whole keystream at a time."""
    keys, peers = parties(4)
    names = sorted(keys)
    me = keys["s01"]
    x = np.arange(100_003, dtype=np.int64) - 50
    got = Masker(me).mask(x, QID, PLAN_HASH, names, peers)
    want = x.view(np.uint64).copy()
    for p in ("s00", "s02", "s03"):
        m = keystream(pair_key(me.shared_secret(peers[p]), QID, PLAN_HASH, names, "s01", p), x.size)
        want = want + m if p > "s01" else want - m
    assert np.array_equal(got, want)


@pytest.mark.parametrize("change", ["query_id", "plan", "participants"])
def test_masks_are_bound_to_query_plan_and_participants(change):
    keys, peers = parties(3)
    names = sorted(keys)
    x = np.zeros(1000, dtype=np.int64)
    base = {"query_id": QID, "plan_sha256": PLAN_HASH, "participants": names}
    other = dict(base)
    if change == "query_id":
        other["query_id"] = "f" * 32
    elif change == "plan":
        other["plan_sha256"] = "cd" * 32
    else:
        other["participants"] = names + ["s99"]
        peers = {**peers, "s99": fixed_party("s99", 99).public().masking_public}
    masked = [Masker(keys[n]).mask(x, **(other if n == "s02" else base), peers=peers) for n in names]
    total = sum_masked(masked)
    # Had the masks cancelled the sum would be all zeros; unrelated masks leave noise everywhere.
    assert np.count_nonzero(total) > 990


def test_one_sites_masked_payload_is_indistinguishable_from_uniform_bytes():
    """Chi-square goodness of fit of the 256 byte values of a real, mostly-zero tally vector."""
    plan = lung_plan()
    parts = split(3, seed=4)
    keys = {n: fixed_party(n, 40 + i) for i, n in enumerate(sorted(parts))}
    peers = {n: k.public().masking_public for n, k in keys.items()}
    x = compute_tallies(plan, parts["site0"]).flatten()
    assert np.mean(x == 0) > 0.9  # the plain vector is far from uniform
    data = payload_bytes(Masker(keys["site0"]).mask(x, QID, plan.sha256, sorted(parts), peers))
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    chi2, p = stats.chisquare(counts)
    assert p > 1e-3, (chi2, p)
    plain_counts = np.bincount(np.frombuffer(x.astype("<i8").tobytes(), dtype=np.uint8), minlength=256)
    assert stats.chisquare(plain_counts)[1] < 1e-100
    # The 64-bit words are uniform too: their top 4 bits fall evenly into 16 classes.
    top = np.frombuffer(data, dtype="<u8") >> np.uint64(60)
    assert stats.chisquare(np.bincount(top.astype(np.int64), minlength=16))[1] > 1e-3


def test_payload_round_trip_is_little_endian_uint64():
    v = np.array([1, 2**64 - 1, 2**63], dtype=np.uint64)
    data = payload_bytes(v)
    assert data[:8] == bytes([1, 0, 0, 0, 0, 0, 0, 0]) and data[8:16] == b"\xff" * 8
    assert np.array_equal(payload_vector(data, 3), v)
    with pytest.raises(ValueError):
        payload_vector(data, 4)


def test_a_party_must_be_listed_once():
    keys, peers = parties(3)
    with pytest.raises(ValueError):
        Masker(keys["s00"]).mask(np.zeros(4, np.int64), QID, PLAN_HASH, ["s01", "s02"], peers)


def test_pair_key_is_rfc5869_hkdf_sha256():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from protocol.masking import hkdf_sha256_32

    rng = np.random.default_rng(5)
    for _ in range(5):
        secret, info = rng.bytes(32), rng.bytes(int(rng.integers(0, 300)))
        assert hkdf_sha256_32(secret, info) == HKDF(hashes.SHA256(), 32, None, info).derive(secret)
    # RFC 5869 test case 3 (SHA-256, no salt, no info), first 32 of its 42 bytes.
    ikm = bytes([0x0b] * 22)
    okm = bytes.fromhex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d")
    assert hkdf_sha256_32(ikm, b"") == okm


def test_128_bit_masks_cancel_modulo_2_to_the_128():
    from protocol.masking import from_words128, sum_masked128, to_words128

    keys, peers = parties(5, seed=60)
    names = sorted(keys)
    rng = np.random.default_rng(60)
    # Fixed-point values with 52 fraction bits, far beyond int64, of either sign.
    values = {n: [int(x) * (1 << 52) + int(y) for x, y in zip(rng.integers(-(2**60), 2**60, 300),
                                                                rng.integers(0, 2**52, 300))] for n in names}
    masked = [Masker(keys[n]).mask128(to_words128(values[n]), QID, PLAN_HASH, names, peers) for n in names]
    assert from_words128(sum_masked128(masked)) == [sum(col) for col in zip(*values.values())]
    # Each masked share alone is far from the value it hides.
    assert from_words128(masked[0]) != values[names[0]]
    assert from_words128(to_words128([-1, 2**127 - 1, -(2**127)])) == [-1, 2**127 - 1, -(2**127)]


def test_128_bit_keys_follow_pair_key_with_their_label():
    from protocol.masking import add128, sub128, to_words128

    keys, peers = parties(3, seed=70)
    names = sorted(keys)
    me = keys["s01"]
    got = Masker(me).mask128(to_words128([0] * 10), QID, PLAN_HASH, names, peers)
    want = to_words128([0] * 10)
    for p in ("s00", "s02"):
        k = pair_key(me.shared_secret(peers[p]), QID, PLAN_HASH, names, "s01", p, label=b"128")
        m = keystream(k, 20).reshape(10, 2)
        want = add128(want, m) if p > "s01" else sub128(want, m)
    assert np.array_equal(got, want)
