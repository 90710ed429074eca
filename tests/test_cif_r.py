"""Aalen-Johansen cumulative incidence against R (survival 3.5-3 survfit, cmprsk 2.2-11 cuminc).

References are the fixtures in tests/fixtures (see PROVENANCE.md): survfit's multi-state
curve (estimate, infinitesimal-jackknife standard error, limits of all three types), its
summary at the report times, and cuminc's estimate and Gray variance. Besides R, two closed
forms: with a single cause 1 - AJ is the Kaplan-Meier estimate (a product of fractions),
and the jackknife variance is the sum of squared per-patient derivatives of the estimate
with respect to the patient's weight, computed here patient by patient by complex-step
differentiation (exact to rounding), without the cell grouping the estimator relies on.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from coordinator.cif import IncidenceTable, aalen_johansen, cif_at_times, confidence_limits
from r_reference import CASES, as_float, expected, histogram, rows, strata

TOL = 1e-10
CONF_TYPES = ("log", "log-log", "plain")
STRATA = [(case, s) for case in CASES for s in strata(case)]
SINGLE_CAUSE = [(case, s) for case, s in STRATA if case != "colon_cr_rx"]


def close(ours, r, tol=TOL):
    np.testing.assert_allclose(np.asarray(ours, dtype=float), as_float(r), rtol=0, atol=tol)


def fit(case: str, stratum: str, **kw) -> tuple[IncidenceTable, ...]:
    h = histogram(case, stratum)
    return aalen_johansen(h.time, h.counts, **kw)


@pytest.mark.parametrize("conf_type", CONF_TYPES)
@pytest.mark.parametrize("case,stratum", STRATA)
def test_curve_equals_survfit(case, stratum, conf_type):
    ref = expected(case)["strata"][stratum]["aalen_johansen"]["curve"]
    tables = fit(case, stratum, conf_type=conf_type)
    assert [t.cause for t in tables] == [int(c) for c in expected(case)["meta"]["causes"]]
    for t in tables:
        k = str(t.cause)
        assert t.time.tolist() == ref["time"]
        assert t.n_risk.dtype == np.int64 and t.n_risk.tolist() == ref["n_risk"]
        assert t.n_event.tolist() == ref["n_event"][k]
        assert t.n_censor.tolist() == ref["n_censor"]
        close(t.estimate, ref["cif"][k]["est"])
        close(t.std_err, ref["cif"][k]["std_err"])
        close(t.lower, ref["cif"][k]["ci"][conf_type]["lower"])
        close(t.upper, ref["cif"][k]["ci"][conf_type]["upper"])


@pytest.mark.parametrize("conf_type", CONF_TYPES)
@pytest.mark.parametrize("case,stratum", STRATA)
def test_at_times_equals_summary(case, stratum, conf_type):
    ref = expected(case)["strata"][stratum]["aalen_johansen"]["at_times"]
    for t in fit(case, stratum, conf_type=conf_type):
        k = str(t.cause)
        at = cif_at_times(t, expected(case)["meta"]["times"], conf_type=conf_type)
        assert at.time.tolist() == ref["time"]
        assert at.n_risk.tolist() == ref["n_risk"]
        assert at.n_event.tolist() == ref["n_event"][k]
        assert at.n_censor.tolist() == ref["n_censor"]
        close(at.estimate, ref["cif"][k]["est"])
        close(at.std_err, ref["cif"][k]["std_err"])
        close(at.lower, ref["cif"][k]["ci"][conf_type]["lower"])
        close(at.upper, ref["cif"][k]["ci"][conf_type]["upper"])


@pytest.mark.parametrize("case,stratum", STRATA)
def test_gray_variance_equals_cuminc(case, stratum):
    for t in fit(case, stratum, variance="gray"):
        ref = expected(case)["strata"][stratum]["cmprsk"][str(t.cause)]
        # cuminc's step function read by timepoints() at every time of the stratum
        assert t.time.tolist() == ref["time"]
        close(t.estimate, ref["est"])
        close(t.std_err ** 2, ref["var"])
        # ... and at the report times: R gives NA past the stratum's last time, where
        # survfit's summary(extend = TRUE) convention carries the last value on.
        at = cif_at_times(t, ref["at_times"]["time"])
        r_var = as_float(ref["at_times"]["var"])
        assert np.array_equal(np.isnan(r_var), at.time > t.time[-1])
        inside = ~np.isnan(r_var)
        close(at.estimate[inside], np.asarray(ref["at_times"]["est"], dtype=object)[inside])
        close(at.std_err[inside] ** 2, r_var[inside])


@pytest.mark.parametrize("case,stratum", SINGLE_CAUSE)
def test_single_cause_is_one_minus_kaplan_meier(case, stratum):
    (t,) = fit(case, stratum)
    km = expected(case)["strata"][stratum]["km"]["curve"]
    assert t.time.tolist() == km["time"] and t.n_risk.tolist() == km["n_risk"]
    close(1.0 - t.estimate, km["surv"], tol=1e-14)
    # The same identity against a Kaplan-Meier computed here in exact rational arithmetic.
    s, exact = Fraction(1), []
    for n, d in zip(t.n_risk.tolist(), t.n_event.tolist()):
        s *= Fraction(n - d, n)
        exact.append(float(1 - s))
    np.testing.assert_allclose(t.estimate, exact, rtol=0, atol=1e-14)


@pytest.mark.parametrize("case,stratum", SINGLE_CAUSE)
def test_single_cause_standard_error_equals_event_free_state(case, stratum):
    """With one cause the incidence is 1 - S, so survfit's IJ error of the event-free state applies."""
    (t,) = fit(case, stratum)
    close(t.std_err, expected(case)["strata"][stratum]["aalen_johansen"]["curve"]["event_free"]["std_err"])


def _complex_step_variance(time: np.ndarray, event: np.ndarray, n_causes: int) -> np.ndarray:
    """Sum over patients of (dF_k(t_j) / dw_i)^2 at every distinct time, shape (times, K).

    Each patient's weight gets an imaginary perturbation ih; the weighted Aalen-Johansen
    estimate is analytic in the weights, so Im F / h is the derivative to rounding.
    """
    h = 1e-30
    n = len(time)
    utimes = np.unique(time)
    weights = np.ones((n, n), dtype=complex) + 1j * h * np.eye(n)   # row i perturbs patient i
    at_risk = weights @ (time[:, None] >= utimes[None, :])          # (n, times)
    s = np.ones(n, dtype=complex)
    inc = np.zeros((n, n_causes), dtype=complex)
    out = np.zeros((len(utimes), n_causes))
    for j, u in enumerate(utimes):
        dk = np.stack([weights @ ((time == u) & (event == k)) for k in range(1, n_causes + 1)], axis=1)
        inc = inc + s[:, None] * dk / at_risk[:, j:j + 1]
        s = s * (1 - dk.sum(axis=1) / at_risk[:, j])
        out[j] = np.sum((inc.imag / h) ** 2, axis=0)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_ij_variance_equals_per_patient_jackknife(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 30))
    time = rng.integers(1, 12, size=n).astype(float)
    event = rng.integers(0, 3, size=n)
    if seed % 2 == 0:
        # The last patients all fail, so S reaches 0; for even seeds from one cause only,
        # which puts that incidence at 1 with variance 0 (where cancellation matters most).
        late = time == time.max()
        event[late] = 1 if seed % 4 == 0 else rng.integers(1, 3, size=late.sum())
    counts = np.zeros((13, 3), dtype=np.int64)
    np.add.at(counts, (time.astype(int), event), 1)
    tables = aalen_johansen(np.arange(13.0), counts)
    ref = _complex_step_variance(time, event, 2)
    assert tables[0].time.tolist() == np.unique(time).tolist()
    for k, t in enumerate(tables):
        np.testing.assert_allclose(t.std_err, np.sqrt(ref[:, k]), rtol=0, atol=1e-13)


def test_limits_follow_survfit_confint():
    """Undefined limits where R's are: log at p = 0, log-log at p = 0 or 1; plain is clipped."""
    p = np.array([0.0, 0.3, 1.0, 0.3])
    se = np.array([0.0, 0.2, 0.0, 0.0])
    lo, up = confidence_limits(p, se, 0.95, "log")
    assert np.isnan(lo[0]) and np.isnan(up[0]) and up[1] == 1.0 and lo[2] == up[2] == 1.0
    assert lo[3] == up[3] == 0.3
    lo, up = confidence_limits(p, se, 0.95, "log-log")
    assert np.isnan(lo[[0, 2]]).all() and np.isnan(up[[0, 2]]).all()
    z = 1.959963984540054
    assert lo[1] == pytest.approx(0.3 ** np.exp(-z * 0.2 / 0.3 / np.log(0.3)), abs=1e-15)
    lo, up = confidence_limits(p, se, 0.95, "plain")
    assert lo[1] == 0.0 and up[1] == pytest.approx(0.3 + z * 0.2, abs=1e-15)
    assert lo[0] == up[0] == 0.0


def test_empty_bins_and_zero_rows_do_not_change_the_curve():
    df = rows("colon_cr_rx")
    h = histogram("colon_cr_rx")
    padded = np.vstack([h.counts, np.zeros((50, 3), dtype=np.int64)])
    a = aalen_johansen(h.time, h.counts)
    b = aalen_johansen(np.arange(len(padded), dtype=float), padded)
    for x, y in zip(a, b):
        assert np.array_equal(x.estimate, y.estimate) and np.array_equal(x.std_err, y.std_err)
    assert int(a[0].n_risk[0]) == len(df)


def test_report_times_before_first_and_after_last_time():
    counts = np.zeros((6, 3), dtype=np.int64)
    counts[2, 1] = 1          # t = 2: cause 1
    counts[3, 0] = 1          # t = 3: censored
    counts[4, 2] = 2          # t = 4: two of cause 2
    t1, t2 = aalen_johansen(np.arange(6.0), counts)
    at = cif_at_times(t1, [1, 2, 3.5, 10])
    assert at.n_risk.tolist() == [4, 4, 2, 0]
    assert at.n_event.tolist() == [0, 1, 0, 0] and at.n_censor.tolist() == [0, 0, 1, 0]
    assert at.estimate.tolist() == [0.0, 0.25, 0.25, 0.25]
    assert at.lower[0] == at.upper[0] == 0.0
    at2 = cif_at_times(t2, [3, 10])
    assert at2.estimate.tolist() == [0.0, 0.75] and np.isnan(at2.lower[0])


def test_bad_arguments_are_refused():
    counts = np.ones((3, 2), dtype=np.int64)
    with pytest.raises(ValueError, match="conf_type"):
        aalen_johansen(np.arange(3.0), counts, conf_type="logit")
    with pytest.raises(ValueError, match="variance"):
        aalen_johansen(np.arange(3.0), counts, variance="greenwood")
    with pytest.raises(ValueError, match="negative"):
        aalen_johansen(np.arange(3.0), -counts)
    with pytest.raises(ValueError, match="shape"):
        aalen_johansen(np.arange(4.0), counts)
    (t,) = aalen_johansen(np.arange(3.0), counts)
    with pytest.raises(ValueError, match="increasing"):
        cif_at_times(t, [2, 1])


def test_a_stratum_without_patients_gives_empty_curves():
    for variance in ("ij", "gray"):
        tables = aalen_johansen(np.arange(4.0), np.zeros((4, 3), dtype=np.int64), variance=variance)
        assert [len(t.time) for t in tables] == [0, 0]
    at = cif_at_times(tables[0], [1, 2])
    assert at.n_risk.tolist() == [0, 0] and at.estimate.tolist() == [0.0, 0.0]
