"""A site's policy checks for Cox and Fine-Gray rounds, as pure functions.

Each round the coordinator broadcasts beta for a model; before answering, the site checks
that its sums (site_node.regression.model_values) are safe to send. Every check returns the
reasons to refuse (empty: fine), so ``fedsurv site preview`` can show them and the audit log
can record them; site_node.regression.model_reasons applies them to a model's rows.

Why these checks (issue 8): a Newton round reveals sums of exp(x'beta)-weighted covariates
per bin. With few patients, many covariates, a tiny category, a bin holding one exit, or a
beta that makes one patient's exp(x'beta) dominate (a huge spread of x'beta), a sum comes
close to one patient's covariates. Bounding these keeps every released sum an aggregate.

They do not make the sums safe against a coordinator solving for covariates: the sums of a bin
over k exits are equations in those k patients' covariates (for one covariate and k = 2, the
sum and the sum of squares at beta = 0 already give both values), and each round adds more.
Only coarse bins (min_exits well above the number of model terms) limit that; the policy's
defaults follow the issue and are documented as such in deploy/README.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CoxSitePolicy:
    """The privacy officer's bounds for regression rounds (defaults as issue 8 proposes)."""

    min_patients: int = 11
    min_level_size: int = 3
    min_exits: int = 2
    max_xb_spread: float = 10.0
    max_rounds: int = 40           # iter.max (20) plus step-halvings
    max_covariate_fraction: float = 1 / 3


def check_size(n: int, p: int, policy: CoxSitePolicy) -> list[str]:
    reasons = []
    if 0 < n < policy.min_patients:
        reasons.append(f"{n} patients here, the policy needs at least {policy.min_patients}")
    if n and p > policy.max_covariate_fraction * n:
        reasons.append(f"{p} model terms for {n} patients: more than n/3")
    return reasons


def check_levels(level_counts: Mapping[str, Mapping[str, int]], policy: CoxSitePolicy) -> list[str]:
    """A level held by 1 to min_level_size - 1 patients here would single them out (0 is fine)."""
    return [f"level {lev!r} of {name} has {c} patients here, fewer than {policy.min_level_size}"
            for name, levels in level_counts.items() for lev, c in levels.items()
            if 0 < c < policy.min_level_size]


def check_pooled_bins(pooled_exits, policy: CoxSitePolicy) -> list[str]:
    """Every pooled bin (published after round 1) with exits must hold at least min_exits."""
    e = np.asarray(pooled_exits)
    thin = np.flatnonzero((e > 0) & (e < policy.min_exits))
    if thin.size == 0:
        return []
    shown = ", ".join(str(int(b)) for b in thin[:10]) + (" ..." if thin.size > 10 else "")
    return [(f"{thin.size} pooled bins hold fewer than {policy.min_exits} exits (bins {shown}); "
            "the plan must coarsen the grid")]


def check_beta(beta, X: np.ndarray, policy: CoxSitePolicy) -> list[str]:
    """beta finite and the spread of x'beta over this site's rows within the bound."""
    b = np.asarray(beta, dtype=float)
    if b.shape != (X.shape[1],):
        return [f"beta has {b.size} values for {X.shape[1]} model terms"]
    if not np.all(np.isfinite(b)):
        return ["beta is not finite"]
    if len(X) == 0:
        return []
    xb = X @ b
    spread = float(xb.max() - xb.min())
    if spread > policy.max_xb_spread:
        return [(f"the spread of x'beta over this site's rows is {spread:.3g}, "
                f"above the policy's bound {policy.max_xb_spread:g}")]
    return []


def check_round(round_no: int, policy: CoxSitePolicy) -> list[str]:
    if round_no > policy.max_rounds:
        return [f"round {round_no} exceeds the {policy.max_rounds} rounds a model may take"]
    return []
