"""The site policy: parsing, the plan checks, the daily limit, differencing and manual approval."""

from __future__ import annotations

from dataclasses import replace

import pytest
from click.testing import CliRunner

from coordinator.secure_round import new_query, run_plan_secure
from protocol.errors import AggregationError
from protocol.query import decode_reply
from secure_fixtures import ROOT, Consortium, lung_plan, split
from site_node.policy import Policy, PolicyError, load_policy, parse_policy, plan_reasons

BASE = Policy(kinds=("km", "logrank", "describe"), variables=("sex", "age"), min_stratum_size=5)


def test_example_policy_parses_with_its_documented_values():
    p = load_policy(ROOT / "fedsurv" / "examples" / "policy.toml")
    assert p.kinds == ("km", "cif", "logrank", "proportion", "describe", "gray", "rmst", "cox", "finegray")
    assert (p.finest_bin_width, p.time_unit, p.min_stratum_size, p.min_sites) == (1.0, "months", 3, 3)
    r = p.regression
    assert (r.min_patients, r.min_level_size, r.min_exits, r.max_xb_spread, r.max_rounds) == (11, 3, 2, 10.0, 40)
    assert (p.same_plan_other_sites, p.rerun_after_dropout, p.manual_approval) == (False, False, False)


@pytest.mark.parametrize("text, message", [
    ('[policy]\nvariables = []', "policy.kinds: missing"),
    ('[policy]\nkinds = ["km"]', "policy.variables: missing"),
    ('[policy]\nkinds = ["coxph"]\nvariables = []', "'coxph' is not an analysis kind"),
    ('[policy]\nkinds = ["km"]\nvariables = []\nmin_stratum_size = 0', "policy.min_stratum_size: expected an integer of at least 1"),
    ('[policy]\nkinds = ["km"]\nvariables = []\nmanual_approval = "yes"', "policy.manual_approval: expected true or false"),
    ('[policy]\nkinds = ["km"]\nvariables = []\nfinest_bin_width = -1', "policy.finest_bin_width: expected a positive number"),
    ('[policy]\nkinds = ["km"]\nvariables = []\ntime_unit = "fortnights"', "policy.time_unit"),
    ('[policy]\nkinds = ["km"]\nvariables = []\nmin_site = 3', "policy.min_site: unknown key"),
    ('kinds = ["km"]', "expected a [policy] table"),
    ('[policy]\nkinds = ["km"]\nvariables = []\nprivacy = 1', "policy.privacy: unknown key"),
    ('[policy]\nkinds = ["km"]\nvariables = []\n[other]\nx = 1', "expected a [policy] table"),
    ('[policy\n', "not valid TOML"),
])
def test_bad_policies_name_the_key(text, message):
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "pol.toml")
    assert message in str(e.value) and "pol.toml" in str(e.value)


def test_kinds_variables_and_endpoints_are_checked():
    plan = lung_plan()
    assert plan_reasons(BASE, plan) == []
    reasons = plan_reasons(replace(BASE, kinds=("km",), variables=("sex",), endpoints=("pfs",)), plan)
    assert reasons == ["analysis 'os_by_sex': kind 'logrank' is not allowed (policy.kinds)",
                       "analysis 'table1': kind 'describe' is not allowed (policy.kinds)",
                       "endpoint 'os' is not allowed (policy.endpoints)",
                       "variable 'age' is not allowed (policy.variables)"]


@pytest.mark.parametrize("plan_width, allowed", [(30, False), (30.4375, True), (31, True), (61, True)])
def test_bin_width_is_compared_across_time_units(plan_width, allowed):
    # One month is 365.25 / 12 = 30.4375 days (plan.py's convention for dates).
    policy = replace(BASE, finest_bin_width=1, time_unit="months")
    assert (plan_reasons(policy, lung_plan(bin_width=plan_width)) == []) == allowed


def test_daily_limit_counts_answers_in_the_last_24_hours():
    c = Consortium(split(3, seed=8), policy=replace(BASE, max_queries_per_day=2))
    plan = lung_plan()
    for _ in range(2):
        run_plan_secure(plan, c.transport(), c.coordinator, c.roster, c.names, clock=c.clock)
        c.now += 3600
    _, req = new_query(plan, c.coordinator, c.names, 600, c.clock)
    r = decode_reply(c.nodes["site0"].answer(req))
    assert r.status == "refused" and "2 queries in the last 24 hours (policy.max_queries_per_day = 2)" in r.reason
    c.now += 86400
    assert run_plan_secure(plan, c.transport(), c.coordinator, c.roster, c.names, clock=c.clock).sites


def test_same_plan_with_another_set_of_sites_is_allowed_only_when_the_policy_says_so():
    plan = lung_plan()
    for allow in (False, True):
        c = Consortium(split(4, seed=9), policy=replace(BASE, same_plan_other_sites=allow))
        run_plan_secure(plan, c.transport(), c.coordinator, c.roster, c.names, clock=c.clock)
        _, req = new_query(plan, c.coordinator, c.names[:3], 600, c.clock)
        statuses = {decode_reply(c.nodes[n].answer(req)).status for n in c.names[:3]}
        assert statuses == ({"ok"} if allow else {"refused"})
        # The same plan over the same sites again reveals nothing new and is answered.
        _, req = new_query(plan, c.coordinator, c.names, 600, c.clock)
        assert {decode_reply(c.nodes[n].answer(req)).status for n in c.names} == {"ok"}


def test_no_policy_refuses_nothing_but_the_protocol_checks():
    c = Consortium(split(2, seed=10))  # `fedsurv run` with two files and no policy
    plan = lung_plan(bin_width=0.25)
    result = run_plan_secure(plan, c.transport(), c.coordinator, c.roster, c.names, min_sites=2, clock=c.clock)
    assert [n for n, _ in result.sites] == c.names


def test_manual_approval_holds_the_query_until_the_officer_approves(tmp_path):
    from fedsurv.commands.site import approve_command, pending_command

    policy = replace(BASE, manual_approval=True)
    c = Consortium(split(3, seed=11), policy=policy, approvals_dir=tmp_path)
    plan = lung_plan()
    q, req = new_query(plan, c.coordinator, c.names, 600, c.clock)
    first = {n: decode_reply(c.nodes[n].answer(req)) for n in c.names}
    assert all(r.status == "refused" and r.awaiting_approval for r in first.values())
    assert f"fedsurv site approve {q.query_id}" in first["site0"].reason
    pending = tmp_path / "site0" / f"{q.query_id}.pending.json"
    assert pending.exists()
    listed = CliRunner().invoke(pending_command, ["--state", str(tmp_path)])  # the parent folder is no approvals folder
    assert "no query waits" in listed.output
    listed = CliRunner().invoke(pending_command, ["--state", str(tmp_path / "site0")])
    assert f"{q.query_id}  waiting" in listed.output and "'NCCTG lung: overall survival'" in listed.output
    # Not approved yet: sending the same query again still waits.
    assert decode_reply(c.nodes["site0"].answer(req)).awaiting_approval
    runner = CliRunner()
    for n in c.names:
        out = runner.invoke(approve_command, [q.query_id, "--state", str(tmp_path / n), "--yes"])
        assert out.exit_code == 0, out.output
        assert "approved" in out.output
    listed = runner.invoke(pending_command, ["--state", str(tmp_path / "site0")])
    assert f"{q.query_id}  approved" in listed.output
    second = {n: decode_reply(c.nodes[n].answer(req)) for n in c.names}
    assert all(r.status == "ok" for r in second.values())
    assert c.nodes["site0"].audit.entries[-1]["approval"]["query_id"] == q.query_id
    # Answered once: the approved query cannot be replayed.
    assert "replayed" in decode_reply(c.nodes["site0"].answer(req)).reason
    # A different query reusing the pending id is not the approved one.
    out = runner.invoke(approve_command, ["f" * 32, "--state", str(tmp_path / "site0"), "--yes"])
    assert out.exit_code != 0 and "no query" in out.output


def test_coordinator_waits_for_approval_when_asked_to(tmp_path):
    from fedsurv.commands.site import approve_command

    c = Consortium(split(3, seed=12), policy=replace(BASE, manual_approval=True), approvals_dir=tmp_path)
    plan = lung_plan()
    sleeps = []

    def sleep(s):
        # The privacy officers approve while the coordinator waits.
        sleeps.append(s)
        c.now += s
        for n in c.names:
            for pending in (tmp_path / n).glob("*.pending.json"):
                qid = pending.name.split(".")[0]
                CliRunner().invoke(approve_command, [qid, "--state", str(tmp_path / n), "--yes"])

    result = run_plan_secure(plan, c.transport(), c.coordinator, c.roster, c.names, clock=c.clock,
                             approval_wait_seconds=60, sleep=sleep)
    assert len(result.query_ids) == 1 and sleeps == [5.0]
    # Without waiting, the round fails, naming the sites and why.
    c2 = Consortium(split(3, seed=12), policy=replace(BASE, manual_approval=True), approvals_dir=tmp_path / "x")
    with pytest.raises(AggregationError, match="awaiting approval"):
        run_plan_secure(plan, c2.transport(), c2.coordinator, c2.roster, c2.names, clock=c2.clock)


def test_preview_shows_the_exact_tallies_and_the_decision(tmp_path):
    import json

    import numpy as np

    from fedsurv.commands.site import preview_command

    lung = ROOT / "tests" / "fixtures" / "data" / "lung.csv"
    plan = ROOT / "fedsurv" / "examples" / "lung.toml"
    (tmp_path / "ok.toml").write_text('[policy]\nkinds = ["km", "logrank"]\nvariables = ["sex"]\n')
    (tmp_path / "strict.toml").write_text('[policy]\nkinds = ["km"]\nvariables = ["sex"]\nfinest_bin_width = 7\n')
    runner = CliRunner()
    out = runner.invoke(preview_command, ["--plan", str(plan), "--data", str(lung), "--policy", str(tmp_path / "ok.toml"),
                                          "--json"])
    assert out.exit_code == 0, out.output
    js = json.loads(out.output)
    assert js["decision"] == {"allowed": True, "reasons": []} and js["n"] == 228
    hist = np.array(js["blocks"]["surv:os:sex"]["values"])
    # Independent count from the CSV: 165 deaths, 63 censored; 138 men and 90 women.
    import pandas as pd

    df = pd.read_csv(lung)
    assert hist[..., 1].sum() == (df.status == 2).sum() == 165 and hist[..., 0].sum() == 63
    assert hist.sum(axis=(1, 2)).tolist() == [138, 90]
    assert hist[0, 306, 1] == ((df.time == 306) & (df.sex == 1) & (df.status == 2)).sum()
    assert any("only the masked form" in n for n in js["notes"])
    text = runner.invoke(preview_command, ["--plan", str(plan), "--data", str(lung), "--policy",
                                           str(tmp_path / "strict.toml")])
    assert text.exit_code == 1
    assert "REFUSED" in text.output and "kind 'logrank' is not allowed" in text.output
    assert "bin width 1 days is finer than the policy allows (7 days" in text.output
    assert "stratum 1: 138 patients" in text.output


def test_a_privacy_table_is_kept_for_the_dp_budget():
    p = parse_policy('[policy]\nkinds = ["km"]\nvariables = []\n[privacy]\nepsilon_per_query = 1.0\ntotal_epsilon = 5.0\n')
    assert p.privacy == {"epsilon_per_query": 1.0, "total_epsilon": 5.0}
    assert parse_policy('[policy]\nkinds = ["km"]\nvariables = []\n').privacy is None
