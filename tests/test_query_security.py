"""Each attack on a round gets a test that shows it failing."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from secure_fixtures import PLAN_TEXT, Consortium, fixed_party, lung_plan, split

from coordinator.aggregate import aggregate_replies
from coordinator.secure_round import new_query, run_plan_secure
from protocol.errors import AggregationError
from protocol.plan import parse_plan
from protocol.query import SignedQuery, decode_reply, decode_signed_query
from site_node.policy import Policy
from site_node.tally import compute_tallies

POLICY = Policy(kinds=("km", "logrank", "describe"), variables=("sex", "age"), min_stratum_size=5)


def ask(c: Consortium, request: bytes, names=None):
    return {n: decode_reply(c.nodes[n].answer(request)) for n in (names or c.names)}


def query_for(c: Consortium, plan, participants=None, ttl=600.0, **kw):
    return new_query(plan, c.coordinator, participants or c.names, ttl, c.clock, **kw)


def tamper(request: bytes, edit) -> bytes:
    signed = decode_signed_query(request)
    body = json.loads(signed.body)
    edit(body)
    new_body = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return SignedQuery(new_body, signed.signature).encode()


def assert_refused(replies, fragment):
    for r in replies.values():
        assert r.status == "refused", r
        assert fragment in r.reason, r.reason
        assert r.payload == b""


@pytest.fixture
def c():
    return Consortium(split(4, seed=2), policy=POLICY)


def test_made_up_participant_not_in_the_roster_is_refused(c):
    # The coordinator invents a site whose keys it holds, to learn the others' masks.
    ghost = fixed_party("ghost", 77)
    _, req = query_for(c, lung_plan(), participants=c.names + [ghost.name])
    assert_refused(ask(c, req), "participant 'ghost' is not in this site's roster")


def test_plan_changed_after_signing_is_refused(c):
    _, req = query_for(c, lung_plan())
    finer = lung_plan(bin_width=0.5)

    def edit(body):
        body["plan"], body["plan_sha256"] = finer.canonical_json(), finer.sha256

    assert_refused(ask(c, tamper(req, edit)), "signature does not verify")


def test_participant_list_changed_after_signing_is_refused(c):
    _, req = query_for(c, lung_plan())

    def edit(body):
        body["participants"] = body["participants"][:3]

    assert_refused(ask(c, tamper(req, edit), c.names[:3]), "signature does not verify")


def test_query_signed_by_an_unknown_key_is_refused(c):
    impostor = fixed_party("coordinator", 1234)
    _, req = new_query(lung_plan(), impostor, c.names, 600, c.clock)
    assert_refused(ask(c, req), "signature does not verify against the roster's coordinator key")


def test_replayed_query_id_is_refused_even_after_a_restart(c, tmp_path):
    c = Consortium(split(4, seed=2), policy=POLICY, audit_dir=tmp_path)
    _, req = query_for(c, lung_plan())
    assert all(r.status == "ok" for r in ask(c, req).values())
    assert_refused(ask(c, req), "seen before (replayed query)")
    restarted = Consortium(split(4, seed=2), policy=POLICY, audit_dir=tmp_path)  # same keys, same logs
    assert_refused(ask(restarted, req), "seen before (replayed query)")


def test_expired_query_is_refused(c):
    _, req = query_for(c, lung_plan(), ttl=60)
    c.now += 61
    assert_refused(ask(c, req), "expired")


def test_plan_that_does_not_match_its_hash_is_refused(c):
    # A coordinator signing a hash of one plan and the text of another.
    q, _ = query_for(c, lung_plan())
    from protocol.query import sign_query

    req = sign_query(replace(q, plan_sha256=lung_plan(bin_width=2).sha256), c.coordinator).encode()
    assert_refused(ask(c, req), "does not match the plan hash")


def test_different_plans_to_different_sites_are_rejected_in_the_sum():
    c = Consortium(split(4, seed=3))  # no policy: the sites accept both plans
    plan_a, plan_b = lung_plan(), lung_plan("the same layout, another plan")
    assert plan_a.sha256 != plan_b.sha256
    _, req_a = query_for(c, plan_a)
    _, req_b = query_for(c, plan_b)
    replies = {n: decode_reply(c.nodes[n].answer(req_b if n == "site3" else req_a)) for n in c.names}
    assert all(r.status == "ok" for r in replies.values())
    with pytest.raises(AggregationError, match="masks did not cancel"):
        aggregate_replies(plan_a, replies)
    # A plan with another layout fails on length alone.
    _, req_c = query_for(c, lung_plan(bin_width=7))
    replies["site3"] = decode_reply(c.nodes["site3"].answer(req_c))
    with pytest.raises(AggregationError, match="masks did not cancel"):
        aggregate_replies(plan_a, replies)


def test_same_plan_again_with_one_site_fewer_is_refused(c):
    plan = lung_plan()
    result = run_plan_secure(plan, c.transport(), c.coordinator, c.roster, c.names, clock=c.clock)
    assert np.array_equal(result.tallies.flatten(), c.plain_sum(plan))
    # Differencing: the sum over three of the four sites would give the fourth's tallies.
    _, req = query_for(c, plan, participants=c.names[:3])
    assert_refused(ask(c, req, c.names[:3]), "differencing")
    # Calling it a rerun of the completed query, with the left-out site's "ok" reply as
    # evidence, does not help: only a signed refusal proves the earlier sum never existed.
    first = result.query_ids[-1]
    _, req = query_for(c, plan, participants=c.names[:3], rerun_of=first)
    assert_refused(ask(c, req, c.names[:3]), "no signed refusal from site3")


def test_stratum_with_two_patients_at_a_site_is_refused_and_named():
    parts = split(3, seed=5)
    p = parts["site1"]
    lv = p.levels["sex"].copy()
    lv[:] = 0
    lv[:2] = 1  # two women at this site
    parts["site1"] = replace(p, levels={"sex": lv})
    c = Consortium(parts, policy=POLICY)
    replies = ask(c, query_for(c, lung_plan())[1])
    assert replies["site0"].status == "ok" and replies["site2"].status == "ok"
    r = replies["site1"]
    assert r.status == "refused"
    assert "endpoint 'os', stratum sex=2 has between 1 and 4 patients at this site" in r.reason
    assert "variable 'sex', level '2'" in r.reason
    assert "2 patients" not in r.reason  # the count itself is not disclosed


def test_bin_width_finer_than_the_policy_allows_is_refused():
    policy = replace(POLICY, finest_bin_width=1, time_unit="weeks")
    c = Consortium(split(3, seed=6), policy=policy)
    assert_refused(ask(c, query_for(c, lung_plan(bin_width=3))[1]), "bin width 3 days is finer than the policy allows")
    assert all(r.status == "ok" for r in ask(c, query_for(c, lung_plan(bin_width=7))[1]).values())


def test_fewer_participants_than_min_sites_is_refused():
    c = Consortium(split(4, seed=7), policy=replace(POLICY, min_sites=4))
    _, req = query_for(c, lung_plan(), participants=c.names[:3])
    assert_refused(ask(c, req, c.names[:3]), "the policy needs at least 4")
    # Whatever the policy says, never fewer than three.
    c = Consortium(split(2, seed=7), policy=replace(POLICY, min_sites=1))
    assert_refused(ask(c, query_for(c, lung_plan())[1]), "the policy needs at least 3")


def test_coordinator_sees_no_single_sites_unmasked_tallies(c):
    plan = lung_plan()
    seen: list[bytes] = []
    inner = c.transport()

    def spy(requests):
        replies = inner(requests)
        seen.extend(r for r in replies.values() if isinstance(r, bytes))
        return replies

    result = run_plan_secure(plan, spy, c.coordinator, c.roster, c.names, clock=c.clock)
    everything = b"".join(seen)
    assert len(seen) == 4
    for n in c.names:
        t = compute_tallies(plan, c.parts[n])
        plain = t.flatten()
        assert plain.astype("<i8").tobytes() not in everything
        for b in t.blocks:  # nor any block of more than a few cells
            if b.size >= 8:
                assert t[b.key].astype("<i8").tobytes() not in everything, b.key
        masked = np.frombuffer(decode_reply(next(s for s in seen if decode_reply(s).site == n)).payload, "<i8")
        assert np.mean(masked == plain) < 0.001
    assert np.array_equal(result.tallies.flatten(), c.plain_sum(plan))


def test_site_answers_nothing_for_a_forged_reply_path(c):
    # A reply altered in transit (or forged by the coordinator's host) fails its signature.
    _, req = query_for(c, lung_plan())
    raw = c.nodes["site0"].answer(req)
    r = decode_reply(raw)
    forged = replace(r, n=r.n + 1, signature=r.signature)
    assert r.verify(c.roster.site("site0").signing_public)
    assert not forged.verify(c.roster.site("site0").signing_public)


@pytest.mark.parametrize("request_bytes", [b"", b"FSQ1", b"FSQ1\x00\x00\x00\x05hello" + b"\0" * 64, "text", None])
def test_garbage_gets_a_signed_refusal_and_an_audit_entry(c, request_bytes):
    raw = c.nodes["site0"].answer(request_bytes)
    r = decode_reply(raw)
    assert r.status == "refused" and "malformed query" in r.reason
    assert r.verify(c.roster.site("site0").signing_public)
    assert c.nodes["site0"].audit.entries[-1]["decision"] == "refused"


def test_an_unexpected_fault_at_the_site_becomes_an_error_reply(c):
    def explode(_plan):
        raise MemoryError("no room for 10 GB of bins")

    c.nodes["site1"]._load_data = explode
    r = ask(c, query_for(c, lung_plan())[1], ["site1"])["site1"]
    assert r.status == "error" and "10 GB" not in r.reason
    assert "MemoryError" in c.nodes["site1"].audit.entries[-1]["detail"]


def test_retitled_or_padded_plan_with_one_site_fewer_is_refused_too(c):
    # The same tallies under another plan hash: a new title, or an extra analysis riding along.
    plan = lung_plan()
    run_plan_secure(plan, c.transport(), c.coordinator, c.roster, c.names, clock=c.clock)
    retitled = lung_plan("a new title, the same tallies")
    padded = parse_plan(PLAN_TEXT + '\n[[analyses]]\nname = "extra"\nkind = "km"\nendpoint = "os"\ntimes = [30]\n')
    for other in (retitled, padded):
        assert other.sha256 != plan.sha256
        _, req = query_for(c, other, participants=c.names[:3])
        assert_refused(ask(c, req, c.names[:3]), "(or one repeating its tallies)")
    # Over the very same sites it reveals nothing new and is answered.
    _, req = query_for(c, retitled)
    assert all(r.status == "ok" for r in ask(c, req).values())


@pytest.mark.parametrize("trick", ["replay", "broken signature", "after expiry"])
def test_coordinator_cannot_make_a_site_sign_a_refusal_of_a_query_it_answered(c, trick):
    # To isolate site3, the coordinator needs the others to believe site3 never answered the
    # completed query q1: it tries to obtain a signed non-ok reply from site3 for q1 after the fact.
    plan = lung_plan()
    result = run_plan_secure(plan, c.transport(), c.coordinator, c.roster, c.names, clock=c.clock)
    q1 = result.query_ids[-1]
    signed_q1 = next(e for e in c.nodes["site3"].audit.entries if e.get("query_id") == q1)
    assert signed_q1["decision"] == "ok"
    # Re-create q1's exact request as the coordinator holds it.
    from protocol.query import Query, sign_query

    q = Query(q1, plan.canonical_json(), plan.sha256, tuple(c.names), signed_q1["issued_at"], signed_q1["expires_at"],
              c.coordinator.public().fingerprint)
    request = sign_query(q, c.coordinator).encode()
    assert __import__("hashlib").sha256(request).hexdigest() == signed_q1["request_sha256"]
    if trick == "broken signature":
        request = request[:-1] + bytes([request[-1] ^ 1])
    elif trick == "after expiry":
        c.now = signed_q1["expires_at"] + 1
    refusal = c.nodes["site3"].answer(request)
    assert decode_reply(refusal).status == "refused" and decode_reply(refusal).query_id == q1
    _, req = query_for(c, plan, participants=c.names[:3], rerun_of=q1, evidence=(refusal,))
    if trick == "after expiry":
        c.now = signed_q1["expires_at"] - 100  # the rerun itself must not be expired
        _, req = query_for(c, plan, participants=c.names[:3], rerun_of=q1, evidence=(refusal,))
    assert_refused(ask(c, req, c.names[:3]), "no signed refusal from site3")
