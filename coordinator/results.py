"""Pooled results of a plan from the consortium's summed tallies: the results.json document.

Every estimate here is a pure function of the unmasked sum (coordinator/km.py, cif.py,
logrank.py, gray.py, rmst.py, proportion.py, describe.py); this module only selects the
histogram each analysis reads and lays the numbers out as results.json documents them.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from coordinator.cif import aalen_johansen, cif_at_times
from coordinator.describe import describe_categorical, describe_numeric
from coordinator.gray import gray_test
from coordinator.km import (
    SurvivalTable,
    kaplan_meier,
    km_at_times,
    km_median,
    km_quantiles,
)
from coordinator.logrank import logrank_test
from coordinator.proportion import proportion_ci
from coordinator.rmst import compare_rmst, rmst
from protocol.plan import ANY_CAUSE, Analysis, Plan
from protocol.tallies import Tallies, cell_labels, surv_key

TABLE_COLUMNS = ("time", "n_risk", "n_event", "n_censor", "estimate", "std_err", "lower", "upper")


def jsonable(x: Any) -> Any:
    """numpy values to JSON values, with NaN and infinities as null (R's NA)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        if x.ndim != 1:
            return [jsonable(row) for row in x]
        if x.dtype.kind == "f":
            finite = np.isfinite(x)
            values = x.tolist()
            if not finite.all():
                for i in np.flatnonzero(~finite):
                    values[i] = None
            return values
        if x.dtype.kind in "iub":
            return x.tolist()
        return [jsonable(v) for v in x.tolist()]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        return f if math.isfinite(f) else None
    return x


def table_dict(table: Any) -> dict[str, list]:
    return {c: jsonable(getattr(table, c)) for c in TABLE_COLUMNS}


def _conf(plan: Plan, a: Analysis) -> tuple[float, str]:
    return plan.conf_level, a.conf_type or plan.conf_type


def _cells(hist: np.ndarray, plan: Plan, vs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Per-stratum (bins, 1+K) histograms; with strata, 'all' is their sum."""
    labels = cell_labels(plan, vs)
    out = {"all": hist.sum(axis=0)}
    if vs:
        out.update({lab: hist[i] for i, lab in enumerate(labels)})
    return out


def _event_censor(counts: np.ndarray, plan: Plan, a: Analysis) -> tuple[np.ndarray, np.ndarray]:
    """Events of the analysis's cause; every other outcome counts as censored, as R does."""
    total = counts.sum(axis=-1)
    if a.cause == ANY_CAUSE:
        events = total - counts[..., 0]
    else:
        events = counts[..., plan.endpoint(a.endpoint).cause_index(a.cause)]  # type: ignore[arg-type]
    return events, total - events


def _km_stratum(counts: np.ndarray, plan: Plan, a: Analysis) -> dict[str, Any]:
    level, ctype = _conf(plan, a)
    time = plan.bin_times()
    events, censor = _event_censor(counts, plan, a)
    table = kaplan_meier(time, events, censor, conf_level=level, conf_type=ctype)
    out: dict[str, Any] = {"n": int(counts.sum()), "n_event": int(events.sum()), "table": table_dict(table)}
    if a.times:
        out["at_times"] = table_dict(km_at_times(table, np.array(a.times), conf_level=level, conf_type=ctype))
        rm = [rmst(table, tau) for tau in a.times]
        out["rmst"] = {"tau": list(a.times), "estimate": jsonable([r[0] for r in rm]),
                       "std_err": jsonable([r[1] for r in rm])}
    # R prints the median by summary(fit)$table's rule, which differs from quantile(fit, 0.5)
    # in a few strata; both are reported as R reports them.
    m = km_median(table, conf_level=level, conf_type=ctype)
    out["median"] = jsonable({"estimate": m.estimate, "lower": m.lower, "upper": m.upper})
    q = km_quantiles(table, probs=(0.25, 0.5, 0.75), conf_level=level, conf_type=ctype)
    out["quantiles"] = jsonable({"probs": q.probs, "estimate": q.estimate, "lower": q.lower, "upper": q.upper})
    return out


def _km(tallies: Tallies, plan: Plan, a: Analysis) -> dict[str, Any]:
    hist = tallies[surv_key(a.endpoint, a.stratification)]  # type: ignore[arg-type]
    strata = {lab: _km_stratum(c, plan, a) for lab, c in _cells(hist, plan, a.strata).items()}
    return {"kind": "km", "endpoint": a.endpoint, "cause": a.cause, "strata": strata}


def _cif_stratum(counts: np.ndarray, plan: Plan, a: Analysis) -> dict[str, Any]:
    level, ctype = _conf(plan, a)
    ep = plan.endpoint(a.endpoint)  # type: ignore[arg-type]
    tables = aalen_johansen(plan.bin_times(), counts, conf_level=level, conf_type=ctype)
    causes = {}
    for cause, table in zip(ep.causes, tables):
        entry: dict[str, Any] = {"table": table_dict(table)}
        if a.times:
            entry["at_times"] = table_dict(cif_at_times(table, np.array(a.times), conf_level=level, conf_type=ctype))
        causes[cause.name] = entry
    return {"n": int(counts.sum()), "causes": causes}


def _cif(tallies: Tallies, plan: Plan, a: Analysis) -> dict[str, Any]:
    hist = tallies[surv_key(a.endpoint, a.stratification)]  # type: ignore[arg-type]
    strata = {lab: _cif_stratum(c, plan, a) for lab, c in _cells(hist, plan, a.strata).items()}
    return {"kind": "cif", "endpoint": a.endpoint, "strata": strata}


def _grouped(tallies: Tallies, plan: Plan, a: Analysis) -> np.ndarray:
    """The histogram as (strata cells, groups, bins, 1+K); groups is the first variable."""
    hist = tallies[surv_key(a.endpoint, a.stratification)]  # type: ignore[arg-type]
    n_groups = len(plan.variable(a.groups).levels)  # type: ignore[arg-type]
    n_strata = hist.shape[0] // n_groups
    return hist.reshape(n_groups, n_strata, *hist.shape[1:]).swapaxes(0, 1)


def _logrank(tallies: Tallies, plan: Plan, a: Analysis) -> dict[str, Any]:
    g = _grouped(tallies, plan, a)
    events, _ = _event_censor(g, plan, a)
    total = g.sum(axis=-1)
    at_risk = np.cumsum(total[..., ::-1], axis=-1)[..., ::-1]
    res = logrank_test(events, at_risk, rho=a.rho)
    levels = plan.variable(a.groups).levels  # type: ignore[arg-type]
    n = total.sum(axis=(0, 2))
    groups = {lvl: {"n": int(n[i]), "observed": jsonable(res.observed[i]), "expected": jsonable(res.expected[i])}
              for i, lvl in enumerate(levels)}  # type: ignore[arg-type]
    return {"kind": "logrank", "endpoint": a.endpoint, "cause": a.cause, "groups_variable": a.groups,
            "strata_variables": list(a.strata), "rho": a.rho, "chisq": jsonable(res.chisq), "df": int(res.df),
            "p": jsonable(res.p), "groups": groups, "var": jsonable(res.var)}


def _gray(tallies: Tallies, plan: Plan, a: Analysis) -> dict[str, Any]:
    g = _grouped(tallies, plan, a)
    tests = gray_test(plan.bin_times(), g)
    ep = plan.endpoint(a.endpoint)  # type: ignore[arg-type]
    causes = {ep.causes[t.cause - 1].name: {"stat": jsonable(t.stat), "p": jsonable(t.p), "df": int(t.df)}
              for t in tests}
    return {"kind": "gray", "endpoint": a.endpoint, "groups_variable": a.groups,
            "strata_variables": list(a.strata), "causes": causes}


def _rmst(tallies: Tallies, plan: Plan, a: Analysis) -> dict[str, Any]:
    g = _grouped(tallies, plan, a).sum(axis=0)
    level, ctype = _conf(plan, a)
    levels = plan.variable(a.groups).levels  # type: ignore[arg-type]
    est, se = [], []
    for i in range(len(levels)):  # type: ignore[arg-type]
        events, censor = _event_censor(g[i], plan, a)
        table: SurvivalTable = kaplan_meier(plan.bin_times(), events, censor, conf_level=level, conf_type=ctype)
        e, s = rmst(table, a.tau)  # type: ignore[arg-type]
        est.append(e)
        se.append(s)
    comp = jsonable(compare_rmst(list(levels), np.array(est), np.array(se), conf_level=level, tau=a.tau).to_dict())  # type: ignore[arg-type]
    return {"kind": "rmst", "endpoint": a.endpoint, "cause": a.cause, "groups_variable": a.groups,
            "tau": a.tau, **comp, "sentences": rmst_sentences(comp, a.groups, a.tau, plan.time_unit, level)}  # type: ignore[arg-type]


def rmst_sentences(comp: dict[str, Any], variable: str, tau: float, unit: str, level: float) -> list[str]:
    """Each RMST difference as a sentence a clinician reads."""
    out = []
    for c in comp.get("contrasts", []):
        d = c["difference"]
        if d["estimate"] is None or d["lower"] is None:
            continue
        longer = d["estimate"] >= 0
        est, lo, hi = (d["estimate"], d["lower"], d["upper"]) if longer else (-d["estimate"], -d["upper"], -d["lower"])
        out.append(f"Patients in the {variable} = {c['group']} group lived on average {est:.1f} {unit} ({100 * level:g}% CI {lo:.1f} to "
                   f"{hi:.1f}) {'longer' if longer else 'shorter'} than those in the {variable} = {c['reference']} group within the "
                   f"first {tau:g} {unit} (p = {d['p']:.3g}).")
    return out


def _proportion(tallies: Tallies, plan: Plan, a: Analysis) -> dict[str, Any]:
    var = plan.variable(a.variable)  # type: ignore[arg-type]
    counts = tallies[f"count:{var.name}"]
    levels = var.levels or ()
    successes = int(sum(counts[levels.index(s)] for s in a.success))
    n = int(counts[:-1].sum())
    est, lo, hi = proportion_ci(successes, n, conf_level=plan.conf_level, method=a.method)
    return {"kind": "proportion", "variable": var.name, "success": list(a.success), "successes": successes,
            "n": n, "missing": int(counts[-1]), "estimate": jsonable(est), "lower": jsonable(lo),
            "upper": jsonable(hi), "method": a.method, "conf_level": plan.conf_level}


def _describe(tallies: Tallies, plan: Plan, a: Analysis) -> dict[str, Any]:
    out = {}
    for name in a.variables:
        var = plan.variable(name)
        if var.is_numeric:
            n, s, ss, miss = (int(x) for x in tallies[f"moments:{name}"])
            out[name] = {"type": "numeric", **jsonable(describe_numeric(n, s, ss, miss, var.decimals))}
        else:
            out[name] = {"type": "categorical", **jsonable(describe_categorical(tallies[f"count:{name}"], var.levels))}
    return {"kind": "describe", "variables": out}


ANALYSES = {"km": _km, "cif": _cif, "logrank": _logrank, "gray": _gray, "rmst": _rmst,
            "proportion": _proportion, "describe": _describe}


def pooled_results(plan: Plan, tallies: Tallies, sites: list[tuple[str, int]]) -> dict[str, Any]:
    """The results.json document for a plan from the consortium's summed tallies."""
    if plan.privacy is not None:
        return dp_pooled_results(plan, tallies, sites)
    return _document(plan, tallies, [{"name": s, "n": int(n)} for s, n in sites])


def _document(plan: Plan, tallies: Tallies, sites: list[dict[str, Any]], tolerant: bool = False) -> dict[str, Any]:
    dropped = {k.split(":", 1)[1]: int(tallies[k][0]) for k in tallies.arrays if k.startswith("dropped:")}
    return {
        "plan_sha256": plan.sha256,
        "plan": plan.to_dict(),
        "sites": sites,
        "n": tallies.n,
        "left_out": {k: v for k, v in dropped.items() if v},
        "analyses": {a.name: (_undefined_if_failing if tolerant else ANALYSES[a.kind])(tallies, plan, a)
                     # Regression models come from their own rounds (coordinator/regression_rounds.py).
                     for a in plan.analyses if not a.is_regression},
    }


# --------------------------------------------------------------------------- differential privacy

DP_NOTE = "differentially private: these estimates include calibrated noise and cannot equal R"


def dp_pooled_results(plan: Plan, noisy: Tallies, sites: list[tuple[str, int]]) -> dict[str, Any]:
    """results.json for a plan with a [privacy] table, from the noisy sum of the sites' tallies.

    Every histogram is post-processed (protocol plan's ``privacy.postprocess``; dropped and
    categorical counts clipped at 0) before any estimator reads it; n is the inverse-variance
    weighted mean of every block's raw total (coordinator.dp_postprocess.noisy_size; sites
    withhold theirs). Standard errors, limits and p-values
    include the noise: Kaplan-Meier by coordinator.dp_postprocess.km_dp_intervals, incidence,
    RMST, log-rank and Gray's test by the parametric bootstrap of coordinator.dp_uncertainty,
    proportions analytically (coordinator.dp_uncertainty.proportion_dp_ci); each analysis says
    how in its ``dp_uncertainty`` field. Without a bootstrap (privacy.bootstrap < 2) what would
    ignore the noise is withheld (null) and listed. All of it reads only the released
    sum: post-processing costs no privacy (Dwork & Roth 2014, Proposition 2.1).
    """
    from coordinator.dp_postprocess import clip_histogram, noisy_size, postprocess
    from protocol.dp_plan import noise_parameters

    spec = plan.privacy
    assert spec is not None
    params = noise_parameters(spec, plan, len(sites))
    # every participant adds its share, so the sum carries sqrt(P) sigma_i (the guarantee counts
    # only the t honest ones)
    sigma_sum = math.sqrt(len(sites)) * params.share.sigma
    arrays = dict(noisy.arrays)
    applied: dict[str, str] = {}
    for b in noisy.blocks:
        if b.key.startswith("surv:"):
            arrays[b.key], pp = postprocess(noisy[b.key], spec.postprocess)
        elif b.key.startswith(("dropped:", "count:")):
            arrays[b.key], pp = clip_histogram(noisy[b.key])
        else:
            continue
        applied[b.key] = pp.describe()
    n_est, n_sd = noisy_size(noisy, sigma_sum)
    arrays["n"] = np.array([max(0, round(n_est))], dtype=np.int64)
    released = Tallies(noisy.blocks, arrays)
    doc = _document(plan, released, [{"name": s, "n": None} for s, _ in sites], tolerant=True)
    seed = int.from_bytes(hashlib.sha256(noisy.flatten().astype("<i8").tobytes()).digest()[:8], "little")
    rng = np.random.default_rng(seed)  # the same release always gives the same intervals
    mechanism = params.share.mechanism
    for a in plan.analyses:
        res = doc["analyses"].get(a.name)
        if res is None or "undefined" in res:
            continue
        if a.kind == "km" and spec.bootstrap >= 2:
            _dp_km_limits(res, noisy, plan, a, sigma_sum, rng, mechanism)
        elif a.kind == "proportion" or (a.kind in DP_UNCERTAINTY and spec.bootstrap >= 2):
            DP_UNCERTAINTY[a.kind](res, released, noisy, plan, a, sigma_sum, rng, mechanism)
    withheld = _withhold_noise_blind_uncertainty(doc["analyses"])
    warnings = _dp_grid_warnings(doc["analyses"], released, plan, sigma_sum)
    doc["privacy"] = {
        "note": DP_NOTE,
        "withheld": withheld,
        "epsilon": params.guarantee.epsilon, "delta": params.guarantee.delta, "sigma": sigma_sum,
        "n_noise_sd": n_sd,
        "mechanism": params.share.mechanism, "parameters": {**params.to_dict(), "sigma_sum": sigma_sum,
                                                            "participants": len(sites)},
        "spec": spec.to_dict(),
        "postprocessing": applied,
        "intervals": _intervals_text(spec.bootstrap),
        "warnings": warnings,
    }
    return doc


def _dp_grid_warnings(analyses: dict[str, Any], released: Tallies, plan: Plan, sigma: float) -> dict[str, str]:
    """Per survival analysis, where its curves' grid is too fine for the noise (coordinator.dp_warnings);
    also put in the analysis as ``dp_warning``."""
    from coordinator.dp_warnings import grid_warning, warning_text

    out = {}
    times = plan.bin_times()
    for a in plan.analyses:
        res = analyses.get(a.name)
        if a.kind not in ("km", "cif", "rmst", "logrank", "gray") or res is None or "undefined" in res:
            continue
        hist = released[surv_key(a.endpoint, a.stratification)]  # type: ignore[arg-type]
        notes = []
        for label, counts in _cells(hist, plan, a.stratification).items():
            if label == "all" and a.groups:
                continue  # not a curve these analyses show
            s = sigma * math.sqrt(hist.shape[0]) if label == "all" and a.stratification else sigma
            text = warning_text(grid_warning(counts, s), times, plan.time_unit, plan.bin_width)
            if text:
                notes.append(text if label == "all" and not a.stratification else f"{label}: {text}")
        if notes:
            out[a.name] = res["dp_warning"] = "; ".join(notes)
    return out


def _intervals_text(n_boot: int) -> str:
    if n_boot < 2:
        return ("no bootstrap was asked for (privacy.bootstrap < 2): proportions' limits include the noise "
                "(delta method); every other interval, standard error and p-value would ignore it, so it is "
                "withheld (null)")
    return (f"intervals, standard errors and p-values include the noise. Kaplan-Meier and cumulative incidence: "
            f"limits around the unclipped noisy counts' estimate (unbiased to first order, where clipping is not), "
            f"with the exact estimator's sampling variance (Greenwood; infinitesimal jackknife) plus the noise "
            f"variance from a parametric bootstrap of {n_boot} noise draws; the estimate released is the clipped "
            f"counts' one unless its bootstrap bias-corrected version or the unclipped one has a clearly smaller "
            f"estimated error, and the limits contain it (each curve's dp_centre says which and why). RMST: "
            f"the same choice of estimate, Miller's variance plus its bootstrap noise mean squared error. "
            f"Log-rank and Gray's tests: Wald tests of the unclipped counts' score whose variance adds "
            f"the score's bootstrap covariance to the exact one. Proportions: the noise variance added by the delta "
            f"method. Medians and quartiles are read off the noise-aware Kaplan-Meier curve and its limits")


NOISE_BLIND = {
    # kind -> (fields of the analysis, fields of each table/at_times block) set to null under DP
    # when no noise-aware version was computed
    "cif": ((), ("std_err", "lower", "upper")),
    "logrank": (("p", "var"), ()),
    "gray": (("p",), ()),
    "rmst": (("p", "lower", "upper", "std_err", "log_std_err", "sentences"), ()),
    "proportion": (("lower", "upper"), ()),
}


def _null_fields(obj: Any, fields: tuple[str, ...]) -> None:
    """Null the named fields wherever they occur in a nested result."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in fields:
                obj[k] = [] if k == "sentences" else ([None] * len(v) if isinstance(v, list) else None)
            else:
                _null_fields(v, fields)
    elif isinstance(obj, list):
        for v in obj:
            _null_fields(v, fields)


def _withhold_noise_blind_uncertainty(analyses: dict[str, Any]) -> list[str]:
    """Null every interval, standard error and p-value that would ignore the DP noise.

    An analysis whose uncertainty includes the noise carries a ``dp_uncertainty`` field and
    keeps its numbers; without one (no bootstrap asked for), a log-rank p-value on noisy
    counts, say, would read noise as signal (p < 0.001 where the exact p is 0.5 was seen),
    so it is not given.
    """
    withheld = []
    for name, res in analyses.items():
        kind = res.get("kind")
        if "undefined" in res:
            continue
        if kind == "km":
            if "dp_uncertainty" in res:
                continue
            for st in res.get("strata", {}).values():
                for part in ("table", "at_times", "median", "quantiles"):
                    if part in st:
                        _null_fields(st[part], ("std_err", "lower", "upper"))
                if "rmst" in st:
                    _null_fields(st["rmst"], ("std_err",))
            withheld.append(f"{name}: standard errors and confidence limits of S, the median and quartiles; "
                            "standard error of RMST")
        elif kind in NOISE_BLIND and "dp_uncertainty" not in res:
            top, inner = NOISE_BLIND[kind]
            _null_fields(res, top + inner)
            withheld.append(f"{name}: {', '.join(top + inner)}")
    return withheld


def _undefined_if_failing(tallies: Tallies, plan: Plan, a: Analysis) -> dict[str, Any]:
    """An analysis of noisy counts, or why it is undefined there (the release is not lost for one).

    Noise can empty a group (a noisy total below 0 post-processes to no patients), which some
    estimators refuse; the privacy budget is spent by then, so every other analysis still counts.
    """
    try:
        return ANALYSES[a.kind](tallies, plan, a)
    except (ValueError, ZeroDivisionError, FloatingPointError, np.linalg.LinAlgError) as e:
        return {"kind": a.kind, "undefined": f"not defined on the noisy counts: {e}"}


def _bin_index(plan: Plan, times: Any, size: int) -> np.ndarray:
    """The grid bin of each reported time (the last bin at or before it)."""
    t = np.asarray(times, dtype=float)
    return np.minimum(np.floor(t / plan.bin_width + 1e-9).astype(np.int64), size - 1)


def _two_column(counts: np.ndarray, plan: Plan, a: Analysis) -> np.ndarray:
    """(..., bins, 2) censored and events of the analysis's cause, as the KM estimators read them."""
    events, censor = _event_censor(counts, plan, a)
    return np.stack([censor, events], axis=-1)


def _dp_km_limits(res: dict[str, Any], noisy: Tallies, plan: Plan, a: Analysis, sigma: float,
                  rng: np.random.Generator, mechanism: str = "gaussian") -> None:
    """Replace a KM result's estimate, std_err and limits (and its RMSTs) by ones that include the noise."""
    from coordinator.dp_postprocess import km_dp_intervals, postprocess
    from coordinator.dp_uncertainty import NOTE_RMST, noise_replicates, rmst_dp

    spec = plan.privacy
    assert spec is not None
    hist = noisy[surv_key(a.endpoint, a.stratification)]  # type: ignore[arg-type]
    level, ctype = _conf(plan, a)
    n_cells = hist.shape[0]
    for label, counts in _cells(hist, plan, a.strata).items():
        if a.cause == ANY_CAUSE:
            events = counts[:, 1:].sum(axis=1)
            counts, cause = np.stack([counts[:, 0], events], axis=1), 1
        else:
            cause = plan.endpoint(a.endpoint).cause_index(a.cause)  # type: ignore[arg-type]
        # 'all' sums every cell's noise
        s = sigma * math.sqrt(n_cells) if label == "all" and a.strata else sigma
        dp = km_dp_intervals(counts, s, spec.bootstrap, rng, cause=cause, method=spec.postprocess,
                             conf_level=level, conf_type=ctype, mechanism=mechanism)
        st = res["strata"][label]
        st["dp_centre"] = release_note(dp.centre, dp.mse)
        for part, key in (("table", "time"), ("at_times", "time")):
            block = st.get(part)
            if not block:
                continue
            idx = _bin_index(plan, block[key], dp.estimate.size)
            for col, values in (("estimate", dp.estimate), ("std_err", dp.std_err), ("lower", dp.lower),
                                ("upper", dp.upper)):
                old = block[col]
                new = jsonable(np.asarray(values, dtype=float)[idx])
                block[col] = [None if o is None else v for o, v in zip(old, new)]
        dp_km_quantiles(st, plan, dp, level, ctype)
        if "rmst" in st:
            pp = postprocess(counts, spec.postprocess)[0]
            boot = noise_replicates(counts, s, spec.bootstrap, rng, mechanism=mechanism)
            other = pp.sum(axis=1) - pp[:, cause]
            table = kaplan_meier(plan.bin_times(), pp[:, cause], other, conf_level=level, conf_type=ctype)
            out = [rmst_dp(plan.bin_times(), counts, boot, tau, rmst(table, tau)[1], cause=cause,
                           method=spec.postprocess) for tau in st["rmst"]["tau"]]
            st["rmst"].update(estimate=jsonable([r.estimate for r in out]), std_err=jsonable([r.std_err for r in out]),
                              std_err_noise=jsonable([r.std_err_noise for r in out]),
                              dp_centre=[r.centre for r in out], dp_uncertainty=NOTE_RMST.format(b=spec.bootstrap))
    res["dp_uncertainty"] = ("Kaplan-Meier: Greenwood variance plus the noise variance from a parametric bootstrap "
                             f"of {spec.bootstrap} noise draws, around the unclipped estimate; the estimate per curve "
                             "as its dp_centre says; "
                             "median and quartiles with their limits read off that curve and its limits "
                             "(Brookmeyer & Crowley 1982); RMST: " + NOTE_RMST.format(b=spec.bootstrap))


DP_CENTRE = {
    "clipped": "the clipped counts' estimate",
    "bias-corrected": "the clipped counts' bootstrap bias-corrected estimate",
    "unclipped": "the unclipped noisy counts' estimate (unbiased to first order)",
}
DP_RELEASE_RULE = ("estimate: {which}: of three, the clipped one unless another's estimated root mean squared error "
              "from the noise over the curve is clearly smaller ({errors}; each counting the bias the bootstrap "
              "leaves it); limits: the unclipped estimate's, "
              "which are unbiased, widened where needed to contain the estimate")


def release_note(centre: str, mse: dict[str, float] | None) -> str:
    """A curve's dp_centre: which estimate was released, and every candidate's estimated error."""
    errors = "; ".join(f"{math.sqrt(v):.4f} {k}" for k, v in (mse or {}).items())
    return DP_RELEASE_RULE.format(which=DP_CENTRE[centre], errors=errors)


def dp_km_quantiles(st: dict[str, Any], plan: Plan, dp: Any, level: float, ctype: str) -> None:
    """Median and quartiles, with limits, of the noise-aware KM curve (coordinator.km's rules).

    On the curve's reported rows: the estimates from the released curve, the limits where the
    pointwise limits of coordinator.dp_postprocess.km_dp_intervals's band (its centre and total
    standard error, Greenwood plus noise) cross 1 - p (Brookmeyer & Crowley 1982), widened to
    contain the estimate as the pointwise limits are; so they include the noise as those do.
    A limit that is never reached (NA) stays NA.
    """
    block = st.get("table")
    if not block or not block["time"]:
        return
    idx = _bin_index(plan, block["time"], dp.estimate.size)
    band = dp.estimate if dp.band_centre is None else dp.band_centre

    def table(curve: np.ndarray) -> SurvivalTable:
        centre, se = curve[idx], dp.std_err[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            se_log = np.where(centre > 0, se / centre, np.nan)
        return SurvivalTable(time=np.asarray(block["time"], dtype=float),
                             n_risk=np.asarray(block["n_risk"], dtype=np.int64),
                             n_event=np.asarray(block["n_event"], dtype=np.int64),
                             n_censor=np.asarray(block["n_censor"], dtype=np.int64),
                             estimate=centre, std_err=se, std_err_log=se_log, lower=dp.lower[idx], upper=dp.upper[idx])

    def widened(est: Any, lower: Any, upper: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        e, lo, hi = (np.asarray(v, dtype=float) for v in (est, lower, upper))
        return e, np.fmin(lo, e), np.where(np.isnan(hi), np.nan, np.fmax(hi, e))

    released, limits = table(dp.estimate), table(band)
    m, mb = km_median(released, conf_level=level, conf_type=ctype), km_median(limits, conf_level=level, conf_type=ctype)
    e, lo, hi = widened(m.estimate, mb.lower, mb.upper)
    st["median"] = jsonable({"estimate": float(e), "lower": float(lo), "upper": float(hi)})
    probs = (0.25, 0.5, 0.75)
    q = km_quantiles(released, probs=probs, conf_level=level, conf_type=ctype)
    qb = km_quantiles(limits, probs=probs, conf_level=level, conf_type=ctype)
    e, lo, hi = widened(q.estimate, qb.lower, qb.upper)
    st["quantiles"] = jsonable({"probs": q.probs, "estimate": e, "lower": lo, "upper": hi})


def _block_replicates(noisy: Tallies, plan: Plan, a: Analysis, sigma: float, rng: np.random.Generator,
                      mechanism: str) -> tuple[np.ndarray, np.ndarray]:
    """The analysis's raw (unclipped) noisy histogram block and its noise replicates (B, cells, bins, 1 + K)."""
    from coordinator.dp_uncertainty import noise_replicates

    spec = plan.privacy
    assert spec is not None
    hist = noisy[surv_key(a.endpoint, a.stratification)]  # type: ignore[arg-type]
    return hist, noise_replicates(hist, sigma, spec.bootstrap, rng, mechanism=mechanism)


def _grouped_replicates(boot: np.ndarray, plan: Plan, a: Analysis) -> np.ndarray:
    """(B, strata, groups, bins, 1 + K), the layout of _grouped for each replicate."""
    n_groups = len(plan.variable(a.groups).levels)  # type: ignore[arg-type]
    return boot.reshape(boot.shape[0], n_groups, -1, *boot.shape[2:]).swapaxes(1, 2)


def _dp_cif(res: dict[str, Any], released: Tallies, noisy: Tallies, plan: Plan, a: Analysis, sigma: float,
            rng: np.random.Generator, mechanism: str = "gaussian") -> None:
    """Incidence estimates, standard errors and limits that include the noise (dp_uncertainty.cif_dp)."""
    from coordinator.dp_uncertainty import NOTE_CIF, cif_dp

    raw, boot = _block_replicates(noisy, plan, a, sigma, rng, mechanism)
    pp = _cells(released[surv_key(a.endpoint, a.stratification)], plan, a.strata)  # type: ignore[arg-type]
    level, ctype = _conf(plan, a)
    ep = plan.endpoint(a.endpoint)  # type: ignore[arg-type]
    for label, counts in _cells(raw, plan, a.strata).items():
        reps = boot.sum(axis=1) if label == "all" else boot[:, cell_labels(plan, a.strata).index(label)]
        dp = cif_dp(plan.bin_times(), pp[label], counts, reps, conf_level=level, conf_type=ctype,
                    method=plan.privacy.postprocess)  # type: ignore[union-attr]
        res["strata"][label]["dp_centre"] = release_note(dp.centre, dp.mse)
        for k, cause in enumerate(ep.causes):
            entry = res["strata"][label]["causes"][cause.name]
            for part in ("table", "at_times"):
                block = entry.get(part)
                if not block:
                    continue
                idx = _bin_index(plan, block["time"], dp.estimate.shape[0])
                for col, values in (("estimate", dp.estimate), ("std_err", dp.std_err), ("lower", dp.lower),
                                    ("upper", dp.upper)):
                    block[col] = jsonable(np.asarray(values[idx, k], dtype=float))
                block["std_err_noise"] = jsonable(dp.std_err_noise[idx, k])
    res["dp_uncertainty"] = NOTE_CIF.format(b=boot.shape[0])


def _dp_logrank(res: dict[str, Any], released: Tallies, noisy: Tallies, plan: Plan, a: Analysis, sigma: float,
                rng: np.random.Generator, mechanism: str = "gaussian") -> None:
    """The log-rank test with the noise in its variance (dp_uncertainty.noise_aware_wald)."""
    from coordinator.dp_uncertainty import (
        NOTE_TEST,
        logrank_scores,
        noise_aware_wald,
        noise_covariance,
    )

    if res.get("df", 0) < 1:
        return
    _, boot = _block_replicates(noisy, plan, a, sigma, rng, mechanism)

    def events_at_risk(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        events, _ = _event_censor(g, plan, a)
        total = g.sum(axis=-1)
        return events, np.flip(np.cumsum(np.flip(total, -1), axis=-1), -1)

    events, at_risk = events_at_risk(_grouped(released, plan, a))
    exact = logrank_test(events, at_risk, rho=a.rho)
    scores = logrank_scores(*events_at_risk(_grouped_replicates(boot, plan, a)), rho=a.rho)
    score = logrank_scores(*events_at_risk(_grouped(noisy, plan, a)), rho=a.rho)
    tested = np.flatnonzero(exact.expected > 0)[1:]
    test = noise_aware_wald(score, exact.var, scores, tested)
    res.update(chisq_postprocessed=res["chisq"], chisq=jsonable(test.stat), p=jsonable(test.p),
               var=jsonable(exact.var + noise_covariance(scores)), dp_uncertainty=NOTE_TEST.format(b=boot.shape[0]))


def _dp_gray(res: dict[str, Any], released: Tallies, noisy: Tallies, plan: Plan, a: Analysis, sigma: float,
             rng: np.random.Generator, mechanism: str = "gaussian") -> None:
    """Gray's tests with the noise in their variance (dp_uncertainty.noise_aware_wald)."""
    from coordinator.dp_uncertainty import (
        NOTE_TEST,
        gray_score_var,
        gray_scores,
        noise_aware_wald,
    )

    _, boot = _block_replicates(noisy, plan, a, sigma, rng, mechanism)
    raw = _grouped(noisy, plan, a)
    g = _grouped(released, plan, a)
    reps = _grouped_replicates(boot, plan, a)
    ep = plan.endpoint(a.endpoint)  # type: ignore[arg-type]
    for k, cause in enumerate(ep.causes, start=1):
        entry = res["causes"][cause.name]
        entry["stat_postprocessed"] = entry["stat"]
        _, v, tested, testable = gray_score_var(g, k)
        if not testable:
            continue
        test = noise_aware_wald(gray_scores(raw, k), v, gray_scores(reps, k), tested)
        entry.update(stat=jsonable(test.stat), p=jsonable(test.p))
    res["dp_uncertainty"] = NOTE_TEST.format(b=boot.shape[0])


def _dp_rmst(res: dict[str, Any], released: Tallies, noisy: Tallies, plan: Plan, a: Analysis, sigma: float,
             rng: np.random.Generator, mechanism: str = "gaussian") -> None:
    """RMST per group and its contrasts, with standard errors that include the noise (dp_uncertainty.rmst_dp)."""
    from coordinator.dp_uncertainty import NOTE_RMST, rmst_dp

    _, boot = _block_replicates(noisy, plan, a, sigma, rng, mechanism)
    g = _two_column(_grouped(released, plan, a).sum(axis=0), plan, a)
    raw = _two_column(_grouped(noisy, plan, a).sum(axis=0), plan, a)
    reps = _two_column(_grouped_replicates(boot, plan, a).sum(axis=1), plan, a)
    level, ctype = _conf(plan, a)
    levels = list(plan.variable(a.groups).levels)  # type: ignore[arg-type]
    out = []
    for i in range(len(levels)):
        table = kaplan_meier(plan.bin_times(), g[i, :, 1], g[i, :, 0], conf_level=level, conf_type=ctype)
        out.append(rmst_dp(plan.bin_times(), raw[i], reps[:, i], a.tau, rmst(table, a.tau)[1],  # type: ignore[arg-type]
                           method=plan.privacy.postprocess))  # type: ignore[union-attr]
    comp = jsonable(compare_rmst(levels, np.array([r.estimate for r in out]), np.array([r.std_err for r in out]),
                                 conf_level=level, tau=a.tau).to_dict())
    for lab, r in zip(levels, out):
        comp["groups"][lab].update(std_err_noise=jsonable(r.std_err_noise), dp_centre=r.centre)
    res.update(comp, sentences=rmst_sentences(comp, a.groups, a.tau, plan.time_unit, level),  # type: ignore[arg-type]
               dp_uncertainty=NOTE_RMST.format(b=boot.shape[0]))


def _dp_proportion(res: dict[str, Any], released: Tallies, noisy: Tallies, plan: Plan, a: Analysis, sigma: float,
                   rng: np.random.Generator, mechanism: str = "gaussian") -> None:
    """Limits of a proportion of noisy counts that include the noise (dp_uncertainty.proportion_dp_ci)."""
    from coordinator.dp_uncertainty import NOTE_PROPORTION, proportion_dp_ci

    levels = plan.variable(a.variable).levels or ()  # type: ignore[arg-type]
    k_s = len(a.success)
    _, lo, hi = proportion_dp_ci(res["successes"], res["n"], sigma, k_s, len(levels) - k_s,
                                 conf_level=plan.conf_level, method=a.method)
    how = ("Wilson's score interval with the noise variance added" if a.method == "wilson" else
           "Clopper-Pearson limits at the effective sample size n* = p(1-p)/Var(p) (Korn & Graubard 1998)")
    res.update(lower=lo, upper=hi, dp_uncertainty=NOTE_PROPORTION.format(how=how))


DP_UNCERTAINTY = {"cif": _dp_cif, "logrank": _dp_logrank, "gray": _dp_gray, "rmst": _dp_rmst,
                  "proportion": _dp_proportion}
