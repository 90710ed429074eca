"""Load the R reference fixtures (tests/fixtures, see PROVENANCE.md) as numpy inputs.

The fixtures' times are integers, so with bin_width 1 the plan's grid is the raw time and
R's results on the pooled rows are the exact target for the pooled estimators.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = FIXTURES / "expected"
DATA = FIXTURES / "data"

# name -> (csv, time column, event column, group column)
CASES = {
    "lung_inst": ("lung.csv", "time", "event", "inst"),
    "lung_sex": ("lung.csv", "time", "event", "sex"),
    "veteran_trt": ("veteran.csv", "time", "event", "trt"),
    "colon_cr_rx": ("colon_cr.csv", "cr_time", "cr_event", "rx"),
}


@lru_cache(maxsize=None)
def _expected_text(case: str) -> str:
    return (EXPECTED / f"{case}.json").read_text()


def expected(case: str) -> dict:
    """R's results, a fresh copy per call: a test that edits it cannot change another's reference."""
    return json.loads(_expected_text(case))


@lru_cache(maxsize=None)
def rows(case: str) -> pd.DataFrame:
    """The rows R used: time, event (int codes) and group (as text), missing dropped."""
    csv, tcol, ecol, gcol = CASES[case]
    df = pd.read_csv(DATA / csv)
    df = df[[tcol, ecol, gcol]].dropna()
    out = pd.DataFrame({
        "time": df[tcol].astype(float).to_numpy(),
        "event": df[ecol].astype(int).to_numpy(),
        "group": [str(int(g)) if isinstance(g, float) else str(g) for g in df[gcol]],
    })
    assert len(out) == expected(case)["meta"]["n_used"]
    return out


@dataclass(frozen=True)
class Hist:
    """A (bins, 1 + K) histogram on a grid of width 1 from 0 to the largest time."""

    time: np.ndarray      # bin labels 0, 1, ..., max
    counts: np.ndarray    # int64 (bins, 1 + K): column 0 censored, k cause k


def histogram(case: str, stratum: str = "all", bin_width: float = 1.0) -> Hist:
    df = rows(case)
    if stratum != "all":
        df = df[df["group"] == stratum]
    k = max(int(c) for c in expected(case)["meta"]["causes"])
    all_t = rows(case)["time"].to_numpy()
    n_bins = int(np.ceil(all_t.max() / bin_width)) + 1
    b = np.ceil(df["time"].to_numpy() / bin_width - 1e-9).astype(np.int64)
    counts = np.zeros((n_bins, 1 + k), dtype=np.int64)
    np.add.at(counts, (b, df["event"].to_numpy()), 1)
    return Hist(time=np.arange(n_bins, dtype=float) * bin_width, counts=counts)


def strata(case: str) -> list[str]:
    return list(expected(case)["strata"].keys())


def as_float(values: list) -> np.ndarray:
    """R's values with null (NA) as NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)
