"""A site's mapping file: how its own export answers the consortium's plan.

A site writes this TOML file once, so that a plan written in the consortium's data dictionary
can be answered from the site's own export. Every table is optional; a site whose export
already uses the plan's names and codes needs no mapping at all.

```toml
[file]                          # how to read the export
sheet = "Export"                # Excel: the sheet to read (name, or 0-based number); default the first
delimiter = ";"                 # CSV: field separator; default: "," unless the header has none and has ";" or a tab
decimal = ","                   # decimal mark of numbers written as text; default "."
encoding = "latin-1"            # CSV: text encoding; default "utf-8" (a byte-order mark is ignored)
missing = ["", "NA", "unknown"] # text that means "no value" (compared after trimming spaces);
                                # default: "", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "#N/A"

[columns]                       # plan column = this site's column
time = "Survival_days"          # keys: an endpoint's time/event/origin/date/last_followup column,
event = "Status"                #       or a variable's name (or its `column`)
sex = "Geschlecht"

[codes.event]                   # per plan column: this site's code = the plan's code
"dead" = 1                      # event codes map to the plan's integer codes
"alive" = 0

[codes.sex]
"m" = "M"                       # levels map to the plan's level text
"w" = "F"
"unbekannt" = ""                # "" means: this code is a missing value

[dates]
format = "%d.%m.%Y"             # strptime format of dates written as text; default ISO 8601
                                # ("2024-03-31", optionally followed by a time of day)
```

Rules:
- Values the ``[codes.*]`` table does not list are kept as they are (after trimming spaces), so a
  mapping need only list the codes that differ from the plan's.
- Entries for columns that the plan does not use are ignored, so that one mapping serves every
  plan of the consortium; a column the plan uses and that the file lacks is an error that names
  the mapping's entry, and an error about a plan column mentions the mapping's entries that no
  plan column uses (a likely typo).
- Unknown tables or keys, values of the wrong type, an invalid date format or encoding are
  errors naming the mapping file and the key. Whether a code maps onto one of the plan's codes
  or levels is checked against the plan when the data is prepared (site_node/prepare.py).
- Excel and Parquet dates stored as dates need no format; ``format`` applies to dates written
  as text.
"""

from __future__ import annotations

import codecs
import datetime as _dt
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.errors import DataError

DEFAULT_MISSING = ("", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "#N/A")

_TABLES = {"file", "columns", "codes", "dates"}
_FILE_KEYS = {"sheet", "delimiter", "decimal", "encoding", "missing"}
_DATE_KEYS = {"format"}


@dataclass(frozen=True)
class FileOptions:
    """How to read the export (the ``[file]`` table)."""

    sheet: str | int = 0
    delimiter: str | None = None
    decimal: str = "."
    encoding: str = "utf-8"
    missing: tuple[str, ...] = DEFAULT_MISSING


@dataclass(frozen=True)
class SiteMapping:
    """A site's mapping file, parsed and checked on its own (without a plan).

    ``columns`` maps a plan column (or variable name) to the site's column; ``codes`` maps a
    plan column (or variable name) to {site code: plan code}, where a plan code is an int for
    event columns, text for levels, and "" for "missing". ``source`` names the file for errors.
    """

    source: str = "(no mapping)"
    columns: dict[str, str] = field(default_factory=dict)
    codes: dict[str, dict[str, str | int]] = field(default_factory=dict)
    date_format: str | None = None
    file: FileOptions = field(default_factory=FileOptions)

    def error(self, key: str, problem: str) -> DataError:
        return DataError(f"mapping file {self.source}: {key}: {problem}")


def _fail(source: str, key: str, problem: str) -> DataError:
    return DataError(f"mapping file {source}: {key}: {problem}")


def _check_keys(source: str, table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        key = f"{where}{unknown[0]}" if where else f"[{unknown[0]}]"
        raise _fail(source, key, f"unknown key (allowed here: {', '.join(sorted(allowed))})")


def _nonempty_str(source: str, value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, key, f"expected a non-empty text, got {value!r}")
    return value.strip()


def _file_options(source: str, t: Any) -> FileOptions:
    if not isinstance(t, dict):
        raise _fail(source, "[file]", "expected a table")
    _check_keys(source, t, _FILE_KEYS, "[file] ")
    kw: dict[str, Any] = {}
    if "sheet" in t:
        sheet = t["sheet"]
        if isinstance(sheet, bool) or not isinstance(sheet, (str, int)) or (isinstance(sheet, int) and sheet < 0):
            raise _fail(source, "[file] sheet", f"expected a sheet name or a 0-based number, got {sheet!r}")
        kw["sheet"] = sheet
    if "delimiter" in t:
        d = t["delimiter"]
        if not isinstance(d, str) or len(d) != 1 or d in "\r\n\"":
            raise _fail(source, "[file] delimiter", f"expected one character such as \",\" or \";\", got {d!r}")
        kw["delimiter"] = d
    if "decimal" in t:
        if t["decimal"] not in (".", ","):
            raise _fail(source, "[file] decimal", f"expected \".\" or \",\", got {t['decimal']!r}")
        kw["decimal"] = t["decimal"]
    if "encoding" in t:
        enc = _nonempty_str(source, t["encoding"], "[file] encoding")
        try:
            codecs.lookup(enc)
        except LookupError:
            raise _fail(source, "[file] encoding", f"unknown encoding {enc!r}") from None
        kw["encoding"] = enc
    if "missing" in t:
        m = t["missing"]
        if not isinstance(m, list) or not all(isinstance(x, str) for x in m):
            raise _fail(source, "[file] missing", "expected a list of texts such as [\"\", \"NA\"]")
        kw["missing"] = tuple(dict.fromkeys([x.strip() for x in m] + [""]))
    if kw.get("delimiter") == kw.get("decimal", "."):
        raise _fail(source, "[file] decimal", "the decimal mark cannot also be the delimiter")
    return FileOptions(**kw)


def _date_format(source: str, t: Any) -> str | None:
    if not isinstance(t, dict):
        raise _fail(source, "[dates]", "expected a table")
    _check_keys(source, t, _DATE_KEYS, "[dates] ")
    if "format" not in t:
        return None
    fmt = _nonempty_str(source, t["format"], "[dates] format")
    probe = _dt.datetime(2001, 11, 23)
    try:
        ok = _dt.datetime.strptime(probe.strftime(fmt), fmt).date() == probe.date()
    except ValueError:
        ok = False
    if not ok or "%" not in fmt:
        raise _fail(source, "[dates] format", f"{fmt!r} is not a strptime format with day, month and year "
                                              "(such as \"%d.%m.%Y\")")
    return fmt


def _codes(source: str, t: Any) -> dict[str, dict[str, str | int]]:
    if not isinstance(t, dict):
        raise _fail(source, "[codes]", "expected [codes.COLUMN] tables")
    out: dict[str, dict[str, str | int]] = {}
    for col, table in t.items():
        where = f"[codes.{col}]"
        if not isinstance(table, dict):
            raise _fail(source, where, "expected a table of \"site code\" = plan code")
        entries: dict[str, str | int] = {}
        for site_code, plan_code in table.items():
            key = f"{where} {site_code!r}"
            if isinstance(plan_code, bool) or not isinstance(plan_code, (str, int)):
                raise _fail(source, key, f"expected a plan code (an integer or a text), got {plan_code!r}")
            stripped = site_code.strip()
            if stripped in entries:
                raise _fail(source, key, "this code is listed twice (codes are compared after trimming spaces)")
            entries[stripped] = plan_code.strip() if isinstance(plan_code, str) else plan_code
        out[col] = entries
    return out


def parse_mapping(text: str, source: str = "(text)") -> SiteMapping:
    """Parse and check a mapping from TOML text; ``source`` names it in errors."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DataError(f"mapping file {source}: not valid TOML: {e}") from None
    _check_keys(source, doc, _TABLES, "")
    columns: dict[str, str] = {}
    if "columns" in doc:
        t = doc["columns"]
        if not isinstance(t, dict):
            raise _fail(source, "[columns]", "expected a table of plan column = \"site column\"")
        for plan_col, site_col in t.items():
            if isinstance(site_col, dict):
                raise _fail(source, f"[columns.{plan_col}]", "unknown table; write plan_column = \"site column\"")
            columns[plan_col] = _nonempty_str(source, site_col, f"[columns] {plan_col}")
    return SiteMapping(
        source=source,
        columns=columns,
        codes=_codes(source, doc["codes"]) if "codes" in doc else {},
        date_format=_date_format(source, doc["dates"]) if "dates" in doc else None,
        file=_file_options(source, doc["file"]) if "file" in doc else FileOptions(),
    )


def load_mapping(path: str | Path) -> SiteMapping:
    """Read a site's mapping file (TOML, UTF-8)."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"mapping file {source}: not found") from None
    except OSError as e:
        raise DataError(f"mapping file {source}: cannot be read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"mapping file {source}: not UTF-8 text") from None
    return parse_mapping(text, source)
