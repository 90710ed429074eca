"""The HTML report and its CSV files hold every analysis and the numbers of results.json.

The results documents here are built from R's numbers (tests/fixtures, see PROVENANCE.md):
Kaplan-Meier, RMST and log-rank from lung by sex, Aalen-Johansen and Gray's test from
colon_cr by rx, so the report is checked against values no code of ours computed; the
proportion, Table 1 and site counts are hand-made, with closed-form intervals.
"""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from r_reference import expected
from scipy.stats import beta, norm

from coordinator import figures
from coordinator.report_html import ReportError, interval, render_report, write_report
from protocol.plan import parse_plan

Z95 = float(norm.ppf(0.975))
LUNG_TIMES = [90, 180, 365, 730]
COLON_TIMES = [365, 730, 1826]
COLON_CAUSES = {"1": "recurrence", "2": "death"}

PLAN_TOML = """
[plan]
title = "Report test: lung by sex, colon by treatment"
time_unit = "days"
bin_width = 1
horizon = 3400
conf_level = 0.95
conf_type = "log-log"
min_count_release = {k}

[endpoints.os]
time = "time"
event = "event"
causes = {{ 1 = "death" }}

[endpoints.cr]
time = "cr_time"
event = "cr_event"
causes = {{ 1 = "recurrence", 2 = "death" }}

[variables.sex]
levels = ["1", "2"]

[variables.rx]
levels = ["Lev", "Lev+5FU", "Obs"]

[variables.complication]
levels = ["0", "1"]

[variables.histology]
levels = ["UPS", "MPNST", "other"]

[variables.age]
type = "numeric"
range = [0, 110]

[[analyses]]
name = "os"
kind = "km"
endpoint = "os"
cause = "death"
strata = ["sex"]
times = [90, 180, 365, 730]

[[analyses]]
name = "os_by_sex"
kind = "logrank"
endpoint = "os"
cause = "death"
groups = "sex"

[[analyses]]
name = "rmst_365"
kind = "rmst"
endpoint = "os"
cause = "death"
groups = "sex"
tau = 365

[[analyses]]
name = "recurrence"
kind = "cif"
endpoint = "cr"
strata = ["rx"]
times = [365, 730, 1826]

[[analyses]]
name = "cr_by_rx"
kind = "gray"
endpoint = "cr"
groups = "rx"

[[analyses]]
name = "complications"
kind = "proportion"
variable = "complication"
success = ["1"]

[[analyses]]
name = "few_complications"
kind = "proportion"
variable = "histology"
success = ["MPNST"]

[[analyses]]
name = "table1"
kind = "describe"
variables = ["sex", "histology", "age"]
"""

CI_TYPE = "log-log"


def _km_table(block: dict) -> dict:
    ci = block["ci"][CI_TYPE]
    return {"time": block["time"], "n_risk": block["n_risk"], "n_event": block["n_event"],
            "n_censor": block["n_censor"], "estimate": block["surv"], "std_err": block["std_err_surv"],
            "lower": ci["lower"], "upper": ci["upper"]}


def r_km_stratum(case: str, stratum: str) -> dict:
    """A results.json km stratum holding R's survfit numbers."""
    km = expected(case)["strata"][stratum]["km"]
    med = km["median"][CI_TYPE]
    return {"n": km["n"], "n_event": km["n_events"], "table": _km_table(km["curve"]),
            "at_times": _km_table(km["at_times"]),
            "median": {"estimate": med["median"], "lower": med["lower"], "upper": med["upper"]},
            "rmst": {"tau": km["rmst"]["tau"], "estimate": km["rmst"]["rmean"], "std_err": km["rmst"]["se"]}}


def _cif_table(block: dict, cause: str) -> dict:
    c = block["cif"][cause]
    return {"time": block["time"], "n_risk": block["n_risk"], "n_event": block["n_event"][cause],
            "n_censor": block["n_censor"], "estimate": c["est"], "std_err": c["std_err"],
            "lower": c["ci"][CI_TYPE]["lower"], "upper": c["ci"][CI_TYPE]["upper"]}


def r_cif_stratum(case: str, stratum: str) -> dict:
    """A results.json cif stratum holding R's multi-state survfit numbers."""
    s = expected(case)["strata"][stratum]
    aj = s["aalen_johansen"]
    return {"n": s["km"]["n"], "causes": {
        name: {"table": _cif_table(aj["curve"], code), "at_times": _cif_table(aj["at_times"], code)}
        for code, name in COLON_CAUSES.items()}}


def _clopper_pearson(x: int, n: int) -> tuple[float, float, float]:
    lo = 0.0 if x == 0 else float(beta.ppf(0.025, x, n - x + 1))
    hi = 1.0 if x == n else float(beta.ppf(0.975, x + 1, n - x))
    return x / n, lo, hi


def _rmst_analysis() -> dict:
    """survRM2-style comparison from R's per-group RMST at tau = 365 (closed form)."""
    groups, mu, se = {}, {}, {}
    for g in ("1", "2"):
        rm = expected("lung_sex")["strata"][g]["km"]["rmst"]
        i = rm["tau"].index(365)
        mu[g], se[g] = rm["rmean"][i], rm["se"][i]
        groups[g] = {"estimate": mu[g], "std_err": se[g], "lower": mu[g] - Z95 * se[g], "upper": mu[g] + Z95 * se[g]}
    d = mu["2"] - mu["1"]
    d_se = math.hypot(se["1"], se["2"])
    lr = math.log(mu["2"] / mu["1"])
    lr_se = math.sqrt((se["2"] / mu["2"]) ** 2 + (se["1"] / mu["1"]) ** 2)
    return {"kind": "rmst", "endpoint": "os", "cause": "death", "groups_variable": "sex", "tau": 365.0,
            "conf_level": 0.95, "groups": groups, "contrasts": [{
                "group": "2", "reference": "1",
                "difference": {"estimate": d, "std_err": d_se, "lower": d - Z95 * d_se, "upper": d + Z95 * d_se,
                               "p": float(2 * norm.sf(abs(d / d_se)))},
                "ratio": {"estimate": math.exp(lr), "log_std_err": lr_se, "lower": math.exp(lr - Z95 * lr_se),
                          "upper": math.exp(lr + Z95 * lr_se), "p": float(2 * norm.sf(abs(lr / lr_se)))}}]}


def make_results(min_count: int = 0) -> dict:
    """A results.json document of every analysis kind, from R's numbers and hand-made counts."""
    plan = parse_plan(PLAN_TOML.format(k=min_count))
    lung, colon = expected("lung_sex"), expected("colon_cr_rx")
    lr = lung["logrank"]["rho0"]
    p0 = _clopper_pearson(0, 34)
    p3 = _clopper_pearson(3, 40)
    return {
        "plan_sha256": plan.sha256,
        "plan": plan.to_dict(),
        "sites": [{"name": "alpha", "n": 3}, {"name": "beta", "n": 100}, {"name": "gamma", "n": 125}],
        "generated_at": "2026-11-28T06:00:00Z",
        "fedsurv_version": "0.1.0",
        "analyses": {
            "os": {"kind": "km", "endpoint": "os", "cause": "death",
                   "strata": {s: r_km_stratum("lung_sex", s) for s in ("all", "1", "2")}},
            "os_by_sex": {"kind": "logrank", "endpoint": "os", "cause": "death", "groups_variable": "sex",
                          "rho": 0.0, "chisq": lr["chisq"], "df": lr["df"], "p": lr["p"],
                          "groups": {g: {"n": n, "observed": o, "expected": e} for g, n, o, e in
                                     zip(lr["groups"], lr["n"], lr["observed"], lr["expected"])}},
            "rmst_365": _rmst_analysis(),
            "recurrence": {"kind": "cif", "endpoint": "cr",
                           "strata": {s: r_cif_stratum("colon_cr_rx", s) for s in ("all", "Lev", "Lev+5FU", "Obs")}},
            "cr_by_rx": {"kind": "gray", "endpoint": "cr", "groups_variable": "rx",
                         "causes": {COLON_CAUSES[c]: v for c, v in colon["gray_test"].items()}},
            "complications": {"kind": "proportion", "variable": "complication", "success": ["1"], "successes": 0,
                              "n": 34, "missing": 0, "estimate": p0[0], "lower": p0[1], "upper": p0[2],
                              "method": "clopper-pearson", "conf_level": 0.95},
            "few_complications": {"kind": "proportion", "variable": "histology", "success": ["MPNST"],
                                  "successes": 3, "n": 40, "missing": 0, "estimate": p3[0], "lower": p3[1],
                                  "upper": p3[2], "method": "clopper-pearson", "conf_level": 0.95},
            "table1": {"kind": "describe", "variables": {
                "sex": {"type": "categorical", "n": 131, "missing": 0,
                        "levels": {"1": {"count": 60, "percent": 100 * 60 / 131},
                                   "2": {"count": 71, "percent": 100 * 71 / 131}}},
                "histology": {"type": "categorical", "n": 131, "missing": 2,
                              "levels": {"UPS": {"count": 127, "percent": 100 * 127 / 131},
                                         "MPNST": {"count": 4, "percent": 100 * 4 / 131},
                                         "other": {"count": 0, "percent": 0.0}}},
                "age": {"type": "numeric", "n": 129, "missing": 4, "mean": 54.31, "sd": 15.14}}},
        },
    }


# ----------------------------------------------------------------- reading the HTML back

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """Tag balance, attributes, text, and every table as header + rows of (text, classes)."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: dict[str, int] = {}
        self.attrs: list[tuple[str, str, str]] = []
        self.text: list[str] = []
        self.tables: list[dict] = []
        self._cell: list[str] | None = None
        self._cell_cls = ""
        self._row: list[tuple[str, str]] | None = None
        self._in_head = False
        self._title: list[str] | None = None
        self.title = ""
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for k, v in attrs:
            self.attrs.append((tag, k, v or ""))
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "table":
            self.tables.append({"caption": "", "header": [], "rows": []})
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell, self._cell_cls = [], dict(attrs).get("class") or ""
        elif tag == "title":
            self._title = []

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(("".join(self._cell).strip(), self._cell_cls))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            t = self.tables[-1]
            if "thead" in self.stack:
                t["header"] = [c for c, _ in self._row]
            else:
                t["rows"].append(self._row)
            self._row = None
        elif tag == "title" and self._title is not None:
            self.title = "".join(self._title)
            self._title = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._title is not None:
            self._title.append(data)

    def all_text(self) -> str:
        return re.sub(r"\s+", " ", "".join(self.text))

    def cells(self) -> list[tuple[str, str]]:
        return [c for t in self.tables for r in t["rows"] for c in r]

    def column(self, header_part: str) -> list[str]:
        out = []
        for t in self.tables:
            for i, h in enumerate(t["header"]):
                if header_part in h:
                    out += [r[i][0] for r in t["rows"] if i < len(r)]
        return out


@pytest.fixture(scope="module")
def rendered() -> tuple[str, dict[str, str], Page]:
    doc, csvs = render_report(make_results())
    return doc, csvs, Page(doc)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def pct_ci(est: float, lo: float | None, hi: float | None) -> str:
    """How a paper prints it; R's NA interval (incidence 0 at the start) as not estimable."""
    if lo is None and hi is None:
        return f"{pct(est)} (95% CI not estimable)"
    return f"{pct(est)} (95% CI {pct(lo)} to {pct(hi)})"


# ----------------------------------------------------------------- validity


def test_html_is_well_formed_and_self_contained(rendered):
    doc, _, page = rendered
    assert doc.startswith("<!DOCTYPE html>")
    assert page.errors == [] and page.stack == []
    for tag in ("html", "head", "title", "body"):
        assert page.tags.get(tag) == 1, tag
    assert ("html", "lang", "en") in page.attrs
    assert ("meta", "charset", "utf-8") in page.attrs
    assert page.title.startswith("Report test: lung by sex")
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    for tag, key, value in page.attrs:
        if key in ("src", "href", "xlink:href", "srcset", "action"):
            assert value.startswith(("data:image/png;base64,", "#")), (tag, key, value[:40])
    assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", doc.replace("http://www.w3.org/", ""))
    assert "@import" not in doc and "url(" not in doc


def test_every_analysis_has_a_section_and_a_csv(rendered):
    _, csvs, page = rendered
    ids = {v for t, k, v in page.attrs if k == "id"}
    for name in make_results()["analyses"]:
        assert f"a-{name}" in ids
        assert f"{name}.csv" in csvs
        assert f"#a-{name}" in {v for t, k, v in page.attrs if k == "href"}
    # Figures: two KM strata, three CIF strata per cause (2), stacked views for each rx.
    imgs = [v for t, k, v in page.attrs if t == "img" and k == "src"]
    assert len(imgs) == 1 + 2 + 3
    # Each with a narrower drawing that phones pick.
    narrow = [v for t, k, v in page.attrs if t == "source" and k == "srcset"]
    assert len(narrow) == len(imgs) and all(v.startswith("data:image/png;base64,") for v in narrow)
    assert [v for t, k, v in page.attrs if t == "source" and k == "media"] == ["(max-width: 600px)"] * len(imgs)


def test_plan_hash_sites_and_counts(rendered):
    _, _, page = rendered
    res = make_results()
    text = page.all_text()
    assert res["plan_sha256"] in text
    assert "matches the plan below" in text
    site_rows = {r[0][0]: r[1][0] for t in page.tables if t["header"] == ["Site", "Patients"] for r in t["rows"]}
    assert site_rows == {"alpha": "3", "beta": "100", "gamma": "125", "Total": "228"}


def test_km_numbers_at_report_times_are_R_values(rendered):
    _, csvs, page = rendered
    lung = expected("lung_sex")
    rows = {}
    for t in page.tables:
        if t["header"][:2] == ["Group", "Time (days)"] and "Overall survival (95% CI)" in t["header"]:
            for r in t["rows"]:
                rows[(r[0][0], r[1][0])] = [c for c, _ in r]
    assert len(rows) == 3 * len(LUNG_TIMES)
    for key, label in (("all", "All patients"), ("1", "sex = 1"), ("2", "sex = 2")):
        at = lung["strata"][key]["km"]["at_times"]
        ci = at["ci"][CI_TYPE]
        for i, t in enumerate(at["time"]):
            _, _, n_risk, n_event, n_censor, est = rows[(label, str(t))]
            assert n_risk == str(at["n_risk"][i]) and n_event == str(at["n_event"][i])
            assert n_censor == str(at["n_censor"][i])
            assert est == f"{pct(at['surv'][i])} (95% CI {pct(ci['lower'][i])} to {pct(ci['upper'][i])})"
    # Medians in days with their interval.
    med = lung["strata"]["1"]["km"]["median"][CI_TYPE]
    assert f"{med['median']} days (95% CI {med['lower']} to {med['upper']} days)" in page.column("Median time")
    # RMST per stratum with est +- z se.
    rm = lung["strata"]["2"]["km"]["rmst"]
    i = rm["tau"].index(365)
    e, s = rm["rmean"][i], rm["se"][i]
    assert (f"{e:.1f} days (95% CI {e - Z95 * s:.1f} to {e + Z95 * s:.1f} days)"
            in page.column("Restricted mean survival time"))
    # The CSV keeps R's full-precision values.
    assert repr(lung["strata"]["2"]["km"]["curve"]["surv"][5]) in csvs["os.csv"]


def test_logrank_gray_rmst_numbers(rendered):
    _, _csvs, page = rendered
    text = page.all_text()
    lr = expected("lung_sex")["logrank"]["rho0"]
    assert f"\u03c7\u00b2 = {lr['chisq']:.2f} on 1 degree of freedom, p = {lr['p']:.3f}" in text
    obs = dict(zip(page.column("Sex"), page.column("Observed events")))
    assert obs == {g: str(o) for g, o in zip(lr["groups"], lr["observed"])}
    assert [f"{e:.2f}" for e in lr["expected"]] == page.column("Expected events")
    gray = expected("colon_cr_rx")["gray_test"]
    assert f"cumulative incidence of recurrence between levels of rx: \u03c7\u00b2 = {gray['1']['stat']:.2f} " \
           f"on 2 degrees of freedom, p < 0.001" in text
    assert f"\u03c7\u00b2 = {gray['2']['stat']:.2f} on 2 degrees of freedom, p = {gray['2']['p']:.3f}" in text
    c = make_results()["analyses"]["rmst_365"]["contrasts"][0]["difference"]
    assert (f"Patients with sex = 2 lived on average {c['estimate']:.1f} days (95% CI {c['lower']:.1f} to "
            f"{c['upper']:.1f}) longer within the first 365 days than patients with sex = 1") in text
    assert "p_text" not in text and "None" not in text and "nan" not in text.lower().split()


def test_cif_numbers_at_report_times_are_R_values(rendered):
    _, _csvs, page = rendered
    colon = expected("colon_cr_rx")
    for code, cause in COLON_CAUSES.items():
        col = page.column(f"Cumulative incidence of {cause} (95% CI)")
        assert len(col) == 4 * len(COLON_TIMES)
        for s in ("all", "Lev", "Lev+5FU", "Obs"):
            at = colon["strata"][s]["aalen_johansen"]["at_times"]
            cif = at["cif"][code]
            for i in range(len(at["time"])):
                lo, hi = cif["ci"][CI_TYPE]["lower"][i], cif["ci"][CI_TYPE]["upper"][i]
                assert pct_ci(cif["est"][i], lo, hi) in col
    assert "Events (recurrence)" in {h for t in page.tables for h in t["header"]}


def test_proportion_prints_as_the_issue_asks(rendered):
    _, _, page = rendered
    col = page.column("Proportion with complication = 1 (95% CI)")
    assert col == ["0.0% (95% CI 0.0% to 10.3%)"]
    assert "Clopper-Pearson exact" in page.all_text()


def test_table1(rendered):
    _, _csvs, page = rendered
    values = {r[0][0]: r[1][0] for t in page.tables if t["header"][:1] == ["Characteristic"]
                  for r in t["rows"]}
    assert values["1"] == "60 (45.8%)" and values["2"] == "71 (54.2%)"
    assert values["MPNST"] == "4 (3.1%)" and values["other"] == "0 (0.0%)"
    assert values["age, mean (SD)"] == "54.3 (15.1)"


def test_every_interval_contains_its_estimate_and_names_its_quantity(rendered):
    _, _, page = rendered
    quantities = ("survival", "incidence", "proportion", "rmst", "restricted mean", "median")
    pattern = re.compile(r"^(-?[\d.]+)(%| days)? \(95% CI (-?[\d.]+)%? to (-?[\d.]+)(?:%| days)?\)$")
    n = 0
    for t in page.tables:
        for i, h in enumerate(t["header"]):
            for r in t["rows"]:
                if i < len(r) and "CI" in r[i][0]:
                    assert "CI" in h and any(q in h.lower() for q in quantities), h
                    if r[i][0].endswith("CI not estimable)"):
                        continue
                    m = pattern.match(r[i][0])
                    assert m, r[i][0]
                    est, lo, hi = float(m.group(1)), float(m.group(3)), float(m.group(4))
                    assert lo <= est <= hi, r[i][0]
                    n += 1
    assert n > 50


def test_an_interval_that_misses_its_estimate_is_refused():
    with pytest.raises(ReportError, match="does not contain"):
        interval(0.5, 0.6, 0.9, "95% CI")
    assert interval(0.77, 0.631, 0.902, "95% CI") == "77.0% (95% CI 63.1% to 90.2%)"
    assert interval(1.0, None, None, "95% CI") == "100.0% (95% CI not estimable)"
    res = make_results()
    res["analyses"] = {"complications": res["analyses"]["complications"]}
    res["analyses"]["complications"]["lower"] = 0.2
    with pytest.raises(ReportError):
        render_report(res)


# ----------------------------------------------------------------- disclosure


def _count_cells(page: Page) -> list[str]:
    return [c for c, cls in page.cells() if "count" in cls.split()]


def test_disclosure_rule_applies_to_every_released_count(monkeypatch):
    k = 5
    drawn: list[figures.DrawnFigure] = []
    for fn in ("km_figure", "cif_figure", "stacked_cif_figure"):
        orig = getattr(figures, fn)

        def wrapped(*a, _orig=orig, **kw):
            d = _orig(*a, **kw)
            drawn.append(d)
            return d
        monkeypatch.setattr(figures, fn, wrapped)
    doc, csvs = render_report(make_results(min_count=k))
    page = Page(doc)
    counts = _count_cells(page)
    assert len(counts) > 100
    small = {str(i) for i in range(1, k)}
    assert not small & set(counts)
    assert "<5" in counts  # the 3-patient site, tail numbers at risk, 4 MPNST, 3 successes
    # Every count cell is a count: an integer or the placeholder.
    assert all(re.fullmatch(r"\d+|<5", c) for c in counts), [c for c in counts if not re.fullmatch(r"\d+|<5", c)]
    site_rows = {r[0][0]: r[1][0] for t in page.tables if t["header"] == ["Site", "Patients"] for r in t["rows"]}
    assert site_rows["alpha"] == "<5"
    values = {r[0][0]: r[1][0] for t in page.tables if t["header"][:1] == ["Characteristic"]
                  for r in t["rows"]}
    assert values["MPNST"] == "<5 (<3.9%)"  # 3.1% would give the count back
    assert values["other"] == "0 (0.0%)"
    # Estimates stay exact: 3 of 40 is still 7.5%.
    assert page.column("Proportion with histology = MPNST (95% CI)")[0].startswith("7.5% (95% CI")
    assert "min_count_release = 5" in page.all_text() and "from 1 to 4" in page.all_text()
    # Risk tables under the figures.
    assert drawn and all(t not in small for d in drawn for _, row in d.risk_rows for t in row)
    assert any("<5" in row for d in drawn for _, row in d.risk_rows)
    # CSV count columns.
    import csv as _csv
    import io
    for fname, text in csvs.items():
        rows = list(_csv.DictReader(io.StringIO(text)))
        for r in rows:
            for col in ("n", "n_risk", "n_event", "n_censor", "observed", "successes", "count", "missing"):
                assert r.get(col, "") not in small, (fname, col, r)
    assert any(r.get("n_risk") == "<5" for r in _csv.DictReader(io.StringIO(csvs["os.csv"])))


def test_without_a_rule_counts_are_exact(rendered):
    _, _, page = rendered
    counts = _count_cells(page)
    assert "1" in counts and not any(c.startswith("<") for c in counts)
    assert "Disclosure control: none" in page.all_text()


# ----------------------------------------------------------------- files and command


def test_write_report_writes_the_report_and_csvs_only(tmp_path: Path):
    res = make_results()
    path = write_report(res, tmp_path)
    assert path == tmp_path / "report.html"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["report.html"] + [f"{n}.csv" for n in res["analyses"]])
    header = (tmp_path / "os.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["section", "stratum", "time", "n_risk"]


def test_svg_figures_inline(tmp_path: Path):
    doc, _ = render_report(make_results(), figure_format="svg", stacked=False)
    page = Page(doc)
    assert page.errors == [] and page.tags.get("svg") == 1 + 2
    assert "img" not in page.tags
    ids = [v for _, k, v in page.attrs if k == "id"]
    assert len(ids) == len(set(ids))
    refs = set(re.findall(r'url\(#([^)]+)\)', doc)) | {v[1:] for _, k, v in page.attrs
                                                      if k in ("href", "xlink:href") and v.startswith("#")}
    assert refs <= set(ids)


def test_unknown_kind_and_missing_optional_keys_do_not_break_the_report():
    res = make_results()
    res["analyses"]["future"] = {"kind": "something_new", "value": 1.5, "n": 7}
    del res["generated_at"], res["fedsurv_version"]
    for st in res["analyses"]["os"]["strata"].values():
        del st["rmst"], st["median"]
    res["analyses"]["os"]["strata"]["1"]["at_times"]["lower"][0] = None
    doc, csvs = render_report(res)
    page = Page(doc)
    assert page.errors == []
    assert "future.csv" in csvs and "something_new" in page.all_text()


def test_report_command(tmp_path: Path):
    from fedsurv.cli import _load_commands
    from fedsurv.groups import root

    _load_commands()
    (tmp_path / "results.json").write_text(json.dumps(make_results(min_count=11)))
    result = CliRunner().invoke(root, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report.html").exists() and (tmp_path / "os.csv").exists()
    assert "report.html" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(root, ["report", str(empty)])
    assert result.exit_code != 0
    assert "no results.json" in result.output and "Traceback" not in result.output
    (empty / "results.json").write_text("{not json")
    result = CliRunner().invoke(root, ["report", str(empty)])
    assert result.exit_code != 0 and "not valid JSON" in result.output


def test_main_results_summary(rendered):
    _, _, page = rendered
    text = page.all_text()
    at = expected("lung_sex")["strata"]["all"]["km"]["at_times"]
    ci = at["ci"][CI_TYPE]
    first = f"Overall survival at 90 days: {pct_ci(at['surv'][0], ci['lower'][0], ci['upper'][0])}; at 180 days:"
    assert first in text
    assert "Proportion with complication = 1: 0 of 34 patients, 0.0% (95% CI 0.0% to 10.3%)." in text
    cif = expected("colon_cr_rx")["strata"]["all"]["aalen_johansen"]["at_times"]["cif"]["1"]
    assert (f"Cumulative incidence of recurrence at 365 days: "
            f"{pct_ci(cif['est'][0], cif['ci'][CI_TYPE]['lower'][0], cif['ci'][CI_TYPE]['upper'][0])}") in text
    assert text.index("Main results") < text.index("Participating sites")


def test_medians_not_reached():
    res = make_results()
    strata = res["analyses"]["os"]["strata"]
    strata["1"]["median"] = {"estimate": 270, "lower": 210, "upper": None}
    strata["2"]["median"] = {"estimate": None, "lower": 345, "upper": None}
    strata["all"]["median"] = {"estimate": None, "lower": None, "upper": None}
    col = Page(render_report(res, stacked=False)[0]).column("Median time")
    assert col == ["not reached", "270 days (95% CI 210 days to not reached)",
                   "not reached (95% CI 345 days to not reached)"]
    strata["1"]["median"] = {"estimate": 270, "lower": 280, "upper": 300}
    with pytest.raises(ReportError, match="does not contain the median"):
        render_report(res, stacked=False)


def test_secure_aggregation_and_left_out_rows():
    res = make_results(min_count=5)
    res["secure_aggregation"] = {"query_ids": ["ab12", "cd34"], "notes": ["query ab12 dropped: gamma did not answer"],
                                 "refusals": [{"site": "gamma", "reason": "refused: stratum with 2 patients"}]}
    res["site_left_out"] = {"beta": {"missing_histology": 3, "missing_sex": 12}}
    page = Page(render_report(res, stacked=False)[0])
    text = page.all_text()
    assert "2 query rounds (query ids ab12, cd34)" in text and "gamma did not answer" in text
    refusals = [[c for c, _ in r] for t in page.tables if "Refusal or error" in t["header"] for r in t["rows"]]
    assert refusals == [["gamma", "refused: stratum with 2 patients"]]
    left = [[c for c, _ in r] for t in page.tables if "Rows left out on purpose" in t["header"] for r in t["rows"]]
    assert left == [["beta", "missing histology", "<5"], ["beta", "missing sex", "12"]]


def test_report_of_a_real_run_shows_R_numbers(tmp_path: Path):
    """fedsurv's own pipeline over 3 sites of colon_cr, then the report: R's numbers come out."""
    import numpy as np
    import pandas as pd
    from consortium import csv_for, plan_text, split_sites

    from fedsurv.runner import run_in_process, stamp

    df = pd.read_csv(csv_for("colon_cr_rx"))
    sites = split_sites(df, np.arange(len(df)) % 3, tmp_path / "sites")
    results, _ = run_in_process(parse_plan(plan_text("colon_cr_rx", CI_TYPE)), sites)
    results = json.loads(json.dumps(stamp(results)))  # as read back from results.json
    out = tmp_path / "out"
    path = write_report(results, out, stacked=False)
    page = Page(path.read_text(encoding="utf-8"))
    assert page.errors == [] and "matches the plan below" in page.all_text()
    colon = expected("colon_cr_rx")
    for code, cause in COLON_CAUSES.items():
        col = page.column(f"Cumulative incidence of {cause} (95% CI)")
        for s in ("all", "Lev", "Lev+5FU", "Obs"):
            at = colon["strata"][s]["aalen_johansen"]["at_times"]
            cif = at["cif"][code]
            for i in range(len(at["time"])):
                lo, hi = cif["ci"][CI_TYPE]["lower"][i], cif["ci"][CI_TYPE]["upper"][i]
                assert pct_ci(cif["est"][i], lo, hi) in col
    km = colon["strata"]["Obs"]["km"]["at_times"]
    col = page.column("Survival free of recurrence (95% CI)")
    for i in range(len(km["time"])):
        ci = km["ci"][CI_TYPE]
        assert pct_ci(km["surv"][i], ci["lower"][i], ci["upper"][i]) in col
    lr = colon["logrank"]["rho0"]
    assert f"\u03c7\u00b2 = {lr['chisq']:.2f} on 2 degrees of freedom, p < 0.001" in page.all_text()
    assert sorted(p.name for p in out.iterdir()) == sorted(["report.html"] + [f"{a}.csv" for a in results["analyses"]])
