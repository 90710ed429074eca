"""Read a site's export (CSV, Parquet or Excel .xlsx, by extension) without coercing anything.

Every value reaches validation as the file holds it: CSV cells as text (pyarrow strings, never
guessed numbers or dates), Excel cells as the workbook types them (text, number or date),
Parquet columns with their stored types. Only the columns a plan uses are kept.

Headers are compared after trimming spaces. A CSV file is UTF-8 unless the mapping names an
encoding; its delimiter is the mapping's, else a tab for .tsv, else "," unless the header holds
none and holds ";" or a tab. In a workbook the first non-empty row of the sheet is the header.

Row numbers are kept as a person finds the row in the file, and every error quotes them:
in CSV and Excel the header is row 1, so the first data row is row 2 (a CSV row is a record,
which is the line number unless a quoted value spans lines); Parquet has no header line and
its records are counted from 1. Rows with no value in any column (blank lines, empty
spreadsheet rows) are not patients: they are skipped, keeping the numbers of the rows after
them, and counted in ``RawExport.empty_rows`` (empty rows after the last data row only pad
the file and are not counted).
"""

from __future__ import annotations

import codecs
import csv
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from protocol.errors import DataError
from site_node.mapping import FileOptions

SUFFIXES = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
            ".xlsx": "excel", ".xlsm": "excel"}
STRING = pd.ArrowDtype(pa.string())


@dataclass(frozen=True)
class RawExport:
    """The columns of an export that a plan asked for, as the file holds them.

    ``frame`` has one column per requested name the header holds (absent names are simply
    missing from it; the caller says which plan column needed them) and is indexed by the
    row numbers a person sees in the file. ``header`` is the file's whole header.
    """

    source: str
    kind: str
    header: tuple[str, ...]
    frame: pd.DataFrame
    empty_rows: int = 0

    @property
    def row_word(self) -> str:
        return "record" if self.kind == "parquet" else "row"


def _fail(source: str, problem: str) -> DataError:
    return DataError(f"data file {source}: {problem}")


def _positions(source: str, header: Sequence[str], columns: Sequence[str]) -> dict[str, int]:
    """0-based position of each requested column present in the header; a duplicate is an error."""
    found: dict[str, int] = {}
    for name in dict.fromkeys(columns):
        where = [i for i, h in enumerate(header) if h == name]
        if len(where) > 1:
            cols = " and ".join(str(i + 1) for i in where)
            raise _fail(source, f"column {name!r} appears {len(where)} times in the header (columns {cols}); "
                                "rename or remove the extra ones")
        if where:
            found[name] = where[0]
    return found


def read_export(path: str | Path, columns: Sequence[str], options: FileOptions | None = None) -> RawExport:
    """Read the requested columns of a site's export, by file extension."""
    options = options or FileOptions()
    p = Path(path)
    source = str(path)
    kind = SUFFIXES.get(p.suffix.lower())
    if kind is None:
        raise _fail(source, f"unsupported file type {p.suffix or '(no extension)'!r}; "
                            "export as .csv, .parquet or .xlsx")
    if not p.exists():
        raise _fail(source, "not found")
    if p.is_dir():
        raise _fail(source, "is a folder, not a file")
    try:
        if kind == "csv":
            return _read_csv(p, source, columns, options)
        if kind == "parquet":
            return _read_parquet(p, source, columns)
        return _read_excel(p, source, columns, options)
    except PermissionError:
        raise _fail(source, "cannot be read (permission denied)") from None


# ------------------------------------------------------------------------------------ CSV


def _empty_within(empty: np.ndarray) -> int:
    """Empty rows among the data rows; those after the last data row only pad the file."""
    filled = np.flatnonzero(~empty)
    return int(empty[: filled[-1]].sum()) if filled.size else 0


def _sniff_delimiter(header_line: str) -> str:
    for d in (",", ";", "\t"):
        if d in header_line:
            return d
    return ","


def _line_content(data: bytes, start: int, delimiter: str) -> np.ndarray:
    """Per line from byte ``start``: whether it holds anything but delimiters and blanks."""
    buf = np.frombuffer(data, dtype=np.uint8, offset=start)
    if buf.size == 0:
        return np.zeros(0, dtype=bool)
    content = (buf != ord(delimiter)) & (buf != 10) & (buf != 13) & (buf != 32) & (buf != 9)
    starts = np.concatenate(([0], np.flatnonzero(buf == 10) + 1))
    starts = starts[starts < buf.size]
    return np.logical_or.reduceat(content, starts)


def _read_csv(p: Path, source: str, columns: Sequence[str], options: FileOptions) -> RawExport:
    data = p.read_bytes()
    if codecs.lookup(options.encoding).name != "utf-8":
        try:
            data = data.decode(options.encoding).encode("utf-8")
        except UnicodeDecodeError as e:
            raise _fail(source, f"not {options.encoding} text (byte {e.start})") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    end = data.find(b"\n")
    if not data[: end if end >= 0 else len(data)].strip():
        raise _fail(source, "is empty (no header row)")
    head_bytes = data if end < 0 else data[:end]
    try:
        head = head_bytes.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as e:
        raise _fail(source, f"not UTF-8 text (header, byte {e.start}); "
                            "set [file] encoding in the site's mapping (such as \"latin-1\")") from None
    delimiter = options.delimiter or ("\t" if p.suffix.lower() == ".tsv" else _sniff_delimiter(head))
    header = tuple(h.strip() for h in next(csv.reader([head], delimiter=delimiter)))
    wanted = _positions(source, header, columns)
    body_at = len(data) if end < 0 else end + 1
    lines = _line_content(data, body_at, delimiter)
    if not lines.any():
        raise _fail(source, "has a header but no data rows")
    names = [f"c{i}" for i in range(len(header))]
    # A blank line (or one of delimiters only) before the last data row would shift pyarrow's
    # record numbers, so such files take pandas' path, which keeps them as rows to number and skip.
    last = int(np.flatnonzero(lines)[-1])
    if lines[:last].all():
        try:
            table = pacsv.read_csv(
                pa.BufferReader(data),
                read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
                parse_options=pacsv.ParseOptions(delimiter=delimiter),
                convert_options=pacsv.ConvertOptions(
                    include_columns=[names[i] for i in wanted.values()],
                    column_types={n: pa.string() for n in names},
                    strings_can_be_null=False, quoted_strings_can_be_null=False),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # ragged rows, quoted line breaks, bad UTF-8: pandas says where
        else:
            # Lines of delimiters only after the last data row are read as rows; they are not patients.
            table = table.slice(0, last + 1)
            rows = np.arange(2, table.num_rows + 2, dtype=np.int64)
            frame = pd.DataFrame({name: pd.Series(pd.arrays.ArrowExtensionArray(table.column(names[i])),
                                                  index=rows, copy=False)
                                  for name, i in wanted.items()}, index=rows)
            return RawExport(source, "csv", header, frame)
    return _read_csv_pandas(data, source, header, names, wanted, delimiter)


def _read_csv_pandas(data: bytes, source: str, header: tuple[str, ...], names: list[str],
                     wanted: dict[str, int], delimiter: str) -> RawExport:
    try:
        raw = pd.read_csv(io.BytesIO(data), sep=delimiter, header=None, skiprows=1, names=names, index_col=False,
                          dtype=str, na_filter=False, keep_default_na=False, skip_blank_lines=False,
                          encoding="utf-8", engine="c")
    except UnicodeDecodeError as e:
        raise _fail(source, f"not UTF-8 text (byte {e.start}); set [file] encoding in the site's mapping "
                            "(such as \"latin-1\")") from None
    except (pd.errors.ParserError, ValueError) as e:
        msg = str(e).strip().replace("Error tokenizing data. C error: ", "")
        # pandas counts lines from 1 at the header row it was told to skip, as a person does.
        raise _fail(source, f"not a valid CSV table: {msg}") from None
    raw = raw.fillna("")
    rows = np.arange(2, len(raw) + 2, dtype=np.int64)
    empty = (raw.apply(lambda c: c.str.strip()) == "").all(axis=1).to_numpy() if len(raw.columns) else \
        np.ones(len(raw), dtype=bool)
    keep = ~empty
    if not keep.any():
        raise _fail(source, "has a header but no data rows")
    frame = pd.DataFrame({name: pd.Series(pa.array(raw[names[i]].to_numpy()[keep], type=pa.string()),
                                          dtype=STRING, index=rows[keep])
                          for name, i in wanted.items()}, index=rows[keep])
    return RawExport(source, "csv", header, frame, _empty_within(empty))


# ---------------------------------------------------------------------------------- Excel


def _header_text(v: object) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _excel_column(values: pd.Series) -> pd.Series:
    """A column of cells as one type where the workbook is consistent, objects where it is not."""
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in ("string", "empty"):
        arr = pa.array(values.to_numpy(), type=pa.string(), from_pandas=True)
        return pd.Series(arr, dtype=STRING, index=values.index)
    if kind in ("integer", "floating", "mixed-integer-float", "decimal"):
        return pd.Series(pd.to_numeric(values).to_numpy(dtype=float), index=values.index)
    if kind in ("datetime", "datetime64", "date"):
        return pd.Series(pd.to_datetime(values), index=values.index)
    return values.astype(object)


def _read_excel(p: Path, source: str, columns: Sequence[str], options: FileOptions) -> RawExport:
    try:
        raw = pd.read_excel(p, sheet_name=options.sheet, header=None, dtype=object, engine="openpyxl")
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, TypeError) as e:
        raise _fail(source, f"cannot be read as an Excel .xlsx workbook ({e})") from None
    except (ValueError, IndexError) as e:
        msg = str(e)
        if "not found" in msg or "out of range" in msg.lower() or isinstance(e, IndexError):
            raise _fail(source, f"has no sheet {options.sheet!r} ([file] sheet in the site's mapping)") from None
        raise _fail(source, f"cannot be read as an Excel .xlsx workbook ({msg})") from None
    except Exception as e:  # openpyxl raises its own exception types for corrupt workbooks
        raise _fail(source, f"cannot be read as an Excel .xlsx workbook ({type(e).__name__}: {e})") from None
    # A cell holding only spaces is as empty as a blank one.
    blank = raw.apply(lambda c: c.isna() | c.astype(str).str.strip().eq(""))
    nonempty = ~blank.all(axis=1).to_numpy() if len(raw) else np.zeros(0, dtype=bool)
    if not nonempty.any():
        raise _fail(source, "is empty (no header row)")
    head_at = int(np.argmax(nonempty))
    header = tuple(_header_text(v) for v in raw.iloc[head_at])
    wanted = _positions(source, header, columns)
    below = np.arange(len(raw)) > head_at
    keep = below & nonempty
    if not keep.any():
        raise _fail(source, "has a header but no data rows")
    rows = np.arange(1, len(raw) + 1, dtype=np.int64)[keep]     # pandas row 0 is the sheet's row 1
    body = raw.iloc[keep]
    frame = pd.DataFrame({name: _excel_column(pd.Series(body.iloc[:, i].to_numpy(), index=rows))
                          for name, i in wanted.items()}, index=rows)
    return RawExport(source, "excel", header, frame, _empty_within(~nonempty[below]))


# -------------------------------------------------------------------------------- Parquet


def _arrow_column(name: str, source: str, col: pa.ChunkedArray, index: np.ndarray) -> pd.Series:
    t = col.type
    if pa.types.is_dictionary(t):
        col = pc.cast(col, t.value_type)
        t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pd.Series(pd.arrays.ArrowExtensionArray(pc.cast(col, pa.string())), index=index, copy=False)
    if pa.types.is_boolean(t):
        col = pc.cast(col, pa.int8())      # true/false read as the codes 1/0
        t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return pd.Series(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), index=index)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        if pa.types.is_timestamp(t) and t.tz is not None:
            col = pc.cast(col, pa.timestamp(t.unit))   # keep the wall-clock date the registry wrote
        s = pd.Series(col.to_pandas(date_as_object=False).to_numpy(), index=index)
        return s.astype("datetime64[ns]") if s.dtype.kind == "M" else s
    if pa.types.is_null(t):
        return pd.Series(pd.array([None] * len(col), dtype=STRING), index=index)
    raise _fail(source, f"column {name!r} has the Parquet type {t}, which holds no single value per patient")


def _read_parquet(p: Path, source: str, columns: Sequence[str]) -> RawExport:
    try:
        pf = pq.ParquetFile(p)
        header = tuple(pf.schema_arrow.names)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise _fail(source, f"cannot be read as Parquet ({e})") from None
    if not header:
        raise _fail(source, "is empty (no columns)")
    wanted = _positions(source, header, columns)
    try:
        table = pf.read(columns=list(wanted)) if wanted else None
        n = pf.metadata.num_rows
    except (pa.ArrowException, OSError, ValueError) as e:
        raise _fail(source, f"cannot be read as Parquet ({e})") from None
    if n == 0:
        raise _fail(source, "has no data rows")
    rows = np.arange(1, n + 1, dtype=np.int64)
    frame = pd.DataFrame({name: _arrow_column(name, source, table.column(name), rows) for name in wanted},
                         index=rows) if table is not None else pd.DataFrame(index=rows)
    return RawExport(source, "parquet", header, frame)
