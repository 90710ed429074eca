"""The site's mapping file: parsing, defaults and errors that name the file and the key."""

import re

import pytest

from fedsurv.demo_data import LOCAL_CODES, LOCAL_COLUMNS, LOCAL_DATE_FORMAT, mapping_toml
from protocol.errors import DataError
from site_node.mapping import DEFAULT_MISSING, FileOptions, SiteMapping, load_mapping, parse_mapping
import site_node.mapping as mapping_module


def docstring_example() -> str:
    """The example the module documents (and the README quotes), taken from its docstring."""
    doc = mapping_module.__doc__
    return re.search(r"```toml\n(.*?)```", doc, re.S).group(1)


def test_documented_example_parses_as_documented():
    m = parse_mapping(docstring_example(), "site.toml")
    assert m.file == FileOptions(sheet="Export", delimiter=";", decimal=",", encoding="latin-1",
                                 missing=("", "NA", "unknown"))
    assert m.columns == {"time": "Survival_days", "event": "Status", "sex": "Geschlecht"}
    assert m.codes == {"event": {"dead": 1, "alive": 0}, "sex": {"m": "M", "w": "F", "unbekannt": ""}}
    assert m.date_format == "%d.%m.%Y"
    assert m.source == "site.toml"


def test_empty_mapping_means_the_export_uses_the_plans_names():
    m = parse_mapping("", "empty.toml")
    assert m.columns == {} and m.codes == {} and m.date_format is None
    assert m.file == FileOptions()
    assert m.file.missing == DEFAULT_MISSING and m.file.delimiter is None and m.file.decimal == "."
    assert SiteMapping().columns == {}


def test_demo_mapping_round_trips(tmp_path):
    path = tmp_path / "vienna_mapping.toml"
    path.write_text(mapping_toml())
    m = load_mapping(path)
    assert m.columns == LOCAL_COLUMNS
    assert m.codes == LOCAL_CODES
    assert m.date_format == LOCAL_DATE_FORMAT
    assert m.source == str(path)


def test_codes_are_trimmed_and_missing_list_keeps_the_empty_cell():
    m = parse_mapping('[codes.sex]\n" m " = " M "\n[file]\nmissing = ["99"]\n')
    assert m.codes == {"sex": {"m": "M"}}
    assert m.file.missing == ("99", "")


def test_sheet_by_number_and_tab_delimiter():
    m = parse_mapping('[file]\nsheet = 2\ndelimiter = "\\t"\n')
    assert m.file.sheet == 2 and m.file.delimiter == "\t"


BAD = [
    ("not toml", "[columns\ntime = 1", "mapping file m.toml: not valid TOML"),
    ("unknown table", '[values.age]\nscale = 2', "mapping file m.toml: [values]: unknown key (allowed here: codes, "
                                                 "columns, dates, file)"),
    ("unknown date key", '[dates]\nfromat = "%d.%m.%Y"', "mapping file m.toml: [dates] fromat: unknown key "
                                                        "(allowed here: format)"),
    ("unknown file key", '[file]\nseparator = ";"', "mapping file m.toml: [file] separator: unknown key"),
    ("column not text", '[columns]\ntime = 3', "mapping file m.toml: [columns] time: expected a non-empty text, got 3"),
    ("column empty", '[columns]\ntime = " "', "mapping file m.toml: [columns] time: expected a non-empty text"),
    ("column table", '[columns.time]\nname = "T"', "mapping file m.toml: [columns.time]: unknown table"),
    ("code float", '[codes.event]\ndead = 1.5', "mapping file m.toml: [codes.event] 'dead': expected a plan code "
                                               "(an integer or a text), got 1.5"),
    ("code bool", '[codes.event]\ndead = true', "mapping file m.toml: [codes.event] 'dead': expected a plan code"),
    ("codes not table", 'codes = 1', "mapping file m.toml: [codes]: expected [codes.COLUMN] tables"),
    ("code twice", '[codes.sex]\n"m" = "M"\n"m " = "F"', "mapping file m.toml: [codes.sex] 'm ': this code is "
                                                        "listed twice"),
    ("date format", '[dates]\nformat = "%d.%m"', "mapping file m.toml: [dates] format: '%d.%m' is not a strptime "
                                                "format with day, month and year"),
    ("date format no directive", '[dates]\nformat = "dd.mm.yyyy"', "[dates] format: 'dd.mm.yyyy' is not"),
    ("encoding", '[file]\nencoding = "klingon"', "mapping file m.toml: [file] encoding: unknown encoding 'klingon'"),
    ("delimiter", '[file]\ndelimiter = ";;"', "mapping file m.toml: [file] delimiter: expected one character"),
    ("decimal", '[file]\ndecimal = "\'"', "mapping file m.toml: [file] decimal: expected \".\" or \",\""),
    ("decimal is delimiter", '[file]\ndelimiter = ","\ndecimal = ","', "[file] decimal: the decimal mark cannot "
                                                                       "also be the delimiter"),
    ("sheet", '[file]\nsheet = -1', "mapping file m.toml: [file] sheet: expected a sheet name or a 0-based number"),
    ("missing not list", '[file]\nmissing = "NA"', "mapping file m.toml: [file] missing: expected a list of texts"),
]


@pytest.mark.parametrize("text,expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_mappings_name_the_file_and_key(text, expected):
    with pytest.raises(DataError) as e:
        parse_mapping(text, "m.toml")
    assert expected in str(e.value)


def test_mapping_file_not_found_or_not_utf8(tmp_path):
    with pytest.raises(DataError, match=r"mapping file .*nowhere\.toml: not found"):
        load_mapping(tmp_path / "nowhere.toml")
    bad = tmp_path / "latin.toml"
    bad.write_bytes('[codes.sex]\n"m\xe4nnlich" = "M"\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"mapping file .*latin\.toml: not UTF-8 text"):
        load_mapping(bad)
