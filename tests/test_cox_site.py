"""A site answering Cox rounds: its sums feed R's fit, and it refuses what its policy forbids.

The site's own path: the plan's model read from a data file (site_node.prepare), its rows
(site_node.regression.model_data), its checks (model_reasons) and its sums (model_values).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from regression_plans import model, plan_text
from test_cox_r import FIX, expected

from coordinator.cox import CoxBinSums, cox_fit
from protocol.errors import DataError
from protocol.plan import parse_plan
from site_node.cox_site import CoxSitePolicy, check_pooled_bins
from site_node.prepare import prepare_site_data
from site_node.regression import ModelData, model_data, model_reasons, model_values

CASE = "veteran_trt_karno_age_celltype_w1"
PLAN = parse_plan(plan_text(CASE, model("m", CASE), centers={"trt": 1.5, "karno": 60, "age": 58}))
MODEL = PLAN.analyses[0]
N_BINS = PLAN.n_bins
DEFAULT = CoxSitePolicy()


@pytest.fixture(scope="module")
def veteran():
    return pd.read_csv(FIX / "data" / "veteran.csv")


@pytest.fixture
def site_data(tmp_path):
    def rows_of(df: pd.DataFrame) -> ModelData:
        path = tmp_path / f"site{len(list(tmp_path.iterdir()))}.csv"
        df.to_csv(path, index=False)
        return model_data(PLAN, MODEL, prepare_site_data(PLAN, path))

    return rows_of


def sums(md: ModelData, beta) -> CoxBinSums:
    return CoxBinSums.from_flat(model_values(PLAN, MODEL, md, np.asarray(beta, dtype=float)), N_BINS, 6)


def refusals(md: ModelData, beta, round_no: int = 1, pooled_exits=None, policy=DEFAULT) -> str:
    return "; ".join(model_reasons(MODEL, md, np.asarray(beta, dtype=float), round_no, pooled_exits, policy))


def test_sites_with_a_policy_reproduce_r(veteran, site_data):
    # three sites by a fixed split; no bin needs checking against min_exits here (policy 1)
    policy = CoxSitePolicy(min_exits=1, max_xb_spread=20)
    sites = [site_data(veteran.iloc[k::3]) for k in range(3)]
    rounds = []

    def pooled(beta):
        rounds.append(beta)
        assert all(refusals(s, beta, len(rounds), policy=policy) == "" for s in sites)
        parts = [sums(s, beta) for s in sites]
        return parts[0] + parts[1] + parts[2]

    fit = cox_fit(pooled, 6)
    ref = expected(CASE)["efron"]
    assert sites[0].terms == tuple(ref["terms"])
    assert np.max(np.abs(fit.coef - ref["coef"]) / np.abs(ref["coef"])) < 1e-10
    assert fit.iterations == ref["iter"] and len(rounds) == ref["iter"] + 1


def test_extreme_beta_refused(veteran, site_data):
    s = site_data(veteran.iloc[:60])
    beta = np.array([0, 0.5, 0, 0, 0, 0])   # karno spans 50 points: x'beta spread 25 > 10
    assert "spread of x'beta" in refusals(s, beta)
    assert "not finite" in refusals(s, [np.inf, 0, 0, 0, 0, 0])
    assert "not finite" in refusals(s, [np.nan, 0, 0, 0, 0, 0], policy=None)
    assert refusals(s, [0, 0.05, 0, 0, 0, 0]) == ""
    assert sums(s, [0, 0.05, 0, 0, 0, 0]).n_exit.sum() == 60


def test_bin_with_one_exit_refused(veteran, site_data):
    s = site_data(veteran.iloc[:60])
    pooled = np.bincount(veteran["time"], minlength=N_BINS)     # veteran at width 1: many single exits
    assert (pooled == 1).any()
    assert "fewer than 2 exits" in refusals(s, np.zeros(6), round_no=2, pooled_exits=pooled)
    assert check_pooled_bins([0, 2, 5, 0, 3], DEFAULT) == []
    assert "bins 1" in check_pooled_bins([0, 1, 5], DEFAULT)[0]


def test_small_site_small_level_and_range(veteran, site_data, tmp_path: Path):
    assert "9 patients here" in refusals(site_data(veteran.iloc[:9]), np.zeros(6))
    rows = pd.concat([veteran[veteran.celltype == "large"].iloc[:2], veteran[veteran.celltype != "large"]])
    assert "level 'large' of celltype has 2 patients" in refusals(site_data(rows), np.zeros(6))
    # a value outside the declared range stops the site's data before any model is formed
    odd = veteran.copy()
    odd.loc[0, "karno"] = 140
    odd.to_csv(tmp_path / "odd.csv", index=False)
    with pytest.raises(DataError, match="karno"):
        prepare_site_data(PLAN, tmp_path / "odd.csv")
    balanced = pd.concat([veteran[veteran.celltype == c].iloc[:4] for c in ("adeno", "large", "smallcell", "squamous")])
    assert "6 model terms for 16 patients" in refusals(site_data(balanced), np.zeros(6))
    assert "round 41" in refusals(site_data(veteran), np.zeros(6), round_no=41,
                                  policy=CoxSitePolicy(max_xb_spread=99))
