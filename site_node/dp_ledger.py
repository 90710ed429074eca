"""A site's privacy budget: its policy's ``[privacy]`` section and the ledger of what it spent.

The privacy officer's policy file gains::

    [privacy]
    required = true             # answer only plans with a [privacy] table (default true)
    epsilon_per_query = 1.0     # the most one plan may cost
    total_epsilon = 5.0         # the most all answered plans may cost together
    delta = 1e-6                # the largest delta a plan may ask for; totals are converted at it
    colluding_sites = 1         # the fewest colluding / non-noising sites a plan must assume
    deduplicated = false        # true only if this site's patients are counted nowhere else

The ledger is an append-only list of spent entries, one per answered query, kept in the
site's audit log (the helper that writes the audit record persists ``LedgerEntry.record()``
under the key ``"dp_spend"``; ``ledger_from_records`` reads them back). Spending composes in
approximate zCDP: rho and xi add over queries (Bun & Steinke 2016, Lemma 2.3), and the total
is converted to (epsilon, delta) at the policy's delta (Canonne, Kamath & Steinke 2020,
Proposition 12). Entries are keyed by query id and counted once, so a record written
twice for one answer does not double the spend; the site refuses replayed query ids, and a
rerun (a fresh query id) is charged anew, since the coordinator may then hold both sums.

All functions are pure: the ledger is passed in and nothing is written here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from protocol.dp_accounting import epsilon_for_spend
from protocol.dp_plan import NoiseParameters, PrivacySpec
from protocol.errors import FedsurvError

# the tau term of the distributed Gaussian and the 1/1024 rounding of variances move epsilon
# by about 1e-9; a plan asking for exactly the allowed epsilon is not refused for that
TOLERANCE = 1e-7
_KEYS = {"required", "epsilon_per_query", "total_epsilon", "delta", "colluding_sites", "deduplicated"}


class PrivacyPolicyError(FedsurvError, ValueError):
    """A ``[privacy]`` policy section that cannot be used; the message names the key."""


@dataclass(frozen=True)
class PrivacyPolicy:
    epsilon_per_query: float
    total_epsilon: float
    delta: float = 1e-6
    colluding_sites: int = 1
    deduplicated: bool = False
    required: bool = True


def parse_privacy_policy(table: Mapping[str, Any] | None, where: str = "policy") -> PrivacyPolicy | None:
    """The policy's ``[privacy]`` section, or None when it has none."""
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise PrivacyPolicyError(f"{where}: privacy: expected a [privacy] table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise PrivacyPolicyError(f"{where}: privacy.{unknown[0]}: unknown key (allowed: {', '.join(sorted(_KEYS))})")

    def number(key: str, high: float, default: float | None = None) -> float:
        v = table.get(key, default)
        if v is None:
            raise PrivacyPolicyError(f"{where}: privacy.{key}: missing")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v < high:
            raise PrivacyPolicyError(f"{where}: privacy.{key}: expected a number above 0 and below {high:g}")
        return float(v)

    def flag(key: str, default: bool) -> bool:
        v = table.get(key, default)
        if not isinstance(v, bool):
            raise PrivacyPolicyError(f"{where}: privacy.{key}: expected true or false")
        return v

    colluding = table.get("colluding_sites", 1)
    if isinstance(colluding, bool) or not isinstance(colluding, int) or colluding < 0:
        raise PrivacyPolicyError(f"{where}: privacy.colluding_sites: expected an integer of at least 0")
    policy = PrivacyPolicy(
        epsilon_per_query=number("epsilon_per_query", 100.0), total_epsilon=number("total_epsilon", 1000.0),
        delta=number("delta", 1e-2, 1e-6), colluding_sites=colluding,
        deduplicated=flag("deduplicated", False), required=flag("required", True),
    )
    if policy.epsilon_per_query > policy.total_epsilon:
        raise PrivacyPolicyError(f"{where}: privacy.epsilon_per_query: above privacy.total_epsilon")
    return policy


@dataclass(frozen=True)
class LedgerEntry:
    """One answered DP query's spending, as the audit log keeps it."""

    query_id: str
    plan_sha256: str
    rho: float
    xi: float
    epsilon: float
    delta: float
    sigma_total: float
    mechanism: str

    def record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> "LedgerEntry":
        return cls(**{k: r[k] for k in cls.__dataclass_fields__})


def ledger_from_records(records: Iterable[Mapping[str, Any]]) -> list[LedgerEntry]:
    """The spent entries of an audit log: every record with a ``dp_spend`` whose reply left."""
    return [LedgerEntry.from_record(r["dp_spend"]) for r in records
            if r.get("dp_spend") is not None and r.get("decision") == "ok"]


@dataclass(frozen=True)
class BudgetDecision:
    allowed: bool
    reasons: tuple[str, ...]
    spend: LedgerEntry | None          # what answering this query adds to the ledger
    spent_epsilon: float               # the ledger's total so far, at policy.delta
    total_epsilon_after: float         # the total if this query is answered
    remaining_epsilon: float           # policy.total_epsilon minus the total after (if allowed) or before

    def summary(self) -> dict[str, Any]:
        """What `fedsurv site preview` shows."""
        return {"allowed": self.allowed, "reasons": list(self.reasons),
                "this_query_epsilon": self.spend.epsilon if self.spend else 0.0,
                "spent_epsilon": self.spent_epsilon, "total_epsilon_after": self.total_epsilon_after,
                "remaining_epsilon": self.remaining_epsilon}


def spent(entries: Iterable[LedgerEntry]) -> tuple[float, float]:
    """(rho, xi) of the ledger, each query id counted once."""
    seen: dict[str, LedgerEntry] = {}
    for e in entries:
        seen.setdefault(e.query_id, e)
    return sum(e.rho for e in seen.values()), sum(e.xi for e in seen.values())


def budget_decision(policy: PrivacyPolicy | None, entries: list[LedgerEntry], spec: PrivacySpec | None,
                    params: NoiseParameters | None, query_id: str, plan_sha256: str) -> BudgetDecision:
    """Whether this site may answer a query under its privacy policy, and what it would spend.

    Refuses, naming the rule: a plan without DP where the policy requires it; a plan assuming
    fewer colluding sites, a larger delta, or deduplication this site does not vouch for; a
    per-query epsilon above the policy's; a total that would pass the budget.
    """
    rho0, xi0 = spent(entries)
    delta = policy.delta if policy else (spec.delta if spec else 1e-6)
    before = epsilon_for_spend(rho0, xi0, delta)
    if policy is None:
        spend = _entry(params, query_id, plan_sha256) if spec is not None and params is not None else None
        return BudgetDecision(True, (), spend, before, before, math.inf)
    remaining_before = policy.total_epsilon - before
    if spec is None or params is None:
        if policy.required:
            return BudgetDecision(False, ("the plan has no [privacy] table and this site answers only "
                                          "differentially private plans (policy privacy.required)",),
                                  None, before, before, remaining_before)
        return BudgetDecision(True, (), None, before, before, remaining_before)
    reasons = []
    if spec.colluding_sites < policy.colluding_sites:
        reasons.append(f"the plan assumes at most {spec.colluding_sites} colluding sites; this site requires "
                       f"plans to tolerate {policy.colluding_sites} (policy privacy.colluding_sites)")
    if spec.delta > policy.delta * (1 + 1e-12):
        reasons.append(f"the plan's delta {spec.delta:g} is above the {policy.delta:g} allowed (policy privacy.delta)")
    if spec.deduplicated and not policy.deduplicated:
        reasons.append("the plan assumes no patient is counted at two sites, which this site does not vouch for; "
                       "its noise would be half what a referred patient needs (policy privacy.deduplicated)")
    g = params.guarantee
    if g.epsilon > policy.epsilon_per_query * (1 + TOLERANCE):
        reasons.append(f"this query would cost epsilon {g.epsilon:.3g}, above the {policy.epsilon_per_query:g} "
                       f"allowed per query (policy privacy.epsilon_per_query)")
    already = any(e.query_id == query_id for e in entries)
    spend = _entry(params, query_id, plan_sha256)
    after = before if already else epsilon_for_spend(rho0 + spend.rho, xi0 + spend.xi, delta)
    if after > policy.total_epsilon * (1 + TOLERANCE):
        reasons.append(f"answering would bring this site's total to epsilon {after:.3g} at delta {delta:g}, above "
                       f"its budget of {policy.total_epsilon:g} (spent so far: {before:.3g}; "
                       f"policy privacy.total_epsilon)")
    if reasons:
        return BudgetDecision(False, tuple(reasons), spend, before, after, remaining_before)
    return BudgetDecision(True, (), None if already else spend, before, after, policy.total_epsilon - after)


def _entry(params: NoiseParameters, query_id: str, plan_sha256: str) -> LedgerEntry:
    g = params.guarantee
    return LedgerEntry(query_id, plan_sha256, g.rho, g.xi, g.epsilon, g.delta, g.sigma_total, g.mechanism)
