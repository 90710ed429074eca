"""Figures of pooled results: Kaplan-Meier and cumulative-incidence curves with risk tables.

Curves are drawn from results.json tables (time, n_risk, n_event, n_censor, estimate, lower,
upper) as right-continuous step functions starting at (0, 1) for survival and (0, 0) for
incidence, with the pointwise confidence band as a shaded step region, optional censoring
marks ("|" at each time with a censoring), and a number-at-risk table under the x-axis in
the style of survminer's ``ggsurvplot(risk.table = TRUE)`` and lifelines'
``add_at_risk_counts``: one row per curve, one number per x tick, printed at the tick.

The number at risk at a time t is #{T >= t} (R's ``summary(fit, times = t)``, survminer;
lifelines counts #{T > t}). From a table that lists every time with an exit, it is n_risk
at the first listed time >= t (no patient leaves between t and that time), and 0 past the
last listed time.

matplotlib's object API (``Figure`` with the Agg canvas) is used instead of pyplot, so
drawing holds no global state and needs no display.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

# Okabe & Ito (2008) colour-blind safe palette, without its yellow (too pale on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
# Ticks in months read best on multiples of 3, 6 or 12.
_MONTH_STEPS = (1, 2, 3, 6, 12, 24, 36, 60, 120)
_MAX_TICKS = 8


@dataclass(frozen=True)
class DrawnFigure:
    """A drawn figure with what a caller (or a test) needs to know about it."""

    figure: Figure
    curves_ax: Axes
    risk_ax: Axes | None
    curve_labels: tuple[str, ...]
    risk_times: tuple[float, ...]
    risk_rows: tuple[tuple[str, tuple[str, ...]], ...]  # (row label, texts at risk_times)


def _floats(values: Sequence | None) -> np.ndarray:
    if values is None:
        return np.array([], dtype=float)
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def number_at_risk(table: Mapping[str, Sequence], times: Sequence[float]) -> np.ndarray:
    """#{T >= t} at each t: n_risk at the first table time >= t, or 0 past the last one."""
    t = _floats(table.get("time"))
    n = np.array([0 if v is None else v for v in table.get("n_risk", [])], dtype=np.int64)
    at = np.asarray(times, dtype=float)
    if t.size == 0:
        return np.zeros(at.shape, dtype=np.int64)
    # Grid times are multiples of a float bin width; a tick may differ from them by rounding.
    idx = np.searchsorted(t, at - 1e-9 * np.maximum(1.0, np.abs(at)), side="left")
    return np.where(idx < t.size, n[np.minimum(idx, t.size - 1)], 0)


def tick_times(t_max: float, time_unit: str = "days") -> list[float]:
    """Round tick positions from 0 to at most t_max (months on multiples of 3, 6, 12, ...)."""
    if not t_max > 0:
        return [0.0]
    if time_unit == "months":
        step = next((s for s in _MONTH_STEPS if t_max / s <= _MAX_TICKS), _MONTH_STEPS[-1])
        return [float(x) for x in np.arange(0.0, t_max + 1e-9, step)]
    locator = MaxNLocator(nbins=_MAX_TICKS - 2, steps=[1, 2, 2.5, 5, 10], integer=t_max >= 5)
    return [float(x) for x in locator.tick_values(0.0, t_max) if -1e-9 <= x <= t_max + 1e-9]


def _step(table: Mapping[str, Sequence], start: float) -> tuple[np.ndarray, ...]:
    """x, estimate, lower, upper of a right-continuous step function starting at (0, start)."""
    t = _floats(table.get("time"))
    est = _floats(table.get("estimate"))
    lo = _floats(table.get("lower")) if table.get("lower") is not None else np.full(t.shape, np.nan)
    hi = _floats(table.get("upper")) if table.get("upper") is not None else np.full(t.shape, np.nan)
    x = np.concatenate([[0.0], t])
    return (x, np.concatenate([[start], est]), np.concatenate([[start], lo]), np.concatenate([[start], hi]))


def _risk_table(ax: Axes, rows: list[tuple[str, list[str], str]], times: list[float]) -> None:
    n = len(rows)
    for i, (_, texts, colour) in enumerate(rows):
        y = n - 1 - i
        for t, s in zip(times, texts):
            ax.text(t, y, s, ha="center", va="center", fontsize=9, color=colour, clip_on=False)
    ax.set_ylim(-0.5, n - 0.5)
    ax.set_yticks([n - 1 - i for i in range(n)], [r[0] for r in rows], fontsize=9)
    for lab, (_, _, colour) in zip(ax.get_yticklabels(), rows):
        lab.set_color(colour)
    # Numbers at the first tick are centred on it: keep the row labels clear of them.
    widest = max((len(s) for _, texts, _ in rows for s in texts), default=1)
    ax.tick_params(axis="y", length=0, pad=4.0 + 2.9 * widest)
    ax.tick_params(axis="x", bottom=False, labelbottom=False)
    for s in ax.spines.values():
        s.set_visible(False)
    ax.set_title("Number at risk", loc="left", fontsize=9, fontweight="bold")


def _layout(n_rows: int, risk_table: bool, width: float) -> tuple[Figure, Axes, Axes | None]:
    row_h = 0.24
    risk_h = (0.45 + row_h * n_rows) if risk_table else 0.0
    main_h = 3.9
    fig = Figure(figsize=(width, main_h + risk_h + 0.35), layout="constrained")
    FigureCanvasAgg(fig)
    if not risk_table:
        return fig, fig.add_subplot(), None
    gs = fig.add_gridspec(2, 1, height_ratios=[main_h, risk_h])
    ax = fig.add_subplot(gs[0])
    risk_ax = fig.add_subplot(gs[1], sharex=ax)
    return fig, ax, risk_ax


def _finish_axes(ax: Axes, ticks: list[float], t_max: float, time_unit: str, quantity: str,
                 y_top: float, title: str | None, legend: bool) -> None:
    span = ticks[-1] if ticks and ticks[-1] > 0 else (t_max or 1.0)
    # Room on the right so the last risk-table number, centred on its tick, is not cut.
    ax.set_xlim(-0.01 * span, max(t_max, span) * 1.04)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel(f"Time ({time_unit})")
    ax.set_ylim(0.0, y_top)
    # Ticks on steps of 1, 2, 5 or 10 times a power of ten: with y_top >= 10% the step is at
    # least 2%, so whole percentages label every tick exactly (a 2.5% step would not).
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10]))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_ylabel(quantity)
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    if title:
        ax.set_title(title, loc="left", fontsize=11)
    if legend:
        ax.legend(loc="best", fontsize=9, framealpha=0.85)


def curve_figure(
    curves: Mapping[str, Mapping[str, Sequence]],
    *,
    survival: bool,
    quantity: str,
    time_unit: str = "days",
    bands: bool = True,
    censor_marks: bool = False,
    risk_table: bool = True,
    risk_times: Sequence[float] | None = None,
    count_text: Callable[[int], str] = str,
    title: str | None = None,
    width: float = 8.0,
) -> DrawnFigure:
    """One step curve per entry of ``curves`` (label -> results table) on one set of axes.

    ``survival`` curves start at 1 (Kaplan-Meier), others at 0 (cumulative incidence).
    ``count_text`` prints the risk-table counts (a disclosure rule's ``count``).
    """
    if not curves:
        raise ValueError("no curves to draw")
    labels = tuple(curves)
    t_max = max((float(np.nanmax(_floats(tb.get("time")))) for tb in curves.values()
                 if len(tb.get("time") or [])), default=0.0)
    ticks = list(risk_times) if risk_times is not None else tick_times(t_max, time_unit)
    fig, ax, risk_ax = _layout(len(labels), risk_table, width)
    start = 1.0 if survival else 0.0
    top = 0.0
    rows = []
    for i, (label, table) in enumerate(curves.items()):
        colour = PALETTE[i % len(PALETTE)]
        x, est, lo, hi = _step(table, start)
        (line,) = ax.step(x, est, where="post", color=colour, linewidth=1.8, label=label)
        line.set_gid(f"curve-{i}")
        if bands and np.isfinite(lo).any():
            band = ax.fill_between(x, lo, hi, step="post", color=colour, alpha=0.15, linewidth=0,
                                   label=f"_band {label}")
            band.set_gid(f"band-{i}")
        if censor_marks:
            cens = _floats(table.get("n_censor"))
            mask = (cens > 0) & np.isfinite(est[1:])
            if mask.any():
                (marks,) = ax.plot(x[1:][mask], est[1:][mask], linestyle="none", marker="|",
                                   markersize=7, markeredgewidth=1.1, color=colour,
                                   label=f"_censored {label}")
                marks.set_gid(f"censor-{i}")
        top = max(top, float(np.nanmax(np.concatenate([est, hi if bands else est]))))
        if risk_ax is not None:
            rows.append((label, [count_text(int(c)) for c in number_at_risk(table, ticks)], colour))
    # Survival needs the whole 0-100% scale; a small incidence would look flat on it.
    y_top = 1.02 if survival else min(1.0, max(0.1, math.ceil(top * 1.15 * 10.0) / 10.0))
    _finish_axes(ax, ticks, t_max, time_unit, quantity, y_top, title, legend=len(labels) > 1)
    if survival:
        ax.set_yticks(np.linspace(0.0, 1.0, 6))
    if risk_ax is not None:
        _risk_table(risk_ax, rows, ticks)
    return DrawnFigure(fig, ax, risk_ax, labels, tuple(ticks),
                       tuple((lab, tuple(texts)) for lab, texts, _ in rows))


def km_figure(curves: Mapping[str, Mapping[str, Sequence]], *, quantity: str = "Survival",
              censor_marks: bool = True, **kw) -> DrawnFigure:
    """Kaplan-Meier curves, one per stratum, with bands, censoring marks and a risk table."""
    return curve_figure(curves, survival=True, quantity=quantity, censor_marks=censor_marks, **kw)


def cif_figure(curves: Mapping[str, Mapping[str, Sequence]], *, cause: str,
               quantity: str | None = None, **kw) -> DrawnFigure:
    """Cumulative incidence of one cause, one curve per stratum, with bands and a risk table."""
    return curve_figure(curves, survival=False, quantity=quantity or f"Cumulative incidence of {cause}", **kw)


def _values_at(table: Mapping[str, Sequence], x: np.ndarray) -> np.ndarray:
    """A step function (0 before its first time) read at the times x."""
    t = _floats(table.get("time"))
    est = np.nan_to_num(_floats(table.get("estimate")), nan=0.0)
    idx = np.searchsorted(t, x, side="right") - 1
    return np.where(idx >= 0, est[np.maximum(idx, 0)], 0.0)


def stacked_cif_figure(
    causes: Mapping[str, Mapping[str, Sequence]],
    *,
    time_unit: str = "days",
    risk_table: bool = True,
    risk_times: Sequence[float] | None = None,
    count_text: Callable[[int], str] = str,
    risk_label: str = "All",
    title: str | None = None,
    width: float = 8.0,
) -> DrawnFigure:
    """The cumulative incidences of every cause of one stratum stacked (cause -> its table).

    The top of the stack is the probability of any event, 1 - S(any cause): the causes'
    incidences add up to it (Aalen-Johansen), so the stack shows how it divides among them.
    The risk table has one row: the stratum's patients at risk of any event.
    """
    if not causes:
        raise ValueError("no causes to draw")
    tables = list(causes.values())
    x = np.unique(np.concatenate([[0.0]] + [_floats(tb.get("time")) for tb in tables]))
    x = x[np.isfinite(x)]
    t_max = float(x.max())
    ticks = list(risk_times) if risk_times is not None else tick_times(t_max, time_unit)
    fig, ax, risk_ax = _layout(1, risk_table, width)
    base = np.zeros_like(x)
    for i, (cause, table) in enumerate(causes.items()):
        top = base + _values_at(table, x)
        layer = ax.fill_between(x, base, top, step="post", color=PALETTE[i % len(PALETTE)], alpha=0.75,
                                linewidth=0, label=cause)
        layer.set_gid(f"layer-{i}")
        base = top
    y_top = min(1.0, max(0.1, math.ceil(float(base.max()) * 1.15 * 10.0) / 10.0))
    _finish_axes(ax, ticks, t_max, time_unit, "Cumulative incidence (stacked)", y_top, title, legend=True)
    rows = []
    if risk_ax is not None:
        rows = [(risk_label, [count_text(int(c)) for c in number_at_risk(tables[0], ticks)], "#333333")]
        _risk_table(risk_ax, rows, ticks)
    return DrawnFigure(fig, ax, risk_ax, tuple(causes), tuple(ticks),
                       tuple((lab, tuple(texts)) for lab, texts, _ in rows))


def png_bytes(fig: Figure, dpi: int = 150) -> bytes:
    """The figure as PNG bytes (no timestamp, so the same figure gives the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white", metadata={"Software": None})
    return buf.getvalue()


def svg_text(fig: Figure) -> str:
    """The figure as a standalone SVG document (text as paths: no fonts needed to view it)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "fedsurv"}):
        fig.savefig(buf, format="svg", facecolor="white", metadata={"Date": None})
    return buf.getvalue()
