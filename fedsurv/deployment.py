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
