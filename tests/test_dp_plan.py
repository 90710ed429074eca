"""The plan's [privacy] table, what DP covers, and the noise each site adds."""

from __future__ import annotations

import math

import pytest

from protocol.dp_accounting import sigma_for_epsilon
from protocol.dp_plan import (
    PrivacyPlanError,
    PrivacySpec,
    dp_refusals,
    histograms_per_patient,
    noise_parameters,
    parse_privacy,
)
from dp_fixtures import HEAD, PLAN
from protocol.plan import parse_plan

def test_absent_empty_or_disabled_is_off():
    assert parse_privacy(None) is None
    assert parse_privacy({}) is None
    assert parse_privacy({"enabled": False, "epsilon": 1.0}) is None


def test_full_table_and_defaults():
    spec = parse_privacy({"epsilon": 1})
    assert spec == PrivacySpec(epsilon=1.0, delta=1e-6, colluding_sites=0, deduplicated=False,
                               below_floor="raise", postprocess="clip", bootstrap=400)
    assert spec.copies == 2
    spec = parse_privacy({"epsilon": 3.0, "delta": 1e-7, "colluding_sites": 2, "deduplicated": True,
                          "below_floor": "skellam", "postprocess": "isotonic", "bootstrap": 100})
    assert (spec.epsilon, spec.delta, spec.colluding_sites, spec.copies) == (3.0, 1e-7, 2, 1)
    assert parse_privacy(spec.to_dict()) == spec


@pytest.mark.parametrize("table,message", [
    ({"delta": 1e-6}, "privacy.epsilon: missing"),
    ({"epsilon": 0}, "privacy.epsilon: expected a number above 0"),
    ({"epsilon": -1}, "privacy.epsilon"),
    ({"epsilon": float("inf")}, "privacy.epsilon"),
    ({"epsilon": True}, "privacy.epsilon"),
    ({"epsilon": 1, "delta": 0.5}, "privacy.delta: expected a number above 0 and below 0.01"),
    ({"epsilon": 1, "colluding_sites": -1}, "privacy.colluding_sites"),
    ({"epsilon": 1, "colluding_sites": 1.5}, "privacy.colluding_sites"),
    ({"epsilon": 1, "deduplicated": "yes"}, "privacy.deduplicated: expected true or false"),
    ({"epsilon": 1, "below_floor": "round"}, "privacy.below_floor: expected one of raise, skellam"),
    ({"epsilon": 1, "postprocess": "none"}, "privacy.postprocess: expected one of clip, isotonic"),
    ({"epsilon": 1, "sigma": 3}, "privacy.sigma: unknown key"),
    ({"enabled": "no"}, "privacy.enabled: expected true or false"),
    ([1], "privacy: expected a [privacy] table"),
])
def test_bad_tables_name_the_key(table, message):
    with pytest.raises(PrivacyPlanError, match=message.replace("[", r"\[").replace(".", r"\.")):
        parse_privacy(table)


def test_histograms_per_patient_counts_shared_histograms_once():
    # os by sex (km); os by limb (logrank and rmst share it); amp unstratified; count:sex, count:limb
    assert histograms_per_patient(PLAN) == 5


def test_cox_finegray_and_numeric_descriptions_are_refused():
    assert dp_refusals(PLAN) == []
    numeric = parse_plan(HEAD + """
[[analyses]]
name = "t1"
kind = "describe"
variables = ["sex", "age"]
""")
    (reason,) = dp_refusals(numeric)
    assert "numeric variable 'age'" in reason

    class Cox:
        name, kind, variables = "hr", "cox", ()

    class Fg:
        name, kind, variables = "sdhr", "finegray", ()

    class FakePlan:
        analyses = (Cox(), Fg())

    reasons = dp_refusals(FakePlan())
    assert len(reasons) == 2 and all("refused for them rather than claimed" in r for r in reasons)
    with pytest.raises(PrivacyPlanError, match="numeric variable 'age'"):
        noise_parameters(PrivacySpec(epsilon=1.0), numeric, 5)


def test_noise_parameters():
    spec = PrivacySpec(epsilon=1.0, colluding_sites=1, deduplicated=True)
    p = noise_parameters(spec, PLAN, participants=5)
    assert p.histograms == 5 and p.honest_sites == 4 and p.copies == 1
    assert p.sigma_target == pytest.approx(4.5309 * math.sqrt(5), rel=1e-4)
    assert p.share.mechanism == "gaussian"
    assert p.share.sigma == pytest.approx(p.sigma_target / 2, abs=1e-3)
    assert p.share.sigma >= p.sigma_target / 2
    assert p.guarantee.epsilon == pytest.approx(1.0, abs=1e-3) and p.guarantee.epsilon <= 1.0 + 1e-7
    # not deduplicated: a referred patient counts twice, sigma doubles
    p2 = noise_parameters(PrivacySpec(epsilon=1.0, colluding_sites=1), PLAN, participants=5)
    assert p2.sigma_target == pytest.approx(2 * p.sigma_target, rel=1e-12)
    # below the floor: raised to 1.5 (a better epsilon than asked), or Skellam
    p3 = noise_parameters(PrivacySpec(epsilon=10.0, deduplicated=True), PLAN, participants=30)
    assert p3.sigma_target == pytest.approx(sigma_for_epsilon(10, 1e-6, 5))
    assert p3.share.variance == 2.25 and p3.guarantee.epsilon < 10
    p4 = noise_parameters(PrivacySpec(epsilon=10.0, deduplicated=True, below_floor="skellam"), PLAN, 30)
    assert p4.share.mechanism == "skellam"
    assert p4.share.variance >= p3.sigma_target**2 / 30   # Skellam's bound needs more than the Gaussian's
    assert p4.share.variance < 2.25                       # ... but less than the floor
    assert 9.9 < p4.guarantee.epsilon <= 10   # the variance is rounded up to a multiple of 1/1024
    with pytest.raises(PrivacyPlanError, match="leave no honest site"):
        noise_parameters(PrivacySpec(epsilon=1.0, colluding_sites=3), PLAN, participants=3)
