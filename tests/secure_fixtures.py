"""Small consortia over the lung fixture for the secure-aggregation tests (plain numpy reads)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from coordinator.secure_round import local_transport
from protocol.keys import PartyKeys
from protocol.plan import Plan, parse_plan
from protocol.roster import Roster, roster_of
from site_node.policy import Policy
from site_node.prepared import PreparedData
from site_node.responder import SiteNode
from site_node.tally import compute_tallies

ROOT = Path(__file__).resolve().parents[1]
LUNG = pd.read_csv(ROOT / "tests" / "fixtures" / "data" / "lung.csv")

PLAN_TEXT = (ROOT / "fedsurv" / "examples" / "lung.toml").read_text() + """
[variables.age]
type = "numeric"
range = [0, 110]

[[analyses]]
name = "table1"
kind = "describe"
variables = ["sex", "age"]
"""


def lung_plan(extra_head: str = "", bin_width: float = 1) -> Plan:
    text = PLAN_TEXT.replace("bin_width = 1 ", f"bin_width = {bin_width} ")
    if extra_head:
        text = text.replace('title = "NCCTG lung: overall survival"', f'title = "NCCTG lung: {extra_head}"')
    return parse_plan(text)


def prepared(df: pd.DataFrame) -> PreparedData:
    """The lung rows as the plan above sees them: time, death (status 2), sex and age."""
    return PreparedData(
        source="lung.csv", n_rows=len(df),
        times={"os": df["time"].to_numpy(float)}, outcomes={"os": (df["status"].to_numpy() == 2).astype(np.int64)},
        levels={"sex": df["sex"].to_numpy(np.int64) - 1},
        fixed={"age": df["age"].to_numpy(np.int64)}, missing={"age": np.zeros(len(df), dtype=bool)})


def fixed_party(name: str, seed: int) -> PartyKeys:
    """Keys from a seeded generator, so statistical tests are reproducible."""
    rng = np.random.default_rng(seed)
    return PartyKeys(name, rng.bytes(32), rng.bytes(32))


def split(n_sites: int, seed: int = 0) -> dict[str, PreparedData]:
    rng = np.random.default_rng(seed)
    who = rng.integers(0, n_sites, len(LUNG))
    who[:n_sites] = np.arange(n_sites)  # no empty site
    return {f"site{k}": prepared(LUNG[who == k]) for k in range(n_sites)}


class Consortium:
    """Coordinator keys, roster and one SiteNode per site, all in this process."""

    def __init__(self, parts: Mapping[str, PreparedData], policy: Policy | None = None,
                 audit_dir: Path | None = None, approvals_dir: Path | None = None,
                 clock: Callable[[], float] | None = None, seed: int = 1):
        self.parts = dict(parts)
        self.coordinator = fixed_party("coordinator", seed)
        self.keys = {n: fixed_party(n, seed + 1 + i) for i, n in enumerate(sorted(parts))}
        self.roster: Roster = roster_of(self.coordinator.public().signing_public,
                                        [k.public() for k in self.keys.values()])
        self.now = 1_700_000_000.0
        self.clock = clock or (lambda: self.now)
        self.nodes = {n: SiteNode(n, lambda _p, n=n: self.parts[n], self.keys[n], self.roster, policy=policy,
                                  audit_path=audit_dir / f"{n}.jsonl" if audit_dir else None,
                                  approvals_dir=approvals_dir / n if approvals_dir else None, clock=self.clock)
                      for n in sorted(parts)}

    @property
    def names(self) -> list[str]:
        return sorted(self.parts)

    def transport(self):
        return local_transport({n: node.answer for n, node in self.nodes.items()})

    def plain_sum(self, plan: Plan, names=None) -> np.ndarray:
        return sum(compute_tallies(plan, self.parts[n]).flatten() for n in (names or self.names))
