"""Key files and the roster: 0600, passphrases, round trips, and the CLI that makes them."""

from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner

from fedsurv.commands.keys import init_command, roster_command
from protocol.keys import KeyMaterialError, generate_party, verify_signature
from protocol.roster import Roster, consortium_for_run
from site_node.keystore import load_party, load_public, load_roster, save_party


def test_keys_round_trip_with_and_without_passphrase(tmp_path):
    party = generate_party("leiden")
    for pw, d in ((None, tmp_path / "plain"), ("correct horse", tmp_path / "enc")):
        private, public = save_party(d, party, pw)
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
        assert load_party(d, pw) == party
        assert load_public(public) == party.public()
        if pw:
            assert b"ENCRYPTED PRIVATE KEY" in private.read_bytes()
            with pytest.raises(KeyMaterialError, match="wrong passphrase"):
                load_party(d, "wrong")
            with pytest.raises(KeyMaterialError, match="give the passphrase"):
                load_party(d)
    with pytest.raises(KeyMaterialError, match="refusing to replace keys"):
        save_party(tmp_path / "plain", generate_party("leiden"))


def test_private_keys_readable_by_others_are_refused(tmp_path):
    private, _ = save_party(tmp_path, generate_party("x"))
    os.chmod(private, 0o644)
    with pytest.raises(KeyMaterialError, match="chmod 600"):
        load_party(tmp_path)


def test_private_keys_never_show_in_repr():
    party = generate_party("x")
    assert party.signing_private.hex() not in repr(party) and "fingerprint" in repr(party)


def test_signatures_verify_only_with_the_right_key_and_message():
    a, b = generate_party("a"), generate_party("b")
    sig = a.sign(b"plan")
    assert verify_signature(a.public().signing_public, sig, b"plan")
    assert not verify_signature(a.public().signing_public, sig, b"plan!")
    assert not verify_signature(b.public().signing_public, sig, b"plan")
    assert not verify_signature(a.public().signing_public, b"\0" * 64, b"plan")


def test_roster_round_trips_through_toml_and_rejects_duplicates():
    coord, _, roster = consortium_for_run(["b", "a", "c d"])
    again = Roster.from_toml(roster.to_toml())
    assert again == roster and again.names == ("a", "b", "c d")
    assert roster.coordinator_signing_public == coord.public().signing_public
    shared = roster.to_toml().replace(_b64(roster.site("b").masking_public), _b64(roster.site("a").masking_public))
    with pytest.raises(KeyMaterialError, match="share a masking key"):
        Roster.from_toml(shared)
    with pytest.raises(KeyMaterialError, match="missing \\[coordinator\\]"):
        Roster.from_toml('[sites.a]\nsigning_public = "x"\nmasking_public = "y"\n')
    with pytest.raises(KeyMaterialError, match="not valid base64|expected 32 bytes"):
        Roster.from_toml('[coordinator]\nsigning_public = "abc"\n')


def _b64(b: bytes) -> str:
    import base64

    return base64.b64encode(b).decode()


def test_cli_makes_keys_and_a_roster(tmp_path):
    runner = CliRunner()
    (tmp_path / "pw").write_text("s3cret\n")
    out = runner.invoke(init_command, ["--out", str(tmp_path / "coord"), "--passphrase-file", str(tmp_path / "pw")])
    assert out.exit_code == 0, out.output
    assert "passphrase-encrypted" in out.output
    for s in ("leiden", "milan", "prague"):
        assert runner.invoke(init_command, ["--out", str(tmp_path / s)]).exit_code == 0
    out = runner.invoke(roster_command, ["--coordinator", str(tmp_path / "coord"), "--out", str(tmp_path / "r.toml")]
                        + [a for s in ("leiden", "milan", "prague") for a in ("--site", str(tmp_path / s / "fedsurv.pub"))])
    assert out.exit_code == 0, out.output
    roster = load_roster(tmp_path / "r.toml")
    assert roster.names == ("leiden", "milan", "prague")
    coord = load_party(tmp_path / "coord", b"s3cret")
    assert roster.coordinator_signing_public == coord.public().signing_public
    assert roster.site("milan") == load_party(tmp_path / "milan").public()
