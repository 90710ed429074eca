"""A site's side of a Cox or Fine-Gray round: the design matrix, the policy checks, the sums.

Each round the coordinator broadcasts beta for a model; the site checks that answering is
safe and returns its per-bin sums (coordinator.cox.CoxBinSums or
coordinator.finegray.FineGrayBinSums), which then are fixed-point encoded and masked
(protocol.fixedpoint, protocol.masking.mask128). Every check is a pure function that returns
the reasons to refuse (empty: fine), so ``fedsurv site preview`` can show them and the
audit log can record them.

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from coordinator.cox import CoxBinSums, cox_bin_sums
from coordinator.finegray import FineGrayBinSums, finegray_bin_sums
from protocol.errors import RefusedError


@dataclass(frozen=True)
class Covariate:
    """A plan covariate: categorical (levels; treatment contrasts against the first level)
    or numeric (public centre and scale, allowed range)."""

    name: str
    levels: tuple[str, ...] | None = None
    center: float = 0.0
    scale: float = 1.0
    range: tuple[float, float] | None = None

    @property
    def terms(self) -> list[str]:
        if self.levels is None:
            return [self.name]
        return [f"{self.name}{lev}" for lev in self.levels[1:]]


@dataclass(frozen=True)
class CoxSitePolicy:
    """The privacy officer's bounds for regression rounds (defaults as issue 8 proposes)."""

    min_patients: int = 11
    min_level_size: int = 3
    min_exits: int = 2
    max_xb_spread: float = 10.0
    max_rounds: int = 40           # iter.max (20) plus step-halvings
    max_covariate_fraction: float = 1 / 3


@dataclass(frozen=True)
class CoxSiteData:
    """One site's rows on the grid: exit bin, outcome code (0 censored, 1 cause, 2 competing)."""

    time_bin: np.ndarray
    outcome: np.ndarray
    X: np.ndarray                      # centred and scaled design, (n, p)
    terms: tuple[str, ...]
    level_counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    out_of_range: Mapping[str, int] = field(default_factory=dict)


def design_matrix(columns: Mapping[str, Sequence], covariates: Sequence[Covariate]):
    """The design (treatment contrasts; numeric (x - center) / scale) with level counts and
    the number of values outside each declared range."""
    cols, terms, counts, outside = [], [], {}, {}
    for cov in covariates:
        values = np.asarray(columns[cov.name])
        if cov.levels is None:
            x = values.astype(float)
            if cov.range is not None:
                outside[cov.name] = int(np.sum((x < cov.range[0]) | (x > cov.range[1])))
            cols.append((x - cov.center) / cov.scale)
        else:
            text = values.astype(str)
            counts[cov.name] = {lev: int(np.sum(text == lev)) for lev in cov.levels}
            unknown = int(np.sum(~np.isin(text, cov.levels)))
            if unknown:
                outside[cov.name] = unknown
            cols.extend((text == lev).astype(float) for lev in cov.levels[1:])
        terms.extend(cov.terms)
    n = len(next(iter(columns.values()))) if columns else 0
    X = np.column_stack(cols) if cols else np.zeros((n, 0))
    return X, tuple(terms), counts, outside


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


def check_ranges(out_of_range: Mapping[str, int]) -> list[str]:
    return [f"{c} values of {name} outside the declared range or levels"
            for name, c in out_of_range.items() if c]


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


def refusal_reasons(data: CoxSiteData, beta, round_no: int, pooled_exits,
                    policy: CoxSitePolicy | None) -> list[str]:
    """All reasons to refuse this round; without a policy only what the arithmetic needs."""
    if policy is None:
        b = np.asarray(beta, dtype=float)
        return [] if np.all(np.isfinite(b)) and b.shape == (data.X.shape[1],) else ["beta is not finite"]
    reasons = (check_size(len(data.time_bin), data.X.shape[1], policy)
               + check_levels(data.level_counts, policy)
               + check_ranges(data.out_of_range)
               + check_round(round_no, policy)
               + check_beta(beta, data.X, policy))
    if pooled_exits is not None:
        reasons += check_pooled_bins(pooled_exits, policy)
    return reasons


def answer_round(data: CoxSiteData, beta, n_bins: int, *, kind: str = "cox", round_no: int = 1,
                 pooled_exits=None, policy: CoxSitePolicy | None = None,
                 cause: int = 1) -> CoxBinSums | FineGrayBinSums:
    """This site's sums for beta, or RefusedError naming every rule that applies.

    pooled_exits: the pooled exits per bin from round 1 (None in round 1 itself).
    kind "cox": the event is outcome == cause, anything else censored (as R); "finegray":
    outcome 0 censored, cause the event, any other code competing.
    """
    reasons = refusal_reasons(data, beta, round_no, pooled_exits, policy)
    if reasons:
        raise RefusedError("refused: " + "; ".join(reasons))
    o = np.asarray(data.outcome)
    if kind == "cox":
        return cox_bin_sums(data.time_bin, o == cause, data.X, beta, n_bins)
    if kind == "finegray":
        fg = np.where(o == cause, 1, np.where(o == 0, 0, 2))
        return finegray_bin_sums(data.time_bin, fg, data.X, beta, n_bins)
    raise ValueError(f"kind must be 'cox' or 'finegray', not {kind!r}")
