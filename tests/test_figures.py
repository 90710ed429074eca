"""Figures: valid PNG and SVG, one curve per stratum, risk tables that equal R's numbers at risk.

Curves are drawn from R's survfit tables (tests/fixtures); the number at risk under the axis
must equal R's ``summary(fit, times = t)$n.risk`` = #{T >= t} at the same times.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import matplotlib.image as mpimg
import numpy as np
import pytest
from r_reference import expected
from test_report import COLON_CAUSES, r_cif_stratum, r_km_stratum

from coordinator.disclosure import DisclosureRule
from coordinator.figures import (
    cif_figure,
    km_figure,
    number_at_risk,
    png_bytes,
    stacked_cif_figure,
    svg_text,
    tick_times,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _curves(ax):
    return [ln for ln in ax.lines if not ln.get_label().startswith("_")]


def _bands(ax):
    return [c for c in ax.collections if (c.get_gid() or "").startswith("band-")]


def lung_curves() -> dict:
    return {f"sex = {s}": r_km_stratum("lung_sex", s)["table"] for s in ("1", "2")}


def test_number_at_risk_by_hand():
    # T = 2, 3 (censored), 5, 7, 8 (censored): #{T >= t} by counting.
    table = {"time": [2, 3, 5, 7, 8], "n_risk": [5, 4, 3, 2, 1]}
    at = [0, 2, 2.5, 3, 6, 8, 9, 100]
    assert number_at_risk(table, at).tolist() == [5, 5, 4, 4, 2, 1, 0, 0]
    assert number_at_risk({"time": [], "n_risk": []}, [0, 1]).tolist() == [0, 0]


@pytest.mark.parametrize("case,times", [("lung_sex", [90, 180, 365, 730]), ("veteran_trt", [30, 90, 180, 365])])
def test_km_risk_table_equals_R_numbers_at_risk(case, times):
    strata = [s for s in expected(case)["strata"] if s != "all"]
    curves = {s: r_km_stratum(case, s)["table"] for s in strata}
    drawn = km_figure(curves, risk_times=[0] + times)
    assert [lab for lab, _ in drawn.risk_rows] == strata
    for s, (_, row) in zip(strata, drawn.risk_rows):
        km = expected(case)["strata"][s]["km"]
        assert row == tuple(str(x) for x in [km["n"]] + km["at_times"]["n_risk"])


def test_km_figure_curves_bands_censor_marks_and_alignment():
    drawn = km_figure(lung_curves(), quantity="Overall survival")
    ax = drawn.curves_ax
    assert [ln.get_label() for ln in _curves(ax)] == ["sex = 1", "sex = 2"]
    assert len(_bands(ax)) == 2
    marks = [ln for ln in ax.lines if (ln.get_gid() or "").startswith("censor-")]
    assert len(marks) == 2
    # One mark per time with a censoring, at the curve's height there.
    for s, m in zip(("1", "2"), marks):
        c = expected("lung_sex")["strata"][s]["km"]["curve"]
        cens = np.array(c["n_censor"]) > 0
        np.testing.assert_array_equal(m.get_xdata(), np.array(c["time"], float)[cens])
        np.testing.assert_array_equal(m.get_ydata(), np.array(c["surv"], float)[cens])
    # The step curve starts at (0, 1) and holds R's estimates.
    line = _curves(ax)[0]
    assert line.get_xdata()[0] == 0 and line.get_ydata()[0] == 1.0
    np.testing.assert_array_equal(line.get_ydata()[1:], expected("lung_sex")["strata"]["1"]["km"]["curve"]["surv"])
    # Risk table: one row per curve, one number per tick, printed at the tick's x position.
    assert len(drawn.risk_rows) == 2
    risk = drawn.risk_ax
    ticks = list(ax.get_xticks())
    assert ticks == list(drawn.risk_times)
    xs = sorted({t.get_position()[0] for t in risk.texts})
    assert xs == sorted(ticks)
    assert len(risk.texts) == 2 * len(ticks)
    drawn.figure.canvas.draw()
    # Same pixel column as the tick marks (the axes share x).
    for t in risk.texts:
        x_px = risk.transData.transform((t.get_position()[0], 0))[0]
        tick_px = ax.transData.transform((t.get_position()[0], 0))[0]
        assert abs(x_px - tick_px) < 0.5
    # The row labels are the strata, coloured as their curves.
    labels = [lab.get_text() for lab in risk.get_yticklabels()]
    assert labels == ["sex = 1", "sex = 2"]
    assert [lab.get_color() for lab in risk.get_yticklabels()] == [ln.get_color() for ln in _curves(ax)]


def test_options_switch_parts_off():
    drawn = km_figure(lung_curves(), censor_marks=False, bands=False, risk_table=False)
    ax = drawn.curves_ax
    assert len(_curves(ax)) == 2 and not _bands(ax)
    assert not [ln for ln in ax.lines if (ln.get_gid() or "").startswith("censor-")]
    assert drawn.risk_ax is None and drawn.risk_rows == ()
    assert len(drawn.figure.axes) == 1


def test_many_strata_on_one_figure():
    curves = {f"inst {s}": r_km_stratum("lung_inst", s)["table"] for s in expected("lung_inst")["strata"]
              if s != "all"}
    drawn = km_figure(curves)
    assert len(_curves(drawn.curves_ax)) == len(curves) == 18
    assert len(drawn.risk_rows) == 18
    assert len(drawn.risk_ax.get_yticklabels()) == 18


def test_png_and_svg_are_valid():
    drawn = km_figure(lung_curves())
    png = png_bytes(drawn.figure)
    assert png.startswith(PNG_SIGNATURE)
    img = mpimg.imread(io.BytesIO(png), format="png")
    w, h = drawn.figure.get_size_inches() * 150
    assert img.shape[1] == round(w) and img.shape[0] == round(h) and img.shape[2] in (3, 4)
    assert png == png_bytes(drawn.figure)  # no timestamp: the same figure gives the same bytes
    svg = svg_text(drawn.figure)
    root = ET.fromstring(svg.encode("utf-8"))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    gids = {el.get("id") for el in root.iter()}
    assert {"curve-0", "curve-1", "band-0", "band-1", "censor-0", "censor-1"} <= gids
    assert "<text" not in svg  # text as paths: no font needed to view it


def test_cif_figure_per_cause_and_its_risk_table():
    strata = ["Lev", "Lev+5FU", "Obs"]
    for code, cause in COLON_CAUSES.items():
        curves = {s: r_cif_stratum("colon_cr_rx", s)["causes"][cause]["table"] for s in strata}
        drawn = cif_figure(curves, cause=cause, risk_times=[0, 365, 730, 1826])
        ax = drawn.curves_ax
        assert len(_curves(ax)) == 3 and len(_bands(ax)) == 3
        line = _curves(ax)[0]
        assert line.get_ydata()[0] == 0.0
        np.testing.assert_array_equal(
            line.get_ydata()[1:], expected("colon_cr_rx")["strata"]["Lev"]["aalen_johansen"]["curve"]["cif"][code]["est"])
        assert ax.get_ylabel() == f"Cumulative incidence of {cause}"
        for s, (_, row) in zip(strata, drawn.risk_rows):
            st = expected("colon_cr_rx")["strata"][s]
            assert row == tuple(str(x) for x in [st["km"]["n"]] + st["aalen_johansen"]["at_times"]["n_risk"])
        png = png_bytes(drawn.figure)
        assert png.startswith(PNG_SIGNATURE)
        ET.fromstring(svg_text(drawn.figure).encode("utf-8"))


def test_stacked_cif_layers_add_up_to_any_event():
    st = r_cif_stratum("colon_cr_rx", "all")
    tables = {c: st["causes"][c]["table"] for c in ("recurrence", "death")}
    drawn = stacked_cif_figure(tables, risk_times=[0, 365, 730, 1826])
    layers = [c for c in drawn.curves_ax.collections if (c.get_gid() or "").startswith("layer-")]
    assert len(layers) == 2
    assert [t.get_text() for t in drawn.curves_ax.get_legend().get_texts()] == ["recurrence", "death"]
    # The top of the stack at the last time is R's 1 - S(any event).
    aj = expected("colon_cr_rx")["strata"]["all"]["aalen_johansen"]["curve"]
    top = layers[1].get_paths()[0].vertices[:, 1].max()
    assert top == pytest.approx(1.0 - aj["event_free"]["est"][-1], abs=1e-12)
    at = expected("colon_cr_rx")["strata"]["all"]["aalen_johansen"]["at_times"]["n_risk"]
    assert drawn.risk_rows == (("All", tuple(str(x) for x in [929] + at)),)
    assert png_bytes(drawn.figure).startswith(PNG_SIGNATURE)


def test_risk_table_under_a_disclosure_rule():
    rule = DisclosureRule(5)
    drawn = km_figure(lung_curves(), risk_times=[0, 500, 800, 900, 1000], count_text=rule.count)
    rows = dict(drawn.risk_rows)
    # Each shown count is the exact one, or "<5" where the exact one is 1 to 4.
    exact = dict(km_figure(lung_curves(), risk_times=[0, 500, 800, 900, 1000]).risk_rows)
    for label, shown_row in rows.items():
        for shown, n in zip(shown_row, exact[label]):
            assert shown == ("<5" if 1 <= int(n) <= 4 else n)
    assert any(s == "<5" for r in rows.values() for s in r)
    assert {t.get_text() for t in drawn.risk_ax.texts} == {s for r in rows.values() for s in r}


def test_tick_times():
    assert tick_times(96, "months") == [0, 12, 24, 36, 48, 60, 72, 84, 96]
    assert tick_times(95.5, "months") == [0, 12, 24, 36, 48, 60, 72, 84]
    assert tick_times(120, "months") == [0, 24, 48, 72, 96, 120]
    assert tick_times(30, "months") == [0, 6, 12, 18, 24, 30]
    assert tick_times(1022, "days") == [0, 200, 400, 600, 800, 1000]
    assert tick_times(0, "days") == [0.0]
