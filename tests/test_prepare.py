"""From a site's export to PreparedData: the three formats, the mapping, and endpoints from dates.

Expected values are written by hand from the rows below (day counts checked on a calendar).
"""

import csv
import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from protocol.errors import DataError
from protocol.plan import parse_plan
from site_node.mapping import load_mapping, parse_mapping
from site_node.prepare import prepare_site_data
from site_node.tally import compute_tallies
from r_reference import DATA

PLAN_TEXT = """
[plan]
title = "prepare"
time_unit = "days"
bin_width = 1
horizon = 1000

[endpoints.os]
time = "time"
event = "status"
censored = [0]
causes = { 1 = "death" }

[endpoints.amp]
origin = "ilp"
dates = { amputation = "amp_date", death = "death_date" }
last_followup = "lfu"

[variables.sex]
levels = ["1", "2"]

[variables.age]
type = "numeric"
decimals = 1
range = [0, 110]
missing = "drop"

[[analyses]]
name = "os"
kind = "km"
endpoint = "os"
strata = ["sex"]

[[analyses]]
name = "amp"
kind = "cif"
endpoint = "amp"

[[analyses]]
name = "table1"
kind = "describe"
variables = ["sex", "age"]
"""
PLAN = parse_plan(PLAN_TEXT)


def d(text):
    return pd.Timestamp(text) if text else pd.NaT


# One row per case of the date rules; the comments give the hand computation.
FRAME = pd.DataFrame({
    "id": ["p1", "p2", "p3", "p4", "p5", "p6"],
    "time": [5.0, 0.0, 12.5, 400.0, 3.0, 5000.0],      # 5000 is past the horizon: kept as is here
    "status": [1, 0, 1, 0, 0, 1],
    "sex": ["1", "2", "2", "1", "2", "1"],
    "age": [63.27, 40.0, 71.44, 55.0, np.nan, 18.0],
    "ilp": [d("2020-01-01"), d("2020-01-01"), d("2019-12-31"), d("2020-06-15"), d("2020-02-28"), d("2020-01-01")],
    "amp_date": [d("2020-03-01"), None, d("2020-02-01"), None, None, None],
    "death_date": [None, d("2020-01-01"), d("2020-02-01"), None, d("2020-03-01"), None],
    "lfu": [d("2021-01-01"), d("2020-01-01"), d("2021-01-01"), d("2021-06-15"), None, d("2023-01-01")],
})
FRAME[["ilp", "amp_date", "death_date", "lfu"]] = FRAME[["ilp", "amp_date", "death_date", "lfu"]].apply(pd.to_datetime)
# 31 (Jan) + 29 (Feb 2020) = 60; same day = 0; Dec 31 -> Feb 1 = 32 (tie: amputation is listed
# first); a year from 2020-06-15 = 365; Feb 28 -> Mar 1 2020 = 2 (leap day); 366 + 365 + 365 = 1096.
AMP_DAYS = np.array([60, 0, 32, 365, 2, 1096], dtype=float)
AMP_OUTCOME = np.array([1, 2, 1, 0, 2, 0])


def write(frame: pd.DataFrame, path):
    if path.suffix == ".csv":
        frame.to_csv(path, index=False, date_format="%Y-%m-%d")
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_excel(path, index=False)
    return path


def assert_same(a, b):
    assert a.n_rows == b.n_rows and a.left_out == b.left_out
    for field in ("times", "outcomes", "levels", "fixed", "missing"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.keys() == y.keys(), field
        for k in x:
            assert x[k].dtype == y[k].dtype, (field, k)
            np.testing.assert_array_equal(x[k], y[k], err_msg=f"{field}[{k}]")


def check_expected(p):
    assert p.n_rows == 6
    np.testing.assert_array_equal(p.times["os"], [5.0, 0.0, 12.5, 400.0, 3.0, 5000.0])
    np.testing.assert_array_equal(p.outcomes["os"], [1, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(p.times["amp"], AMP_DAYS)
    np.testing.assert_array_equal(p.outcomes["amp"], AMP_OUTCOME)
    np.testing.assert_array_equal(p.levels["sex"], [0, 1, 1, 0, 1, 0])
    # round(x * 10): 632.7 -> 633, 714.4 -> 714; the missing age is 0 and flagged.
    np.testing.assert_array_equal(p.fixed["age"], [633, 400, 714, 550, 0, 180])
    np.testing.assert_array_equal(p.missing["age"], [False, False, False, False, True, False])
    assert p.left_out == {"missing age (dropped)": 1}
    for arr in (p.outcomes["os"], p.outcomes["amp"], p.levels["sex"], p.fixed["age"]):
        assert arr.dtype == np.int64
    assert p.times["os"].dtype == np.float64 and p.missing["age"].dtype == bool


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".xlsx"])
def test_each_format_gives_the_hand_computed_data(tmp_path, suffix):
    p = prepare_site_data(PLAN, write(FRAME, tmp_path / f"site{suffix}"))
    check_expected(p)
    assert p.source == str(tmp_path / f"site{suffix}")


def test_csv_parquet_and_excel_give_identical_prepared_data(tmp_path):
    preps = [prepare_site_data(PLAN, write(FRAME, tmp_path / f"site{s}")) for s in (".csv", ".parquet", ".xlsx")]
    assert_same(preps[0], preps[1])
    assert_same(preps[0], preps[2])


def test_months_divide_days_by_the_julian_month(tmp_path):
    plan = parse_plan(PLAN_TEXT.replace('time_unit = "days"', 'time_unit = "months"').replace("1000", "100"))
    p = prepare_site_data(plan, write(FRAME, tmp_path / "site.csv"))
    # 60 days = 60 * 12 / 365.25 months = 1.971252566... ; 1096 days = 36.0082...
    np.testing.assert_allclose(p.times["amp"], AMP_DAYS * 12 / 365.25, rtol=0, atol=1e-15)
    assert p.times["amp"][0] == pytest.approx(1.9712525667351128, abs=1e-15)
    np.testing.assert_array_equal(p.outcomes["amp"], AMP_OUTCOME)
    # Column times are already in the plan's unit and are not converted.
    np.testing.assert_array_equal(p.times["os"], FRAME["time"].to_numpy())


def test_years_and_weeks(tmp_path):
    for unit, per in (("years", 365.25), ("weeks", 7.0)):
        plan = parse_plan(PLAN_TEXT.replace('time_unit = "days"', f'time_unit = "{unit}"').replace("1000", "10"))
        p = prepare_site_data(plan, write(FRAME, tmp_path / "site.csv"))
        np.testing.assert_array_equal(p.times["amp"], AMP_DAYS / per)


def test_mapping_renames_and_recodes_a_local_export(tmp_path):
    local = pd.DataFrame({
        "Patient": FRAME["id"],
        "T_Tage": FRAME["time"].map(lambda x: f"{x:g}".replace(".", ",")),
        "Status": np.where(FRAME["status"] == 1, "verstorben", np.array(["lebend", "verloren"] * 3)),
        "Geschlecht": np.where(FRAME["sex"] == "1", "m", "w"),
        "Alter": FRAME["age"].map(lambda x: "" if np.isnan(x) else f"{x:g}".replace(".", ",")),
        "ILP_Datum": FRAME["ilp"].dt.strftime("%d.%m.%Y"),
        "Amputation": FRAME["amp_date"].dt.strftime("%d.%m.%Y").fillna(""),
        "Tod": FRAME["death_date"].dt.strftime("%d.%m.%Y").fillna(""),
        "Nachsorge": FRAME["lfu"].dt.strftime("%d.%m.%Y").fillna(""),
    })
    path = tmp_path / "wien.csv"
    local.to_csv(path, index=False, sep=";")
    mapping = tmp_path / "wien.toml"
    mapping.write_text("""
[file]
decimal = ","

[columns]
time = "T_Tage"
status = "Status"
sex = "Geschlecht"
age = "Alter"
ilp = "ILP_Datum"
amp_date = "Amputation"
death_date = "Tod"
lfu = "Nachsorge"

[codes.status]
verstorben = 1
lebend = 0
verloren = 0

[codes.sex]
m = "1"
w = "2"

[dates]
format = "%d.%m.%Y"
""")
    check_expected(prepare_site_data(PLAN, path, load_mapping(mapping)))


def test_mapping_by_variable_name_when_the_plan_names_a_column(tmp_path):
    plan = parse_plan(PLAN_TEXT.replace('levels = ["1", "2"]', 'levels = ["1", "2"]\ncolumn = "gender"'))
    frame = FRAME.rename(columns={"sex": "GESCHLECHT"})
    path = write(frame, tmp_path / "site.csv")
    for key in ("sex", "gender"):
        check_expected(prepare_site_data(plan, path, parse_mapping(f'[columns]\n{key} = "GESCHLECHT"')))


def test_code_mapped_to_empty_text_is_missing_and_counted(tmp_path):
    plan = parse_plan(PLAN_TEXT.replace('levels = ["1", "2"]', 'levels = ["1", "2"]\nmissing = "count"'))
    frame = FRAME.assign(sex=["1", "2", "9", "1", "2", "unbekannt"])
    mapping = parse_mapping('[codes.sex]\n"9" = ""\n[file]\nmissing = ["unbekannt"]')
    p = prepare_site_data(plan, write(frame, tmp_path / "site.csv"), mapping)
    np.testing.assert_array_equal(p.levels["sex"], [0, 1, -1, 0, 1, -1])
    assert p.left_out == {"missing sex (counted as missing)": 2, "missing age (dropped)": 1}


def test_whole_numbers_read_as_levels_and_codes(tmp_path):
    # An exporter that writes floats: "1.0" and 1.0 are the level "1" and the event code 1.
    frame = FRAME.assign(sex=[1.0, 2.0, 2.0, 1.0, 2.0, 1.0], status=["1.0", "0", "1", "0.0", "0", "1.00"])
    for suffix in (".csv", ".parquet", ".xlsx"):
        check_expected(prepare_site_data(PLAN, write(frame, tmp_path / f"f{suffix}")))


def test_iso_dates_with_a_time_of_day_and_excel_cells_mixing_dates_and_text(tmp_path):
    frame = FRAME.copy().astype({"ilp": object})
    frame.loc[0, "ilp"] = "2020-01-01 00:00:00"
    frame.loc[1, "ilp"] = "2020-01-01T14:30"
    frame.loc[2, "ilp"] = " 2019-12-31 "
    for suffix in (".csv", ".xlsx"):
        check_expected(prepare_site_data(PLAN, write(frame, tmp_path / f"f{suffix}")))


def test_parquet_types_dictionary_bool_and_date32(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(FRAME, preserve_index=False)
    table = table.set_column(table.schema.get_field_index("sex"), "sex",
                             pa.array(FRAME["sex"]).dictionary_encode())
    table = table.set_column(table.schema.get_field_index("status"), "status",
                             pa.array(FRAME["status"].astype(bool)))
    table = table.set_column(table.schema.get_field_index("ilp"), "ilp",
                             pa.array(FRAME["ilp"].dt.date, type=pa.date32()))
    pq.write_table(table, tmp_path / "typed.parquet")
    check_expected(prepare_site_data(PLAN, tmp_path / "typed.parquet"))


def test_horizon_is_not_applied_here_but_in_the_tallies(tmp_path):
    p = prepare_site_data(PLAN, write(FRAME, tmp_path / "site.csv"))
    assert p.times["os"][5] == 5000.0 and p.times["amp"][5] == 1096.0
    t = compute_tallies(PLAN, p)
    surv = t["surv:os:sex"]
    # Sex "1": times 5 (death), 400 (censored), 5000 (death, censored at the horizon 1000).
    assert surv[0, 5].tolist() == [0, 1] and surv[0, 400].tolist() == [1, 0] and surv[0, 1000].tolist() == [1, 0]
    assert surv.sum() == 6 and t["n"][0] == 6
    amp = t["surv:amp:"]
    assert amp[0, 1000].tolist() == [1, 0, 0]     # 1096 days, censored at the horizon
    assert amp[0, 60].tolist() == [0, 1, 0] and amp[0, 0].tolist() == [0, 0, 1]


def test_only_the_plans_columns_are_read(tmp_path):
    # Junk in a column no analysis uses, and a declared but unused variable, do not matter.
    plan = parse_plan(PLAN_TEXT + '\n[variables.unused]\nlevels = ["x"]\n')
    frame = FRAME.assign(notes=["?", "", "x", "inf", "-1", "n/a"], unused=["bad"] * 6)
    check_expected(prepare_site_data(plan, write(frame, tmp_path / "site.csv")))


def test_blank_lines_are_skipped_and_counted(tmp_path):
    path = write(FRAME, tmp_path / "site.csv")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + ["", ",,,,,,,,"] + lines[3:] + ["", ""]) + "\n")
    p = prepare_site_data(PLAN, path)
    # Two empty rows among the data rows; the blank lines at the end only pad the file.
    assert p.left_out == {"missing age (dropped)": 1, "empty rows (ignored)": 2}
    np.testing.assert_array_equal(p.times["amp"], AMP_DAYS)


def test_latin1_csv_with_semicolons(tmp_path):
    plan = parse_plan(PLAN_TEXT.replace('levels = ["1", "2"]', 'levels = ["männlich", "weiblich"]'))
    frame = FRAME.assign(sex=np.where(FRAME["sex"] == "1", "männlich", "weiblich"))
    path = tmp_path / "site.csv"
    frame.to_csv(path, index=False, sep=";", encoding="latin-1", date_format="%Y-%m-%d")
    check_expected(prepare_site_data(plan, path, parse_mapping('[file]\nencoding = "latin-1"')))


def test_excel_sheet_chosen_by_the_mapping(tmp_path):
    path = tmp_path / "book.xlsx"
    with pd.ExcelWriter(path) as w:
        pd.DataFrame({"note": ["not this sheet"]}).to_excel(w, sheet_name="Readme", index=False)
        FRAME.to_excel(w, sheet_name="Export", index=False)
    check_expected(prepare_site_data(PLAN, path, parse_mapping('[file]\nsheet = "Export"')))
    check_expected(prepare_site_data(PLAN, path, parse_mapping('[file]\nsheet = 1')))


def test_lung_fixture_matches_its_csv_read_independently():
    plan = parse_plan("""
[plan]
title = "lung"
bin_width = 1
horizon = 1100
[endpoints.os]
time = "time"
event = "event"
causes = { 1 = "death" }
[variables.sex]
levels = ["1", "2"]
[variables.wt]
column = "wt.loss"
type = "numeric"
range = [-100, 100]
missing = "drop"
[[analyses]]
name = "os"
kind = "km"
endpoint = "os"
strata = ["sex"]
[[analyses]]
name = "t1"
kind = "describe"
variables = ["wt"]
""")
    path = DATA / "lung.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    p = prepare_site_data(plan, path)
    assert p.n_rows == len(rows) == 228
    np.testing.assert_array_equal(p.times["os"], [float(r["time"]) for r in rows])
    np.testing.assert_array_equal(p.outcomes["os"], [int(r["event"]) for r in rows])
    np.testing.assert_array_equal(p.levels["sex"], [int(r["sex"]) - 1 for r in rows])
    wt = [r["wt.loss"] for r in rows]
    np.testing.assert_array_equal(p.missing["wt"], [w in ("", "NA") for w in wt])
    np.testing.assert_array_equal(p.fixed["wt"], [0 if w in ("", "NA") else int(w) for w in wt])
    assert p.left_out == {"missing wt (dropped)": sum(w in ("", "NA") for w in wt)}


def test_a_large_file(tmp_path):
    # Not a timing assertion (benchmarks are not tests): a large file goes through the same
    # multi-threaded reader, and the derived times equal the ones the dates were made from.
    n = 200_000
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"time": rng.integers(0, 2000, n), "status": rng.integers(0, 2, n),
                          "sex": rng.choice(["1", "2"], n), "age": np.round(rng.uniform(0, 100, n), 1)})
    frame["ilp"] = pd.Timestamp("2015-01-01") + pd.to_timedelta(rng.integers(0, 1000, n), unit="D")
    frame["amp_date"] = pd.NaT
    frame["death_date"] = pd.NaT
    frame["lfu"] = frame["ilp"] + pd.to_timedelta(frame["time"], unit="D")
    p = prepare_site_data(PLAN, write(frame, tmp_path / "big.csv"))
    np.testing.assert_array_equal(p.times["amp"], frame["time"].to_numpy(dtype=float))
    np.testing.assert_array_equal(p.levels["sex"], (frame["sex"] == "2").to_numpy().astype(int))
    assert p.n_rows == n and p.left_out == {}


def test_codes_mark_missing_dates_and_numbers(tmp_path):
    # Registries write "00.00.0000" for "no date" and 999 for "age unknown".
    frame = FRAME.copy()
    for c in ("ilp", "amp_date", "death_date", "lfu"):
        frame[c] = frame[c].dt.strftime("%d.%m.%Y").fillna("00.00.0000")
    frame["age"] = frame["age"].map(lambda x: "999" if np.isnan(x) else f"{x:g}")
    mapping = parse_mapping("""
[codes.amp_date]
"00.00.0000" = ""
[codes.death_date]
"00.00.0000" = ""
[codes.lfu]
"00.00.0000" = ""
[codes.age]
"999" = ""
[dates]
format = "%d.%m.%Y"
""")
    check_expected(prepare_site_data(PLAN, write(frame, tmp_path / "site.csv"), mapping))
    # In a workbook, date cells stay dates while the text cells are recoded and parsed.
    frame["ilp"] = FRAME["ilp"]
    check_expected(prepare_site_data(PLAN, write(frame, tmp_path / "site.xlsx"), mapping))


# ------------------------------------------------------------------ dates against a reference

DATE_PLAN = parse_plan("""
[plan]
title = "dates"
time_unit = "days"
bin_width = 1
horizon = 100
[endpoints.amp]
origin = "ilp"
dates = { amputation = "amp_date", death = "death_date" }
last_followup = "lfu"
[[analyses]]
name = "amp"
kind = "cif"
endpoint = "amp"
""")
BASE_DAY = dt.date(2020, 1, 1)
maybe_day = st.one_of(st.none(), st.integers(-5, 40))


def reference_row(origin, amp, death, lfu):
    """One row by the rules, with Python dates: (time in days, outcome) or the set of problems."""
    problems = set()
    if origin is None:
        problems.add("ilp")
    causes = [(d, i) for i, d in enumerate((amp, death), start=1) if d is not None]
    if origin is not None:
        for (d, i) in causes:
            if d < origin:
                problems.add(("amp_date", "death_date")[i - 1])
    if lfu is None and not causes:
        problems.add("lfu")
    if lfu is not None:
        if origin is not None and lfu < origin:
            problems.add("lfu")
        if any(lfu < d for d, _ in causes):
            problems.add("lfu")
    if problems:
        return problems
    if causes:
        first = min(d for d, _ in causes)
        outcome = next(i for d, i in causes if d == first)     # ties: the first listed cause
        return (first - origin).days, outcome
    return (lfu - origin).days, 0


def flagged_rows(message: str) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for line in message.splitlines()[1:]:
        column = line.split("'")[1]
        rows = line.split(" in row")[-1].split("(")[0].lstrip("s ").rstrip("; ")
        out.setdefault(column, set()).update(int(r) for r in rows.split(", "))
    return out


@settings(max_examples=60, deadline=None)
# A row with no value at all is an empty row, skipped (tested above); every row here has one.
@given(st.lists(st.tuples(maybe_day, maybe_day, maybe_day, maybe_day).filter(lambda r: r != (None,) * 4),
                min_size=1, max_size=8))
def test_dates_match_a_row_by_row_reference(tmp_path_factory, rows):
    def day(k):
        return None if k is None else BASE_DAY + dt.timedelta(days=k)

    rows = [tuple(day(k) for k in r) for r in rows]
    path = tmp_path_factory.mktemp("dates") / "site.csv"
    text = "ilp,amp_date,death_date,lfu\n" + "".join(
        ",".join("" if d is None else d.isoformat() for d in r) + "\n" for r in rows)
    path.write_text(text)
    expected = [reference_row(*r) for r in rows]
    bad = {c: {i + 2 for i, e in enumerate(expected) if isinstance(e, set) and c in e}
           for c in ("ilp", "amp_date", "death_date", "lfu")}
    bad = {c: r for c, r in bad.items() if r}
    if bad:
        with pytest.raises(DataError) as e:
            prepare_site_data(DATE_PLAN, path)
        assert flagged_rows(str(e.value)) == bad
    else:
        p = prepare_site_data(DATE_PLAN, path)
        np.testing.assert_array_equal(p.times["amp"], [e[0] for e in expected])
        np.testing.assert_array_equal(p.outcomes["amp"], [e[1] for e in expected])


MISSING_TEXT = {"", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "#N/A"}
COLUMN_PLAN = parse_plan("""
[plan]
title = "columns"
bin_width = 1
horizon = 100
[endpoints.os]
time = "time"
event = "status"
causes = { 1 = "death" }
[variables.sex]
levels = ["1", "2"]
[[analyses]]
name = "os"
kind = "km"
endpoint = "os"
strata = ["sex"]
""")


def reference_cells(time, status, sex):
    """Problems of one row by the documented rules, in Python: {(column, problem)} or values."""
    problems, values = set(), []
    t = time.strip()
    if t in MISSING_TEXT:
        problems.add(("time", "missing time"))
    else:
        try:
            x = float(t)
        except ValueError:
            problems.add(("time", "time is not a number"))
        else:
            if x != x:
                problems.add(("time", "time is not a number"))
            elif x in (float("inf"), float("-inf")):
                problems.add(("time", "time is not a finite number"))
            elif x < 0:
                problems.add(("time", "negative time"))
            values.append(x)
    e = status.strip()
    if e in MISSING_TEXT:
        problems.add(("status", "missing event code"))
    elif not re.fullmatch(r"[+-]?\d+(\.0*)?", e) or int(float(e)) not in (0, 1):
        problems.add(("status", "unknown event code"))
    else:
        values.append(int(float(e)))
    s = sex.strip()
    if s in MISSING_TEXT:
        problems.add(("sex", "missing sex (the plan does not allow missing values)"))
    else:
        s = re.sub(r"^([+-]?\d+)\.0*$", r"\1", s)
        if s not in ("1", "2"):
            problems.add(("sex", "unknown level"))
        else:
            values.append(int(s) - 1)
    return problems or tuple(values)


def flagged_problems(message: str) -> dict[tuple[str, str], set[int]]:
    out: dict[tuple[str, str], set[int]] = {}
    for line in message.splitlines()[1:]:
        column = line.split("'")[1]
        what, rows = line.split(": ", 1)[1].split(" in row", 1)
        rows = rows.split("(")[0].split(";")[0].lstrip("s ").strip()
        out[(column, what)] = {int(r) for r in rows.split(", ")}
    return out


cell = st.sampled_from


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(
    cell(["1", "0", "2.5", " 3 ", "1e2", "-1", "-0.5", "abc", "", "inf", "-Infinity", "NaN", "NA", "1,5", "0x1"]),
    cell(["0", "1", "1.0", " 1", "0.00", "2", "1.5", "x", "", "NULL", "-0"]),
    cell(["1", "2", "2.0", " 1 ", "3", "m", "", "NA", "1.5", "01"])), min_size=1, max_size=8))
def test_cells_match_a_row_by_row_reference(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("cells") / "site.csv"
    # Every row has an id, so none is an empty row.
    path.write_text("id,time,status,sex\n" + "".join(f"p{i},\"{t}\",\"{e}\",\"{s}\"\n" for i, (t, e, s) in
                                                     enumerate(rows)))
    expected = [reference_cells(*r) for r in rows]
    bad: dict[tuple[str, str], set[int]] = {}
    for i, e in enumerate(expected):
        if isinstance(e, set):
            for key in e:
                bad.setdefault(key, set()).add(i + 2)
    if bad:
        with pytest.raises(DataError) as err:
            prepare_site_data(COLUMN_PLAN, path)
        assert flagged_problems(str(err.value)) == bad
    else:
        p = prepare_site_data(COLUMN_PLAN, path)
        np.testing.assert_array_equal(p.times["os"], [e[0] for e in expected])
        np.testing.assert_array_equal(p.outcomes["os"], [e[1] for e in expected])
        np.testing.assert_array_equal(p.levels["sex"], [e[2] for e in expected])
