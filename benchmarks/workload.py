"""Synthetic registries for the benchmarks: integer day times, two competing causes, two groups."""

from __future__ import annotations

import numpy as np
import pandas as pd

from protocol.plan import parse_plan
from site_node.prepared import PreparedData

PLAN_TEXT = """
[plan]
title = "benchmark"
bin_width = {bin_width}
horizon = 3650
conf_type = "log-log"

[endpoints.e]
time = "time"
event = "event"
causes = {{ 1 = "relapse", 2 = "death" }}

[variables.group]
levels = ["a", "b"]

[[analyses]]
name = "km"
kind = "km"
endpoint = "e"
cause = "relapse"
times = [365, 730]

[[analyses]]
name = "cif"
kind = "cif"
endpoint = "e"
times = [365, 730]

[[analyses]]
name = "logrank"
kind = "logrank"
endpoint = "e"
cause = "relapse"
groups = "group"
"""


def plan(bin_width: int = 1):
    return parse_plan(PLAN_TEXT.format(bin_width=bin_width))


def frame(n: int, rng: np.random.Generator) -> pd.DataFrame:
    group = rng.integers(0, 2, n)
    t_event = rng.exponential(np.where(group == 0, 1500.0, 1100.0))
    t_cens = rng.uniform(30, 4000, n)
    cause = rng.integers(1, 3, n)
    time = np.ceil(np.minimum(t_event, t_cens)).astype(np.int64)
    event = np.where(t_event <= t_cens, cause, 0)
    return pd.DataFrame({"time": time, "event": event, "group": np.where(group == 0, "a", "b")})


def prepared(df: pd.DataFrame, name: str = "site") -> PreparedData:
    return PreparedData(source=name, n_rows=len(df), times={"e": df["time"].to_numpy(float)},
                        outcomes={"e": df["event"].to_numpy(np.int64)},
                        levels={"group": (df["group"].to_numpy() == "b").astype(np.int64)})
