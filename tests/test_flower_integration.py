"""A real Flower deployment on loopback: SuperLink with TLS and SuperNode authentication, sites
behind a Fleet-only proxy, each site a SuperNode in process isolation plus its own fedsurv loop.

One deployment serves the whole module (start-up costs seconds); tests run in file order and
the destructive ones (killing a site, restarting the SuperLink) come last. Every process is
stopped at the end, pass or fail: the last test checks that none is left.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pytest

from fedsurv.demo_data import write_demo_consortium
from fedsurv.deployment import (CONNECTION, FLEET_METHODS, DeploymentError, FlowerRunError, LocalDeployment,
                                LocalSite, descendants, fleet_only, flwr_cli, follow_run, write_flwr_home)
from fedsurv.site_input import SiteInput
from site_node.audit import verify_log

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PLAN = ROOT / "fedsurv" / "examples" / "sarcoma.toml"
FOREIGN_APP = Path(__file__).parent / "flower_apps" / "foreign-app"
NGINX_CONF = ROOT / "deploy" / "nginx" / "fleet-only.conf"
TIMEOUT = 10.0                       # the test plan's timeout_seconds
GOOD = ("leiden", "milan", "prague", "vienna")
BAD_VALUE = "31.02.2019-Zz9"
REGRESSION_MARK = "# --- Regression models"         # a cell of the broken file that must never reach the coordinator


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("flower")
    files = write_demo_consortium(tmp / "data")
    plan = tmp / "plan.toml"
    text = EXAMPLE_PLAN.read_text().replace("timeout_seconds = 120", f"timeout_seconds = {TIMEOUT:g}")
    assert f"timeout_seconds = {TIMEOUT:g}" in text and REGRESSION_MARK in text
    # The study plan with its regression models (their Newton rounds) for the equality test;
    # without them for the rest, which test the transport, not the models.
    (tmp / "plan_full.toml").write_text(text)
    plan.write_text(text.split(REGRESSION_MARK)[0])
    # A site whose export is damaged: a date column holds text no parser reads as a date.
    broken_data = tmp / "data" / "broken.csv"
    lines = files["milan"][0].read_text().splitlines()
    header = lines[0].split(",")
    col = header.index("death_date")
    damaged = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        cells[col] = BAD_VALUE
        damaged.append(",".join(cells))
    broken_data.write_text("\n".join(damaged) + "\n")
    sites = [LocalSite(n, files[n][0], files[n][1]) for n in GOOD]
    sites += [LocalSite("broken", broken_data), LocalSite("silent", files["warsaw"][0], silent=True),
              LocalSite("plain", *files["munich"], default_mode=True)]
    inputs = {n: SiteInput(n, files[n][0], files[n][1]) for n in GOOD}
    inputs["broken"] = SiteInput("broken", broken_data)
    inputs["plain"] = SiteInput("plain", *files["munich"])
    log: list[str] = []
    # The site loops look at their local queue twice a second: the SuperNode's own 3 s poll of the
    # SuperLink dominates anyway, and six loops polling faster would crowd a 2-core CI runner.
    dep = LocalDeployment(tmp / "deployment", sites, progress=log.append, poll_interval=0.5)
    with dep:
        yield dep, plan, inputs, log, tmp
    assert not dep.procs.started


def in_process(plan: Path, inputs: dict[str, SiteInput], names: list[str]) -> dict:
    from fedsurv.runner import run_in_process
    from protocol.plan import load_plan

    results, _ = run_in_process(load_plan(str(plan)), [inputs[n] for n in names])
    return results


def comparable(results: dict) -> dict:
    """Everything an analyst reads, as results.json holds it (JSON floats round-trip exactly);
    query ids and run bookkeeping differ by design."""
    kept = {k: v for k, v in results.items()
            if k not in ("secure_aggregation", "site_left_out", "generated_at", "fedsurv_version", "transport")}
    if "regression_rounds" in kept:
        kept["regression_rounds"] = {k: v for k, v in kept["regression_rounds"].items() if k != "query_ids"}
    return json.loads(json.dumps(kept, allow_nan=False))


def progress_until(job_dir: Path, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    path = job_dir / "progress.jsonl"
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"no {needle!r} in the run's progress after {timeout} s")


# ----------------------------------------------------------------------------- pinned internals


def test_flower_internals_this_code_relies_on_are_where_they_were():
    import inspect

    import flwr
    from flwr.supercore.interceptors import SuperExecAuthHttpInterceptor
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime import run_clientapp

    assert flwr.__version__ == "1.42.0"
    assert list(inspect.signature(run_clientapp.pull_task_input).parameters) == ["client"]
    assert list(inspect.signature(run_clientapp.push_message).parameters) == ["client", "message", "context"]
    assert list(inspect.signature(run_clientapp.push_task_output).parameters) == [
        "client", "context", "sub_status", "details"]
    for method in ("AcquireTask", "SendTaskHeartbeat", "PullTaskInput", "PushTaskOutput", "PushMessages"):
        assert hasattr(RuntimeHttpClient, method)
    assert "protected_methods" in inspect.signature(SuperExecAuthHttpInterceptor).parameters


def test_fleet_filter_lets_only_fleet_calls_through():
    assert fleet_only("POST", "/v1/fleet/pull-messages")
    assert fleet_only("POST", "/v1/fleet/push-messages?x=1")
    assert not fleet_only("GET", "/v1/fleet/pull-messages")
    assert not fleet_only("POST", "/v1/control/start-run")
    assert not fleet_only("POST", "/v1/control/register-node")
    assert not fleet_only("POST", "/v1/runtime/acquire-task")
    assert not fleet_only("POST", "/v1/fleet/../control/start-run")
    assert not fleet_only("GET", "/health")
    # The nginx configuration shipped for production allows exactly the same methods.
    conf = NGINX_CONF.read_text()
    allowed = re.search(r"location ~ \^/v1/fleet/\(([^)]*)\)\$", conf)
    assert allowed is not None
    assert tuple(allowed.group(1).split("|")) == FLEET_METHODS
    assert re.search(r"location / \{\s*return 403;", conf)
    assert "limit_except POST { deny all; }" in conf


def test_example_site_config_pins_the_bundle_this_fedsurv_builds():
    from fedsurv.flower_app import build_fab, fab_hash
    from site_node.flower_runtime import load_site_config

    cfg = load_site_config(ROOT / "deploy" / "site.toml")
    assert cfg.allowed_fab_hashes == (fab_hash(),)
    assert hashlib.sha256(build_fab()).hexdigest() == fab_hash()  # deterministic: a site can rebuild it
    assert cfg.superlink.endswith(":443") and cfg.root_certificates is not None


def test_site_config_errors_name_the_missing_key_and_paths_resolve_beside_the_file(tmp_path):
    from site_node.flower_runtime import load_site_config

    cfg = tmp_path / "site.toml"
    cfg.write_text('[site]\nname = "leiden"\ndata = "x.csv"\nkeys = "k"\nroster = "r.toml"\n\n[flower]\n'
                   'superlink = "h:443"\nnode_key = "n.key"\nallowed_fab_hashes = ["ABC"]\n')
    loaded = load_site_config(cfg)
    assert loaded.data == tmp_path / "x.csv" and loaded.audit_log == tmp_path / "audit.jsonl"
    assert loaded.allowed_fab_hashes == ("abc",) and loaded.runtime_address == "127.0.0.1:9094"
    cfg.write_text('[site]\nname = "leiden"\n')
    with pytest.raises(ValueError, match=r"\[site\] data is required"):
        load_site_config(cfg)


def test_compose_files_publish_no_site_port_and_only_the_proxy_at_the_coordinator():
    import yaml

    site = yaml.safe_load((ROOT / "deploy" / "docker-compose.site.yml").read_text())["services"]
    coord = yaml.safe_load((ROOT / "deploy" / "docker-compose.coordinator.yml").read_text())["services"]
    assert all("ports" not in svc for svc in site.values())
    assert "ports" not in coord["superlink"] and coord["proxy"]["ports"] == ["443:443"]
    for svc in (site["site"], coord["superlink"]):
        assert svc["environment"] == {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def test_make_certs_script_makes_a_verifiable_chain_and_an_openssh_node_key(tmp_path):
    import subprocess

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

    script = ROOT / "deploy" / "make-certs-and-keys.sh"
    for args in (["ca", str(tmp_path)], ["server", str(tmp_path), "superlink", "superlink", "127.0.0.1"],
                 ["node", str(tmp_path / "leiden"), "leiden"]):
        subprocess.run(["bash", str(script), *args], check=True, capture_output=True)
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((tmp_path / "superlink.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["superlink"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    key = load_ssh_private_key((tmp_path / "leiden" / "node.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert isinstance(load_ssh_public_key((tmp_path / "leiden" / "node.key.pub").read_bytes()), ec.EllipticCurvePublicKey)
    assert (tmp_path / "ca.key").stat().st_mode & 0o077 == 0 and (tmp_path / "leiden" / "node.key").stat().st_mode & 0o077 == 0


# ----------------------------------------------------------------------------- a plan end to end


def test_plan_over_flower_equals_the_in_process_run(consortium):
    """The whole study plan, Cox and Fine-Gray rounds included."""
    dep, _, inputs, log, tmp = consortium
    plan = tmp / "plan_full.toml"
    names = ["leiden", "milan", "prague"]
    outcome = dep.run(plan, names)
    assert outcome["ok"], outcome.get("error")
    assert [s for s, _ in outcome["sites"]] == sorted(names)
    assert comparable(outcome["results"]) == comparable(in_process(plan, inputs, names))
    rounds = outcome["results"]["regression_rounds"]["rounds"]
    assert outcome["results"]["analyses"]["os_cox"]["converged"] and rounds >= 3
    assert any("answered (3/3)" in m for m in log)
    for n in names:
        assert outcome["bytes_received"][n] > 0
        ok, entries = verify_log(dep.site_dir(n) / "audit.jsonl")
        assert ok.ok and entries[-1]["decision"] == "ok"
        # the tally round and every regression round, in the site's own audit log
        assert sum(1 for e in entries if "step" in e and e["decision"] == "ok") >= rounds


def test_coordinator_run_command_with_a_site_in_flowers_default_mode(consortium):
    """`fedsurv coordinator run` end to end; "plain" runs Flower's default mode (thin ClientApp)."""
    dep, plan, inputs, _, tmp = consortium
    out = tmp / "cli-out"
    result = invoke(["coordinator", "run", "--config", str(dep.coordinator_config), "--plan", str(plan), "--out",
                     str(out), "--site", "leiden", "--site", "milan", "--site", "plain", "--no-report"])
    assert result.exit_code == 0, result.output
    assert "plain answered" in result.output
    written = json.loads((out / "results.json").read_text())
    assert comparable(written) == comparable(in_process(plan, inputs, ["leiden", "milan", "plain"]))
    assert set(written["transport"]["bytes_sent_by_site"]) == {"leiden", "milan", "plain"}
    ok, entries = verify_log(dep.site_dir("plain") / "audit.jsonl")
    assert ok.ok and entries[-1]["decision"] == "ok"


def test_a_dp_plan_over_flower_is_noised_at_the_sites(consortium):
    """The DP example plan over Flower: each site adds its noise share before masking (its audit
    entry records the mechanism and the spend), the coordinator releases noisy, labelled results
    with the sites' sizes withheld, and overall survival stays within 5 noise-aware standard
    errors of the same sites' exact in-process estimate."""
    dep, _, inputs, _, tmp = consortium
    text = (ROOT / "fedsurv" / "examples" / "sarcoma_dp.toml").read_text()
    plan = tmp / "plan_dp.toml"
    plan.write_text(text.replace("timeout_seconds = 120", f"timeout_seconds = {TIMEOUT:g}"))
    exact_plan = tmp / "plan_dp_off.toml"
    exact_plan.write_text(plan.read_text().replace("[privacy]\n", "[privacy]\nenabled = false\n"))
    names = ["leiden", "milan", "prague"]
    outcome = dep.run(plan, names)
    assert outcome["ok"], outcome.get("error")
    results = outcome["results"]
    dp = results["privacy"]
    assert dp["epsilon"] <= 3.0 * (1 + 1e-7) and dp["parameters"]["participants"] == 3
    assert all(s["n"] is None for s in results["sites"])
    exact = in_process(exact_plan, inputs, names)
    got = results["analyses"]["overall_survival"]["strata"]["all"]["at_times"]
    want = exact["analyses"]["overall_survival"]["strata"]["all"]["at_times"]
    for i in range(2):
        assert abs(got["estimate"][i] - want["estimate"][i]) <= 5 * got["std_err"][i], (got, want)
    for n in names:
        ok, entries = verify_log(dep.site_dir(n) / "audit.jsonl")
        assert ok.ok and entries[-1]["decision"] == "ok"
        assert entries[-1]["dp"]["mechanism"] == "gaussian"
        assert entries[-1]["dp_spend"]["epsilon"] == pytest.approx(dp["epsilon"])

def invoke(args: list[str]):
    from click.testing import CliRunner

    from fedsurv.cli import _load_commands
    from fedsurv.groups import root

    _load_commands()
    return CliRunner().invoke(root, args)


def test_foreign_app_never_runs_at_a_site_and_is_audited(consortium):
    dep, _, _, _, tmp = consortium
    from flwr.cli.build import build_fab_from_disk

    foreign_hash = hashlib.sha256(build_fab_from_disk(FOREIGN_APP)).hexdigest()
    names = ["leiden", "milan", "prague"]
    marker = tmp / "foreign-code-ran"
    job_dir = tmp / "foreign-job"
    job_dir.mkdir()
    (job_dir / "job.json").write_text("{}")
    before = {n: len(verify_log(dep.site_dir(n) / "audit.jsonl")[1]) for n in names}
    flwr_cli(["run", str(FOREIGN_APP), CONNECTION, "--run-config",
              f'job="{job_dir / "job.json"}" marker="{marker}" sites="{",".join(names)}"'], dep.flwr_home)
    deadline = time.monotonic() + 60
    while not (job_dir / "outcome.json").exists():
        assert time.monotonic() < deadline, "the foreign ServerApp never finished"
        time.sleep(0.1)
    outcome = json.loads((job_dir / "outcome.json").read_text())
    assert outcome["nodes"] == 3 and outcome["answers"] == 0
    assert len(outcome["errors"]) == 3
    assert all("refuses app bundle" in e and foreign_hash in e for e in outcome["errors"])
    assert not marker.exists()
    for n in names:
        ok, entries = verify_log(dep.site_dir(n) / "audit.jsonl")
        assert ok.ok
        new = entries[before[n]:]
        assert [e["event"] for e in new] == ["app-bundle-refused"]
        assert new[0]["fab_sha256"] == foreign_hash and new[0]["decision"] == "refused"


def test_a_site_side_client_cannot_start_a_run_or_register_a_key(consortium):
    dep, _, _, _, tmp = consortium
    site_home = tmp / "site-side-flwr"
    write_flwr_home(site_home, dep.proxy.address, dep.tls.ca_cert)
    refused = dep.proxy.refused
    with pytest.raises(DeploymentError, match="403"):
        flwr_cli(["run", str(dep.app), CONNECTION], site_home)
    with pytest.raises(DeploymentError, match="403"):
        flwr_cli(["supernode", "register", str(dep.site_dir("leiden") / "node.key.pub"), CONNECTION, "--name", "x"],
                 site_home)
    assert dep.proxy.refused >= refused + 2
    assert dep.proxy.forwarded > 0  # the SuperNodes themselves do get through


def test_a_supernode_whose_key_was_not_registered_is_turned_away(consortium):
    import subprocess

    from fedsurv.deployment import LOOPBACK, free_port, make_node_key, venv_bin

    dep, _, _, _, tmp = consortium
    key = tmp / "intruder" / "node.key"
    make_node_key(key)
    intruder = dep.procs.start("intruder", [
        venv_bin("flower-supernode"), "--superlink", dep.site_facing_address, "--root-certificates",
        str(dep.tls.ca_cert), "--auth-supernode-private-key", str(key), "--isolation", "process",
        "--host", LOOPBACK, "--port", str(free_port())], tmp / "intruder" / "supernode.log")
    try:
        assert intruder.proc.wait(timeout=60) != 0
    except subprocess.TimeoutExpired:
        pytest.fail("a SuperNode with an unregistered key stayed connected")
    finally:
        dep.procs.stop("intruder")
    assert "Failed to activate SuperNode" in (tmp / "intruder" / "supernode.log").read_text()


# ----------------------------------------------------------------------------- faults


def test_broken_data_file_reaches_the_coordinator_naming_the_site_not_its_data(consortium):
    dep, plan, _, _, _ = consortium
    with pytest.raises(FlowerRunError) as err:
        dep.run(plan, ["leiden", "milan", "broken"])
    message = str(err.value)
    assert "broken" in message and "could not be prepared" in message
    assert BAD_VALUE not in message and "31.02" not in message
    outcome = json.loads((dep.last_job_dir / "outcome.json").read_text())
    assert not outcome["ok"] and "results" not in outcome
    assert BAD_VALUE not in json.dumps(outcome)


def test_never_answering_site_times_out_named_and_nothing_is_written(consortium):
    dep, plan, _, _, tmp = consortium
    out = tmp / "never-answering-out"
    started = time.monotonic()
    result = invoke(["coordinator", "run", "--config", str(dep.coordinator_config), "--plan", str(plan),
                                       "--out", str(out), "--site", "leiden", "--site", "milan", "--site", "silent",
                                       "--no-report"])
    elapsed = time.monotonic() - started
    assert result.exit_code != 0
    assert "silent did not answer" in result.output
    assert TIMEOUT <= elapsed < TIMEOUT + 45
    assert not (out / "results.json").exists()
    assert not list(out.glob(".results-*")) if out.exists() else True


def test_killed_supernode_mid_query_the_rest_are_asked_again(consortium):
    dep, plan, inputs, _, _ = consortium
    names = ["leiden", "milan", "prague", "vienna"]
    run_id, job_dir = dep.submit(plan, names)
    progress_until(job_dir, "query sent to 4 site(s)", 60)
    dep.kill_site("vienna")
    outcome = follow_run(job_dir, run_id, dep.superlink_ok, 120)
    assert outcome["ok"]
    assert [s for s, _ in outcome["sites"]] == ["leiden", "milan", "prague"]
    notes = " ".join(outcome["results"]["secure_aggregation"]["notes"])
    assert "vienna" in notes
    assert comparable(outcome["results"]) == comparable(in_process(plan, inputs, ["leiden", "milan", "prague"]))


def test_superlink_restart_is_reported_and_a_new_run_succeeds(consortium):
    dep, plan, inputs, _, _ = consortium
    names = ["leiden", "milan", "prague"]
    run_id, job_dir = dep.submit(plan, names)
    progress_until(job_dir, "query sent", 60)
    dep.stop_superlink(kill=True)
    with pytest.raises(FlowerRunError, match="SuperLink stopped answering"):
        follow_run(job_dir, run_id, dep.superlink_ok, 60)
    dep.start_superlink()
    # A SuperNode that lost its SuperLink retries with exponential backoff of up to 20 s
    # (flwr MAX_RETRY_DELAY); the first run after a restart needs a timeout that outlasts it,
    # or a site still waiting to retry misses the query (seen on a loaded CI runner at 10 s).
    patient = plan.with_name("plan_after_restart.toml")
    patient.write_text(plan.read_text().replace(f"timeout_seconds = {TIMEOUT:g}", "timeout_seconds = 30"))
    outcome = dep.run(patient, names)
    assert comparable(outcome["results"]) == comparable(in_process(patient, inputs, names))


CTRL_C_CHILD = """
import json, os, sys, time
from pathlib import Path
from fedsurv.deployment import LocalDeployment, LocalSite, descendants
root = Path(sys.argv[1])
sites = [LocalSite(n, Path(sys.argv[2])) for n in ("a", "b", "c")]
with LocalDeployment(root, sites):
    time.sleep(1.0)
    print(json.dumps(descendants(os.getpid())), flush=True)
    time.sleep(600)
"""


def test_ctrl_c_stops_every_process_of_a_deployment(tmp_path):
    import signal
    import subprocess
    import sys

    data = tmp_path / "rows.csv"
    data.write_text("time,event\n1,1\n")
    child = subprocess.Popen([sys.executable, "-c", CTRL_C_CHILD, str(tmp_path / "dep"), str(data)],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        tree = json.loads(child.stdout.readline())
        assert len(tree) >= 4  # SuperLink and its helper, three sites with their SuperNodes
        child.send_signal(signal.SIGINT)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    deadline = time.monotonic() + 5
    while [p for p in tree if running(p)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in tree if running(p)] == []


def test_every_process_is_stopped(consortium):
    dep, *_ = consortium
    pids = [m.proc.pid for m in dep.procs.started.values()]
    tree = [p for pid in pids for p in [pid, *descendants(pid)]]
    assert tree
    dep.close()
    assert not dep.procs.started
    assert [p for p in tree if running(p)] == []


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
