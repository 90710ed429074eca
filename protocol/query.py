"""The two messages of a round: the coordinator's signed query and a site's signed reply.

Both have one canonical byte encoding, and a signature covers those exact bytes, so a plan,
participant list, expiry or payload changed after signing fails verification.

Query body: canonical JSON (sorted keys, no spaces, UTF-8) of the Query's fields; the plan
travels as its canonical JSON text next to its SHA-256. Wire form of a signed query::

    b"FSQ1" | u32 big-endian body length | body | 64-byte Ed25519 signature over body

Reply: a canonical JSON header (site, query id, plan hash, status, reason, the site's n in
the clear, SHA-256 and length of the payload) followed by the payload, the masked uint64
vector in little-endian bytes. The signature covers the header, which binds the payload by
its digest::

    b"FSR1" | u32 header length | header | payload | 64-byte signature (absent if unsigned)
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from protocol.errors import FedsurvError
from protocol.keys import SIGNATURE_BYTES, PartyKeys, verify_signature

QUERY_MAGIC = b"FSQ1"
REPLY_MAGIC = b"FSR1"
STATUSES = ("ok", "refused", "error")
AWAITING_APPROVAL = "awaiting approval"
_QUERY_ID = re.compile(r"^[0-9a-f]{32}$")
_MAX_BODY = 64 * 1024 * 1024


class MessageError(FedsurvError, ValueError):
    """Bytes that are not a well-formed fedsurv query or reply."""


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


@dataclass(frozen=True)
class Query:
    """What the coordinator asks of every participant in one round.

    ``rerun_of`` names the query this one replaces after a failed round, and ``evidence``
    holds the signed replies in which the sites left out refused or failed that query: a
    site that answered the earlier query checks them before answering the same plan over a
    smaller set of sites (see site_node/responder.py on differencing).
    """

    query_id: str
    plan_json: str
    plan_sha256: str
    participants: tuple[str, ...]
    issued_at: float
    expires_at: float
    coordinator: str = ""
    rerun_of: str | None = None
    evidence: tuple[bytes, ...] = field(default=())
    # A regression round's broadcast (protocol.regression.Step.to_dict); None for the tally round.
    step: dict[str, Any] | None = None

    def to_bytes(self) -> bytes:
        extra = {} if self.step is None else {"step": self.step}
        return _canonical({**extra,
            "version": 1, "query_id": self.query_id, "plan": self.plan_json, "plan_sha256": self.plan_sha256,
            "participants": list(self.participants), "issued_at": self.issued_at, "expires_at": self.expires_at,
            "coordinator": self.coordinator, "rerun_of": self.rerun_of,
            "evidence": [base64.b64encode(e).decode("ascii") for e in self.evidence],
        })

    @classmethod
    def from_bytes(cls, body: bytes) -> Query:
        try:
            d = json.loads(body.decode("utf-8"))
            if d.get("version") != 1:
                raise MessageError("unsupported query version")
            q = cls(query_id=str(d["query_id"]), plan_json=str(d["plan"]), plan_sha256=str(d["plan_sha256"]),
                    participants=tuple(str(p) for p in d["participants"]), issued_at=float(d["issued_at"]),
                    expires_at=float(d["expires_at"]), coordinator=str(d.get("coordinator", "")),
                    rerun_of=None if d.get("rerun_of") is None else str(d["rerun_of"]),
                    evidence=tuple(base64.b64decode(e, validate=True) for e in d.get("evidence", [])),
                    step=d.get("step"))
            if q.step is not None and not isinstance(q.step, dict):
                raise MessageError("malformed round step")
        except MessageError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            raise MessageError("malformed query body") from None
        if not _QUERY_ID.match(q.query_id):
            raise MessageError("malformed query id")
        if not (math.isfinite(q.issued_at) and math.isfinite(q.expires_at)):
            raise MessageError("query times must be finite")
        return q

    @property
    def plan_dict(self) -> dict[str, Any]:
        return json.loads(self.plan_json)


@dataclass(frozen=True)
class SignedQuery:
    body: bytes
    signature: bytes

    @property
    def query(self) -> Query:
        return Query.from_bytes(self.body)

    def verify(self, signing_public: bytes) -> bool:
        return verify_signature(signing_public, self.signature, self.body)

    def encode(self) -> bytes:
        return QUERY_MAGIC + struct.pack(">I", len(self.body)) + self.body + self.signature


def sign_query(query: Query, coordinator: PartyKeys) -> SignedQuery:
    body = query.to_bytes()
    return SignedQuery(body, coordinator.sign(body))


def decode_signed_query(data: bytes) -> SignedQuery:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MessageError("a query must be bytes")
    data = bytes(data)
    if len(data) < 8 + SIGNATURE_BYTES or data[:4] != QUERY_MAGIC:
        raise MessageError("not a fedsurv query")
    (n,) = struct.unpack(">I", data[4:8])
    if n > _MAX_BODY or len(data) != 8 + n + SIGNATURE_BYTES:
        raise MessageError("query length does not match its header")
    return SignedQuery(data[8:8 + n], data[8 + n:])


@dataclass(frozen=True)
class Reply:
    """A site's answer. ``payload`` is the masked uint64 vector (little-endian) when status is
    "ok", empty otherwise; ``n`` is the site's patient count, published with the results.

    ``final`` says this reply is the site's one and only decision on a correctly signed query
    it had not decided before: the site will never answer that query id otherwise. Only a
    final refusal proves that a site did not contribute to a query's sum; replies to replays,
    forgeries or queries awaiting approval are not final.
    """

    site: str
    query_id: str
    plan_sha256: str
    status: str
    reason: str = ""
    n: int = 0
    payload: bytes = b""
    signature: bytes = b""
    final: bool = False

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise MessageError(f"reply status must be one of {', '.join(STATUSES)}")

    @cached_property
    def payload_sha256(self) -> str:
        # Hashed once per reply: the header (signing, verifying, encoding) asks for it each time.
        return hashlib.sha256(self.payload).hexdigest()

    def header(self) -> bytes:
        return _canonical({"version": 1, "site": self.site, "query_id": self.query_id,
                           "plan_sha256": self.plan_sha256, "status": self.status, "reason": self.reason,
                           "n": self.n, "payload_sha256": self.payload_sha256, "payload_bytes": len(self.payload),
                           "final": self.final})

    def sign(self, keys: PartyKeys) -> Reply:
        return replace(self, signature=keys.sign(self.header()))

    def verify(self, signing_public: bytes) -> bool:
        return bool(self.signature) and verify_signature(signing_public, self.signature, self.header())

    def encode(self) -> bytes:
        h = self.header()
        return REPLY_MAGIC + struct.pack(">I", len(h)) + h + self.payload + self.signature

    @property
    def awaiting_approval(self) -> bool:
        return self.status == "refused" and self.reason.startswith(AWAITING_APPROVAL)


def decode_reply(data: bytes) -> Reply:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MessageError("a reply must be bytes")
    data = bytes(data)
    if len(data) < 8 or data[:4] != REPLY_MAGIC:
        raise MessageError("not a fedsurv reply")
    (hn,) = struct.unpack(">I", data[4:8])
    if hn > _MAX_BODY or len(data) < 8 + hn:
        raise MessageError("reply header length does not match")
    try:
        h = json.loads(data[8:8 + hn].decode("utf-8"))
        size = int(h["payload_bytes"])
        rest = data[8 + hn:]
        if len(rest) not in (size, size + SIGNATURE_BYTES):
            raise MessageError("reply payload length does not match its header")
        reply = Reply(site=str(h["site"]), query_id=str(h["query_id"]), plan_sha256=str(h["plan_sha256"]),
                      status=str(h["status"]), reason=str(h["reason"]), n=int(h["n"]), payload=rest[:size],
                      signature=rest[size:], final=h.get("final") is True)
    except MessageError:
        raise
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise MessageError("malformed reply header") from None
    if reply.payload_sha256 != h.get("payload_sha256"):
        raise MessageError("reply payload does not match its digest")
    return reply
