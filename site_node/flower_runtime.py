"""The site's own long-running process that takes every task of its Flower SuperNode.

The SuperNode runs with ``--isolation process``: it launches nothing and only queues the tasks
the SuperLink sends. This loop claims them through the SuperNode's Runtime API (authenticated
with a secret shared only with its SuperNode), and for each task:

1. pulls the task input (context, run, the app bundle as bytes, and the query message);
2. hashes the bundle and answers only if the hash is one the site pinned (and agrees with the
   hash the task and the run state): the bundle is never unpacked, installed or imported;
   the answer always comes from the fedsurv code installed at the site;
3. always pushes a reply: the site's answer, or an error naming the site and the reason
   (a task finished without a reply hangs the SuperNode), and records refusals in the audit log.

Flower's own heartbeat helper signals its process to stop when a task ends, which would kill
this long-running loop, so the task heartbeat here is our own thread.

Relies on ``flwr.supernode.runtime.run_clientapp`` helpers of flwr 1.42.0 (pinned);
tests/test_flower_integration.py fails if they move.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app.error import Error
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest, SendTaskHeartbeatRequest  # pylint: disable=E0611
from flwr.supercore.constant import TaskType
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

log = logging.getLogger("fedsurv.site")

RECORD = "fedsurv"          # the one ConfigRecord a fedsurv message carries
REQUEST_KEY = "request"     # signed query bytes, coordinator -> site
REPLY_KEY = "reply"         # encoded reply bytes, site -> coordinator
SITE_KEY = "site-name"      # the site's own name, reported back with every reply
ACQUIRE_METHOD = "/flwr.proto.Runtime/AcquireTask"
HEARTBEAT_SECONDS = 10.0    # Flower fails a started task after 60 s without one

Answer = Callable[[bytes], bytes]
Audit = Callable[[str, dict], None]


@dataclass(frozen=True)
class SiteConfig:
    """A site's ``site.toml``: everything its operator installed; paths relative to the file."""

    name: str
    data: Path
    keys: Path
    roster: Path
    audit_log: Path
    mapping: Path | None
    policy: Path | None
    approvals_dir: Path | None
    state_dir: Path
    superlink: str
    root_certificates: Path | None
    node_key: Path
    runtime_port: int
    allowed_fab_hashes: tuple[str, ...]
    poll_interval: float = 0.1
    passphrase_env: str | None = None
    passphrase_file: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def runtime_address(self) -> str:
        return f"127.0.0.1:{self.runtime_port}"

    @property
    def secret_file(self) -> Path:
        return self.state_dir / "runtime.secret"


def load_site_config(path: Path | str) -> SiteConfig:
    """Read ``site.toml``; errors name the missing key."""
    path = Path(path)
    raw = tomllib.loads(path.read_text())
    base = path.parent.resolve()

    def req(table: str, key: str) -> object:
        try:
            return raw[table][key]
        except KeyError:
            raise ValueError(f"{path}: [{table}] {key} is required") from None

    def p(value: object | None) -> Path | None:
        if value in (None, ""):
            return None
        q = Path(str(value)).expanduser()
        return q if q.is_absolute() else base / q

    site, flower = raw.get("site", {}), raw.get("flower", {})
    hashes = tuple(str(h).lower() for h in flower.get("allowed_fab_hashes", ()))
    name = str(req("site", "name"))
    return SiteConfig(
        name=name,
        data=p(req("site", "data")),  # type: ignore[arg-type]
        keys=p(req("site", "keys")),  # type: ignore[arg-type]
        roster=p(req("site", "roster")),  # type: ignore[arg-type]
        audit_log=p(site.get("audit_log", "audit.jsonl")),  # type: ignore[arg-type]
        mapping=p(site.get("mapping")),
        policy=p(site.get("policy")),
        approvals_dir=p(site.get("approvals_dir")),
        state_dir=p(site.get("state_dir", "state")),  # type: ignore[arg-type]
        superlink=str(req("flower", "superlink")),
        root_certificates=p(flower.get("root_certificates")),
        node_key=p(req("flower", "node_key")),  # type: ignore[arg-type]
        runtime_port=int(flower.get("runtime_port", 9094)),
        allowed_fab_hashes=hashes,
        poll_interval=float(flower.get("poll_interval", 0.1)),
        passphrase_env=site.get("passphrase_env"),
        passphrase_file=p(site.get("passphrase_file")),
        extra={k: v for k, v in raw.items() if k not in ("site", "flower")},
    )


class _Heartbeat:
    """Keeps a claimed task alive while the site works on it; never signals the process."""

    def __init__(self, client: RuntimeHttpClient, every: float = HEARTBEAT_SECONDS) -> None:
        self._client, self._every = client, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="task-heartbeat", daemon=True)

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
            except Exception:  # noqa: BLE001 - a missed beat is retried; the task outcome decides
                log.debug("task heartbeat failed", exc_info=True)


@dataclass(frozen=True)
class TaskOutcome:
    """What the loop did with one task (for logs and tests)."""

    task_id: int
    run_id: int
    fab_hash: str
    answered: bool
    reason: str = ""


class SiteRuntime:
    """Claims and answers the tasks of one SuperNode with the site's installed code."""

    def __init__(self, site_name: str, runtime_address: str, secret: bytes, allowed_fab_hashes: tuple[str, ...],
                 answer: Answer, audit: Audit | None = None, poll_interval: float = 0.1) -> None:
        self.site_name = site_name
        self.runtime_address = runtime_address
        self.allowed = frozenset(h.lower() for h in allowed_fab_hashes)
        self.answer = answer
        self.audit = audit
        self.poll_interval = poll_interval
        self._secret = secret
        self.stopping = threading.Event()
        self.outcomes: list[TaskOutcome] = []

    def _client(self, token: str | None) -> RuntimeHttpClient:
        interceptors: list = [RuntimeVersionHttpInterceptor(component_name="flwr-clientapp")]
        if token is None:
            interceptors.append(SuperExecAuthHttpInterceptor(master_secret=self._secret,
                                                             protected_methods=frozenset({ACQUIRE_METHOD})))
        else:
            interceptors.append(RuntimeTokenHttpInterceptor(token))
        retry = make_simple_http_retry_invoker()
        # The loop polls anyway; Flower's default backs off for up to minutes while the SuperNode restarts.
        retry.max_tries = 1 if token is None else 5
        return RuntimeHttpClient.from_server_address(server_address=self.runtime_address, insecure=True,
                                                     root_certificates=None, interceptors=interceptors,
                                                     retry_invoker=retry)

    def serve_forever(self) -> None:
        """Poll for tasks until ``stopping`` is set; a SuperNode that is not up yet is waited for."""
        acquirer = self._client(None)
        try:
            while not self.stopping.is_set():
                try:
                    res = acquirer.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value]))
                except Exception as e:  # noqa: BLE001 - SuperNode restarting or not up yet
                    log.debug("acquire-task failed: %s", e)
                    self.stopping.wait(1.0)
                    continue
                if res.HasField("task") and res.token:
                    self.handle(res.token, res.task.task_id, res.task.run_id, res.task.fab_hash)
                else:
                    self.stopping.wait(self.poll_interval)
        finally:
            acquirer.close()

    def handle(self, token: str, task_id: int, run_id: int, task_fab_hash: str) -> TaskOutcome:
        client = self._client(token)
        context = None
        try:
            with _Heartbeat(client):
                message, context, run, fab = pull_task_input(client)
                digest = hashlib.sha256(fab.content).hexdigest()
                claimed = {h.lower() for h in (task_fab_hash, run.fab_hash, fab.hash_str) if h}
                refusal = self._bundle_refusal(digest, claimed)
                if refusal is None and message.metadata.message_type != "query":
                    refusal = f"message type {message.metadata.message_type!r} is not a fedsurv query"
                if refusal is None:
                    reply, reason = self._answer(message)
                else:
                    self._audit_refusal(run_id, digest, refusal)
                    reply, reason = self._error(message, refusal, ErrorCode.CLIENT_APP_RAISED_EXCEPTION), refusal
                push_message(client, reply, context)
                answered = refusal is None and not reply.has_error()
                push_task_output(client, context, SubStatus.COMPLETED if answered else SubStatus.FAILED, reason)
                outcome = TaskOutcome(task_id, run_id, digest, answered, reason)
        except Exception as e:  # noqa: BLE001 - the loop must survive one bad task
            log.error("task %s of run %s failed: %s", task_id, run_id, e)
            push_task_output(client, context, SubStatus.FAILED, f"site {self.site_name}: {type(e).__name__}")
            outcome = TaskOutcome(task_id, run_id, "", False, f"{type(e).__name__}: {e}")
        finally:
            client.close()
        self.outcomes.append(outcome)
        log.info("task %s run %s: %s %s", task_id, run_id, "answered" if outcome.answered else "refused",
                 outcome.reason)
        return outcome

    def _bundle_refusal(self, digest: str, claimed: set[str]) -> str | None:
        if digest not in self.allowed:
            return (f"site {self.site_name} refuses app bundle sha256:{digest}: "
                    "it is not a bundle this site's configuration pins")
        if claimed - {digest}:
            return f"site {self.site_name} refuses app bundle sha256:{digest}: the run states a different hash"
        return None

    def _answer(self, message: Message) -> tuple[Message, str]:
        try:
            request = message.content.config_records[RECORD][REQUEST_KEY]
            if not isinstance(request, bytes):
                raise TypeError("request is not bytes")
        except (KeyError, TypeError):
            reason = f"site {self.site_name}: the message holds no fedsurv request"
            return self._error(message, reason, ErrorCode.CLIENT_APP_RAISED_EXCEPTION), reason
        try:
            reply_bytes = self.answer(request)
        except Exception as e:  # noqa: BLE001 - reported by class only: messages may quote data values
            reason = f"site {self.site_name} could not answer: {safe_reason(e)}"
            log.error("answer failed", exc_info=True)
            return self._error(message, reason, ErrorCode.CLIENT_APP_RAISED_EXCEPTION), reason
        content = RecordDict({RECORD: ConfigRecord({REPLY_KEY: reply_bytes, SITE_KEY: self.site_name})})
        return Message(content, reply_to=message), ""

    @staticmethod
    def _error(message: Message, reason: str, code: int) -> Message:
        return Message(Error(code=code, reason=reason), reply_to=message)

    def _audit_refusal(self, run_id: int, digest: str, reason: str) -> None:
        if self.audit is None:
            return
        try:
            self.audit("app-bundle-refused", {"flower_run_id": run_id, "fab_sha256": digest, "reason": reason})
        except Exception:  # noqa: BLE001 - the error reply carries no data; without it the SuperNode hangs
            log.error("could not record the refused bundle %s in the audit log", digest, exc_info=True)


def safe_reason(e: BaseException) -> str:
    """An error as the coordinator may read it: fedsurv's own errors (written to name columns and
    rules, never values) in full, anything else by its class only, since a parser's message can
    quote a cell of the data."""
    try:
        from protocol.errors import FedsurvError
    except ImportError:  # pragma: no cover
        FedsurvError = ()  # type: ignore[assignment]
    if isinstance(e, FedsurvError):
        return f"{type(e).__name__}: {e}"
    return f"{type(e).__name__} (details stay in the site's log)"


def read_secret(path: Path) -> bytes:
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} must be readable by its owner only (chmod 600)")
    return path.read_bytes()


def ensure_secret(path: Path) -> bytes:
    """The Runtime API secret shared by the SuperNode and this loop (made on first start)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32).hex().encode())
    return read_secret(path)


def wait_for_runtime_api(address: str, timeout: float = 30.0) -> None:
    import socket

    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the SuperNode's Runtime API at {address} did not come up in {timeout:.0f} s")


def key_passphrase(file: Path | None, env: str | None) -> bytes | None:
    """The private keys' passphrase: from a file (first line) or an environment variable, if set."""
    from site_node.keystore import read_passphrase_file

    if file is not None:
        return read_passphrase_file(file)
    value = os.environ.get(env) if env else None
    return value.encode("utf-8") if value else None


def build_answer(cfg: SiteConfig) -> tuple[Answer, Audit]:
    """The site's answer function and audit hook, from its installed fedsurv and its own files."""
    from protocol.roster import Roster
    from site_node.keystore import load_party
    from site_node.mapping import load_mapping
    from site_node.policy import load_policy
    from site_node.prepare import prepare_site_data
    from site_node.responder import SiteNode

    keys = load_party(cfg.keys, passphrase=key_passphrase(cfg.passphrase_file, cfg.passphrase_env))
    roster = Roster.from_toml(cfg.roster.read_text(), where=str(cfg.roster))
    policy = load_policy(cfg.policy) if cfg.policy else None
    mapping = load_mapping(cfg.mapping) if cfg.mapping else None
    node = SiteNode(cfg.name, load_data=lambda plan: prepare_site_data(plan, cfg.data, mapping), keys=keys,
                    roster=roster, policy=policy, audit_path=cfg.audit_log, approvals_dir=cfg.approvals_dir)

    def record(kind: str, details: dict) -> None:
        # The node's own log object: one writer keeps the hash chain whole.
        node.audit.append({"event": kind, "site": cfg.name, "decision": "refused",
                           "reasons": [details.get("reason", kind)], **details})

    return node.answer, record
