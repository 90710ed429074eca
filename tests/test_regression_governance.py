"""Cox rounds under site policies and attack: every check of issue 8 shown refusing.

The coordinator here is hostile where a test says so: it signs whatever step it likes (an
extreme beta, a round that continues nothing, a replayed round number, another set of sites)
and each time the site refuses, says why, and records it in its audit log.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from regression_plans import data, model, plan_text, split

from coordinator.plan_run import run_plan
from coordinator.secure_round import local_transport, new_query, run_plan_secure
from fedsurv.runner import run_prepared
from protocol.errors import AggregationError
from protocol.plan import parse_plan
from protocol.query import decode_reply
from protocol.regression import Step
from protocol.roster import consortium_for_run
from site_node.audit import verify_log
from site_node.cox_site import CoxSitePolicy
from site_node.policy import Policy, PolicyError, parse_policy
from site_node.prepare import prepare_site_data
from site_node.responder import SiteNode

LUNG30 = "lung_age_sex_ecog_w30"
VARS = ("age", "sex", "ph.ecog", "trt", "karno", "celltype", "rx", "nodes")


def policy(**regression) -> Policy:
    return Policy(kinds=("km", "cox", "finegray"), variables=VARS, min_stratum_size=1,
                  regression=CoxSitePolicy(**regression))


def prepared(case: str, plan, n_sites: int, folder: Path, seed: int = 0):
    return {s.name: prepare_site_data(plan, s.data) for s in split(case, n_sites, folder, seed)}


class Consortium:
    """Sites with policies and audit logs, and a coordinator that signs any step it likes."""

    def __init__(self, plan, data, policies, audit_dir: Path):
        self.plan, self.data = plan, data
        self.coordinator, keys, self.roster = consortium_for_run(list(data))
        self.nodes = {n: SiteNode(n, load_data=lambda _p, _n=n: self.data[_n], keys=keys[n], roster=self.roster,
                                  policy=policies.get(n), audit_path=audit_dir / f"{n}.jsonl") for n in data}
        self.transport = local_transport({n: node.answer for n, node in self.nodes.items()})

    def tally_round(self, sites=None):
        return run_plan_secure(self.plan, self.transport, self.coordinator, self.roster, sites or list(self.data))

    def ask(self, step: Step, sites=None) -> dict[str, object]:
        sites = sorted(sites or self.data)
        _, request = new_query(self.plan, self.coordinator, sites, 600, step=step.to_dict())
        return {s: decode_reply(r) for s, r in self.transport({s: request for s in sites}).items()}


def lung_consortium(tmp_path, n_sites=4, **regression):
    # Past 750 days lung's monthly bins hold single deaths (see test_bin_with_one_exit_is_refused):
    # a horizon there censors the tail into one bin, as a plan meeting the policy would.
    plan = parse_plan(plan_text(LUNG30, model("m", LUNG30), horizon=750))
    data = prepared(LUNG30, plan, n_sites, tmp_path / "data")
    pol = policy(**regression)
    return Consortium(plan, data, {n: pol for n in data}, tmp_path / "audit")


def exits(first) -> tuple:
    return (("m", tuple(int(x) for x in first.tallies["regsurv:m"].sum(axis=(1, 3)).ravel())),)


def test_honest_fit_passes_every_policy_check(tmp_path):
    c = lung_consortium(tmp_path)
    results, first = run_plan(c.plan, c.transport, c.coordinator, c.roster, list(c.data))
    m = results["analyses"]["m"]
    assert m["converged"] and m["rounds"] == m["iterations"] + 1 == results["regression_rounds"]["rounds"]
    for name in c.data:
        ok, entries = verify_log(tmp_path / "audit" / f"{name}.jsonl")
        assert ok.ok
        rounds = [e for e in entries if "step" in e]
        # every round in the audit log, numbered 2, 3, ..., each continuing the tally round
        assert [e["step"]["round"] for e in rounds] == list(range(2, 2 + results["regression_rounds"]["rounds"]))
        assert {e["step"]["round1"] for e in rounds} == {first.query_ids[-1]}
        assert all(e["decision"] == "ok" for e in rounds)


def test_extreme_beta_is_refused_and_audited(tmp_path):
    c = lung_consortium(tmp_path)
    first = c.tally_round()
    # beta_age = 5 spreads x'beta over decades of age: one patient's exp(x'beta) would dominate
    replies = c.ask(Step(2, first.query_ids[-1], (("m", (5.0, 0.0, 0.0)),), exits(first)))
    for name, r in replies.items():
        assert r.status == "refused"
        assert "spread of x'beta" in r.reason and "above the policy's bound 10" in r.reason
        _, entries = verify_log(tmp_path / "audit" / f"{name}.jsonl")
        assert entries[-1]["decision"] == "refused" and entries[-1]["step"]["betas"] == [["m", [5.0, 0.0, 0.0]]]
    # without a policy a beta whose sums overflow is refused too: they cannot be sent exactly
    c2 = Consortium(c.plan, c.data, {}, tmp_path / "audit2")
    first2 = c2.tally_round()
    replies = c2.ask(Step(2, first2.query_ids[-1], (("m", (1e3, 0.0, 0.0)),), exits(first2)))
    assert all(r.status == "refused" and "cannot be sent exactly" in r.reason for r in replies.values())


def test_moderate_beta_is_answered(tmp_path):
    c = lung_consortium(tmp_path)
    first = c.tally_round()
    replies = c.ask(Step(2, first.query_ids[-1], (("m", (0.02, -0.5, 0.4)),), exits(first)))
    assert all(r.status == "ok" for r in replies.values())


@pytest.mark.parametrize("case", ["lung_age_sex_ecog_w1", "lung_age_sex_ecog_w30"])
def test_bin_with_one_exit_is_refused(tmp_path, case):
    """Daily bins, and monthly ones in lung's tail, hold single exits: the sites refuse before
    any sum of x leaves them and ask for a coarser grid."""
    plan = parse_plan(plan_text(case, model("m", case)))
    # the model's rows (R drops missing covariates), counted per bin straight from the file
    rows = data(case).dropna(subset=["age", "sex", "ph.ecog"])
    per_bin = np.bincount(np.ceil(rows["time"] / plan.bin_width).astype(int))
    thin = int(np.sum(per_bin == 1))
    assert thin > 0
    prep = prepared(case, plan, 4, tmp_path)
    with pytest.raises(AggregationError, match=f" {thin} pooled bins hold fewer than 2 exits.*coarsen the grid"):
        run_prepared(plan, prep, policies={n: policy() for n in prep})


def test_round_that_continues_no_tally_round_is_refused(tmp_path):
    c = lung_consortium(tmp_path)
    c.tally_round()
    replies = c.ask(Step(2, "0" * 32, (("m", (0.0, 0.0, 0.0)),)))
    assert all(r.status == "refused" and "does not continue a tally round" in r.reason for r in replies.values())


def test_round_over_other_sites_is_refused(tmp_path):
    """The rounds of one fit always sum over the tally round's sites: dropping one site from a
    round would let the coordinator difference its sums out."""
    c = lung_consortium(tmp_path, n_sites=5)
    first = c.tally_round()
    fewer = sorted(c.data)[:4]
    replies = c.ask(Step(2, first.query_ids[-1], (("m", (0.0, 0.0, 0.0)),), exits(first)), sites=fewer)
    assert all(r.status == "refused" and "same plan and the same sites" in r.reason for r in replies.values())


def test_replayed_round_number_is_refused(tmp_path):
    c = lung_consortium(tmp_path)
    first = c.tally_round()
    step = Step(3, first.query_ids[-1], (("m", (0.0, 0.0, 0.0)),), exits(first))
    assert all(r.status == "ok" for r in c.ask(step).values())
    again = c.ask(replace(step, round_no=2))
    assert all(r.status == "refused" and "comes after round 3" in r.reason for r in again.values())


def test_too_many_rounds_are_refused(tmp_path):
    c = lung_consortium(tmp_path, max_rounds=2)  # the fit needs 4 rounds
    with pytest.raises(AggregationError, match="exceeds the 2 rounds a model may take"):
        run_plan(c.plan, c.transport, c.coordinator, c.roster, list(c.data))


def test_step_not_fitting_the_plan_is_refused(tmp_path):
    c = lung_consortium(tmp_path)
    first = c.tally_round()
    for betas, why in [((("m", (0.0, 0.0)),), "beta has 2 values for 3 model terms"),
                       ((("other", (0.0,)),), "'other' is not a regression model of the plan")]:
        replies = c.ask(Step(2, first.query_ids[-1], betas))
        assert all(r.status == "refused" and why in r.reason for r in replies.values())


def test_small_level_and_few_patients_refused_in_the_tally_round(tmp_path):
    case = "veteran_trt_karno_age_celltype_w1"
    plan = parse_plan(plan_text(case, model("m", case)))
    data = prepared(case, plan, 12, tmp_path)  # about 11 patients per site
    reasons = []
    for n, d in data.items():
        c = Consortium(plan, {n: d, **{k: v for k, v in data.items() if k != n}}, {n: policy()}, tmp_path / n)
        reply = decode_reply(c.nodes[n].answer(new_query(plan, c.coordinator, sorted(data), 600)[1]))
        if reply.status == "refused":
            reasons.append(reply.reason)
    assert any("of celltype has" in r and "fewer than 3" in r for r in reasons)
    assert any("the policy needs at least 11" in r for r in reasons)


def test_p_above_n_over_3_is_refused(tmp_path):
    case = "veteran_trt_karno_age_celltype_w1"
    plan = parse_plan(plan_text(case, model("m", case)))
    data = prepared(case, plan, 12, tmp_path)  # 6 terms for about 11 patients a site
    with pytest.raises(AggregationError, match="6 model terms for 1[0-7] patients: more than n/3"):
        run_prepared(plan, data, policies={n: policy(min_patients=1, min_level_size=1) for n in data})


def test_site_whose_rows_change_between_rounds_is_caught(tmp_path):
    """Round sums must come from round 1's patients: the decoded counts are compared."""
    c = lung_consortium(tmp_path)
    victim = min(c.data)
    node = c.nodes[victim]
    original = node._load_data
    calls = {"n": 0}

    def changing(plan):
        calls["n"] += 1
        d = original(plan)
        if calls["n"] == 1:
            return d
        keep = np.arange(d.n_rows) > 0  # one patient fewer from round 2 on
        return replace(d, n_rows=d.n_rows - 1, times={k: v[keep] for k, v in d.times.items()},
                       outcomes={k: v[keep] for k, v in d.outcomes.items()},
                       fixed={k: v[keep] for k, v in d.fixed.items()},
                       missing={k: v[keep] for k, v in d.missing.items()})

    node._load_data = changing
    first = c.tally_round()
    node._models = None  # as if the site process restarted between rounds
    from coordinator.regression_rounds import run_regressions
    with pytest.raises(AggregationError, match="decoded counts differ from round 1's"):
        run_regressions(c.plan, c.transport, c.coordinator, c.roster, first)


def test_site_lost_in_a_round_reruns_the_plan_over_the_rest(tmp_path):
    """Without policies, a site that fails a round is left out and the plan runs again from its
    tally round; the fit then equals a fit over the remaining sites alone."""
    plan = parse_plan(plan_text(LUNG30, model("m", LUNG30)))
    data = prepared(LUNG30, plan, 4, tmp_path / "d")
    c = Consortium(plan, data, {}, tmp_path / "audit")
    quitter = max(data)
    answer = c.nodes[quitter].answer

    def flaky(request: bytes) -> bytes:
        if b'"step"' in request:
            raise ConnectionError("site went away")
        return answer(request)

    c.transport = local_transport({**{n: node.answer for n, node in c.nodes.items()}, quitter: flaky})
    results, first = run_plan(plan, c.transport, c.coordinator, c.roster, list(data))
    assert [s for s, _ in first.sites] == sorted(data)[:-1]
    assert any(quitter in note and "runs again" in note for note in first.notes)
    rest, _ = run_prepared(plan, {n: d for n, d in data.items() if n != quitter})
    np.testing.assert_allclose(results["analyses"]["m"]["coef"], rest["analyses"]["m"]["coef"], rtol=1e-13)


def test_policy_regression_table(tmp_path):
    p = parse_policy('[policy]\nkinds = ["cox"]\nvariables = ["age"]\n\n[regression]\nmin_patients = 20\n'
                     'min_exits = 3\nmax_xb_spread = 6.5\nmax_rounds = 25\nmin_level_size = 5\n')
    assert p.regression == CoxSitePolicy(min_patients=20, min_level_size=5, min_exits=3, max_xb_spread=6.5,
                                         max_rounds=25)
    assert parse_policy('[policy]\nkinds = ["cox"]\nvariables = []\n').regression == CoxSitePolicy()
    for bad, why in [("colour = 1", "regression.colour: unknown key"),
                     ("min_exits = 0", "regression.min_exits: expected an integer of at least 1"),
                     ("max_xb_spread = -1", "regression.max_xb_spread: expected a positive number"),
                     ("max_rounds = true", "regression.max_rounds: expected an integer")]:
        with pytest.raises(PolicyError, match=why):
            parse_policy(f'[policy]\nkinds = ["cox"]\nvariables = []\n\n[regression]\n{bad}\n')


def test_policy_must_allow_the_kind_and_covariates(tmp_path):
    c = lung_consortium(tmp_path)
    narrow = Policy(kinds=("km",), variables=("age",), min_stratum_size=1)
    name = min(c.data)
    c.nodes[name].policy = narrow
    reply = decode_reply(c.nodes[name].answer(new_query(c.plan, c.coordinator, sorted(c.data), 600)[1]))
    assert reply.status == "refused"
    assert "kind 'cox' is not allowed" in reply.reason
    assert "variable 'sex' is not allowed" in reply.reason and "variable 'ph.ecog' is not allowed" in reply.reason


def test_audit_show_lists_every_round_with_its_beta(tmp_path, capsys):
    from fedsurv.cli import main

    c = lung_consortium(tmp_path)
    results, first = run_plan(c.plan, c.transport, c.coordinator, c.roster, list(c.data))
    log = tmp_path / "audit" / f"{min(c.data)}.jsonl"
    try:
        main(["audit", "show", str(log)])
    except SystemExit as e:
        assert e.code in (0, None)
    out = capsys.readouterr().out
    rounds = results["regression_rounds"]["rounds"]
    assert out.count(f"of query {first.query_ids[-1][:12]}") == rounds
    assert "regression round 2 of query" in out and "m beta [0, 0, 0]" in out


def test_one_site_refusing_a_round_stops_the_fit_when_the_others_refuse_to_resend(tmp_path):
    """The honest path with policies: one site's stricter bound on x'beta refuses round 3; the
    others will not resend their tallies to fewer sites (differencing), so the run fails, saying
    both why, and no estimate is produced."""
    plan = parse_plan(plan_text(LUNG30, model("m", LUNG30), horizon=750))
    data = prepared(LUNG30, plan, 4, tmp_path / "d")
    strict = min(data)
    policies = {n: policy(max_xb_spread=0.5 if n == strict else 10.0) for n in data}
    c = Consortium(plan, data, policies, tmp_path / "audit")
    with pytest.raises(AggregationError) as e:
        run_plan(c.plan, c.transport, c.coordinator, c.roster, list(c.data))
    msg = str(e.value)
    assert f"{strict} refused" in msg and "above the policy's bound 0.5" in msg
    assert "then the rerun failed" in msg and "isolate" in msg
    _, entries = verify_log(tmp_path / "audit" / f"{strict}.jsonl")
    refused = [x for x in entries if "step" in x and x["decision"] == "refused"]
    assert len(refused) == 1 and refused[0]["step"]["round"] >= 3


def test_with_rerun_after_dropout_the_others_finish_without_the_refusing_site(tmp_path):
    plan = parse_plan(plan_text(LUNG30, model("m", LUNG30), horizon=600))
    data = prepared(LUNG30, plan, 4, tmp_path / "d")
    strict = min(data)
    policies = {n: replace(policy(max_xb_spread=0.5 if n == strict else 10.0), rerun_after_dropout=True)
                for n in data}
    c = Consortium(plan, data, policies, tmp_path / "audit")
    results, first = run_plan(c.plan, c.transport, c.coordinator, c.roster, list(c.data))
    assert strict not in [s for s, _ in first.sites]
    rest, _ = run_prepared(plan, {n: d for n, d in data.items() if n != strict})
    np.testing.assert_allclose(results["analyses"]["m"]["coef"], rest["analyses"]["m"]["coef"], rtol=1e-13)
