"""Warnings where a noisy histogram's grid is too fine for its noise (coordinator.dp_warnings)."""

from __future__ import annotations

import math

import numpy as np

from coordinator.dp_warnings import AT_RISK_SHARE, grid_warning, warning_text


def test_the_number_at_risk_drowns_where_its_noise_passes_half_of_it():
    # (bins, censored + events): numbers at risk 40, 30, 20, 10; at sigma 4 the noise SD of n_b is
    # 4 sqrt(2 (4 - b)) = 11.3, 9.80, 8.00, 5.66 against half of n_b = 20, 15, 10, 5: first over at bin 3
    counts = np.array([[0, 10], [0, 10], [0, 10], [10, 0]])
    w = grid_warning(counts, 4.0)
    assert AT_RISK_SHARE == 0.5
    assert w.dominated_from == 3 and w.events_per_bin == 7.5 and not w.too_fine
    text = warning_text(w, np.arange(4) * 30.0, "days", 30.0)
    assert text == ("from 90 days on, the noise SD of the number at risk exceeds 50% of it: the hazards there may be "
                    "off by half from that noise alone, and their limits may under-cover")


def test_few_events_per_bin_against_the_noise_ask_for_wider_bins():
    # 2 events a month for 40 months, then 500 censored: 80 / 41 events per bin, sigma 4.53, so bins
    # ceil(4.53 / 1.95) = 3 times as wide hold about 6
    counts = np.array([[0, 2]] * 40 + [[500, 0]])
    w = grid_warning(counts, 4.53)
    assert w.dominated_from is None  # 500 patients stay at risk to the end
    assert math.isclose(w.events_per_bin, 80 / 41) and w.too_fine and w.widen == 3
    text = warning_text(w, np.arange(41) * 1.0, "months", 1.0)
    assert text == ("about 2.0 events per bin against a noise SD of 4.53 per cell: the grid is too fine for the "
                    "noise; bins about 3 times as wide (3 months) would hold about 6 events each")
    # a grid wider than a quarter of the follow-up is no remedy: 10 months of follow-up, 3-month bins
    short = grid_warning(np.array([[0, 2]] * 10 + [[500, 0]]), 4.53)
    assert warning_text(short, np.arange(11) * 1.0, "months", 1.0).endswith(
        "no usable grid holds enough events for this noise; a larger epsilon, fewer analyses per patient or "
        "more patients would")


def test_no_warning_where_counts_dwarf_the_noise():
    counts = np.array([[5, 100]] * 12 + [[3000, 0]])
    assert warning_text(grid_warning(counts, 4.53), np.arange(13) * 1.0, "months", 1.0) is None
