"""Site tallies: binning on the grid, censoring at the horizon, and additivity over sites."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.plan import parse_plan
from protocol.tallies import Tallies, layout
from site_node.prepared import PreparedData
from site_node.tally import compute_tallies, time_bins

PLAN_TEXT = """
[plan]
title = "t"
bin_width = 30
horizon = 100
[endpoints.e]
time = "t"
event = "s"
causes = { 1 = "a", 2 = "b" }
[variables.g]
levels = ["x", "y"]
missing = "drop"
[variables.age]
type = "numeric"
decimals = 1
range = [0, 120]
[[analyses]]
name = "c"
kind = "cif"
endpoint = "e"
strata = ["g"]
[[analyses]]
name = "d"
kind = "describe"
variables = ["g", "age"]
"""
PLAN = parse_plan(PLAN_TEXT)


def data(t, s, g, age):
    age = np.array(age, dtype=float)
    miss = np.isnan(age)
    return PreparedData(source="mem", n_rows=len(t), times={"e": np.array(t, float)},
                        outcomes={"e": np.array(s)}, levels={"g": np.array(g)},
                        fixed={"age": np.where(miss, 0, np.round(age * 10)).astype(np.int64)},
                        missing={"age": miss})


def test_bins_are_ceil_of_t_over_w_and_horizon_censors():
    b, o = time_bins(PLAN, np.array([0, 0.5, 30, 30.0001, 60, 99, 100, 250.0]), np.array([1, 1, 2, 1, 1, 2, 1, 1]))
    # labels: 0 -> 0, (0, 30] -> 30, (30, 60] -> 60, (60, 90] -> 90, (90, 120] -> 120 (horizon 100 lies in it)
    assert b.tolist() == [0, 1, 1, 2, 2, 4, 4, 4]
    assert o.tolist() == [1, 1, 2, 1, 1, 2, 1, 0]   # 250 > horizon: censored at the horizon


def test_tallies_by_hand_and_additive():
    d1 = data([10, 40, 95], [1, 0, 2], [0, 1, -1], [50.0, np.nan, 61.25])
    d2 = data([0, 70], [2, 1], [1, 1], [40.0, 30.0])
    t1, t2 = compute_tallies(PLAN, d1), compute_tallies(PLAN, d2)
    h = t1["surv:e:g"]
    assert h.shape == (2, 5, 3) and h.sum() == 2
    assert h[0, 1, 1] == 1 and h[1, 2, 0] == 1        # x: t=10 cause a; y: t=40 censored
    assert t1["dropped:e:g"].tolist() == [1]            # missing g, plan says drop: counted
    assert t1["count:g"].tolist() == [1, 1, 1]          # x, y, missing
    # fixed point at 1 decimal: 500 and round(612.5) = 612 (banker's rounding of numpy)
    assert t1["moments:age"].tolist() == [2, 500 + 612, 500**2 + 612**2, 1]
    total = t1 + t2
    assert np.array_equal(total.flatten(), t1.flatten() + t2.flatten())
    again = Tallies.from_flat(layout(PLAN), total.flatten())
    assert all(np.array_equal(again[k], total[k]) for k in total.arrays)
    assert total.n == 5


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), width=st.sampled_from([1, 2, 7, 30, 0.5, 0.1]),
       horizon=st.sampled_from([50, 97, 365]), whole=st.booleans(), n=st.integers(1, 300_000))
def test_binning_equals_the_plan_rule_on_whole_and_fractional_times(seed, width, horizon, whole, n):
    """Whatever path compute_tallies takes (integer fast path, pieces), each row lands in bin
    ceil(min(t, horizon) / w) with its outcome, or censored at the horizon, as the plan says."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2 * horizon, n).astype(float) if whole else np.round(rng.uniform(0, 2 * horizon, n), 3)
    s = rng.integers(0, 3, n)
    g = rng.integers(-1, 2, n)
    plan = parse_plan(PLAN_TEXT.replace("bin_width = 30", f"bin_width = {width}")
                      .replace("horizon = 100", f"horizon = {horizon}"))
    got = compute_tallies(plan, data(t, s, g, np.full(n, 40.0)))
    expect = np.zeros((2, plan.n_bins, 3), dtype=np.int64)
    b = np.ceil(np.minimum(t, horizon) / width - 1e-9).astype(np.int64)
    o = np.where(t > horizon, 0, s)
    keep = g >= 0
    np.add.at(expect, (g[keep], b[keep], o[keep]), 1)
    assert np.array_equal(got["surv:e:g"], expect)
    assert got["dropped:e:g"][0] == int((~keep).sum())
