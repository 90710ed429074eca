"""The command groups of the ``fedsurv`` command line; commands attach to them by module."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
@click.pass_context
def root(ctx: click.Context, debug: bool) -> None:
    """fedsurv: federated survival analysis from masked per-site tallies."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@root.group()
def keys() -> None:
    """Make and inspect long-term signing and masking keys."""


@root.group()
def site() -> None:
    """Commands a site operator or privacy officer runs at the site."""


@root.group()
def audit() -> None:
    """Read and verify a site's audit log."""


@root.group()
def coordinator() -> None:
    """Commands the coordinator runs."""
