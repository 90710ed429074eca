"""Turn a site's prepared data into the plan's integer tallies (vectorised, no row loops)."""

from __future__ import annotations

import numpy as np

from protocol.plan import Plan
from protocol.tallies import Tallies, cell_index, dropped_key, layout, surv_key
from site_node.prepared import PreparedData


def time_bins(plan: Plan, time: np.ndarray, outcome: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bin index ceil(t / w) of each time, and the outcome, censoring at the horizon.

    A time past the horizon becomes a censoring at the horizon. The small tolerance keeps
    t = k * w in bin k when the division is inexact in floating point (0.3 / 0.1).
    """
    past = time > plan.horizon
    t = np.where(past, plan.horizon, time)
    b = np.ceil(t / plan.bin_width - 1e-9).astype(np.int64)
    np.clip(b, 0, plan.n_bins - 1, out=b)
    return b, np.where(past, 0, outcome)


def compute_tallies(plan: Plan, data: PreparedData) -> Tallies:
    """The site's tallies for every block of the plan's layout."""
    blocks = layout(plan)
    arrays: dict[str, np.ndarray] = {"n": np.array([data.n_rows], dtype=np.int64)}
    for b in blocks:
        if b.key.startswith("surv:"):
            _, ep_name, vs_text = b.key.split(":", 2)
            vs = tuple(vs_text.split("*")) if vs_text else ()
            ep = plan.endpoint(ep_name)
            bins, outcome = time_bins(plan, data.times[ep_name], data.outcomes[ep_name])
            keep = np.ones(data.n_rows, dtype=bool)
            cell = np.zeros(data.n_rows, dtype=np.int64)
            if vs:
                codes = [data.levels[v] for v in vs]
                for c in codes:
                    keep &= c >= 0
                idx = cell_index(plan, vs)
                cell = idx[tuple(np.where(keep, c, 0) for c in codes)]
            n_out = 1 + ep.n_causes
            flat = (cell[keep] * plan.n_bins + bins[keep]) * n_out + outcome[keep]
            counts = np.bincount(flat, minlength=b.size).astype(np.int64)
            arrays[b.key] = counts.reshape(b.shape)
            arrays[dropped_key(ep_name, vs)] = np.array([data.n_rows - int(keep.sum())], dtype=np.int64)
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
