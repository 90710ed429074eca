"""The plan's opt-in ``[privacy]`` table: distributed differential privacy for its tallies.

::

    [privacy]
    epsilon = 1.0            # the (epsilon, delta) this plan's release may cost a patient
    delta = 1e-6
    colluding_sites = 1      # participants that may collude or not add noise; the others,
                             # t = participants - colluding_sites, carry all the noise
    deduplicated = false     # true only if no patient is counted at two sites
    below_floor = "raise"    # "raise" | "skellam": what a share below sigma_i = 1.5 becomes
    postprocess = "clip"     # "clip" | "isotonic" (coordinator/dp_postprocess.py)
    bootstrap = 400          # parametric-bootstrap draws for intervals that include the noise

Off by default: without the table (or with ``enabled = false``) the plan is answered exactly.
What it covers: every histogram block (``surv:``/``dropped:``, one histogram per endpoint
and stratification, shared by KM, incidence, log-rank, Gray's test and RMST) and every
categorical ``count:`` block get noise; the ``n`` block is withheld (sent as 0) since the
histograms already give n. Numeric descriptions (``moments:``) and Cox / Fine-Gray rounds
have no sensitivity bounded by this mechanism, so a DP plan holding them is refused rather
than given a guarantee it does not have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from protocol.dp_accounting import Guarantee, guarantee, sigma_for_epsilon
from scipy.optimize import brentq

from protocol.dp_sampler import SIGMA_FLOOR, NoiseShare, noise_share, rational_variance
from protocol.errors import FedsurvError

UNSUPPORTED_KINDS = ("cox", "finegray")
BELOW_FLOOR = ("raise", "skellam")
POSTPROCESS = ("clip", "isotonic")
_KEYS = {"enabled", "epsilon", "delta", "colluding_sites", "deduplicated", "below_floor", "postprocess", "bootstrap"}


class PrivacyPlanError(FedsurvError, ValueError):
    """A ``[privacy]`` table that cannot be used; the message names the key."""


@dataclass(frozen=True)
class PrivacySpec:
    epsilon: float
    delta: float = 1e-6
    colluding_sites: int = 0
    deduplicated: bool = False
    below_floor: str = "raise"
    postprocess: str = "clip"
    bootstrap: int = 400

    @property
    def copies(self) -> int:
        """Sites a patient may be counted at: a referral counted twice doubles Delta_2."""
        return 1 if self.deduplicated else 2

    def to_dict(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "delta": self.delta, "colluding_sites": self.colluding_sites,
                "deduplicated": self.deduplicated, "below_floor": self.below_floor,
                "postprocess": self.postprocess, "bootstrap": self.bootstrap}


def parse_privacy(table: Mapping[str, Any] | None) -> PrivacySpec | None:
    """The ``[privacy]`` table as a PrivacySpec, or None when DP is off (absent, empty, enabled = false)."""
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise PrivacyPlanError("privacy: expected a [privacy] table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise PrivacyPlanError(f"privacy.{unknown[0]}: unknown key (allowed: {', '.join(sorted(_KEYS))})")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise PrivacyPlanError("privacy.enabled: expected true or false")
    if not enabled or not table or set(table) == {"enabled"}:
        return None

    def number(key: str, low: float, high: float, default: float | None = None) -> float:
        v = table.get(key, default)
        if v is None:
            raise PrivacyPlanError(f"privacy.{key}: missing")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not low < v < high:
            raise PrivacyPlanError(f"privacy.{key}: expected a number above {low:g} and below {high:g}, got {v!r}")
        return float(v)

    def integer(key: str, default: int, low: int) -> int:
        v = table.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise PrivacyPlanError(f"privacy.{key}: expected an integer of at least {low}, got {v!r}")
        return v

    def choice(key: str, options: tuple[str, ...]) -> str:
        v = table.get(key, options[0])
        if v not in options:
            raise PrivacyPlanError(f"privacy.{key}: expected one of {', '.join(options)}, got {v!r}")
        return v

    dedup = table.get("deduplicated", False)
    if not isinstance(dedup, bool):
        raise PrivacyPlanError("privacy.deduplicated: expected true or false")
    return PrivacySpec(
        epsilon=number("epsilon", 0.0, 100.0),
        delta=number("delta", 0.0, 1e-2, 1e-6),
        colluding_sites=integer("colluding_sites", 0, 0),
        deduplicated=dedup,
        below_floor=choice("below_floor", BELOW_FLOOR),
        postprocess=choice("postprocess", POSTPROCESS),
        bootstrap=integer("bootstrap", 400, 0),
    )


def dp_refusals(plan: Any) -> list[str]:
    """Why DP cannot be claimed for this plan (empty: every block it asks for is covered)."""
    reasons = []
    for a in plan.analyses:
        if a.kind in UNSUPPORTED_KINDS:
            reasons.append(f"analysis {a.name!r}: {a.kind} rounds send sums whose sensitivity to one patient is "
                           f"not bounded here, so differential privacy is refused for them rather than claimed")
        if a.kind == "describe":
            for v in a.variables:
                if plan.variable(v).is_numeric:
                    reasons.append(f"analysis {a.name!r}: numeric variable {v!r} is summed as moments, which this "
                                   f"mechanism does not cover; describe it by categories or leave it out")
    return reasons


def histograms_per_patient(plan: Any) -> int:
    """m: the blocks with noise in which each patient fills exactly one cell.

    One per (endpoint, stratification) histogram (its ``dropped`` cell included, since a
    patient is either in the histogram or dropped) and one per categorical ``count:`` block.
    """
    from protocol.tallies import layout

    return sum(1 for b in layout(plan) if b.key.startswith(("surv:", "count:")))


@dataclass(frozen=True)
class NoiseParameters:
    """What every site adds and what the release then guarantees."""

    histograms: int
    copies: int
    honest_sites: int
    sigma_target: float    # total sigma the requested (epsilon, delta) needs
    share: NoiseShare      # each site's share (floor rule applied)
    guarantee: Guarantee   # what t honest shares actually buy (epsilon <= requested, up to ~1e-9)

    def to_dict(self) -> dict[str, Any]:
        g = self.guarantee
        return {"histograms_per_patient": self.histograms, "copies": self.copies, "honest_sites": self.honest_sites,
                "sigma_target": self.sigma_target, "mechanism": self.share.mechanism,
                "sigma_site": self.share.sigma, "sigma_total": g.sigma_total, "rho": g.rho, "xi": g.xi,
                "epsilon": g.epsilon, "delta": g.delta}


def noise_parameters(spec: PrivacySpec, plan: Any, participants: int) -> NoiseParameters:
    """sigma for the requested budget, t = participants - colluding_sites, and each site's share."""
    reasons = dp_refusals(plan)
    if reasons:
        raise PrivacyPlanError("; ".join(reasons))
    m = histograms_per_patient(plan)
    if m < 1:
        raise PrivacyPlanError("privacy: the plan asks for no histogram or count that noise could protect")
    t = participants - spec.colluding_sites
    if t < 1:
        raise PrivacyPlanError(f"privacy.colluding_sites: {spec.colluding_sites} colluding sites among "
                               f"{participants} participants leave no honest site to add the noise")
    sigma = sigma_for_epsilon(spec.epsilon, spec.delta, m, spec.copies)
    share = noise_share(sigma, t, spec.below_floor)
    if share.mechanism == "skellam":
        share = _skellam_share(spec, m, t, sigma)
    return NoiseParameters(m, spec.copies, t, sigma, share,
                           guarantee(share.mechanism, share.sigma, t, spec.delta, m, spec.copies))


def _skellam_share(spec: PrivacySpec, m: int, t: int, sigma_gauss: float) -> NoiseShare:
    """The Skellam share that meets the budget under Skellam's own (costlier) bound.

    If that share would reach the floor anyway, the floor-raised Gaussian is the smaller noise.
    """
    def excess(sigma_total: float) -> float:
        return guarantee("skellam", sigma_total / math.sqrt(t), t, spec.delta, m, spec.copies).epsilon - spec.epsilon

    hi = sigma_gauss
    while excess(hi) > 0:
        hi *= 1.5
    sigma_sk = brentq(excess, sigma_gauss * 0.5, hi, xtol=1e-12) * (1 + 1e-9)
    if sigma_sk / math.sqrt(t) >= SIGMA_FLOOR:
        return NoiseShare("gaussian", rational_variance(SIGMA_FLOOR))
    return NoiseShare("skellam", rational_variance(sigma_sk / math.sqrt(t)))
