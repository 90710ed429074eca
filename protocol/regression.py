"""The contract of Cox and Fine-Gray rounds: model shapes, the round step, the sums' encoding.

A plan's regression models (kinds "cox" and "finegray") run in rounds after the tally round:

1. The tally round (round 1) also carries, per model, the integer counts of its rows by
   stratum, bin and outcome (``regsurv:<name>``, 0 censored, 1 the cause, 2 a competing
   event) and the rows left out for a missing covariate (``regdropped:<name>``). Once they
   are summed, every site can check that no pooled bin holds fewer exits than its policy
   allows *before* any covariate sum leaves it: sums of x per bin over a bin with one exit
   would be that patient's covariates.
2. Each later round the coordinator broadcasts a ``Step``: the round number, the id of the
   tally round it continues (binding every round to one set of participants), beta for
   every unfinished model and the pooled exits per bin from round 1. Every site returns one
   vector: for each model in the step, its sums at that beta (``model_cells`` values, in the
   field order of coordinator.cox.CoxBinSums / CoxPoint / coordinator.finegray.FineGrayBinSums),
   as 52-bit fixed point modulo 2^128 (protocol.fixedpoint), masked with 128-bit masks.

Strata: a categorical variable gives one block of per-bin sums per level (concatenated in
level order); strata = "site" gives each site's own log-likelihood, score, information and
score-residual matrix at beta (a CoxPoint), which add up over sites without a shared grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocol.errors import FedsurvError
from protocol.plan import Analysis, Plan, grid_bins

N_OUTCOMES = 3  # 0 censored, 1 the cause modelled, 2 a competing event (Fine-Gray)


class StepError(FedsurvError, ValueError):
    """A round step that does not fit the plan."""


@dataclass(frozen=True)
class Grid:
    """A model's time grid: the plan's, or the model's own coarser ``bin_width`` / ``horizon``
    (times past the horizon censored there, as on the plan's grid)."""

    bin_width: float
    horizon: float

    @property
    def n_bins(self) -> int:
        return grid_bins(self.horizon, self.bin_width)

    def bin_times(self) -> np.ndarray:
        return np.arange(self.n_bins, dtype=float) * self.bin_width


def model_grid(plan: Plan, a: Analysis) -> Grid:
    return Grid(a.bin_width or plan.bin_width, a.horizon or plan.horizon)


def regression_analyses(plan: Plan) -> tuple[Analysis, ...]:
    return tuple(a for a in plan.analyses if a.is_regression)


def model_terms(plan: Plan, a: Analysis) -> tuple[str, ...]:
    """The model's terms as R names them (treatment contrasts against the first level)."""
    return tuple(t for c in a.covariates for t in plan.variable(c).terms)


def model_strata(plan: Plan, a: Analysis) -> tuple[str, ...]:
    """Labels of the model's strata: the levels of its strata variable, else one stratum."""
    if a.strata and not a.site_strata:
        return plan.variable(a.strata[0]).levels  # type: ignore[return-value]
    return ("all",)


def uses_patterns(plan: Plan, a: Analysis) -> bool:
    """A Cox model whose covariates are all categorical is fitted from round 1 alone.

    Its rows take finitely many covariate patterns, so integer counts of exits and events by
    stratum, pattern and bin give every Newton step's sums exactly at the coordinator
    (coordinator.cox.cox_sums_from_patterns): the same numbers, no further round. The counts
    are a survival histogram stratified by the covariates, the tally a Kaplan-Meier by them
    would send; Newton rounds at several betas would reveal them as well.
    """
    return (a.kind == "cox" and not a.site_strata
            and all(plan.variable(c).levels is not None for c in a.covariates))


def model_patterns(plan: Plan, a: Analysis) -> np.ndarray:
    """(K, p) design rows of every joint level of the covariates (row-major, first covariate
    slowest); one empty pattern when the model does not use patterns."""
    if not uses_patterns(plan, a):
        return np.zeros((1, len(model_terms(plan, a))))
    rows = [np.zeros(0)]
    for c in a.covariates:
        k = len(plan.variable(c).levels)  # type: ignore[arg-type]
        dummies = np.eye(k)[:, 1:]
        rows = [np.concatenate([r, d]) for r in rows for d in dummies]
    return np.array(rows)


def model_cells(plan: Plan, a: Analysis) -> int:
    """Values one site sends for the model in one round."""
    p = len(model_terms(plan, a))
    n_bins = model_grid(plan, a).n_bins
    if a.kind == "finegray":
        return n_bins * N_OUTCOMES * 3 * (1 + p + p * p)
    if a.site_strata:
        return 3 + p + 2 * p * p
    # CoxBinSums: 6 per-bin scalars, 5 vectors, 5 matrices
    return len(model_strata(plan, a)) * n_bins * (6 + 5 * p + 5 * p * p)


@dataclass(frozen=True)
class Step:
    """One Newton round's broadcast: beta per model and the pooled exits from round 1.

    ``pooled_exits`` holds, per model, the consortium's exits per (stratum, bin) from the
    tally round, which each site checks against its policy's ``min_exits``.
    """

    round_no: int
    round1: str
    betas: tuple[tuple[str, tuple[float, ...]], ...]
    pooled_exits: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        # repr of a float round-trips exactly through JSON, so every site sees the same beta.
        return {"round": self.round_no, "round1": self.round1,
                "betas": [[name, list(b)] for name, b in self.betas],
                "pooled_exits": [[name, list(e)] for name, e in self.pooled_exits]}

    @classmethod
    def from_dict(cls, d: Any) -> Step:
        try:
            betas = tuple((str(n), tuple(float(x) for x in b)) for n, b in d["betas"])
            exits = tuple((str(n), tuple(int(x) for x in e)) for n, e in d.get("pooled_exits", []))
            step = cls(int(d["round"]), str(d["round1"]), betas, exits)
        except (KeyError, TypeError, ValueError) as e:
            raise StepError(f"malformed round step ({e.__class__.__name__})") from None
        if step.round_no < 2:
            raise StepError("a regression round is numbered 2 or more (round 1 is the tally round)")
        return step

    def beta(self, name: str) -> np.ndarray:
        return np.array(dict(self.betas)[name], dtype=float)

    def exits(self, name: str) -> np.ndarray | None:
        e = dict(self.pooled_exits).get(name)
        return None if e is None else np.array(e, dtype=np.int64)



def check_step(plan: Plan, step: Step) -> list[str]:
    """Reasons the step does not fit the plan (empty: it fits)."""
    models = {a.name: a for a in regression_analyses(plan)}
    reasons = []
    names = [n for n, _ in step.betas]
    if not names:
        reasons.append("the round asks for no model")
    if len(set(names)) != len(names):
        reasons.append("a model is listed twice in the round")
    for name, b in step.betas:
        a = models.get(name)
        if a is None:
            reasons.append(f"{name!r} is not a regression model of the plan")
            continue
        p = len(model_terms(plan, a))
        if len(b) != p:
            reasons.append(f"{name}: beta has {len(b)} values for {p} model terms")
        elif not all(math.isfinite(x) for x in b):
            reasons.append(f"{name}: beta is not finite")
    for name, e in step.pooled_exits:
        a = models.get(name)
        if a is not None and len(e) != len(model_strata(plan, a)) * model_grid(plan, a).n_bins:
            reasons.append(f"{name}: pooled exits have {len(e)} values, not one per stratum and bin")
    return reasons


def split_models(plan: Plan, step: Step, values: np.ndarray) -> dict[str, np.ndarray]:
    """The decoded round vector cut into each model's values, in the step's order."""
    out, pos = {}, 0
    models = {a.name: a for a in regression_analyses(plan)}
    for name, _ in step.betas:
        size = model_cells(plan, models[name])
        out[name] = values[pos:pos + size]
        pos += size
    if pos != len(values):
        raise ValueError(f"the round vector has {len(values)} values, the step needs {pos}")
    return out


def step_cells(plan: Plan, step: Step) -> int:
    models = {a.name: a for a in regression_analyses(plan)}
    return sum(model_cells(plan, models[name]) for name, _ in step.betas)
