"""`fedsurv keys init` and `fedsurv keys roster`: long-term keys and the consortium roster."""

from __future__ import annotations

from pathlib import Path

import click

from fedsurv.groups import keys


@keys.command("init")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Key directory to create.")
@click.option("--name", help="The party's name as the roster will list it (default: the directory's name).")
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Encrypt the private keys with the passphrase in this file.")
def init_command(out: Path, name: str | None, passphrase_file: Path | None) -> None:
    """Make Ed25519 signing and X25519 masking keys for a site or the coordinator."""
    from protocol.keys import generate_party
    from site_node.keystore import read_passphrase_file, save_party

    party = generate_party(name or out.resolve().name)
    passphrase = read_passphrase_file(passphrase_file) if passphrase_file else None
    private, public = save_party(out, party, passphrase)
    click.echo(f"wrote {private} (private, mode 0600{', passphrase-encrypted' if passphrase else ''})")
    click.echo(f"wrote {public} (public: send it to whoever keeps the consortium's roster)")
    click.echo(f"name {party.name!r}, signing key fingerprint {party.public().fingerprint}")


@keys.command("roster")
@click.option("--coordinator", "coordinator_pub", required=True,
              type=click.Path(exists=True, path_type=Path), help="The coordinator's fedsurv.pub (or its key directory).")
@click.option("--site", "site_pubs", multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              help="A site's fedsurv.pub (or key directory); repeat for every site.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def roster_command(coordinator_pub: Path, site_pubs: tuple[Path, ...], out: Path) -> None:
    """Build a roster from the public-key files of the coordinator and every site."""
    from protocol.roster import roster_of
    from site_node.keystore import load_public

    roster = roster_of(load_public(coordinator_pub).signing_public, [load_public(p) for p in site_pubs])
    if out.exists():
        raise click.ClickException(f"{out} exists; remove it first (a roster is never overwritten silently)")
    out.write_text(roster.to_toml(), encoding="utf-8")
    click.echo(f"wrote {out}: coordinator {load_public(coordinator_pub).fingerprint}, "
               f"{len(roster.sites)} site(s): " + ", ".join(f"{s.name} ({s.fingerprint})" for s in roster.sites))
