"""The pooled results as a readable plain-text summary for the terminal."""

from __future__ import annotations

from typing import Any


def pct(x: float | None) -> str:
    return "NA" if x is None else f"{100 * x:.1f}%"


def num(x: float | None, digits: int = 1) -> str:
    return "NA" if x is None else f"{x:.{digits}f}"


def pval(x: float | None) -> str:
    return "NA" if x is None else f"{x:.4g}"


def _ci(est: Any, lo: Any, hi: Any, level: float) -> str:
    return f"{pct(est)} (95% CI {pct(lo)} to {pct(hi)})" if level == 0.95 else \
        f"{pct(est)} ({100 * level:g}% CI {pct(lo)} to {pct(hi)})"


def summarize(results: dict[str, Any]) -> str:
    plan = results["plan"]["plan"]
    unit = plan["time_unit"]
    level = plan["conf_level"]
    lines = [f"{plan['title']}", f"plan {results['plan_sha256'][:16]}…  conf.type {plan['conf_type']}"]
    dp = results.get("privacy")
    if dp:
        # Sites withhold their exact counts under DP; the total is the noisy histogram's.
        lines.append("sites: " + ", ".join(s["name"] for s in results["sites"]) + f"  total about {results.get('n')}")
        lines.append(f"DIFFERENTIALLY PRIVATE: epsilon {dp['epsilon']:.3g}, delta {dp['delta']:.3g}, "
                     f"noise sigma {dp['sigma']:.3g} per cell ({dp['mechanism']}); estimates include calibrated "
                     f"noise and cannot equal R")
    else:
        lines.append("sites: " + ", ".join(f"{s['name']} ({s['n']})" for s in results["sites"])
                     + f"  total {sum(s['n'] for s in results['sites'])}")
    lines.append("")
    for name, a in results["analyses"].items():
        kind = a["kind"]
        if a.get("undefined"):
            lines.append(f"[{name}] {kind}: {a['undefined']}")
        elif kind == "km":
            lines.append(f"[{name}] Kaplan-Meier, {a['endpoint']} (event: {a['cause']})")
            for lab, s in a["strata"].items():
                at = s.get("at_times", {})
                for i, t in enumerate(at.get("time", [])):
                    lines.append(f"  {lab:<14} {t:g} {unit}: {_ci(at['estimate'][i], at['lower'][i], at['upper'][i], level)}"
                                 f"  at risk {at['n_risk'][i]}")
                m = s["median"]
                lines.append(f"  {lab:<14} median {num(m['estimate'])} {unit} (CI {num(m['lower'])} to {num(m['upper'])}),"
                             f" n {s['n']}, events {s['n_event']}")
        elif kind == "cif":
            lines.append(f"[{name}] cumulative incidence, {a['endpoint']}")
            for lab, s in a["strata"].items():
                for cause, c in s["causes"].items():
                    at = c.get("at_times", {})
                    for i, t in enumerate(at.get("time", [])):
                        lines.append(f"  {lab:<14} {cause} by {t:g} {unit}: "
                                     f"{_ci(at['estimate'][i], at['lower'][i], at['upper'][i], level)}")
        elif kind == "logrank":
            obs = ", ".join(f"{g}: O {num(v['observed'])} / E {num(v['expected'])}" for g, v in a["groups"].items())
            lines.append(f"[{name}] log-rank by {a['groups_variable']}: chisq {num(a['chisq'], 3)}, df {a['df']},"
                         f" p {pval(a['p'])}  ({obs})" if a.get("chisq") is not None else f"[{name}] log-rank: undefined")
        elif kind == "gray":
            for cause, t in a["causes"].items():
                lines.append(f"[{name}] Gray's test, {cause} by {a['groups_variable']}: stat {num(t['stat'], 3)},"
                             f" df {t['df']}, p {pval(t['p'])}")
        elif kind == "rmst":
            lines.append(f"[{name}] restricted mean survival time to {a['tau']:g} {unit} by {a['groups_variable']}")
            for c in a.get("sentences", []):
                lines.append(f"  {c}")
        elif kind == "proportion":
            lines.append(f"[{name}] {a['successes']} of {a['n']}: "
                         f"{_ci(a['estimate'], a['lower'], a['upper'], level)} ({a['method']})")
        elif kind in ("cox", "finegray"):
            what = "Fine-Gray (subdistribution HR)" if kind == "finegray" else f"Cox ({a.get('ties')} ties)"
            if a.get("error"):
                lines.append(f"[{name}] {what}: not fitted: {a['error']}")
            else:
                se = "robust_std_err" if a.get("robust") and a.get("robust_std_err") else "std_err"
                lines.append(f"[{name}] {what}, {a['endpoint']} ({a['cause']}): n {a['n']}, events {a['n_event']},"
                             f" {a['iterations']} iterations in {a.get('rounds')} rounds")
                for i, term in enumerate(a["terms"]):
                    lines.append(f"  {term:<14} HR {num(a['hazard_ratio'][i], 3)} ({level:.0%} CI "
                                 f"{num(a['lower'][i], 3)} to {num(a['upper'][i], 3)}), coef {num(a['coef'][i], 4)},"
                                 f" {'robust ' if se == 'robust_std_err' else ''}SE {num(a[se][i], 4)}")
                for w in a.get("warnings") or []:
                    lines.append(f"  warning: {w.strip()}")
        elif kind == "describe":
            lines.append(f"[{name}] Table 1")
            for v, d in a["variables"].items():
                if d["type"] == "numeric":
                    lines.append(f"  {v:<14} mean {num(d['mean'])} (SD {num(d['sd'])}), n {d['n']}, missing {d['missing']}")
                else:
                    parts = ", ".join(f"{lvl} {c['count']} ({num(c['percent'])}%)" for lvl, c in d["levels"].items())
                    lines.append(f"  {v:<14} {parts}" + (f", missing {d['missing']}" if d.get("missing") else ""))
        if a.get("dp_warning"):
            lines.append(f"  noise warning: {a['dp_warning']}")
        lines.append("")
    return "\n".join(lines)
