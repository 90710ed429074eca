"""The in-process consortium: every site and the coordinator in one process, over the very
same protocol code a deployment runs (signed query, site policy and audit, masked tallies,
unmasking and checks); only the transport is a function call.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from coordinator.plan_run import run_plan
from coordinator.secure_round import RoundResult, local_transport
from protocol.plan import Plan
from protocol.roster import consortium_for_run
from site_node.mapping import load_mapping
from site_node.policy import load_policy
from site_node.prepare import prepare_site_data
from site_node.prepared import PreparedData
from site_node.responder import SiteNode
from fedsurv.site_input import SiteInput

Progress = Callable[[str], None]


def prepare_all(plan: Plan, sites: list[SiteInput]) -> dict[str, PreparedData]:
    """Read and validate every site's data before anything is sent: bad input stops the run."""
    return {s.name: prepare_site_data(plan, s.data, load_mapping(s.mapping) if s.mapping else None) for s in sites}


def run_in_process(plan: Plan, sites: list[SiteInput], audit_dir: Path | None = None,
                   progress: Progress | None = None) -> tuple[dict[str, Any], RoundResult]:
    """Run a plan over local files exactly as a deployed consortium would, in one process."""
    names = [s.name for s in sites]
    if len(set(names)) != len(names):
        raise ValueError(f"site names must be distinct: {', '.join(names)}")
    prepared = prepare_all(plan, sites)
    if progress:
        progress(f"read {len(sites)} site data set(s): " + ", ".join(f"{n} ({prepared[n].n_rows})" for n in names))
    policies = {s.name: load_policy(s.policy) for s in sites if s.policy}
    return run_prepared(plan, prepared, policies=policies, audit_dir=audit_dir, progress=progress)


def run_prepared(plan: Plan, prepared: Mapping[str, PreparedData], policies: Mapping[str, Any] | None = None,
                 audit_dir: Path | None = None, progress: Progress | None = None
                 ) -> tuple[dict[str, Any], RoundResult]:
    """The in-process round over data already in memory, with keys made for this run."""
    names = list(prepared)
    policies = policies or {}
    coordinator, site_keys, roster = consortium_for_run(names)
    nodes = {
        name: SiteNode(name, load_data=lambda _plan, _n=name: prepared[_n], keys=site_keys[name], roster=roster,
                       policy=policies.get(name), audit_path=audit_dir / f"{name}.jsonl" if audit_dir else None)
        for name in names
    }

    # A site that fails (say, its audit log cannot be written) counts as not answering.
    transport = local_transport({name: node.answer for name, node in nodes.items()})
    results, outcome = run_plan(plan, transport, coordinator, roster, names, min_sites=min(3, len(names)),
                                on_progress=progress)
    results["site_left_out"] = {n: p.left_out for n, p in prepared.items() if p.left_out}
    results["secure_aggregation"] = {"query_ids": list(outcome.query_ids), "notes": list(outcome.notes),
                                     "refusals": [{"site": s, "reason": r} for s, r in outcome.refusals]}
    return results, outcome


def stamp(results: dict[str, Any]) -> dict[str, Any]:
    from importlib.metadata import version

    return {**results, "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "fedsurv_version": version("fedsurv")}


def write_results(results: dict[str, Any], out_dir: Path) -> Path:
    """Write results.json atomically: a reader sees the whole file or none."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".results-", suffix=".json", dir=out_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(results, f, indent=1, allow_nan=False)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are meant to be shared
        final = out_dir / "results.json"
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final
