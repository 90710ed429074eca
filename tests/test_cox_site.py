"""A site answering Cox rounds: its sums feed R's fit, and it refuses what its policy forbids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_cox_r import FIX, expected

from coordinator.cox import cox_fit
from protocol.errors import RefusedError
from site_node.cox_site import (
    Covariate,
    CoxSiteData,
    CoxSitePolicy,
    answer_round,
    check_pooled_bins,
    design_matrix,
)

CASE = "veteran_trt_karno_age_celltype_w1"
COVS = [Covariate("trt", center=1.5, range=(1, 2)), Covariate("karno", center=60, range=(0, 100)),
        Covariate("age", center=58, range=(18, 100)),
        Covariate("celltype", levels=("adeno", "large", "smallcell", "squamous"))]


def site_data(df: pd.DataFrame) -> CoxSiteData:
    X, terms, counts, outside = design_matrix({c.name: df[c.name].to_numpy() for c in COVS}, COVS)
    return CoxSiteData(time_bin=df["time"].to_numpy(np.int64), outcome=df["event"].to_numpy(),
                       X=X, terms=terms, level_counts=counts, out_of_range=outside)


@pytest.fixture(scope="module")
def veteran():
    return pd.read_csv(FIX / "data" / "veteran.csv")


def test_sites_with_a_policy_reproduce_r(veteran):
    # three sites by a fixed split; no bin needs checking against min_exits here (policy 1)
    policy = CoxSitePolicy(min_exits=1, max_xb_spread=20)
    sites = [site_data(veteran.iloc[k::3]) for k in range(3)]
    n_bins = int(veteran["time"].max()) + 1
    rounds = []

    def pooled(beta):
        rounds.append(beta)
        parts = [answer_round(s, beta, n_bins, round_no=len(rounds), policy=policy) for s in sites]
        return parts[0] + parts[1] + parts[2]

    fit = cox_fit(pooled, 6)
    ref = expected(CASE)["efron"]
    assert sites[0].terms == tuple(ref["terms"])
    assert np.max(np.abs(fit.coef - ref["coef"]) / np.abs(ref["coef"])) < 1e-10
    assert fit.iterations == ref["iter"] and len(rounds) == ref["iter"] + 1


def test_extreme_beta_refused(veteran):
    s = site_data(veteran.iloc[:60])
    beta = np.array([0, 0.5, 0, 0, 0, 0])   # karno spans 50 points: x'beta spread 25 > 10
    with pytest.raises(RefusedError, match="spread of x'beta"):
        answer_round(s, beta, 1000, policy=CoxSitePolicy())
    with pytest.raises(RefusedError, match="not finite"):
        answer_round(s, np.array([np.inf, 0, 0, 0, 0, 0]), 1000, policy=CoxSitePolicy())
    with pytest.raises(RefusedError, match="not finite"):
        answer_round(s, np.array([np.nan, 0, 0, 0, 0, 0]), 1000, policy=None)
    assert answer_round(s, np.array([0, 0.05, 0, 0, 0, 0]), 1000, policy=CoxSitePolicy()).n_exit.sum() == 60


def test_bin_with_one_exit_refused(veteran):
    s = site_data(veteran.iloc[:60])
    pooled = np.bincount(veteran["time"], minlength=1000)     # veteran at width 1: many single exits
    assert (pooled == 1).any()
    with pytest.raises(RefusedError, match="fewer than 2 exits"):
        answer_round(s, np.zeros(6), 1000, round_no=2, pooled_exits=pooled, policy=CoxSitePolicy())
    assert check_pooled_bins([0, 2, 5, 0, 3], CoxSitePolicy()) == []
    assert "bins 1" in check_pooled_bins([0, 1, 5], CoxSitePolicy())[0]


def test_small_site_small_level_and_range(veteran):
    tiny = site_data(veteran.iloc[:9])
    with pytest.raises(RefusedError, match="9 patients here"):
        answer_round(tiny, np.zeros(6), 1000, policy=CoxSitePolicy())
    rows = pd.concat([veteran[veteran.celltype == "large"].iloc[:2], veteran[veteran.celltype != "large"]])
    with pytest.raises(RefusedError, match="level 'large' of celltype has 2 patients"):
        answer_round(site_data(rows), np.zeros(6), 1000, policy=CoxSitePolicy())
    odd = veteran.copy()
    odd.loc[0, "karno"] = 140
    with pytest.raises(RefusedError, match="1 values of karno outside"):
        answer_round(site_data(odd), np.zeros(6), 1000, policy=CoxSitePolicy())
    balanced = pd.concat([veteran[veteran.celltype == c].iloc[:4] for c in ("adeno", "large", "smallcell", "squamous")])
    with pytest.raises(RefusedError, match="6 model terms for 16 patients"):
        answer_round(site_data(balanced), np.zeros(6), 1000, policy=CoxSitePolicy())
    with pytest.raises(RefusedError, match="round 41"):
        answer_round(site_data(veteran), np.zeros(6), 1000, round_no=41, policy=CoxSitePolicy(max_xb_spread=99))
