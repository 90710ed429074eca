"""Malformed data files and mappings: each refused with one message naming the file, the column,
the rows as a person counts them (CSV and Excel: the header is row 1; Parquet: records from 1)
and the values. Nothing is returned.
"""

import pandas as pd
import pytest

from protocol.errors import DataError
from protocol.plan import parse_plan
from site_node.mapping import load_mapping, parse_mapping
from site_node.prepare import prepare_site_data

PLAN_TEXT = """
[plan]
title = "bad data"
bin_width = 1
horizon = 1000

[endpoints.os]
time = "time"
event = "status"
censored = [0]
causes = { 1 = "death", 2 = "other" }

[endpoints.amp]
origin = "ilp"
dates = { amputation = "amp_date", death = "death_date" }
last_followup = "lfu"

[variables.sex]
levels = ["1", "2"]

[variables.age]
type = "numeric"
range = [0, 110]

[[analyses]]
name = "os"
kind = "km"
endpoint = "os"
cause = "death"
strata = ["sex"]

[[analyses]]
name = "amp"
kind = "cif"
endpoint = "amp"

[[analyses]]
name = "t1"
kind = "describe"
variables = ["age"]
"""
PLAN = parse_plan(PLAN_TEXT)
HEADER = ["id", "time", "status", "sex", "age", "ilp", "amp_date", "death_date", "lfu"]
GOOD = [  # rows 2..7 of the file
    ["p1", "5", "1", "1", "63", "2020-01-01", "", "2020-01-06", ""],
    ["p2", "10", "0", "2", "40", "2020-01-01", "", "", "2020-01-11"],
    ["p3", "7", "2", "2", "71", "2020-02-01", "2020-02-08", "", "2020-06-01"],
    ["p4", "30", "0", "1", "55", "2020-03-01", "", "", "2020-03-31"],
    ["p5", "2.5", "1", "2", "18", "2020-03-01", "", "2020-03-03", "2020-03-03"],
    ["p6", "0", "0", "1", "90", "2020-04-01", "", "", "2020-04-01"],
]


def rows_with(edits: dict[tuple[int, str], str], n: int | None = None) -> list[list[str]]:
    """The good rows with cells replaced; keys are (row number in the file, column)."""
    rows = [list(r) for r in GOOD]
    while n is not None and len(rows) < n:
        rows.append(list(GOOD[len(rows) % len(GOOD)]))
    for (row, col), value in edits.items():
        rows[row - 2][HEADER.index(col)] = value
    return rows


def csv_file(tmp_path, edits=None, header=HEADER, n=None, name="site.csv"):
    path = tmp_path / name
    lines = [",".join(header)] + [",".join(r) for r in rows_with(edits or {}, n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def refused(path, mapping=None, plan=PLAN) -> str:
    with pytest.raises(DataError) as e:
        prepare_site_data(plan, path, mapping)
    return str(e.value)


def one_problem(msg: str, path, line: str) -> None:
    assert msg.splitlines() == [f"data file {path}: 1 problem, nothing was computed:", line], msg


# ------------------------------------------------------------------- times and event codes


def test_non_numeric_time(tmp_path):
    p = csv_file(tmp_path, {(3, "time"): "abc", (6, "time"): "1O"})
    one_problem(refused(p), p, "  column 'time': time is not a number in rows 3, 6 (values 'abc', '1O')")


def test_negative_time(tmp_path):
    p = csv_file(tmp_path, {(4, "time"): "-1", (7, "time"): "-0.5"})
    one_problem(refused(p), p, "  column 'time': negative time in rows 4, 7 (values '-1', '-0.5')")


def test_infinite_time_and_nan_as_missing(tmp_path):
    p = csv_file(tmp_path, {(2, "time"): "inf", (3, "time"): "-Infinity", (5, "time"): "NaN"})
    msg = refused(p)
    assert msg.splitlines()[1:] == [
        "  column 'time': missing time in row 5",
        "  column 'time': time is not a finite number in rows 2, 3 (values 'inf', '-Infinity')",
    ]
    assert msg.splitlines()[0] == f"data file {p}: 2 problems, nothing was computed:"


def test_empty_time(tmp_path):
    p = csv_file(tmp_path, {(7, "time"): ""})
    one_problem(refused(p), p, "  column 'time': missing time in row 7")


def test_unknown_event_code(tmp_path):
    p = csv_file(tmp_path, {(3, "status"): "3", (5, "status"): "dead", (6, "status"): "3"})
    one_problem(refused(p), p, "  column 'status': unknown event code in rows 3, 5, 6 (values '3', 'dead'); "
                               "the plan's codes are 0 (censored), 1 (death), 2 (other)")


def test_fractional_event_code(tmp_path):
    p = csv_file(tmp_path, {(2, "status"): "1.5"})
    one_problem(refused(p), p, "  column 'status': unknown event code in row 2 (value '1.5'); "
                               "the plan's codes are 0 (censored), 1 (death), 2 (other)")


def test_missing_event_code(tmp_path):
    p = csv_file(tmp_path, {(4, "status"): " "})
    one_problem(refused(p), p, "  column 'status': missing event code in row 4")


def test_more_than_ten_bad_rows_are_summarised(tmp_path):
    p = csv_file(tmp_path, {(r, "time"): "-2" for r in range(2, 32)}, n=30)
    one_problem(refused(p), p, "  column 'time': negative time in rows 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and 20 more "
                               "(value '-2')")


# ------------------------------------------------------------------------------ variables


def test_unknown_stratum_level(tmp_path):
    p = csv_file(tmp_path, {(5, "sex"): "M", (7, "sex"): "3"})
    one_problem(refused(p), p, "  column 'sex': unknown level in rows 5, 7 (values 'M', '3'); "
                               "the plan's levels are '1', '2'")


def test_missing_stratum_when_the_plan_says_error(tmp_path):
    p = csv_file(tmp_path, {(3, "sex"): "", (4, "sex"): "NA"})
    one_problem(refused(p), p, "  column 'sex': missing sex (the plan does not allow missing values) in rows 3, 4")


def test_numeric_out_of_range(tmp_path):
    p = csv_file(tmp_path, {(2, "age"): "111", (6, "age"): "-3"})
    one_problem(refused(p), p, "  column 'age': outside the plan's range [0, 110] in rows 2, 6 (values '111', '-3')")


def test_numeric_not_a_number(tmp_path):
    p = csv_file(tmp_path, {(3, "age"): "forty"})
    one_problem(refused(p), p, "  column 'age': not a number in row 3 (value 'forty')")


# ---------------------------------------------------------------------------------- dates


def test_unparsable_date(tmp_path):
    p = csv_file(tmp_path, {(2, "ilp"): "2020-02-30", (4, "ilp"): "yesterday"})
    one_problem(refused(p), p, "  column 'ilp': not a date in rows 2, 4 (values '2020-02-30', 'yesterday'); "
                               "expected YYYY-MM-DD; set [dates] format in the site's mapping")


def test_wrong_date_format_without_a_mapping(tmp_path):
    p = csv_file(tmp_path, {(r, "lfu"): v for r, v in ((3, "11.01.2020"), (4, "01.06.2020"))})
    one_problem(refused(p), p, "  column 'lfu': not a date in rows 3, 4 (values '11.01.2020', '01.06.2020'); "
                               "expected YYYY-MM-DD; set [dates] format in the site's mapping")


def test_wrong_date_format_in_the_mapping(tmp_path):
    p = csv_file(tmp_path)
    msg = refused(p, parse_mapping('[dates]\nformat = "%d.%m.%Y"'))
    assert "  column 'ilp': not a date in rows 2, 3, 4, 5, 6, 7 (values '2020-01-01', '2020-02-01', '2020-03-01', " \
           "'2020-04-01'); format '%d.%m.%Y'" in msg.splitlines()
    assert msg.splitlines()[0] == f"data file {p}: 4 problems, nothing was computed:"


def test_event_before_origin(tmp_path):
    p = csv_file(tmp_path, {(2, "death_date"): "2019-12-31"})
    one_problem(refused(p), p, "  column 'death_date': date before the origin date in 'ilp' in row 2 "
                               "(value '2019-12-31')")


def test_follow_up_before_event(tmp_path):
    p = csv_file(tmp_path, {(4, "lfu"): "2020-02-07"})
    one_problem(refused(p), p, "  column 'lfu': last follow-up before the date in 'amp_date' in row 4 "
                               "(value '2020-02-07')")


def test_follow_up_before_origin(tmp_path):
    p = csv_file(tmp_path, {(5, "lfu"): "2020-02-29"})
    one_problem(refused(p), p, "  column 'lfu': last follow-up before the origin date in 'ilp' in row 5 "
                               "(value '2020-02-29')")


def test_missing_follow_up_without_event(tmp_path):
    p = csv_file(tmp_path, {(3, "lfu"): "", (7, "lfu"): ""})
    one_problem(refused(p), p, "  column 'lfu': missing last follow-up, and no event date in rows 3, 7")


def test_missing_origin(tmp_path):
    p = csv_file(tmp_path, {(6, "ilp"): ""})
    one_problem(refused(p), p, "  column 'ilp': missing origin date in row 6")


# ------------------------------------------------------------------------ several at once


def test_several_columns_one_line_each(tmp_path):
    p = csv_file(tmp_path, {(2, "time"): "-1", (3, "status"): "9", (4, "sex"): "x", (5, "ilp"): "soon"})
    assert refused(p).splitlines() == [
        f"data file {p}: 4 problems, nothing was computed:",
        "  column 'time': negative time in row 2 (value '-1')",
        "  column 'status': unknown event code in row 3 (value '9'); the plan's codes are 0 (censored), 1 (death), "
        "2 (other)",
        "  column 'ilp': not a date in row 5 (value 'soon'); expected YYYY-MM-DD; set [dates] format in the site's "
        "mapping",
        "  column 'sex': unknown level in row 4 (value 'x'); the plan's levels are '1', '2'",
    ]


def test_row_numbers_count_blank_lines(tmp_path):
    p = tmp_path / "gaps.csv"
    lines = [",".join(HEADER)] + [",".join(r) for r in rows_with({(5, "time"): "-4"})]
    p.write_text("\n".join(lines[:2] + ["", ""] + lines[2:]) + "\n")   # two blank lines after row 2
    one_problem(refused(p), p, "  column 'time': negative time in row 7 (value '-4')")


def test_short_rows_read_as_empty_cells(tmp_path):
    p = tmp_path / "short.csv"
    lines = [",".join(HEADER)] + [",".join(r) for r in GOOD]
    lines[3] = "p3,7"
    p.write_text("\n".join(lines) + "\n")
    msg = refused(p)
    assert "  column 'status': missing event code in row 4" in msg.splitlines()
    assert "  column 'ilp': missing origin date in row 4" in msg.splitlines()


# ------------------------------------------------------------------------- Excel, Parquet


def frame(edits=None):
    return pd.DataFrame(rows_with(edits or {}), columns=HEADER)


def test_excel_rows_are_the_sheets_rows(tmp_path):
    p = tmp_path / "site.xlsx"
    df = frame({(4, "sex"): "3"})
    df["time"] = pd.to_numeric(df["time"])
    df.loc[4, "time"] = -7.0                                   # row 6 of the sheet
    df.to_excel(p, index=False)
    msg = refused(p)
    assert msg.splitlines() == [
        f"data file {p}: 2 problems, nothing was computed:",
        "  column 'time': negative time in row 6 (value -7)",
        "  column 'sex': unknown level in row 4 (value '3'); the plan's levels are '1', '2'",
    ]


def test_excel_number_in_a_date_column(tmp_path):
    p = tmp_path / "site.xlsx"
    df = frame().astype(object)
    df["ilp"] = pd.to_datetime(df["ilp"])
    df = df.astype({"ilp": object})
    df.loc[1, "ilp"] = 43831                                    # a serial day number, not a date cell
    df.to_excel(p, index=False)
    one_problem(refused(p), p, "  column 'ilp': not a date in row 3 (value 43831); expected YYYY-MM-DD; "
                               "set [dates] format in the site's mapping")


def test_parquet_records_count_from_one(tmp_path):
    p = tmp_path / "site.parquet"
    df = frame()
    df["time"] = pd.to_numeric(df["time"])
    df.loc[2, "time"] = float("inf")
    df.to_parquet(p, index=False)
    one_problem(refused(p), p, "  column 'time': time is not a finite number in record 3 (value inf)")


def test_parquet_nulls_are_missing_values(tmp_path):
    p = tmp_path / "site.parquet"
    df = frame().astype(object)
    df.loc[0, "time"] = None                                   # a null in a text column
    df.loc[3, "sex"] = None
    df.to_parquet(p, index=False)
    assert refused(p).splitlines()[1:] == [
        "  column 'time': missing time in record 1",
        "  column 'sex': missing sex (the plan does not allow missing values) in record 4",
    ]


def test_bad_excel_file(tmp_path):
    p = tmp_path / "broken.xlsx"
    p.write_text("this is not a workbook")
    assert refused(p).startswith(f"data file {p}: cannot be read as an Excel .xlsx workbook (")


def test_bad_parquet_file(tmp_path):
    p = tmp_path / "broken.parquet"
    p.write_bytes(b"PAR1 truncated")
    assert refused(p).startswith(f"data file {p}: cannot be read as Parquet (")


def test_excel_sheet_not_found(tmp_path):
    p = tmp_path / "site.xlsx"
    frame().to_excel(p, index=False)
    assert refused(p, parse_mapping('[file]\nsheet = "Daten"')) == \
        f"data file {p}: has no sheet 'Daten' ([file] sheet in the site's mapping)"


# ------------------------------------------------------------------------ files, headers


def test_file_not_found(tmp_path):
    p = tmp_path / "nowhere.csv"
    assert refused(p) == f"data file {p}: not found"


def test_empty_file(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_bytes(b"")
    assert refused(p) == f"data file {p}: is empty (no header row)"


def test_header_only(tmp_path):
    p = tmp_path / "header.csv"
    p.write_text(",".join(HEADER) + "\n\n")
    assert refused(p) == f"data file {p}: has a header but no data rows"


def test_empty_excel(tmp_path):
    p = tmp_path / "empty.xlsx"
    pd.DataFrame().to_excel(p, index=False)
    assert refused(p) == f"data file {p}: is empty (no header row)"


def test_unsupported_extension(tmp_path):
    p = tmp_path / "site.xls"
    p.write_bytes(b"\xd0\xcf\x11\xe0")
    assert refused(p) == f"data file {p}: unsupported file type '.xls'; export as .csv, .parquet or .xlsx"


def test_missing_column(tmp_path):
    p = csv_file(tmp_path, header=[h if h != "status" else "state" for h in HEADER])
    msg = refused(p)
    assert msg.splitlines() == [
        f"data file {p}: 1 missing column, nothing was computed:",
        "  column 'status': not in the file",
        "(the file's columns: 'id', 'time', 'state', 'sex', 'age', 'ilp', 'amp_date', 'death_date', 'lfu')",
    ]


def test_duplicate_header(tmp_path):
    p = csv_file(tmp_path, header=HEADER[:-1] + ["time"])
    assert refused(p) == (f"data file {p}: column 'time' appears 2 times in the header (columns 2 and 9); "
                          "rename or remove the extra ones")


def test_ragged_row(tmp_path):
    p = tmp_path / "ragged.csv"
    lines = [",".join(HEADER)] + [",".join(r) for r in GOOD]
    lines[4] += ",extra"
    p.write_text("\n".join(lines) + "\n")
    assert refused(p) == f"data file {p}: not a valid CSV table: Expected 9 fields in line 5, saw 10"


def test_not_utf8(tmp_path):
    p = tmp_path / "latin.csv"
    text = "\n".join([",".join(HEADER)] + [",".join(r) for r in rows_with({(3, "sex"): "männlich"})]) + "\n"
    p.write_bytes(text.encode("latin-1"))
    assert refused(p).startswith(f"data file {p}: not UTF-8 text (byte ")
    assert "set [file] encoding in the site's mapping" in refused(p)


# ------------------------------------------------------------------------------- mappings


def test_mapping_to_absent_column(tmp_path):
    p = csv_file(tmp_path)
    msg = refused(p, parse_mapping('[columns]\nsex = "Geschlecht"', "wien.toml"))
    assert msg.splitlines()[:2] == [
        f"data file {p}: 1 missing column, nothing was computed:",
        "  column 'Geschlecht' (plan column 'sex'): not in the file; the mapping file wien.toml names it in "
        "[columns] sex",
    ]


def test_unknown_mapping_key(tmp_path):
    m = tmp_path / "m.toml"
    m.write_text('[columns]\nsex = "Geschlecht"\n[datez]\nformat = "%d.%m.%Y"\n')
    with pytest.raises(DataError) as e:
        load_mapping(m)
    assert str(e.value) == f"mapping file {m}: [datez]: unknown key (allowed here: codes, columns, dates, file)"


def test_bad_mapping_toml(tmp_path):
    m = tmp_path / "m.toml"
    m.write_text('[columns]\nsex = Geschlecht\n')
    with pytest.raises(DataError) as e:
        load_mapping(m)
    assert str(e.value).startswith(f"mapping file {m}: not valid TOML: ")
    assert "line 2" in str(e.value)


def test_code_mapping_to_an_unknown_event_code(tmp_path):
    p = csv_file(tmp_path)
    msg = refused(p, parse_mapping('[codes.status]\ndead = 7\nalive = 0', "m.toml"))
    assert msg == ("mapping file m.toml: [codes.status] 'dead' = 7: not a code of endpoint 'os' "
                   "(its codes: 0, 1, 2)")


def test_code_mapping_to_an_unknown_level(tmp_path):
    p = csv_file(tmp_path)
    msg = refused(p, parse_mapping('[codes.sex]\nm = "M"\nw = "2"\n[codes.status]\ntot = "x"', "m.toml"))
    assert msg.splitlines() == [
        "mapping file m.toml: 2 problems:",
        "  [codes.status] 'tot' = 'x': not a code of endpoint 'os' (its codes: 0, 1, 2)",
        "  [codes.sex] 'm' = 'M': not a level of variable 'sex' (its levels: '1', '2')",
    ]


def test_mapping_entry_no_plan_column_uses_is_named_when_data_fails(tmp_path):
    # A typo in a [codes] key leaves the site's codes untranslated; the error points at it.
    p = csv_file(tmp_path, {(r, "sex"): "m" for r in range(2, 8)})
    msg = refused(p, parse_mapping('[codes.sexx]\nm = "1"', "m.toml"))
    assert msg.splitlines() == [
        f"data file {p}: 1 problem, nothing was computed:",
        "  column 'sex': unknown level in rows 2, 3, 4, 5, 6, 7 (value 'm'); the plan's levels are '1', '2'",
        "(mapping file m.toml has entries that no column of this plan uses: [codes.sexx])",
    ]


def test_codes_apply_before_validation_and_errors_show_the_sites_value(tmp_path):
    p = csv_file(tmp_path, {(2, "status"): "tot", (3, "status"): "lebend", (4, "status"): "unklar"})
    msg = refused(p, parse_mapping('[codes.status]\ntot = 1\nlebend = 0'))
    one_problem(msg, p, "  column 'status': unknown event code in row 4 (value 'unklar'); "
                        "the plan's codes are 0 (censored), 1 (death), 2 (other)")


def test_renamed_column_is_named_with_its_plan_column(tmp_path):
    p = csv_file(tmp_path, {(6, "time"): "-9"}, header=["id", "T"] + HEADER[2:])
    msg = refused(p, parse_mapping('[columns]\ntime = "T"'))
    one_problem(msg, p, "  column 'T' (plan column 'time'): negative time in row 6 (value '-9')")
