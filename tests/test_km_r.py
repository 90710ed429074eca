"""Kaplan-Meier from pooled histograms against R's survival 3.5-3 (tests/fixtures, PROVENANCE.md).

Every fixture case and stratum (including "all"): the curve, the values at the report times,
the quartiles and the median, for each confidence-interval type. Floats within 1e-10, counts
exactly, and R's NA (null; also R's Inf, which the fixtures write as null) exactly where our
value is not finite.
"""

from __future__ import annotations

import numpy as np
import pytest

import r_reference as rr
from coordinator.km import CONF_TYPES, kaplan_meier, km_at_times, km_median, km_quantiles

TOL = 1e-10

# (case, stratum, fixture key): "km" counts code 1 as the event, other codes as censored
# (R's Surv(time, event == 1)); "km_any_event" counts every nonzero code (event != 0).
CURVES = [
    (case, stratum, key)
    for case in rr.CASES
    for stratum in rr.strata(case)
    for key in ("km", "km_any_event")
    if key in rr.expected(case)["strata"][stratum]
]
IDS = [f"{c}-{s}-{k}" for c, s, k in CURVES]


def counts(case: str, stratum: str, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h = rr.histogram(case, stratum)
    event = h.counts[:, 1] if key == "km" else h.counts[:, 1:].sum(axis=1)
    return h.time, event, h.counts.sum(axis=1) - event


def fit(case: str, stratum: str, key: str, conf_type: str = "log"):
    time, event, censor = counts(case, stratum, key)
    return kaplan_meier(time, event, censor, conf_level=0.95, conf_type=conf_type)


def assert_r(ours, r_values, what: str, exact: bool = False) -> None:
    ours = np.atleast_1d(np.asarray(ours, dtype=float))
    theirs = rr.as_float(r_values if isinstance(r_values, list) else [r_values])
    assert ours.shape == theirs.shape, what
    missing = ~np.isfinite(ours)
    np.testing.assert_array_equal(missing, np.isnan(theirs), err_msg=f"{what}: NA pattern")
    if exact:
        np.testing.assert_array_equal(ours[~missing], theirs[~missing], err_msg=what)
    else:
        np.testing.assert_allclose(ours[~missing], theirs[~missing], rtol=0, atol=TOL, err_msg=what)


@pytest.mark.parametrize("case,stratum,key", CURVES, ids=IDS)
def test_curve(case, stratum, key):
    r = rr.expected(case)["strata"][stratum][key]
    curve = r["curve"]
    for conf_type in CONF_TYPES:
        t = fit(case, stratum, key, conf_type)
        assert t.n_risk.dtype == t.n_event.dtype == t.n_censor.dtype == np.int64
        assert_r(t.time, curve["time"], "time", exact=True)
        assert_r(t.n_risk, curve["n_risk"], "n_risk", exact=True)
        assert_r(t.n_event, curve["n_event"], "n_event", exact=True)
        assert_r(t.n_censor, curve["n_censor"], "n_censor", exact=True)
        assert_r(t.estimate, curve["surv"], "surv")
        assert_r(t.std_err, curve["std_err_surv"], "std_err_surv")
        assert_r(t.std_err_log, curve["std_err_log_surv"], "std_err_log_surv")
        assert_r(t.lower, curve["ci"][conf_type]["lower"], f"{conf_type} lower")
        assert_r(t.upper, curve["ci"][conf_type]["upper"], f"{conf_type} upper")
    assert int(t.n_risk[0]) == r["n"]
    assert int(t.n_event.sum()) == r["n_events"]


@pytest.mark.parametrize("case,stratum,key", CURVES, ids=IDS)
@pytest.mark.parametrize("conf_type", CONF_TYPES)
def test_at_times(case, stratum, key, conf_type):
    r = rr.expected(case)["strata"][stratum][key]["at_times"]
    times = rr.expected(case)["meta"]["times"]
    at = km_at_times(fit(case, stratum, key, conf_type), times, conf_level=0.95, conf_type=conf_type)
    assert_r(at.time, r["time"], "time", exact=True)
    assert_r(at.n_risk, r["n_risk"], "n_risk", exact=True)
    assert_r(at.n_event, r["n_event"], "n_event", exact=True)
    assert_r(at.n_censor, r["n_censor"], "n_censor", exact=True)
    assert_r(at.estimate, r["surv"], "surv")
    assert_r(at.std_err, r["std_err_surv"], "std_err_surv")
    assert_r(at.lower, r["ci"][conf_type]["lower"], "lower")
    assert_r(at.upper, r["ci"][conf_type]["upper"], "upper")


@pytest.mark.parametrize("case,stratum,key", CURVES, ids=IDS)
@pytest.mark.parametrize("conf_type", CONF_TYPES)
def test_quantiles(case, stratum, key, conf_type):
    r = rr.expected(case)["strata"][stratum][key]["quantiles"][conf_type]
    q = km_quantiles(fit(case, stratum, key, conf_type), r["probs"], conf_level=0.95, conf_type=conf_type)
    assert_r(q.probs, r["probs"], "probs", exact=True)
    assert_r(q.estimate, r["time"], "quantile")
    assert_r(q.lower, r["lower"], "lower")
    assert_r(q.upper, r["upper"], "upper")


@pytest.mark.parametrize("case,stratum,key", CURVES, ids=IDS)
@pytest.mark.parametrize("conf_type", CONF_TYPES)
def test_median(case, stratum, key, conf_type):
    r = rr.expected(case)["strata"][stratum][key]["median"][conf_type]
    m = km_median(fit(case, stratum, key, conf_type), conf_level=0.95, conf_type=conf_type)
    assert_r(m.estimate, r["median"], "median")
    assert_r(m.lower, r["lower"], "lower")
    assert_r(m.upper, r["upper"], "upper")


def test_fixtures_cover_the_differences_between_median_rules():
    """R's two median rules differ on lung inst 33 (a flat at S = 0.5 to the last censoring):
    summary()$table says 105, quantile() the midpoint 139. Both are matched above; this pins
    that the fixtures really exercise the difference."""
    r = rr.expected("lung_inst")["strata"]["33"]["km"]
    assert r["median"]["log"]["median"] == 105
    assert r["quantiles"]["log"]["time"][1] == 139
    t = fit("lung_inst", "33", "km")
    assert km_median(t).estimate == 105
    assert km_quantiles(t, (0.5,)).estimate[0] == 139


def test_empty_rows_are_dropped_and_zero_padding_changes_nothing():
    time, event, censor = counts("lung_sex", "2", "km")
    padded = kaplan_meier(
        np.concatenate([time, time[-1] + np.arange(1, 4)]),
        np.concatenate([event, [0, 0, 0]]),
        np.concatenate([censor, [0, 0, 0]]),
    )
    plain = kaplan_meier(time, event, censor)
    for name in ("time", "n_risk", "n_event", "n_censor", "estimate", "std_err"):
        np.testing.assert_array_equal(getattr(padded, name), getattr(plain, name))


def test_invalid_input_is_refused():
    with pytest.raises(ValueError, match="increasing"):
        kaplan_meier(np.array([0.0, 2.0, 1.0]), np.array([0, 1, 1]), np.array([0, 0, 0]))
    with pytest.raises(ValueError, match="negative"):
        kaplan_meier(np.array([0.0, 1.0]), np.array([0, -1]), np.array([0, 2]))
    with pytest.raises(ValueError, match="conf_type"):
        kaplan_meier(np.array([0.0, 1.0]), np.array([0, 1]), np.array([0, 2]), conf_type="logit")


def four_deaths():
    # Deaths at 1, 2, 3, 4 of four patients: S = 3/4, 1/2, 1/4, 0 (R: survfit(Surv(1:4) ~ 1)).
    return kaplan_meier(np.arange(5.0), np.array([0, 1, 1, 1, 1]), np.zeros(5, dtype=np.int64))


def test_midpoint_rule_by_hand():
    # 1 - S equals 0.25, 0.5, 0.75 exactly on [1, 2), [2, 3), [3, 4): the midpoints.
    q = km_quantiles(four_deaths(), (0.25, 0.5, 0.75, 1.0))
    np.testing.assert_array_equal(q.estimate, [1.5, 2.5, 3.5, 4.0])
    assert km_median(four_deaths()).estimate == 2.5


def test_report_times_by_hand():
    t = four_deaths()
    at = km_at_times(t, [10.0, 0.0, 2.5])  # sorted as R sorts them
    np.testing.assert_array_equal(at.time, [0.0, 2.5, 10.0])
    np.testing.assert_array_equal(at.n_risk, [4, 2, 0])       # #{T >= t}
    np.testing.assert_array_equal(at.n_event, [0, 2, 2])      # in (previous time, t]
    np.testing.assert_array_equal(at.estimate, [1.0, 0.5, 0.0])
    # Greenwood at 2.5: 1/(4*3) + 1/(3*2) = 1/4, so SE(S) = 0.5 * 0.5; NA once S = 0
    assert at.std_err[1] == pytest.approx(0.25, abs=1e-15)
    assert at.std_err[0] == 0.0 and np.isnan(at.std_err[2])
    assert (at.lower[0], at.upper[0]) == (1.0, 1.0)
