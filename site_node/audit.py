"""The site's audit log: append-only JSON lines, each holding the hash of the one before.

Every line is the canonical JSON (sorted keys, no spaces) of one entry. Each entry has

- ``seq``: 1, 2, 3, ... in file order;
- ``prev``: the ``hash`` of the entry before (64 zeros for the first);
- ``hash``: SHA-256 of the canonical JSON of the entry without its ``hash`` key;
- ``time`` (UTC, ISO 8601) and ``unix`` (seconds), and ``event`` ("query" for now);

and, for a query: ``request_sha256``, ``signature_valid``, ``coordinator_key`` (base64 of
the roster's coordinator key that verified the signature, or null), ``query_id``,
``plan_sha256``, ``plan``, ``participants``, ``issued_at``, ``expires_at``, ``rerun_of``,
``supersedes`` (earlier queries this one shows to have failed), ``decision`` ("ok",
"refused", "error"), ``reasons``, ``detail`` (site-only detail of an error, never sent),
``pending`` (waiting for manual approval), ``approval``, ``n``, ``tallies_sha256``,
``payload_sha256`` and ``reply_sha256``.

An edited line breaks its own hash; a deleted, inserted or reordered line breaks ``seq`` and
``prev``. Removing the newest lines is the one change the chain cannot show on its own: the
privacy officer notes the head hash `fedsurv audit show` prints, and later
`fedsurv audit verify LOG --head HASH` fails if that entry is gone. Entries are written with a single write, flushed and fsynced before
the reply leaves the site.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import FedsurvError

GENESIS = "0" * 64


class AuditError(FedsurvError):
    """The audit log cannot be written or does not verify; no reply may leave the site."""


def canonical(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    head: str
    first_bad: int | None = None  # 1-based entry (= line) number
    message: str = ""


def verify_lines(lines: list[str]) -> tuple[Verification, list[dict[str, Any]]]:
    """Check the chain; stops at the first bad entry and names it."""
    prev, entries = GENESIS, []
    for i, line in enumerate(lines, start=1):
        why = _fault(line, i, prev)
        if why:
            return Verification(False, len(entries), prev, i, f"entry {i} (line {i}): {why}"), entries
        e = json.loads(line)
        prev = e["hash"]
        entries.append(e)
    return Verification(True, len(entries), prev), entries


def _fault(line: str, seq: int, prev: str) -> str:
    """What is wrong with entry number `seq`, whose predecessor's hash is `prev` ("" if nothing)."""
    try:
        e = json.loads(line)
    except json.JSONDecodeError:
        return "not valid JSON"
    if not isinstance(e, dict) or not {"seq", "prev", "hash"} <= set(e):
        return "not an audit entry (seq, prev and hash missing)"
    if e["seq"] != seq:
        return f"sequence number {e['seq']} where {seq} was expected (an entry was deleted, inserted or moved)"
    if e["prev"] != prev:
        return "does not chain to the entry before it (an entry was deleted, inserted, moved or edited)"
    if entry_hash(e) != e["hash"]:
        return "its content does not match its hash (the entry was edited)"
    return ""


def verify_log(path: str | Path) -> tuple[Verification, list[dict[str, Any]]]:
    return verify_bytes(_read(path))


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise AuditError(f"{path}: cannot read the audit log ({e.strerror})") from None


def verify_bytes(raw: bytes) -> tuple[Verification, list[dict[str, Any]]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Verification(False, 0, GENESIS, 1, "the log is not UTF-8 text"), []
    if text and not text.endswith("\n"):
        # A torn final write: the entry never completed, so no reply left for it.
        lines = text.split("\n")
        return Verification(False, len(lines) - 1, GENESIS, len(lines),
                            f"entry {len(lines)} (line {len(lines)}): incomplete line (torn write)"), []
    return verify_lines(text.splitlines())


class AuditLog:
    """An open, verified audit log (or an in-memory one when `path` is None).

    Several writers may share one file (the site's answer path and its Flower loop, even in
    different processes): each append takes an exclusive lock and, if the file grew since
    this object last saw it, re-reads and re-verifies it, so the chain never forks.
    """

    def __init__(self, path: str | Path | None, clock: Callable[[], float] = time.time):
        self.path = Path(path) if path is not None else None
        self._clock = clock
        self.entries: list[dict[str, Any]] = []
        self.head = GENESIS
        self._size = 0
        self.refresh()

    def refresh(self) -> None:
        """Re-read the file if another writer appended to it; raise AuditError if it does not verify."""
        if self.path is None or not self.path.exists():
            return
        size = self.path.stat().st_size
        if size != self._size:
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        raw = _read(self.path)
        result, entries = verify_bytes(raw)
        if not result.ok:
            raise AuditError(f"audit log {self.path} does not verify ({result.message}); this site answers "
                             "nothing until its privacy officer has examined it")
        self.entries, self.head, self._size = entries, result.head, len(raw)

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write one entry durably (flush and fsync) or raise AuditError."""
        if self.path is None:
            return self._add(record)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as e:
            raise AuditError(f"cannot open the audit log {self.path} ({e.strerror}); no reply was sent") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size != self._size:
                self._load()
            entry = self._next(record)
            line = (canonical(entry) + "\n").encode("utf-8")
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(5, "short write")
            os.fsync(fd)
            if new:
                # Make the new file's directory entry durable too.
                dfd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as e:
            raise AuditError(f"cannot write the audit log {self.path} ({e.strerror}); no reply was sent") from None
        finally:
            os.close(fd)  # also releases the lock
        self._size += len(line)
        return self._commit(entry)

    def _next(self, record: dict[str, Any]) -> dict[str, Any]:
        now = self._clock()
        entry = {**record, "seq": len(self.entries) + 1, "prev": self.head, "unix": now,
                 "time": _dt.datetime.fromtimestamp(now, _dt.UTC).isoformat(timespec="milliseconds")}
        entry["hash"] = entry_hash(entry)
        return entry

    def _commit(self, entry: dict[str, Any]) -> dict[str, Any]:
        self.entries.append(entry)
        self.head = entry["hash"]
        return entry

    def _add(self, record: dict[str, Any]) -> dict[str, Any]:
        return self._commit(self._next(record))


def summarise(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts by decision, the time span, and one line per query."""
    by_decision: dict[str, int] = {}
    rows = []
    for e in entries:
        d = "pending" if e.get("pending") else str(e.get("decision") or e.get("event", "?"))
        by_decision[d] = by_decision.get(d, 0) + 1
        rows.append({"seq": e["seq"], "time": e.get("time"), "event": e.get("event"), "query_id": e.get("query_id"),
                     "plan": (e.get("plan") or {}).get("plan", {}).get("title") if isinstance(e.get("plan"), dict) else None,
                     "plan_sha256": e.get("plan_sha256"), "participants": e.get("participants"),
                     "decision": d, "reasons": e.get("reasons", []), "n": e.get("n"),
                     # a regression round: its number, the tally round it continues, beta per model
                     "round": (e.get("step") or {}).get("round"), "round1": (e.get("step") or {}).get("round1"),
                     "betas": (e.get("step") or {}).get("betas")})
    return {"entries": len(entries), "first": entries[0]["time"] if entries else None,
            "last": entries[-1]["time"] if entries else None,
            "head": entries[-1]["hash"] if entries else GENESIS, "decisions": by_decision, "queries": rows}
