"""Sum the masked replies, unmask, decode, and check that the sum is a real set of tallies.

The masks cancel only when every participant answered the same query over the same plan;
anything else leaves uniform noise in the sum. The checks below turn that noise (or a wrong
or partial sum) into an AggregationError instead of an estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from protocol.errors import AggregationError
from protocol.masking import payload_vector, sum_masked
from protocol.plan import Plan
from protocol.query import Reply
from protocol.tallies import Tallies, layout, layout_size

MISMATCH = ("the masks did not cancel: the sites did not all answer the same query and plan, so no "
            "estimate is produced")


Check = Callable[[Plan, Tallies, int], None]


def aggregate_replies(plan: Plan, replies: Mapping[str, Reply], check: Check | None = None
                      ) -> tuple[Tallies, tuple[tuple[str, int], ...]]:
    """The consortium's tallies from every participant's "ok" reply, checked for consistency.

    `check(plan, tallies, n_reported)` replaces the exact `check_consistency` where the sum
    is not exact by design (differential privacy's noise); it must raise AggregationError.
    """
    if not replies:
        raise AggregationError("no replies to aggregate")
    blocks = layout(plan)
    cells = layout_size(blocks)
    vectors = []
    for name, r in sorted(replies.items()):
        if r.status != "ok":
            raise AggregationError(f"site {name} did not answer ({r.status}: {r.reason})")
        try:
            vectors.append(payload_vector(r.payload, cells))
        except ValueError as e:
            raise AggregationError(f"site {name}: {e}; {MISMATCH}") from None
    tallies = Tallies.from_flat(blocks, sum_masked(vectors))
    if check is None:
        check = check_noisy(len(replies)) if plan.privacy is not None else check_consistency
    check(plan, tallies, sum(r.n for r in replies.values()))
    return tallies, tuple((name, replies[name].n) for name in sorted(replies))


def check_consistency(plan: Plan, tallies: Tallies, n_reported: int) -> None:
    """Raise AggregationError unless the decoded sums are consistent integer tallies.

    Counts are not negative; n equals the sum of the sites' reported n; every survival
    histogram plus its dropped rows, and every categorical count, adds up to n; numeric
    moments count n patients (present or missing) and satisfy n * sum(x^2) >= (sum x)^2.
    """
    n = tallies.n
    if n < 0 or n != n_reported:
        raise AggregationError(f"the summed patient count ({n}) differs from the sites' reported total "
                               f"({n_reported}); {MISMATCH}")
    for b in tallies.blocks:
        a = tallies[b.key]
        if b.key.startswith("moments:"):
            counts = a[[0, 3]]
            if (counts < 0).any() or a[2] < 0:
                raise AggregationError(f"block {b.key}: negative counts or sum of squares; {MISMATCH}")
            if int(counts.sum()) != n:
                raise AggregationError(f"block {b.key}: present + missing = {int(counts.sum())}, not n = {n}; {MISMATCH}")
            # Cauchy-Schwarz in exact integers: a fixed-point sum of squares is never below (sum x)^2 / n.
            if int(a[0]) * int(a[2]) < int(a[1]) ** 2:
                raise AggregationError(f"block {b.key}: sums of x and x^2 are inconsistent; {MISMATCH}")
            continue
        if (a < 0).any():
            raise AggregationError(f"block {b.key}: negative counts; {MISMATCH}")
        # No cell can hold more than n patients; this also keeps the sums below from overflowing.
        if a.size and int(a.max()) > n:
            raise AggregationError(f"block {b.key}: a count exceeds n = {n}; {MISMATCH}")
        if b.key.startswith("surv:"):
            dropped = int(tallies[b.key.replace("surv:", "dropped:", 1)][0])
            total = int(a.sum(dtype=np.int64))
            if total + dropped != n:
                raise AggregationError(f"block {b.key}: {total} patients + {dropped} dropped != n = {n}; {MISMATCH}")
        elif b.key.startswith("regsurv:"):
            dropped = int(tallies[b.key.replace("regsurv:", "regdropped:", 1)][0])
            total = int(a.sum(dtype=np.int64))
            if total + dropped != n:
                raise AggregationError(f"block {b.key}: {total} patients + {dropped} dropped != n = {n}; {MISMATCH}")
        elif b.key.startswith("count:") and int(a.sum(dtype=np.int64)) != n:
            raise AggregationError(f"block {b.key}: counts add up to {int(a.sum())}, not n = {n}; {MISMATCH}")


def check_noisy(participants: int) -> Check:
    """The check of a differentially private sum of `participants` noisy shares.

    Exact totals cannot hold under noise; instead every cell and total must lie within what
    the sum of the sites' noise shares (standard deviation sqrt(P) sigma_i) can explain
    (coordinator.dp_postprocess.check_noisy_tallies), and n, which every site withholds, must
    sum to 0.
    """
    from coordinator.dp_postprocess import check_noisy_tallies
    from protocol.dp_plan import noise_parameters

    def check(plan: Plan, tallies: Tallies, n_reported: int) -> None:
        if tallies.n != 0 or n_reported != 0:
            raise AggregationError(f"the withheld patient counts do not sum to 0; {MISMATCH}")
        params = noise_parameters(plan.privacy, plan, participants)  # type: ignore[arg-type]
        problems = check_noisy_tallies(tallies, math.sqrt(participants) * params.share.sigma)
        if problems:
            raise AggregationError(f"{problems[0]}; {MISMATCH}")

    return check
