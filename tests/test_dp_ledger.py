"""A site's privacy budget: policy section, ledger composition and refusals that say why."""

from __future__ import annotations

import pytest

from protocol.dp_accounting import epsilon_for_rho, rho_for_epsilon
from protocol.dp_plan import PrivacySpec, noise_parameters
from site_node.dp_ledger import (
    LedgerEntry,
    PrivacyPolicy,
    PrivacyPolicyError,
    budget_decision,
    ledger_from_records,
    parse_privacy_policy,
    spent,
)
from dp_fixtures import PLAN

DELTA = 1e-6
POLICY = PrivacyPolicy(epsilon_per_query=1.0, total_epsilon=3.0, delta=DELTA, colluding_sites=1)
SPEC = PrivacySpec(epsilon=1.0, colluding_sites=1)


def params(spec=SPEC, participants=5):
    return noise_parameters(spec, PLAN, participants)


def answer(policy, ledger, spec, qid):
    """Decide, and append the spend as the audit helper would when the reply leaves."""
    d = budget_decision(policy, ledger, spec, params(spec) if spec else None, qid, "h" * 64)
    if d.allowed and d.spend is not None:
        ledger = ledger + [d.spend]
    return d, ledger


def test_policy_section():
    assert parse_privacy_policy(None) is None
    p = parse_privacy_policy({"epsilon_per_query": 1, "total_epsilon": 5})
    assert p == PrivacyPolicy(1.0, 5.0, 1e-6, 1, False, True)
    p = parse_privacy_policy({"epsilon_per_query": 0.5, "total_epsilon": 2, "delta": 1e-7, "colluding_sites": 2,
                              "deduplicated": True, "required": False})
    assert p == PrivacyPolicy(0.5, 2.0, 1e-7, 2, True, False)


@pytest.mark.parametrize("table,message", [
    ({"total_epsilon": 5}, "privacy.epsilon_per_query: missing"),
    ({"epsilon_per_query": 1}, "privacy.total_epsilon: missing"),
    ({"epsilon_per_query": 2, "total_epsilon": 1}, "privacy.epsilon_per_query: above privacy.total_epsilon"),
    ({"epsilon_per_query": 0, "total_epsilon": 1}, "privacy.epsilon_per_query: expected a number above 0"),
    ({"epsilon_per_query": 1, "total_epsilon": 5, "delta": 0.1}, "privacy.delta"),
    ({"epsilon_per_query": 1, "total_epsilon": 5, "colluding_sites": -1}, "privacy.colluding_sites"),
    ({"epsilon_per_query": 1, "total_epsilon": 5, "deduplicated": 1}, "privacy.deduplicated: expected true or false"),
    ({"epsilon_per_query": 1, "total_epsilon": 5, "budget": 1}, "privacy.budget: unknown key"),
])
def test_bad_policy_sections_name_the_key(table, message):
    with pytest.raises(PrivacyPolicyError, match=message.replace(".", r"\.")):
        parse_privacy_policy(table, "site.toml")


def test_budget_is_spent_by_zcdp_composition_and_then_refused():
    ledger: list[LedgerEntry] = []
    rho1 = rho_for_epsilon(1.0, DELTA)
    totals = []
    for q in range(1, 30):
        d, ledger = answer(POLICY, ledger, SPEC, f"q{q}")
        if not d.allowed:
            break
        totals.append(d.total_epsilon_after)
        # the total is the conversion of the summed rho (the floor and 1/1024 rounding only lower it)
        assert d.total_epsilon_after == pytest.approx(epsilon_for_rho(q * rho1, DELTA), abs=2e-3)
        assert d.remaining_epsilon == pytest.approx(3.0 - d.total_epsilon_after)
    # composing k queries at epsilon 1 costs epsilon_for_rho(k rho1), not k: 3.0 is passed at the 8th query
    k_max = max(k for k in range(1, 30) if epsilon_for_rho(k * rho1, DELTA) <= 3.0)
    assert k_max == 7 and len(totals) == k_max and len(ledger) == k_max
    assert not d.allowed and d.spend is not None
    (reason,) = d.reasons
    after, before = epsilon_for_rho(8 * rho1, DELTA), epsilon_for_rho(7 * rho1, DELTA)
    assert f"total to epsilon {after:.3g} at delta 1e-06, above its budget of 3 (spent so far: {before:.3g}" in reason and "policy privacy.total_epsilon" in reason
    assert d.spent_epsilon == pytest.approx(totals[-1])


def test_same_query_id_counted_once():
    d, ledger = answer(POLICY, [], SPEC, "q1")
    assert spent(ledger + ledger) == spent(ledger)
    d2 = budget_decision(POLICY, ledger, SPEC, params(), "q1", "h" * 64)
    assert d2.allowed and d2.spend is None and d2.total_epsilon_after == d2.spent_epsilon


def test_refusals_say_which_rule():
    def reasons(policy, spec, participants=5):
        return " | ".join(budget_decision(policy, [], spec, params(spec, participants) if spec else None,
                                          "q", "h" * 64).reasons)

    assert "policy privacy.epsilon_per_query" in reasons(POLICY, PrivacySpec(epsilon=2.0, colluding_sites=1))
    assert "above the 1 allowed per query" in reasons(POLICY, PrivacySpec(epsilon=2.0, colluding_sites=1))
    assert "tolerate 1 (policy privacy.colluding_sites)" in reasons(POLICY, PrivacySpec(epsilon=1.0))
    assert "policy privacy.delta" in reasons(POLICY, PrivacySpec(epsilon=1.0, delta=1e-5, colluding_sites=1))
    assert "policy privacy.deduplicated" in reasons(POLICY, PrivacySpec(epsilon=1.0, colluding_sites=1,
                                                                        deduplicated=True))
    assert "policy privacy.required" in reasons(POLICY, None)
    lax = PrivacyPolicy(1.0, 3.0, DELTA, 1, deduplicated=True, required=False)
    assert reasons(lax, None) == ""
    assert reasons(lax, PrivacySpec(epsilon=1.0, colluding_sites=1, deduplicated=True)) == ""


def test_without_a_privacy_policy_nothing_is_refused():
    d = budget_decision(None, [], SPEC, params(), "q", "h" * 64)
    assert d.allowed and d.spend is not None and d.spend.epsilon == pytest.approx(1.0, abs=1e-3)
    assert budget_decision(None, [], None, None, "q", "h" * 64).allowed


def test_ledger_round_trips_through_audit_records():
    d, ledger = answer(POLICY, [], SPEC, "q1")
    records = [{"decision": "ok", "dp_spend": ledger[0].record()},
               {"decision": "refused", "dp_spend": ledger[0].record() | {"query_id": "q2"}},
               {"decision": "ok"}]
    assert ledger_from_records(records) == ledger
    assert d.summary()["this_query_epsilon"] == pytest.approx(1.0, abs=1e-3)
