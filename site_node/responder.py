"""A site's whole answer path: verify the query, apply the policy, tally, mask, audit, reply.

`SiteNode.answer` takes the coordinator's request bytes and returns the reply bytes; the
in-process runner and the Flower client call exactly this. It never raises for a bad or
refused query: the reply says "refused" or "error" with a reason that names no patient data.
The audit entry is written and fsynced before the reply is returned; if it cannot be
written, AuditError propagates and no reply leaves.

Checks, in order: the query decodes; its signature verifies against the roster's
coordinator key; every participant is in the roster, once, and this site among them; it
has not expired and its id was never seen; the plan matches its hash. With a policy also:
enough participants, an acceptable lifetime, kinds, variables and bin width allowed, no
stratum with 1..k-1 patients here, the daily limit, no differencing (below), and manual
approval. Without a policy (`fedsurv run` over files the user holds anyway) only the first
group applies.

Differencing: if this site answered plan P with sites S, a later answer to P with sites
S' != S would let the coordinator subtract the two sums and isolate the sites in between.
"The same plan" is judged by content, not by name: any plan whose tallies repeat a
histogram, count or moments block this site already sent (same shape and values; see
`block_digests`) counts, so a retitled or padded plan does not get around the rule. Unless
``same_plan_other_sites`` is set, a site sends such tallies again over other sites only
when the query is a rerun of the earlier one over a subset of S, and the coordinator
includes the signed refusal or error reply of every site left out (proof that the earlier
sum never existed), or, if ``rerun_after_dropout`` is set, trusting the coordinator that
sites that sent nothing did not answer. Blocks that differ only slightly (a coarser grid
of the same rows) are not caught: bounding what overlapping aggregates reveal is the job
of differential privacy, not of this rule.

Manual approval: a query that passes every other check is refused with "awaiting approval"
and recorded in ``approvals_dir/<query id>.pending.json``; after
`fedsurv site approve QUERY_ID --state approvals_dir` the coordinator may resend the same
signed query (same id, same bytes) until it expires, and the site then answers it.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protocol import fixedpoint
from protocol.dp_plan import NoiseParameters, PrivacyPlanError, noise_parameters
from protocol.errors import FedsurvError, RefusedError
from protocol.keys import PartyKeys, b64
from protocol.masking import Masker, payload_bytes
from protocol.plan import Plan, plan_from_dict
from protocol.query import (
    AWAITING_APPROVAL,
    MessageError,
    Query,
    Reply,
    decode_reply,
    decode_signed_query,
)
from protocol.regression import (
    Step,
    StepError,
    check_step,
    regression_analyses,
)
from protocol.roster import Roster
from protocol.tallies import Tallies
from site_node.audit import AuditLog
from site_node.dp_ledger import BudgetDecision, budget_decision, ledger_from_records
from site_node.dp_noise import add_noise_shares
from site_node.policy import Policy, participant_reasons, plan_reasons, small_strata
from site_node.prepared import PreparedData
from site_node.regression import ModelData, model_data, model_reasons, model_values
from site_node.tally import compute_tallies

DAY_SECONDS = 86400.0
CLOCK_SKEW_SECONDS = 300.0
DATA_FAILED = ("the site's data could not be prepared for this plan "
               "(the site's operator finds the details in its audit log)")


def tallies_sha256(tallies: Tallies) -> str:
    return hashlib.sha256(tallies.flatten().astype("<i8").tobytes()).hexdigest()


def block_digests(tallies: Tallies) -> list[str]:
    """SHA-256 of each histogram, count and moments block's shape and values (not its name).

    Two sums that share such a block over different sets of sites reveal the difference of
    those sites' blocks, whatever the plans were called; "n" (sent in the clear anyway) and
    the one-cell dropped counts are left out.
    """
    out = []
    for b in tallies.blocks:
        if b.key.split(":", 1)[0] in ("surv", "count", "moments", "regsurv"):
            a = tallies[b.key]
            out.append(hashlib.sha256(repr(a.shape).encode() + a.astype("<i8").tobytes()).hexdigest())
    return sorted(set(out))


def budget_summary(d: BudgetDecision) -> dict[str, Any]:
    """The budget decision as JSON; an unlimited remainder (no policy budget) is null."""
    return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in d.summary().items()}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Preview:
    """What a site would contribute to a plan, and what its policy says, before anything is sent."""

    site: str
    plan_sha256: str
    n: int
    tallies: Tallies
    decision: Decision
    left_out: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    privacy: dict[str, Any] | None = None  # noise and budget (BudgetDecision.summary) under DP


class _Refuse(Exception):
    def __init__(self, status: str, reasons: list[str], detail: str = ""):
        super().__init__(reasons)
        self.status, self.reasons, self.detail = status, reasons, detail


BeforeMasking = Callable[[Plan, Query, Tallies, dict[str, Any]], Tallies]


class SiteNode:
    """One site's answer path (module docstring).

    `before_masking(plan, query, tallies, record)`, if given, runs after every check passed
    and returns the tallies to mask (differential privacy adds its noise share there); it may
    add JSON fields to `record`, the audit entry, and raise RefusedError to refuse.
    """

    def __init__(self, name: str, load_data: Callable[[Plan], PreparedData], keys: PartyKeys, roster: Roster,
                 policy: Policy | None = None, audit_path: Path | None = None, approvals_dir: Path | None = None,
                 clock: Callable[[], float] = time.time, before_masking: BeforeMasking | None = None):
        if name != keys.name:
            raise FedsurvError(f"site {name!r} was given the keys of {keys.name!r}")
        if name not in roster:
            raise FedsurvError(f"site {name!r} is not in its own roster")
        if roster.site(name).signing_public != keys.public().signing_public:
            raise FedsurvError(f"site {name!r}: the roster holds different public keys than this site's keys")
        self.name, self.keys, self.roster, self.policy = name, keys, roster, policy
        self._load_data, self._clock, self._before_masking = load_data, clock, before_masking
        self.approvals_dir = Path(approvals_dir) if approvals_dir is not None else None
        self.audit = AuditLog(audit_path, clock)
        self._masker = Masker(keys)
        self._lock = threading.Lock()
        self._peers = {s.name: s.masking_public for s in roster.sites}
        # The rows of the last plan's regression models, kept between its rounds.
        self._models: tuple[str, dict[str, ModelData]] | None = None

    # ------------------------------------------------------------------ history, from the audit log

    def _seen(self, query_id: str) -> dict[str, Any] | None:
        """The latest verified entry for this query id, if any."""
        for e in reversed(self.audit.entries):
            if e.get("query_id") == query_id and e.get("signature_valid"):
                return e
        return None

    def _answered(self, plan_sha256: str, blocks: set[str]) -> list[dict[str, Any]]:
        """Earlier answers to this plan, or to any plan that repeated one of these tally blocks."""
        superseded = {q for e in self.audit.entries for q in e.get("supersedes", [])}
        return [e for e in self.audit.entries if e.get("decision") == "ok" and e.get("query_id") not in superseded
                and "step" not in e
                and (e.get("plan_sha256") == plan_sha256 or blocks & set(e.get("blocks_sha256", [])))]

    # ------------------------------------------------------------------ the answer path

    def answer(self, request: bytes) -> bytes:
        with self._lock:
            self.audit.refresh()  # another writer (the site's Flower loop) may have appended
            raw = bytes(request) if isinstance(request, (bytes, bytearray, memoryview)) else b""
            record: dict[str, Any] = {"event": "query", "site": self.name,
                                      "request_sha256": hashlib.sha256(raw).hexdigest()}
            try:
                reply = self._answer(raw, record)
            except _Refuse as r:
                reply = self._failure(record, r)
            except Exception as e:  # noqa: BLE001 - a fault here must still leave an entry and a reply
                reply = self._failure(record, _Refuse("error", ["internal error at the site (details in its audit log)"],
                                                      detail=f"{e.__class__.__name__}: {e}"))
            reply = reply.sign(self.keys)
            encoded = reply.encode()
            record["reply_sha256"] = hashlib.sha256(encoded).hexdigest()
            record["payload_sha256"] = reply.payload_sha256 if reply.payload else None
            self.audit.append(record)  # raises AuditError: then no reply leaves
            return encoded

    def _failure(self, record: dict[str, Any], r: _Refuse) -> Reply:
        record.update(decision=r.status, reasons=r.reasons)
        if r.detail:
            record["detail"] = r.detail
        final = bool(record.get("final")) and not record.get("pending")
        record["final"] = final
        return Reply(self.name, record.get("query_id") or "", record.get("plan_sha256") or "", r.status,
                     "; ".join(r.reasons), final=final)

    def _answer(self, request: bytes, record: dict[str, Any]) -> Reply:
        now = self._clock()
        try:
            signed = decode_signed_query(request)
            query = signed.query
        except MessageError as e:
            record["signature_valid"] = False
            raise _Refuse("refused", [f"malformed query: {e}"]) from None
        record.update(query_id=query.query_id, plan_sha256=query.plan_sha256, participants=list(query.participants),
                      issued_at=query.issued_at, expires_at=query.expires_at, rerun_of=query.rerun_of)
        valid = signed.verify(self.roster.coordinator_signing_public)
        record["signature_valid"] = valid
        record["coordinator_key"] = b64(self.roster.coordinator_signing_public) if valid else None
        if not valid:
            raise _Refuse("refused", ["the query's signature does not verify against the roster's coordinator key"])
        self._check_envelope(query, now, record)
        try:
            plan = plan_from_dict(query.plan_dict)
        except (FedsurvError, ValueError) as e:
            raise _Refuse("refused", [f"the plan is not valid: {e}"]) from None
        record["plan"] = plan.to_dict()
        if plan.sha256 != query.plan_sha256:
            raise _Refuse("refused", ["the plan does not match the plan hash in the query"])
        step = None
        if query.step is not None:
            try:
                step = Step.from_dict(query.step)
            except StepError as e:
                raise _Refuse("refused", [str(e)]) from None
        if self.policy is not None:
            reasons = participant_reasons(self.policy, len(query.participants)) + plan_reasons(self.policy, plan)
            if query.expires_at - query.issued_at > self.policy.max_query_lifetime_seconds:
                reasons.append(f"the query is valid for longer than the policy allows "
                               f"({self.policy.max_query_lifetime_seconds:g} s, policy.max_query_lifetime_seconds)")
            if reasons:
                raise _Refuse("refused", reasons)
            if step is None:
                self._check_rate(now)
        if step is not None:
            return self._answer_round(query, plan, step, record)
        tallies = self._tallies(plan, record)
        if self.policy is not None:
            small = small_strata(plan, tallies, self.policy.min_stratum_size) + [
                r for a in regression_analyses(plan)
                for r in model_reasons(a, self._model_rows(plan)[a.name], None, 0, None, self.policy.regression)]
            if small:
                raise _Refuse("refused", small)
            if not self.policy.same_plan_other_sites:
                self._check_differencing(query, record)
        dp = self._privacy_budget(plan, query, record)
        if self.policy is not None and self.policy.manual_approval:
            self._check_approval(query, plan, record)
        if dp is not None:
            # After every check on the exact tallies; only the noisy share is masked and sent.
            tallies = add_noise_shares(tallies, dp.share)
        if self._before_masking is not None:
            try:
                tallies = self._before_masking(plan, query, tallies, record)
            except RefusedError as e:
                raise _Refuse("refused", [str(e)]) from None
        masked = self._masker.mask(tallies.flatten(), query.query_id, query.plan_sha256, query.participants,
                                   self._peers)
        record.update(decision="ok", reasons=[])
        return Reply(self.name, query.query_id, query.plan_sha256, "ok", "", tallies.n, payload_bytes(masked),
                     final=True)

    def _privacy_budget(self, plan: Plan, query: Query, record: dict[str, Any]) -> NoiseParameters | None:
        """The noise this site adds under the plan's [privacy] table, if its budget allows it.

        Refuses a DP plan whose noise cannot be set (too few honest sites) or that the policy's
        [privacy] budget does not cover, and a plan without DP when the policy requires it. The
        ledger is the audit log's "dp_spend" entries; this answer's spend is recorded with it.
        """
        privacy = self.policy.privacy_policy if self.policy is not None else None
        if plan.privacy is None and privacy is None:
            return None
        params = None
        if plan.privacy is not None:
            try:
                params = noise_parameters(plan.privacy, plan, len(query.participants))
            except PrivacyPlanError as e:
                raise _Refuse("refused", [f"differential privacy: {e}"]) from None
        d = budget_decision(privacy, ledger_from_records(self.audit.entries), plan.privacy, params,
                            query.query_id, query.plan_sha256)
        record["dp_budget"] = budget_summary(d)
        if not d.allowed:
            raise _Refuse("refused", list(d.reasons))
        if params is None:
            return None
        record["dp"] = params.to_dict()
        record["dp_spend"] = d.spend.record() if d.spend is not None else None
        return params

    def _check_envelope(self, query: Query, now: float, record: dict[str, Any]) -> None:
        # Replays first: whatever else is wrong with a query id already decided, the answer
        # must not read as a first decision on it (see Reply.final).
        earlier = self._seen(query.query_id)
        # Only the very same signed query may come back, and only while it awaits approval.
        resent = earlier is not None and earlier.get("pending") and earlier.get("request_sha256") == record["request_sha256"]
        if earlier is not None and not resent:
            raise _Refuse("refused", ["this query id was seen before (replayed query)"])
        record["final"] = True
        parts = query.participants
        if len(set(parts)) != len(parts):
            raise _Refuse("refused", ["a participant is listed twice"])
        strangers = [p for p in parts if p not in self.roster]
        if strangers:
            raise _Refuse("refused", [f"participant {strangers[0]!r} is not in this site's roster"])
        if self.name not in parts:
            raise _Refuse("refused", ["this site is not among the query's participants"])
        if now >= query.expires_at:
            raise _Refuse("refused", ["the query has expired"])
        if query.issued_at > now + CLOCK_SKEW_SECONDS:
            raise _Refuse("refused", ["the query was issued in the future (check the clocks)"])

    def _check_rate(self, now: float) -> None:
        policy = self.policy
        assert policy is not None
        # A regression round continues an answered query; only the queries themselves count.
        recent = sum(1 for e in self.audit.entries if e.get("decision") == "ok" and "step" not in e
                     and e.get("unix", 0) > now - DAY_SECONDS)
        if recent >= policy.max_queries_per_day:
            raise _Refuse("refused", [(f"the site has answered {recent} queries in the last 24 hours "
                                       f"(policy.max_queries_per_day = {policy.max_queries_per_day})")])

    def _check_differencing(self, query: Query, record: dict[str, Any]) -> None:
        """Refuse to send tallies this site already sent over another set of sites (module docstring)."""
        policy = self.policy
        assert policy is not None
        new = set(query.participants)
        supersedes, notes = [], []
        for e in self._answered(query.plan_sha256, set(record["blocks_sha256"])):
            old = set(e.get("participants", []))
            if old == new:
                continue
            left_out = old - new
            if query.rerun_of == e.get("query_id") and new < old:
                proven = self._proven_failures(query, e["query_id"], left_out)
                unproven = sorted(left_out - proven)
                if not unproven:
                    supersedes.append(e["query_id"])
                    continue
                if policy.rerun_after_dropout:
                    supersedes.append(e["query_id"])
                    notes.append(f"trusted the coordinator that {', '.join(unproven)} did not answer "
                                 f"query {e['query_id']}")
                    continue
                raise _Refuse("refused", [(
                    f"this site answered this plan (or one repeating its tallies) before (query {e['query_id']}) "
                    f"with {', '.join(sorted(old))}; "
                    f"no signed refusal from {', '.join(unproven)} shows that the earlier round failed, so answering "
                    f"without them could isolate their tallies by differencing (policy.rerun_after_dropout)")])
            raise _Refuse("refused", [(
                f"this site answered this plan (or one repeating its tallies) before (query {e['query_id']}) "
                f"with another set of sites "
                f"({', '.join(sorted(old))}); answering it again with {', '.join(sorted(new))} would let the "
                f"coordinator isolate sites by differencing (policy.same_plan_other_sites)")])
        if supersedes:
            record["supersedes"] = supersedes
        if notes:
            record["notes"] = notes

    def _proven_failures(self, query: Query, earlier_id: str, left_out: set[str]) -> set[str]:
        """Sites among `left_out` whose signed reply to the earlier query refused or failed."""
        proven = set()
        for raw in query.evidence:
            try:
                r = decode_reply(raw)
            except MessageError:
                continue
            # Only a final refusal is proof: a reply to a replay, to a forged copy or to a query
            # awaiting approval could come after (or before) an answer that completed the sum.
            if (r.site in left_out and r.query_id == earlier_id and r.status != "ok" and r.final
                    and r.site in self.roster
                    and r.verify(self.roster.site(r.site).signing_public)):
                proven.add(r.site)
        return proven

    def _answer_round(self, query: Query, plan: Plan, step: Step, record: dict[str, Any]) -> Reply:
        """A Cox / Fine-Gray round (protocol/regression.py): the sums at the broadcast beta.

        Only a continuation of a tally round this site answered for the same plan and the same
        participants is answered, so the rounds of one fit always sum over one set of sites;
        rounds are numbered upwards, and the policy's [regression] bounds apply to each.
        """
        record["step"] = step.to_dict()
        reasons = check_step(plan, step)
        if reasons:
            raise _Refuse("refused", reasons)
        first = next((e for e in self.audit.entries if e.get("query_id") == step.round1 and e.get("decision") == "ok"
                      and "step" not in e), None)
        if (first is None or first.get("plan_sha256") != query.plan_sha256
                or sorted(first.get("participants", [])) != sorted(query.participants)):
            raise _Refuse("refused", [("this round does not continue a tally round this site answered for the same "
                                       "plan and the same sites")])
        earlier = [e["step"]["round"] for e in self.audit.entries
                   if e.get("decision") == "ok" and (e.get("step") or {}).get("round1") == step.round1]
        if earlier and max(earlier) >= step.round_no:
            raise _Refuse("refused", [f"round {step.round_no} comes after round {max(earlier)}"])
        models = self._model_rows(plan)
        policy = self.policy.regression if self.policy is not None else None
        by_name = {a.name: a for a in regression_analyses(plan)}
        for name, beta in step.betas:
            reasons += model_reasons(by_name[name], models[name], np.array(beta), len(earlier) + 1,
                                     step.exits(name), policy)
        if reasons:
            raise _Refuse("refused", reasons)
        values = np.concatenate([model_values(plan, by_name[n], models[n], step.beta(n)) for n, _ in step.betas])
        try:
            words = fixedpoint.encode(values)
        except (ValueError, FloatingPointError) as e:
            raise _Refuse("refused", [f"the sums at this beta cannot be sent exactly ({e})"]) from None
        masked = self._masker.mask128(words, query.query_id, query.plan_sha256, query.participants, self._peers)
        record.update(decision="ok", reasons=[], values=int(values.size))
        return Reply(self.name, query.query_id, query.plan_sha256, "ok", "", 0, payload_bytes(masked), final=True)

    def _model_rows(self, plan: Plan) -> dict[str, ModelData]:
        if self._models is None or self._models[0] != plan.sha256:
            try:
                data = self._load_data(plan)
                self._models = (plan.sha256, {a.name: model_data(plan, a, data) for a in regression_analyses(plan)})
            except Exception as e:  # noqa: BLE001 - any failure becomes an error reply, details stay here
                raise _Refuse("error", [DATA_FAILED], detail=f"{e.__class__.__name__}: {e}") from None
        return self._models[1]

    def _tallies(self, plan: Plan, record: dict[str, Any]) -> Tallies:
        try:
            data = self._load_data(plan)
            tallies = compute_tallies(plan, data)
            if regression_analyses(plan):
                self._models = (plan.sha256, {a.name: model_data(plan, a, data) for a in regression_analyses(plan)})
        except Exception as e:  # noqa: BLE001 - any failure becomes an error reply, details stay here
            raise _Refuse("error", [DATA_FAILED], detail=f"{e.__class__.__name__}: {e}") from None
        record.update(n=tallies.n, tallies_sha256=tallies_sha256(tallies), blocks_sha256=block_digests(tallies))
        return tallies

    def _check_approval(self, query: Query, plan: Plan, record: dict[str, Any]) -> None:
        if self.approvals_dir is None:
            raise _Refuse("refused", ["the policy requires manual approval but the site has no approvals folder"])
        approved = self.approvals_dir / f"{query.query_id}.approved"
        if approved.exists():
            try:
                record["approval"] = json.loads(approved.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                record["approval"] = {"file": approved.name}
            return
        self.approvals_dir.mkdir(parents=True, exist_ok=True)
        pending = {"query_id": query.query_id, "title": plan.title, "plan_sha256": query.plan_sha256,
                   "participants": list(query.participants), "issued_at": query.issued_at,
                   "expires_at": query.expires_at, "n": record.get("n"), "request_sha256": record["request_sha256"]}
        (self.approvals_dir / f"{query.query_id}.pending.json").write_text(json.dumps(pending, indent=1) + "\n",
                                                                           encoding="utf-8")
        record["pending"] = True
        raise _Refuse("refused", [(f"{AWAITING_APPROVAL}: the site's privacy officer must run "
                                   f"`fedsurv site approve {query.query_id}`")])

    # ------------------------------------------------------------------ preview

    def preview(self, plan: Plan) -> Preview:
        """The exact tallies and the policy's decision on the plan itself; nothing is sent."""
        return preview(self.name, plan, self._load_data(plan), self.policy)


def preview(site: str, plan: Plan, data: PreparedData, policy: Policy | None,
            audit_records: list[dict[str, Any]] | None = None, participants: int | None = None) -> Preview:
    """What `site` would contribute to `plan` from `data`, and its policy's decision on it.

    Under differential privacy (the plan's or the policy's [privacy] table) the preview also
    holds the budget the plan would spend and what would remain, from the ledger in
    `audit_records` (the site's audit log), assuming `participants` sites (default: the
    fewest the policy accepts).
    """
    tallies = compute_tallies(plan, data)
    reasons: list[str] = []
    privacy_info: dict[str, Any] | None = None
    privacy = policy.privacy_policy if policy is not None else None
    if plan.privacy is not None or privacy is not None:
        k = participants or (policy.required_sites if policy is not None else 3)
        params = None
        if plan.privacy is not None:
            try:
                params = noise_parameters(plan.privacy, plan, k)
            except PrivacyPlanError as e:
                reasons.append(f"differential privacy: {e}")
        d = budget_decision(privacy, ledger_from_records(audit_records or []), plan.privacy, params,
                            "preview", plan.sha256)
        reasons += list(d.reasons)
        privacy_info = {"participants": k, "noise": params.to_dict() if params else None, "budget": budget_summary(d)}
    notes = [("only the masked form of these tallies leaves the site; the coordinator sees only their sum "
              "over all participating sites")]
    models = regression_analyses(plan)
    if models:
        rows = {a.name: model_data(plan, a, data) for a in models}
        limits = policy.regression if policy is not None else None
        if policy is not None:
            reasons += [r for a in models for r in model_reasons(a, rows[a.name], None, 0, None, limits)]
        from protocol.regression import model_cells, uses_patterns

        sizes = ", ".join(f"{a.name} {model_cells(plan, a):,}" for a in models if not uses_patterns(plan, a)) or "none"
        by_pattern = [a.name for a in models if uses_patterns(plan, a)]
        if by_pattern:
            notes.append(f"{', '.join(by_pattern)}: only categorical covariates, fitted from the tally round's counts "
                         "by covariate pattern; no further round")
        notes.append(
            "regression models: after the tally round, each Newton round sends (masked, 128-bit fixed point) "
            f"this site's sums at the broadcast beta, values per round: {sizes}; "
            + ("checked each round: " + f"beta's spread of x'beta here at most {limits.max_xb_spread:g}, "
               f"every pooled bin with at least {limits.min_exits} exits, at most {limits.max_rounds} rounds"
               if limits is not None else "without a policy only a finite beta is checked"))
    if policy is not None:
        reasons = plan_reasons(policy, plan) + small_strata(plan, tallies, policy.min_stratum_size) + reasons
        notes.append(f"checked when a query arrives: at least {policy.required_sites} participants, expiry, "
                     f"replay, at most {policy.max_queries_per_day} answers a day, no differencing"
                     + (", manual approval" if policy.manual_approval else ""))
    else:
        notes.append("no policy given: nothing would be refused")
    if privacy_info is not None and privacy_info["noise"] is not None:
        notes.append("these are the exact tallies; noise is added to every histogram and count cell before "
                      "masking, and n is withheld")
    return Preview(site, plan.sha256, tallies.n, tallies, Decision(not reasons, tuple(reasons)),
                   dict(data.left_out), tuple(notes), privacy_info)
