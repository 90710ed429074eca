"""One secure round per plan, over any transport: sign a query, collect masked replies, sum.

The transport is a plain function from {site: request bytes} to {site: reply bytes, or
None / an exception for no answer}; the in-process runner and the Flower server app each
provide one. If a site does not answer or refuses, the round's sum cannot be formed (its
masks do not cancel), so the round is dropped and run again with a fresh query id over the
sites that did answer, as long as at least `min_sites` remain. Signed refusals and errors
from the sites left out travel with the rerun as evidence, so that sites with a policy
against differencing can see the earlier round never produced a sum (only a site's final
refusal counts, see protocol.query.Reply). A site that went silent leaves no such proof:
sites with a policy then answer the rerun only if their policy sets rerun_after_dropout.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from coordinator.aggregate import Check, aggregate_replies
from protocol.errors import AggregationError
from protocol.keys import PartyKeys
from protocol.plan import Plan
from protocol.query import MessageError, Query, Reply, decode_reply, sign_query
from protocol.roster import Roster
from protocol.tallies import Tallies

Transport = Callable[[Mapping[str, bytes]], Mapping[str, "bytes | BaseException | None"]]
APPROVAL_POLL_SECONDS = 5.0


@dataclass(frozen=True)
class RoundResult:
    tallies: Tallies
    sites: tuple[tuple[str, int], ...]  # (name, n) of the contributing sites
    query_ids: tuple[str, ...]  # every query issued, the successful one last
    notes: tuple[str, ...]
    refusals: tuple[tuple[str, str], ...]  # (site, reason) of every refusal or error reply


def new_query(plan: Plan, coordinator: PartyKeys, participants: Sequence[str], ttl_seconds: float,
              clock: Callable[[], float] = time.time, rerun_of: str | None = None,
              evidence: tuple[bytes, ...] = (), step: dict | None = None) -> tuple[Query, bytes]:
    """A fresh query (random 128-bit id) and its signed wire form."""
    now = clock()
    q = Query(query_id=secrets.token_hex(16), plan_json=plan.canonical_json(), plan_sha256=plan.sha256,
              participants=tuple(sorted(participants)), issued_at=now, expires_at=now + ttl_seconds,
              coordinator=coordinator.public().fingerprint, rerun_of=rerun_of, evidence=evidence, step=step)
    return q, sign_query(q, coordinator).encode()


@dataclass
class Collected:
    ok: dict[str, Reply]
    failed: dict[str, Reply]  # signed refusals and errors for this query
    silent: dict[str, str]  # site -> why its answer does not count


def collect_replies(query: Query, roster: Roster, raw: Mapping[str, object], sites: Sequence[str]) -> Collected:
    """Sort a transport's answers to `query`: verified "ok" replies, signed refusals and errors,
    and sites whose answer does not count (silent, unreadable, unsigned, another query)."""
    out = Collected({}, {}, {})
    for s in sites:
        r = raw.get(s)
        if r is None:
            out.silent[s] = "did not answer"
            continue
        if isinstance(r, BaseException):
            out.silent[s] = f"did not answer ({r.__class__.__name__}: {r})"
            continue
        try:
            reply = decode_reply(r)  # type: ignore[arg-type]
        except MessageError as e:
            out.silent[s] = f"sent an unreadable reply ({e})"
            continue
        if reply.site != s or not reply.verify(roster.site(s).signing_public):
            out.silent[s] = "sent a reply whose signature does not verify against the roster"
            continue
        if reply.status == "ok":
            if reply.query_id != query.query_id or reply.plan_sha256 != query.plan_sha256:
                out.silent[s] = "answered a different query or plan"
            else:
                out.ok[s] = reply
        else:
            out.failed[s] = reply
    return out


def run_plan_secure(plan: Plan, transport: Transport, coordinator: PartyKeys, roster: Roster, sites: Sequence[str],
                    min_sites: int = 3, ttl_seconds: float = 600, clock: Callable[[], float] = time.time,
                    on_progress: Callable[[str], None] | None = None, approval_wait_seconds: float = 0.0,
                    sleep: Callable[[float], None] = time.sleep, check: Check | None = None,
                    rerun_of: str | None = None, evidence: tuple[bytes, ...] = ()) -> RoundResult:
    """Run `plan` over `sites`, rerunning without the sites that fail, and return the checked sum.

    Raises AggregationError when fewer than `min_sites` can take part (naming the sites that
    did not answer or refused, and why) or when the replies do not sum to consistent tallies.
    With `approval_wait_seconds` > 0, sites awaiting manual approval are asked again with the
    same signed query every few seconds until they answer, the query expires or the wait ends.
    `check` replaces the exact consistency checks (see coordinator.aggregate.aggregate_replies).
    `rerun_of` and `evidence` start the run as a rerun of an earlier query (a plan whose
    regression rounds lost a site is run again from its tally round).
    """
    say = on_progress or (lambda _m: None)
    participants = sorted(sites)
    if len(set(participants)) != len(participants):
        raise AggregationError("a site is listed twice")
    strangers = [s for s in participants if s not in roster]
    if strangers:
        raise AggregationError(f"site {strangers[0]!r} is not in the roster")
    query_ids: list[str] = []
    notes: list[str] = []
    refusals: list[tuple[str, str]] = []
    left_out: dict[str, str] = {}
    while True:
        if len(participants) < min_sites:
            why = "; ".join(f"{s} {r}" for s, r in left_out.items())
            raise AggregationError(
                f"only {len(participants)} site(s) can take part but at least {min_sites} are needed"
                + (f": {why}" if why else ""))
        query, request = new_query(plan, coordinator, participants, ttl_seconds, clock, rerun_of, evidence)
        query_ids.append(query.query_id)
        say(f"query {query.query_id[:8]}: asking {len(participants)} sites ({', '.join(participants)})")
        got = collect_replies(query, roster, transport({s: request for s in participants}), participants)
        if approval_wait_seconds > 0:
            _wait_for_approval(query, request, roster, transport, got, clock, sleep, approval_wait_seconds, say)
        for s, r in got.failed.items():
            refusals.append((s, f"{r.status}: {r.reason}"))
            left_out[s] = f"{'refused' if r.status == 'refused' else 'failed'} ({r.reason})"
            say(f"{s} {left_out[s]}")
        for s, why in got.silent.items():
            left_out[s] = why
            say(f"{s} {why}")
        if not got.failed and not got.silent:
            tallies, site_ns = aggregate_replies(plan, got.ok, check)
            say(f"query {query.query_id[:8]}: {len(got.ok)} sites answered; the masks cancelled and the sum checks out")
            return RoundResult(tallies, site_ns, tuple(query_ids), tuple(notes), tuple(refusals))
        dropped = sorted(set(got.failed) | set(got.silent))
        notes.append(f"query {query.query_id} dropped: {', '.join(f'{s} {left_out[s]}' for s in dropped)}; "
                     f"{len(got.ok)} site(s) remain")
        rerun_of = query.query_id
        evidence = tuple(r.encode() for r in got.failed.values())
        participants = sorted(got.ok)


def _wait_for_approval(query: Query, request: bytes, roster: Roster, transport: Transport, got: Collected,
                       clock: Callable[[], float], sleep: Callable[[float], None], wait: float,
                       say: Callable[[str], None]) -> None:
    deadline = min(query.expires_at, clock() + wait)
    while True:
        waiting = sorted(s for s, r in got.failed.items() if r.awaiting_approval and r.query_id == query.query_id)
        if not waiting or clock() + APPROVAL_POLL_SECONDS > deadline:
            return
        say(f"waiting for manual approval at {', '.join(waiting)}")
        sleep(APPROVAL_POLL_SECONDS)
        again = collect_replies(query, roster, transport({s: request for s in waiting}), waiting)
        for s in waiting:
            if s in again.ok:
                got.ok[s] = again.ok[s]
                del got.failed[s]
            elif s in again.failed:
                got.failed[s] = again.failed[s]
            else:
                del got.failed[s]
                got.silent[s] = again.silent[s]


def local_transport(nodes: Mapping[str, Callable[[bytes], bytes]]) -> Transport:
    """Call each site's `answer` in turn; a site that raises simply did not answer."""

    def send(requests: Mapping[str, bytes]) -> dict[str, bytes | BaseException | None]:
        out: dict[str, bytes | BaseException | None] = {}
        for name, req in requests.items():
            try:
                out[name] = nodes[name](req)
            except Exception as e:  # noqa: BLE001 - a failing site is a missing reply, never a crash
                out[name] = e
        return out

    return send
