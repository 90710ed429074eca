"""A synthetic consortium of sarcoma centers, shaped after the TM-ILP study (Lesensky et al.,
Clin Orthop Relat Res 2025): registry-style dated columns per center, different sizes, export
formats and local column names, so the demo exercises the whole site path.

Targets (pooled, in expectation): overall survival about 77% at 12 and 58% at 24 months,
local-recurrence-free survival about 93% and 84%, 12-month cumulative incidence of amputation
about 13% with death competing, no early severe complications.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DAYS_PER_MONTH = 365.25 / 12
# Monthly hazards fitted to the study's survival at 12 and 24 months (exponential model).
DEATH_HAZARD = 0.0222
RECURRENCE_HAZARD = 0.0066
AMPUTATION_PROB = 0.14          # amputations happen in the first year after a failed ILP
HISTOLOGY = ("UPS", "myxoid liposarcoma", "leiomyosarcoma", "synovial sarcoma", "MPNST", "other")
HISTOLOGY_P = (0.18, 0.18, 0.16, 0.14, 0.09, 0.25)


@dataclass(frozen=True)
class DemoCenter:
    name: str
    n: int
    fmt: str             # csv | parquet | xlsx
    local_names: bool    # exports with its own column names and codes (needs a mapping file)


CENTERS = (
    DemoCenter("prague", 34, "csv", False),
    DemoCenter("vienna", 61, "xlsx", True),
    DemoCenter("leiden", 88, "parquet", False),
    DemoCenter("milan", 117, "csv", False),
    DemoCenter("munich", 152, "csv", True),
    DemoCenter("warsaw", 203, "parquet", False),
)

# The consortium's data dictionary -> a German-language export, as vienna and munich keep it.
LOCAL_COLUMNS = {
    "ilp_date": "ILP_Datum", "amputation_date": "Amputation_Datum", "lr_date": "Lokalrezidiv_Datum",
    "death_date": "Todesdatum", "last_followup": "Letzte_Nachsorge", "sex": "Geschlecht", "age": "Alter",
    "limb": "Extremitaet", "histology": "Histologie", "severe_complication": "Schwere_Komplikation",
}
LOCAL_CODES = {"sex": {"w": "F", "m": "M"}, "limb": {"OE": "upper", "UE": "lower"},
               "severe_complication": {"nein": "0", "ja": "1"}}
LOCAL_DATE_FORMAT = "%d.%m.%Y"


def simulate_center(center: DemoCenter, rng: np.random.Generator) -> pd.DataFrame:
    """One center's registry export in the consortium's data dictionary."""
    n = center.n
    start, end, cutoff = np.datetime64("2016-07-01"), np.datetime64("2023-06-30"), np.datetime64("2024-06-30")
    ilp = start + rng.integers(0, int((end - start).astype(int)), n).astype("timedelta64[D]")
    potential_fu = (cutoff - ilp).astype(float) / DAYS_PER_MONTH
    lost = rng.exponential(1 / 0.004, n)                  # a few patients are lost to follow-up
    death = rng.exponential(1 / DEATH_HAZARD, n)
    recurrence = rng.exponential(1 / RECURRENCE_HAZARD, n)
    amputation = np.where(rng.random(n) < AMPUTATION_PROB, rng.uniform(1.0, 12.0, n), np.inf)
    followup = np.minimum(potential_fu, lost)
    dead = death <= followup
    last = np.where(dead, death, followup)
    has_lr = recurrence < last
    has_amp = amputation < last

    def date(months: np.ndarray, keep: np.ndarray) -> np.ndarray:
        d = ilp + np.round(months * DAYS_PER_MONTH).astype("timedelta64[D]")
        return np.where(keep, d, np.datetime64("NaT"))

    return pd.DataFrame({
        "patient_id": [f"{center.name[:3].upper()}-{i:04d}" for i in range(1, n + 1)],
        "ilp_date": ilp,
        "amputation_date": date(np.where(has_amp, amputation, 0), has_amp),
        "lr_date": date(np.where(has_lr, recurrence, 0), has_lr),
        "death_date": date(np.where(dead, death, 0), dead),
        "last_followup": date(last, np.ones(n, dtype=bool)),
        "sex": np.where(rng.random(n) < 12 / 34, "F", "M"),
        "age": np.clip(np.round(rng.normal(55, 17, n)), 18, 90).astype(int),
        "limb": np.where(rng.random(n) < 0.62, "lower", "upper"),
        "histology": rng.choice(HISTOLOGY, n, p=HISTOLOGY_P),
        "severe_complication": np.full(n, "0"),
    })


def _local_export(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col, codes in LOCAL_CODES.items():
        out[col] = out[col].map({plan: local for local, plan in codes.items()})
    for col in ("ilp_date", "amputation_date", "lr_date", "death_date", "last_followup"):
        out[col] = pd.to_datetime(out[col]).dt.strftime(LOCAL_DATE_FORMAT).fillna("")
    return out.rename(columns=LOCAL_COLUMNS)


def mapping_toml() -> str:
    """The mapping file a German-language center's operator writes once."""
    lines = ["# Maps the consortium's data dictionary (left) to this center's export (right).", "[columns]"]
    lines += [f'{k} = "{v}"' for k, v in LOCAL_COLUMNS.items()]
    for col, codes in LOCAL_CODES.items():
        lines += ["", f"[codes.{col}]"] + [f'"{local}" = "{plan}"' for local, plan in codes.items()]
    lines += ["", "[dates]", f'format = "{LOCAL_DATE_FORMAT}"', ""]
    return "\n".join(lines)


def write_demo_consortium(out_dir: Path, seed: int = 35) -> dict[str, tuple[Path, Path | None]]:
    """Write every center's export (and mapping where needed); returns name -> (data, mapping)."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[Path, Path | None]] = {}
    for c in CENTERS:
        df = simulate_center(c, rng)
        mapping = None
        if c.local_names:
            df = _local_export(df)
            mapping = out_dir / f"{c.name}_mapping.toml"
            mapping.write_text(mapping_toml())
        else:
            for col in ("ilp_date", "amputation_date", "lr_date", "death_date", "last_followup"):
                df[col] = pd.to_datetime(df[col]).dt.strftime("%Y-%m-%d").fillna("")
        path = out_dir / f"{c.name}.{c.fmt}"
        if c.fmt == "csv":
            df.to_csv(path, index=False)
        elif c.fmt == "parquet":
            df.to_parquet(path, index=False)
        else:
            df.to_excel(path, index=False)
        files[c.name] = (path, mapping)
    return files
