"""`fedsurv run` on bad files, plans and mappings: one clear message on stderr, no traceback,
and no results.json written."""

import pytest

from fedsurv.cli import main
from r_reference import DATA

PLAN = """
[plan]
title = "lung by sex"
bin_width = 1
horizon = 1100

[endpoints.os]
time = "time"
event = "event"
causes = { 1 = "death" }

[variables.sex]
levels = ["1", "2"]

[[analyses]]
name = "os"
kind = "km"
endpoint = "os"
strata = ["sex"]
times = [180, 365]
"""


@pytest.fixture
def consortium(tmp_path):
    """The lung rows split into three site files, and a plan."""
    lines = (DATA / "lung.csv").read_text().splitlines()
    header, body = lines[0], lines[1:]
    sites = {}
    for i, name in enumerate(("a", "b", "c")):
        path = tmp_path / f"{name}.csv"
        path.write_text("\n".join([header] + body[i::3]) + "\n")
        sites[name] = path
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    return plan, sites


def run(capsys, plan, sites, out, mappings=()) -> tuple[int, str]:
    argv = ["run", "--plan", str(plan), "--out", str(out)]
    for name, path in sites.items():
        argv += ["--site", f"{name}={path}"]
    for name, path in mappings:
        argv += ["--mapping", f"{name}={path}"]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return e.value.code, err


def test_good_run_writes_results(consortium, tmp_path, capsys):
    # The control: the same harness sees results.json when nothing is wrong.
    plan, sites = consortium
    try:
        main(["run", "--plan", str(plan), "--out", str(tmp_path / "out")] +
             [a for n, p in sites.items() for a in ("--site", f"{n}={p}")])
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err
    assert (tmp_path / "out" / "results.json").exists()


def test_bad_rows_in_one_site(consortium, tmp_path, capsys):
    plan, sites = consortium
    lines = sites["b"].read_text().splitlines()
    cells = lines[4].split(",")
    cells[1] = "-30"                                          # time of row 5
    lines[4] = ",".join(cells)
    sites["b"].write_text("\n".join(lines) + "\n")
    code, err = run(capsys, plan, sites, tmp_path / "out")
    assert code == 2
    assert f"error: data file {sites['b']}: 1 problem, nothing was computed:\n" \
           "  column 'time': negative time in row 5 (value '-30')" in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_missing_site_file(consortium, tmp_path, capsys):
    plan, sites = consortium
    sites["c"] = tmp_path / "c_export.csv"
    code, err = run(capsys, plan, sites, tmp_path / "out")
    assert code == 2 and f"error: data file {sites['c']}: not found" in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_bad_plan(consortium, tmp_path, capsys):
    plan, sites = consortium
    plan.write_text(PLAN.replace("horizon = 1100", "horizon = -1"))
    code, err = run(capsys, plan, sites, tmp_path / "out")
    assert code == 2 and f"error: {plan}: plan.horizon: must be positive" in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_unknown_mapping_key(consortium, tmp_path, capsys):
    plan, sites = consortium
    mapping = tmp_path / "a_mapping.toml"
    mapping.write_text('[colums]\ntime = "T"\n')
    code, err = run(capsys, plan, sites, tmp_path / "out", [("a", mapping)])
    assert code == 2
    assert f"error: mapping file {mapping}: [colums]: unknown key (allowed here: codes, columns, dates, file)" in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_mapping_to_absent_column(consortium, tmp_path, capsys):
    plan, sites = consortium
    mapping = tmp_path / "c_mapping.toml"
    mapping.write_text('[columns]\nsex = "gender"\n')
    code, err = run(capsys, plan, sites, tmp_path / "out", [("c", mapping)])
    assert code == 2
    assert f"error: data file {sites['c']}: 1 missing column, nothing was computed:\n" \
           f"  column 'gender' (plan column 'sex'): not in the file; the mapping file {mapping} names it in " \
           "[columns] sex" in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_code_mapping_to_unknown_level(consortium, tmp_path, capsys):
    plan, sites = consortium
    mapping = tmp_path / "a_mapping.toml"
    mapping.write_text('[codes.sex]\n"1" = "male"\n')
    code, err = run(capsys, plan, sites, tmp_path / "out", [("a", mapping)])
    assert code == 2
    assert f"error: mapping file {mapping}: [codes.sex] '1' = 'male': not a level of variable 'sex' " \
           "(its levels: '1', '2')" in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_mapping_for_a_site_that_is_not_there(consortium, tmp_path, capsys):
    plan, sites = consortium
    mapping = tmp_path / "m.toml"
    mapping.write_text("")
    code, err = run(capsys, plan, sites, tmp_path / "out", [("z", mapping)])
    assert code == 2 and "no --site named 'z'" in err
    assert not (tmp_path / "out" / "results.json").exists()
