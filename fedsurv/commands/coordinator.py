"""`fedsurv coordinator start | register | run`: the coordinator's side of a Flower deployment."""

from __future__ import annotations

import signal
import subprocess
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click

from fedsurv.groups import coordinator


@dataclass(frozen=True)
class CoordinatorConfig:
    """``coordinator.toml``; relative paths are taken from the file's directory."""

    keys: Path
    roster: Path
    state_dir: Path
    host: str
    port: int
    ca_cert: Path
    cert: Path
    key: Path
    sites: dict[str, Path]
    passphrase_env: str | None = None
    passphrase_file: Path | None = None

    @property
    def flwr_home(self) -> Path:
        return self.state_dir / "flwr-home"

    @property
    def local_address(self) -> str:
        # The CLI talks to its own SuperLink on this host; sites use the public name.
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{host}:{self.port}"


def load_coordinator_config(path: Path) -> CoordinatorConfig:
    raw = tomllib.loads(path.read_text())
    base = path.parent.resolve()

    def p(v: str) -> Path:
        q = Path(v).expanduser()
        return q if q.is_absolute() else base / q

    try:
        c, s = raw["coordinator"], raw["superlink"]
        return CoordinatorConfig(keys=p(c["keys"]), roster=p(c["roster"]), state_dir=p(c.get("state_dir", "state")),
                                 host=str(s.get("host", "0.0.0.0")), port=int(s.get("port", 9092)),
                                 ca_cert=p(s["ca_cert"]), cert=p(s["cert"]), key=p(s["key"]),
                                 sites={n: p(t["node_public_key"]) for n, t in raw.get("sites", {}).items()},
                                 passphrase_env=c.get("passphrase_env"),
                                 passphrase_file=p(c["passphrase_file"]) if c.get("passphrase_file") else None)
    except KeyError as e:
        raise click.UsageError(f"{path}: missing key {e.args[0]!r}") from None


def _config_option(f):  # type: ignore[no-untyped-def]
    return click.option("--config", "config_path", required=True,
                        type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        help="The coordinator's coordinator.toml.")(f)


@coordinator.command("start")
@_config_option
def start_command(config_path: Path) -> None:
    """Run the SuperLink (TLS, SuperNode authentication) and register the sites' node keys.

    Runs until Ctrl-C/SIGTERM. Only the Fleet API may be exposed to sites (deploy/README.md).
    """
    from fedsurv.deployment import (TlsFiles, flower_env, https_ok, register_node, superlink_argv, wait_until,
                                    write_flwr_home)

    cfg = load_coordinator_config(config_path)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    tls = TlsFiles(cfg.ca_cert, cfg.cert, cfg.key)
    log_path = cfg.state_dir / "superlink.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(superlink_argv(cfg.host, cfg.port, tls, cfg.state_dir / "superlink.db"), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=flower_env({"FLWR_HOME": str(cfg.state_dir / "superlink-home")}))
    stopping = {"flag": False}

    def _stop(_signum: int, _frame: object) -> None:
        stopping["flag"] = True

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _stop)
    try:
        wait_until(lambda: https_ok(f"https://{cfg.local_address}/health", cfg.ca_cert), 60, "SuperLink",
                   alive=lambda: proc.poll() is None)
        write_flwr_home(cfg.flwr_home, cfg.local_address, cfg.ca_cert)
        click.echo(f"SuperLink up on {cfg.host}:{cfg.port} (log: {log_path})", err=True)
        for name, pub in cfg.sites.items():
            try:
                click.echo(f"registered {name}: node {register_node(cfg.flwr_home, pub, name)}", err=True)
            except Exception as e:  # noqa: BLE001 - already registered on an earlier start is fine
                click.echo(f"{name}: not registered now ({e})", err=True)
        while not stopping["flag"] and proc.poll() is None:
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    if not stopping["flag"]:
        raise click.ClickException(f"the SuperLink stopped (exit {proc.returncode}); see {log_path}")


@coordinator.command("register")
@_config_option
@click.option("--name", required=True, help="The site's name, exactly as in the roster.")
@click.option("--key", "key", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The site's SuperNode public key (OpenSSH ECDSA, node.key.pub).")
def register_command(config_path: Path, name: str, key: Path) -> None:
    """Allow a site's SuperNode to connect (``flwr supernode register`` under the site's name)."""
    from fedsurv.deployment import register_node

    cfg = load_coordinator_config(config_path)
    click.echo(f"registered {name}: node {register_node(cfg.flwr_home, key, name)}")


@coordinator.command("run")
@_config_option
@click.option("--plan", "plan_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--site", "sites", multiple=True, help="Ask only these sites (default: every roster site).")
@click.option("--min-sites", type=int, default=3, show_default=True)
@click.option("--wait-for-sites", type=float, default=30.0, show_default=True,
              help="Seconds to wait for the sites' SuperNodes to be online.")
@click.option("--no-report", is_flag=True, help="Write results.json only.")
def run_command(config_path: Path, plan_path: Path, out: Path, sites: tuple[str, ...], min_sites: int,
                wait_for_sites: float, no_report: bool) -> None:
    """Send a plan to the consortium over Flower; write OUT/results.json and the report.

    Progress (which sites have answered) goes to stderr. On failure nothing is written to OUT.
    """
    from coordinator.flower_server import Job
    from fedsurv.deployment import follow_run, https_ok, run_deadline, submit_run, write_outcome
    from fedsurv.flower_app import app_dir
    from protocol.plan import load_plan

    cfg = load_coordinator_config(config_path)
    plan = load_plan(str(plan_path))
    stamp = time.strftime("%Y%m%dT%H%M%S")
    job_dir = cfg.state_dir / "jobs" / stamp
    job_dir.mkdir(parents=True, exist_ok=True)
    job = Job(plan=plan_path.resolve(), coordinator_keys=cfg.keys, roster=cfg.roster, job_dir=job_dir, sites=sites,
              min_sites=min_sites, wait_for_sites=wait_for_sites, passphrase_env=cfg.passphrase_env,
              passphrase_file=cfg.passphrase_file)
    job.dump(job_dir / "job.json")
    run_id = submit_run(cfg.flwr_home, app_dir(), job_dir / "job.json")
    click.echo(f"run {run_id} submitted; waiting for the sites", err=True)
    n = len(sites) or len(cfg.sites) or min_sites
    outcome = follow_run(job_dir, run_id, lambda: https_ok(f"https://{cfg.local_address}/health", cfg.ca_cert),
                         run_deadline(n, min_sites, plan.timeout_seconds, wait_for_sites),
                         lambda m: click.echo(m, err=True))
    if not outcome.get("ok"):
        raise click.ClickException(outcome.get("error", "the run failed"))
    write_outcome(outcome, out, click.echo, report=not no_report)
