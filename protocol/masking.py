"""Pairwise additive masks that cancel in the consortium's sum (Bonawitz et al. 2017, §4,
without the dropout-recovery shares: fedsurv reruns the round instead).

For participants i < j (by the code-point order of their names) both derive the same key

    k_ij = HKDF-SHA256(X25519(sk_i, pk_j), salt = none,
                       info = "fedsurv pairwise mask v1" | canonical JSON of
                              [query id, plan hash, sorted participants, [i, j]])

and expand it with ChaCha20 (zero nonce: each key serves one query only) into m_ij, a
vector of uint64. Site i sends  x_i + sum_{j > i} m_ij - sum_{j < i} m_ji  (mod 2^64), so
the masks cancel exactly in the sum over all participants and nowhere else. Binding the
query id, plan hash and participant list into the key means a replayed, altered or
re-scoped query gets unrelated masks, and different plans never cancel.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from protocol.keys import PartyKeys

MASK_INFO = b"fedsurv pairwise mask v1"
_ZERO_NONCE = bytes(16)
_CHUNK = 32768  # cells per keystream piece (256 KiB)


def mask_context(query_id: str, plan_sha256: str, participants: Iterable[str]) -> list:
    return [query_id, plan_sha256, sorted(participants)]


def pair_key(shared_secret: bytes, query_id: str, plan_sha256: str, participants: Iterable[str],
             a: str, b: str, label: bytes = b"") -> bytes:
    """The 32-byte ChaCha20 key two participants share for one query (and one mask width)."""
    info = MASK_INFO + label + json.dumps(mask_context(query_id, plan_sha256, participants) + [sorted((a, b))],
                                  separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return hkdf_sha256_32(shared_secret, info)


def hkdf_sha256_32(secret: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) with no salt and 32 bytes of output, in two HMAC calls.

    Equal to cryptography's HKDF(SHA256(), 32, salt=None, info) (tests/test_masking.py checks
    it); written out because that object costs ~20 us per call, and so that a party can keep
    the extract step of each long-term secret (`hkdf_extract`) and only expand per query.
    """
    return hkdf_expand_32(hkdf_extract(secret), info)


def hkdf_extract(secret: bytes) -> bytes:
    return hmac.digest(bytes(32), secret, "sha256")  # no salt means 32 zero bytes


def hkdf_expand_32(prk: bytes, info: bytes) -> bytes:
    return hmac.digest(prk, info + b"\x01", "sha256")  # one block T(1) is 32 bytes


def _info_prefix(query_id: str, plan_sha256: str, participants: Iterable[str], label: bytes) -> bytes:
    """The HKDF info of `pair_key` up to the pair itself, shared by every pair of one query."""
    ctx = json.dumps(mask_context(query_id, plan_sha256, participants), separators=(",", ":"), ensure_ascii=False)
    return MASK_INFO + label + ctx[:-1].encode("utf-8") + b","


def _pair_suffix(a: str, b: str) -> bytes:
    return json.dumps(sorted((a, b)), separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"]"


def keystream(key: bytes, cells: int, zeros: bytes | None = None, out: bytearray | None = None) -> np.ndarray:
    """`cells` uint64 values of the ChaCha20 keystream under `key` (a view of `out` if given)."""
    size = 8 * cells
    zeros = zeros if zeros is not None else bytes(size)
    out = out if out is not None else bytearray(size + 16)
    enc = Cipher(algorithms.ChaCha20(key, _ZERO_NONCE), mode=None).encryptor()
    enc.update_into(zeros[:size] if len(zeros) != size else zeros, out)
    return np.frombuffer(out, dtype="<u8", count=cells)


class Masker:
    """One party's masking: keeps the static X25519 secrets it shares with its peers, since
    the roster's keys are long-term and only the HKDF step depends on the query."""

    def __init__(self, keys: PartyKeys):
        self._keys = keys
        self._prks: dict[bytes, bytes] = {}
        # Loading the private key costs as much as the exchange itself (~0.1 ms); load it once.
        self._own: X25519PrivateKey | None = None

    def _prk(self, peer_public: bytes) -> bytes:
        """HKDF-Extract of the X25519 secret shared with a peer (static, so computed once)."""
        prk = self._prks.get(peer_public)
        if prk is None:
            if self._own is None:
                self._own = X25519PrivateKey.from_private_bytes(self._keys.masking_private)
            # The same secret as PartyKeys.shared_secret, without reloading the private key.
            secret = self._own.exchange(X25519PublicKey.from_public_bytes(peer_public))
            prk = self._prks[peer_public] = hkdf_extract(secret)
        return prk

    def _pair_keys(self, others: Sequence[str], query_id: str, plan_sha256: str, participants: Sequence[str],
                   peers: Mapping[str, bytes], label: bytes = b"") -> list[bytes]:
        """`pair_key` for every peer, computed with one info prefix and cached extracts."""
        prefix, me = _info_prefix(query_id, plan_sha256, participants, label), self._keys.name
        return [hkdf_expand_32(self._prk(peers[p]), prefix + _pair_suffix(me, p)) for p in others]

    def mask(self, vector: np.ndarray, query_id: str, plan_sha256: str, participants: Sequence[str],
             peers: Mapping[str, bytes]) -> np.ndarray:
        """The masked uint64 vector of this party's int64 tallies.

        `peers` maps every other participant to its X25519 public key (from the roster).
        """
        me = self._keys.name
        others = [p for p in participants if p != me]
        if len(others) != len(participants) - 1:
            raise ValueError(f"{me} must appear once among the participants")
        out = np.asarray(vector, dtype=np.int64).view(np.uint64).copy()
        cells = out.size
        keys = self._pair_keys(others, query_id, plan_sha256, participants, peers)
        streams = [(Cipher(algorithms.ChaCha20(k, _ZERO_NONCE), mode=None).encryptor(),
                    np.add if peer > me else np.subtract) for peer, k in zip(others, keys)]
        # Chunk by chunk, so each keystream piece is added while still in cache.
        zeros, buf = bytes(8 * _CHUNK), bytearray(8 * _CHUNK + 16)
        m = np.frombuffer(buf, dtype="<u8", count=_CHUNK)
        for start in range(0, cells, _CHUNK):
            part = out[start:start + _CHUNK]
            n = part.size
            z = zeros if n == _CHUNK else zeros[:8 * n]
            for enc, op in streams:
                enc.update_into(z, buf)
                # uint64 arithmetic wraps, which is exactly addition modulo 2^64.
                op(part, m[:n], out=part)
        return out


    def mask128(self, words: np.ndarray, query_id: str, plan_sha256: str, participants: Sequence[str],
                peers: Mapping[str, bytes]) -> np.ndarray:
        """Masks modulo 2^128 for fixed-point sums too wide for 64 bits (Cox rounds, issue 8).

        `words` has shape (cells, 2): the low and high uint64 words of each value modulo
        2^128 (see `to_words128`). Keys are derived with a distinct HKDF label, so these
        masks are unrelated to the 64-bit masks of the same query.
        """
        me = self._keys.name
        others = [p for p in participants if p != me]
        if len(others) != len(participants) - 1:
            raise ValueError(f"{me} must appear once among the participants")
        out = np.array(words, dtype=np.uint64).reshape(-1, 2)
        cells = out.shape[0]
        for peer, k in zip(others, self._pair_keys(others, query_id, plan_sha256, participants, peers, b"128")):
            m = keystream(k, 2 * cells).reshape(cells, 2)
            out = (add128 if peer > me else sub128)(out, m)
        return out


def add128(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(lo, hi) word pairs added modulo 2^128, with the carry out of the low word."""
    lo = a[:, 0] + b[:, 0]
    hi = a[:, 1] + b[:, 1] + (lo < a[:, 0]).astype(np.uint64)
    return np.stack([lo, hi], axis=1)


def sub128(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lo = a[:, 0] - b[:, 0]
    hi = a[:, 1] - b[:, 1] - (a[:, 0] < b[:, 0]).astype(np.uint64)
    return np.stack([lo, hi], axis=1)


def to_words128(values: Sequence[int]) -> np.ndarray:
    """Python integers (any sign, |x| < 2^127) as (lo, hi) uint64 words of x mod 2^128."""
    mod = [int(v) % (1 << 128) for v in values]
    return np.array([[v & 0xFFFFFFFFFFFFFFFF, v >> 64] for v in mod], dtype=np.uint64).reshape(-1, 2)


def from_words128(words: np.ndarray) -> list[int]:
    """The signed Python integers (two's complement modulo 2^128) of (lo, hi) word pairs."""
    out = []
    for lo, hi in np.asarray(words, dtype=np.uint64).reshape(-1, 2).tolist():
        v = (int(hi) << 64) | int(lo)
        out.append(v - (1 << 128) if v >> 127 else v)
    return out


def sum_masked128(payloads: Iterable[np.ndarray]) -> np.ndarray:
    total: np.ndarray | None = None
    for p in payloads:
        p = np.asarray(p, dtype=np.uint64).reshape(-1, 2)
        total = p.copy() if total is None else add128(total, p)
    if total is None:
        raise ValueError("no payloads to sum")
    return total


def sum_masked(payloads: Iterable[np.ndarray]) -> np.ndarray:
    """The element-wise sum modulo 2^64 of masked vectors, read as two's-complement int64."""
    total: np.ndarray | None = None
    for p in payloads:
        p = np.asarray(p, dtype=np.uint64)
        total = p.copy() if total is None else np.add(total, p, out=total)
    if total is None:
        raise ValueError("no payloads to sum")
    return total.view(np.int64)


def payload_bytes(masked: np.ndarray) -> bytes:
    return np.asarray(masked, dtype="<u8").tobytes()


def payload_vector(data: bytes, cells: int) -> np.ndarray:
    if len(data) != 8 * cells:
        raise ValueError(f"payload has {len(data)} bytes, the plan's layout needs {8 * cells}")
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)
