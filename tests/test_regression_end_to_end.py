"""Cox and Fine-Gray through the whole protocol (`run_in_process`: signed queries, site
answers, 128-bit masked fixed-point sums, unmasking, checks) equal R's coxph and cmprsk::crr
on the pooled rows (tests/fixtures/expected/cox), whatever the split over sites."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from regression_plans import data, expected, model, plan_text, split

from fedsurv.runner import run_in_process, write_results
from fedsurv.site_input import SiteInput
from protocol.plan import parse_plan, plan_from_dict

CASES = ["lung_age_sex_ecog_w1", "lung_age_sex_ecog_w30", "veteran_trt_karno_age_celltype_w1",
         "colon_cr_recurrence_rx_age_nodes_w7"]


def rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def square(ref_var, p: int) -> np.ndarray:
    return np.array(ref_var).reshape(p, p, order="F")


@functools.cache
def run_case(case: str) -> dict:
    """One run per case: Efron (robust), Breslow and, with competing events, Fine-Gray; 5 sites."""
    models = model("efron", case, robust=True) + model("breslow", case, ties="breslow")
    if case.startswith("colon"):
        models += model("fg", case, kind="finegray")
    plan = parse_plan(plan_text(case, models))
    sites = split(case, 5, Path(tempfile.mkdtemp(prefix="fedsurv-cox-")), seed=len(case))
    results, _ = run_in_process(plan, sites)
    return results


@pytest.fixture(params=CASES)
def fitted(request):
    return request.param, run_case(request.param)


def test_cox_equals_r(fitted):
    case, results = fitted
    ref = expected(case)
    for name, key in (("efron", "efron"), ("breslow", "breslow")):
        got, want = results["analyses"][name], ref[key]
        p = len(want["terms"])
        assert got["terms"] == want["terms"]
        assert rel(got["coef"], want["coef"]) < 1e-10
        assert np.max(np.abs(np.array(got["naive_var" if name == "efron" else "var"]) - square(want["var"], p))) < 1e-9
        assert np.max(np.abs(np.array(got["loglik"]) - want["loglik"])) < 1e-9
        assert abs(got["tests"]["score"] - want["score_test"]) < 1e-9
        assert abs(got["tests"]["lr"] - want["lr_test"]) < 1e-9
        assert got["iterations"] == want["iter"]
        assert (got["n"], got["n_event"]) == (want["n"], want["nevent"])
        assert got["n_dropped"] == len(data(case)) - want["n"]
        if name == "breslow":
            assert abs(got["tests"]["wald"] - want["wald_test"]) < 0.005  # R's fixture rounds it
            assert rel(got["lower"], want["hr_ci95"]["lower"]) < 1e-9
            assert rel(got["upper"], want["hr_ci95"]["upper"]) < 1e-9
            assert rel(got["std_err"], want["se"]) < 1e-9


def test_robust_equals_r(fitted):
    case, results = fitted
    got, want = results["analyses"]["efron"], expected(case)["efron_robust"]
    p = len(want["terms"])
    assert got["robust"] is True
    assert np.max(np.abs(np.array(got["var"]) - square(want["robust_var"], p))) < 1e-9
    assert rel(got["robust_std_err"], want["robust_se"]) < 1e-9
    assert rel(got["lower"], want["hr_ci95"]["lower"]) < 1e-9
    assert rel(got["upper"], want["hr_ci95"]["upper"]) < 1e-9


def test_finegray_equals_crr():
    case = "colon_cr_recurrence_rx_age_nodes_w7"
    results = run_case(case)
    got, want = results["analyses"]["fg"], expected(case)["fine_gray"]
    p = len(want["terms"])
    assert got["kind"] == "finegray" and got["terms"] == want["terms"]
    assert got["converged"] is want["converged"]
    assert rel(got["coef"], want["coef"]) < 1e-9
    assert np.max(np.abs(np.array(got["var"]) - square(want["var"], p))) < 1e-9
    assert abs(got["loglik"][1] - want["loglik"]) < 1e-9
    assert rel(got["std_err"], want["se"]) < 1e-9


def test_models_share_rounds(fitted):
    """Both Cox fits (and crr) ride the same rounds: as many as the longest path needs."""
    case, results = fitted
    rounds = results["regression_rounds"]["rounds"]
    per_model = [a["rounds"] for a in results["analyses"].values() if a.get("kind") in ("cox", "finegray")]
    assert rounds == max(per_model)
    # coxph: beta = 0, one round per iteration; converged at the last
    ref = expected(case)
    assert results["analyses"]["efron"]["rounds"] == ref["efron"]["iter"] + 1
    assert len(results["regression_rounds"]["query_ids"]) == rounds
    assert len(set(results["regression_rounds"]["query_ids"])) == rounds


@pytest.mark.parametrize("n_sites", [1, 3, 11])
def test_split_invariance(n_sites, tmp_path):
    case = "veteran_trt_karno_age_celltype_w1"
    plan = parse_plan(plan_text(case, model("m", case, robust=True)))
    one, _ = run_in_process(plan, split(case, 1, tmp_path / "one"))
    many, _ = run_in_process(plan, split(case, n_sites, tmp_path / "many", seed=n_sites))
    a, b = one["analyses"]["m"], many["analyses"]["m"]
    assert a["iterations"] == b["iterations"]
    assert rel(b["coef"], a["coef"]) < 1e-12
    assert np.max(np.abs(np.array(b["var"]) - np.array(a["var"]))) < 1e-14
    assert abs(a["loglik"][1] - b["loglik"][1]) < 1e-10


@pytest.mark.parametrize("kind", ["cox", "finegray"])
def test_public_centre_and_scale_do_not_change_the_fit(tmp_path, kind):
    """The plan's centre and scale only condition the arithmetic (R centres at the means and
    coxfit6 scales internally): coefficients are per unit of each covariate, as R's."""
    case = "colon_cr_recurrence_rx_age_nodes_w7"
    sites = split(case, 4, tmp_path)
    m = model("m", case, kind=kind, robust=True)
    a, _ = run_in_process(parse_plan(plan_text(case, m)), sites)
    b, _ = run_in_process(parse_plan(plan_text(case, m, centers={"age": 62.5, "nodes": 2},
                                               scales={"age": 10, "nodes": 4})), sites)
    x, y = a["analyses"]["m"], b["analyses"]["m"]
    assert x["iterations"] == y["iterations"]
    assert rel(x["coef"], y["coef"]) < 1e-11
    assert np.max(np.abs(np.array(x["var"]) - np.array(y["var"]))) < 1e-13
    ref = expected(case)["fine_gray" if kind == "finegray" else "efron_robust"]
    assert rel(y["coef"], ref["coef"]) < 1e-9
    p = len(ref["terms"])
    assert np.max(np.abs(np.array(y["var"]) - square(ref["var" if kind == "finegray" else "robust_var"], p))) < 1e-9


def _stratified_plan(case: str, strata: str) -> str:
    extra = '[variables.centre]\nlevels = ["a", "b", "c"]\n'
    return plan_text(case, model("m", case, strata=[strata], robust=True), extra_vars=extra)


def test_strata_variable_and_strata_site_agree_and_match_lifelines(tmp_path):
    """strata = a variable (per-bin sums per level) and strata = "site" (each site's own
    point) are different messages; with the sites being the levels they must agree, and equal
    lifelines' stratified Efron fit (which agrees with coxph) on the same rows."""
    case = "veteran_trt_karno_age_celltype_w1"
    df = data(case)
    df["centre"] = np.array(["a", "b", "c"])[np.random.default_rng(5).integers(0, 3, len(df))]
    sites = []
    for lev in "abc":
        path = tmp_path / f"{lev}.csv"
        df[df.centre == lev].to_csv(path, index=False)
        sites.append(SiteInput(f"site_{lev}", path))
    by_var, _ = run_in_process(parse_plan(_stratified_plan(case, "centre")), sites)
    by_site, _ = run_in_process(parse_plan(_stratified_plan(case, "site")), sites)
    v, s = by_var["analyses"]["m"], by_site["analyses"]["m"]
    assert v["iterations"] == s["iterations"]
    assert rel(v["coef"], s["coef"]) < 1e-11
    assert np.max(np.abs(np.array(v["var"]) - np.array(s["var"]))) < 1e-13
    assert s["strata"] == ["site"] and v["strata"] == ["centre"]
    # lifelines on the same design (treatment contrasts, celltype against adeno)
    X = df[["trt", "karno", "age"]].astype(float)
    for lev in ["large", "smallcell", "squamous"]:
        X[f"celltype{lev}"] = (df.celltype == lev).astype(float)
    X["time"], X["event"], X["centre"] = df.time, df.event, df.centre
    cph = CoxPHFitter().fit(X, "time", "event", strata=["centre"],
                            fit_options={"precision": 1e-13, "r_precision": 1e-14, "max_steps": 200})
    terms = ["trt", "karno", "age", "celltypelarge", "celltypesmallcell", "celltypesquamous"]
    assert v["terms"] == terms
    assert rel(v["coef"], cph.params_[terms].to_numpy()) < 1e-9
    assert abs(v["loglik"][1] - cph.log_likelihood_) < 1e-9


def test_finegray_with_empty_bins_past_the_last_exit(tmp_path):
    """A horizon past the last time leaves bins after the one where everyone left at risk was
    censored, where the censoring distribution G is 0; the fit must not change (crr's)."""
    case = "colon_cr_recurrence_rx_age_nodes_w7"
    plan = parse_plan(plan_text(case, model("fg", case, kind="finegray"), horizon=4004))
    rows = data(case)
    last = rows[rows.cr_time == rows.cr_time.max()]
    assert (last.cr_event == 0).all()  # the last bin's rows are all censored: G is 0 after it
    results, _ = run_in_process(plan, split(case, 3, tmp_path))
    got, want = results["analyses"]["fg"], expected(case)["fine_gray"]
    assert rel(got["coef"], want["coef"]) < 1e-9
    p = len(want["terms"])
    assert np.max(np.abs(np.array(got["var"]) - square(want["var"], p))) < 1e-9


def test_model_grid_coarser_than_the_plan_equals_r_on_that_grid(tmp_path):
    """A model's own bin_width: the plan keeps daily bins for Kaplan-Meier while the Cox model
    runs on 30-day bins, and equals coxph on times put on the 30-day grid."""
    case = "lung_age_sex_ecog_w30"
    text = plan_text(case, model("m", case, bin_width=30)).replace("bin_width = 30\nhorizon", "bin_width = 1\nhorizon")
    text += '\n[[analyses]]\nname = "km"\nkind = "km"\nendpoint = "ep"\n'
    plan = parse_plan(text)
    assert plan.bin_width == 1 and plan.analyses[0].bin_width == 30
    results, _ = run_in_process(plan, split(case, 4, tmp_path))
    got, want = results["analyses"]["m"], expected(case)["efron"]
    assert rel(got["coef"], want["coef"]) < 1e-10
    assert got["iterations"] == want["iter"] and got["bin_width"] == 30
    times = results["analyses"]["km"]["strata"]["all"]["table"]["time"]
    assert times[:3] == [5.0, 11.0, 12.0]  # the plan's daily grid: lung's first exits


def test_study_plan_passes_the_example_policy_at_every_site(tmp_path):
    """The shipped study plan and example policy agree: on the demo consortium no site refuses
    a regression round (the models' quarterly grid keeps every pooled bin above min_exits)."""
    from fedsurv.demo_data import write_demo_consortium
    from site_node.policy import load_policy

    root = Path(__file__).resolve().parents[1]
    files = write_demo_consortium(tmp_path / "data")
    plan = parse_plan((root / "fedsurv" / "examples" / "sarcoma.toml").read_text())
    policy = root / "fedsurv" / "examples" / "policy.toml"
    assert load_policy(policy).regression.min_exits == 2
    sites = [SiteInput(n, data, mapping, policy) for n, (data, mapping) in files.items()]
    results, first = run_in_process(plan, sites, audit_dir=tmp_path / "audit")
    assert not first.refusals
    for name in ("os_cox", "amputation_finegray"):
        assert results["analyses"][name]["converged"]
        assert results["analyses"][name]["n"] == sum(s["n"] for s in results["sites"])
    # the report a coordinator reads: both models, and the date-derived endpoints spelled out
    from coordinator.report_html import write_report

    html = write_report(results, tmp_path / "report", figure_format="svg").read_text()
    cox = results["analyses"]["os_cox"]
    assert "Robust SE" in html and f"{cox['robust_std_err'][0]:.4f}" in html
    assert "Subdistribution hazard ratio" in html
    assert ("from dates: origin ilp_date; events amputation (date column amputation_date), death (date column "
            "death_date); last follow-up last_followup") in html


def test_monotone_likelihood_reaches_the_coordinator_as_rs_warning(tmp_path):
    """Every death in one arm: the partial likelihood keeps rising with beta. coxph stops when
    the log-likelihood converges and warns that beta may be infinite; so does the federated fit
    (without a site policy; with one, the growing x'beta spread is refused first)."""
    rng = np.random.default_rng(11)
    n = 60
    arm = np.repeat(["a", "b"], n // 2)
    time = rng.integers(1, 100, n)
    event = (arm == "b").astype(int)
    df = pd.DataFrame({"time": time, "event": event, "arm": arm})
    sites = []
    for k in range(3):
        path = tmp_path / f"s{k}.csv"
        df.iloc[k::3].to_csv(path, index=False)
        sites.append(SiteInput(f"s{k}", path))
    plan = parse_plan('[plan]\ntitle = "t"\nbin_width = 1\nhorizon = 100\n\n[endpoints.ep]\ntime = "time"\n'
                      'event = "event"\ncauses = { 1 = "death" }\n\n[variables.arm]\nlevels = ["a", "b"]\n\n'
                      '[[analyses]]\nname = "m"\nkind = "cox"\nendpoint = "ep"\ncovariates = ["arm"]\n')
    results, _ = run_in_process(plan, sites)
    m = results["analyses"]["m"]
    assert m["warnings"] == ["Loglik converged before variable  1 ; beta may be infinite. "]
    assert m["coef"][0] > 5 and m["converged"]
    # the same through Newton rounds (arm as a 0/1 number): the same path, iterations and warning
    numeric = plan.to_dict()
    numeric["variables"]["arm"] = {"type": "numeric", "range": [0, 1], "decimals": 0, "missing": "error"}
    for k in range(3):
        path = tmp_path / f"s{k}.csv"
        path.write_text(path.read_text().replace(",a\n", ",0\n").replace(",b\n", ",1\n"))
    r2, _ = run_in_process(plan_from_dict(numeric), sites)
    m2 = r2["analyses"]["m"]
    assert m2["rounds"] > 0 and m["rounds"] == 0
    assert (m2["iterations"], m2["warnings"]) == (m["iterations"], m["warnings"])
    # beta heads to infinity along a flat likelihood, where the information is near 0: rounding
    # of the 128-bit fixed-point sums moves it in the 9th digit, not the path
    assert rel(m2["coef"], m["coef"]) < 1e-7
    # an infinite upper limit is written as null, as R's Inf has no JSON form
    write_results(results, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "results.json").read_text())["analyses"]["m"]["upper"] == [None]


def test_categorical_model_fitted_from_pattern_counts_equals_newton_rounds(tmp_path):
    """Only categorical covariates: one tally round of counts by covariate pattern gives the
    fit (no Newton round); it equals the rounds' fit of the same model and lifelines'."""
    case = "veteran_trt_karno_age_celltype_w1"
    df = data(case)
    sites = split(case, 4, tmp_path)
    cats = plan_text(case, model("m", case, robust=True).replace('["trt", "karno", "age", "celltype"]',
                                                                  '["trt", "celltype"]'))
    as_levels = cats.replace('[variables."trt"]\ntype = "numeric"\nrange = [1, 2]\nmissing = "drop"',
                             '[variables."trt"]\nlevels = ["1", "2"]')
    assert as_levels != cats
    by_pattern, first = run_in_process(parse_plan(as_levels), sites)
    by_rounds, _ = run_in_process(parse_plan(cats), sites)
    p, r = by_pattern["analyses"]["m"], by_rounds["analyses"]["m"]
    assert p["rounds"] == 0 and "regression_rounds" in by_pattern and by_pattern["regression_rounds"]["rounds"] == 0
    assert len(first.query_ids) == 1 and r["rounds"] == r["iterations"] + 1
    assert p["terms"] == ["trt2", "celltypelarge", "celltypesmallcell", "celltypesquamous"]
    assert p["iterations"] == r["iterations"]
    assert rel(p["coef"], r["coef"]) < 1e-10
    assert np.max(np.abs(np.array(p["var"]) - np.array(r["var"]))) < 1e-12
    assert np.max(np.abs(np.array(p["loglik"]) - np.array(r["loglik"]))) < 1e-9
    X = pd.DataFrame({"trt2": (df.trt == 2).astype(float)})
    for lev in ["large", "smallcell", "squamous"]:
        X[f"celltype{lev}"] = (df.celltype == lev).astype(float)
    X["time"], X["event"] = df.time, df.event
    cph = CoxPHFitter().fit(X, "time", "event", fit_options={"precision": 1e-13, "r_precision": 1e-14,
                                                             "max_steps": 200})
    assert rel(p["coef"], cph.params_[p["terms"]].to_numpy()) < 1e-9
