"""Bytes each site sends per plan: they grow with bins x strata x outcomes, not with patients."""

from __future__ import annotations

import numpy as np

from benchmarks.workload import frame, prepared
from coordinator.secure_round import run_plan_secure
from protocol.plan import parse_plan
from protocol.roster import consortium_for_run
from protocol.tallies import layout, layout_size
from site_node.responder import SiteNode


def plan(horizon: int, bin_width: int, strata: bool):
    return parse_plan(f"""
[plan]
title = "bytes"
bin_width = {bin_width}
horizon = {horizon}
[endpoints.e]
time = "time"
event = "event"
causes = {{ 1 = "relapse", 2 = "death" }}
[variables.group]
levels = ["a", "b"]
[[analyses]]
name = "cif"
kind = "cif"
endpoint = "e"
{'strata = ["group"]' if strata else ''}
""")


def reply_sizes(p, per_site: int) -> list[int]:
    rng = np.random.default_rng(3)
    names = ["a", "b", "c"]
    coord, keys, roster = consortium_for_run(names)
    nodes = {n: SiteNode(n, load_data=lambda _p, d=prepared(frame(per_site, rng), n): d, keys=keys[n], roster=roster)
             for n in names}
    sizes: list[int] = []

    def transport(reqs):
        replies = {n: nodes[n].answer(r) for n, r in reqs.items()}
        sizes.extend(len(r) for r in replies.values())
        return replies

    run_plan_secure(p, transport, coord, roster, names, min_sites=3)
    return sizes


def main() -> None:
    print("| bins | strata | outcomes | tally cells | patients per site | reply bytes per site |")
    print("|---:|---:|---:|---:|---:|---:|")
    for horizon, width, strata in ((3650, 30, False), (3650, 7, False), (3650, 1, False), (3650, 1, True)):
        p = plan(horizon, width, strata)
        cells = layout_size(layout(p))
        for per_site in (100, 10_000, 100_000):
            sizes = reply_sizes(p, per_site)
            print(f"| {p.n_bins} | {1 + strata} | 3 | {cells:,} | {per_site:,} | {max(sizes):,} |")


if __name__ == "__main__":
    main()
