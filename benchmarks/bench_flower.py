"""A real Flower deployment on loopback: cold start to result for 3, 5 and 10 sites, the time
of one query round, and the bytes each site sends.

Each size starts a fresh deployment (CA and certificates, SuperNode keys registered, SuperLink
with TLS and node authentication, a Fleet-only proxy, one SuperNode in process isolation and
one fedsurv loop per site), runs the study plan twice and stops everything. Sites beyond the
six synthetic centers reuse their files under new names.

"cold start to result": from nothing running to the outcome of the first run.
"warm run": a second plan on the running deployment (submit, ServerApp start, one round).
"round": the query message sent to the last reply received (from the ServerApp's progress).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from fedsurv.demo_data import write_demo_consortium
from fedsurv.deployment import LocalDeployment, LocalSite

PLAN = Path(__file__).resolve().parents[1] / "fedsurv" / "examples" / "sarcoma.toml"
# The study plan's tally round alone: its Cox and Fine-Gray rounds are bench_regression's subject.
REGRESSION_MARK = "# --- Regression models"


def tally_plan(folder: Path) -> Path:
    path = folder / "sarcoma-tallies.toml"
    path.write_text(PLAN.read_text().split(REGRESSION_MARK)[0])
    return path


def round_seconds(job_dir: Path) -> float:
    """From 'query sent' to the last 'answered' line of the final query."""
    lines = [json.loads(x) for x in (job_dir / "progress.jsonl").read_text().splitlines()]
    sent = [x["t"] for x in lines if x["msg"].startswith("query sent")]
    answered = [x["t"] for x in lines if " answered (" in x["msg"]]
    return max(answered) - sent[-1]


def one_size(n: int, data: dict, tmp: Path, plan: Path) -> dict:
    names = list(data)
    sites = [LocalSite(f"site{i + 1:02d}", *data[names[i % len(names)]]) for i in range(n)]
    t0 = time.monotonic()
    with LocalDeployment(tmp / f"dep{n}", sites) as dep:
        up = time.monotonic() - t0
        first = dep.run(plan)
        cold = time.monotonic() - t0
        first_round = round_seconds(dep.last_job_dir)
        t1 = time.monotonic()
        second = dep.run(plan)
        warm = time.monotonic() - t1
        second_round = round_seconds(dep.last_job_dir)
        t2 = time.monotonic()
    teardown = time.monotonic() - t2
    sent = second["bytes_received"]
    return {"n": n, "up": up, "cold": cold, "warm": warm, "rounds": (first_round, second_round),
            "reply_bytes": (min(sent.values()), max(sent.values())),
            "query_bytes": max(second["bytes_sent"].values()), "teardown": teardown,
            "ok": first["ok"] and second["ok"]}


def main(sizes: tuple[int, ...] = (3, 5, 10)) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-flower-") as d:
        tmp = Path(d)
        data = write_demo_consortium(tmp / "data")
        plan = tally_plan(tmp)
        rows = [one_size(n, data, tmp, plan) for n in sizes]
    print("## Flower deployment on loopback (TLS, SuperNode auth, process isolation)\n")
    print("Study plan (fedsurv/examples/sarcoma.toml) without its regression models (one round: each site's "
          "reply is its signed, masked tallies; the models' rounds are in bench_regression).\n")
    print("| sites | processes up (s) | cold start to result (s) | warm run (s) | round (s), 1st / 2nd "
          "| bytes each site sends | query bytes to each site | teardown (s) |")
    print("|---:|---:|---:|---:|---|---|---:|---:|")
    for r in rows:
        lo, hi = r["reply_bytes"]
        sent = f"{lo:,}" if lo == hi else f"{lo:,} to {hi:,}"
        print(f"| {r['n']} | {r['up']:.1f} | {r['cold']:.1f} | {r['warm']:.1f} | {r['rounds'][0]:.1f} / "
              f"{r['rounds'][1]:.1f} | {sent} | {r['query_bytes']:,} | {r['teardown']:.1f} |")
    print("\nBytes are fedsurv payloads (Flower adds its message framing and TLS). Most of a round is "
          "Flower's fixed 3 s SuperNode poll; a warm run adds `flwr run` and the ServerApp start-up.")


if __name__ == "__main__":
    main(tuple(int(a) for a in sys.argv[1:]) or (3, 5, 10))
