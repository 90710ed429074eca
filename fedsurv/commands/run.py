"""`fedsurv run`: a whole consortium in one process over local files."""

from __future__ import annotations

from pathlib import Path

import click

from fedsurv.groups import root
from fedsurv.site_input import SiteInput
from fedsurv.summary import summarize
from protocol.plan import load_plan


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"expected NAME=PATH, got {v!r}", param_hint=option)
        if name in out:
            raise click.BadParameter(f"site {name!r} given twice", param_hint=option)
        out[name] = path
    return out


def site_inputs(site: tuple[str, ...], mapping: tuple[str, ...], policy: tuple[str, ...]) -> list[SiteInput]:
    sites = _pairs(site, "--site")
    maps = _pairs(mapping, "--mapping")
    shared_policy = [p for p in policy if "=" not in p]
    policies = _pairs(tuple(p for p in policy if "=" in p), "--policy")
    for opt, d in (("--mapping", maps), ("--policy", policies)):
        unknown = sorted(set(d) - set(sites))
        if unknown:
            raise click.BadParameter(f"no --site named {unknown[0]!r}", param_hint=opt)
    if len(shared_policy) > 1:
        raise click.BadParameter("give one shared policy file, or NAME=POLICY per site", param_hint="--policy")
    out = []
    for name, path in sites.items():
        pol = policies.get(name) or (shared_policy[0] if shared_policy else None)
        out.append(SiteInput(name, Path(path), Path(maps[name]) if name in maps else None, Path(pol) if pol else None))
    return out


def execute(plan_path: Path, sites: list[SiteInput], out: Path, audit_dir: Path | None, report: bool = True) -> dict:
    """Shared by `run` and `demo --in-process`: run, write results.json and the report, print."""
    plan = load_plan(str(plan_path))
    if not any(s.policy for s in sites):
        click.echo("note: no site policy given, so no query is refused (every site's file is yours here)", err=True)
    if len(sites) < 3:
        click.echo(f"warning: only {len(sites)} site(s): fewer than 3 sites cannot hide one site's tallies", err=True)
    # Imported here so that every other command works without the whole pipeline loaded.
    from fedsurv.runner import run_in_process, stamp, write_results

    results, _ = run_in_process(plan, sites, audit_dir=audit_dir, progress=lambda m: click.echo(m, err=True))
    results = stamp(results)
    path = write_results(results, out)
    click.echo(summarize(results))
    click.echo(f"wrote {path}")
    if report:
        from coordinator.report_html import write_report

        report = write_report(results, out, progress=lambda m: click.echo(f"report: {m}", err=True))
        click.echo(f"wrote {report}")
    return results


@root.command("run")
@click.option("--plan", "plan_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--site", multiple=True, required=True, metavar="NAME=PATH", help="A site's data file (CSV, Parquet, Excel).")
@click.option("--mapping", multiple=True, metavar="NAME=MAPPING.toml", help="A site's column and code mapping.")
@click.option("--policy", multiple=True, metavar="[NAME=]POLICY.toml", help="Site policy, shared or per site.")
@click.option("--audit-dir", type=click.Path(file_okay=False, path_type=Path), help="Write each site's audit log here.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
def run_command(plan_path: Path, site: tuple[str, ...], mapping: tuple[str, ...], policy: tuple[str, ...],
                audit_dir: Path | None, out: Path) -> None:
    """Run a plan over local site files in one process and write OUT/results.json."""
    execute(plan_path, site_inputs(site, mapping, policy), out, audit_dir)
