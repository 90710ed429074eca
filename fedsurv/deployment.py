"""A real Flower deployment of a consortium on this machine, and the pieces a real one needs.

Certificates (a CA and the SuperLink's server certificate), SuperNode authentication keys
(ECDSA P-384, OpenSSH format), the SuperLink and one site process per site (each runs its own
SuperNode in process isolation plus its fedsurv task loop), all on 127.0.0.1 with free ports.
Every process is started in its own session and stopped, whatever happens, by
``LocalDeployment.close`` (a context manager, plus SIGTERM/SIGHUP turned into an exception).

Flower's telemetry, update checks and runtime dependency installation are off in every process
started here: no connection leaves a site except to the consortium's SuperLink.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Progress = Callable[[str], None]

# Flower phones home and self-updates dependencies unless told not to; a hospital's firewall
# should never have to catch that.
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    # The SuperLink launches the ServerApp when its executor polls; Flower's default is 1 s.
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",
}
CONNECTION = "fedsurv"
LOOPBACK = "127.0.0.1"


def flower_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every Flower process fedsurv starts."""
    env = {**os.environ, **FLOWER_ENV, **(extra or {})}
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The SuperLink and SuperNode start Flower's helper programs by name.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def venv_bin(name: str) -> str:
    """A console script installed beside this Python (flwr, flower-superlink, ...)."""
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else (shutil.which(name) or name)


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# Certificates and keys


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def make_ca(out_dir: Path, name: str = "fedsurv consortium CA", days: int = 825) -> tuple[Path, Path]:
    """A self-signed CA (ECDSA P-384) that signs the SuperLink's certificate: ca.crt, ca.key."""
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA384()))
    out_dir.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = out_dir / "ca.crt", out_dir / "ca.key"
    ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(ca_key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    return ca_cert, ca_key


def make_server_cert(out_dir: Path, ca_cert: Path, ca_key: Path, hosts: Sequence[str] = (LOOPBACK, "localhost"),
                     days: int = 397) -> tuple[Path, Path]:
    """The SuperLink's TLS certificate for ``hosts`` (DNS names or IP addresses): server.pem, server.key."""
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP384R1())
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(signer, hashes.SHA384()))  # type: ignore[arg-type]
    out_dir.mkdir(parents=True, exist_ok=True)
    crt, pkey = out_dir / "server.pem", out_dir / "server.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(pkey, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return crt, pkey


def make_tls(out_dir: Path, hosts: Sequence[str] = (LOOPBACK, "localhost")) -> TlsFiles:
    ca_cert, ca_key = make_ca(out_dir)
    crt, key = make_server_cert(out_dir, ca_cert, ca_key, hosts)
    return TlsFiles(ca_cert, crt, key)


def make_node_key(path: Path, comment: str = "") -> Path:
    """A SuperNode authentication key: ECDSA P-384 in OpenSSH format, like ``ssh-keygen -t ecdsa -b 384``.

    Writes the private key to ``path`` (0600) and the public key to ``path.pub``; returns the latter,
    the file the coordinator registers with ``flwr supernode register``.
    """
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pub_path = path.with_name(path.name + ".pub")
    pub_path.write_bytes(pub + (f" {comment}".encode() if comment else b"") + b"\n")
    return pub_path


def make_secret(path: Path) -> Path:
    """A random shared secret (0600) between a SuperNode and the one process allowed to take its tasks."""
    _write_private(path, os.urandom(32).hex().encode())
    return path


# ---------------------------------------------------------------------------------------------
# Flower CLI configuration


def write_flwr_home(flwr_home: Path, address: str, ca_cert: Path | None) -> Path:
    """``$FLWR_HOME/config.toml`` with one SuperLink connection named ``fedsurv``."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]", f'address = "{address}"']
    lines.append(f'root-certificates = "{ca_cert}"' if ca_cert else "insecure = true")
    path = flwr_home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def flwr_cli(args: Sequence[str], flwr_home: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Run a ``flwr`` command with ``--format json`` and return its JSON answer (errors raise)."""
    proc = subprocess.run([venv_bin("flwr"), *args, "--format", "json"], capture_output=True, text=True,
                          timeout=timeout, env=flower_env({"FLWR_HOME": str(flwr_home)}), stdin=subprocess.DEVNULL)
    out = proc.stdout.strip()
    try:
        answer = json.loads(out[out.index("{"):]) if "{" in out else {}
    except ValueError:
        answer = {}
    if proc.returncode != 0 or not answer.get("success", False):
        detail = answer.get("error-message") or (proc.stderr.strip().splitlines() or [out or "no output"])[-1]
        raise DeploymentError(f"flwr {args[0]} {args[1] if len(args) > 1 else ''} failed: {detail}")
    return answer


class DeploymentError(RuntimeError):
    """A Flower process could not be started, or stopped unexpectedly."""


def register_node(flwr_home: Path, public_key: Path, name: str) -> int:
    """Register a site's SuperNode key with the SuperLink under the site's name; returns the node id."""
    answer = flwr_cli(["supernode", "register", str(public_key), CONNECTION, "--name", name], flwr_home)
    return int(answer["node-id"])


def register_nodes(flwr_home: Path, address: str, ca_cert: Path, keys: Mapping[str, Path]) -> dict[str, int]:
    """Register many SuperNode keys at once: the Control API request ``flwr supernode register``
    sends, made from this process (one client instead of one CLI start-up per site)."""
    os.environ.setdefault("FLWR_HOME", str(flwr_home))
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.cli.typing import SuperLinkConnection
    from flwr.cli.utils import init_http_client_from_connection
    from flwr.proto.control_pb2 import RegisterNodeRequest  # pylint: disable=E0611

    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # flwr prints which SuperLink it uses
        client = init_http_client_from_connection(SuperLinkConnection(CONNECTION, address, str(ca_cert)))
    try:
        out = {}
        for name, pub in keys.items():
            res = client.RegisterNode(RegisterNodeRequest(public_key=try_load_public_key(pub), name=name))
            if not res.node_id:
                raise DeploymentError(f"the SuperLink did not register {name}")
            out[name] = int(res.node_id)
        return out
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass
class Managed:
    name: str
    proc: subprocess.Popen
    log: Path


@dataclass
class ProcessGroup:
    """Processes started in their own session, so that stopping one stops all its children."""

    started: dict[str, Managed] = field(default_factory=dict)

    def start(self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> Managed:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=dict(env or flower_env()), cwd=cwd, start_new_session=True)
        m = Managed(name, proc, log)
        self.started[name] = m
        return m

    def alive(self, name: str) -> bool:
        m = self.started.get(name)
        return m is not None and m.proc.poll() is None

    def stop(self, name: str, grace: float = 5.0, kill: bool = False) -> None:
        m = self.started.pop(name, None)
        if m is None:
            return
        _stop_session(m.proc, grace, kill)

    def stop_all(self, grace: float = 5.0) -> None:
        # Signal everything first, then wait: teardown takes one grace period, not one per process.
        items = list(self.started.values())
        self.started.clear()
        _stop_many([m.proc for m in items], grace, kill=False)


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Flower detaches its helpers into new sessions)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _signal(pids: Sequence[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _stop_many(procs: Sequence[subprocess.Popen], grace: float, kill: bool) -> None:
    # Collect the whole tree before signalling: once a parent dies its children are re-parented.
    tree = {p.pid: descendants(p.pid) for p in procs}
    for p in procs:
        _signal([p.pid, *tree[p.pid]], signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        _signal([p.pid, *tree[p.pid], *descendants(p.pid)], signal.SIGKILL)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    # Give the killed grandchildren a moment to be reaped by init before anyone counts them.
    left = [q for qs in tree.values() for q in qs if Path(f"/proc/{q}").exists()]
    deadline = time.monotonic() + 3.0
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [q for q in left if _is_running(q)]


def _is_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _stop_session(proc: subprocess.Popen, grace: float, kill: bool) -> None:
    _stop_many([proc], grace, kill)


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind like Ctrl-C so every process gets stopped."""


@contextmanager
def teardown_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into an exception in the main thread (SIGINT already is one)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, _frame: object) -> None:
        raise Terminated(f"signal {signum}")

    old = {s: signal.signal(s, _raise) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def https_ok(url: str, ca_cert: Path | None, timeout: float = 1.0) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca_cert)) if ca_cert else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:  # noqa: S310 - our own loopback URL
            return r.status == 200
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1,
               alive: Callable[[], bool] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            raise DeploymentError(f"{what}: the process stopped")
        time.sleep(interval)
    raise DeploymentError(f"{what}: not ready after {timeout:.0f} s")


# ---------------------------------------------------------------------------------------------
# The SuperLink


def superlink_argv(host: str, port: int, tls: TlsFiles, database: Path) -> list[str]:
    """The coordinator's SuperLink: TLS, only registered SuperNodes, state kept across restarts."""
    return [venv_bin("flower-superlink"), "--host", host, "--port", str(port),
            "--ssl-ca-certfile", str(tls.ca_cert), "--ssl-certfile", str(tls.server_cert),
            "--ssl-keyfile", str(tls.server_key), "--enable-supernode-auth",
            "--disable-runtime-dependency-installation", "--database", str(database)]


# ---------------------------------------------------------------------------------------------
# Submitting a plan and following it


class FlowerRunError(RuntimeError):
    """The run failed; the message is the coordinator's explanation (it names sites, never data)."""


def submit_run(flwr_home: Path, app: Path, job_path: Path) -> int:
    """Start the ServerApp on the SuperLink (``flwr run``) with the job file; returns the run id."""
    answer = flwr_cli(["run", str(app), CONNECTION, "--run-config", f'job="{job_path}"'], flwr_home)
    return int(answer["run-id"])


def follow_run(job_dir: Path, run_id: int, superlink_ok: Callable[[], bool], deadline_s: float,
               progress: Progress | None = None) -> dict[str, Any]:
    """Relay the ServerApp's progress lines until its outcome file appears.

    Raises ``FlowerRunError`` when the SuperLink stops answering (a restart loses the run) or
    when no outcome arrives before the deadline; nothing is written in either case.
    """
    say = progress or (lambda _m: None)
    outcome_path, progress_path = job_dir / "outcome.json", job_dir / "progress.jsonl"
    seen, down_since = 0, None
    deadline = time.monotonic() + deadline_s
    last_check = 0.0
    while True:
        if progress_path.exists():
            lines = progress_path.read_text().splitlines()
            for line in lines[seen:]:
                try:
                    say(json.loads(line)["msg"])
                except (ValueError, KeyError):
                    break
                seen += 1
        if outcome_path.exists():
            outcome = json.loads(outcome_path.read_text())
            if not outcome.get("ok") and not superlink_ok():
                raise FlowerRunError(f"the SuperLink stopped answering during run {run_id} "
                                     f"({outcome.get('error', 'no detail')}): the analysis was lost and nothing "
                                     "was written; start it again once the SuperLink is back")
            return outcome
        now = time.monotonic()
        if now - last_check >= 1.0:
            last_check = now
            if superlink_ok():
                down_since = None
            elif down_since is None:
                down_since = now
            elif now - down_since >= 2.0:
                raise FlowerRunError(f"the SuperLink stopped answering during run {run_id}: the analysis was "
                                     "lost and nothing was written; start it again once the SuperLink is back")
        if now > deadline:
            raise FlowerRunError(f"run {run_id} gave no outcome within {deadline_s:.0f} s; nothing was written "
                                 f"(ServerApp log: the SuperLink's log)")
        time.sleep(0.1)


def run_deadline(n_sites: int, min_sites: int, timeout: float, wait_for_sites: float) -> float:
    """Long enough for every re-run a dropped site can cause, plus start-up."""
    rounds = max(1, n_sites - min_sites + 1)
    return wait_for_sites + rounds * (timeout + 10.0) + 60.0


# ---------------------------------------------------------------------------------------------
# A whole consortium on this machine


@dataclass(frozen=True)
class LocalSite:
    """One site of a local deployment: its files, and how it behaves (for fault drills)."""

    name: str
    data: Path
    mapping: Path | None = None
    policy: Path | None = None
    silent: bool = False                       # a SuperNode whose tasks nobody takes
    default_mode: bool = False                 # Flower's default: the SuperNode runs the bundle's ClientApp
    allowed_fab_hashes: tuple[str, ...] | None = None  # default: the fedsurv app's hash


@dataclass
class LocalDeployment:
    """SuperLink + one SuperNode and fedsurv site process per site, TLS and node auth on.

    Use as a context manager: every process started is stopped on exit, on error and on
    Ctrl-C/SIGTERM. ``run(plan)`` submits one plan and returns the coordinator's outcome.
    """

    root: Path
    sites: Sequence[LocalSite]
    progress: Progress | None = None
    app: Path | None = None
    poll_interval: float = 0.2
    fleet_proxy: bool = True                   # sites reach the SuperLink through a Fleet-only proxy
    register_with_cli: bool = False            # `flwr supernode register` per site (slower, same request)
    procs: ProcessGroup = field(default_factory=ProcessGroup)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.say = self.progress or (lambda _m: None)
        self.coord_dir = self.root / "coordinator"
        self.flwr_home = self.coord_dir / "flwr-home"
        self.port = 0
        self.proxy: FleetProxy | None = None
        self.last_job_dir: Path | None = None
        self._jobs = 0
        self._signals: Any = None

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> "LocalDeployment":
        self._signals = teardown_on_signals()
        self._signals.__enter__()
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.procs.stop_all()
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None
        if self._signals is not None:
            signals, self._signals = self._signals, None
            signals.__exit__(None, None, None)

    def start(self) -> None:
        from fedsurv.flower_app import app_dir, fab_hash
        from protocol.roster import consortium_for_run

        t0 = time.monotonic()
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError("site names must be distinct")
        self.app = self.app or app_dir()
        pinned = fab_hash(self.app)
        self.tls = make_tls(self.root / "tls")
        coordinator, site_keys, roster = consortium_for_run(names)
        self.roster_path = self.coord_dir / "roster.toml"
        self.coord_dir.mkdir(parents=True, exist_ok=True)
        self.roster_path.write_text(roster.to_toml())
        self.coord_keys = write_party(self.coord_dir / "keys", coordinator)
        self.port = free_port()
        self.start_superlink()
        write_flwr_home(self.flwr_home, f"{LOOPBACK}:{self.port}", self.tls.ca_cert)
        self.write_coordinator_config()
        self.timings["superlink"] = time.monotonic() - t0
        self.say(f"SuperLink up on {LOOPBACK}:{self.port} (TLS, SuperNode authentication on)")
        if self.fleet_proxy:
            self.proxy = FleetProxy(f"{LOOPBACK}:{self.port}", self.tls)
            self.say(f"sites connect through a Fleet-only proxy on {self.proxy.address}")

        from concurrent.futures import ThreadPoolExecutor

        pubs = {s.name: make_node_key(self.site_dir(s.name) / "node.key", comment=s.name) for s in self.sites}
        if self.register_with_cli:
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(lambda n: register_node(self.flwr_home, pubs[n], n), names))
        else:
            register_nodes(self.flwr_home, f"{LOOPBACK}:{self.port}", self.tls.ca_cert, pubs)
        self.timings["registered"] = time.monotonic() - t0
        self.say(f"registered {len(names)} SuperNode key(s): {', '.join(names)}")
        for s in self.sites:
            d = self.site_dir(s.name)
            write_party(d / "keys", site_keys[s.name])
            (d / "roster.toml").write_text(roster.to_toml())
            self.write_site_config(s, s.allowed_fab_hashes or (pinned,))
            self.start_site(s)
        self.timings["sites_started"] = time.monotonic() - t0
        self.say(f"started {len(names)} site(s), each a SuperNode in process isolation and its fedsurv loop")

    def write_coordinator_config(self) -> Path:
        """coordinator.toml for `fedsurv coordinator run --config` against this deployment."""
        q = json.dumps
        text = "\n".join([
            "[coordinator]", f"keys = {q(str(self.coord_keys))}", f"roster = {q(str(self.roster_path))}",
            f"state_dir = {q(str(self.coord_dir))}", "", "[superlink]", f'host = "{LOOPBACK}"', f"port = {self.port}",
            f"ca_cert = {q(str(self.tls.ca_cert))}", f"cert = {q(str(self.tls.server_cert))}",
            f"key = {q(str(self.tls.server_key))}", "",
            *[f"[sites.{q(s.name)}]\nnode_public_key = {q(str(self.site_dir(s.name) / 'node.key.pub'))}"
              for s in self.sites], ""])
        self.coordinator_config = self.coord_dir / "coordinator.toml"
        self.coordinator_config.write_text(text)
        return self.coordinator_config

    def site_dir(self, name: str) -> Path:
        return self.root / "sites" / name

    def write_site_config(self, s: LocalSite, allowed: Sequence[str]) -> Path:
        d = self.site_dir(s.name)
        runtime_port = free_port()

        def q(p: Path | None) -> str:
            return json.dumps(str(p)) if p else '""'

        text = "\n".join([
            "[site]", f"name = {json.dumps(s.name)}", f"data = {q(Path(s.data).resolve())}",
            f"mapping = {q(Path(s.mapping).resolve() if s.mapping else None)}",
            f"policy = {q(Path(s.policy).resolve() if s.policy else None)}",
            'keys = "keys"', 'roster = "roster.toml"', 'audit_log = "audit.jsonl"', 'state_dir = "state"', "",
            "[flower]", f'superlink = "{self.site_facing_address}"', f"root_certificates = {q(self.tls.ca_cert)}",
            'node_key = "node.key"', f"runtime_port = {runtime_port}",
            "allowed_fab_hashes = [" + ", ".join(json.dumps(h) for h in allowed) + "]",
            f"poll_interval = {self.poll_interval}", ""])
        path = d / "site.toml"
        path.write_text(text)
        return path

    @property
    def site_facing_address(self) -> str:
        return self.proxy.address if self.proxy is not None else f"{LOOPBACK}:{self.port}"

    def start_superlink(self) -> None:
        env = flower_env({"FLWR_HOME": str(self.coord_dir / "superlink-home")})
        self.procs.start("superlink", superlink_argv(LOOPBACK, self.port, self.tls, self.coord_dir / "state.db"),
                         self.coord_dir / "superlink.log", env=env)
        wait_until(self.superlink_ok, 60, "SuperLink", alive=lambda: self.procs.alive("superlink"))

    def stop_superlink(self, kill: bool = True) -> None:
        self.procs.stop("superlink", kill=kill)

    def superlink_ok(self) -> bool:
        return https_ok(f"https://{LOOPBACK}:{self.port}/health", self.tls.ca_cert)

    def start_site(self, s: LocalSite) -> None:
        d = self.site_dir(s.name)
        if s.silent or s.default_mode:
            from site_node.flower_runtime import load_site_config
            from fedsurv.commands.site_service import supernode_argv

            cfg = load_site_config(d / "site.toml")
            make_secret(cfg.secret_file)
            argv = supernode_argv(cfg)
            if s.default_mode:
                # No process isolation: the SuperNode installs the bundle and runs its ClientApp
                # (site_node/flower_client.py), which finds the site's files through node config.
                i = argv.index("--isolation")
                del argv[i:i + 2]
                argv[argv.index("--node-config") + 1] = f'site-config="{d / "site.toml"}" site-name="{s.name}"'
            self.procs.start(f"site:{s.name}", argv, d / "site.log",
                             env=flower_env({"FLWR_HOME": str(d / "flwr-home")}))
            return
        argv = [sys.executable, "-m", "fedsurv.cli", "site", "start", "--config", str(d / "site.toml")]
        self.procs.start(f"site:{s.name}", argv, d / "site.log")

    def kill_site(self, name: str) -> None:
        """Kill a site's SuperNode and loop at once (SIGKILL), as a crash or a pulled cable would."""
        self.procs.stop(f"site:{name}", kill=True)

    # -- running a plan ------------------------------------------------------------------------

    def submit(self, plan: Path, sites: Sequence[str] | None = None, min_sites: int = 3,
               wait_for_sites: float = 30.0, app: Path | None = None) -> tuple[int, Path]:
        from coordinator.flower_server import Job

        self._jobs += 1
        job_dir = self.coord_dir / "jobs" / f"{self._jobs:03d}"
        job_dir.mkdir(parents=True, exist_ok=True)
        job = Job(plan=Path(plan).resolve(), coordinator_keys=self.coord_keys, roster=self.roster_path,
                  job_dir=job_dir, sites=tuple(sites or [s.name for s in self.sites]), min_sites=min_sites,
                  wait_for_sites=wait_for_sites)
        job.dump(job_dir / "job.json")
        self.last_job_dir = job_dir
        run_id = submit_run(self.flwr_home, app or self.app, job_dir / "job.json")  # type: ignore[arg-type]
        return run_id, job_dir

    def run(self, plan: Path, sites: Sequence[str] | None = None, min_sites: int = 3,
            wait_for_sites: float = 30.0) -> dict[str, Any]:
        """Run one plan; returns the outcome (``results`` when ``ok``); raises FlowerRunError otherwise."""
        from protocol.plan import load_plan

        timeout = load_plan(str(plan)).timeout_seconds
        n = len(sites) if sites else len(self.sites)
        run_id, job_dir = self.submit(plan, sites, min_sites, wait_for_sites)
        self.say(f"run {run_id} submitted to the SuperLink")
        outcome = follow_run(job_dir, run_id, self.superlink_ok, run_deadline(n, min_sites, timeout, wait_for_sites),
                             self.say)
        if not outcome.get("ok"):
            raise FlowerRunError(outcome.get("error", "the run failed"))
        return outcome


def write_party(directory: Path, keys: Any) -> Path:
    """Write a party's key files where ``site_node.keystore.load_party`` reads them."""
    from site_node.keystore import save_party

    save_party(directory, keys)
    return directory


# ---------------------------------------------------------------------------------------------
# What sites may reach: the Fleet API only

# Flower 1.42 serves Fleet (/v1/fleet/...), Control (/v1/control/..., which starts runs and
# registers node keys) and the ServerApp's Runtime API (/v1/runtime/...) on one port. Sites need
# the first only. deploy/nginx/fleet-only.conf implements this same rule for production.
FLEET_METHODS = ("register-node", "activate-node", "deactivate-node", "unregister-node", "send-node-heartbeat",
                 "pull-messages", "push-messages", "get-run", "get-fab", "push-object", "pull-object",
                 "confirm-message-received")


def fleet_only(method: str, path: str) -> bool:
    """True for the requests a site's SuperNode makes (POST /v1/fleet/<method>), False for all else."""
    route = path.split("?", 1)[0]
    prefix = "/v1/fleet/"
    return method == "POST" and route.startswith(prefix) and route[len(prefix):] in FLEET_METHODS


class FleetProxy:
    """A TLS-terminating reverse proxy that forwards only ``fleet_only`` requests to the SuperLink.

    The local stand-in for deploy/nginx/fleet-only.conf: SuperNodes connect through it, and
    anything else (``flwr run``, ``flwr supernode register``) gets 403 before reaching Flower.
    """

    def __init__(self, upstream: str, tls: TlsFiles, port: int | None = None) -> None:
        import http.server
        import threading

        self.upstream, self.port = upstream, port or free_port()
        upstream_ctx = ssl.create_default_context(cafile=str(tls.ca_cert))
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def _refuse(self) -> None:
                body = b"forbidden: only the Fleet API is served here\n"
                self.send_response(403)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                proxy.refused += 1

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if not fleet_only(self.command, self.path):
                    self._refuse()
                    return
                skip = {"host", "connection", "content-length", "transfer-encoding", "keep-alive"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                req = urllib.request.Request(f"https://{proxy.upstream}{self.path}", data=body, headers=headers,
                                             method=self.command)
                try:
                    with urllib.request.urlopen(req, context=upstream_ctx, timeout=60) as r:  # noqa: S310
                        status, rh, data = r.status, r.headers, r.read()
                except urllib.error.HTTPError as e:
                    status, rh, data = e.code, e.headers, e.read()
                except OSError:
                    status, rh, data = 502, {}, b"bad gateway\n"
                self.send_response(status)
                for k, v in (rh.items() if rh else []):
                    if k.lower() not in skip:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                proxy.forwarded += 1

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward

        import urllib.error  # noqa: F401 - used in the handler

        self.refused = self.forwarded = 0
        self.server = http.server.ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls.server_cert), str(tls.server_key))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="fleet-proxy", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------------
# Results, and the demo over Flower


def write_outcome(outcome: Mapping[str, Any], out_dir: Path, echo: Progress | None = None,
                  report: bool = True) -> dict[str, Any]:
    """Write a successful run's results.json (atomically) and report, as ``fedsurv run`` does."""
    from fedsurv.runner import stamp, write_results
    from fedsurv.summary import summarize

    say = echo or (lambda _m: None)
    results = stamp(dict(outcome["results"]))
    results["transport"] = {"kind": "flower", "flower_run_id": outcome.get("flower_run_id"),
                            "bytes_sent_by_site": outcome.get("bytes_received", {}),
                            "bytes_sent_to_site": outcome.get("bytes_sent", {})}
    path = write_results(results, out_dir)
    say(summarize(results))
    say(f"wrote {path}")
    if report:
        from coordinator.report_html import write_report

        say(f"wrote {write_report(results, out_dir)}")
    return results


def run_demo_over_flower(plan_path: Path, sites: Sequence[Any], out_dir: Path, progress: Progress | None = None,
                         echo: Progress | None = None, work_dir: Path | None = None) -> dict[str, Any]:
    """`fedsurv demo` over a real local deployment; returns the results written to OUT/results.json.

    ``sites`` are ``fedsurv.site_input.SiteInput`` (name, data, mapping, policy). Makes a CA and
    TLS certificates, SuperNode keys (registered with the SuperLink), fedsurv keys and roster;
    starts the SuperLink, a Fleet-only proxy and one site process per site on 127.0.0.1; runs the
    plan; stops every process (also on Ctrl-C or failure). Site audit logs end up in OUT/audit/,
    the deployment's files (certificates, keys, logs) in ``work_dir`` (default OUT/deployment).
    ``progress`` gets status lines (which sites have answered); ``echo`` (default: print) the
    summary and the paths written, as ``fedsurv run`` prints them.
    """
    say = progress or (lambda _m: None)
    out_dir = Path(out_dir)
    root = Path(work_dir) if work_dir else out_dir / "deployment"
    if root.exists():
        shutil.rmtree(root)
    local = [LocalSite(s.name, Path(s.data), getattr(s, "mapping", None), getattr(s, "policy", None)) for s in sites]
    t0 = time.monotonic()
    with LocalDeployment(root, local, progress=say) as dep:
        say(f"deployment up in {time.monotonic() - t0:.1f} s; running the plan")
        outcome = dep.run(Path(plan_path), min_sites=min(3, len(local)))
        audit_dir = out_dir / "audit"
        audit_dir.mkdir(parents=True, exist_ok=True)
        for s in local:
            log = dep.site_dir(s.name) / "audit.jsonl"
            if log.exists():
                shutil.copyfile(log, audit_dir / f"{s.name}.jsonl")
    say(f"all Flower processes stopped; {time.monotonic() - t0:.1f} s from cold start to result")
    return write_outcome(outcome, out_dir, echo or print)
