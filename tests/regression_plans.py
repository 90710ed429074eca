"""Plans for the Cox / Fine-Gray fixtures (tests/fixtures/expected/cox) and their site splits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from fedsurv.site_input import SiteInput

FIX = Path(__file__).parent / "fixtures"

# fixture -> (csv, time, event, numeric covariates with their range, factors with levels)
CASES = {
    "lung_age_sex_ecog_w1": ("lung.csv", "time", "event", {"age": (18, 100), "sex": (1, 2), "ph.ecog": (0, 4)}, {}),
    "lung_age_sex_ecog_w30": ("lung.csv", "time", "event", {"age": (18, 100), "sex": (1, 2), "ph.ecog": (0, 4)}, {}),
    "veteran_trt_karno_age_celltype_w1": ("veteran.csv", "time", "event",
                                          {"trt": (1, 2), "karno": (0, 100), "age": (18, 100)},
                                          {"celltype": ["adeno", "large", "smallcell", "squamous"]}),
    "colon_cr_recurrence_rx_age_nodes_w7": ("colon_cr.csv", "cr_time", "cr_event",
                                            {"age": (18, 100), "nodes": (0, 60)},
                                            {"rx": ["Lev", "Lev+5FU", "Obs"]}),
}


def expected(case: str) -> dict:
    with open(FIX / "expected" / "cox" / f"{case}.json") as f:
        return json.load(f)


def data(case: str) -> pd.DataFrame:
    return pd.read_csv(FIX / "data" / CASES[case][0])


def plan_text(case: str, models: str, centers: dict[str, float] | None = None, extra_vars: str = "",
              horizon: float | None = None, scales: dict[str, float] | None = None) -> str:
    """A plan over the case's endpoint and covariates (in the fixture's order) plus `models`;
    the horizon defaults to the last time (rounded up to the grid), as R's fit uses every time."""
    _, tcol, ecol, numeric, factors = CASES[case]
    meta = expected(case)["meta"]
    w = meta["bin_width"]
    horizon = horizon or math.ceil(data(case)[tcol].max() / w) * w
    causes = '{ 1 = "recurrence", 2 = "death" }' if case.startswith("colon") else '{ 1 = "death" }'
    out = [f'[plan]\ntitle = "{case}"\ntime_unit = "days"\nbin_width = {w}\nhorizon = {horizon}\n',
           f'[endpoints.ep]\ntime = "{tcol}"\nevent = "{ecol}"\ncauses = {causes}\n']
    for name, (lo, hi) in numeric.items():
        c = f"\ncenter = {centers[name]}" if centers and name in centers else ""
        c += f"\nscale = {scales[name]}" if scales and name in scales else ""
        out.append(f'[variables."{name}"]\ntype = "numeric"\nrange = [{lo}, {hi}]\nmissing = "drop"{c}\n')
    for name, levels in factors.items():
        out.append(f'[variables."{name}"]\nlevels = {json.dumps(levels)}\n')
    out.append(extra_vars)
    out.append(models)
    return "\n".join(out)


def covariates(case: str) -> list[str]:
    return list(expected(case)["meta"]["covariates"])


def model(name: str, case: str, kind: str = "cox", **keys) -> str:
    lines = [f'[[analyses]]\nname = "{name}"\nkind = "{kind}"\nendpoint = "ep"',
             f'cause = "{"recurrence" if case.startswith("colon") else "death"}"',
             f"covariates = {json.dumps(covariates(case))}"]
    for k, v in keys.items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def split(case: str, n_sites: int, folder: Path, seed: int = 0) -> list[SiteInput]:
    df = data(case)
    site = np.random.default_rng(seed).integers(0, n_sites, len(df))
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n_sites):
        path = folder / f"site{k:02d}.csv"
        df[site == k].to_csv(path, index=False)
        out.append(SiteInput(f"site{k:02d}", path))
    return out
