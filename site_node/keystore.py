"""Key files on disk: a party's private keys (mode 0600, optionally passphrase-encrypted),
its shareable public keys, and the roster.

A key directory made by `fedsurv keys init --out DIR` holds

- ``DIR/fedsurv.key``: both private keys, PKCS#8 PEM in a small TOML file (0600);
- ``DIR/fedsurv.pub``: name, signing and masking public keys (base64), to send to whoever
  keeps the consortium's roster.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from protocol.keys import (KeyMaterialError, PartyKeys, PartyPublic, private_keys_from_text, private_keys_to_text,
                           public_from_text, public_to_text)
from protocol.roster import Roster

PRIVATE_FILE = "fedsurv.key"
PUBLIC_FILE = "fedsurv.pub"


def _bytes(passphrase: str | bytes | None) -> bytes | None:
    if passphrase is None or passphrase == "" or passphrase == b"":
        return None
    return passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase


def read_passphrase_file(path: str | Path) -> bytes:
    """The passphrase in a file: its first line, without the line end."""
    try:
        text = Path(path).read_bytes().splitlines()
    except OSError as e:
        raise KeyMaterialError(f"{path}: cannot read the passphrase file ({e.strerror})") from None
    if not text or not text[0]:
        raise KeyMaterialError(f"{path}: the passphrase file is empty")
    return text[0]


def _write_private(path: Path, data: str) -> None:
    # Created 0600 from the start, so the keys are never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def save_party(directory: str | Path, keys: PartyKeys, passphrase: str | bytes | None = None,
               overwrite: bool = False) -> tuple[Path, Path]:
    """Write DIR/fedsurv.key (0600) and DIR/fedsurv.pub; never replaces keys unless told to."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    private, public = d / PRIVATE_FILE, d / PUBLIC_FILE
    if private.exists():
        if not overwrite:
            raise KeyMaterialError(f"{private} exists; refusing to replace keys (remove it first)")
        private.unlink()
    _write_private(private, private_keys_to_text(keys, _bytes(passphrase)))
    public.write_text(public_to_text(keys.public()), encoding="utf-8")
    return private, public


def load_party(path: str | Path, passphrase: str | bytes | None = None) -> PartyKeys:
    """A party's private keys from a key directory or a .key file; refuses files others can read."""
    p = Path(path)
    if p.is_dir():
        p = p / PRIVATE_FILE
    try:
        mode = p.stat().st_mode
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise KeyMaterialError(f"{p}: cannot read the private keys ({getattr(e, 'strerror', None) or e})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyMaterialError(f"{p}: private keys must be readable by their owner only (chmod 600 {p})")
    return private_keys_from_text(text, _bytes(passphrase), str(p))


def load_public(path: str | Path) -> PartyPublic:
    p = Path(path)
    if p.is_dir():
        p = p / PUBLIC_FILE
    try:
        return public_from_text(p.read_text(encoding="utf-8"), str(p))
    except (OSError, UnicodeDecodeError) as e:
        raise KeyMaterialError(f"{p}: cannot read the public keys ({getattr(e, 'strerror', None) or e})") from None


def load_roster(path: str | Path) -> Roster:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise KeyMaterialError(f"{path}: cannot read the roster ({getattr(e, 'strerror', None) or e})") from None
    return Roster.from_toml(text, str(path))
