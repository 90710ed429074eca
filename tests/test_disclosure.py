"""The disclosure rule: counts 1..k-1 show as "<k"; 0, k and above as they are."""

from __future__ import annotations

import math

import pytest

from coordinator.disclosure import DisclosureRule, as_count, rule_from_results


@pytest.mark.parametrize("k", [5, 11])
def test_small_counts_are_withheld(k):
    rule = DisclosureRule(k)
    assert rule.active and rule.placeholder == f"<{k}"
    assert rule.count(0) == "0"
    assert [rule.count(c) for c in range(1, k)] == [f"<{k}"] * (k - 1)
    assert rule.count(k) == str(k) and rule.count(k + 1) == str(k + 1) and rule.count(1000) == "1000"
    assert rule.counts([0, 1, k, 3.0]) == ["0", f"<{k}", str(k), f"<{k}"]
    assert rule.count(None) == "" and rule.count(math.nan) == ""
    assert rule.withholds(1) and not rule.withholds(0) and not rule.withholds(k)


@pytest.mark.parametrize("k", [0, 1])
def test_no_rule_shows_every_count(k):
    rule = DisclosureRule(k)
    assert not rule.active
    assert [rule.count(c) for c in range(6)] == ["0", "1", "2", "3", "4", "5"]
    assert "none" in rule.statement()


def test_percent_of_a_withheld_count_is_an_upper_bound():
    rule = DisclosureRule(5)
    # 3 of 40 = 7.5% would give 3 back; count < 5 means percent < 12.5%.
    assert rule.share(3, 40) == "<12.5%"
    assert rule.share(4, 131) == "<3.9%"  # 5/131 = 3.817%, rounded up
    assert rule.share(10, 40) == "25.0%" and rule.share(0, 40) == "0.0%"
    assert rule.share(1, 2) == "<100.0%"
    assert rule.share(3, 0) == ""


def test_statement_names_the_rule():
    s = DisclosureRule(11).statement()
    assert "min_count_release = 11" in s and "from 1 to 10" in s and "\u201c<11\u201d" in s
    assert "Estimates" in s and "exact" in s


def test_bad_rules_and_counts():
    with pytest.raises(ValueError):
        DisclosureRule(-1)
    with pytest.raises(ValueError):
        DisclosureRule(True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a count"):
        as_count(2.5)
    with pytest.raises(ValueError, match="not a count"):
        as_count("many")
    assert as_count("7") == 7 and as_count(7.0) == 7


def test_rule_from_results():
    assert rule_from_results({"plan": {"plan": {"min_count_release": 11}}}) == DisclosureRule(11)
    assert rule_from_results({"plan": {"plan": {}}}) == DisclosureRule(0)
    assert rule_from_results({}) == DisclosureRule(0)
