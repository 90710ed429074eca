"""The Newton rounds of a plan's Cox and Fine-Gray models, after its tally round.

Every model is a path (coordinator.cox.cox_path, coordinator.finegray.finegray_path) that
yields the beta it needs sums at. Each round asks every participant of the tally round for
the sums at every unfinished model's beta (protocol.regression.Step), so models share rounds;
the masked 128-bit replies are summed, decoded and checked before a path sees them:

- every participant answered (a refusal or silence stops the fit: its masks do not cancel);
- the decoded counts equal the tally round's ``regsurv`` counts (the same patients answered);
- risk-set sums of exp(x'beta) positive and non-increasing (coordinator.cox.check_round_sums);
- the information positive definite (else the model reports the error, as R would fail).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from coordinator.cox import (
    CoxBinSums,
    CoxPoint,
    check_round_sums,
    cox_path,
    cox_result_dict,
    cox_sums_from_patterns,
    drive,
)
from coordinator.finegray import FineGrayBinSums, finegray_path, finegray_result_dict
from coordinator.results import jsonable
from coordinator.secure_round import RoundResult, Transport, collect_replies, new_query
from protocol import fixedpoint
from protocol.errors import AggregationError
from protocol.keys import PartyKeys
from protocol.masking import sum_masked128
from protocol.plan import Analysis, Plan
from protocol.regression import (
    Step,
    model_cells,
    model_grid,
    model_patterns,
    model_strata,
    model_terms,
    regression_analyses,
    split_models,
    step_cells,
    uses_patterns,
)
from protocol.roster import Roster
from protocol.tallies import regdropped_key, regsurv_key

# A model's path stops well within this; the bound only guards against a path that never ends.
MAX_ROUNDS = 200


class RoundFailed(AggregationError):
    """A regression round without every participant's answer; names the sites and why."""

    def __init__(self, message: str, sites: tuple[str, ...], replies: tuple[bytes, ...] = ()):
        super().__init__(message)
        self.sites, self.replies = sites, replies


@dataclass(frozen=True)
class RegressionOutcome:
    results: dict[str, dict[str, Any]]
    rounds: int
    query_ids: tuple[str, ...]
    reply_bytes: tuple[int, ...] = field(default=())  # bytes one site sent, per round


def _decode_model(plan: Plan, a: Analysis, values: np.ndarray, counts: np.ndarray):
    """The pooled reply of one model from its decoded values, checked against round 1's counts
    ((strata, bins, 3): the regsurv block summed over patterns)."""
    p = len(model_terms(plan, a))
    B = model_grid(plan, a).n_bins
    if a.kind == "finegray":
        s = FineGrayBinSums.from_flat(values, B, p)
        if not np.array_equal(s.n, counts[0].astype(float)):
            raise AggregationError(f"{a.name}: the decoded counts differ from round 1's: not the same patients")
        return s
    if a.site_strata:
        pt = CoxPoint.from_flat(values, p)
        if (pt.n, pt.n_event) != (int(counts.sum()), int(counts[..., 1].sum())):
            raise AggregationError(f"{a.name}: the decoded counts differ from round 1's: not the same patients")
        if not np.all(np.isfinite(pt.info)):
            raise AggregationError(f"{a.name}: the sites' information matrices are not finite")
        return pt
    n_strata = len(model_strata(plan, a))
    size = model_cells(plan, a) // n_strata
    parts = [CoxBinSums.from_flat(values[k * size:(k + 1) * size], B, p) for k in range(n_strata)]
    for k, s in enumerate(parts):
        try:
            check_round_sums(s, counts[k].sum(axis=1), counts[k][:, 1])
        except AggregationError as e:
            raise AggregationError(f"{a.name}: {e}") from None
    return parts[0] if len(parts) == 1 else parts


def _path(plan: Plan, a: Analysis) -> Generator[np.ndarray, Any, Any]:
    p = len(model_terms(plan, a))
    if a.kind == "finegray":
        return finegray_path(p)
    return cox_path(p, ties=a.ties)


def term_scales(plan: Plan, a: Analysis) -> np.ndarray:
    """Each term's public scale: sites send sums of (x - center) / scale, so a coefficient
    per unit of x is the fitted one divided by the scale (treatment contrasts: 1)."""
    out: list[float] = []
    for c in a.covariates:
        v = plan.variable(c)
        out.extend([v.regression_scale] if v.is_numeric else [1.0] * len(v.terms))
    return np.array(out)


def _per_unit(fit: Any, scales: np.ndarray) -> Any:
    """The fit with coefficients and variances per unit of each covariate, as R reports them
    (Newton's path, the log-likelihood and the tests do not depend on the scale)."""
    f = 1.0 / scales
    ff = np.outer(f, f)
    changes = {"coef": fit.coef * f, "var": fit.var * ff}
    if hasattr(fit, "robust_var"):
        changes["robust_var"] = fit.robust_var * ff
    return replace(fit, **changes)


def _result(plan: Plan, a: Analysis, fit: Any, rounds: int, dropped: int) -> dict[str, Any]:
    terms = model_terms(plan, a)
    fit = _per_unit(fit, term_scales(plan, a))
    if a.kind == "finegray":
        out = finegray_result_dict(fit, terms, conf_level=plan.conf_level)
    else:
        out = cox_result_dict(fit, terms, robust=a.robust, ties=a.ties, conf_level=plan.conf_level)
        out["strata"] = list(a.strata)
    grid = model_grid(plan, a)
    out.update(endpoint=a.endpoint, cause=a.cause, rounds=rounds, n_dropped=dropped, bin_width=grid.bin_width,
               horizon=grid.horizon)
    return out


def _fit_from_patterns(plan: Plan, a: Analysis, counts: np.ndarray, dropped: int) -> dict[str, Any]:
    """A categorical Cox model from round 1's counts by stratum, pattern, bin and outcome: the
    same Newton path, its sums formed exactly at the coordinator (protocol.regression.uses_patterns)."""
    patterns = model_patterns(plan, a)
    n_exit = [c.sum(axis=2).T for c in counts]          # (bins, patterns) per stratum
    n_event = [c[:, :, 1].T for c in counts]

    def sums(beta: np.ndarray):
        parts = [cox_sums_from_patterns(patterns, ne, nv, beta) for ne, nv in zip(n_exit, n_event)]
        return parts[0] if len(parts) == 1 else parts

    try:
        fit = drive(cox_path(len(model_terms(plan, a)), ties=a.ties), sums)
    except np.linalg.LinAlgError as e:
        return {"kind": a.kind, "terms": list(model_terms(plan, a)), "error": str(e), "rounds": 0}
    out = _result(plan, a, fit, 0, dropped)
    out["fitted_from"] = "counts by covariate pattern (tally round)"
    return out


def run_regressions(plan: Plan, transport: Transport, coordinator: PartyKeys, roster: Roster, first: RoundResult,
                    ttl_seconds: float = 600, clock: Callable[[], float] = time.time,
                    on_progress: Callable[[str], None] | None = None) -> RegressionOutcome:
    """Fit every regression model of `plan` over the sites of the tally round `first`.

    Raises RoundFailed when a participant refuses or does not answer a round (the fit cannot
    go on without its sums), AggregationError when a round's sums do not check out. A model
    whose information is not positive definite gets {"error": ...} instead of estimates.
    """
    say = on_progress or (lambda _m: None)
    models = regression_analyses(plan)
    sites = tuple(name for name, _ in first.sites)
    round1 = first.query_ids[-1]
    by_pattern = {a.name: first.tallies[regsurv_key(a.name)] for a in models}
    counts = {name: c.sum(axis=1) for name, c in by_pattern.items()}
    exits = {a.name: tuple(int(x) for x in counts[a.name].sum(axis=2).ravel()) for a in models}
    results: dict[str, dict[str, Any]] = {}
    for a in models:
        if uses_patterns(plan, a):
            results[a.name] = _fit_from_patterns(plan, a, by_pattern[a.name],
                                                 int(first.tallies[regdropped_key(a.name)][0]))
            say(f"{a.name}: fitted from the tally round's counts by covariate pattern, no further round")
    rounds_needed = [a for a in models if a.name not in results]
    paths: dict[str, Generator[np.ndarray, Any, Any]] = {a.name: _path(plan, a) for a in rounds_needed}
    pending = {name: next(path) for name, path in paths.items()}
    used: dict[str, int] = {a.name: 0 for a in models}
    query_ids: list[str] = []
    sizes: list[int] = []
    by_name = {a.name: a for a in models}
    round_no = 1
    while pending:
        round_no += 1
        if round_no > MAX_ROUNDS:
            raise AggregationError(f"the regression models did not finish within {MAX_ROUNDS} rounds")
        step = Step(round_no, round1, tuple((n, tuple(float(x) for x in b)) for n, b in pending.items()),
                    tuple((n, exits[n]) for n in pending))
        query, request = new_query(plan, coordinator, sites, ttl_seconds, clock, step=step.to_dict())
        query_ids.append(query.query_id)
        got = collect_replies(query, roster, transport({s: request for s in sites}), sites)
        failed = [(s, f"{r.status} ({r.reason})") for s, r in got.failed.items()] + list(got.silent.items())
        evidence = [r.encode() for r in got.failed.values()]
        payloads = [np.frombuffer(got.ok[s].payload, dtype="<u8").reshape(-1, 2) for s in sites if s in got.ok]
        if failed:
            # Sites refusing for the same reason (a pooled rule, say) are named once together.
            by_reason: dict[str, list[str]] = {}
            for s, w in failed:
                by_reason.setdefault(w, []).append(s)
            text = "; ".join(f"{', '.join(names)} {w}" for w, names in by_reason.items())
            raise RoundFailed(f"regression round {round_no}: {text}", tuple(s for s, _ in failed), tuple(evidence))
        cells = step_cells(plan, step)
        if any(len(p) != cells for p in payloads):
            raise AggregationError(f"regression round {round_no}: a reply has the wrong length; the masks cannot cancel")
        sizes.append(len(payloads[0]) * 16 if payloads else 0)
        values = split_models(plan, step, fixedpoint.decode(sum_masked128(payloads)))
        say(f"round {round_no}: sums for {', '.join(values)} from {len(sites)} sites")
        nxt: dict[str, np.ndarray] = {}
        for name, v in values.items():
            a = by_name[name]
            used[name] += 1
            try:
                beta = paths[name].send(_decode_model(plan, a, v, counts[name]))
                nxt[name] = beta
            except StopIteration as stop:
                results[name] = _result(plan, a, stop.value, used[name],
                                        int(first.tallies[regdropped_key(name)][0]))
            except np.linalg.LinAlgError as e:
                results[name] = {"kind": a.kind, "terms": list(model_terms(plan, a)), "error": str(e),
                                 "rounds": used[name]}
        pending = nxt
    return RegressionOutcome({a.name: results[a.name] for a in models}, round_no - 1, tuple(query_ids),
                             tuple(sizes))


def merge_results(plan: Plan, results: dict[str, Any], outcome: RegressionOutcome) -> dict[str, Any]:
    """results.json with the regression models in the plan's order among the other analyses."""
    analyses: Mapping[str, Any] = results["analyses"]
    # An infinite limit (R's Inf, a coefficient that may be infinite) is null in JSON, as R's NA.
    merged = {a.name: (jsonable(outcome.results[a.name]) if a.is_regression else analyses[a.name])
              for a in plan.analyses}
    return {**results, "analyses": merged,
            "regression_rounds": {"rounds": outcome.rounds, "query_ids": list(outcome.query_ids),
                                  "bytes_per_site": list(outcome.reply_bytes)}}
