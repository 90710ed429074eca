"""Plan keys of Cox and Fine-Gray models: parsed, canonical, and refused with the key named."""

from __future__ import annotations

import pytest

from protocol.plan import PlanError, parse_plan, plan_from_dict
from protocol.regression import model_cells, model_strata, model_terms
from protocol.tallies import layout

HEAD = """
[plan]
title = "t"
bin_width = 30
horizon = 900

[endpoints.cr]
time = "t"
event = "e"
causes = { 1 = "relapse", 2 = "death" }

[endpoints.os]
time = "t"
event = "d"
causes = { 1 = "death" }

[variables.age]
type = "numeric"
range = [18, 90]
center = 55
scale = 10

[variables.grade]
levels = ["1", "2", "3"]

[variables.centre]
levels = ["a", "b"]

[variables.size]
type = "numeric"
range = [0, 30]
"""


def plan_with(analysis: str):
    return parse_plan(HEAD + "\n[[analyses]]\n" + analysis)


def test_cox_defaults_as_r():
    plan = plan_with('name = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["age", "grade"]')
    a = plan.analyses[0]
    assert (a.kind, a.cause, a.covariates, a.ties, a.robust, a.strata) == (
        "cox", "death", ("age", "grade"), "efron", False, ())
    assert model_terms(plan, a) == ("age", "grade2", "grade3")  # R's treatment contrasts
    assert plan.variable("size").regression_center == 15.0  # the middle of the range when not given
    assert plan.variable("age").regression_center == 55 and plan.variable("age").regression_scale == 10
    # the canonical form keeps every key, and reads back to the same plan and hash
    again = plan_from_dict(plan.to_dict())
    assert again == plan and again.sha256 == plan.sha256
    assert plan.to_dict()["analyses"][0] == {"name": "m", "kind": "cox", "endpoint": "os", "cause": "death",
                                            "covariates": ["age", "grade"], "ties": "efron", "robust": False}


def test_finegray_defaults_as_crr():
    plan = plan_with('name = "fg"\nkind = "finegray"\nendpoint = "cr"\ncause = "relapse"\ncovariates = ["size"]')
    a = plan.analyses[0]
    assert (a.ties, a.robust) == ("breslow", True)
    # per (bin, outcome): n, r, r^2 and x, rx, r^2 x and their p x p products
    assert model_cells(plan, a) == plan.n_bins * 3 * 3 * (1 + 1 + 1)


def test_strata_and_tally_blocks():
    plan = plan_with('name = "m"\nkind = "cox"\nendpoint = "cr"\ncause = "any"\ncovariates = ["age"]\n'
                     'strata = "centre"')
    a = plan.analyses[0]
    assert model_strata(plan, a) == ("a", "b")
    blocks = {b.key: b.shape for b in layout(plan)}
    assert blocks == {"n": (1,), "regsurv:m": (2, 1, plan.n_bins, 3), "regdropped:m": (1,)}
    assert model_cells(plan, a) == 2 * plan.n_bins * (6 + 5 + 5)
    site = plan_with('name = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["age", "grade"]\nstrata = "site"')
    assert site.analyses[0].site_strata and model_cells(site, site.analyses[0]) == 3 + 3 + 2 * 9


def test_plans_without_regression_keep_their_hash():
    """New optional keys must not change the canonical form of older plans."""
    text = HEAD + '\n[[analyses]]\nname = "k"\nkind = "km"\nendpoint = "os"\n'
    d = parse_plan(text).to_dict()
    assert "center" not in d["variables"]["size"] and "ties" not in d["analyses"][0]
    assert d["variables"]["age"]["center"] == 55


@pytest.mark.parametrize("analysis, message", [
    ('name = "m"\nkind = "cox"\nendpoint = "os"', r"analyses\[0\] \(m\).covariates: list the model's covariates"),
    ('name = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["bmi"]', r"covariates: 'bmi' is not declared"),
    ('name = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["age", "age"]', "listed twice"),
    ('name = "m"\nkind = "cox"\nendpoint = "cr"\ncovariates = ["age"]', "several causes; name the one modelled"),
    ('name = "m"\nkind = "cox"\nendpoint = "os"\ncause = "relapse"\ncovariates = ["age"]',
     "'relapse' is not a cause of endpoint 'os'"),
    ('name = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["age"]\nties = "exact"', r"\.ties: expected one of"),
    ('name = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["age"]\nrobust = "yes"', r"\.robust: expected true"),
    ('name = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["age"]\nstrata = "age"',
     "'age' is numeric; strata and groups need levels"),
    ('name = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["grade"]\nstrata = "grade"', "also a covariate"),
    ('name = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["age"]\nstrata = ["grade", "centre"]',
     'one variable, or "site"'),
    ('name = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["age"]\ntimes = [12]', r"\.times: not used by a cox"),
    ('name = "fg"\nkind = "finegray"\nendpoint = "cr"\ncause = "any"\ncovariates = ["age"]',
     "'any' is not a cause of endpoint 'cr'"),
    ('name = "fg"\nkind = "finegray"\nendpoint = "cr"\ncause = "death"\ncovariates = ["age"]\nties = "efron"',
     "Breslow only"),
    ('name = "fg"\nkind = "finegray"\nendpoint = "cr"\ncause = "death"\ncovariates = ["age"]\nrobust = false',
     "always the sandwich"),
    ('name = "fg"\nkind = "finegray"\nendpoint = "cr"\ncause = "death"\ncovariates = ["age"]\nstrata = "site"',
     "crr fits no strata"),
])
def test_bad_regression_analyses_name_the_key(analysis, message):
    with pytest.raises(PlanError, match=message):
        plan_with(analysis)


@pytest.mark.parametrize("variable, message", [
    ('[variables.x]\ntype = "numeric"\nrange = [0, 10]\ncenter = 11', r"variables.x.center: must lie within"),
    ('[variables.x]\ntype = "numeric"\nrange = [0, 10]\nscale = 0', r"variables.x.scale: must be positive"),
    ('[variables.x]\nlevels = ["a", "b"]\ncenter = 1', r"variables.x.center: only for numeric"),
    ('[variables.x]\nlevels = ["a"]', "'x' needs at least two levels"),
])
def test_bad_covariate_declarations(variable, message):
    with pytest.raises(PlanError, match=message):
        parse_plan(HEAD + variable + '\n[[analyses]]\nname = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["x"]\n')


def test_model_grid_keys():
    plan = plan_with('name = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["age"]\nbin_width = 90\nhorizon = 720')
    a = plan.analyses[0]
    from protocol.regression import model_grid

    g = model_grid(plan, a)
    assert (g.bin_width, g.horizon, g.n_bins) == (90, 720, 9)
    assert {b.key: b.shape for b in layout(plan)}["regsurv:m"] == (1, 1, 9, 3)
    assert plan_from_dict(plan.to_dict()) == plan
    assert model_grid(plan_with('name = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["age"]'),
                      a).n_bins == 9  # the model's own keys win over the plan's 30 / 900
    for bad, why in [("bin_width = 0", r"\.bin_width: must be positive"),
                     ("horizon = -5", r"\.horizon: must be positive")]:
        with pytest.raises(PlanError, match=why):
            plan_with(f'name = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["age"]\n{bad}')
    with pytest.raises(PlanError, match=r"\(k\)\.bin_width: not used by a km analysis"):
        plan_with('name = "k"\nkind = "km"\nendpoint = "os"\nbin_width = 7')


def test_policy_finest_grid_applies_to_each_model():
    from site_node.policy import Policy, plan_reasons

    policy = Policy(kinds=("cox",), variables=("age",), finest_bin_width=60, time_unit="days")
    fine = plan_with('name = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["age"]')
    assert plan_reasons(policy, fine) == [("analysis 'm': bin width 30 days is finer than the policy allows "
                                           "(60 days, policy.finest_bin_width)")]
    coarse = plan_with('name = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["age"]\nbin_width = 90')
    assert plan_reasons(policy, coarse) == []
    # strata = "site": no per-bin sum leaves the site, so the grid is not the policy's concern
    site = plan_with('name = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["age"]\nstrata = "site"')
    assert plan_reasons(policy, site) == []
