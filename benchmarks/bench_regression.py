"""Cox models over the consortium (issue 8): rounds, wall time and bytes per site per round for
p = 1, 5 and 10 numeric covariates, in process and over a real local Flower deployment.

Data: 5 sites x 2,000 patients (in process also 5 x 20,000); covariates x1..x10 standard normal (two decimals); for each p
its own endpoint drawn from a known Cox model, exponential times with hazard
exp(x1..xp' beta) / 36 per month and uniform censoring on (0, 90) months, on a monthly grid
to a 60-month horizon (61 bins). Each plan holds one Cox model (Efron ties, robust variance).

A run is one tally round (it also carries the model's counts) and then one round per Newton
step, step-halvings included; "bytes per site" is what one site sends in one Newton round.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fedsurv.runner import run_in_process
from fedsurv.site_input import SiteInput
from protocol.plan import load_plan

N_SITES = 5
PER_SITE = (2_000, 20_000)  # in process; the Flower deployment runs the first
PS = (1, 5, 10)
HORIZON, BASE_HAZARD, CENSOR_MAX = 60, 1 / 36, 90.0


def true_beta(p: int) -> np.ndarray:
    """Alternating signs, scaled so that x'beta has variance 0.25 whatever p."""
    return 0.5 / np.sqrt(p) * np.where(np.arange(p) % 2 == 0, 1.0, -1.0)


def write_sites(folder: Path, per_site: int, rng: np.random.Generator) -> list[SiteInput]:
    """One CSV per site: x1..x10 and, for each p, the endpoint (time_p, event_p) drawn from it."""
    folder.mkdir(parents=True, exist_ok=True)
    sites = []
    for k in range(N_SITES):
        x = np.clip(np.round(rng.standard_normal((per_site, max(PS))), 2), -5, 5)
        df = pd.DataFrame(x, columns=[f"x{j + 1}" for j in range(max(PS))])
        for p in PS:
            t_event = rng.exponential(1 / (BASE_HAZARD * np.exp(x[:, :p] @ true_beta(p))))
            t_cens = rng.uniform(0, CENSOR_MAX, per_site)
            df[f"time_{p}"] = np.round(np.minimum(t_event, t_cens), 3)
            df[f"event_{p}"] = (t_event <= t_cens).astype(int)
        path = folder / f"site{k + 1:02d}.csv"
        df.to_csv(path, index=False)
        sites.append(SiteInput(f"site{k + 1:02d}", path))
    return sites


def plan_text(p: int) -> str:
    names = [f"x{j + 1}" for j in range(p)]
    variables = "".join(f'\n[variables.{v}]\ntype = "numeric"\nrange = [-5, 5]\ncenter = 0\ndecimals = 2\n'
                        for v in names)
    return f"""
[plan]
title = "Cox benchmark, p = {p}"
time_unit = "months"
bin_width = 1
horizon = {HORIZON}

[endpoints.os]
time = "time_{p}"
event = "event_{p}"
causes = {{ 1 = "death" }}
{variables}
[[analyses]]
name = "cox"
kind = "cox"
endpoint = "os"
cause = "death"
covariates = {json.dumps(names)}
ties = "efron"
robust = true
"""


def in_process(plan_path: Path, sites: list[SiteInput], repeat: int) -> dict:
    """Median wall and CPU time of `repeat` runs, and the median gap between consecutive Newton
    rounds (from the coordinator's progress line after each round's sums are decoded)."""
    plan = load_plan(str(plan_path))
    walls, cpus, gaps = [], [], []
    stamps: list[float] = []

    def progress(msg: str) -> None:
        if msg.startswith("round "):
            stamps.append(time.perf_counter())

    for _ in range(repeat):
        stamps.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        results, _ = run_in_process(plan, sites, progress=progress)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        gaps += list(np.diff(stamps))
    return {"wall": statistics.median(walls), "cpu": statistics.median(cpus),
            "round": statistics.median(gaps) if gaps else float("nan"), "results": results}


def flower_round_seconds(job_dir: Path) -> list[float]:
    """Each round of a run: its 'query sent' line to the last 'answered' line before the next query."""
    lines = [json.loads(x) for x in (job_dir / "progress.jsonl").read_text().splitlines()]
    out, start, last = [], None, None
    for x in lines:
        if x["msg"].startswith("query sent"):
            if start is not None and last is not None:
                out.append(last - start)
            start, last = x["t"], None
        elif " answered (" in x["msg"]:
            last = x["t"]
    if start is not None and last is not None:
        out.append(last - start)
    return out


def warmup_plan_text() -> str:
    """A one-round plan (Kaplan-Meier) that pays the deployment's first-run costs."""
    return plan_text(1).split("[variables.")[0] + """
[[analyses]]
name = "km"
kind = "km"
endpoint = "os"
times = [12, 24]
"""


def over_flower(plans: dict[int, Path], sites: list[SiteInput], tmp: Path) -> tuple[float, float, dict[int, dict]]:
    """One deployment of the sites: a Kaplan-Meier plan first (the ServerApp's first start and the
    sites' first connection), then each Cox plan on the warm deployment."""
    from fedsurv.deployment import LocalDeployment, LocalSite

    warm = tmp / "warmup.toml"
    warm.write_text(warmup_plan_text())
    t0 = time.monotonic()
    out = {}
    with LocalDeployment(tmp / "deployment", [LocalSite(s.name, s.data) for s in sites]) as dep:
        up = time.monotonic() - t0
        dep.run(warm)
        cold = time.monotonic() - t0
        for p, path in plans.items():
            t1 = time.monotonic()
            outcome = dep.run(path)
            out[p] = {"wall": time.monotonic() - t1, "server": outcome["seconds"],
                      "rounds": flower_round_seconds(dep.last_job_dir),  # type: ignore[arg-type]
                      "results": outcome["results"], "reply_bytes": max(outcome["bytes_received"].values()),
                      "query_bytes": max(outcome["bytes_sent"].values())}
    return up, cold, out


def bytes_text(reg: dict) -> str:
    per = sorted(set(reg["bytes_per_site"]))
    return f"{per[0]:,}" if len(per) == 1 else f"{per[0]:,} to {per[-1]:,}"


def main(flower: bool = True) -> None:
    local: dict[tuple[int, int], dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-regression-") as d:
        tmp = Path(d)
        rng = np.random.default_rng(8)
        plans = {}
        for p in PS:
            plans[p] = tmp / f"cox_p{p}.toml"
            plans[p].write_text(plan_text(p))
        consortia = {n: write_sites(tmp / f"data{n}", n, rng) for n in PER_SITE}
        for n in PER_SITE:
            for p in PS:
                local[n, p] = in_process(plans[p], consortia[n], repeat=3)
        if flower:
            up, cold, deployed = over_flower(plans, consortia[PER_SITE[0]], tmp)

    n_bins = HORIZON + 1
    print(f"{N_SITES} sites, p numeric covariates (standard normal) from a known Cox model, about 60% deaths; "
          f"monthly grid to {HORIZON} months ({n_bins} bins); one Cox model per plan (Efron ties, robust variance). "
          "A run is 1 tally round + one round per Newton step (step-halvings included): the first evaluates "
          "beta = 0, so a fit of k iterations (counted as R's coxph counts them) takes k + 1 regression rounds.\n")
    print("### In process (`run_in_process`: reading and checking the CSVs, signed queries, every site's checks, "
          "128-bit masked sums)\n")
    print("| patients per site | p | deaths | Newton iterations | regression rounds | all rounds | wall (s) | CPU (s) "
          "| wall / all rounds (s) | Newton round (s) | bytes per site per round | values per round, B(6+5p+5p²) "
          "| max abs(coef - beta) / SE |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (n, p), r in local.items():
        cox, reg = r["results"]["analyses"]["cox"], r["results"]["regression_rounds"]
        z = np.max(np.abs(np.asarray(cox["coef"]) - true_beta(p)) / np.asarray(cox["std_err"]))
        total = reg["rounds"] + 1
        print(f"| {n:,} | {p} | {cox['n_event']:,} | {cox['iterations']} | {reg['rounds']} | {total} "
              f"| {r['wall']:.2f} | {r['cpu']:.2f} | {r['wall'] / total:.3f} | {r['round']:.3f} | {bytes_text(reg)} "
              f"| {n_bins * (6 + 5 * p + 5 * p * p):,} | {z:.1f} |")
    print("\nMedians of 3 runs; CPU is the process's time.process_time, steadier than wall time on this shared "
          "machine. \"Newton round\": median time between consecutive rounds' decoded sums (every "
          "site's sums at beta, masking, unmasking, checks and the Newton step). Bytes per site per round are "
          "16 per value (128-bit fixed point) and do not depend on the number of patients. The last column is a "
          "sanity check against the beta the data were drawn from (sampling error, monthly ties, two-decimal "
          "covariates), not a target.")
    if not flower:
        return
    n = PER_SITE[0]
    print(f"\n### Over Flower ({N_SITES} sites x {n:,} patients, one local deployment: TLS, SuperNode "
          f"authentication, process isolation)\n")
    print(f"Processes up in {up:.1f} s; cold start to the first result (a one-round Kaplan-Meier plan) "
          f"{cold:.1f} s. Then each Cox plan on the warm deployment:\n")
    print("| p | all rounds | run (s) | ServerApp (s) | rounds' time (s) | round (s), median / max | run / rounds (s) "
          "| bytes per site per Newton round | bytes each site sends, whole run | same coef as in process |")
    print("|---:|---:|---:|---:|---:|---|---:|---:|---:|---|")
    for p in PS:
        f = deployed[p]
        cox, reg = f["results"]["analyses"]["cox"], f["results"]["regression_rounds"]
        same = cox["coef"] == local[n, p]["results"]["analyses"]["cox"]["coef"]
        k = len(f["rounds"])
        print(f"| {p} | {k} | {f['wall']:.1f} | {f['server']:.1f} | {sum(f['rounds']):.1f} "
              f"| {statistics.median(f['rounds']):.1f} / {max(f['rounds']):.1f} | {f['wall'] / k:.1f} "
              f"| {bytes_text(reg)} | {f['reply_bytes']:,} | {'yes' if same else 'NO'} |")
    slowest = max(local[n, p]["round"] for p in PS)
    medians = [statistics.median(deployed[p]["rounds"]) for p in PS]
    print("\n\"run\": `flwr run` to the outcome; \"ServerApp\": the ServerApp's own time; a round: the query sent "
          "to the last site's reply received. A round waits for every site: its SuperNode pulls messages from the "
          "SuperLink and, after an empty pull, sleeps 3 s (flwr/supernode/start_client_internal.py), then the "
          "site process claims the task, answers it, and the SuperNode, which looks for the reply every 0.5 s, "
          "pushes it back. With 5 SuperNodes, 5 site processes, the SuperLink and the proxy on 2 cores the "
          f"median round takes {min(medians):.1f}-{max(medians):.1f} s, against at most {slowest:.2f} s for a whole Newton round in process at this "
          "size: a round costs the same whatever p, and a run's time is the number of rounds times that, plus "
          "`flwr run` and the ServerApp's start. The whole-run bytes add the tally round's reply and each reply's "
          "signed header. \"same coef\": equal to the last bit.")


if __name__ == "__main__":
    main(flower="--no-flower" not in sys.argv)
