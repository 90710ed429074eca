"""`fedsurv audit verify` and `fedsurv audit show`: what a privacy officer checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from fedsurv.groups import audit


@audit.command("verify")
@click.argument("log", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--head", "noted_head", metavar="HASH",
              help="A head hash noted earlier: fail unless the log still holds that entry (catches truncation).")
def verify_command(log: Path, noted_head: str | None) -> None:
    """Check the hash chain of an audit log; name the first bad entry (exit status 1)."""
    from site_node.audit import verify_log

    result, entries = verify_log(log)
    if not result.ok:
        click.echo(f"{log}: BROKEN at {result.message}; {result.entries} entries before it verify", err=True)
        sys.exit(1)
    if noted_head and not any(e["hash"] == noted_head for e in entries):
        click.echo(f"{log}: the chain is intact but holds no entry with hash {noted_head}: "
                   "entries were removed from its end, or it is another log", err=True)
        sys.exit(1)
    click.echo(f"{log}: {result.entries} entries, chain intact; head {result.head}")


@audit.command("show")
@click.argument("log", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def show_command(log: Path, as_json: bool) -> None:
    """Summarise an audit log: one line per query, with the decision and its reasons."""
    from site_node.audit import summarise, verify_log

    result, entries = verify_log(log)
    summary = summarise(entries)
    summary["chain_intact"] = result.ok
    if not result.ok:
        summary["broken_at"] = result.message
    if as_json:
        click.echo(json.dumps(summary, indent=1))
    else:
        click.echo(f"{log}: {summary['entries']} entries from {summary['first']} to {summary['last']}")
        click.echo("decisions: " + (", ".join(f"{k} {v}" for k, v in sorted(summary["decisions"].items())) or "none"))
        for q in summary["queries"]:
            parts = ", ".join(q["participants"] or [])
            line = f"  #{q['seq']:<4} {q['time']}  {q['decision']:<8}"
            if q["query_id"] or q["plan_sha256"]:
                line += f" query {str(q['query_id'] or '-')[:12]:<12} plan {str(q['plan_sha256'] or '-')[:12]:<12}"
                line += f" {q['plan'] or ''!s}"
            elif q["event"] not in (None, "query"):
                line += f" event {q['event']}"
            click.echo(line + (f" sites [{parts}]" if parts else "") + (f" n={q['n']}" if q["n"] is not None else ""))
            if q.get("round"):
                click.echo(f"        regression round {q['round']} of query {str(q['round1'])[:12]} (beta on the plan's centred, scaled covariates): "
                           + "; ".join(f"{name} beta [{', '.join(f'{b:.4g}' for b in beta)}]"
                                       for name, beta in q["betas"] or []))
            for r in q["reasons"]:
                click.echo(f"        reason: {r}")
        click.echo(f"head hash {summary['head']} (note it: the next entry must chain to it)")
    if not result.ok:
        click.echo(f"warning: the chain is broken at {result.message}; entries from there on are not shown", err=True)
        sys.exit(1)
