"""A whole plan over a transport: the tally round, then the regression models' rounds.

The in-process runner and the Flower ServerApp both call `run_plan`, so a plan runs the same
way wherever its sites are.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from coordinator.aggregate import Check
from coordinator.regression_rounds import RoundFailed, merge_results, run_regressions
from coordinator.results import pooled_results
from coordinator.secure_round import RoundResult, Transport, run_plan_secure
from protocol.errors import AggregationError
from protocol.keys import PartyKeys
from protocol.plan import Plan
from protocol.regression import regression_analyses
from protocol.roster import Roster


def run_plan(plan: Plan, transport: Transport, coordinator: PartyKeys, roster: Roster, sites: Sequence[str],
             min_sites: int = 3, ttl_seconds: float = 600, clock: Callable[[], float] = time.time,
             on_progress: Callable[[str], None] | None = None, approval_wait_seconds: float = 0.0,
             sleep: Callable[[float], None] = time.sleep, check: Check | None = None
             ) -> tuple[dict[str, Any], RoundResult]:
    """results.json's content and the tally round behind it.

    When a site refuses or drops out of a regression round, the fit cannot go on without its
    sums; the whole plan then runs again, from its tally round, over the sites that answered
    (a rerun of the earlier tally round: sites with a policy answer it only as their
    differencing rules allow, see site_node/responder.py), as long as `min_sites` remain.
    """
    say = on_progress or (lambda _m: None)
    participants = list(sites)
    rerun_of: str | None = None
    evidence: tuple[bytes, ...] = ()
    notes: list[str] = []
    refusals: list[tuple[str, str]] = []
    query_ids: list[str] = []
    while True:
        try:
            first = run_plan_secure(plan, transport, coordinator, roster, participants, min_sites=min_sites,
                                    ttl_seconds=ttl_seconds, clock=clock, on_progress=on_progress,
                                    approval_wait_seconds=approval_wait_seconds, sleep=sleep, check=check,
                                    rerun_of=rerun_of, evidence=evidence)
        except AggregationError as e:
            if not notes:
                raise
            # The rerun failed too (sites refusing to resend their tallies to fewer sites, say):
            # say first why it was needed.
            raise AggregationError(f"{notes[-1]}; then the rerun failed: {e}") from None
        first = replace(first, query_ids=tuple(query_ids) + first.query_ids, notes=tuple(notes) + first.notes,
                        refusals=tuple(refusals) + first.refusals)
        results = pooled_results(plan, first.tallies, list(first.sites))
        if not regression_analyses(plan):
            return results, first
        try:
            outcome = run_regressions(plan, transport, coordinator, roster, first, ttl_seconds, clock, on_progress)
        except RoundFailed as f:
            say(str(f))
            notes = list(first.notes) + [f"{f}; the plan runs again without {', '.join(f.sites)}"]
            refusals = list(first.refusals) + [(s, str(f)) for s in f.sites]
            query_ids = list(first.query_ids)
            rerun_of, evidence = first.query_ids[-1], f.replies
            participants = [s for s, _ in first.sites if s not in f.sites]
            if len(participants) < min_sites:
                raise AggregationError(f"{f}; only {len(participants)} site(s) remain but at least {min_sites} "
                                       "are needed, so the regression models cannot be fitted") from None
            continue
        say(f"regression models fitted in {outcome.rounds} rounds")
        return merge_results(plan, results, outcome), first
