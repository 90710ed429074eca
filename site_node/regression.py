"""A site's rows for a Cox or Fine-Gray model, its counts, its round sums and its checks.

The rows are the plan's endpoint on the grid (site_node.tally.time_bins: ceil(t / w), times
past the horizon censored there) with the model's covariates; a row missing a covariate or
its stratum is left out and counted, as R's default ``na.action = na.omit`` does. Numeric
covariates enter as (x - center) / scale with the plan's public centre and scale (R centres
internally as well; the fit is the same in exact arithmetic), categorical ones as treatment
contrasts against their first level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coordinator.cox import cox_bin_sums, cox_point
from coordinator.finegray import finegray_bin_sums
from protocol.plan import ANY_CAUSE, Analysis, Plan
from protocol.regression import (
    model_grid,
    model_patterns,
    model_strata,
    model_terms,
    uses_patterns,
)
from site_node import cox_site
from site_node.cox_site import CoxSitePolicy
from site_node.prepared import PreparedData
from site_node.tally import time_bins


@dataclass(frozen=True)
class ModelData:
    """One model's rows at this site: exit bin, outcome (0 censored, 1 cause, 2 competing),
    centred design, stratum index, and what the policy checks need."""

    time_bin: np.ndarray
    outcome: np.ndarray
    X: np.ndarray
    stratum: np.ndarray
    n_strata: int
    pattern: np.ndarray          # joint covariate level (protocol.regression.model_patterns), else 0
    n_patterns: int
    terms: tuple[str, ...]
    level_counts: dict[str, dict[str, int]]
    dropped: int

    @property
    def n(self) -> int:
        return len(self.time_bin)

    def counts(self, n_bins: int) -> np.ndarray:
        """(strata, patterns, bins, 3) int64 counts by outcome: the model's round-1 tally block."""
        flat = ((self.stratum * self.n_patterns + self.pattern) * n_bins + self.time_bin) * 3 + self.outcome
        return np.bincount(flat, minlength=self.n_strata * self.n_patterns * n_bins * 3).astype(np.int64).reshape(
            self.n_strata, self.n_patterns, n_bins, 3)


def model_data(plan: Plan, a: Analysis, data: PreparedData) -> ModelData:
    ep = plan.endpoint(a.endpoint)  # type: ignore[arg-type]
    # Grid duck-types the plan's bin_width, horizon and n_bins for the binning rule.
    bins, raw = time_bins(model_grid(plan, a), np.asarray(data.times[ep.name], dtype=float).copy(),  # type: ignore[arg-type]
                          data.outcomes[ep.name])
    raw = np.asarray(raw, dtype=np.int64)
    if a.cause == ANY_CAUSE:
        outcome = (raw > 0).astype(np.int64)
    else:
        c = ep.cause_index(a.cause)  # type: ignore[arg-type]
        outcome = np.where(raw == c, 1, np.where(raw == 0, 0, 2)).astype(np.int64)
    keep = np.ones(len(bins), dtype=bool)
    cols: list[np.ndarray] = []
    counts: dict[str, dict[str, int]] = {}
    for name in a.covariates:
        v = plan.variable(name)
        if v.is_numeric:
            miss = np.asarray(data.missing[name], dtype=bool)
            x = np.asarray(data.fixed[name], dtype=float) / 10.0 ** v.decimals
            cols.append((x - v.regression_center) / v.regression_scale)
            keep &= ~miss
        else:
            codes = np.asarray(data.levels[name])
            keep &= codes >= 0
            cols.extend((codes == k).astype(float) for k in range(1, len(v.levels)))  # type: ignore[arg-type]
    stratum = np.zeros(len(bins), dtype=np.int64)
    if a.strata and not a.site_strata:
        codes = np.asarray(data.levels[a.strata[0]])
        keep &= codes >= 0
        stratum = np.maximum(codes, 0).astype(np.int64)
    for name in a.covariates:
        v = plan.variable(name)
        if not v.is_numeric:
            codes = np.asarray(data.levels[name])[keep]
            counts[name] = {lev: int(np.sum(codes == k)) for k, lev in enumerate(v.levels)}  # type: ignore[arg-type]
    X = np.column_stack(cols)[keep] if cols else np.zeros((int(keep.sum()), 0))
    pattern = np.zeros(len(X), dtype=np.int64)
    if uses_patterns(plan, a):
        for name in a.covariates:  # row-major over the covariates' levels, as model_patterns
            k = len(plan.variable(name).levels)  # type: ignore[arg-type]
            pattern = pattern * k + np.asarray(data.levels[name])[keep].astype(np.int64)
    return ModelData(time_bin=bins[keep], outcome=outcome[keep], X=X, stratum=stratum[keep],
                     n_strata=len(model_strata(plan, a)), pattern=pattern, n_patterns=len(model_patterns(plan, a)),
                     terms=model_terms(plan, a), level_counts=counts, dropped=int((~keep).sum()))


def model_values(plan: Plan, a: Analysis, md: ModelData, beta: np.ndarray) -> np.ndarray:
    """This site's sums for the model at beta, as the float vector a round carries (a beta
    that overflows exp(x'beta) gives non-finite sums, which encoding then refuses)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _model_values(plan, a, md, beta)


def _model_values(plan: Plan, a: Analysis, md: ModelData, beta: np.ndarray) -> np.ndarray:
    n_bins = model_grid(plan, a).n_bins
    if a.kind == "finegray":
        return finegray_bin_sums(md.time_bin, md.outcome, md.X, beta, n_bins).flat()
    event = md.outcome == 1
    if a.site_strata:
        return cox_point(cox_bin_sums(md.time_bin, event, md.X, beta, n_bins), beta, a.ties).flat()
    parts = []
    for s in range(md.n_strata):
        rows = md.stratum == s
        parts.append(cox_bin_sums(md.time_bin[rows], event[rows], md.X[rows], beta, n_bins).flat())
    return np.concatenate(parts)


def model_reasons(a: Analysis, md: ModelData, beta: np.ndarray | None, round_no: int,
                  pooled_exits: np.ndarray | None, policy: CoxSitePolicy | None) -> list[str]:
    """Why this site refuses to send the model's sums (empty: it answers).

    Without a policy only what the arithmetic needs (beta finite). With one (issue 8): enough
    patients and p <= n / 3, no covariate level with 1 to min_level_size - 1 patients, at
    most max_rounds rounds, the spread of x'beta over this site's rows within max_xb_spread,
    and every pooled bin with exits holding at least min_exits (not for strata = "site",
    where no per-bin sum leaves the site).
    """
    if beta is not None:
        b = np.asarray(beta, dtype=float)
        if b.shape != (md.X.shape[1],) or not np.all(np.isfinite(b)):
            return [f"{a.name}: beta is not finite or has the wrong length"]
    if policy is None:
        return []
    reasons = (cox_site.check_size(md.n, md.X.shape[1], policy)
               + cox_site.check_levels(md.level_counts, policy)
               + cox_site.check_round(round_no, policy))
    if beta is not None:
        reasons += cox_site.check_beta(beta, md.X, policy)
    if pooled_exits is not None and not a.site_strata:
        reasons += cox_site.check_pooled_bins(pooled_exits, policy)
    return [f"{a.name}: {r}" for r in reasons]
