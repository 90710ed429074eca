"""Differential privacy end to end: a plan with [privacy] through `fedsurv run`'s code path.

Sites add their noise share before masking and withhold n, keep a budget ledger in their
audit log and refuse past it; the coordinator checks the noisy sum for plausibility and
labels every estimate. Without [privacy] nothing changes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from consortium import split_sites
from r_reference import DATA

from coordinator.report_html import render_report
from coordinator.results import pooled_results
from fedsurv.cli import _load_commands
from fedsurv.groups import root
from fedsurv.runner import prepare_all, run_in_process
from fedsurv.site_input import SiteInput
from fedsurv.summary import summarize
from protocol.errors import AggregationError
from protocol.plan import PlanError, parse_plan, plan_from_dict
from protocol.tallies import Tallies, surv_key
from site_node.tally import compute_tallies

BASE = """
[plan]
title = "lung, DP"
time_unit = "days"
bin_width = 30
horizon = 1080
conf_type = "log-log"

[endpoints.os]
time = "time"
event = "event"
causes = { 1 = "death" }

[variables.sex]
levels = ["1", "2"]

[[analyses]]
name = "os"
kind = "km"
endpoint = "os"
cause = "death"
times = [180, 360]

[[analyses]]
name = "os_by_sex"
kind = "logrank"
endpoint = "os"
cause = "death"
groups = "sex"

[[analyses]]
name = "t1"
kind = "describe"
variables = ["sex"]
"""

PRIVACY = """
[privacy]
epsilon = 3.0
delta = 1e-6
colluding_sites = 1
deduplicated = true
postprocess = "isotonic"
bootstrap = 200
"""

POLICY = """
[policy]
kinds = ["km", "logrank", "describe"]
variables = ["sex"]
min_stratum_size = 3

[privacy]
epsilon_per_query = 3.0
total_epsilon = 4.0
colluding_sites = 1
deduplicated = true
"""


@pytest.fixture(scope="module")
def lung_sites(tmp_path_factory) -> list[SiteInput]:
    df = pd.read_csv(DATA / "lung.csv")
    return split_sites(df, np.arange(len(df)) % 4, tmp_path_factory.mktemp("lung4"))


def km_noise_sd(counts: np.ndarray, b: int, sigma: float) -> float:
    """SD of the Kaplan-Meier S at bin b under independent N(0, sigma^2) noise on every cell.

    Delta method on log S(b) = sum_{j <= b} log(1 - d_j / n_j), n_j = sum_{k >= j} (d_k + c_k):
    a cell of bin k moves n_j for every j <= k, by d log(1 - d/n)/dn = d / (n (n - d)), and an
    event cell of bin k <= b moves d_k, by -1 / (n_k - d_k). Var log S = sigma^2 sum_cells g^2.
    """
    d, c = counts[:, 1].astype(float), counts[:, 0].astype(float)
    n = np.cumsum((d + c)[::-1])[::-1]
    d_b, n_b = d[: b + 1], n[: b + 1]  # bins up to b, all with patients at risk here
    w = np.zeros(n.size)
    w[: b + 1] = d_b / (n_b * (n_b - d_b))
    via_n = np.cumsum(w)  # a cell of bin k moves n_j for j <= min(k, b)
    g_censor = via_n
    g_event = via_n.copy()
    g_event[: b + 1] -= 1.0 / (n_b - d_b)
    s = np.prod(1 - d_b / n_b)
    return float(s * sigma * math.sqrt((g_censor**2).sum() + (g_event**2).sum()))


def test_a_dp_plan_runs_end_to_end_with_labelled_noisy_results(lung_sites, tmp_path):
    plan = parse_plan(BASE + PRIVACY)
    exact_plan = parse_plan(BASE)
    results, outcome = run_in_process(plan, lung_sites, audit_dir=tmp_path / "audit")
    dp = results["privacy"]
    assert dp["epsilon"] <= 3.0 * (1 + 1e-7) and dp["delta"] == 1e-6
    assert "cannot equal R" in dp["note"]
    # m = 3 blocks per patient (two histograms, one count), deduplicated: sigma = 1.64 sqrt(3) in
    # the guarantee (published sigma for epsilon 3 at delta 1e-6 is 1.64, issue 9)
    assert dp["parameters"]["sigma_target"] == pytest.approx(1.64 * math.sqrt(3), rel=0.01)
    # 4 sites each add sigma_i = sigma / sqrt(t = 3), so the sum carries sqrt(4 / 3) sigma
    assert dp["sigma"] == pytest.approx(dp["parameters"]["sigma_site"] * 2, rel=1e-12)
    assert all(s["n"] is None for s in results["sites"])
    assert set(dp["postprocessing"]) == {"surv:os:", "dropped:os:", "surv:os:sex", "dropped:os:sex", "count:sex"}
    assert outcome.tallies.n == 0  # every site withheld its n
    # S(t) near the exact pooled estimate: within 6 SDs of the noise (delta method on the exact
    # counts) plus 0.03 for what post-processing and its bias correction may move
    exact = pooled_results(exact_plan, sum_tallies(exact_plan, lung_sites), [])
    counts = sum_tallies(exact_plan, lung_sites)[surv_key("os", ())][0]
    at = results["analyses"]["os"]["strata"]["all"]["at_times"]
    ex = exact["analyses"]["os"]["strata"]["all"]["at_times"]
    for i, t in enumerate((180, 360)):
        bound = 6 * km_noise_sd(counts, int(t // 30), dp["sigma"]) + 0.03
        assert abs(at["estimate"][i] - ex["estimate"][i]) < bound
        assert at["lower"][i] <= at["estimate"][i] <= at["upper"][i]
    # the noise widens the limits beyond Greenwood's alone
    assert at["upper"][1] - at["lower"][1] > ex["upper"][1] - ex["lower"][1]
    # every site's audit entry records the noise and the spend
    for s in lung_sites:
        entry = [json.loads(x) for x in (tmp_path / "audit" / f"{s.name}.jsonl").read_text().splitlines()][-1]
        assert entry["decision"] == "ok" and entry["dp"]["mechanism"] == "gaussian"
        assert entry["dp_spend"]["epsilon"] == pytest.approx(dp["epsilon"])


def sum_tallies(plan, sites):
    """The exact (unmasked, noiseless) sum of the sites' tallies."""
    return _add(plan, prepare_all(plan, sites))


def _add(plan, prepared):
    it = iter(prepared.values())
    total = compute_tallies(plan, next(it))
    for p in it:
        total = total + compute_tallies(plan, p)
    return total


def test_the_coordinator_receives_noise_that_differs_from_run_to_run(lung_sites):
    plan = parse_plan(BASE + PRIVACY)
    exact = sum_tallies(parse_plan(BASE), lung_sites).flatten()
    a = run_in_process(plan, lung_sites)[1].tallies.flatten()
    b = run_in_process(plan, lung_sites)[1].tallies.flatten()
    assert not np.array_equal(a, b)
    assert not np.array_equal(a[1:], exact[1:]) and not np.array_equal(b[1:], exact[1:])
    # noise, not garbage: the difference to the exact sum stays within 12 sigma everywhere
    sigma = 2 * 1.64 * math.sqrt(3) / math.sqrt(3)
    assert np.abs(a[1:] - exact[1:]).max() < 12 * sigma + 1


def test_a_site_refuses_a_plan_past_its_budget_naming_it(lung_sites, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    sites = [SiteInput(s.name, s.data, policy=policy) for s in lung_sites]
    plan = parse_plan(BASE + PRIVACY)
    run_in_process(plan, sites, audit_dir=tmp_path / "audit")
    ledger = [json.loads(x) for x in (tmp_path / "audit" / "site00.jsonl").read_text().splitlines()]
    assert [e["dp_spend"]["epsilon"] for e in ledger if e.get("dp_spend")] == [pytest.approx(3.0, rel=1e-3)]
    with pytest.raises(AggregationError, match=r"above its budget of 4 .*privacy.total_epsilon"):
        run_in_process(plan, sites, audit_dir=tmp_path / "audit")
    last = [json.loads(x) for x in (tmp_path / "audit" / "site00.jsonl").read_text().splitlines()][-1]
    assert last["decision"] == "refused" and last["dp_budget"]["spent_epsilon"] == pytest.approx(3.0, rel=1e-3)
    # `fedsurv site preview` shows the spend and what remains
    out = cli(["site", "preview", "--plan", str(write(tmp_path / "p.toml", BASE + PRIVACY)),
                                    "--data", str(lung_sites[0].data), "--policy", str(policy),
                                    "--audit", str(tmp_path / "audit" / "site00.jsonl"), "--participants", "4"])
    assert out.exit_code == 1, out.output
    assert "this plan would spend: epsilon 3" in out.output
    assert "spent so far (audit log): epsilon 3" in out.output and "remaining 1" in out.output


def test_a_policy_requiring_dp_refuses_an_exact_plan(lung_sites, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    sites = [SiteInput(s.name, s.data, policy=policy) for s in lung_sites]
    with pytest.raises(AggregationError, match="answers only differentially private plans"):
        run_in_process(parse_plan(BASE), sites)


def cli(args: list[str]):
    _load_commands()
    return CliRunner().invoke(root, args)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_plans_dp_cannot_cover_are_refused():
    numeric = BASE.replace('[variables.sex]', '[variables.age]\ntype = "numeric"\nrange = [0, 110]\n\n[variables.sex]')
    numeric = numeric.replace('variables = ["sex"]', 'variables = ["sex", "age"]')
    parse_plan(numeric)  # exact: fine
    with pytest.raises(PlanError, match="privacy: analysis 't1': numeric variable 'age'"):
        parse_plan(numeric + PRIVACY)
    cox = BASE + '\n[[analyses]]\nname = "m"\nkind = "cox"\nendpoint = "os"\ncovariates = ["sex"]\n'
    parse_plan(cox)  # exact: fine
    with pytest.raises(PlanError, match="privacy: .*cox"):
        parse_plan(cox + PRIVACY)
    with pytest.raises(PlanError, match="privacy.epsilon: missing"):
        parse_plan(BASE + "\n[privacy]\ndelta = 1e-6\n")
    with pytest.raises(PlanError, match="privacy.colour: unknown key"):
        parse_plan(BASE + "\n[privacy]\nepsilon = 1\ncolour = 1\n")


def test_the_privacy_table_is_part_of_the_plan_and_its_hash():
    plan = parse_plan(BASE + PRIVACY)
    assert plan_from_dict(json.loads(plan.canonical_json())) == plan
    assert json.loads(plan.canonical_json())["privacy"]["epsilon"] == 3.0
    assert plan.sha256 != parse_plan(BASE).sha256
    hash(plan)


def test_without_privacy_nothing_changes(lung_sites):
    plan = parse_plan(BASE)
    off = parse_plan(BASE + "\n[privacy]\nenabled = false\nepsilon = 1\n")
    assert off == plan and off.sha256 == plan.sha256 and "privacy" not in json.loads(plan.canonical_json())
    results, outcome = run_in_process(plan, lung_sites)
    again, _ = run_in_process(off, lung_sites)
    exact = sum_tallies(plan, lung_sites)
    assert np.array_equal(outcome.tallies.flatten(), exact.flatten())
    assert results["analyses"] == again["analyses"] == pooled_results(plan, exact, [])["analyses"]
    assert "privacy" not in results and all(isinstance(s["n"], int) for s in results["sites"])
    assert "Differentially private" not in render_report(results)[0]
    assert not any("dp_warning" in a for a in results["analyses"].values())


def test_fedsurv_run_labels_the_summary_and_the_report(lung_sites, tmp_path):
    plan = write(tmp_path / "dp.toml", BASE + PRIVACY)
    args = ["run", "--plan", str(plan), "--out", str(tmp_path / "out")]
    for s in lung_sites:
        args += ["--site", f"{s.name}={s.data}"]
    out = cli(args)
    assert out.exit_code == 0, out.output
    assert "DIFFERENTIALLY PRIVATE: epsilon 3, delta 1e-06" in out.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    html = (tmp_path / "out" / "report.html").read_text()
    sigma = results["privacy"]["sigma"]
    assert f"Differentially private release (\u03b5 = 3, \u03b4 = 1e-06, \u03c3 = {sigma:.3g} per cell, " \
           f"discrete Gaussian noise)" in html
    assert html.count('class="dp-label"') == len(results["analyses"])
    assert "withheld (DP)" in html
    # lung on 30-day bins at this sigma: sex group 2 holds about 1.6 deaths a bin against a noise SD
    # of about 3.3 per cell (coordinator.dp_warnings); the results, the summary and the report say so
    warning = results["privacy"]["warnings"]["os_by_sex"]
    assert warning == results["analyses"]["os_by_sex"]["dp_warning"]
    assert "2: from" in warning and "the grid is too fine for the noise" in warning
    assert f"noise warning: {warning}" in out.output
    assert "Grid and noise: " in html and "the grid is too fine for the noise" in html


def test_an_analysis_the_noise_makes_undefined_does_not_lose_the_release(lung_sites):
    """A noisy group total below 0 post-processes to an empty group: Gray's test is undefined
    there, and is reported so, while every other analysis of the (already paid for) release stands."""
    plan = parse_plan(BASE + '\n[[analyses]]\nname = "g"\nkind = "gray"\nendpoint = "os"\ngroups = "sex"\n' + PRIVACY)
    exact = sum_tallies(plan, lung_sites)
    arrays = {k: v.copy() for k, v in exact.arrays.items()}
    arrays["n"][:] = 0
    arrays["surv:os:sex"][1] = -1  # every cell of sex = 2 came out negative
    results = pooled_results(plan, Tallies(exact.blocks, arrays), [(f"s{i}", 0) for i in range(4)])
    assert results["analyses"]["g"] == {"kind": "gray", "undefined": "not defined on the noisy counts: "
                                        "Gray's test needs patients in at least two groups"}
    assert results["analyses"]["os"]["strata"]["all"]["at_times"]["estimate"][0] is not None
    assert "[g] gray: not defined on the noisy counts" in summarize(results)
    assert "Not reported: not defined on the noisy counts" in render_report(results)[0]


def test_the_coordinator_rejects_a_sum_whose_masks_did_not_cancel():
    """Under DP the exact checks cannot hold; the noisy-sum check still catches garbage."""
    from coordinator.aggregate import check_noisy
    from protocol.tallies import layout

    plan = parse_plan(BASE + PRIVACY)
    blocks = layout(plan)
    rng = np.random.default_rng(5)
    size = sum(b.size for b in blocks)
    garbage = Tallies.from_flat(blocks, np.concatenate([[0], rng.integers(-2**62, 2**62, size - 1)]))
    with pytest.raises(AggregationError, match="outside what noise can explain"):
        check_noisy(4)(plan, garbage, 0)
    plausible = Tallies.from_flat(blocks, np.concatenate([[0], rng.integers(0, 3, size - 1)]))
    check_noisy(4)(plan, plausible, 0)
    with pytest.raises(AggregationError, match="withheld patient counts"):
        check_noisy(4)(plan, plausible, 7)


MORE = """
[[analyses]]
name = "os_cif"
kind = "cif"
endpoint = "os"
times = [180, 360]

[[analyses]]
name = "os_gray"
kind = "gray"
endpoint = "os"
groups = "sex"

[[analyses]]
name = "os_rmst"
kind = "rmst"
endpoint = "os"
cause = "death"
groups = "sex"
tau = 720

[[analyses]]
name = "female"
kind = "proportion"
variable = "sex"
success = ["2"]
method = "wilson"
"""


def test_uncertainty_under_dp_includes_the_noise_and_says_how(lung_sites):
    """Every interval, standard error and p-value under DP includes the noise and is labelled so;
    nothing is withheld."""
    results, _ = run_in_process(parse_plan(BASE + MORE + PRIVACY), lung_sites)
    an = results["analyses"]
    lr = an["os_by_sex"]
    assert 0 <= lr["p"] <= 1 and lr["chisq_postprocessed"] is not None and "Wald test" in lr["dp_uncertainty"]
    assert all(0 <= c["p"] <= 1 for c in an["os_gray"]["causes"].values()) and "dp_uncertainty" in an["os_gray"]
    at = an["os_cif"]["strata"]["all"]["causes"]["death"]["at_times"]
    assert all(lo <= est <= hi for lo, est, hi in zip(at["lower"], at["estimate"], at["upper"]))
    assert all(s > 0 for s in at["std_err_noise"]) and "parametric bootstrap" in an["os_cif"]["dp_uncertainty"]
    rm = an["os_rmst"]
    assert rm["sentences"] and all(g["std_err"] > g["std_err_noise"] > 0 for g in rm["groups"].values())
    km_rmst = an["os"]["strata"]["all"]["rmst"]
    assert all(s is not None for s in km_rmst["std_err"]) and "dp_uncertainty" in km_rmst
    prop = an["female"]
    assert prop["lower"] < prop["estimate"] < prop["upper"] and "delta method" in prop["dp_uncertainty"]
    med = an["os"]["strata"]["all"]["median"]
    assert med["lower"] <= med["estimate"] <= med["upper"]
    assert results["privacy"]["withheld"] == []
    assert "Wald tests" in results["privacy"]["intervals"] and "Brookmeyer" in an["os"]["dp_uncertainty"]


def test_with_little_noise_the_dp_uncertainty_approaches_the_exact(lung_sites):
    """At epsilon 99 (Skellam shares, sigma 0.38 per cell) every DP interval and p-value is close to
    the exact (R-equal) one of the same data: the noise adds almost nothing."""
    tiny = PRIVACY.replace("epsilon = 3.0", "epsilon = 99.0").replace('postprocess = "isotonic"', 'below_floor = "skellam"')
    results, _ = run_in_process(parse_plan(BASE + MORE + tiny), lung_sites)
    exact = pooled_results(parse_plan(BASE + MORE), sum_tallies(parse_plan(BASE + MORE), lung_sites), [])
    assert results["privacy"]["sigma"] < 0.5
    an, ex = results["analyses"], exact["analyses"]
    # the log-rank score is sensitive to the tail: a phantom patient at the horizon accrues the whole
    # cumulative hazard (about 3 in lung) as expected events and moves chi-square by 1; even at
    # sigma 0.34 the noise adds a fifth to two thirds of the exact variance V. The exact p (0.0008)
    # stays small: below 0.2 unless the noise on the score falls 3 of its SDs short.
    assert an["os_by_sex"]["p"] < 0.2 and ex["os_by_sex"]["p"] < 0.001
    v, v_exact = an["os_by_sex"]["var"][0][0], ex["os_by_sex"]["var"][0][0]
    assert v_exact < v < 2 * v_exact
    assert an["os_gray"]["causes"]["death"]["p"] < 0.2 and ex["os_gray"]["causes"]["death"]["p"] < 0.002
    # estimates within 4 of their noise SEs of the exact ones, standard errors nearly the exact ones
    a_at, e_at = (r["os_cif"]["strata"]["all"]["causes"]["death"]["at_times"] for r in (an, ex))
    shift = np.subtract(a_at["estimate"], e_at["estimate"])
    assert (np.abs(shift) <= 4 * np.array(a_at["std_err_noise"]) + 1e-12).all()
    np.testing.assert_allclose(a_at["std_err"], e_at["std_err"], rtol=0.1)
    for g in ("1", "2"):
        a_g, e_g = an["os_rmst"]["groups"][g], ex["os_rmst"]["groups"][g]
        assert abs(a_g["estimate"] - e_g["estimate"]) <= 4 * a_g["std_err_noise"]
        assert 0.95 * e_g["std_err"] <= a_g["std_err"] <= 1.25 * e_g["std_err"]
    for col in ("lower", "upper"):
        assert an["female"][col] == pytest.approx(ex["female"][col], abs=0.01)
    # the median and its limits (Brookmeyer-Crowley on the noise-aware band) within a 30-day bin
    for col in ("estimate", "lower", "upper"):
        assert abs(an["os"]["strata"]["all"]["median"][col] - ex["os"]["strata"]["all"]["median"][col]) <= 30


def test_without_a_bootstrap_what_would_ignore_the_noise_is_withheld(lung_sites):
    """privacy.bootstrap = 0: only proportions (analytic) keep limits; every other interval,
    standard error and p-value would read noise as signal, so it is null and listed."""
    results, _ = run_in_process(parse_plan(BASE + MORE + PRIVACY.replace("bootstrap = 200", "bootstrap = 0")), lung_sites)
    an = results["analyses"]
    at = an["os"]["strata"]["all"]["at_times"]
    assert at["estimate"][0] is not None and all(v is None for v in at["lower"] + at["upper"] + at["std_err"])
    assert an["os_by_sex"]["p"] is None and an["os_gray"]["causes"]["death"]["p"] is None
    assert an["os_rmst"]["sentences"] == [] and an["os_rmst"]["groups"]["1"]["std_err"] is None
    assert all(v is None for v in an["os_cif"]["strata"]["all"]["causes"]["death"]["at_times"]["upper"])
    assert an["female"]["lower"] is not None and "delta method" in an["female"]["dp_uncertainty"]
    assert {w.split(":")[0] for w in results["privacy"]["withheld"]} == {"os", "os_by_sex", "os_gray", "os_rmst", "os_cif"}
    assert "privacy.bootstrap < 2" in results["privacy"]["intervals"]
    assert "[os_by_sex] log-rank" in summarize(results) and 'class="dp-label"' in render_report(results)[0]


def test_the_dp_example_plan_runs_under_the_example_policy(tmp_path):
    """fedsurv/examples/sarcoma_dp.toml on the demo consortium, every site under the example
    policy: no site refuses, the release spends the plan's epsilon, and overall survival at 12 and
    24 months lies within 5 of its noise-aware standard errors of the same plan without privacy.
    Its 36-month horizon keeps the overall-survival curve free of grid warnings (sigma 10.8 per
    cell, about 25 deaths a quarter and 250 patients still at risk at 36 months)."""
    from fedsurv.demo_data import write_demo_consortium

    root = Path(__file__).resolve().parents[1]
    files = write_demo_consortium(tmp_path / "data")
    text = (root / "fedsurv" / "examples" / "sarcoma_dp.toml").read_text()
    policy = root / "fedsurv" / "examples" / "policy.toml"
    sites = [SiteInput(n, data, mapping, policy) for n, (data, mapping) in files.items()]
    results, outcome = run_in_process(parse_plan(text), sites, audit_dir=tmp_path / "audit")
    exact, _ = run_in_process(parse_plan(text.replace("[privacy]\n", "[privacy]\nenabled = false\n")),
                              [SiteInput(n, data, mapping) for n, (data, mapping) in files.items()])
    assert not outcome.refusals and results["privacy"]["epsilon"] <= 3.0 * (1 + 1e-7)
    dp_os = results["analyses"]["overall_survival"]["strata"]["all"]["at_times"]
    ex_os = exact["analyses"]["overall_survival"]["strata"]["all"]["at_times"]
    for i in range(2):
        assert abs(dp_os["estimate"][i] - ex_os["estimate"][i]) <= 5 * dp_os["std_err"][i], (dp_os, ex_os)
    assert "overall_survival" not in results["privacy"]["warnings"]
