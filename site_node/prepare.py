"""From a site's raw export to validated, plan-shaped columns (``PreparedData``).

``prepare_site_data(plan, path, mapping)`` reads only the columns the plan's analyses use,
renames and recodes them through the site's mapping (site_node/mapping.py), validates every
row, derives the endpoints and returns ``PreparedData``; or raises one ``DataError`` that lists
every problem found, one line per column and kind of problem, with the rows as a person
counts them in the file (site_node/reader.py) and the offending values::

    data file export.csv: 2 problems, nothing was computed:
      column 'time': negative time in rows 3, 8 (values '-1', '-20.5')
      column 'Status' (plan column 'status'): unknown event code in rows 4, 5, 7 (values '3', 'x'); \
the plan's codes are 0 (censored), 1 (death)

Rules:
- Times (column endpoints) must be numbers, finite and >= 0, in the plan's time unit.
- Event codes are integers (text such as "1" or "1.0", or numbers) after the mapping's
  ``[codes.*]``; each must be one of the endpoint's ``censored`` codes (outcome 0) or one of
  its causes (outcome 1..K, the causes ordered by code).
- Endpoints from dates: time = (the first of the cause dates, else the last follow-up) minus
  the origin, in days divided by ``DAYS_PER_UNIT[plan.time_unit]``; the outcome is the cause
  whose date comes first, and where two cause dates fall on the same day, the cause listed
  first in the plan's ``dates`` table. Dates are calendar days (a time of day is ignored).
  Errors: a date that does not parse, a missing origin, a missing last follow-up when there is
  no cause date, a cause date before the origin, a last follow-up before the origin or before
  a cause date. A cause date on the origin day gives time 0.
- Levels are compared as text after trimming spaces and the mapping; a whole number stored as
  a number (1.0) or written as "1.0" reads as "1". A value that is no level is an error.
- Numbers (numeric variables) must parse, be finite and lie within the variable's ``range``;
  they are sent as round(x * 10**decimals) (round half to even).
- A missing value (an empty cell, or one of the mapping's ``[file] missing`` texts) in a
  variable follows the variable's ``missing``: "error" refuses the data, "drop" and "count"
  give level -1 (numbers: ``missing`` True) and are counted in ``left_out``. Times, event
  codes and origin dates are never optional.
- The horizon is not applied here; the tallies censor at it (site_node/tally.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from protocol.errors import DataError
from protocol.plan import DAYS_PER_UNIT, Endpoint, Plan, Variable
from site_node.mapping import SiteMapping
from site_node.prepared import PreparedData
from site_node.reader import STRING, RawExport, read_export

MAX_ROWS_SHOWN = 10
MAX_VALUES_SHOWN = 5
_ISO_TIME_OF_DAY = r"[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"


# ----------------------------------------------------------------------- what the plan reads


def used_endpoints(plan: Plan) -> list[Endpoint]:
    names = dict.fromkeys(a.endpoint for a in plan.analyses if a.endpoint is not None)
    return [plan.endpoint(n) for n in names]


def used_variables(plan: Plan) -> list[Variable]:
    names: dict[str, None] = {}
    for a in plan.analyses:
        strata = () if a.site_strata else a.strata  # "site" is not a column
        for v in (*strata, a.groups, a.variable, *a.variables, *a.covariates):
            if v is not None:
                names[v] = None
    return [plan.variable(n) for n in names]


@dataclass(frozen=True)
class _Column:
    """One plan column as this site holds it."""

    plan: str                     # the plan's column name
    site: str                     # the column in the site's file
    map_key: str | None           # the mapping's [columns] key that renamed it
    codes: Mapping[str, str | int]
    codes_key: str | None         # the mapping's [codes.KEY] table

    @property
    def label(self) -> str:
        if self.site == self.plan:
            return f"column {self.site!r}"
        return f"column {self.site!r} (plan column {self.plan!r})"


def _resolve(mapping: SiteMapping, plan_name: str, aliases: Iterable[str] = ()) -> _Column:
    keys = [plan_name, *aliases]
    map_key = next((k for k in keys if k in mapping.columns), None)
    codes_key = next((k for k in keys if k in mapping.codes), None)
    return _Column(plan_name, mapping.columns[map_key] if map_key else plan_name, map_key,
                   mapping.codes.get(codes_key, {}) if codes_key else {}, codes_key)


# ----------------------------------------------------------------------------- the report


def _show(v: object) -> str:
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    if isinstance(v, (pd.Timestamp, np.datetime64)):
        return pd.Timestamp(v).strftime("%Y-%m-%d")
    return repr(v)


def _listing(items: list[str], total: int) -> str:
    """The first items shown, then how many more there are."""
    head = ", ".join(items)
    return head if total <= len(items) else f"{head} and {total - len(items)} more"


class _Report:
    """Problems found so far: one line per column and kind of problem, in the order found."""

    def __init__(self, raw: RawExport):
        self.raw = raw
        self.rows = raw.frame.index.to_numpy()
        self.lines: dict[str, None] = {}

    def add(self, col: _Column, what: str, bad: np.ndarray, show_values: bool = True, hint: str = "",
            values: np.ndarray | None = None) -> None:
        if not bad.any():
            return
        rows = self.rows[bad]
        word = self.raw.row_word
        where = f"{word} {rows[0]}" if rows.size == 1 else \
            f"{word}s {_listing([str(r) for r in rows[:MAX_ROWS_SHOWN]], rows.size)}"
        line = f"  {col.label}: {what} in {where}"
        if show_values:
            raw = values[bad] if values is not None else self.raw.frame[col.site][bad].to_numpy(dtype=object)
            distinct = pd.unique(pd.Series(raw, dtype=object).dropna())
            if distinct.size:
                shown = [_show(v) for v in distinct[:MAX_VALUES_SHOWN]]
                line += f" ({'value' if distinct.size == 1 else 'values'} {_listing(shown, distinct.size)})"
        if hint:
            line += f"; {hint}"
        self.lines[line] = None

    def raise_if_any(self, unused_hint: str) -> None:
        if not self.lines:
            return
        n = len(self.lines)
        text = f"data file {self.raw.source}: {n} problem{'s' if n > 1 else ''}, nothing was computed:\n"
        text += "\n".join(self.lines) + unused_hint
        raise DataError(text)


# --------------------------------------------------------------------------- value parsing


@dataclass(frozen=True)
class _Distinct:
    """A column as its distinct values: per row an index into them (-1 where missing)."""

    index: np.ndarray          # int64, per row
    text: np.ndarray           # object array of str, per distinct value, after trimming and the mapping


def _arrow(s: pd.Series) -> pa.Array:
    """The pyarrow array behind a text column, in one chunk."""
    arr = pa.array(s.array)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _number_text(x: np.ndarray) -> np.ndarray:
    whole = np.isfinite(x) & (x == np.round(x)) & (np.abs(x) < 2.0**53)
    return np.where(whole, np.where(whole, x, 0).astype(np.int64).astype(str), x.astype(str)).astype(object)


def _cell_text(v: object) -> str:
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return str(_number_text(np.array([float(v)]))[0])
    if isinstance(v, (pd.Timestamp, np.datetime64)) or hasattr(v, "isoformat"):
        return pd.Timestamp(v).strftime("%Y-%m-%d")
    return str(v).strip()


def _distinct(s: pd.Series, codes: Mapping[str, str | int], missing: tuple[str, ...]) -> _Distinct:
    """Distinct values as trimmed text, recoded by the mapping; missing texts give index -1."""
    if isinstance(s.dtype, pd.ArrowDtype):
        enc = pc.dictionary_encode(_arrow(s))
        index = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        text = pd.Series(enc.dictionary.to_numpy(zero_copy_only=False), dtype=object).str.strip().to_numpy()
    else:
        index, uniques = pd.factorize(s, use_na_sentinel=True)
        index = index.astype(np.int64)
        values = np.asarray(uniques)
        if values.dtype.kind == "f":
            text = _number_text(values.astype(float))
        elif values.dtype.kind == "M":
            text = pd.DatetimeIndex(values).strftime("%Y-%m-%d").to_numpy(dtype=object)
        else:
            text = np.array([_cell_text(v) for v in values], dtype=object)  # distinct values, not rows
    if codes:
        text = pd.Series(text, dtype=object).map(lambda t: str(codes.get(t, t))).to_numpy(dtype=object)
    # Trimming or recoding can merge distinct values ("1 " and "1"); merge their indices too.
    merged, text = pd.factorize(pd.Series(text, dtype=object))
    text = np.asarray(text, dtype=object)
    gone = np.isin(text, np.array(missing, dtype=object))
    remap = np.where(gone[merged], -1, merged).astype(np.int64)
    index = np.where(index >= 0, remap[np.maximum(index, 0)] if remap.size else -1, -1)
    return _Distinct(index, text)


def _as_text_series(d: _Distinct, like: pd.Series) -> pd.Series:
    """A recoded column back as a text column (for numbers and dates with a [codes] table)."""
    values = np.where(d.index >= 0, d.text[np.maximum(d.index, 0)] if d.text.size else None, None)
    return pd.Series(pa.array(values, type=pa.string(), from_pandas=True), dtype=STRING, index=like.index)


@dataclass(frozen=True)
class _Numbers:
    x: np.ndarray              # float64, NaN where missing or not a number
    missing: np.ndarray
    bad: np.ndarray            # present but not a number


def _numbers(s: pd.Series, missing_texts: tuple[str, ...], decimal: str) -> _Numbers:
    n = len(s)
    if isinstance(s.dtype, pd.ArrowDtype):
        trimmed = pc.utf8_trim_whitespace(_arrow(s))
        missing = pc.or_(pc.is_null(trimmed),
                         pc.fill_null(pc.is_in(trimmed, value_set=pa.array(missing_texts, type=pa.string())), False))
        filled = pc.if_else(missing, "0", trimmed)
        if decimal == ",":
            filled = pc.replace_substring(filled, ",", ".")
        miss = missing.to_numpy(zero_copy_only=False).astype(bool)
        try:
            x = pc.cast(filled, pa.float64()).to_numpy(zero_copy_only=False).astype(float)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # Some value is not a number; pandas' parser finds which ones, once per distinct text.
            enc = pc.dictionary_encode(filled)
            x_u = pd.to_numeric(pd.Series(enc.dictionary.to_numpy(zero_copy_only=False), dtype=object),
                                errors="coerce").to_numpy(dtype=float)
            x = x_u[pc.fill_null(enc.indices, 0).to_numpy(zero_copy_only=False)]
    elif s.dtype.kind in "fiub":
        x = s.to_numpy(dtype=float)
        miss = np.isnan(x)
    elif s.dtype.kind == "M":
        miss = s.isna().to_numpy()
        return _Numbers(np.full(n, np.nan), miss, ~miss)
    else:
        index, uniques = pd.factorize(s, use_na_sentinel=True)
        text = np.array([_cell_text(v) if isinstance(v, str) else v for v in np.asarray(uniques)], dtype=object)
        is_text = np.array([isinstance(v, str) for v in text], dtype=bool)
        miss_u = is_text & np.isin(text, np.array(missing_texts, dtype=object))
        if decimal == ",":
            text = np.array([t.replace(",", ".") if isinstance(t, str) else t for t in text], dtype=object)
        numeric = np.array([isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                            for v in text], dtype=bool)
        x_u = pd.to_numeric(pd.Series(np.where(is_text | numeric, text, None), dtype=object),
                            errors="coerce").to_numpy(dtype=float)
        x_u[miss_u] = np.nan
        index = index.astype(np.int64)
        x = np.where(index >= 0, x_u[np.maximum(index, 0)] if x_u.size else np.nan, np.nan)
        miss = (index < 0) | (miss_u[np.maximum(index, 0)] if miss_u.size else True)
    bad = np.isnan(x) & ~miss
    x = np.where(miss, np.nan, x)
    return _Numbers(x, miss, bad)


@dataclass(frozen=True)
class _Dates:
    days: np.ndarray           # int64 days since 1970-01-01, 0 where missing or bad
    missing: np.ndarray
    bad: np.ndarray


def _parse_date_text(text: pd.Series, fmt: str | None) -> np.ndarray:
    """datetime64[D] per text, NaT where it does not parse."""
    if fmt:
        parsed = pd.to_datetime(text, format=fmt, errors="coerce")
    else:
        parsed = pd.to_datetime(text.str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
        tail = text.str.slice(10)
        parsed = parsed.where((tail == "") | tail.str.fullmatch(_ISO_TIME_OF_DAY).fillna(False).astype(bool))
    return parsed.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")


def _dates(s: pd.Series, fmt: str | None, missing_texts: tuple[str, ...],
           codes: Mapping[str, str | int]) -> _Dates:
    n = len(s)
    if s.dtype.kind == "M":
        miss = s.isna().to_numpy()
        days = s.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")
        return _Dates(np.where(miss, 0, days.astype(np.int64)), miss, np.zeros(n, dtype=bool))
    if s.dtype.kind in "fiub":
        miss = np.isnan(s.to_numpy(dtype=float))
        return _Dates(np.zeros(n, dtype=np.int64), miss, ~miss)
    # Text (and, from Excel, cells mixing dates and text): parse each distinct value once.
    if isinstance(s.dtype, pd.ArrowDtype):
        enc = pc.dictionary_encode(_arrow(s))
        index = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        uniques = enc.dictionary.to_numpy(zero_copy_only=False)
    else:
        index, uniques = pd.factorize(s, use_na_sentinel=True)
        index = index.astype(np.int64)
        uniques = np.asarray(uniques, dtype=object)
    is_text = np.array([isinstance(v, str) for v in uniques], dtype=bool)
    is_date = np.array([isinstance(v, (pd.Timestamp, np.datetime64)) or
                        (hasattr(v, "year") and hasattr(v, "month") and not isinstance(v, str)) for v in uniques],
                       dtype=bool)
    text = pd.Series(np.where(is_text, uniques, ""), dtype=object).str.strip()
    if codes:
        # Recode text only: a date cell of a workbook is a date whatever the text format.
        text = text.map(lambda t: str(codes.get(t, t)))
    miss_u = is_text & text.isin(missing_texts).to_numpy()
    days_u = np.full(len(uniques), np.datetime64("NaT"), dtype="datetime64[D]")
    parse = is_text & ~miss_u
    if parse.any():
        days_u[parse] = _parse_date_text(text[parse].reset_index(drop=True), fmt)
    if is_date.any():
        days_u[is_date] = pd.to_datetime(pd.Series(uniques[is_date], dtype=object)).to_numpy(
            dtype="datetime64[ns]").astype("datetime64[D]")
    ok_u = ~np.isnat(days_u)
    safe = np.maximum(index, 0)
    has = index >= 0
    miss = ~has | (miss_u[safe] if miss_u.size else True)
    ok = has & (ok_u[safe] if ok_u.size else False)
    days = np.where(ok, days_u.astype(np.int64)[safe] if ok_u.size else 0, 0)
    return _Dates(days, miss, ~miss & ~ok)


# --------------------------------------------------------------------------- the prepare step


class _Preparer:
    """Validates one export column by column, collecting problems in one report."""

    def __init__(self, plan: Plan, raw: RawExport, mapping: SiteMapping, columns: dict[str, _Column]):
        self.plan = plan
        self.raw = raw
        self.mapping = mapping
        self.columns = columns
        self.report = _Report(raw)
        self.n = len(raw.frame)
        self._dates: dict[str, _Dates] = {}

    def text_or_recoded(self, col: _Column) -> pd.Series:
        """The column, recoded through the mapping's [codes] table when it has one."""
        s = self.raw.frame[col.site]
        if not col.codes:
            return s
        return _as_text_series(_distinct(s, col.codes, self.mapping.file.missing), s)

    # ---- column endpoints
    def column_endpoint(self, ep: Endpoint) -> tuple[np.ndarray, np.ndarray]:
        tcol, ecol = self.columns[ep.time], self.columns[ep.event]  # type: ignore[index]
        num = _numbers(self.text_or_recoded(tcol), self.mapping.file.missing, self.mapping.file.decimal)
        r = self.report
        r.add(tcol, "missing time", num.missing, show_values=False)
        r.add(tcol, "time is not a number", num.bad)
        finite = np.isfinite(num.x)
        r.add(tcol, "time is not a finite number", ~num.missing & ~num.bad & ~finite)
        r.add(tcol, "negative time", finite & (num.x < 0))

        d = _distinct(self.raw.frame[ecol.site], ecol.codes, self.mapping.file.missing)
        text = pd.Series(d.text, dtype=object)
        integer = text.str.fullmatch(r"[+-]?\d+(?:\.0*)?").fillna(False).to_numpy(dtype=bool)
        code_u = np.where(integer, pd.to_numeric(text.where(integer, "0"), errors="coerce").fillna(0), 0)
        code_u = code_u.astype(np.int64)
        outcome_of = {c: 0 for c in ep.censored} | {c.code: i for i, c in enumerate(ep.causes, start=1)}
        out_u = pd.Series(code_u).map(outcome_of).to_numpy(dtype=float)
        out_u[~integer] = np.nan
        known_u = ~np.isnan(out_u)
        safe = np.maximum(d.index, 0)
        missing = d.index < 0
        known = ~missing & (known_u[safe] if known_u.size else False)
        allowed = ", ".join([f"{c} (censored)" for c in ep.censored] + [f"{c.code} ({c.name})" for c in ep.causes])
        r.add(ecol, "missing event code", missing, show_values=False)
        r.add(ecol, "unknown event code", ~missing & ~known, hint=f"the plan's codes are {allowed}")
        outcome = np.where(known, np.nan_to_num(out_u)[safe] if out_u.size else 0, 0).astype(np.int64)
        return np.where(finite, num.x, 0.0), outcome

    # ---- date endpoints
    def dates(self, col: _Column) -> _Dates:
        if col.plan not in self._dates:
            fmt = self.mapping.date_format
            d = _dates(self.raw.frame[col.site], fmt, self.mapping.file.missing, col.codes)
            how = f"format {fmt!r}" if fmt else "expected YYYY-MM-DD; set [dates] format in the site's mapping"
            self.report.add(col, "not a date", d.bad, hint=how)
            self._dates[col.plan] = d
        return self._dates[col.plan]

    def date_endpoint(self, ep: Endpoint) -> tuple[np.ndarray, np.ndarray]:
        r = self.report
        ocol, fcol = self.columns[ep.origin], self.columns[ep.last_followup]  # type: ignore[index]
        origin = self.dates(ocol)
        r.add(ocol, "missing origin date", origin.missing, show_values=False)
        o_ok = ~origin.missing & ~origin.bad
        never = np.iinfo(np.int64).max
        cause_days = []
        any_given = np.zeros(self.n, dtype=bool)   # a cause date, even one that did not parse
        for _, column in ep.dates:
            ccol = self.columns[column]
            d = self.dates(ccol)
            any_given |= ~d.missing
            present = ~d.missing & ~d.bad
            r.add(ccol, f"date before the origin date in {ocol.site!r}", present & o_ok & (d.days < origin.days))
            cause_days.append(np.where(present, d.days, never))
        stacked = np.vstack(cause_days)
        first = stacked.min(axis=0)
        which = stacked.argmin(axis=0)   # the first listed cause wins a tie, as documented
        has_event = first != never
        fu = self.dates(fcol)
        fu_ok = ~fu.missing & ~fu.bad
        r.add(fcol, "missing last follow-up, and no event date", fu.missing & ~any_given, show_values=False)
        r.add(fcol, f"last follow-up before the origin date in {ocol.site!r}", fu_ok & o_ok & (fu.days < origin.days))
        for (_, column), days in zip(ep.dates, cause_days, strict=True):
            after = (days != never) & fu_ok & (fu.days < days)
            r.add(fcol, f"last follow-up before the date in {self.columns[column].site!r}", after)
        end = np.where(has_event, first, fu.days)
        span = np.where(o_ok, end - origin.days, 0)
        time = np.maximum(span, 0) / DAYS_PER_UNIT[self.plan.time_unit]
        return time.astype(float), np.where(has_event, which + 1, 0).astype(np.int64)

    # ---- variables
    def categorical(self, v: Variable, left_out: dict[str, int]) -> np.ndarray:
        col = self.columns[v.source]
        d = _distinct(self.raw.frame[col.site], col.codes, self.mapping.file.missing)
        text = pd.Series(d.text, dtype=object)
        lookup = {lv: i for i, lv in enumerate(v.levels)}  # type: ignore[arg-type]
        level_u = text.map(lookup)
        # A whole number written as a float ("1.0") is the level "1".
        dotted = level_u.isna().to_numpy() & text.str.contains(".", regex=False).to_numpy(dtype=bool)
        if dotted.any():
            whole = text[dotted].str.replace(r"^([+-]?\d+)\.0*$", r"\1", regex=True)
            level_u[dotted] = whole.map(lookup)
        level_u = level_u.to_numpy(dtype=float)
        safe = np.maximum(d.index, 0)
        missing = d.index < 0
        known = ~missing & (~np.isnan(level_u)[safe] if level_u.size else False)
        self.report.add(col, "unknown level", ~missing & ~known,
                        hint=f"the plan's levels are {', '.join(repr(x) for x in v.levels)}")  # type: ignore[union-attr]
        self._missing(v, col, missing, left_out)
        return np.where(known, np.nan_to_num(level_u)[safe] if level_u.size else 0, -1).astype(np.int64)

    def numeric(self, v: Variable, left_out: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        col = self.columns[v.source]
        num = _numbers(self.text_or_recoded(col), self.mapping.file.missing, self.mapping.file.decimal)
        self.report.add(col, "not a number", num.bad)
        finite = np.isfinite(num.x)
        self.report.add(col, "not a finite number", ~num.missing & ~num.bad & ~finite)
        lo, hi = v.range  # type: ignore[misc]
        self.report.add(col, f"outside the plan's range [{lo:g}, {hi:g}]", finite & ((num.x < lo) | (num.x > hi)))
        self._missing(v, col, num.missing, left_out)
        fixed = np.round(np.where(finite, num.x, 0.0) * 10.0**v.decimals).astype(np.int64)
        return fixed, num.missing

    def _missing(self, v: Variable, col: _Column, missing: np.ndarray, left_out: dict[str, int]) -> None:
        if v.missing == "error":
            self.report.add(col, f"missing {v.name} (the plan does not allow missing values)", missing,
                            show_values=False)
        elif missing.any():
            how = "dropped" if v.missing == "drop" else "counted as missing"
            left_out[f"missing {v.name} ({how})"] = int(missing.sum())


def _check_codes(mapping: SiteMapping, columns: dict[str, _Column],
                 endpoints: list[Endpoint], variables: list[Variable]) -> None:
    """Every code the mapping produces for a column the plan uses must be one the plan knows."""
    problems: list[str] = []
    for ep in endpoints:
        if ep.from_dates:
            continue
        col = columns[ep.event]  # type: ignore[index]
        allowed = set(ep.censored) | {c.code for c in ep.causes}
        shown = ", ".join(str(c) for c in sorted(allowed))
        for site_code, plan_code in col.codes.items():
            if plan_code == "":
                continue
            ok = isinstance(plan_code, int) or bool(re.fullmatch(r"[+-]?\d+", str(plan_code)))
            if not ok or int(plan_code) not in allowed:
                problems.append(f"[codes.{col.codes_key}] {site_code!r} = {plan_code!r}: not a code of endpoint "
                                f"{ep.name!r} (its codes: {shown})")
    for v in variables:
        col = columns[v.source]
        for site_code, plan_code in col.codes.items():
            text = str(plan_code)
            if text == "":
                continue
            if v.levels is not None and text not in v.levels:
                problems.append(f"[codes.{col.codes_key}] {site_code!r} = {plan_code!r}: not a level of variable "
                                f"{v.name!r} (its levels: {', '.join(repr(x) for x in v.levels)})")
            elif v.levels is None and not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
                problems.append(f"[codes.{col.codes_key}] {site_code!r} = {plan_code!r}: variable {v.name!r} "
                                "is numeric; map a code to a number, or to \"\" for missing")
    if problems:
        raise DataError(f"mapping file {mapping.source}: " + (problems[0] if len(problems) == 1 else
                        f"{len(problems)} problems:\n  " + "\n  ".join(problems)))


def _unused_entries(mapping: SiteMapping, used: set[str]) -> str:
    keys = [f"[columns] {k}" for k in mapping.columns if k not in used]
    keys += [f"[codes.{k}]" for k in mapping.codes if k not in used]
    if not keys:
        return ""
    return f"\n(mapping file {mapping.source} has entries that no column of this plan uses: {', '.join(keys)})"


def prepare_site_data(plan: Plan, path: str | Path, mapping: SiteMapping | None = None) -> PreparedData:
    """Read, map and validate a site's export for a plan; every problem in one DataError."""
    mapping = mapping or SiteMapping()
    endpoints, variables = used_endpoints(plan), used_variables(plan)
    columns: dict[str, _Column] = {}
    for ep in endpoints:
        for name in ep.columns:
            columns[name] = _resolve(mapping, name)
    for v in variables:
        columns[v.source] = _resolve(mapping, v.source, [v.name] if v.name != v.source else [])
    known_keys = set(columns) | {v.name for v in variables}
    unused = _unused_entries(mapping, known_keys)
    _check_codes(mapping, columns, endpoints, variables)

    raw = read_export(path, [c.site for c in columns.values()], mapping.file)
    absent = [c for c in columns.values() if c.site not in raw.frame.columns]
    if absent:
        have = ", ".join(repr(h) for h in raw.header[:30]) + (" ..." if len(raw.header) > 30 else "")
        lines = []
        for c in absent:
            via = f"; the mapping file {mapping.source} names it in [columns] {c.map_key}" if c.map_key else ""
            lines.append(f"  {c.label}: not in the file{via}")
        n = len(lines)
        raise DataError(f"data file {raw.source}: {n} missing column{'s' if n > 1 else ''}, nothing was computed:\n"
                        + "\n".join(lines) + f"\n(the file's columns: {have})" + unused)

    prep = _Preparer(plan, raw, mapping, columns)
    times: dict[str, np.ndarray] = {}
    outcomes: dict[str, np.ndarray] = {}
    for ep in endpoints:
        times[ep.name], outcomes[ep.name] = prep.date_endpoint(ep) if ep.from_dates else prep.column_endpoint(ep)
    left_out: dict[str, int] = {}
    if raw.empty_rows:
        left_out["empty rows (ignored)"] = raw.empty_rows
    levels: dict[str, np.ndarray] = {}
    fixed: dict[str, np.ndarray] = {}
    missing: dict[str, np.ndarray] = {}
    for v in variables:
        if v.is_numeric:
            fixed[v.name], missing[v.name] = prep.numeric(v, left_out)
        else:
            levels[v.name] = prep.categorical(v, left_out)
    prep.report.raise_if_any(unused)
    return PreparedData(source=raw.source, n_rows=prep.n, times=times, outcomes=outcomes, levels=levels,
                        fixed=fixed, missing=missing, left_out=left_out)
