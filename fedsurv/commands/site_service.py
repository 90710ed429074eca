"""`fedsurv site start` (the site's long-running service) and `fedsurv site fab-hash`."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

import click

from fedsurv.groups import site


def supernode_argv(cfg: "SiteConfig") -> list[str]:  # noqa: F821 - imported lazily
    """The SuperNode a site runs: dials out to the SuperLink over TLS with its registered key,
    launches nothing (process isolation) and serves its task queue on loopback only."""
    from fedsurv.deployment import venv_bin

    if cfg.root_certificates is None:
        raise click.UsageError("[flower] root_certificates is required: sites only talk to the SuperLink over TLS")
    return [venv_bin("flower-supernode"), "--superlink", cfg.superlink,
            "--root-certificates", str(cfg.root_certificates),
            "--auth-supernode-private-key", str(cfg.node_key),
            "--isolation", "process", "--host", "127.0.0.1", "--port", str(cfg.runtime_port),
            "--superexec-auth-secret-file", str(cfg.secret_file),
            "--node-config", f'site-name="{cfg.name}"']


@site.command("start")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The site's site.toml.")
@click.option("--verbose", is_flag=True, help="Log every task.")
def start_command(config_path: Path, verbose: bool) -> None:
    """Run this site's SuperNode and answer its queries with this site's installed fedsurv.

    Only bundles whose SHA-256 is listed in [flower] allowed_fab_hashes are answered; any other
    is refused, recorded in the audit log, and answered with an error. Stops on Ctrl-C/SIGTERM.
    """
    from fedsurv.deployment import flower_env
    from site_node.flower_runtime import SiteRuntime, build_answer, ensure_secret, load_site_config, wait_for_runtime_api

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("fedsurv.site").setLevel(logging.INFO)
    cfg = load_site_config(config_path)
    if not cfg.allowed_fab_hashes:
        raise click.UsageError("[flower] allowed_fab_hashes is empty: this site would refuse every query "
                               "(see `fedsurv site fab-hash`)")
    answer, audit = build_answer(cfg)  # fails here, before connecting, if a file is missing
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    secret = ensure_secret(cfg.secret_file)
    runtime = SiteRuntime(cfg.name, cfg.runtime_address, secret, cfg.allowed_fab_hashes, answer, audit,
                          poll_interval=cfg.poll_interval)

    def _stop(_signum: int, _frame: object) -> None:
        runtime.stopping.set()

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _stop)
    log_path = cfg.state_dir / "supernode.log"
    with open(log_path, "ab") as log:
        node = subprocess.Popen(supernode_argv(cfg), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=flower_env())
    try:
        watcher = threading.Thread(target=lambda: (node.wait(), runtime.stopping.set()), daemon=True)
        watcher.start()
        wait_for_runtime_api(cfg.runtime_address)
        click.echo(f"site {cfg.name}: SuperNode started (log: {log_path}); answering bundles "
                   f"{', '.join(h[:12] for h in cfg.allowed_fab_hashes)}", err=True)
        runtime.serve_forever()
    finally:
        runtime.stopping.set()
        if node.poll() is None:
            node.terminate()
            try:
                node.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.kill()
    if node.returncode not in (0, None, -signal.SIGTERM) and not runtime.outcomes:
        raise click.ClickException(f"the SuperNode stopped (exit {node.returncode}); see {log_path}")


@site.command("fab-hash")
@click.option("--app", "app", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A Flower app directory (default: the fedsurv app installed here).")
def fab_hash_command(app: Path | None) -> None:
    """Print the SHA-256 of the app bundle built from reviewed source: the value to pin in site.toml."""
    from fedsurv.flower_app import fab_hash

    click.echo(fab_hash(app))
