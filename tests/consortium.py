"""Build small consortia from the R fixtures' data: plans and per-site CSV files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedsurv.site_input import SiteInput
from r_reference import DATA


def plan_text(case: str, conf_type: str = "log", bin_width: float = 1, extra: str = "") -> str:
    """A plan asking for what the R fixture of `case` holds, on its data's own columns."""
    if case in ("lung_sex", "lung_inst"):
        group, levels, times = ("sex", '["1", "2"]', "[90, 180, 365, 730]") if case == "lung_sex" else \
            ("inst", str([str(i) for i in (1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 15, 16, 21, 22, 26, 32, 33)]).replace("'", '"'),
             "[180, 365]")
        ep = 'time = "time"\nevent = "event"\ncauses = { 1 = "death" }'
        horizon, causes = 1100, ["death"]
    elif case == "veteran_trt":
        group, levels, times = "trt", '["1", "2"]', "[30, 90, 180, 365]"
        ep = 'time = "time"\nevent = "event"\ncauses = { 1 = "death" }'
        horizon, causes = 1000, ["death"]
    else:
        group, levels, times = "rx", '["Lev", "Lev+5FU", "Obs"]', "[365, 730, 1826]"
        ep = 'time = "cr_time"\nevent = "cr_event"\ncauses = { 1 = "recurrence", 2 = "death" }'
        horizon, causes = 3400, ["recurrence", "death"]
    missing = '\nmissing = "drop"' if group == "inst" else ""
    text = f"""
[plan]
title = "{case}"
bin_width = {bin_width}
horizon = {horizon}
conf_type = "{conf_type}"

[endpoints.ep]
{ep}

[variables.{group}]
levels = {levels}{missing}

[[analyses]]
name = "km"
kind = "km"
endpoint = "ep"
cause = "{causes[0]}"
strata = ["{group}"]
times = {times}

[[analyses]]
name = "logrank"
kind = "logrank"
endpoint = "ep"
cause = "{causes[0]}"
groups = "{group}"
"""
    if len(causes) > 1:
        text += f"""
[[analyses]]
name = "km_any"
kind = "km"
endpoint = "ep"
cause = "any"
strata = ["{group}"]
times = {times}

[[analyses]]
name = "cif"
kind = "cif"
endpoint = "ep"
strata = ["{group}"]
times = {times}
"""
    return text + extra


def csv_for(case: str) -> Path:
    return DATA / {"lung_sex": "lung.csv", "lung_inst": "lung.csv", "veteran_trt": "veteran.csv",
                   "colon_cr_rx": "colon_cr.csv"}[case]


def split_sites(df: pd.DataFrame, assignment: np.ndarray, folder: Path) -> list[SiteInput]:
    """Write each site's rows (assignment[i] = site number of row i) to its own CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    sites = []
    for k in np.unique(assignment):
        path = folder / f"site{k:02d}.csv"
        df[assignment == k].to_csv(path, index=False)
        sites.append(SiteInput(f"site{k:02d}", path))
    return sites
