"""`fedsurv site preview` and `fedsurv site approve`: what a site's privacy officer runs."""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from fedsurv.groups import site


def preview_dict(pv: Any, plan: Any) -> dict[str, Any]:
    """The preview as JSON: every block of the tallies with its exact values."""
    from protocol.tallies import cell_labels

    blocks = {}
    for b in pv.tallies.blocks:
        entry: dict[str, Any] = {"shape": list(b.shape), "values": pv.tallies[b.key].tolist()}
        if b.key.startswith("surv:"):
            _, ep, vs = b.key.split(":", 2)
            entry["cells"] = cell_labels(plan, tuple(vs.split("*")) if vs else ())
            entry["bin_times"] = plan.bin_times().tolist()
            entry["outcomes"] = ["censored"] + [c.name for c in plan.endpoint(ep).causes]
        blocks[b.key] = entry
    out = {"site": pv.site, "plan_sha256": pv.plan_sha256, "n": pv.n,
           "decision": {"allowed": pv.decision.allowed, "reasons": list(pv.decision.reasons)},
           "left_out": pv.left_out, "notes": list(pv.notes), "blocks": blocks}
    if pv.privacy is not None:
        out["privacy"] = pv.privacy
    return out


def privacy_text(info: dict[str, Any]) -> list[str]:
    """The DP budget lines of a preview: what the plan would spend and what would remain."""
    b = info["budget"]
    noise = info.get("noise")
    out = ["differential privacy:"]
    if noise:
        out.append(f"  noise: sigma {noise['sigma_total']:.3g} in the sum ({noise['mechanism']}; this site's share "
                   f"sigma {noise['sigma_site']:.3g}), assuming {info['participants']} participants of which "
                   f"{noise['honest_sites']} honest; {noise['histograms_per_patient']} noisy histogram(s) per patient")
        out.append(f"  this plan would spend: epsilon {b['this_query_epsilon']:.4g} at delta {noise['delta']:g}")
    else:
        out.append("  the plan has no [privacy] table: it would be answered exactly")
    remaining = "unlimited (no [privacy] budget in the policy)" if b["remaining_epsilon"] is None \
        else f"{b['remaining_epsilon']:.4g}"
    out.append(f"  spent so far (audit log): epsilon {b['spent_epsilon']:.4g}; total after this plan "
               f"{b['total_epsilon_after']:.4g}; remaining {remaining}")
    return out


def stratum_table(label: str, cell: np.ndarray, times: np.ndarray, outcomes: list[str]) -> list[str]:
    """One stratum's (bins, outcomes) counts as text: the bins holding anyone, a column per outcome."""
    out = [f"  stratum {label}: {int(cell.sum())} patients"]
    rows = np.flatnonzero(cell.sum(axis=1))
    width = max(12, *(len(o) + 2 for o in outcomes))
    if rows.size:
        out.append("    " + f"{'time':>10}" + "".join(f"{o:>{width}}" for o in outcomes))
    out += ["    " + f"{times[r]:>10g}" + "".join(f"{int(v):>{width}}" for v in cell[r]) for r in rows]
    return out


def preview_text(pv: Any, plan: Any) -> str:
    from protocol.tallies import cell_labels

    out = [f"site {pv.site}: plan {plan.title!r} (sha256 {pv.plan_sha256})", f"patients: {pv.n}"]
    for reason, k in pv.left_out.items():
        out.append(f"left out on purpose: {k} ({reason})")
    out.append("decision: " + ("ALLOWED" if pv.decision.allowed else "REFUSED"))
    out += [f"  - {r}" for r in pv.decision.reasons]
    if pv.privacy is not None:
        out += privacy_text(pv.privacy)
    for b in pv.tallies.blocks:
        a = pv.tallies[b.key]
        if b.key.startswith("surv:"):
            _, ep, vs_text = b.key.split(":", 2)
            vs = tuple(vs_text.split("*")) if vs_text else ()
            outcomes = ["censored"] + [c.name for c in plan.endpoint(ep).causes]
            dropped = int(pv.tallies[b.key.replace("surv:", "dropped:", 1)][0])
            out.append("")
            out.append(f"[{b.key}] endpoint {ep}, by {' x '.join(vs) or 'nothing'}; "
                       f"{dropped} row(s) dropped for a missing stratum")
            for label, cell in zip(cell_labels(plan, vs), a):
                out += stratum_table(label, cell, plan.bin_times(), outcomes)
        elif b.key.startswith("regsurv:"):
            from protocol.regression import model_grid, model_strata

            name = b.key.split(":", 1)[1]
            model = next(x for x in plan.analyses if x.name == name)
            dropped = int(pv.tallies[f"regdropped:{name}"][0])
            out.append("")
            out.append(f"[{b.key}] {model.kind} model {name}: its rows by stratum, bin and outcome; "
                       f"{dropped} row(s) left out for a missing covariate")
            if b.shape[1] > 1:
                out.append(f"  by {b.shape[1]} covariate patterns (a categorical Cox model is fitted from these "
                           "counts; shown here summed over patterns, in full with --json)")
            outcomes = ["censored", model.cause or "event", "competing"]
            for label, by_pattern in zip(model_strata(plan, model), a):
                out += stratum_table(label, by_pattern.sum(axis=0), model_grid(plan, model).bin_times(), outcomes)
        elif b.key.startswith("count:"):
            v = plan.variable(b.key.split(":", 1)[1])
            out.append("")
            out.append(f"[{b.key}] " + ", ".join(f"{lv}: {int(c)}" for lv, c in zip(list(v.levels) + ["missing"], a)))
        elif b.key.startswith("moments:"):
            v = plan.variable(b.key.split(":", 1)[1])
            out.append("")
            out.append(f"[{b.key}] n {int(a[0])}, sum {int(a[1])}, sum of squares {int(a[2])}, missing {int(a[3])} "
                       f"(fixed point: x * 10^{v.decimals})")
    out.append("")
    out += [f"note: {n}" for n in pv.notes]
    return "\n".join(out)


@site.command("preview")
@click.option("--plan", "plan_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--mapping", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", default="this site", help="The site's name, for the printout.")
@click.option("--json", "as_json", is_flag=True, help="Print the preview as JSON.")
@click.option("--audit", "audit_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The site's audit log: its privacy budget ledger (differential privacy).")
@click.option("--participants", type=click.IntRange(min=1),
              help="Sites assumed to take part, for the privacy noise (default: the policy's minimum, or 3).")
def preview_command(plan_path: Path, data: Path, mapping: Path | None, policy_path: Path | None, name: str,
                    as_json: bool, audit_path: Path | None, participants: int | None) -> None:
    """Show the exact tallies this site would contribute to a plan, and its policy's decision.

    Under differential privacy it also shows the budget the plan would spend and what would
    remain. Nothing is sent: this reads the files and prints. Exit status 1 if the policy refuses.
    """
    from protocol.plan import load_plan
    from site_node.mapping import load_mapping
    from site_node.policy import load_policy
    from site_node.prepare import prepare_site_data
    from site_node.responder import preview

    plan = load_plan(str(plan_path))
    prepared = prepare_site_data(plan, data, load_mapping(mapping) if mapping else None)
    records = _audit_records(audit_path) if audit_path else None
    pv = preview(name, plan, prepared, load_policy(policy_path) if policy_path else None,
                 audit_records=records, participants=participants)
    click.echo(json.dumps(preview_dict(pv, plan), indent=1) if as_json else preview_text(pv, plan))
    if not pv.decision.allowed:
        sys.exit(1)


def _audit_records(path: Path) -> list[dict[str, Any]]:
    """The audit log's verified entries (a missing log is an empty ledger)."""
    from site_node.audit import verify_log

    if not path.exists():
        return []
    ver, entries = verify_log(path)
    if not ver.ok:
        # A ledger read from a broken chain could under-count what was spent.
        raise click.ClickException(f"{path}: the audit log does not verify ({ver.message}); "
                                   f"its privacy budget cannot be trusted")
    return entries


def _approvals_dir(state: Path, query_id: str) -> Path:
    for d in (state, state / "approvals"):
        if (d / f"{query_id}.pending.json").exists():
            return d
    raise click.ClickException(f"no query {query_id} is waiting for approval in {state}")


@site.command("approve")
@click.argument("query_id")
@click.option("--state", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The site's approvals folder (or the state folder holding approvals/).")
@click.option("--yes", is_flag=True, help="Approve without asking.")
def approve_command(query_id: str, state: Path, yes: bool) -> None:
    """Approve a query that waits for manual approval; the site answers it when it is sent again."""
    d = _approvals_dir(state, query_id)
    pending = json.loads((d / f"{query_id}.pending.json").read_text(encoding="utf-8"))
    expires = _dt.datetime.fromtimestamp(pending["expires_at"], _dt.UTC).isoformat(timespec="seconds")
    click.echo(f"query {query_id}: plan {pending.get('title')!r} (sha256 {pending['plan_sha256']})")
    click.echo(f"participants: {', '.join(pending['participants'])}; this site's patients: {pending.get('n')}; "
               f"valid until {expires}")
    if not yes and not click.confirm("approve this query?", default=False):
        click.echo("not approved")
        sys.exit(1)
    approval = {"query_id": query_id, "approved_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "by": getpass.getuser(), "request_sha256": pending.get("request_sha256")}
    path = d / f"{query_id}.approved"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(approval) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    click.echo(f"approved: wrote {path}; the site answers when the coordinator sends the query again")


@site.command("pending")
@click.option("--state", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The site's approvals folder (or the state folder holding approvals/).")
def pending_command(state: Path) -> None:
    """List the queries waiting for manual approval."""
    found = 0
    for d in (state, state / "approvals"):
        for p in sorted(d.glob("*.pending.json")) if d.is_dir() else []:
            q = json.loads(p.read_text(encoding="utf-8"))
            status = "approved" if (d / f"{q['query_id']}.approved").exists() else "waiting"
            expires = _dt.datetime.fromtimestamp(q["expires_at"], _dt.timezone.utc).isoformat(timespec="seconds")
            click.echo(f"{q['query_id']}  {status:<8} plan {q.get('title')!r} ({q['plan_sha256'][:12]}), "
                       f"sites {', '.join(q['participants'])}, valid until {expires}")
            found += 1
    if not found:
        click.echo(f"no query waits for approval in {state}")
