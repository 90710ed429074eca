"""Per-site sufficient statistics: the integer tallies a plan asks for, and their encoding.

Everything a site contributes is a fixed layout of int64 blocks that depends on the plan
alone, so every site's vector has the same length and order and the coordinator only ever
needs the element-wise sum. Blocks:

- ``surv:<endpoint>:<v1*v2...>``  shape (cells, bins, 1 + K): patients by stratum cell (the
  joint levels of the stratification variables, row-major), time bin, and outcome
  (0 censored, 1..K cause). One histogram per endpoint and stratification feeds every
  analysis that uses it (KM, incidence, log-rank, Gray's test, RMST).
- ``dropped:<endpoint>:<v1*v2...>`` shape (1,): rows left out because a stratification
  variable was missing and the plan says ``missing = "drop"``.
- ``count:<variable>`` shape (levels + 1,): patients per level, the last cell missing.
- ``moments:<variable>`` shape (4,): n, sum and sum of squares of round(x * 10**decimals),
  and the number missing.
- ``regsurv:<model>`` shape (strata, patterns, bins, 3) and ``regdropped:<model>`` shape (1,):
  a Cox or Fine-Gray model's rows by stratum, covariate pattern (only for Cox models with
  categorical covariates alone, else one), bin and outcome (0 censored, 1 the cause, 2 a
  competing event), and its rows left out for a missing covariate (protocol/regression.py).
- ``n`` shape (1,): rows in the site's data.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from protocol.plan import Analysis, Plan

CELL_SEPARATOR = "/"


@dataclass(frozen=True)
class Block:
    key: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def surv_key(endpoint: str, variables: tuple[str, ...]) -> str:
    return f"surv:{endpoint}:{'*'.join(variables)}"


def regsurv_key(model: str) -> str:
    return f"regsurv:{model}"


def regdropped_key(model: str) -> str:
    return f"regdropped:{model}"


def dropped_key(endpoint: str, variables: tuple[str, ...]) -> str:
    return f"dropped:{endpoint}:{'*'.join(variables)}"


def cell_labels(plan: Plan, variables: tuple[str, ...]) -> list[str]:
    """Labels of the stratum cells of a stratification, in block order ("1", "1/a", ...)."""
    if not variables:
        return ["all"]
    levels = [plan.variable(v).levels for v in variables]
    return [CELL_SEPARATOR.join(combo) for combo in itertools.product(*levels)]  # type: ignore[arg-type]


def cell_index(plan: Plan, variables: tuple[str, ...]) -> np.ndarray:
    """Cell numbers as an array of shape (len(levels_1), ..., len(levels_k))."""
    dims = [len(plan.variable(v).levels) for v in variables]  # type: ignore[arg-type]
    return np.arange(int(np.prod(dims, dtype=np.int64)), dtype=np.int64).reshape(dims)


def stratifications(plan: Plan) -> list[tuple[str, tuple[str, ...]]]:
    """The distinct (endpoint, stratification variables) pairs the plan's analyses need."""
    seen: list[tuple[str, tuple[str, ...]]] = []
    for a in plan.analyses:
        # A regression model's counts travel with its own sums (protocol/regression.py).
        if a.endpoint is None or a.is_regression:
            continue
        key = (a.endpoint, a.stratification)
        if key not in seen:
            seen.append(key)
    return seen


def described_variables(plan: Plan) -> list[str]:
    names: list[str] = []
    for a in plan.analyses:
        for v in (a.variable,) + a.variables:
            if v is not None and v not in names:
                names.append(v)
    return names


def layout(plan: Plan) -> tuple[Block, ...]:
    blocks = [Block("n", (1,))]
    for ep_name, vs in stratifications(plan):
        ep = plan.endpoint(ep_name)
        n_cells = len(cell_labels(plan, vs))
        blocks.append(Block(surv_key(ep_name, vs), (n_cells, plan.n_bins, 1 + ep.n_causes)))
        blocks.append(Block(dropped_key(ep_name, vs), (1,)))
    for a in plan.analyses:
        if a.is_regression:
            # Counts of the model's rows (protocol/regression.py), published before any sum of x.
            from protocol.regression import model_grid, model_patterns, model_strata

            shape = (len(model_strata(plan, a)), len(model_patterns(plan, a)), model_grid(plan, a).n_bins, 3)
            blocks.append(Block(regsurv_key(a.name), shape))
            blocks.append(Block(regdropped_key(a.name), (1,)))
    for v in described_variables(plan):
        var = plan.variable(v)
        if var.is_numeric:
            blocks.append(Block(f"moments:{v}", (4,)))
        else:
            blocks.append(Block(f"count:{v}", (len(var.levels) + 1,)))  # type: ignore[arg-type]
    return tuple(blocks)


def layout_size(blocks: tuple[Block, ...]) -> int:
    return sum(b.size for b in blocks)


@dataclass(frozen=True)
class Tallies:
    """A site's (or the consortium's) tallies: one int64 array per block of the layout."""

    blocks: tuple[Block, ...]
    arrays: dict[str, np.ndarray]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def flatten(self) -> np.ndarray:
        """The canonical int64 vector: blocks in layout order, each in C order."""
        return np.concatenate([self.arrays[b.key].astype(np.int64, copy=False).ravel() for b in self.blocks])

    @classmethod
    def from_flat(cls, blocks: tuple[Block, ...], vector: np.ndarray) -> "Tallies":
        vector = np.asarray(vector)
        if vector.shape != (layout_size(blocks),):
            raise ValueError(f"tally vector has {vector.size} cells, the layout needs {layout_size(blocks)}")
        arrays = {}
        offset = 0
        for b in blocks:
            arrays[b.key] = vector[offset: offset + b.size].astype(np.int64).reshape(b.shape)
            offset += b.size
        return cls(blocks, arrays)

    def __add__(self, other: "Tallies") -> "Tallies":
        if self.blocks != other.blocks:
            raise ValueError("tallies of different layouts cannot be added")
        return Tallies(self.blocks, {k: self.arrays[k] + other.arrays[k] for k in self.arrays})

    @property
    def n(self) -> int:
        return int(self.arrays["n"][0])


def histogram(tallies: Tallies, plan: Plan, analysis: Analysis) -> np.ndarray:
    """The (cells, bins, 1 + K) histogram an analysis reads."""
    return tallies[surv_key(analysis.endpoint, analysis.stratification)]  # type: ignore[arg-type]
