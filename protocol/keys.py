"""Long-term key material of a consortium party, as raw bytes (no file I/O here).

Every party (each site and the coordinator) holds two key pairs:

- Ed25519 for signing: the coordinator signs queries, sites sign replies (RFC 8032).
- X25519 for masking: two sites derive the same pairwise secret from one's private key and
  the other's public key (RFC 7748), so masking needs no extra key-exchange round.

Keys travel as raw 32-byte strings; `private_keys_to_text` / `private_keys_from_text` give
the on-disk form (PKCS#8 PEM, optionally passphrase-encrypted) that site_node/keystore.py
writes, and `public_to_text` / `public_from_text` the shareable TOML form of a public key.
"""

from __future__ import annotations

import base64
import hashlib
import tomllib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from protocol.errors import FedsurvError

KEY_BYTES = 32
SIGNATURE_BYTES = 64
_RAW = serialization.Encoding.Raw


class KeyMaterialError(FedsurvError, ValueError):
    """Key material that cannot be used (wrong length, wrong passphrase, unreadable file)."""



def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str, length: int | None = KEY_BYTES) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise KeyMaterialError(f"{what}: not valid base64") from None
    if length is not None and len(raw) != length:
        raise KeyMaterialError(f"{what}: expected {length} bytes, got {len(raw)}")
    return raw


def fingerprint(signing_public: bytes) -> str:
    """A short, stable name for a signing key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(signing_public).hexdigest()[:16]


@dataclass(frozen=True)
class PartyPublic:
    """What everyone may know of a party: its name and its two public keys."""

    name: str
    signing_public: bytes
    masking_public: bytes

    def __post_init__(self) -> None:
        if len(self.signing_public) != KEY_BYTES or len(self.masking_public) != KEY_BYTES:
            raise KeyMaterialError(f"{self.name}: public keys must be {KEY_BYTES} bytes each")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.signing_public)

    def verify(self, signature: bytes, message: bytes) -> bool:
        return verify_signature(self.signing_public, signature, message)


@dataclass(frozen=True, repr=False)
class PartyKeys:
    """A party's private keys. repr never shows them, so a stray log line leaks nothing."""

    name: str
    signing_private: bytes
    masking_private: bytes

    def __repr__(self) -> str:
        return f"PartyKeys(name={self.name!r}, fingerprint={self.public().fingerprint})"

    def public(self) -> PartyPublic:
        sk = Ed25519PrivateKey.from_private_bytes(self.signing_private)
        mk = X25519PrivateKey.from_private_bytes(self.masking_private)
        return PartyPublic(self.name, sk.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw),
                           mk.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw))

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.signing_private).sign(message)

    def shared_secret(self, peer_masking_public: bytes) -> bytes:
        """The X25519 secret this party shares with the owner of `peer_masking_public`."""
        own = X25519PrivateKey.from_private_bytes(self.masking_private)
        return own.exchange(X25519PublicKey.from_public_bytes(peer_masking_public))


def generate_party(name: str) -> PartyKeys:
    """Fresh signing and masking keys from the operating system's randomness."""
    sk, mk = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    nopriv = serialization.PrivateFormat.Raw, serialization.NoEncryption()
    return PartyKeys(name, sk.private_bytes(_RAW, *nopriv), mk.private_bytes(_RAW, *nopriv))


def verify_signature(signing_public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(signing_public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# --------------------------------------------------------------------------- text forms


def private_keys_to_text(keys: PartyKeys, passphrase: bytes | None = None) -> str:
    """Both private keys as PKCS#8 PEM (encrypted with the passphrase if given), in one TOML text."""
    enc = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    pem = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
    sk = Ed25519PrivateKey.from_private_bytes(keys.signing_private).private_bytes(*pem).decode("ascii")
    mk = X25519PrivateKey.from_private_bytes(keys.masking_private).private_bytes(*pem).decode("ascii")
    return (f"# fedsurv private keys of {keys.name!r}: keep secret (mode 0600)\n"
            f"name = {_toml_str(keys.name)}\nencrypted = {'true' if passphrase else 'false'}\n"
            f'signing_private = """\n{sk}"""\nmasking_private = """\n{mk}"""\n')


def private_keys_from_text(text: str, passphrase: bytes | None = None, where: str = "key file") -> PartyKeys:
    try:
        doc = tomllib.loads(text)
        name, encrypted = doc["name"], bool(doc.get("encrypted", False))
        pems = doc["signing_private"].strip().encode(), doc["masking_private"].strip().encode()
    except (tomllib.TOMLDecodeError, KeyError, AttributeError):
        raise KeyMaterialError(f"{where}: not a fedsurv private key file") from None
    if encrypted and not passphrase:
        raise KeyMaterialError(f"{where}: the keys are passphrase-encrypted; give the passphrase")
    try:
        sk = serialization.load_pem_private_key(pems[0], passphrase if encrypted else None)
        mk = serialization.load_pem_private_key(pems[1], passphrase if encrypted else None)
    except (ValueError, TypeError):
        raise KeyMaterialError(f"{where}: cannot decrypt the keys (wrong passphrase?)") from None
    if not isinstance(sk, Ed25519PrivateKey) or not isinstance(mk, X25519PrivateKey):
        raise KeyMaterialError(f"{where}: expected an Ed25519 signing key and an X25519 masking key")
    raw = serialization.PrivateFormat.Raw, serialization.NoEncryption()
    return PartyKeys(name, sk.private_bytes(_RAW, *raw), mk.private_bytes(_RAW, *raw))


def public_to_text(public: PartyPublic) -> str:
    """The shareable public-key file: a site sends it to whoever maintains the roster."""
    return (f"# fedsurv public keys of {public.name!r} (fingerprint {public.fingerprint})\n"
            f"name = {_toml_str(public.name)}\nsigning_public = \"{b64(public.signing_public)}\"\n"
            f"masking_public = \"{b64(public.masking_public)}\"\n")


def public_from_text(text: str, where: str = "public key file") -> PartyPublic:
    try:
        doc = tomllib.loads(text)
        name, sp, mp = doc["name"], doc["signing_public"], doc["masking_public"]
    except (tomllib.TOMLDecodeError, KeyError):
        raise KeyMaterialError(f"{where}: expected name, signing_public and masking_public") from None
    return PartyPublic(name, unb64(sp, f"{where}: signing_public"), unb64(mp, f"{where}: masking_public"))


def _toml_str(s: str) -> str:
    import json

    # A JSON string literal is a valid TOML basic string.
    return json.dumps(s, ensure_ascii=False)
