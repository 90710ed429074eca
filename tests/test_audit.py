"""The site's hash-chained audit log: what each entry holds, and that tampering shows."""

from __future__ import annotations

import hashlib
import itertools
import json
import os

import pytest
from click.testing import CliRunner
from secure_fixtures import Consortium, fixed_party, lung_plan, split

from coordinator.secure_round import new_query, run_plan_secure
from fedsurv.commands.audit import show_command, verify_command
from protocol.keys import b64
from protocol.query import decode_reply
from site_node.audit import GENESIS, AuditError, AuditLog, entry_hash, verify_log
from site_node.policy import Policy
from site_node.responder import tallies_sha256
from site_node.tally import compute_tallies

POLICY = Policy(kinds=("km", "logrank", "describe"), variables=("sex", "age"), min_stratum_size=5)


@pytest.fixture
def logged(tmp_path):
    """A site log with five entries: three answered queries, a forged one and a replay."""
    c = Consortium(split(3, seed=20), policy=POLICY, audit_dir=tmp_path)
    plan = lung_plan()
    for _ in range(3):
        run_plan_secure(plan, c.transport(), c.coordinator, c.roster, c.names, clock=c.clock)
        c.now += 10
    _, forged = new_query(plan, fixed_party("coordinator", 999), c.names, 600, c.clock)
    c.nodes["site0"].answer(forged)
    _, req = new_query(plan, c.coordinator, c.names, 600, c.clock)
    c.nodes["site0"].answer(req)
    c.nodes["site0"].answer(req)
    return c, tmp_path / "site0.jsonl"


def test_entries_hold_what_a_privacy_officer_needs(logged):
    c, path = logged
    lines = path.read_text().splitlines()
    assert len(lines) == 6 and oct(os.stat(path).st_mode & 0o777) == "0o600"
    e = json.loads(lines[0])
    plan = lung_plan()
    assert e["seq"] == 1 and e["prev"] == GENESIS and e["hash"] == entry_hash(e)
    assert e["coordinator_key"] == b64(c.roster.coordinator_signing_public)
    assert e["plan_sha256"] == plan.sha256 and e["plan"] == plan.to_dict()
    assert e["participants"] == c.names and e["decision"] == "ok" and e["reasons"] == []
    assert e["tallies_sha256"] == tallies_sha256(compute_tallies(plan, c.parts["site0"]))
    assert e["tallies_sha256"] == hashlib.sha256(compute_tallies(plan, c.parts["site0"]).flatten()
                                                 .astype("<i8").tobytes()).hexdigest()
    assert e["n"] == c.parts["site0"].n_rows and len(e["query_id"]) == 32
    assert e["time"].endswith("+00:00") and e["expires_at"] > e["issued_at"]
    forged, _, replay = (json.loads(x) for x in lines[3:])
    assert forged["signature_valid"] is False and forged["coordinator_key"] is None
    assert forged["decision"] == "refused" and "signature" in forged["reasons"][0]
    assert replay["decision"] == "refused" and "replayed" in replay["reasons"][0]
    for a, b in itertools.pairwise(lines):
        assert json.loads(b)["prev"] == json.loads(a)["hash"]


def test_payload_digest_matches_what_was_sent(tmp_path):
    c = Consortium(split(3, seed=21), audit_dir=tmp_path)
    _, req = new_query(lung_plan(), c.coordinator, c.names, 600, c.clock)
    raw = c.nodes["site1"].answer(req)
    e = c.nodes["site1"].audit.entries[-1]
    assert e["payload_sha256"] == hashlib.sha256(decode_reply(raw).payload).hexdigest()
    assert e["reply_sha256"] == hashlib.sha256(raw).hexdigest()


def run_verify(path):
    return CliRunner().invoke(verify_command, [str(path)])


def test_intact_log_verifies(logged):
    _, path = logged
    result, entries = verify_log(path)
    assert result.ok and result.entries == 6 and result.head == entries[-1]["hash"]
    out = run_verify(path)
    assert out.exit_code == 0 and "6 entries, chain intact" in out.output


def _rewrite(path, lines):
    path.write_text("".join(line + "\n" for line in lines))


def test_edited_line_is_named(logged):
    _, path = logged
    lines = path.read_text().splitlines()
    e = json.loads(lines[2])
    e["decision"] = "refused"  # hide that the site answered
    lines[2] = json.dumps(e, sort_keys=True, separators=(",", ":"))
    _rewrite(path, lines)
    result, _ = verify_log(path)
    assert not result.ok and result.first_bad == 3 and "edited" in result.message
    out = run_verify(path)
    assert out.exit_code != 0 and "entry 3 (line 3)" in out.output


def test_edited_line_with_its_hash_recomputed_is_named_by_the_next(logged):
    _, path = logged
    lines = path.read_text().splitlines()
    e = json.loads(lines[1])
    e["participants"] = ["someone else"]
    e["hash"] = entry_hash(e)
    lines[1] = json.dumps(e, sort_keys=True, separators=(",", ":"))
    _rewrite(path, lines)
    result, _ = verify_log(path)
    assert not result.ok and result.first_bad == 3 and "does not chain" in result.message


def test_deleted_line_is_named(logged):
    _, path = logged
    lines = path.read_text().splitlines()
    del lines[3]
    _rewrite(path, lines)
    result, _ = verify_log(path)
    assert not result.ok and result.first_bad == 4 and "sequence number 5" in result.message
    out = run_verify(path)
    assert out.exit_code != 0 and "entry 4 (line 4)" in out.output


def test_reordered_lines_are_named(logged):
    _, path = logged
    lines = path.read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    _rewrite(path, lines)
    result, _ = verify_log(path)
    assert not result.ok and result.first_bad == 2
    out = run_verify(path)
    assert out.exit_code != 0 and "entry 2 (line 2)" in out.output


def test_site_with_a_damaged_log_answers_nothing(logged):
    _, path = logged
    lines = path.read_text().splitlines()
    del lines[0]
    _rewrite(path, lines)
    with pytest.raises(AuditError, match="does not verify"):
        Consortium(split(3, seed=20), policy=POLICY, audit_dir=path.parent)


def test_no_reply_leaves_when_the_entry_cannot_be_written(tmp_path, monkeypatch):
    import site_node.audit as audit_mod

    c = Consortium(split(3, seed=22), audit_dir=tmp_path)
    _, req = new_query(lung_plan(), c.coordinator, c.names, 600, c.clock)

    def disk_full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audit_mod.os, "write", disk_full)
    with pytest.raises(AuditError, match="No space left on device.*no reply was sent"):
        c.nodes["site0"].answer(req)
    monkeypatch.undo()
    (tmp_path / "site1.jsonl").mkdir()  # a log path that is not a file
    with pytest.raises(AuditError, match="audit log"):
        c.nodes["site1"].answer(req)


def test_entry_is_fsynced_before_the_reply_is_returned(tmp_path, monkeypatch):
    import site_node.audit as audit_mod

    events = []
    real = os.fsync
    monkeypatch.setattr(audit_mod.os, "fsync", lambda fd: (events.append("fsync"), real(fd))[1])
    c = Consortium(split(3, seed=23), audit_dir=tmp_path)
    _, req = new_query(lung_plan(), c.coordinator, c.names, 600, c.clock)
    c.nodes["site0"].answer(req)
    events.append("returned")
    assert events[0] == "fsync" and events[-1] == "returned"
    assert len((tmp_path / "site0.jsonl").read_text().splitlines()) == 1


def test_two_writers_share_one_chain(tmp_path):
    path = tmp_path / "a.jsonl"
    clock = lambda: 1.0e9  # noqa: E731
    a, b = AuditLog(path, clock), AuditLog(path, clock)
    a.append({"event": "x"})
    b.append({"event": "y"})  # b has not seen a's entry, and must chain to it anyway
    a.append({"event": "z"})
    result, entries = verify_log(path)
    assert result.ok and [e["event"] for e in entries] == ["x", "y", "z"]


def test_show_summarises(logged):
    _, path = logged
    out = CliRunner().invoke(show_command, [str(path)])
    assert out.exit_code == 0, out.output
    assert "6 entries" in out.output and "ok 4" in out.output and "refused 2" in out.output
    assert "NCCTG lung" in out.output and "replayed" in out.output
    js = CliRunner().invoke(show_command, [str(path), "--json"])
    data = json.loads(js.output)
    assert data["entries"] == 6 and data["chain_intact"] is True and data["decisions"] == {"ok": 4, "refused": 2}


def test_removing_the_newest_entries_shows_against_a_noted_head(logged):
    _, path = logged
    lines = path.read_text().splitlines()
    noted = json.loads(lines[-1])["hash"]
    assert CliRunner().invoke(verify_command, [str(path), "--head", noted]).exit_code == 0
    _rewrite(path, lines[:-2])
    assert run_verify(path).exit_code == 0  # the chain alone cannot tell
    out = CliRunner().invoke(verify_command, [str(path), "--head", noted])
    assert out.exit_code == 1 and "removed from its end" in out.output
