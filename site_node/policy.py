"""The site policy: what a site's privacy officer allows the consortium to ask.

A TOML file read only at the site (example: fedsurv/examples/policy.toml)::

    [policy]
    kinds = ["km", "cif", "logrank", "proportion", "describe"]  # analysis kinds allowed
    variables = ["sex", "limb", "age"]   # plan variables that may stratify, group or be described
    endpoints = ["os", "amp"]            # optional: endpoint names allowed (omit: any)
    finest_bin_width = 1                 # the finest time grid accepted ...
    time_unit = "months"                 # ... in this unit (days, weeks, months, years)
    min_stratum_size = 5                 # a stratum with 1 to 4 patients here is refused (0 is fine)
    min_sites = 3                        # fewest participants (never fewer than 3)
    max_queries_per_day = 10             # answered queries in any 24 hours
    same_plan_other_sites = false        # send the same tallies again over another set of sites?
    rerun_after_dropout = false          # trust the coordinator's word that a silent site dropped
    manual_approval = false              # each query waits for `fedsurv site approve QUERY_ID`
    max_query_lifetime_seconds = 3600    # refuse queries valid for longer

    [regression]                         # Cox / Fine-Gray rounds (issue 8), all optional:
    min_patients = 11                    # fewest patients here in a model (and p <= n / 3)
    min_level_size = 3                   # a covariate level with 1 to 2 patients here is refused
    min_exits = 2                        # every pooled bin with exits holds at least this many
    max_xb_spread = 10                   # largest spread of x'beta over this site's rows
    max_rounds = 40                      # rounds one model may take (iter.max plus halvings)

Only ``kinds`` and ``variables`` are required; the rest default to the values shown
(``finest_bin_width`` to 1 day). A refusal always says which rule applied. An optional
``[privacy]`` table (the differential privacy budget, site_node/dp_ledger.py) is validated
here, kept raw as ``Policy.privacy`` and parsed as ``Policy.privacy_policy``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protocol.errors import FedsurvError
from protocol.plan import DAYS_PER_UNIT, KINDS, TIME_UNITS, Plan
from protocol.tallies import (
    CELL_SEPARATOR,
    Tallies,
    cell_labels,
    described_variables,
    stratifications,
    surv_key,
)
from site_node.cox_site import CoxSitePolicy
from site_node.dp_ledger import PrivacyPolicy, PrivacyPolicyError, parse_privacy_policy

ABSOLUTE_MIN_SITES = 3


class PolicyError(FedsurvError, ValueError):
    """A policy file that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Policy:
    kinds: tuple[str, ...]
    variables: tuple[str, ...]
    endpoints: tuple[str, ...] | None = None
    finest_bin_width: float = 1.0
    time_unit: str = "days"
    min_stratum_size: int = 5
    min_sites: int = ABSOLUTE_MIN_SITES
    max_queries_per_day: int = 20
    same_plan_other_sites: bool = False
    rerun_after_dropout: bool = False
    manual_approval: bool = False
    max_query_lifetime_seconds: float = 3600.0
    privacy: Mapping[str, Any] | None = None  # the raw [privacy] table, for site_node/dp_ledger.py
    regression: CoxSitePolicy = CoxSitePolicy()

    @property
    def required_sites(self) -> int:
        return max(ABSOLUTE_MIN_SITES, self.min_sites)

    @property
    def privacy_policy(self) -> PrivacyPolicy | None:
        """The ``[privacy]`` table as site_node.dp_ledger reads it (None: no DP budget)."""
        return parse_privacy_policy(self.privacy)


_KEYS = {"site", "kinds", "variables", "endpoints", "finest_bin_width", "time_unit", "min_stratum_size",
         "min_sites", "max_queries_per_day", "same_plan_other_sites", "rerun_after_dropout",
         "manual_approval", "max_query_lifetime_seconds"}


def parse_policy(text: str, where: str = "policy") -> Policy:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{where}: not valid TOML: {e}") from None
    t = doc.get("policy")
    if not isinstance(t, dict) or set(doc) - {"policy", "privacy", "regression"}:
        raise PolicyError(f"{where}: expected a [policy] table (and optionally [privacy] and [regression] tables)")
    regression = _parse_regression(doc.get("regression", {}), where)
    privacy = doc.get("privacy")
    if privacy is not None and not isinstance(privacy, dict):
        raise PolicyError(f"{where}: privacy: expected a [privacy] table")
    try:
        parse_privacy_policy(privacy, where)
    except PrivacyPolicyError as e:
        raise PolicyError(str(e)) from None
    unknown = sorted(set(t) - _KEYS)
    if unknown:
        raise PolicyError(f"{where}: policy.{unknown[0]}: unknown key (allowed: {', '.join(sorted(_KEYS))})")

    def strings(key: str, required: bool) -> tuple[str, ...] | None:
        if key not in t:
            if required:
                raise PolicyError(f"{where}: policy.{key}: missing")
            return None
        v = t[key]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise PolicyError(f"{where}: policy.{key}: expected a list of names")
        return tuple(v)

    def integer(key: str, default: int, low: int) -> int:
        v = t.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise PolicyError(f"{where}: policy.{key}: expected an integer of at least {low}")
        return v

    def number(key: str, default: float) -> float:
        v = t.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise PolicyError(f"{where}: policy.{key}: expected a positive number")
        return float(v)

    def flag(key: str) -> bool:
        v = t.get(key, False)
        if not isinstance(v, bool):
            raise PolicyError(f"{where}: policy.{key}: expected true or false")
        return v

    kinds = strings("kinds", True)
    bad = [k for k in kinds if k not in KINDS]  # type: ignore[union-attr]
    if bad:
        raise PolicyError(f"{where}: policy.kinds: {bad[0]!r} is not an analysis kind ({', '.join(KINDS)})")
    unit = t.get("time_unit", "days")
    if unit not in TIME_UNITS:
        raise PolicyError(f"{where}: policy.time_unit: expected one of {', '.join(TIME_UNITS)}")
    return Policy(
        kinds=kinds, variables=strings("variables", True), endpoints=strings("endpoints", False),  # type: ignore[arg-type]
        finest_bin_width=number("finest_bin_width", 1.0), time_unit=unit,
        min_stratum_size=integer("min_stratum_size", 5, 1), min_sites=integer("min_sites", ABSOLUTE_MIN_SITES, 1),
        max_queries_per_day=integer("max_queries_per_day", 20, 0),
        same_plan_other_sites=flag("same_plan_other_sites"), rerun_after_dropout=flag("rerun_after_dropout"),
        manual_approval=flag("manual_approval"),
        max_query_lifetime_seconds=number("max_query_lifetime_seconds", 3600.0), privacy=privacy,
        regression=regression,
    )


_REGRESSION_KEYS = {"min_patients", "min_level_size", "min_exits", "max_xb_spread", "max_rounds"}


def _parse_regression(t: Any, where: str) -> CoxSitePolicy:
    if not isinstance(t, dict):
        raise PolicyError(f"{where}: regression: expected a [regression] table")
    unknown = sorted(set(t) - _REGRESSION_KEYS)
    if unknown:
        raise PolicyError(f"{where}: regression.{unknown[0]}: unknown key (allowed: {', '.join(sorted(_REGRESSION_KEYS))})")
    d = CoxSitePolicy()
    out: dict[str, Any] = {}
    for key in ("min_patients", "min_level_size", "min_exits", "max_rounds"):
        v = t.get(key, getattr(d, key))
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise PolicyError(f"{where}: regression.{key}: expected an integer of at least 1")
        out[key] = v
    v = t.get("max_xb_spread", d.max_xb_spread)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise PolicyError(f"{where}: regression.max_xb_spread: expected a positive number")
    out["max_xb_spread"] = float(v)
    return CoxSitePolicy(**out)


def load_policy(path: str | Path) -> Policy:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(f"{path}: cannot read the policy ({e.__class__.__name__})") from None
    return parse_policy(text, str(path))


def plan_variables(plan: Plan) -> list[str]:
    """Every variable whose values the plan's tallies depend on."""
    used: list[str] = []
    for a in plan.analyses:
        strata = () if a.site_strata else a.stratification
        for v in strata + ((a.variable,) if a.variable else ()) + a.variables + a.covariates:
            if v not in used:
                used.append(v)
    return used


def plan_reasons(policy: Policy, plan: Plan) -> list[str]:
    """Why the policy refuses this plan as written (empty: allowed)."""
    reasons = []
    for a in plan.analyses:
        if a.kind not in policy.kinds:
            reasons.append(f"analysis {a.name!r}: kind {a.kind!r} is not allowed (policy.kinds)")
    if policy.endpoints is not None:
        for ep in dict.fromkeys([ep for ep, _ in stratifications(plan)]
                                + [a.endpoint for a in plan.analyses if a.is_regression]):
            if ep not in policy.endpoints:
                reasons.append(f"endpoint {ep!r} is not allowed (policy.endpoints)")
    for v in plan_variables(plan):
        if v not in policy.variables:
            reasons.append(f"variable {v!r} is not allowed (policy.variables)")
    widths = ([("", plan.bin_width)] if stratifications(plan) else []) + [
        (f"analysis {a.name!r}: ", a.bin_width or plan.bin_width)
        for a in plan.analyses if a.is_regression and not a.site_strata]
    finest_days = policy.finest_bin_width * DAYS_PER_UNIT[policy.time_unit]
    for where, width in dict.fromkeys(widths):
        if width * DAYS_PER_UNIT[plan.time_unit] < finest_days * (1 - 1e-9):
            reasons.append(f"{where}bin width {width:g} {plan.time_unit} is finer than the policy allows "
                           f"({policy.finest_bin_width:g} {policy.time_unit}, policy.finest_bin_width)")
    return reasons


def participant_reasons(policy: Policy | None, n_participants: int) -> list[str]:
    needed = policy.required_sites if policy else 0
    if n_participants < needed:
        return [f"only {n_participants} participating sites; the policy needs at least {needed} (policy.min_sites)"]
    return []


def small_strata(plan: Plan, tallies: Tallies, k: int) -> list[str]:
    """Cells holding 1 to k-1 of this site's patients, named by stratum (never by count)."""
    found = []
    for ep, vs in stratifications(plan):
        per_cell = tallies[surv_key(ep, vs)].sum(axis=(1, 2))
        labels = cell_labels(plan, vs)
        for i in np.flatnonzero((per_cell > 0) & (per_cell < k)):
            found.append(f"endpoint {ep!r}, stratum {_stratum_name(vs, labels[i])}")
    for v in described_variables(plan):
        var = plan.variable(v)
        if var.is_numeric:
            continue
        counts = tallies[f"count:{v}"]
        names = list(var.levels) + ["missing"]  # type: ignore[arg-type]
        for i in np.flatnonzero((counts > 0) & (counts < k)):
            found.append(f"variable {v!r}, level {names[i]!r}")
    return [f"{f} has between 1 and {k - 1} patients at this site (policy.min_stratum_size = {k})" for f in found]


def _stratum_name(variables: tuple[str, ...], label: str) -> str:
    if not variables:
        return "all"
    return ", ".join(f"{v}={lv}" for v, lv in zip(variables, label.split(CELL_SEPARATOR)))

