"""The first promise, end to end: `fedsurv run` over many sites equals R on the pooled rows.

Each fixture's data is split into sites (lung by its real institutions), run through the
whole protocol (site validation, tallies, signed query, masking, unmasking, estimators), and
every number of results.json is compared with R's (tests/fixtures/PROVENANCE.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from consortium import csv_for, plan_text, split_sites
from fedsurv.runner import run_in_process
from protocol.plan import parse_plan
from r_reference import as_float, expected

TOL = 1e-10


def close(ours, theirs, tol=TOL):
    a, b = as_float(list(ours)), as_float(list(theirs))
    assert a.shape == b.shape
    assert np.array_equal(np.isnan(a), np.isnan(b)), (a, b)
    ok = ~np.isnan(a)
    assert np.allclose(a[ok], b[ok], rtol=0, atol=tol), np.max(np.abs(a[ok] - b[ok]))


def run_case(case: str, conf_type: str, tmp_path, assign_col=None, n_sites=5):
    df = pd.read_csv(csv_for(case))
    if assign_col:
        codes = df[assign_col].fillna(-1).astype("category").cat.codes.to_numpy()
    else:
        codes = np.random.default_rng(7).integers(0, n_sites, len(df))
    sites = split_sites(df, codes, tmp_path / "sites")
    results, outcome = run_in_process(parse_plan(plan_text(case, conf_type)), sites)
    return results, outcome, len(sites)


CASES = [("lung_sex", "inst"), ("lung_inst", None), ("veteran_trt", "celltype"), ("colon_cr_rx", None)]


@pytest.mark.parametrize("case,assign", CASES)
@pytest.mark.parametrize("conf_type", ["log", "log-log", "plain"])
def test_km_and_logrank_equal_r(case, assign, conf_type, tmp_path):
    results, outcome, n_sites = run_case(case, conf_type, tmp_path, assign)
    assert len(results["sites"]) == n_sites >= 3
    r = expected(case)
    km = results["analyses"]["km"]["strata"]
    assert set(km) == set(r["strata"])
    for label, ours in km.items():
        theirs = r["strata"][label]["km"]
        assert ours["n"] == theirs["n"] and ours["n_event"] == theirs["n_events"]
        t, c = ours["table"], theirs["curve"]
        assert t["time"] == c["time"] and t["n_risk"] == c["n_risk"]
        assert t["n_event"] == c["n_event"] and t["n_censor"] == c["n_censor"]
        close(t["estimate"], c["surv"])
        close(t["std_err"], c["std_err_surv"])
        close(t["lower"], c["ci"][conf_type]["lower"])
        close(t["upper"], c["ci"][conf_type]["upper"])
        a, ra = ours["at_times"], theirs["at_times"]
        assert a["n_risk"] == ra["n_risk"] and a["n_event"] == ra["n_event"] and a["n_censor"] == ra["n_censor"]
        close(a["estimate"], ra["surv"])
        close(a["lower"], ra["ci"][conf_type]["lower"])
        close(a["upper"], ra["ci"][conf_type]["upper"])
        med = theirs["median"][conf_type]
        close([ours["median"]["estimate"], ours["median"]["lower"], ours["median"]["upper"]],
              [med["median"], med["lower"], med["upper"]])
        q = theirs["quantiles"][conf_type]
        close(ours["quantiles"]["estimate"], q["time"])
        close(ours["quantiles"]["lower"], q["lower"])
        close(ours["quantiles"]["upper"], q["upper"])
        close(ours["rmst"]["estimate"], theirs["rmst"]["rmean"])
        close(ours["rmst"]["std_err"], theirs["rmst"]["se"])
    lr, rl = results["analyses"]["logrank"], r["logrank"]["rho0"]
    close([lr["chisq"], lr["p"]], [rl["chisq"], rl["p"]])
    assert lr["df"] == rl["df"]
    close([lr["groups"][g]["observed"] for g in rl["groups"]], rl["observed"])
    close([lr["groups"][g]["expected"] for g in rl["groups"]], rl["expected"])


@pytest.mark.parametrize("conf_type", ["log", "log-log", "plain"])
def test_competing_risks_equal_r(conf_type, tmp_path):
    results, _, _ = run_case("colon_cr_rx", conf_type, tmp_path)
    r = expected("colon_cr_rx")
    for label, ours in results["analyses"]["cif"]["strata"].items():
        aj = r["strata"][label]["aalen_johansen"]
        for cause_name, code in (("recurrence", "1"), ("death", "2")):
            t = ours["causes"][cause_name]["table"]
            c = aj["curve"]
            assert t["time"] == c["time"] and t["n_risk"] == c["n_risk"]
            assert t["n_event"] == c["n_event"][code]
            close(t["estimate"], c["cif"][code]["est"])
            close(t["std_err"], c["cif"][code]["std_err"])
            close(t["lower"], c["cif"][code]["ci"][conf_type]["lower"])
            close(t["upper"], c["cif"][code]["ci"][conf_type]["upper"])
            a, ra = ours["causes"][cause_name]["at_times"], aj["at_times"]
            close(a["estimate"], ra["cif"][code]["est"])
            close(a["std_err"], ra["cif"][code]["std_err"])
        any_event = results["analyses"]["km_any"]["strata"][label]
        close(any_event["table"]["estimate"], r["strata"][label]["km_any_event"]["curve"]["surv"])
