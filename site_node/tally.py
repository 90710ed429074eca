"""Turn a site's prepared data into the plan's integer tallies (vectorised, no row loops)."""

from __future__ import annotations

import numpy as np

from protocol.plan import Plan
from protocol.tallies import Tallies, cell_index, dropped_key, layout
from site_node.prepared import PreparedData


def time_bins(plan: Plan, time: np.ndarray, outcome: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bin index ceil(t / w) of each time, and the outcome, censoring at the horizon.

    A time past the horizon becomes a censoring at the horizon. The small tolerance keeps
    t = k * w in bin k when the division is inexact in floating point (0.3 / 0.1).
    """
    t = np.minimum(time, plan.horizon)
    if plan.bin_width != 1:
        t /= plan.bin_width
    t -= 1e-9
    np.ceil(t, out=t)
    # Validation guarantees 0 <= t, and t <= horizon puts every bin within the grid.
    b = t.astype(np.int64)
    if time.size and time.max() > plan.horizon:
        outcome = np.where(time > plan.horizon, 0, outcome)
    return b, outcome


def _surv_block(plan: Plan, data: PreparedData, vs: tuple[str, ...], n_out: int, size: int,
                flat_time: np.ndarray) -> tuple[np.ndarray, int]:
    """Counts by (cell, bin, outcome) and the number of rows dropped for a missing stratum."""
    if not vs:
        return np.bincount(flat_time, minlength=size), 0
    codes = [data.levels[v] for v in vs]
    keep = codes[0] >= 0
    for c in codes[1:]:
        keep &= c >= 0
    # Row-major cell number of the joint levels (as cell_index lays them out).
    dims = cell_index(plan, vs).shape
    cell = np.zeros_like(codes[0])
    for c, d in zip(codes, dims):
        cell *= d
        cell += c
    flat = cell * (plan.n_bins * n_out) + flat_time
    if keep.all():
        return np.bincount(flat, minlength=size), 0
    return np.bincount(flat[keep], minlength=size), int(keep.size - keep.sum())


def compute_tallies(plan: Plan, data: PreparedData) -> Tallies:
    """The site's tallies for every block of the plan's layout."""
    blocks = layout(plan)
    arrays: dict[str, np.ndarray] = {"n": np.array([data.n_rows], dtype=np.int64)}
    # One (bin, outcome) index per endpoint, shared by every stratification of it.
    flat_time: dict[str, np.ndarray] = {}
    for b in blocks:
        if b.key.startswith("surv:"):
            _, ep_name, vs_text = b.key.split(":", 2)
            vs = tuple(vs_text.split("*")) if vs_text else ()
            n_out = 1 + plan.endpoint(ep_name).n_causes
            if ep_name not in flat_time:
                bins, outcome = time_bins(plan, data.times[ep_name], data.outcomes[ep_name])
                flat_time[ep_name] = bins * n_out + outcome
            counts, dropped = _surv_block(plan, data, vs, n_out, b.size, flat_time[ep_name])
            arrays[b.key] = counts.astype(np.int64, copy=False).reshape(b.shape)
            arrays[dropped_key(ep_name, vs)] = np.array([dropped], dtype=np.int64)
        elif b.key.startswith("count:"):
            v = b.key.split(":", 1)[1]
            codes = data.levels[v]
            n_levels = b.shape[0] - 1
            arrays[b.key] = np.bincount(np.where(codes >= 0, codes, n_levels), minlength=n_levels + 1).astype(np.int64)
        elif b.key.startswith("moments:"):
            v = b.key.split(":", 1)[1]
            miss = data.missing[v]
            x = data.fixed[v][~miss].astype(np.int64)
            arrays[b.key] = np.array([x.size, int(x.sum()), int((x * x).sum()), int(miss.sum())], dtype=np.int64)
    missing_keys = [b.key for b in blocks if b.key not in arrays]
    if missing_keys:
        raise AssertionError(f"no tally computed for {missing_keys}")
    return Tallies(blocks, {b.key: arrays[b.key] for b in blocks})
