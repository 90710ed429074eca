"""The plan: the issue's example parses exactly as written, round-trips, and hashes stably."""

import hashlib
import json
from pathlib import Path

import pytest

from protocol.plan import DAYS_PER_UNIT, PlanError, load_plan, parse_plan, plan_from_dict

EXAMPLES = Path(__file__).parent.parent / "fedsurv" / "examples"

ISSUE_EXAMPLE = (EXAMPLES / "lung.toml").read_text() + """
[endpoints.amp]          # competing risks: amputation, with death competing
time = "amp_time"
event = "amp_event"
censored = [0]
causes = { 1 = "amputation", 2 = "death" }

[[analyses]]
name = "amputation"
kind = "cif"             # the cumulative incidence of every cause of the endpoint
endpoint = "amp"
strata = ["sex"]         # optional
times = [365]
"""


def test_issue_example_parses_as_written():
    plan = parse_plan(ISSUE_EXAMPLE)
    assert [a.name for a in plan.analyses] == ["os", "os_by_sex", "amputation"]
    assert plan.bin_width == 1 and plan.horizon == 1100 and plan.conf_type == "log-log"
    amp = plan.endpoint("amp")
    assert [(c.code, c.name) for c in amp.causes] == [(1, "amputation"), (2, "death")]
    assert amp.cause_index("death") == 2
    assert plan.analyses[1].stratification == ("sex",)
    # bins 0..1100: time t is in bin ceil(t / 1)
    assert plan.n_bins == 1101


def test_round_trip_and_hash_is_sha256_of_canonical_json():
    plan = parse_plan(ISSUE_EXAMPLE)
    assert plan_from_dict(plan.to_dict()) == plan
    canon = plan.canonical_json()
    assert json.loads(canon) == plan.to_dict()
    assert plan.sha256 == hashlib.sha256(canon.encode()).hexdigest()
    # comments and key order in the TOML do not change the hash; a changed value does
    reordered = ISSUE_EXAMPLE.replace('conf_level = 0.95\n', '').replace('[plan]\n', '[plan]\nconf_level = 0.95\n')
    assert parse_plan(reordered).sha256 == plan.sha256
    assert parse_plan(ISSUE_EXAMPLE.replace("horizon = 1100", "horizon = 1101")).sha256 != plan.sha256


def test_shipped_examples_parse():
    for path in EXAMPLES.glob("*.toml"):
        if path.name.startswith("policy"):
            continue
        assert load_plan(str(path)).analyses


def test_julian_months():
    assert DAYS_PER_UNIT["months"] == pytest.approx(30.4375)


def test_errors_name_the_key():
    with pytest.raises(PlanError, match=r"analyses\[0\] \(os\)\.cause"):
        parse_plan(ISSUE_EXAMPLE.replace('cause = "death"          # km', 'cause = "dead"  # km', 1))


def test_canonical_json_keeps_the_order_of_dated_causes():
    """Cause codes follow the order of `dates`; the canonical form must not sort them away."""
    plan = load_plan(str(EXAMPLES / "sarcoma.toml"))
    again = plan_from_dict(json.loads(plan.canonical_json()))
    assert again == plan
    assert [c.name for c in again.endpoint("lrfs").causes] == ["local_recurrence", "death"]
    swapped = (EXAMPLES / "sarcoma.toml").read_text().replace(
        'dates = { local_recurrence = "lr_date", death = "death_date" }',
        'dates = { death = "death_date", local_recurrence = "lr_date" }')
    assert parse_plan(swapped).sha256 != plan.sha256
