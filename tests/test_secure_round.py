"""Secure rounds: results equal the plain sum exactly; drop-and-rerun; clear errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from secure_fixtures import LUNG, Consortium, fixed_party, lung_plan, prepared, split

from coordinator.secure_round import run_plan_secure
from protocol.errors import AggregationError, DataError
from protocol.query import Reply, decode_reply
from site_node.policy import Policy
from site_node.responder import DATA_FAILED
from site_node.tally import compute_tallies

POLICY = Policy(kinds=("km", "logrank", "describe"), variables=("sex", "age"), min_stratum_size=1)
PLAN = lung_plan()
WHOLE = compute_tallies(PLAN, prepared(LUNG)).flatten()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_sites=st.integers(3, 12), seed=st.integers(0, 2**32 - 1))
def test_secure_sum_equals_plain_sum_for_random_splits(n_sites, seed):
    c = Consortium(split(n_sites, seed), seed=seed % 1000)
    result = run_plan_secure(PLAN, c.transport(), c.coordinator, c.roster, c.names, clock=c.clock)
    got = result.tallies.flatten()
    assert np.array_equal(got, c.plain_sum(PLAN))
    assert np.array_equal(got, WHOLE)  # and the split does not matter
    assert result.sites == tuple((n, c.parts[n].n_rows) for n in c.names)
    assert len(result.query_ids) == 1 and result.refusals == ()


def silent_once(c: Consortium, site: str):
    """A transport on which `site` never answers the first query it gets."""
    inner, calls = c.transport(), []

    def send(requests):
        calls.append(sorted(requests))
        out = dict(inner({k: v for k, v in requests.items() if not (k == site and len(calls) == 1)}))
        if len(calls) == 1:
            out[site] = None
        return out

    return send, calls


def test_silent_site_is_dropped_and_the_round_rerun_over_the_rest():
    c = Consortium(split(5, seed=30))
    send, calls = silent_once(c, "site2")
    progress = []
    result = run_plan_secure(PLAN, send, c.coordinator, c.roster, c.names, clock=c.clock, on_progress=progress.append)
    rest = [n for n in c.names if n != "site2"]
    assert calls == [c.names, rest]
    assert [n for n, _ in result.sites] == rest
    assert np.array_equal(result.tallies.flatten(), c.plain_sum(PLAN, rest))
    assert len(result.query_ids) == 2 and result.query_ids[0] != result.query_ids[1]
    assert "site2 did not answer" in result.notes[0]
    assert any("site2 did not answer" in p for p in progress)


def test_too_few_sites_left_is_a_clear_error_naming_them():
    c = Consortium(split(3, seed=31))
    send, _ = silent_once(c, "site1")
    with pytest.raises(AggregationError, match=r"only 2 site\(s\) can take part but at least 3 are needed: "
                                                 r"site1 did not answer"):
        run_plan_secure(PLAN, send, c.coordinator, c.roster, c.names, clock=c.clock)
    with pytest.raises(AggregationError, match="at least 3 are needed"):
        run_plan_secure(PLAN, c.transport(), c.coordinator, c.roster, c.names[:2], clock=c.clock)


def test_refusing_site_is_left_out_and_the_others_accept_the_rerun_on_its_signed_refusal():
    parts = split(5, seed=32)
    c = Consortium(parts, policy=POLICY)
    # site4's officer allows no describe: it refuses, signed; the others answered the first query.
    c.nodes["site4"].policy = replace(POLICY, kinds=("km", "logrank"))
    result = run_plan_secure(PLAN, c.transport(), c.coordinator, c.roster, c.names, clock=c.clock)
    rest = c.names[:4]
    assert [n for n, _ in result.sites] == rest
    assert np.array_equal(result.tallies.flatten(), c.plain_sum(PLAN, rest))
    assert result.refusals == (("site4", "refused: analysis 'table1': kind 'describe' is not allowed (policy.kinds)"),)
    last = c.nodes["site0"].audit.entries[-1]
    assert last["decision"] == "ok" and last["supersedes"] == [result.query_ids[0]]


def test_rerun_after_a_silent_drop_needs_the_sites_trust():
    for trust in (False, True):
        c = Consortium(split(5, seed=33), policy=replace(POLICY, rerun_after_dropout=trust))
        send, _ = silent_once(c, "site0")
        if trust:
            result = run_plan_secure(PLAN, send, c.coordinator, c.roster, c.names, clock=c.clock)
            assert np.array_equal(result.tallies.flatten(), c.plain_sum(PLAN, c.names[1:]))
            assert "trusted the coordinator that site0" in c.nodes["site1"].audit.entries[-1]["notes"][0]
        else:
            # No proof that site0 did not answer: the others will not risk a differencing attack.
            with pytest.raises(AggregationError, match="no signed refusal from site0"):
                run_plan_secure(PLAN, send, c.coordinator, c.roster, c.names, clock=c.clock)


def test_site_with_broken_data_answers_an_error_that_names_none_of_its_data(tmp_path):
    parts = split(4, seed=34)
    c = Consortium(parts, audit_dir=tmp_path)

    def broken(_plan):
        raise DataError("site3.csv: rows 17, 52: column 'time': negative value -4")

    c.nodes["site3"]._load_data = broken
    result = run_plan_secure(PLAN, c.transport(), c.coordinator, c.roster, c.names, clock=c.clock)
    assert result.refusals == (("site3", f"error: {DATA_FAILED}"),)
    assert "-4" not in DATA_FAILED and "rows" not in DATA_FAILED
    assert [n for n, _ in result.sites] == c.names[:3]
    entry = c.nodes["site3"].audit.entries[0]
    assert entry["decision"] == "error" and "negative value -4" in entry["detail"]


def test_exceptions_unreadable_and_forged_replies_count_as_no_answer():
    c = Consortium(split(6, seed=35))
    inner = c.transport()
    impostor = fixed_party("site2", 4242)
    calls = []

    def send(requests):
        calls.append(1)
        out = dict(inner(requests))
        if len(calls) == 1:
            out["site0"] = ConnectionResetError("peer went away")
            out["site1"] = b"garbage"
            r = decode_reply(out["site2"])  # a reply re-signed by a key not in the roster
            out["site2"] = replace(r, signature=b"").sign(impostor).encode()
        return out

    result = run_plan_secure(PLAN, send, c.coordinator, c.roster, c.names, clock=c.clock)
    assert [n for n, _ in result.sites] == c.names[3:]
    notes = result.notes[0]
    assert "site0 did not answer (ConnectionResetError: peer went away)" in notes
    assert "site1 sent an unreadable reply" in notes
    assert "site2 sent a reply whose signature does not verify" in notes


def test_an_ok_reply_to_another_query_does_not_count():
    c = Consortium(split(3, seed=36))
    inner = c.transport()
    stale = Reply("site1", "0" * 32, PLAN.sha256, "ok", n=1, payload=b"\0" * 8).sign(c.keys["site1"]).encode()

    def send(requests):
        out = dict(inner(requests))
        out["site1"] = stale
        return out

    with pytest.raises(AggregationError, match="site1 answered a different query or plan"):
        run_plan_secure(PLAN, send, c.coordinator, c.roster, c.names, clock=c.clock)


def test_unknown_or_repeated_sites_are_refused_before_anything_is_sent():
    c = Consortium(split(3, seed=37))
    with pytest.raises(AggregationError, match="'nowhere' is not in the roster"):
        run_plan_secure(PLAN, c.transport(), c.coordinator, c.roster, c.names + ["nowhere"], clock=c.clock)
    with pytest.raises(AggregationError, match="listed twice"):
        run_plan_secure(PLAN, c.transport(), c.coordinator, c.roster, c.names + ["site0"], clock=c.clock)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t["surv:os:sex"].__setitem__((0, 5, 1), -1), "surv:os:sex: negative counts"),
    (lambda t: t["surv:os:sex"].__setitem__((0, 5, 1), t["surv:os:sex"][0, 5, 1] + 1), "patients + 0 dropped != n = 228"),
    (lambda t: t["count:sex"].__setitem__(2, 1), "count:sex: counts add up to 229, not n = 228"),
    (lambda t: t["moments:age"].__setitem__(3, 1), "moments:age: present + missing = 229"),
    (lambda t: t["moments:age"].__setitem__(2, 0), "sums of x and x^2 are inconsistent"),
    (lambda t: t["surv:os:sex"].__setitem__((1, 0, 0), 10**6), "a count exceeds n = 228"),
])
def test_inconsistent_sums_are_rejected(edit, message):
    from coordinator.aggregate import check_consistency

    t = compute_tallies(PLAN, prepared(LUNG))
    check_consistency(PLAN, t, 228)
    edit(t)
    with pytest.raises(AggregationError, match=message.replace("^", r"\^").replace("+", r"\+")):
        check_consistency(PLAN, t, 228)
    with pytest.raises(AggregationError, match="differs from the sites' reported total"):
        check_consistency(PLAN, compute_tallies(PLAN, prepared(LUNG)), 227)


def test_hooks_for_inexact_sums_noise_before_masking_and_a_custom_check():
    """The extension points differential privacy uses: each site changes its own tallies
    before masking (here +1 in one cell), and the coordinator checks the sum its own way."""
    from protocol.errors import RefusedError

    parts = split(3, seed=38)
    c = Consortium(parts)

    def plus_one(plan, query, tallies, record):
        record["added"] = 1
        arrays = dict(tallies.arrays)
        arrays["surv:os:sex"] = tallies["surv:os:sex"].copy()
        arrays["surv:os:sex"][0, 0, 0] += 1
        return type(tallies)(tallies.blocks, arrays)

    for node in c.nodes.values():
        node._before_masking = plus_one
    with pytest.raises(AggregationError, match="patients \\+ 0 dropped != n"):
        run_plan_secure(PLAN, c.transport(), c.coordinator, c.roster, c.names, clock=c.clock)
    seen = []
    result = run_plan_secure(PLAN, c.transport(), c.coordinator, c.roster, c.names, clock=c.clock,
                             check=lambda plan, t, n: seen.append(n))
    assert seen == [228]
    assert result.tallies["surv:os:sex"][0, 0, 0] == WHOLE_SURV[0, 0, 0] + 3
    assert c.nodes["site0"].audit.entries[-1]["added"] == 1

    def refuse(plan, query, tallies, record):
        raise RefusedError("the privacy budget is spent")

    c.nodes["site1"]._before_masking = refuse
    with pytest.raises(AggregationError, match="site1 refused \\(the privacy budget is spent\\)"):
        run_plan_secure(PLAN, c.transport(), c.coordinator, c.roster, c.names, clock=c.clock)


WHOLE_SURV = compute_tallies(PLAN, prepared(LUNG))["surv:os:sex"]
