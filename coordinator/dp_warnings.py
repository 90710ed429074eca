"""Where a noisy histogram's grid is too fine for its noise: warnings for the results and the report.

A released number at risk n_b is the sum of every cell from bin b on, so its noise SD is
sigma sqrt(cells from b on) and grows towards the start while n_b shrinks towards the end. Once
that SD passes half of n_b, each hazard d_b / n_b may be off by half from the noise in its
denominator alone, and the delta-method and bootstrap limits rest on a linearisation that no
longer holds (early on, while few events have happened, S itself moves little). Separately, when a bin holds on
average fewer events than the noise SD of one cell, every hazard is mostly noise; wider bins hold
proportionally more events under the same noise per cell. Lung on 7-day bins at sigma 4.53
(2.4 events a bin; its number at risk passes the first bound at 917 days) is both: its limits
cover 0.87 to 0.89 at 1 to 2 years (benchmarks/NOTES.md); on 30-day bins neither warning fires
for the whole cohort and the median's limits cover 0.97.

Everything here reads only the release and sigma: no privacy cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# noise SD of the number at risk, as a share of it, beyond which a curve is called noise-dominated
AT_RISK_SHARE = 0.5


@dataclass(frozen=True)
class GridWarning:
    """For one curve: where its numbers at risk drown in noise, and how many events a bin holds."""

    dominated_from: int | None   # first bin whose number at risk has noise SD > AT_RISK_SHARE of it
    events_per_bin: float        # mean released events per bin with anyone at risk
    sigma: float                 # noise SD of one cell

    @property
    def too_fine(self) -> bool:
        return self.events_per_bin < self.sigma

    @property
    def widen(self) -> int:
        """How many times wider bins would hold about sigma events each."""
        return max(2, math.ceil(self.sigma / max(self.events_per_bin, 1e-9)))


def grid_warning(counts: np.ndarray, sigma: float) -> GridWarning:
    """Noise reach for one stratum's released (bins, 1 + K) histogram, column 0 censored.

    n_b = sum_{j >= b} sum_k x_jk; SD of its noise = sigma sqrt((B - b)(1 + K)).
    """
    c = np.asarray(counts, dtype=float)
    bins, width = c.shape
    at_risk = np.cumsum(c.sum(axis=1)[::-1])[::-1]
    noise_sd = sigma * np.sqrt((bins - np.arange(bins)) * width)
    over = np.flatnonzero((at_risk > 0) & (noise_sd > AT_RISK_SHARE * at_risk))
    first = int(over[0]) if over.size else None
    events = c[:, 1:].sum(axis=1)
    live = at_risk > 0
    per_bin = float(events[live].mean()) if live.any() else 0.0
    return GridWarning(first, per_bin, sigma)


def warning_text(w: GridWarning, times: np.ndarray, unit: str, bin_width: float) -> str | None:
    """One sentence, or None when neither problem arises. Wider bins are suggested only while a
    quarter of the follow-up still spans one: beyond that no grid helps, only a larger budget
    (epsilon), fewer analyses per patient or more patients."""
    parts = []
    if w.dominated_from is not None:
        parts.append(f"from {times[w.dominated_from]:g} {unit} on, the noise SD of the number at risk exceeds "
                     f"{AT_RISK_SHARE:.0%} of it: the hazards there may be off by half from that noise alone, "
                     f"and their limits may under-cover")
    if w.too_fine:
        head = f"about {w.events_per_bin:.1f} events per bin against a noise SD of {w.sigma:.2f} per cell"
        if w.widen * bin_width <= float(times[-1]) / 4:
            parts.append(f"{head}: the grid is too fine for the noise; bins about {w.widen} times as wide "
                         f"({w.widen * bin_width:g} {unit}) would hold about {w.widen * w.events_per_bin:.0f} "
                         f"events each")
        else:
            parts.append(f"{head}: no usable grid holds enough events for this noise; a larger epsilon, fewer "
                         f"analyses per patient or more patients would")
    return "; ".join(parts) if parts else None
