"""Bytes each site sends per plan: they grow with bins x strata x outcomes, not with patients.

A reply is a JSON header (site, query id, plan hash, status, the site's patient count n as a
decimal number, the payload's hash and length), the masked payload of 8 bytes per tally cell,
and a 64-byte Ed25519 signature. Only the decimal n depends on the number of patients: it is
one digit longer for every tenfold more patients.
"""

from __future__ import annotations

import numpy as np

from benchmarks.workload import frame, prepared
from coordinator.secure_round import run_plan_secure
from protocol.plan import parse_plan
from protocol.query import decode_reply
from protocol.roster import consortium_for_run
from protocol.tallies import layout, layout_size
from site_node.responder import SiteNode

CAUSES = {1: '{ 1 = "relapse" }', 2: '{ 1 = "relapse", 2 = "death" }',
          4: '{ 1 = "relapse", 2 = "death", 3 = "metastasis", 4 = "second cancer" }'}


def plan(horizon: int, bin_width: int, strata: bool, causes: int = 2):
    return parse_plan(f"""
[plan]
title = "bytes"
bin_width = {bin_width}
horizon = {horizon}
[endpoints.e]
time = "time"
event = "event"
causes = {CAUSES[causes]}
[variables.group]
levels = ["a", "b"]
[[analyses]]
name = "cif"
kind = "cif"
endpoint = "e"
{'strata = ["group"]' if strata else ''}
""")


def site_data(per_site: int, causes: int, rng: np.random.Generator, name: str):
    data = prepared(frame(per_site, rng), name)
    # The workload has two causes; fold the second into the first for a one-cause plan.
    np.minimum(data.outcomes["e"], causes, out=data.outcomes["e"])
    return data


def reply_sizes(p, per_site: int, causes: int) -> list[tuple[int, int]]:
    """(whole reply, header + signature) bytes of each site's reply, over the round's queries."""
    rng = np.random.default_rng(3)
    names = ["a", "b", "c"]
    coord, keys, roster = consortium_for_run(names)
    data = {n: site_data(per_site, causes, rng, n) for n in names}
    nodes = {n: SiteNode(n, load_data=lambda _p, d=data[n]: d, keys=keys[n], roster=roster) for n in names}
    sizes: list[tuple[int, int]] = []
    queries = 0

    def transport(reqs):
        nonlocal queries
        queries += 1
        replies = {n: nodes[n].answer(r) for n, r in reqs.items()}
        sizes.extend((len(r), len(r) - len(decode_reply(r).payload)) for r in replies.values())
        return replies

    run_plan_secure(p, transport, coord, roster, names, min_sites=3)
    if queries != 1:
        raise AssertionError(f"the plan took {queries} rounds, not one")
    return sizes


def main() -> None:
    print("One CIF analysis (every cause), 3 sites, one round per plan (checked). Tally cells = the "
          "histograms (unstratified, and by group when stratified) plus n and the dropped counts.\n")
    print("| bins | strata | outcomes | tally cells | patients per site | reply bytes per site "
          "| of which payload (8 x cells) | header + signature |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for horizon, width, strata, causes in ((3650, 30, False, 2), (3650, 7, False, 2), (3650, 1, False, 2),
                                           (3650, 1, True, 2), (3650, 1, False, 1), (3650, 1, False, 4),
                                           (3650, 1, True, 4)):
        p = plan(horizon, width, strata, causes)
        cells = layout_size(layout(p))
        for per_site in (100, 10_000, 100_000):
            whole, rest = max(reply_sizes(p, per_site, causes))
            print(f"| {p.n_bins} | {1 + strata} | {1 + causes} | {cells:,} | {per_site:,} | {whole:,} "
                  f"| {whole - rest:,} | {rest:,} |")
    print("\nThe payload is exactly 8 bytes per tally cell whatever the number of patients. The reply "
          "grows by 2 then 1 bytes from 100 to 10,000 to 100,000 patients per site: that is the site's n "
          "written in decimal in the header (3, 5, 6 digits), nothing else.")


if __name__ == "__main__":
    main()
