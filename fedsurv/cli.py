"""Entry point of the ``fedsurv`` command: errors print as one sentence unless --debug."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click

import fedsurv.commands
from fedsurv.groups import root


def _load_commands() -> None:
    # Each module under fedsurv/commands attaches its commands to the groups on import.
    for mod in pkgutil.iter_modules(fedsurv.commands.__path__):
        importlib.import_module(f"fedsurv.commands.{mod.name}")


def main(argv: list[str] | None = None) -> None:
    _load_commands()
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        root.main(args=args, prog_name="fedsurv", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the one place that turns errors into sentences
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
