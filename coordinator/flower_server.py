"""The coordinator as a Flower ServerApp: Flower carries the signed query and the masked replies.

The ServerApp reads a job file (plan, coordinator keys, roster, which sites, where to write),
finds each site's SuperNode by the name its key was registered under, and hands
``run_plan_secure`` a Transport that sends every site its request bytes in one message and
collects the replies until the plan's timeout. Everything the coordinator learns is written
atomically to ``outcome.json`` in the job's directory, with progress lines in
``progress.jsonl`` beside it, for ``fedsurv coordinator run`` to follow.

Flower's types appear here and in site_node/flower_runtime.py (and flower_client.py) only.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

RECORD = "fedsurv"
REQUEST_KEY = "request"
REPLY_KEY = "reply"
SITE_KEY = "site-name"
POLL_SECONDS = 0.2   # Flower's send_and_receive sleeps 3 s between pulls; a query round is short

Progress = Callable[[str], None]


class SiteError(Exception):
    """A site answered with an error (it refused the bundle, or could not answer)."""

    def __init__(self, site: str, reason: str) -> None:
        super().__init__(reason if site in reason else f"site {site}: {reason}")
        self.site = site
        self.reason = reason


@dataclass(frozen=True)
class Job:
    """What the coordinator asked this run to do (written by ``fedsurv coordinator run``)."""

    plan: Path
    coordinator_keys: Path
    roster: Path
    job_dir: Path
    sites: tuple[str, ...] = ()
    min_sites: int = 3
    wait_for_sites: float = 30.0
    passphrase_env: str | None = None
    passphrase_file: Path | None = None

    @classmethod
    def load(cls, path: Path) -> "Job":
        raw = json.loads(Path(path).read_text())
        return cls(plan=Path(raw["plan"]), coordinator_keys=Path(raw["coordinator_keys"]), roster=Path(raw["roster"]),
                   job_dir=Path(raw["job_dir"]), sites=tuple(raw.get("sites", ())),
                   min_sites=int(raw.get("min_sites", 3)), wait_for_sites=float(raw.get("wait_for_sites", 30.0)),
                   passphrase_env=raw.get("passphrase_env"),
                   passphrase_file=Path(raw["passphrase_file"]) if raw.get("passphrase_file") else None)

    def dump(self, path: Path) -> None:
        data = {"plan": str(self.plan), "coordinator_keys": str(self.coordinator_keys), "roster": str(self.roster),
                "job_dir": str(self.job_dir), "sites": list(self.sites), "min_sites": self.min_sites,
                "wait_for_sites": self.wait_for_sites, "passphrase_env": self.passphrase_env,
                "passphrase_file": str(self.passphrase_file) if self.passphrase_file else None}
        write_json_atomic(path, data)


def write_json_atomic(path: Path, data: Any) -> None:
    """A reader sees the whole file or none of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FlowerTransport:
    """``coordinator.secure_round.Transport`` over a Flower Grid: one message per site, one round.

    Returns each site's reply bytes; a ``SiteError`` for a site that answered with an error;
    ``None`` for a site whose reply did not arrive within ``timeout`` seconds.
    """

    def __init__(self, grid: Grid, nodes: Mapping[str, int], timeout: float, on_progress: Progress | None = None,
                 poll: float = POLL_SECONDS) -> None:
        self.grid, self.nodes, self.timeout, self.poll = grid, dict(nodes), float(timeout), poll
        self.say = on_progress or (lambda _m: None)
        self.bytes_sent: dict[str, int] = {}
        self.bytes_received: dict[str, int] = {}

    def __call__(self, requests: Mapping[str, bytes]) -> dict[str, bytes | BaseException | None]:
        out: dict[str, bytes | BaseException | None] = {s: None for s in requests}
        group = uuid.uuid4().hex
        sites, messages = [], []
        for site, req in requests.items():
            if site not in self.nodes:
                out[site] = SiteError(site, f"site {site} is not connected")
                continue
            sites.append(site)
            messages.append(Message(RecordDict({RECORD: ConfigRecord({REQUEST_KEY: req})}), dst_node_id=self.nodes[site],
                                    message_type=MessageType.QUERY, ttl=self.timeout, group_id=group))
            self.bytes_sent[site] = self.bytes_sent.get(site, 0) + len(req)
        ids = list(self.grid.push_messages(messages))
        pending: dict[str, str] = {}
        for site, mid in zip(sites, ids, strict=True):
            if mid:
                pending[mid] = site
            else:
                out[site] = SiteError(site, f"the SuperLink did not accept the message for site {site}")
        self.say(f"query sent to {len(pending)} site(s): {', '.join(sorted(pending.values()))}")
        deadline = time.monotonic() + self.timeout
        total = len(pending)
        while pending and time.monotonic() < deadline:
            for reply in self.grid.pull_messages(list(pending)):
                site = pending.pop(reply.metadata.reply_to_message_id, None)
                if site is None:
                    continue
                out[site] = self._decode(site, reply)
                state = "answered" if isinstance(out[site], bytes) else f"failed ({out[site]})"
                self.say(f"{site} {state} ({total - len(pending)}/{total})")
            if pending:
                time.sleep(self.poll)
        for site in pending.values():
            self.say(f"{site} did not answer within {self.timeout:g} s")
        return out

    def _decode(self, site: str, reply: Message) -> bytes | BaseException:
        if reply.has_error():
            return SiteError(site, reply.error.reason or f"error code {reply.error.code}")
        try:
            rec = reply.content.config_records[RECORD]
            data, named = rec[REPLY_KEY], rec.get(SITE_KEY)
        except KeyError:
            return SiteError(site, f"site {site} sent a reply without fedsurv content")
        if named != site:
            return SiteError(site, f"the node registered as {site} answered as {named!r}")
        if not isinstance(data, bytes):
            return SiteError(site, f"site {site} sent a reply that is not bytes")
        self.bytes_received[site] = self.bytes_received.get(site, 0) + len(data)
        return data


def connected_sites(grid: Grid, wanted: tuple[str, ...], wait: float, say: Progress) -> dict[str, int]:
    """Site name -> node id, by the name each SuperNode's key was registered under.

    Waits up to ``wait`` seconds for every wanted site to be online; returns those that are.
    """
    deadline = time.monotonic() + wait
    while True:
        named: dict[str, list[int]] = {}
        for info in grid.get_nodes():
            if info.name:
                named.setdefault(info.name, []).append(info.node_id)
        dupes = sorted(n for n, ids in named.items() if len(ids) > 1)
        if dupes:
            raise RuntimeError(f"more than one SuperNode is registered as {', '.join(dupes)}")
        found = {n: ids[0] for n, ids in named.items() if not wanted or n in wanted}
        if wanted and set(wanted) <= set(found):
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    missing = sorted(set(wanted) - set(found))
    if missing:
        say(f"not connected after {wait:g} s: {', '.join(missing)}")
    say(f"connected: {', '.join(sorted(found)) or 'none'}")
    return found


def run_job(grid: Grid, job: Job, run_id: int) -> dict[str, Any]:
    """Run one plan through the grid; write ``outcome.json``; return the outcome."""
    progress = job.job_dir / "progress.jsonl"

    def say(msg: str) -> None:
        with open(progress, "a") as f:
            f.write(json.dumps({"t": round(time.time(), 3), "msg": msg}) + "\n")
            f.flush()

    started = time.time()
    outcome: dict[str, Any] = {"flower_run_id": run_id, "ok": False}
    try:
        from coordinator.plan_run import run_plan
        from protocol.plan import load_plan, plan_from_dict
        from protocol.roster import Roster
        from site_node.keystore import load_party, read_passphrase_file

        # Sites see only the plan's canonical JSON. Read back the same way, the coordinator reads the
        # tallies exactly as the sites laid them out (protocol/plan.py's canonical form does not keep
        # the order of a date endpoint's causes, which decides the cause codes).
        plan = plan_from_dict(json.loads(load_plan(str(job.plan)).canonical_json()))
        roster = Roster.from_toml(job.roster.read_text())
        passphrase = (read_passphrase_file(job.passphrase_file) if job.passphrase_file
                      else os.environ.get(job.passphrase_env or "") or None)
        keys = load_party(job.coordinator_keys, passphrase=passphrase)
        wanted = job.sites or tuple(roster.names)
        nodes = connected_sites(grid, wanted, job.wait_for_sites, say)
        sites = [s for s in wanted if s in nodes]
        missing = sorted(set(wanted) - set(nodes))
        if len(sites) < job.min_sites and missing:
            raise RuntimeError(f"only {len(sites)} site(s) are connected but at least {job.min_sites} are needed; "
                               f"not connected: {', '.join(missing)}")
        transport = FlowerTransport(grid, nodes, plan.timeout_seconds, on_progress=say)
        results, result = run_plan(plan, transport, keys, roster, sites, min_sites=job.min_sites, on_progress=say)
        results["secure_aggregation"] = {"query_ids": list(result.query_ids), "notes": list(result.notes),
                                         "refusals": [{"site": s, "reason": r} for s, r in result.refusals]}
        if missing:
            results["secure_aggregation"]["notes"].append(f"not connected: {', '.join(missing)}")
        outcome.update(ok=True, results=results, sites=list(result.sites),
                       bytes_sent=transport.bytes_sent, bytes_received=transport.bytes_received)
    except Exception as e:  # noqa: BLE001 - the outcome file is how the coordinator learns of it
        outcome.update(ok=False, error=str(e) or type(e).__name__, error_type=type(e).__name__)
        say(f"failed: {outcome['error']}")
    outcome["seconds"] = round(time.time() - started, 3)
    write_json_atomic(job.job_dir / "outcome.json", outcome)
    return outcome


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    job_path = str(context.run_config.get("job", ""))
    if not job_path:
        raise ValueError("run config 'job' (path of the job file) is required")
    run_job(grid, Job.load(Path(job_path)), context.run_id)
