"""Disclosure control on released counts: small counts show as "<k".

The plan's ``min_count_release = k`` is the smallest count that may be released. A count
from 1 up to k - 1 in any released table (sites, strata, events, Table 1, proportions) or
risk table is replaced by the text "<k"; 0 and counts of k or more are shown as they are.
This is primary cell suppression as health statistics offices practise it (e.g. the CMS
cell-size rule: counts 1 to 10 show as "<11"; Statistics Canada and the UK ONS apply the
same pattern). Estimates, their intervals and the curves in figures stay exact, as the plan
asks; the report states the rule it applied (``DisclosureRule.statement``).

Only primary suppression is done: a suppressed count can still be recovered by subtraction
from a shown total, or from an exact estimate; the statement says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DisclosureRule:
    """Counts from 1 to ``min_count - 1`` are withheld; 0 (or 1) means every count is shown."""

    min_count: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.min_count, bool) or not isinstance(self.min_count, int) or self.min_count < 0:
            raise ValueError(f"min_count_release must be a non-negative integer, got {self.min_count!r}")

    @property
    def active(self) -> bool:
        """Whether any count can be withheld (k = 0 or 1 leaves every count as it is)."""
        return self.min_count >= 2

    @property
    def placeholder(self) -> str:
        return f"<{self.min_count}"

    def withholds(self, count: Any) -> bool:
        """Whether this count is withheld: an integer from 1 to k - 1."""
        c = as_count(count)
        return c is not None and 1 <= c < self.min_count

    def count(self, count: Any) -> str:
        """The released text of a count: "<k" for 1..k-1, the integer otherwise, "" for null."""
        c = as_count(count)
        if c is None:
            return ""
        return self.placeholder if self.withholds(c) else str(c)

    def counts(self, values: Iterable[Any]) -> list[str]:
        return [self.count(v) for v in values]

    def share(self, count: Any, total: Any) -> str:
        """The released percent of count in total, one decimal; bounded where the count is withheld.

        A percent of a withheld count would give the count back (count = percent * total), so
        it shows as an upper bound: count < k means percent < 100 k / total, printed rounded up.
        """
        c, n = as_count(count), as_count(total)
        if c is None or not n:
            return ""
        if self.withholds(c):
            bound = math.ceil(1000.0 * self.min_count / n) / 10.0
            return f"<{min(bound, 100.0):.1f}%"
        return f"{100.0 * c / n:.1f}%"

    def statement(self) -> str:
        """One paragraph saying which rule was applied, for the report."""
        if not self.active:
            return ("Disclosure control: none. The plan sets no smallest count to release "
                    f"(min_count_release = {self.min_count}), so every count is shown as computed.")
        k = self.min_count
        return (f"Disclosure control: the plan sets min_count_release = {k}, the smallest count that "
                f"may be released. Every count from 1 to {k - 1} (patients, numbers at risk, events, "
                f"censorings, Table 1 counts and the percentages that would reveal them) is shown as "
                f"\u201c<{k}\u201d in every table, risk table and CSV file; 0 and counts of {k} or more are "
                f"shown exactly. Estimates, confidence intervals and curves are exact, as the plan "
                f"specifies; no secondary suppression is applied, so a withheld count may be derivable "
                f"from a total or an estimate.")


def as_count(x: Any) -> int | None:
    """A count as an int; None for null/NaN. Non-integral values are not counts."""
    if x is None or isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    try:
        f = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"not a count: {x!r}") from None
    if math.isnan(f):
        return None
    if not f.is_integer():
        raise ValueError(f"not a count: {x!r}")
    return int(f)


def rule_from_results(results: dict) -> DisclosureRule:
    """The rule a results.json document asks for (its plan's ``min_count_release``)."""
    head = (results.get("plan") or {}).get("plan") or {}
    return DisclosureRule(int(head.get("min_count_release") or 0))
