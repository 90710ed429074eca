"""A site's data after mapping and validation: the plan's columns as clean numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class PreparedData:
    """Validated, plan-shaped columns of one site's data set.

    - ``times[endpoint]``: float64 follow-up time in the plan's time unit, >= 0.
    - ``outcomes[endpoint]``: int64 outcome index, 0 censored, 1..K the plan's causes in order.
    - ``levels[variable]``: int64 index into the variable's levels, -1 where missing.
    - ``fixed[variable]``: int64 round(x * 10**decimals) for numeric variables (0 where missing).
    - ``missing[variable]``: bool, True where a numeric variable is missing.
    - ``left_out``: rows deliberately left out, by reason, for the report (no silent drops).
    """

    source: str
    n_rows: int
    times: dict[str, np.ndarray]
    outcomes: dict[str, np.ndarray]
    levels: dict[str, np.ndarray] = field(default_factory=dict)
    fixed: dict[str, np.ndarray] = field(default_factory=dict)
    missing: dict[str, np.ndarray] = field(default_factory=dict)
    left_out: dict[str, int] = field(default_factory=dict)
