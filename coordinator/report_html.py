"""The one-file HTML report of a results.json document, with a CSV file per analysis.

The report is self-contained: inline CSS, figures embedded as base64 PNG (or inline SVG), no
script and no network address, so it opens anywhere and can be mailed or archived as is.
Numbers are printed as a paper prints them: percentages with one decimal and the confidence
interval named after its quantity ("Cumulative incidence of amputation: 13.0% (95% CI 5.1% to
24.0%)"); times in the plan's unit; p-values with three decimals or "< 0.001". Released
counts pass through the plan's disclosure rule (coordinator/disclosure.py); estimates,
intervals and curves are exact.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scipy.stats import norm

from coordinator import figures
from coordinator.disclosure import DisclosureRule, rule_from_results
from protocol.errors import FedsurvError

REPORT_NAME = "report.html"
WIDE_WIDTH = 8.0     # inches: a figure for a desktop column
NARROW_WIDTH = 4.4   # inches: the same figure for a phone
# Number at risk as R and survminer count it; joiners keep it on one line.
AT_RISK = "#\u2060{T\u00a0\u2265\u00a0t}"
_CSV_COLUMNS = ("section", "stratum", "cause", "time", "n_risk", "n_event", "n_censor",
                "estimate", "std_err", "lower", "upper")
_COUNT_COLUMNS = {"n", "n_risk", "n_event", "n_censor", "observed", "successes", "count", "missing",
                  "n_missing"}


class ReportError(FedsurvError):
    """A results document the report cannot present truthfully."""


# ----------------------------------------------------------------- numbers as printed


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fixed(x: float, decimals: int) -> str:
    s = f"{x:.{decimals}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s  # no "-0.0"


def percent(x: Any) -> str:
    """A probability as a percentage with one decimal: 0.7704 -> "77.0%"."""
    f = _num(x)
    return "not estimable" if f is None else _fixed(100.0 * f, 1) + "%"


def number(x: Any, decimals: int = 1) -> str:
    f = _num(x)
    return "not estimable" if f is None else _fixed(f, decimals)


def time_text(t: Any, unit: str) -> str:
    """A time in the plan's unit: 12 -> "12 months", 1 -> "1 month", 30.4375 -> "30.44 days"."""
    f = _num(t)
    if f is None:
        return "not reached"
    s = f"{int(f)}" if float(f).is_integer() else f"{f:.2f}".rstrip("0").rstrip(".")
    return f"{s} {unit[:-1] if s == '1' and unit.endswith('s') else unit}"


def time_value(t: Any) -> str:
    f = _num(t)
    if f is None:
        return ""
    return f"{int(f)}" if f.is_integer() else f"{f:.2f}".rstrip("0").rstrip(".")


def p_text(p: Any) -> str:
    """p = 0.032; p < 0.001 below that (three decimals, as most journals ask)."""
    f = _num(p)
    if f is None:
        return "p not estimable"
    return "p < 0.001" if f < 0.0005 else f"p = {f:.3f}"


def conf_label(level: Any) -> str:
    f = _num(level)
    return f"{100.0 * (f if f is not None else 0.95):g}% CI"


def interval(est: Any, lower: Any, upper: Any, ci: str, fmt: Callable[[Any], str] = percent,
             unit: str = "") -> str:
    """"77.0% (95% CI 63.1% to 90.2%)": the estimate and the interval that contains it.

    Rounding is monotone, so a printed interval contains its printed estimate whenever the
    exact one does; an interval that does not contain its estimate is an error upstream and
    is refused rather than printed.
    """
    e, lo, hi = _num(est), _num(lower), _num(upper)
    if e is None:
        return "not estimable"
    tol = 1e-9 * max(1.0, abs(e))
    if (lo is not None and lo > e + tol) or (hi is not None and hi < e - tol):
        raise ReportError(f"the {ci} ({lower} to {upper}) does not contain the estimate {est}")
    u = f" {unit}" if unit else ""
    if lo is None and hi is None:
        return f"{fmt(e)}{u} ({ci} not estimable)"
    lo_s = fmt(lo) if lo is not None else "not estimable"
    hi_s = fmt(hi) if hi is not None else "not estimable"
    return f"{fmt(e)}{u} ({ci} {lo_s} to {hi_s}{u})"


def _normal_ci(est: Any, se: Any, level: Any) -> tuple[float | None, float | None]:
    """est +- z se, the normal-approximation interval survRM2 reports for RMST."""
    e, s, lv = _num(est), _num(se), _num(level) or 0.95
    if e is None or s is None:
        return None, None
    z = float(norm.ppf(0.5 + lv / 2.0))
    return e - z * s, e + z * s


# ----------------------------------------------------------------- names readers see


def _words(name: str) -> str:
    return name.replace("_", " ")


def km_quantity(cause: Any, endpoint_causes: Sequence[str] = ()) -> str:
    """What a Kaplan-Meier curve estimates, in words (lower case)."""
    if cause == "death":
        return "overall survival"
    if cause in (None, "any"):
        if endpoint_causes:
            return "survival free of " + " or ".join(_words(c) for c in endpoint_causes)
        return "event-free survival"
    return f"survival free of {_words(str(cause))}"


def cif_quantity(cause: str) -> str:
    return f"cumulative incidence of {_words(cause)}"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def stratum_label(key: str, variables: Sequence[str]) -> str:
    """"all" -> "All patients"; "1/a" with strata (sex, limb) -> "sex = 1, limb = a"."""
    if key == "all":
        return "All patients"
    parts = key.split("/")
    if variables and len(parts) == len(variables):
        return ", ".join(f"{_words(v)} = {p}" for v, p in zip(variables, parts))
    return key


def slug(name: str) -> str:
    """A file and anchor name: letters, digits, '-', '_' and '.' only."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s or "analysis"


# ----------------------------------------------------------------- HTML building blocks


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


class _Table:
    """An HTML table inside a horizontally scrolling container."""

    def __init__(self, header: Sequence[str], caption: str | None = None, numeric: Sequence[bool] = ()):
        self.header = list(header)
        self.caption = caption
        self.numeric = list(numeric) + [False] * (len(header) - len(numeric))
        self.rows: list[str] = []

    def row(self, cells: Sequence[Any], counts: Sequence[int] = (), cls: str = "", indent: bool = False) -> None:
        tds = []
        for i, c in enumerate(cells):
            classes = [k for k, on in (("num", self.numeric[i] if i < len(self.numeric) else False),
                                        ("count", i in counts), ("indent", indent and i == 0)) if on]
            attr = f' class="{" ".join(classes)}"' if classes else ""
            tds.append(f"<td{attr}>{_e(c)}</td>")
        self.rows.append(f"<tr{f' class={chr(34)}{cls}{chr(34)}' if cls else ''}>{''.join(tds)}</tr>")

    def html(self) -> str:
        # The title sits outside the scrolling box so that it wraps on a narrow screen.
        cap = f'<div class="table-title">{_e(self.caption)}</div>' if self.caption else ""
        ths = "".join(f'<th scope="col"{" class=num" if n else ""}>{_e(h)}</th>'
                      for h, n in zip(self.header, self.numeric))
        return (f'{cap}<div class="table-wrap"><table><thead><tr>{ths}</tr></thead>'
                f'<tbody>{"".join(self.rows)}</tbody></table></div>')


def _p(text: str, cls: str = "") -> str:
    return f'<p{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>{_e(text)}</p>'


_CSS = """
:root{--fg:#1b1b1b;--muted:#5a5a5a;--line:#e2e2e2;--accent:#0b5394;--bg-soft:#f6f7f9}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;color:var(--fg);background:#fff;
 font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1000px;margin:0 auto;padding:1.25rem 1.25rem 3rem;overflow-wrap:break-word}
h1,h2,h3{overflow-wrap:anywhere}
header.top{border-bottom:2px solid var(--accent);margin-bottom:1.25rem;padding-bottom:.75rem}
h1{font-size:1.65rem;line-height:1.25;margin:.2rem 0 .4rem}
h2{font-size:1.3rem;margin:2.2rem 0 .5rem;padding-top:.6rem;border-top:1px solid var(--line)}
h3{font-size:1.05rem;margin:1.4rem 0 .4rem}
p{margin:.4rem 0 .8rem}
.muted,.meta{color:var(--muted);font-size:.9rem}
.kind{display:inline-block;font-size:.75rem;font-weight:600;letter-spacing:.03em;text-transform:uppercase;
 color:var(--accent);border:1px solid var(--accent);border-radius:3px;padding:0 .35rem;margin-right:.4rem;
 vertical-align:middle}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.88em}
.hash{overflow-wrap:anywhere;word-break:break-all}
.note{background:var(--bg-soft);border-left:4px solid var(--accent);padding:.6rem .9rem;margin:1rem 0;
 font-size:.93rem}
.warn{border-left-color:#b45309}
.dp-label{font-size:.9rem;color:#7c2d12;background:#fff7ed;border-left:3px solid #b45309;padding:.3rem .6rem}
nav.toc{background:var(--bg-soft);padding:.6rem 1rem;border-radius:4px;margin:1rem 0}
nav.toc ol{margin:.3rem 0;padding-left:1.3rem}
nav.toc a{color:var(--accent);text-decoration:none}
section.summary h2{border-top:0;margin-top:1rem}
section.summary ul{padding-left:1.2rem}
section.summary li{margin:.3rem 0}
section.summary a{color:var(--accent);font-weight:600;text-decoration:none}
.table-wrap{width:100%;overflow-x:auto;-webkit-overflow-scrolling:touch;margin:.3rem 0 1rem;
 border:1px solid var(--line);border-radius:4px}
table{border-collapse:collapse;min-width:100%;font-size:.92rem;font-variant-numeric:tabular-nums}
.table-title{font-weight:600;margin:1rem 0 .2rem}
th,td{padding:.38rem .65rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-weight:600;background:#fafafa;min-width:5rem}
td{white-space:nowrap}
th.num,td.num{text-align:right}
tr.group td{font-weight:600;background:#fcfcfc}
td.indent{padding-left:1.6rem}
tr:last-child td{border-bottom:0}
figure{margin:1rem 0 1.4rem}
figure img,figure svg{display:block;max-width:100%;height:auto}
figure svg{width:100%}
figcaption{color:var(--muted);font-size:.88rem;margin-top:.35rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.5rem 0 1rem}
dl.facts dt{font-weight:600}
dl.facts dd{margin:0;min-width:0;overflow-wrap:anywhere}
details{margin:.6rem 0}
summary{cursor:pointer;color:var(--accent)}
pre{background:var(--bg-soft);padding:.75rem;border-radius:4px;white-space:pre-wrap;overflow-wrap:anywhere;
 font-size:.82rem;max-width:100%}
@media (max-width:600px){
 main{padding:.8rem .8rem 2rem}
 h1{font-size:1.35rem}
 dl.facts{grid-template-columns:1fr}
 dl.facts dd{margin-bottom:.4rem}
}
@media print{nav.toc{display:none}h2{break-before:auto}figure,table{break-inside:avoid}}
"""


# ----------------------------------------------------------------- the report


class _Context:
    """What every section needs: the plan's units, the rule for counts, figure options."""

    def __init__(self, results: Mapping[str, Any], rule: DisclosureRule, figure_format: str,
                 censor_marks: bool, stacked: bool, progress: Callable[[str], None] | None):
        self.results = results
        plan_doc = results.get("plan") or {}
        self.head = plan_doc.get("plan") or {}
        self.unit = str(self.head.get("time_unit") or "days")
        self.ci = conf_label(self.head.get("conf_level"))
        self.conf_level = _num(self.head.get("conf_level")) or 0.95
        self.conf_type = self.head.get("conf_type")
        self.endpoints = plan_doc.get("endpoints") or {}
        self.plan_analyses = {a.get("name"): a for a in (plan_doc.get("analyses") or []) if isinstance(a, dict)}
        self.rule = rule
        self.figure_format = figure_format
        self.censor_marks = censor_marks
        self.stacked = stacked
        self.progress = progress or (lambda msg: None)
        self.headlines: list[tuple[str, str]] = []  # (analysis name, sentence) for the summary
        self.n_figures = 0

    def headline(self, name: str, text: str) -> None:
        self.headlines.append((name, text))

    def at_times_headline(self, name: str, quantity: str, at: Mapping[str, Sequence]) -> None:
        """"Overall survival at 12 months: 77.0% (95% CI 63.1% to 90.2%); at 24 months: ..."."""
        parts = [f"at {time_text(r.get('time'), self.unit)}: "
                 f"{interval(r.get('estimate'), r.get('lower'), r.get('upper'), self.ci)}" for r in _at_rows(at)]
        if parts:
            self.headline(name, f"{_cap(quantity)} " + "; ".join(parts) + ".")

    def count(self, x: Any) -> str:
        return self.rule.count(x)

    def causes_of(self, endpoint: Any) -> list[str]:
        ep = self.endpoints.get(endpoint) or {}
        if isinstance(ep.get("causes"), dict):
            return [ep["causes"][k] for k in sorted(ep["causes"], key=lambda c: int(c) if str(c).isdigit() else 0)]
        if isinstance(ep.get("dates"), dict):
            return list(ep["dates"])
        return []

    def figure_html(self, draw: Callable[[float], figures.DrawnFigure], alt: str, caption: str) -> str:
        """A figure drawn by ``draw(width in inches)``, embedded; PNG adds a narrow drawing for phones.

        A figure 8 inches wide shrunk to a phone's 360-odd pixels prints its risk table at
        about 4 px, so the PNG form carries a second drawing, NARROW_WIDTH inches wide, that
        the browser picks below 600 px (a <picture> source) instead.
        """
        if self.figure_format == "svg":
            drawn = draw(WIDE_WIDTH)
            try:
                svg = figures.svg_text(drawn.figure)
            finally:
                drawn.figure.clear()
            body = svg[svg.index("<svg"):]
            # Ids must be unique in the page: prefix each figure's ids and references to them.
            self.n_figures += 1
            pre = f"fig{self.n_figures}-"
            body = re.sub(r'\bid="', f'id="{pre}', body)
            body = body.replace("url(#", f"url(#{pre}").replace('href="#', f'href="#{pre}')
            body = body.replace("<svg ", f'<svg role="img" aria-label="{_e(alt)}" ', 1)
        else:
            (wide, w, h), (narrow, nw, nh) = (_png_data(draw(width)) for width in (WIDE_WIDTH, NARROW_WIDTH))
            body = (f'<picture><source media="(max-width: 600px)" srcset="data:image/png;base64,{narrow}" '
                    f'width="{nw}" height="{nh}">'
                    f'<img src="data:image/png;base64,{wide}" width="{w}" height="{h}" alt="{_e(alt)}"></picture>')
        return f"<figure>{body}<figcaption>{_e(caption)}</figcaption></figure>"


def _png_data(drawn: figures.DrawnFigure, dpi: int = 150) -> tuple[str, int, int]:
    """Base64 PNG of a drawn figure and its pixel size; the figure is cleared afterwards."""
    try:
        data = base64.b64encode(figures.png_bytes(drawn.figure, dpi=dpi)).decode("ascii")
        w, h = (round(v * dpi) for v in drawn.figure.get_size_inches())
    finally:
        drawn.figure.clear()
    return data, w, h


def _strata_vars(ctx: _Context, name: str, res: Mapping[str, Any]) -> list[str]:
    a = ctx.plan_analyses.get(name) or {}
    v = a.get("strata") or res.get("strata_variables") or []
    return [v] if isinstance(v, str) else list(v)


def _at_rows(at: Mapping[str, Sequence]) -> Iterable[dict[str, Any]]:
    cols = [c for c in ("time", "n_risk", "n_event", "n_censor", "estimate", "std_err", "lower", "upper") if c in at]
    n = len(at.get("time") or [])
    for i in range(n):
        yield {c: (at[c][i] if at[c] is not None and i < len(at[c]) else None) for c in cols}


def _shown_strata(strata: Mapping[str, Any]) -> list[str]:
    keys = list(strata)
    return [k for k in keys if k != "all"] or keys


def _band_caption(ctx: _Context) -> str:
    ct = f" ({ctx.conf_type})" if ctx.conf_type else ""
    return f"shaded: pointwise {ctx.ci.replace(' CI', '')} confidence bands{ct}"


def _interval_note(ctx: _Context) -> str:
    return (f"At risk: patients still followed at the time ({AT_RISK}). Events and censorings are "
            f"counted in the interval since the previous report time (since time 0 for the first). "
            f"Times in {ctx.unit}.")


def _km_section(ctx: _Context, name: str, res: Mapping[str, Any]) -> tuple[str, list[dict]]:
    strata = res.get("strata") or {}
    svars = _strata_vars(ctx, name, res)
    quantity = km_quantity(res.get("cause"), ctx.causes_of(res.get("endpoint")))
    parts: list[str] = []
    shown = _shown_strata(strata)
    curves = {stratum_label(k, svars): strata[k].get("table") or {} for k in shown
              if (strata[k].get("table") or {}).get("time")}
    if curves:
        ctx.progress(f"drawing {name}")

        def draw(width: float) -> figures.DrawnFigure:
            return figures.km_figure(curves, quantity=_cap(quantity), time_unit=ctx.unit,
                                     censor_marks=ctx.censor_marks, count_text=ctx.count, width=width)

        by = f" by {', '.join(_words(v) for v in svars)}" if svars and len(curves) > 1 else ""
        marks = "; | marks a censored time" if ctx.censor_marks else ""
        others = [c for c in ctx.causes_of(res.get("endpoint")) if c != res.get("cause")]
        competing = (f" Patients with {' or '.join(_words(c) for c in others)} first count as censored then "
                     f"(a Kaplan-Meier estimate of the cause-specific event, as R's survfit)."
                     if others and res.get("cause") not in (None, "any") else "")
        parts.append(ctx.figure_html(
            draw, alt=f"Kaplan-Meier curves of {quantity}{by}",
            caption=f"Kaplan-Meier estimate of {quantity}{by} ({_band_caption(ctx)}{marks}). "
                    f"Number at risk ({AT_RISK}) under the time axis.{competing}"))
    if "all" in strata:
        ctx.at_times_headline(name, quantity, strata["all"].get("at_times") or {})
    # The table at the report times.
    head = f"{_cap(quantity)} ({ctx.ci})"
    t = _Table(["Group", f"Time ({ctx.unit})", "At risk", "Events", "Censored", head],
               caption=f"{_cap(quantity)} at the report times", numeric=[False, True, True, True, True, False])
    csv_rows: list[dict] = []
    any_at = False
    for key in strata:
        st = strata[key]
        label = stratum_label(key, svars)
        for r in _at_rows(st.get("at_times") or {}):
            any_at = True
            t.row([label, time_value(r.get("time")), ctx.count(r.get("n_risk")), ctx.count(r.get("n_event")),
                   ctx.count(r.get("n_censor")), interval(r.get("estimate"), r.get("lower"), r.get("upper"), ctx.ci)],
                  counts=(2, 3, 4))
            csv_rows.append({"section": "at_times", "stratum": key, **r})
        for r in _at_rows(st.get("table") or {}):
            csv_rows.append({"section": "table", "stratum": key, **r})
    if any_at:
        parts.append(t.html())
        parts.append(_p(_interval_note(ctx), "muted"))
    # Median and totals.
    m = _Table(["Group", "Patients", "Events", f"Median time ({ctx.ci})"],
               caption=f"Median time: when {quantity} falls to 50%", numeric=[False, True, True, False])
    for key in strata:
        st = strata[key]
        med = st.get("median") or {}
        n_event = st.get("n_event")
        if n_event is None and st.get("table"):
            n_event = sum(int(x or 0) for x in (st["table"].get("n_event") or []))
        m.row([stratum_label(key, svars), ctx.count(st.get("n")), ctx.count(n_event), _median_text(ctx, med)],
              counts=(1, 2))
        csv_rows.append({"section": "median", "stratum": key, "estimate": med.get("estimate"),
                         "lower": med.get("lower"), "upper": med.get("upper")})
        csv_rows.append({"section": "patients", "stratum": key, "n": st.get("n"), "n_event": n_event})
    parts.append(m.html())
    # RMST up to each report time.
    r_t = _Table(["Group", f"\u03c4 ({ctx.unit})", f"Restricted mean survival time ({ctx.ci})"],
                 caption=f"Restricted mean survival time: the area under the {quantity} curve up to \u03c4",
                 numeric=[False, True, False])
    any_rmst = False
    for key in strata:
        rm = strata[key].get("rmst") or {}
        for i, tau in enumerate(rm.get("tau") or []):
            est = (rm.get("estimate") or [None] * (i + 1))[i]
            se = (rm.get("std_err") or [None] * (i + 1))[i]
            lo, hi = _normal_ci(est, se, ctx.conf_level)
            any_rmst = True
            r_t.row([stratum_label(key, svars), time_value(tau),
                     interval(est, lo, hi, ctx.ci, fmt=number, unit=ctx.unit)])
            csv_rows.append({"section": "rmst", "stratum": key, "time": tau, "estimate": est, "std_err": se,
                             "lower": lo, "upper": hi})
    if any_rmst:
        parts.append(r_t.html())
        parts.append(_p("RMST: area under the Kaplan-Meier curve up to \u03c4 (R: summary(fit, rmean = \u03c4)); "
                        "interval: estimate \u00b1 z \u00b7 standard error.", "muted"))
    return "".join(parts), csv_rows


def _median_text(ctx: _Context, med: Mapping[str, Any]) -> str:
    """"310 days (95% CI 284 to 361 days)"; R's NA upper limit reads "to not reached"."""
    e, lo, hi = _num(med.get("estimate")), _num(med.get("lower")), _num(med.get("upper"))
    if e is None and lo is None:
        return "not reached"
    if e is not None and ((lo is not None and lo > e) or (hi is not None and hi < e)):
        raise ReportError(f"the {ctx.ci} of a median ({lo} to {hi}) does not contain the median {e}")
    e_s = time_text(e, ctx.unit) if e is not None else "not reached"
    if lo is None and hi is None:
        return f"{e_s} ({ctx.ci} not estimable)"
    lo_s = time_value(lo) if lo is not None else "not estimable"
    if hi is None:
        return f"{e_s} ({ctx.ci} {time_text(lo, ctx.unit) if lo is not None else lo_s} to not reached)"
    return f"{e_s} ({ctx.ci} {lo_s} to {time_text(hi, ctx.unit)})"


def _cif_section(ctx: _Context, name: str, res: Mapping[str, Any]) -> tuple[str, list[dict]]:
    strata = res.get("strata") or {}
    svars = _strata_vars(ctx, name, res)
    shown = _shown_strata(strata)
    causes: list[str] = []
    for st in strata.values():
        for c in (st.get("causes") or {}):
            if c not in causes:
                causes.append(c)
    parts: list[str] = []
    csv_rows: list[dict] = []
    for cause in causes:
        quantity = cif_quantity(cause)
        parts.append(f"<h3>{_e(_cap(quantity))}</h3>")
        if "all" in strata:
            ctx.at_times_headline(name, quantity, (((strata["all"].get("causes") or {}).get(cause) or {})
                                                   .get("at_times") or {}))
        curves = {}
        for k in shown:
            tb = ((strata[k].get("causes") or {}).get(cause) or {}).get("table") or {}
            if tb.get("time"):
                curves[stratum_label(k, svars)] = tb
        if curves:
            ctx.progress(f"drawing {name}: {cause}")
            by = f" by {', '.join(_words(v) for v in svars)}" if svars and len(curves) > 1 else ""

            def draw(width: float, curves: dict = curves, cause: str = cause, quantity: str = quantity
                     ) -> figures.DrawnFigure:
                return figures.cif_figure(curves, cause=_words(cause), quantity=_cap(quantity), time_unit=ctx.unit,
                                          count_text=ctx.count, width=width)
            parts.append(ctx.figure_html(
                draw, alt=f"{_cap(quantity)}{by}",
                caption=f"Aalen-Johansen estimate of the {quantity}{by}, other causes competing "
                        f"({_band_caption(ctx)}). Number at risk ({AT_RISK}) under the time axis."))
        t = _Table(["Group", f"Time ({ctx.unit})", "At risk", f"Events ({_words(cause)})", f"{_cap(quantity)} ({ctx.ci})"],
                   caption=f"{_cap(quantity)} at the report times", numeric=[False, True, True, True, False])
        any_at = False
        for key, st in strata.items():
            entry = (st.get("causes") or {}).get(cause) or {}
            for r in _at_rows(entry.get("at_times") or {}):
                any_at = True
                t.row([stratum_label(key, svars), time_value(r.get("time")), ctx.count(r.get("n_risk")),
                       ctx.count(r.get("n_event")), interval(r.get("estimate"), r.get("lower"), r.get("upper"), ctx.ci)],
                      counts=(2, 3))
                csv_rows.append({"section": "at_times", "stratum": key, "cause": cause, **r})
            for r in _at_rows(entry.get("table") or {}):
                csv_rows.append({"section": "table", "stratum": key, "cause": cause, **r})
        if any_at:
            parts.append(t.html())
    if causes and any(strata[k].get("n") is not None for k in strata):
        n_t = _Table(["Group", "Patients"], numeric=[False, True])
        for key, st in strata.items():
            n_t.row([stratum_label(key, svars), ctx.count(st.get("n"))], counts=(1,))
            csv_rows.append({"section": "patients", "stratum": key, "n": st.get("n")})
        parts.append(n_t.html())
    if causes:
        parts.append(_p(_interval_note(ctx), "muted"))
    if ctx.stacked and len(causes) > 1:
        for k in shown if len(shown) <= 4 else ["all"]:
            st = strata.get(k) or {}
            tables = {_words(c): ((st.get("causes") or {}).get(c) or {}).get("table") or {} for c in causes}
            if not all(tb.get("time") for tb in tables.values()):
                continue
            ctx.progress(f"drawing {name}: stacked ({k})")
            label = stratum_label(k, svars)

            def draw(width: float, tables: dict = tables, label: str = label) -> figures.DrawnFigure:
                return figures.stacked_cif_figure(tables, time_unit=ctx.unit, count_text=ctx.count,
                                                  risk_label=label if len(label) <= 18 else "At risk",
                                                  title=label if len(shown) > 1 else None, width=width)
            parts.append(ctx.figure_html(
                draw, alt=f"Stacked cumulative incidence, {label}",
                caption=f"{label}: cumulative incidences of {', '.join(_words(c) for c in causes)} stacked; "
                        f"the top edge is the probability of any of them."))
    return "".join(parts), csv_rows


def _groups_label(ctx: _Context, name: str, res: Mapping[str, Any]) -> str:
    a = ctx.plan_analyses.get(name) or {}
    return _words(str(a.get("groups") or res.get("groups_variable") or "group"))


def _logrank_section(ctx: _Context, name: str, res: Mapping[str, Any]) -> tuple[str, list[dict]]:
    groups = res.get("groups") or {}
    gname = _groups_label(ctx, name, res)
    a = ctx.plan_analyses.get(name) or {}
    rho = _num(res.get("rho", a.get("rho"))) or 0.0
    test = "Log-rank test" if rho == 0 else f"Harrington-Fleming test (\u03c1 = {rho:g}; Peto-Peto for \u03c1 = 1)"
    quantity = km_quantity(res.get("cause", a.get("cause")), ctx.causes_of(res.get("endpoint", a.get("endpoint"))))
    svars = res.get("strata_variables") or a.get("strata") or []
    strat = f", stratified by {', '.join(_words(v) for v in svars)}" if svars else ""
    chisq, df = res.get("chisq"), res.get("df")
    sentence = (f"{test} comparing {quantity} between levels of {gname}{strat}: "
                f"\u03c7\u00b2 = {number(chisq, 2)} on {time_value(df) or '?'} degree{'s' if _num(df) != 1 else ''} "
                f"of freedom, {p_text(res.get('p'))}.")
    ctx.headline(name, sentence)
    t = _Table([_cap(gname), "Patients", "Observed events", "Expected events", "Observed / expected"],
               numeric=[False, True, True, True, True])
    rows = []
    for lvl, g in groups.items():
        o, e = _num(g.get("observed")), _num(g.get("expected"))
        t.row([lvl, ctx.count(g.get("n")), ctx.count(g.get("observed")), number(e, 2),
               number(o / e, 2) if o is not None and e else "not estimable"], counts=(1, 2))
        rows.append({"group": lvl, "n": g.get("n"), "observed": g.get("observed"), "expected": g.get("expected")})
    rows.append({"group": "(test)", "chisq": chisq, "df": df, "p": res.get("p"), "rho": rho})
    return _p(sentence, "result") + t.html(), rows


def _gray_section(ctx: _Context, name: str, res: Mapping[str, Any]) -> tuple[str, list[dict]]:
    gname = _groups_label(ctx, name, res)
    a = ctx.plan_analyses.get(name) or {}
    svars = res.get("strata_variables") or a.get("strata") or []
    strat = f", stratified by {', '.join(_words(v) for v in svars)}" if svars else ""
    t = _Table(["Cause", "Statistic (\u03c7\u00b2)", "Degrees of freedom", "p-value"], numeric=[False, True, True, True])
    sentences, rows = [], []
    for cause, r in (res.get("causes") or {}).items():
        t.row([_words(cause), number(r.get("stat"), 2), time_value(r.get("df")), _p_value(r.get("p"))])
        ctx.headline(name, f"Gray's test, {cif_quantity(cause)} by {gname}: {p_text(r.get('p'))}.")
        sentences.append(_p(f"Gray's test comparing the {cif_quantity(cause)} between levels of {gname}{strat}: "
                            f"\u03c7\u00b2 = {number(r.get('stat'), 2)} on {time_value(r.get('df'))} degrees of "
                            f"freedom, {p_text(r.get('p'))}.", "result"))
        rows.append({"cause": cause, "stat": r.get("stat"), "df": r.get("df"), "p": r.get("p")})
    return "".join(sentences) + t.html(), rows


def _rmst_groups(res: Mapping[str, Any]) -> list[tuple[str, dict]]:
    g = res.get("groups")
    if isinstance(g, dict) and g and all(isinstance(v, dict) for v in g.values()):
        return [(str(k), v) for k, v in g.items()]
    src = g if isinstance(g, dict) else res
    labels = src.get("labels") or []
    out = []
    for i, lab in enumerate(labels):
        out.append((str(lab), {k: (src.get(k) or [None] * len(labels))[i]
                               for k in ("estimate", "std_err", "lower", "upper", "n") if isinstance(src.get(k), list)}))
    return out


def _rmst_section(ctx: _Context, name: str, res: Mapping[str, Any]) -> tuple[str, list[dict]]:
    gname = _groups_label(ctx, name, res)
    tau = res.get("tau")
    within = f"within the first {time_text(tau, ctx.unit)}"
    t = _Table([_cap(gname), f"Restricted mean survival time up to {time_text(tau, ctx.unit)} ({ctx.ci})"])
    rows = []
    for lab, g in _rmst_groups(res):
        lo, hi = g.get("lower"), g.get("upper")
        if lo is None and hi is None:
            lo, hi = _normal_ci(g.get("estimate"), g.get("std_err"), ctx.conf_level)
        t.row([lab, interval(g.get("estimate"), lo, hi, ctx.ci, fmt=number, unit=ctx.unit)])
        rows.append({"section": "group", "group": lab, "estimate": g.get("estimate"), "std_err": g.get("std_err"),
                     "lower": lo, "upper": hi})
    parts = [t.html()]
    sentences: list[str] = []
    comps = res.get("contrasts") or res.get("comparisons") or []
    if comps:
        c_t = _Table(["Comparison", f"Difference in RMST ({ctx.ci})", "p-value", f"Ratio of RMST ({ctx.ci})",
                      "p-value"], numeric=[False, False, True, False, True])
        for c in comps:
            grp, ref = c.get("group"), c.get("reference")
            d, r = _contrast_part(c, "difference"), _contrast_part(c, "ratio")
            c_t.row([f"{grp} vs {ref}",
                     interval(d.get("estimate"), d.get("lower"), d.get("upper"), ctx.ci, fmt=number, unit=ctx.unit),
                     _p_value(d.get("p")),
                     interval(r.get("estimate"), r.get("lower"), r.get("upper"), ctx.ci, fmt=lambda x: number(x, 2)),
                     _p_value(r.get("p"))])
            rows.append({"section": "contrast", "group": grp, "reference": ref,
                         **{f"difference_{k}": v for k, v in d.items()}, **{f"ratio_{k}": v for k, v in r.items()}})
            dv, lv, uv = _num(d.get("estimate")), _num(d.get("lower")), _num(d.get("upper"))
            if dv is not None and lv is not None and uv is not None:
                more = "longer" if dv >= 0 else "shorter"
                a, b = (lv, uv) if dv >= 0 else (-uv, -lv)
                ctx.headline(name, f"Patients with {gname} = {grp} lived on average {number(abs(dv))} {ctx.unit} "
                                   f"({ctx.ci} {number(a)} to {number(b)}) {more} {within} than patients with "
                                   f"{gname} = {ref} ({p_text(d.get('p'))}).")
                sentences.append(_p(
                    f"Patients with {gname} = {grp} lived on average {number(abs(dv))} {ctx.unit} "
                    f"({ctx.ci} {number(a)} to {number(b)}) {more} {within} than patients with "
                    f"{gname} = {ref} ({p_text(d.get('p'))}).", "result"))
        parts.append(c_t.html())
        parts.append(_p("Differences and ratios of the groups' RMST with normal-approximation intervals "
                        "(the unadjusted comparison of survRM2's rmst2). A negative interval bound for a "
                        "difference reads as shorter.", "muted"))
    return "".join(sentences + parts), rows


def _contrast_part(c: Mapping[str, Any], part: str) -> dict[str, Any]:
    """A contrast's difference or ratio as {estimate, lower, upper, p, ...}, nested or flat."""
    v = c.get(part)
    if isinstance(v, dict):
        return dict(v)
    return {"estimate": v, "lower": c.get(f"{part}_lower"), "upper": c.get(f"{part}_upper"),
            "p": c.get(f"{part}_p"), "std_err": c.get(f"{part}_std_err")}


def _p_value(p: Any) -> str:
    """A p-value for a table cell: "0.032" or "< 0.001"."""
    return p_text(p).removeprefix("p = ").removeprefix("p ")


def _proportion_section(ctx: _Context, name: str, res: Mapping[str, Any]) -> tuple[str, list[dict]]:
    var = res.get("variable") or (ctx.plan_analyses.get(name) or {}).get("variable") or name
    success = res.get("success") or (ctx.plan_analyses.get(name) or {}).get("success") or []
    what = f"{_words(str(var))} = {' or '.join(map(str, success))}" if success else _words(str(var))
    method = {"clopper-pearson": "Clopper-Pearson exact", "wilson": "Wilson score"}.get(
        str(res.get("method")), str(res.get("method") or ""))
    quantity = f"proportion with {what}"
    t = _Table(["Quantity", "Patients with", "Patients", f"{_cap(quantity)} ({ctx.ci})", "Interval method"],
               numeric=[False, True, True, False, False])
    ctx.headline(name, f"{_cap(quantity)}: {ctx.count(res.get('successes'))} of {ctx.count(res.get('n'))} patients, "
                       f"{interval(res.get('estimate'), res.get('lower'), res.get('upper'), ctx.ci)}.")
    t.row([_cap(quantity), ctx.count(res.get("successes")), ctx.count(res.get("n")),
           interval(res.get("estimate"), res.get("lower"), res.get("upper"), ctx.ci), method], counts=(1, 2))
    extra = ""
    if res.get("missing"):
        extra = _p(f"Missing {_words(str(var))}: {ctx.count(res.get('missing'))} patients, left out of the denominator.",
                   "muted")
    row = {k: res.get(k) for k in ("successes", "n", "missing", "estimate", "lower", "upper", "method")}
    return t.html() + extra, [row]


def _describe_section(ctx: _Context, name: str, res: Mapping[str, Any]) -> tuple[str, list[dict]]:
    variables = res.get("variables") or {}
    total = ctx.results.get("n")
    if total is None:
        total = sum(int(s.get("n") or 0) for s in ctx.results.get("sites") or [] if isinstance(s, dict))
    t = _Table(["Characteristic", f"All patients (n = {ctx.count(total)})" if total else "Value"],
               numeric=[False, True])
    rows = []
    for vname, v in variables.items():
        if v.get("type") == "numeric":
            t.row([f"{_words(vname)}, mean (SD)", f"{number(v.get('mean'))} ({number(v.get('sd'))})"], cls="group")
            t.row(["patients with a value", ctx.count(v.get("n"))], counts=(1,), indent=True)
            rows.append({"variable": vname, "type": "numeric", "n": v.get("n"), "missing": v.get("missing"),
                         "mean": v.get("mean"), "sd": v.get("sd")})
        else:
            n = v.get("n")
            t.row([f"{_words(vname)}, n (%)", ""], cls="group")
            for lvl, c in (v.get("levels") or {}).items():
                count = c.get("count")
                if ctx.rule.withholds(count) or _num(c.get("percent")) is None:
                    share = ctx.rule.share(count, n)
                else:
                    share = f"{_fixed(float(c['percent']), 1)}%"
                t.row([f"{lvl}", f"{ctx.count(count)} ({share})" if share else ctx.count(count)], indent=True)
                rows.append({"variable": vname, "type": "categorical", "level": lvl, "count": count,
                             "percent": c.get("percent") if not ctx.rule.withholds(count) else share})
            rows.append({"variable": vname, "type": "categorical", "level": "(all)", "n": n, "missing": v.get("missing")})
        if v.get("missing"):
            t.row(["missing", ctx.count(v.get("missing"))], counts=(1,), indent=True)
    note = _p("Percentages are of the patients with a known value.", "muted")
    return t.html() + note, rows


def _cox_section(ctx: _Context, name: str, res: Mapping[str, Any]) -> tuple[str, list[dict]]:
    """A regression table as papers print it: coefficient, SE (robust where asked), hazard
    ratio with its interval and the Wald p-value from the same SE, then the global tests."""
    if res.get("error"):
        return _p(f"The model could not be fitted: {res['error']}.", "muted"), []
    terms = res.get("terms") or []
    robust = bool(res.get("robust")) and res.get("robust_std_err") is not None
    se_key = "robust_std_err" if robust else "std_err"
    ratio = "Subdistribution hazard ratio" if res.get("kind") == "finegray" else "Hazard ratio"
    t = _Table(["Term", "Coefficient", "Robust SE" if robust else "SE", f"{ratio} ({ctx.ci})", "p-value (Wald)"],
               numeric=[False, True, True, False, True])
    rows = []
    for i, term in enumerate(terms):
        def at(key: str, i: int = i) -> Any:
            v = res.get(key) or []
            return v[i] if i < len(v) else None
        coef, se = _num(at("coef")), _num(at(se_key))
        p = float(2 * norm.sf(abs(coef / se))) if coef is not None and se else None
        t.row([term, number(coef, 4), number(se, 4),
               interval(at("hazard_ratio"), at("lower"), at("upper"), ctx.ci, fmt=lambda x: number(x, 2)),
               _p_value(p)])
        rows.append({"term": term, "coef": coef, "std_err": se, "hazard_ratio": at("hazard_ratio"),
                     "lower": at("lower"), "upper": at("upper"), "p": p})
    tests = res.get("tests") or {}
    parts = []
    for key, label in (("lr", "Likelihood ratio"), ("wald", "Wald"), ("score", "Score (log-rank)")):
        if tests.get(key) is not None:
            pv = tests.get(f"p_{key}")
            parts.append(f"{label} test {number(tests[key], 2)} on {tests.get('df')} df"
                         + (f", p {_p_value(pv)}" if pv is not None else ""))
    if res.get("kind") == "finegray":
        parts = [x for x in parts if not x.startswith("Likelihood")]  # crr reports none; its LR is not chi-square
    how = ("Fine-Gray model (cmprsk::crr), Breslow ties, sandwich variance" if res.get("kind") == "finegray"
           else f"Cox model (coxph), {str(res.get('ties', 'efron')).capitalize()} ties"
           + (", robust (Lin-Wei) standard errors" if robust else "")
           + (f", stratified by {', '.join(res['strata'])}" if res.get("strata") else ""))
    counts = (f"{how}. {ctx.count(res.get('n'))} patients, {ctx.count(res.get('n_event'))} events"
              + (f"; {ctx.count(res.get('n_dropped'))} left out for a missing covariate" if res.get("n_dropped") else "")
              + (f"; fitted in {res['rounds']} rounds, {res.get('iterations')} iterations" if res.get("rounds") else "")
              + ".")
    notes = [_p(counts, "muted")]
    if parts:
        notes.append(_p("; ".join(parts) + ".", "muted"))
    for w in res.get("warnings") or []:
        notes.append(_p(f"Warning (as R reports it): {w.strip()}", "muted"))
    return t.html() + "".join(notes), rows


def _generic_section(ctx: _Context, name: str, res: Mapping[str, Any]) -> tuple[str, list[dict]]:
    t = _Table(["Key", "Value"])
    rows = []
    for k, v in res.items():
        if isinstance(v, (dict, list)):
            continue
        shown = ctx.count(v) if k in _COUNT_COLUMNS else v
        t.row([k, shown], counts=(1,) if k in _COUNT_COLUMNS else ())
        rows.append({"key": k, "value": v})
    return _p(f"This report has no layout for {res.get('kind')!r} analyses; its scalar values:", "muted") + t.html(), rows


_SECTIONS = {"km": _km_section, "cif": _cif_section, "logrank": _logrank_section, "gray": _gray_section,
             "rmst": _rmst_section, "proportion": _proportion_section, "describe": _describe_section,
             "cox": _cox_section, "finegray": _cox_section}
_KIND_NAMES = {"km": "Kaplan-Meier", "cif": "Cumulative incidence", "logrank": "Log-rank test",
               "gray": "Gray's test", "rmst": "Restricted mean survival time", "proportion": "Proportion",
               "describe": "Table 1", "cox": "Cox regression", "finegray": "Fine-Gray regression"}


def _csv_text(rows: list[dict], rule: DisclosureRule) -> str:
    """Tidy CSV: one column per key seen; counts pass through the disclosure rule, reals in full."""
    cols: list[str] = []
    for c in _CSV_COLUMNS:
        if any(c in r for r in rows):
            cols.append(c)
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        out = []
        for c in cols:
            v = r.get(c)
            if c in _COUNT_COLUMNS and v is not None and not isinstance(v, str):
                out.append(rule.count(v))
            elif v is None:
                out.append("")
            elif isinstance(v, float):
                out.append(repr(v) if math.isfinite(v) else "")
            elif isinstance(v, (list, dict)):
                out.append(json.dumps(v))
            else:
                out.append(str(v))
        w.writerow(out)
    return buf.getvalue()


def _plan_hash_status(results: Mapping[str, Any]) -> str:
    plan = results.get("plan")
    given = results.get("plan_sha256")
    if not isinstance(plan, dict) or not given:
        return ""
    canon = json.dumps(plan, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    ok = hashlib.sha256(canon.encode("utf-8")).hexdigest() == given
    return ("matches the plan below" if ok else
            "does NOT match the plan below: the results may not come from this plan")


def _facts(items: Iterable[tuple[str, str]], raw_html: Mapping[str, str] | None = None) -> str:
    raw_html = raw_html or {}
    return '<dl class="facts">' + "".join(
        f"<dt>{_e(k)}</dt><dd>{raw_html.get(k, _e(v))}</dd>" for k, v in items) + "</dl>"


def _endpoint_text(name: str, ep: Mapping[str, Any]) -> str:
    dates = ep.get("dates")
    if isinstance(dates, (dict, list)):
        # The canonical plan keeps the dated causes as [cause, column] pairs (their order is their code).
        pairs = dates.items() if isinstance(dates, dict) else [tuple(d) for d in dates]
        causes = ", ".join(f"{c} (date column {col})" for c, col in pairs)
        return f"from dates: origin {ep.get('origin')}; events {causes}; last follow-up {ep.get('last_followup')}"
    causes = ep.get("causes") or {}
    cs = ", ".join(f"{k} = {v}" for k, v in causes.items())
    cens = ", ".join(str(c) for c in ep.get("censored") or [])
    return f"time column {ep.get('time')}, event column {ep.get('event')}: {cs}; censored = {cens}"


def _aggregation_html(ctx: _Context) -> str:
    """Rounds, notes and refusals of the secure aggregation, and rows each site left out."""
    out = []
    agg = ctx.results.get("secure_aggregation")
    if isinstance(agg, Mapping):
        ids = [str(q) for q in agg.get("query_ids") or []]
        if ids:
            out.append(_p(f"Secure aggregation: {len(ids)} query round{'s' if len(ids) != 1 else ''} "
                          f"(query id{'s' if len(ids) != 1 else ''} {', '.join(ids)}).", "muted"))
        for note in agg.get("notes") or []:
            out.append(_p(str(note), "muted"))
        refusals = agg.get("refusals") or []
        if refusals:
            t = _Table(["Site", "Refusal or error"], caption="Sites that did not contribute to a round")
            for r in refusals:
                if isinstance(r, Mapping):
                    t.row([r.get("site", ""), r.get("reason", "")])
                else:
                    t.row(list(r)[:2] if isinstance(r, (list, tuple)) else ["", str(r)])
            out.append(t.html())
    left = ctx.results.get("site_left_out")
    if isinstance(left, Mapping) and left:
        t = _Table(["Site", "Rows left out on purpose", "Rows"], numeric=[False, False, True],
                   caption="Rows the sites left out by the plan's rules (counted, not dropped silently)")
        for site, reasons in left.items():
            for reason, n in (reasons.items() if isinstance(reasons, Mapping) else [("rows", reasons)]):
                t.row([site, _words(str(reason)), ctx.count(n)], counts=(2,))
        out.append(t.html())
    return "".join(out)


_MECHANISMS = {"gaussian": "discrete Gaussian", "skellam": "Skellam"}


def dp_parameters_text(dp: Mapping[str, Any]) -> str:
    """"ε = 3, δ = 1e-06, σ = 10.8 per cell, discrete Gaussian noise" for a DP release."""
    eps, delta, sigma = _num(dp.get("epsilon")), _num(dp.get("delta")), _num(dp.get("sigma"))
    mech = _MECHANISMS.get(str(dp.get("mechanism")), str(dp.get("mechanism")))
    return (f"\u03b5 = {eps:.3g}, \u03b4 = {delta:.3g}, \u03c3 = {sigma:.3g} per cell, {mech} noise"
            if None not in (eps, delta, sigma) else f"{mech} noise")


def _dp_banner(dp: Mapping[str, Any]) -> str:
    params = dp.get("parameters") or {}
    who = ""
    if params.get("participants") and params.get("honest_sites"):
        who = (f" Each of the {params['participants']} sites added its share before masking; the guarantee "
               f"holds as long as {params['honest_sites']} of them did so honestly, and no party, the "
               f"coordinator included, can remove the noise.")
    return (f'<div class="note warn dp" role="note" id="dp"><strong>Differentially private release '
            f'({_e(dp_parameters_text(dp))}).</strong> Every estimate, count and test in this report '
            f'includes calibrated noise: it cannot equal R on the pooled rows, and small differences between '
            f'groups may be noise.{_e(who)} {_e(_sentence(str(dp.get("intervals") or "")))}</div>')


def _sentence(text: str) -> str:
    """A clause as a sentence: capital first letter, full stop (empty stays empty)."""
    return f"{text[:1].upper()}{text[1:]}." if text else ""


def _dp_label(dp: Mapping[str, Any], kind: Any, res: Mapping[str, Any] | None = None) -> str:
    if res and res.get("dp_uncertainty"):
        covered = "its intervals, standard errors and p-values include the noise"
    elif kind == "describe":
        covered = "its counts are noisy"
    else:
        covered = "its intervals and tests would ignore the noise, so they are withheld"
    label = _p(f"Differentially private estimate ({dp_parameters_text(dp)}): computed from noisy, "
               f"post-processed counts; {covered}.", "dp-label")
    if res and res.get("dp_warning"):
        label += f'<div class="note warn" role="note">Grid and noise: {_e(str(res["dp_warning"]))}.</div>'
    return label


def render_report(
    results: Mapping[str, Any],
    *,
    figure_format: str = "png",
    censor_marks: bool = True,
    stacked: bool = True,
    progress: Callable[[str], None] | None = None,
) -> tuple[str, dict[str, str]]:
    """The report's HTML text and the CSV text of each analysis (file name -> text)."""
    if figure_format not in ("png", "svg"):
        raise ValueError("figure_format must be 'png' or 'svg'")
    if not isinstance(results, Mapping) or not isinstance(results.get("analyses"), Mapping):
        raise ReportError("the results document has no 'analyses' table; is it a fedsurv results.json?")
    rule = rule_from_results(dict(results))
    ctx = _Context(results, rule, figure_format, censor_marks, stacked, progress)
    head = ctx.head
    title = str(head.get("title") or "fedsurv results")
    sites = results.get("sites") or []
    analyses = results["analyses"]

    body: list[str] = []
    gen = results.get("generated_at")
    ver = results.get("fedsurv_version")
    meta = " \u00b7 ".join(x for x in (f"Generated {gen}" if gen else "", f"fedsurv {ver}" if ver else "",
                                      f"{len(sites)} site{'s' if len(sites) != 1 else ''}") if x)
    body.append(f'<header class="top"><div class="meta">Pooled analysis report</div><h1>{_e(title)}</h1>'
                f'<div class="meta">{_e(meta)}</div></header>')
    # Summary facts.
    total = sum(int(s.get("n") or 0) for s in sites if isinstance(s, dict))
    n_total = results.get("n", total)
    status = _plan_hash_status(results)
    hash_html = f'<code class="hash">{_e(results.get("plan_sha256") or "not given")}</code>'
    if status:
        hash_html += f' <span class="muted">({_e(status)})</span>'
    facts = [("Plan hash (SHA-256)", ""), ("Patients", ctx.count(n_total)),
             ("Time unit", ctx.unit), ("Time grid", (f"bins of {time_text(head.get('bin_width'), ctx.unit)}, "
                                                     f"follow-up censored at {time_text(head.get('horizon'), ctx.unit)}")),
             ("Confidence intervals", (f"{ctx.ci}, {head.get('conf_type') or 'log'} transformation for survival "
                                      f"and incidence")),
             ("Smallest count released", str(rule.min_count) if rule.active else "no limit")]
    dp = results.get("privacy") if isinstance(results.get("privacy"), Mapping) else None
    if dp:
        sd = _num(dp.get("n_noise_sd"))
        facts[1] = ("Patients (noisy)", ctx.count(n_total) + (f" (noise SD {sd:.1f})" if sd is not None else ""))
        facts.append(("Differential privacy", dp_parameters_text(dp)))
        body.insert(1, _dp_banner(dp))
    body.append(_facts(facts, {"Plan hash (SHA-256)": hash_html}))
    summary_at = len(body)
    body.append(f'<div class="note">{_e(rule.statement())}</div>')
    left_out = results.get("left_out") or {}
    if left_out:
        body.append(_p("Rows left out on purpose (by the plan's missing-value rules): " + "; ".join(
            f"{_words(k)}: {ctx.count(v)}" for k, v in left_out.items()) + ".", "muted"))
    # Table of contents.
    toc = ['<li><a href="#summary">Main results</a></li>', '<li><a href="#sites">Participating sites</a></li>']
    for name, res in analyses.items():
        kind = (res or {}).get("kind")
        toc.append(f'<li><a href="#a-{_e(slug(name))}">{_e(name)}</a> '
                   f'<span class="muted">({_e(_KIND_NAMES.get(kind, kind))})</span></li>')
    toc.append('<li><a href="#plan">Analysis plan</a></li>')
    body.append(f'<nav class="toc" aria-label="Contents"><strong>Contents</strong><ol>{"".join(toc)}</ol></nav>')
    # Sites.
    st = _Table(["Site", "Patients"], numeric=[False, True])
    for s in sites:
        withheld = dp and s.get("n") is None
        st.row([s.get("name"), "withheld (DP)" if withheld else ctx.count(s.get("n"))], counts=() if withheld else (1,))
    if sites and dp:
        st.row(["Total (noisy)", ctx.count(n_total)], counts=(1,), cls="group")
    elif sites:
        st.row(["Total", ctx.count(total)], counts=(1,), cls="group")
    body.append('<section id="sites"><h2>Participating sites</h2>'
                + _p("Each site computed its tallies locally; only their masked sum reached the coordinator.")
                + st.html() + _aggregation_html(ctx) + "</section>")
    # Analyses.
    csvs: dict[str, str] = {}
    used: set[str] = {slug(REPORT_NAME)}
    for name, res in analyses.items():
        res = res or {}
        kind = res.get("kind")
        ctx.progress(f"{name} ({kind})")
        if res.get("undefined"):
            section, rows = _p(f"Not reported: {res['undefined']}.", "dp-label"), []
        else:
            section, rows = _SECTIONS.get(kind, _generic_section)(ctx, name, res)
        fname = slug(name)
        while fname + ".csv" in used or fname == "report":
            fname += "_"
        used.add(fname + ".csv")
        csvs[fname + ".csv"] = _csv_text(rows, rule)
        a = ctx.plan_analyses.get(name) or {}
        what = []
        if a.get("endpoint") or res.get("endpoint"):
            what.append(f"endpoint {a.get('endpoint') or res.get('endpoint')}")
        if a.get("cause") or res.get("cause"):
            what.append(f"event {a.get('cause') or res.get('cause')}")
        if a.get("strata"):
            what.append("by " + ", ".join(a["strata"]))
        if a.get("groups"):
            what.append("groups " + str(a["groups"]))
        sub = (" \u00b7 ".join(what) + " \u00b7 " if what else "") + f"data: {fname}.csv"
        label = _dp_label(dp, kind, res) if dp else ""
        body.append(f'<section id="a-{_e(slug(name))}"><h2><span class="kind">{_e(_KIND_NAMES.get(kind, kind))}</span>'
                    f'{_e(name)}</h2>{_p(sub, "muted")}{label}{section}</section>')
    if ctx.headlines:
        tag = " (differentially private)" if dp else ""
        items = "".join(f'<li><a href="#a-{_e(slug(n))}">{_e(n)}</a>{tag}: {_e(text)}</li>'
                        for n, text in ctx.headlines)
        body.insert(summary_at, f'<section id="summary" class="summary"><h2>Main results</h2><ul>{items}</ul></section>')
    # The plan.
    plan_doc = results.get("plan") or {}
    ep_items = [(f"Endpoint {k}", _endpoint_text(k, v)) for k, v in (plan_doc.get("endpoints") or {}).items()
                if isinstance(v, dict)]
    var_items = []
    for k, v in (plan_doc.get("variables") or {}).items():
        if isinstance(v, dict):
            desc = ("levels " + ", ".join(map(str, v["levels"]))) if v.get("levels") is not None else \
                f"numeric, range {v.get('range')}"
            var_items.append((f"Variable {k}", desc))
    body.append('<section id="plan"><h2>Analysis plan</h2>'
                + _p("Every site answered this plan, identified by its hash; the full plan is below.")
                + _facts(ep_items + var_items)
                + '<details><summary>The plan as JSON (its canonical form gives the hash)</summary>'
                + f"<pre>{_e(json.dumps(plan_doc, indent=2, ensure_ascii=False))}</pre></details></section>")
    body.append(f'<footer class="muted"><p>Made by fedsurv{(" " + _e(ver)) if ver else ""} from results.json. '
                f'A CSV file per analysis lies beside this report.</p></footer>')
    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           '<meta name="viewport" content="width=device-width, initial-scale=1">'
           f"<title>{_e(title)}: fedsurv report</title><style>{_CSS}</style></head>"
           f"<body><main>{''.join(body)}</main></body></html>\n")
    return doc, csvs


def write_report(results: dict, out_dir: Path, **options: Any) -> Path:
    """Write out_dir/report.html and out_dir/<analysis>.csv (nothing else); return the report path.

    ``options``: figure_format ("png" or "svg"), censor_marks, stacked (bool), and
    progress (a callable receiving a short line as each part is drawn).
    """
    out_dir = Path(out_dir)
    doc, csvs = render_report(results, **options)
    out_dir.mkdir(parents=True, exist_ok=True)
    for fname, text in csvs.items():
        (out_dir / fname).write_text(text, encoding="utf-8")
    path = out_dir / REPORT_NAME
    path.write_text(doc, encoding="utf-8")
    return path
