"""The consortium roster: who may take part, and with which keys.

Each site keeps its own copy, installed by its operator; a site answers only queries signed
by the roster's coordinator key and naming only roster members, so the coordinator cannot
add a member (a made-up site whose masks it would know) by itself.

Roster file format (TOML; keys are base64 of the raw 32-byte public keys)::

    # fedsurv roster
    [coordinator]
    signing_public = "MCowBQYDK2VwAyEA..."

    [sites.leiden]
    signing_public = "..."
    masking_public = "..."

    [sites.rotterdam]
    signing_public = "..."
    masking_public = "..."

`fedsurv keys roster --coordinator coord.pub --site leiden.pub --site ... --out roster.toml`
builds one from the public-key files that `fedsurv keys init` writes.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable

from protocol.keys import (
    KEY_BYTES,
    KeyMaterialError,
    PartyKeys,
    PartyPublic,
    b64,
    generate_party,
    unb64,
)

COORDINATOR_NAME = "coordinator"


@dataclass(frozen=True)
class Roster:
    coordinator_signing_public: bytes
    sites: tuple[PartyPublic, ...]

    def __post_init__(self) -> None:
        if len(self.coordinator_signing_public) != KEY_BYTES:
            raise KeyMaterialError(f"roster: the coordinator's signing key must be {KEY_BYTES} bytes")
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise KeyMaterialError("roster: a site is listed twice")
        if len({s.masking_public for s in self.sites}) != len(self.sites):
            raise KeyMaterialError("roster: two sites share a masking key")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sites)

    @cached_property
    def _by_name(self) -> dict[str, PartyPublic]:
        # A roster of 100 sites is asked about every participant of every reply: index it once.
        return {s.name: s for s in self.sites}

    def site(self, name: str) -> PartyPublic:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def to_toml(self) -> str:
        lines = ["# fedsurv roster: the consortium's members and public keys",
                 "[coordinator]", f'signing_public = "{b64(self.coordinator_signing_public)}"']
        for s in sorted(self.sites, key=lambda s: s.name):
            lines += ["", f"[sites.{json.dumps(s.name, ensure_ascii=False)}]",
                      f'signing_public = "{b64(s.signing_public)}"', f'masking_public = "{b64(s.masking_public)}"']
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str, where: str = "roster") -> "Roster":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise KeyMaterialError(f"{where}: not valid TOML: {e}") from None
        coord = doc.get("coordinator")
        if not isinstance(coord, dict) or "signing_public" not in coord:
            raise KeyMaterialError(f"{where}: missing [coordinator] signing_public")
        sites = doc.get("sites", {})
        if not isinstance(sites, dict):
            raise KeyMaterialError(f"{where}: expected [sites.NAME] tables")
        members = []
        for name, t in sites.items():
            if not isinstance(t, dict) or "signing_public" not in t or "masking_public" not in t:
                raise KeyMaterialError(f"{where}: sites.{name} needs signing_public and masking_public")
            members.append(PartyPublic(name, unb64(t["signing_public"], f"{where}: sites.{name}.signing_public"),
                                       unb64(t["masking_public"], f"{where}: sites.{name}.masking_public")))
        return cls(unb64(coord["signing_public"], f"{where}: coordinator.signing_public"),
                   tuple(sorted(members, key=lambda s: s.name)))


def roster_of(coordinator_signing_public: bytes, sites: Iterable[PartyPublic]) -> Roster:
    return Roster(coordinator_signing_public, tuple(sorted(sites, key=lambda s: s.name)))


def consortium_for_run(site_names: Iterable[str]) -> tuple[PartyKeys, dict[str, PartyKeys], Roster]:
    """Fresh keys for one `fedsurv run`: a coordinator, every site, and the roster they share."""
    names = list(site_names)
    coordinator = generate_party(COORDINATOR_NAME)
    sites = {n: generate_party(n) for n in names}
    return coordinator, sites, roster_of(coordinator.public().signing_public, (k.public() for k in sites.values()))
