"""Cox models as a user runs them: `fedsurv run`, `fedsurv report`, `fedsurv site preview`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from regression_plans import expected, model, plan_text, split

from fedsurv.cli import main

CASE = "lung_age_sex_ecog_w30"


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture
def files(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_text(CASE, model("efron", CASE, robust=True) + model("breslow", CASE, ties="breslow")))
    sites = split(CASE, 4, tmp_path / "sites", seed=2)
    return plan, sites


def site_args(sites) -> list[str]:
    return [a for s in sites for a in ("--site", f"{s.name}={s.data}")]


def test_run_report_and_summary_show_r_numbers(files, tmp_path, capsys):
    plan, sites = files
    code, out, err = cli(["run", "--plan", str(plan), "--out", str(tmp_path / "out")] + site_args(sites), capsys)
    assert code == 0, err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    ref = expected(CASE)
    got = results["analyses"]["breslow"]
    assert np.max(np.abs(np.array(got["coef"]) - ref["breslow"]["coef"]) / np.abs(ref["breslow"]["coef"])) < 1e-10
    assert got["iterations"] == ref["breslow"]["iter"]
    # the summary prints R's hazard ratios and limits (3 decimals)
    for term, hr, lo, hi in zip(ref["breslow"]["terms"], np.exp(ref["breslow"]["coef"]),
                                ref["breslow"]["hr_ci95"]["lower"], ref["breslow"]["hr_ci95"]["upper"]):
        assert f"{term:<14} HR {hr:.3f} (95% CI {lo:.3f} to {hi:.3f})" in out + err
    code, _, err = cli(["report", str(tmp_path / "out")], capsys)
    assert code == 0, err
    html = (tmp_path / "out" / "report.html").read_text()
    robust = ref["efron_robust"]
    assert "Robust SE" in html and f"{robust['robust_se'][1]:.4f}" in html
    assert "Likelihood ratio test" in html and f"{ref['efron']['lr_test']:.2f}" in html
    rows = (tmp_path / "out" / "breslow.csv").read_text().splitlines()
    assert len(rows) == 1 + len(ref["breslow"]["terms"])


def test_preview_shows_what_rounds_send(files, tmp_path, capsys):
    plan, sites = files
    policy = tmp_path / "policy.toml"
    policy.write_text('[policy]\nkinds = ["cox"]\nvariables = ["age", "sex", "ph.ecog"]\nfinest_bin_width = 7\n'
                      "min_stratum_size = 1\n\n[regression]\nmin_exits = 3\nmax_xb_spread = 8\n")
    code, out, err = cli(["site", "preview", "--plan", str(plan), "--data", str(sites[0].data),
                          "--policy", str(policy)], capsys)
    assert code == 0, out + err
    assert "decision: ALLOWED" in out
    assert "[regsurv:efron] cox model efron" in out
    assert "at least 3 exits" in out and "at most 8" in out
    narrow = tmp_path / "narrow.toml"
    narrow.write_text('[policy]\nkinds = ["km"]\nvariables = ["age"]\n')
    code, out, _ = cli(["site", "preview", "--plan", str(plan), "--data", str(sites[0].data),
                        "--policy", str(narrow)], capsys)
    assert code == 1
    assert "kind 'cox' is not allowed" in out and "variable 'sex' is not allowed" in out


def test_bad_covariate_value_names_file_row_column(files, tmp_path, capsys):
    plan, sites = files
    path = sites[1].data
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    col = header.index('"age"') if '"age"' in header else header.index("age")
    cells = lines[3].split(",")
    cells[col] = "140"
    lines[3] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    code, _, err = cli(["run", "--plan", str(plan), "--out", str(tmp_path / "out")] + site_args(sites), capsys)
    assert code == 2
    assert str(path) in err and "'age'" in err and "row 4" in err and "140" in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_bad_model_in_plan_names_the_key(files, tmp_path, capsys):
    plan, sites = files
    plan.write_text(plan.read_text().replace('covariates = ["age", "sex", "ph.ecog"]\nties = "breslow"',
                                             'covariates = ["age", "bmi"]\nties = "breslow"'))
    code, _, err = cli(["run", "--plan", str(plan), "--out", str(tmp_path / "out")] + site_args(sites), capsys)
    assert code == 2
    assert "analyses[1] (breslow).covariates: 'bmi' is not declared under [variables]" in err
    assert not (tmp_path / "out" / "results.json").exists()
