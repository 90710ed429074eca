"""Site tallies: binning on the grid, censoring at the horizon, and additivity over sites."""

import numpy as np

from protocol.plan import parse_plan
from protocol.tallies import Tallies, layout
from site_node.prepared import PreparedData
from site_node.tally import compute_tallies, time_bins

PLAN = parse_plan("""
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
""")


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
