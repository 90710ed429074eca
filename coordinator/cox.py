"""Cox proportional hazards on the plan's time grid from per-bin sums, as R's ``coxph``.

On a grid every patient leaves the risk set in one bin, so the partial likelihood, its
score and information (Breslow or Efron ties) are functions of per-bin sums that a site
can compute for a broadcast beta and that add up over sites: over the rows exiting in bin
b (censored or not) the count and the sums of r = exp(x'beta), r x, r x x'; over the rows
with an event in b the count and the sums of x, r, r x, r x x'. Risk sets are reverse
cumulative sums over bins (a row censored in bin b is at risk at b, as R puts deaths
before censorings at a tied time).

The robust (sandwich) variance of ``coxph(robust = TRUE)`` is V D V with V the inverse
information and D = sum_i U_i U_i' over patients of the score residuals (Lin & Wei 1989).
On the grid U_i = delta_i (x_i - m(b_i)) - r_i (A x_i - B) where the scalar A and vector B
(the cumulative hazard and the hazard-weighted covariate mean up to and within the exit
bin, Efron-adjusted for the patient's own tied deaths) and m depend only on the pooled
per-bin risk sums and on the exit bin and status of the patient. Expanding U_i U_i' gives D
from per-(bin, status) sums of x x' (events), and of r^2, r^2 x, r^2 x x', all computable
at the site for the same beta: no extra round is needed, the round that converges carries
them. (An alternative with one more round: broadcast A, B, m per bin and let each site
return sum_i U_i U_i'.)

The Newton path is the one of survival's coxfit6.c (Therneau; survival 3.5-3): start at
beta = 0; a full Newton step; when the log-likelihood decreases (or is not finite) step
back towards the last good beta, newbeta = (newbeta + h beta) / (h + 1) at the h-th
consecutive halving; stop as soon as |1 - l_best / l_new| <= eps (1e-9) at the new beta,
which then is the estimate; at most iter.max (20) iterations. R centres (and scales) the
covariates internally; in exact arithmetic neither changes the path, the log-likelihood
or the variances, so the site centres by a public centre vector and the coefficients are
reported on the original scale.

References: Cox (1972) JRSS B 34:187-220; Efron (1977) JASA 72:557-565; Breslow (1974)
Biometrics 30:89-99; Lin & Wei (1989) JASA 84:1074-1078; Therneau & Grambsch (2000)
Modeling Survival Data, sections 3.3 and 7.2.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.linalg import cho_factor, cho_solve
from scipy.stats import chi2, norm

from protocol.errors import AggregationError


@dataclass(frozen=True)
class CoxBinSums:
    """Per-bin sums for one beta; every field adds up over sites (shapes: B bins, p covariates).

    exit_* are over all rows exiting in the bin, event_* over rows with an event there,
    cens_r2* over rows censored there; r = exp(x'beta) with x centred by the plan.
    """

    n_exit: np.ndarray        # (B,)
    exit_r: np.ndarray        # (B,)
    exit_rx: np.ndarray       # (B, p)
    exit_rxx: np.ndarray      # (B, p, p)
    n_event: np.ndarray       # (B,)
    event_x: np.ndarray       # (B, p)
    event_xx: np.ndarray      # (B, p, p)
    event_r: np.ndarray       # (B,)
    event_rx: np.ndarray      # (B, p)
    event_rxx: np.ndarray     # (B, p, p)
    event_r2: np.ndarray      # (B,)
    event_r2x: np.ndarray     # (B, p)
    event_r2xx: np.ndarray    # (B, p, p)
    cens_r2: np.ndarray       # (B,)
    cens_r2x: np.ndarray      # (B, p)
    cens_r2xx: np.ndarray     # (B, p, p)

    def __add__(self, other: CoxBinSums) -> CoxBinSums:
        return CoxBinSums(**{k: getattr(self, k) + getattr(other, k) for k in _FIELDS})

    def flat(self) -> np.ndarray:
        """All fields in one float64 vector (field order fixed), as a site would send them."""
        return np.concatenate([np.asarray(getattr(self, k), dtype=float).ravel() for k in _FIELDS])

    @classmethod
    def from_flat(cls, vec: np.ndarray, n_bins: int, p: int) -> CoxBinSums:
        return cls(**unflatten(vec, {k: _shape(k, n_bins, p) for k in _FIELDS}))


def unflatten(vec: np.ndarray, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Cut a flat vector into named float arrays of the given shapes, in order; every value used."""
    out, pos = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        out[name] = np.asarray(vec[pos:pos + size], dtype=float).reshape(shape)
        pos += size
    if pos != len(vec):
        raise ValueError(f"expected {pos} values for shapes {list(shapes.values())[:2]}..., got {len(vec)}")
    return out


_FIELDS = ("n_exit", "exit_r", "exit_rx", "exit_rxx", "n_event", "event_x", "event_xx",
           "event_r", "event_rx", "event_rxx", "event_r2", "event_r2x", "event_r2xx",
           "cens_r2", "cens_r2x", "cens_r2xx")


def _shape(name: str, n_bins: int, p: int) -> tuple[int, ...]:
    if name.endswith("xx"):
        return (n_bins, p, p)
    if name.endswith("x"):
        return (n_bins, p)
    return (n_bins,)


def _bin_sum(bins: np.ndarray, values: np.ndarray, n_bins: int) -> np.ndarray:
    """Sum of values (rows, ...) per bin: one sparse product, the rows summed in order."""
    flat = values.reshape(len(values), int(np.prod(values.shape[1:])))
    return (_by_bin(bins, n_bins) @ flat).reshape((n_bins,) + values.shape[1:])


def _by_bin(bins: np.ndarray, n_bins: int, weights: np.ndarray | None = None) -> sparse.csr_matrix:
    """(n_bins, rows) matrix summing rows into their bins, optionally weighted."""
    n = len(bins)
    w = np.ones(n) if weights is None else weights
    return sparse.csr_matrix((w, (bins, np.arange(n))), shape=(n_bins, n))


def cox_bin_sums(time_bin, event, X, beta, n_bins: int) -> CoxBinSums:
    """A site's per-bin sums for one beta (see the module docstring for what they are).

    time_bin: (n,) int bin index of each row's time on the plan's grid; event: (n,) bool,
    the event of interest (other outcomes are censored); X: (n, p) centred covariates.
    Every weighted sum is one sparse product of per-(field, bin) row weights (r over exits;
    1, r, r^2 over events; r^2 over censored rows) with 1, x and x x': each term is the same
    product w_i v_i as summing the weighted rows bin by bin, in the same order.
    """
    b = np.asarray(time_bin, dtype=np.int64)
    ev = np.asarray(event, dtype=bool)
    X = np.asarray(X, dtype=float)
    x = X.reshape(len(b), X.shape[-1] if X.ndim == 2 else -1)
    n, p = x.shape
    beta = np.asarray(beta, dtype=float)
    if b.size and (b.min() < 0 or b.max() >= n_bins):
        raise ValueError("time bins must lie in 0 .. n_bins - 1")
    r = np.exp(x @ beta)
    r2 = r * r
    e = ev.astype(float)
    c = 1.0 - e
    groups = (r, e, e * r, e * r2, c * r2)   # exit r; event 1, r, r^2; censored r^2
    W = sparse.vstack([_by_bin(b, n_bins, w) for w in groups]).tocsr()
    k = len(groups)
    scal = (W @ np.ones(n)).reshape(k, n_bins)
    vec = (W @ x).reshape(k, n_bins, p)
    mat = (W @ (x[:, :, None] * x[:, None, :]).reshape(n, p * p)).reshape(k, n_bins, p, p)
    return CoxBinSums(
        n_exit=np.bincount(b, minlength=n_bins).astype(float),
        exit_r=scal[0], exit_rx=vec[0], exit_rxx=mat[0],
        n_event=scal[1], event_x=vec[1], event_xx=mat[1],
        event_r=scal[2], event_rx=vec[2], event_rxx=mat[2],
        event_r2=scal[3], event_r2x=vec[3], event_r2xx=mat[3],
        cens_r2=scal[4], cens_r2x=vec[4], cens_r2xx=mat[4],
    )


@dataclass(frozen=True)
class CoxPoint:
    """Log partial likelihood, score, information and score residual terms at one beta.

    Additive over strata: a stratified model (strata a plan variable, or "site", where each
    site sends only its own point, masked) is the sum of the strata's points.
    """

    loglik: float
    score: np.ndarray         # (p,)
    info: np.ndarray          # (p, p)
    robust_meat: np.ndarray   # (p, p) D = sum_i U_i U_i'
    n: int = 0
    n_event: int = 0

    def __add__(self, other: CoxPoint) -> CoxPoint:
        return CoxPoint(self.loglik + other.loglik, self.score + other.score, self.info + other.info,
                        self.robust_meat + other.robust_meat, self.n + other.n, self.n_event + other.n_event)

    def flat(self) -> np.ndarray:
        """loglik, score, info, meat, n, n_event in one vector (a site's reply with strata = "site")."""
        return np.concatenate([[self.loglik], self.score, self.info.ravel(), self.robust_meat.ravel(),
                               [self.n, self.n_event]])

    @classmethod
    def from_flat(cls, vec, p: int) -> CoxPoint:
        v = np.asarray(vec, dtype=float)
        if len(v) != 3 + p + 2 * p * p:
            raise ValueError(f"expected {3 + p + 2 * p * p} values for {p} covariates, got {len(v)}")
        return cls(float(v[0]), v[1:1 + p], v[1 + p:1 + p + p * p].reshape(p, p),
                   v[1 + p + p * p:1 + p + 2 * p * p].reshape(p, p), round(v[-2]), round(v[-1]))


def _tie_terms(s: CoxBinSums, ties: str):
    """Expand bins with events into one term per event (Efron) or one per bin (Breslow).

    Returns (bin index, fraction k/d of the tied events' sums removed, weight) per term.
    coxfit6.c uses the Breslow form where a bin has a single event; it is the same term.
    """
    d = np.rint(s.n_event).astype(np.int64)
    bins = np.flatnonzero(d > 0)
    if ties == "breslow":
        return bins, np.zeros(len(bins)), d[bins].astype(float)
    if ties != "efron":
        raise ValueError(f"ties must be 'efron' or 'breslow', not {ties!r}")
    reps = d[bins]
    tb = np.repeat(bins, reps)
    start = np.repeat(np.cumsum(reps) - reps, reps)
    k = np.arange(reps.sum()) - start
    return tb, k / d[tb], np.ones(len(tb))


def cox_point(s: CoxBinSums, beta, ties: str = "efron") -> CoxPoint:
    """Log partial likelihood, score and information at beta from pooled per-bin sums.

    With risk sums R_b = sum_{bins c >= b} exit sums, and for a bin with d tied events the
    terms k = 0..d-1 (Efron: fraction f = k/d of the events' sums removed, weight 1;
    Breslow: one term f = 0 with weight d):
      loglik = sum_events x'beta - sum_terms w log(D_k),   D_k = R_b - f E_b
      U = sum_events x - sum_terms w a_k / D_k,             a_k = Ra_b - f Ea_b
      I = sum_terms w (C_k / D_k - a_k a_k' / D_k^2),        C_k = Rc_b - f Ec_b
    (Efron 1977; Therneau & Grambsch 2000, section 3.3). The score residual parts are
    described in the module docstring and in ``_robust_meat``.
    """
    beta = np.asarray(beta, dtype=float)
    risk_r = np.cumsum(s.exit_r[::-1])[::-1]
    risk_rx = np.cumsum(s.exit_rx[::-1], axis=0)[::-1]
    risk_rxx = np.cumsum(s.exit_rxx[::-1], axis=0)[::-1]
    tb, f, w = _tie_terms(s, ties)
    den = risk_r[tb] - f * s.event_r[tb]
    a = risk_rx[tb] - f[:, None] * s.event_rx[tb]
    c = risk_rxx[tb] - f[:, None, None] * s.event_rxx[tb]
    xbar = a / den[:, None]
    sum_x = s.event_x.sum(axis=0)
    loglik = float(sum_x @ beta - np.sum(w * np.log(den)))
    score = sum_x - (w[:, None] * xbar).sum(axis=0)
    info = np.einsum("t,tij->ij", w / den, c) - np.einsum("t,ti,tj->ij", w, xbar, xbar)
    meat = _robust_meat(s, tb, f, w, den, xbar)
    return CoxPoint(loglik=loglik, score=score, info=info, robust_meat=meat,
                    n=round(s.n_exit.sum()), n_event=round(s.n_event.sum()))


def _as_point(sums: CoxBinSums | Sequence[CoxBinSums] | CoxPoint, beta, ties: str) -> CoxPoint:
    """A round's pooled reply as one point: per-bin sums, per-stratum sums, or a point itself."""
    if isinstance(sums, CoxPoint):
        return sums
    if isinstance(sums, CoxBinSums):
        return cox_point(sums, beta, ties)
    points = [cox_point(s, beta, ties) for s in sums]
    total = points[0]
    for pt in points[1:]:
        total = total + pt
    return total


def _robust_meat(s: CoxBinSums, tb, f, w, den, xbar) -> np.ndarray:
    """D = sum_i U_i U_i' from per-(bin, status) sums, U_i the score residual of coxph.

    Per bin with events, over its tie terms: hazard h = sum w / D_k, the events' own share
    h1 = sum w (1 - f) / D_k, mh = sum w xbar_k / D_k, mh1 = sum w (1 - f) xbar_k / D_k and
    the events' mean m = sum w xbar_k / d. With H, XH the cumulative sums of h, mh over
    earlier bins, a row exiting in bin b has
      censored: U = -r (A x - B),          A = H(b) + h_b,  B = XH(b) + mh_b
      event:    U = (x - m_b) - r (A x - B), A = H(b) + h1_b, B = XH(b) + mh1_b
    (Therneau & Grambsch 2000, section 7.2; Efron-adjusted as survival's score residuals).
    Summing the outer products per bin needs sum x, x x' (events) and sum r, r x, r x x',
    r^2, r^2 x, r^2 x x' per status.
    """
    n_bins, p = s.exit_rx.shape
    haz = np.bincount(tb, weights=w / den, minlength=n_bins)
    haz1 = np.bincount(tb, weights=w * (1 - f) / den, minlength=n_bins)
    mh = _bin_sum(tb, (w / den)[:, None] * xbar, n_bins)
    mh1 = _bin_sum(tb, (w * (1 - f) / den)[:, None] * xbar, n_bins)
    d = np.maximum(s.n_event, 1.0)
    m = _bin_sum(tb, w[:, None] * xbar, n_bins) / d[:, None]
    cum_h = np.concatenate([[0.0], np.cumsum(haz)[:-1]])
    cum_mh = np.concatenate([np.zeros((1, p)), np.cumsum(mh, axis=0)[:-1]])

    def rr_part(A, B, r, rx, rxx, r2, r2x, r2xx, x, xx, n, mm):
        # sum over rows of (v + w)(v + w)' with v = x - mm (events only), w = r (B - A x)
        ww = (r2[:, None, None] * B[:, :, None] * B[:, None, :]
              - A[:, None, None] * (B[:, :, None] * r2x[:, None, :] + r2x[:, :, None] * B[:, None, :])
              + (A * A)[:, None, None] * r2xx)
        if x is None:
            return ww.sum(axis=0)
        vv = (xx - x[:, :, None] * mm[:, None, :] - mm[:, :, None] * x[:, None, :]
              + n[:, None, None] * mm[:, :, None] * mm[:, None, :])
        vw = (rx[:, :, None] * B[:, None, :] - A[:, None, None] * rxx
              - r[:, None, None] * mm[:, :, None] * B[:, None, :]
              + A[:, None, None] * mm[:, :, None] * rx[:, None, :])
        return (vv + vw + vw.transpose(0, 2, 1) + ww).sum(axis=0)

    cens = rr_part(cum_h + haz, cum_mh + mh, None, None, None,
                   s.cens_r2, s.cens_r2x, s.cens_r2xx, None, None, None, None)
    evnt = rr_part(cum_h + haz1, cum_mh + mh1, s.event_r, s.event_rx, s.event_rxx,
                   s.event_r2, s.event_r2x, s.event_r2xx, s.event_x, s.event_xx, s.n_event, m)
    return cens + evnt


@dataclass(frozen=True)
class CoxResult:
    """coxph's fit on the original covariate scale (beta does not depend on centring)."""

    coef: np.ndarray
    var: np.ndarray
    robust_var: np.ndarray
    loglik: tuple[float, float]
    score_test: float
    wald_test: float
    robust_wald_test: float
    lr_test: float
    iterations: int
    converged: bool
    n: int
    n_event: int
    warnings: tuple[str, ...] = field(default=())


def _chol(info: np.ndarray):
    """Cholesky of the information (R: cholesky2); a matrix that is not positive definite is
    refused rather than given a generalised inverse as cholesky2's singular pivots would be."""
    try:
        return cho_factor(info, lower=True)
    except np.linalg.LinAlgError as err:
        raise np.linalg.LinAlgError("the information matrix is not positive definite") from err


Reply = CoxBinSums | Sequence[CoxBinSums] | CoxPoint


def drive(path: Generator[np.ndarray, object, object], sums_fn: Callable[[np.ndarray], object]):
    """Run a fitting path to its end, answering each beta it yields with sums_fn(beta)."""
    try:
        beta = next(path)
        while True:
            beta = path.send(sums_fn(beta))
    except StopIteration as stop:
        return stop.value


def cox_fit(sums_fn: Callable[[np.ndarray], Reply], p: int, ties: str = "efron", eps: float = 1e-9,
            iter_max: int = 20, toler_inf: float | None = None) -> CoxResult:
    """Replay coxfit6.c's Newton-Raphson path; sums_fn(beta) returns the pooled reply (see cox_path)."""
    return drive(cox_path(p, ties, eps, iter_max, toler_inf), sums_fn)  # type: ignore[return-value]


def cox_path(p: int, ties: str = "efron", eps: float = 1e-9, iter_max: int = 20,
             toler_inf: float | None = None) -> Generator[np.ndarray, Reply, CoxResult]:
    """coxfit6.c's Newton-Raphson path as a generator: it yields each beta at which it needs
    the pooled reply, is sent that reply, and returns the CoxResult. Several models can so
    share federated rounds: one round answers every unfinished model's beta.

    The reply is the pooled CoxBinSums, one CoxBinSums per stratum, or a pooled CoxPoint
    (strata = "site"); one call is one federated round. Score test u0' I0^-1 u0 at beta = 0;
    Wald test b' V^-1 b (coxph.wtest; with the robust V when robust); LR 2 (l(b) - l(0)).
    Warnings as coxph.fit: running out of iterations (the iteration count is then
    iter.max + 1, as coxfit6.c's loop leaves it, and the estimate is the last accepted beta),
    or a converged loglik while |U V| > eps and > toler.inf |beta| for a coefficient (default
    toler.inf sqrt(eps), as coxph.control): that beta may be infinite.
    """
    toler_inf = np.sqrt(eps) if toler_inf is None else toler_inf
    beta = np.zeros(p)
    pt = _as_point((yield beta.copy()), beta, ties)
    n, n_event = pt.n, pt.n_event
    loglik0 = pt.loglik
    step = cho_solve(_chol(pt.info), pt.score)
    score_test = float(pt.score @ step)
    best = loglik0
    new_beta = beta + step
    halving = 0
    converged = False
    warnings: list[str] = []
    it = 0
    for it in range(1, iter_max + 2):
        if it > iter_max:
            break
        pt = _as_point((yield new_beta.copy()), new_beta, ties)
        finite = np.isfinite(pt.loglik) and np.all(np.isfinite(pt.score)) and np.all(np.isfinite(pt.info))
        if finite and abs(1 - best / pt.loglik) <= eps:
            beta, best, converged = new_beta, pt.loglik, True
            break
        if not finite or pt.loglik < best:
            halving += 1
            new_beta = (new_beta + halving * beta) / (halving + 1.0)
        else:
            halving = 0
            best = pt.loglik
            beta, new_beta = new_beta, new_beta + cho_solve(_chol(pt.info), pt.score)
    if not converged and iter_max > 1:
        pt = _as_point((yield beta.copy()), beta, ties)
        best = pt.loglik
    var = cho_solve(_chol(pt.info), np.eye(p))
    var = (var + var.T) / 2
    if not converged:
        warnings.append("Ran out of iterations and did not converge")
    elif iter_max > 1:
        infs = np.abs(pt.score @ var)
        flag = ~np.isfinite(pt.score) | ((infs > eps) & (infs > toler_inf * np.abs(beta)))
        if flag.any():
            which = ",".join(str(i + 1) for i in np.flatnonzero(flag))
            warnings.append(f"Loglik converged before variable  {which} ; beta may be infinite. ")
    rvar = var @ pt.robust_meat @ var
    rvar = (rvar + rvar.T) / 2
    return CoxResult(
        coef=beta, var=var, robust_var=rvar, loglik=(loglik0, best),
        score_test=score_test, wald_test=float(beta @ np.linalg.solve(var, beta)),
        robust_wald_test=float(beta @ np.linalg.solve(rvar, beta)),
        lr_test=2 * (best - loglik0), iterations=it, converged=converged,
        n=n, n_event=n_event, warnings=tuple(warnings))


def cox_result_dict(fit: CoxResult, terms: Sequence[str], robust: bool, ties: str = "efron",
                    conf_level: float = 0.95, kind: str = "cox") -> dict:
    """The results.json block of issue 8 (hazard ratio limits use the robust SE if robust)."""
    se = np.sqrt(np.diag(fit.var))
    rse = np.sqrt(np.diag(fit.robust_var))
    use = rse if robust else se
    z = norm.ppf(1 - (1 - conf_level) / 2)
    wald = fit.robust_wald_test if robust else fit.wald_test
    with np.errstate(over="ignore"):  # a coefficient that may be infinite has an infinite limit, as in R
        lower, upper = np.exp(fit.coef - z * use), np.exp(fit.coef + z * use)
    p = len(fit.coef)
    return {
        "kind": kind, "terms": list(terms), "ties": ties, "robust": robust,
        "coef": fit.coef.tolist(), "std_err": se.tolist(),
        "robust_std_err": rse.tolist() if robust else None,
        "hazard_ratio": np.exp(fit.coef).tolist(),
        "lower": lower.tolist(), "upper": upper.tolist(),
        "var": (fit.robust_var if robust else fit.var).tolist(),
        "naive_var": fit.var.tolist(),
        "loglik": list(fit.loglik),
        "tests": {"wald": wald, "score": fit.score_test, "lr": fit.lr_test,
                  "df": p, "p_wald": float(chi2.sf(wald, p)),
                  "p_score": float(chi2.sf(fit.score_test, p)), "p_lr": float(chi2.sf(fit.lr_test, p))},
        "iterations": fit.iterations, "converged": fit.converged,
        "n": fit.n, "n_event": fit.n_event, "warnings": list(fit.warnings),
    }


def check_round_sums(sums: CoxBinSums, n_exit_round1, n_event_round1) -> None:
    """The coordinator's checks on a decoded round before using it (issue 8).

    The counts must equal round 1's (the same patients answered), every risk-set sum of
    exp(x'beta) must be positive where patients are at risk and non-increasing over bins,
    and the events' sums cannot exceed the exits'. A failure raises AggregationError: no
    estimate comes from sums that do not add up.
    """
    if not (np.array_equal(sums.n_exit, np.asarray(n_exit_round1, dtype=float))
            and np.array_equal(sums.n_event, np.asarray(n_event_round1, dtype=float))):
        raise AggregationError("the decoded counts differ from round 1's: not the same patients")
    risk = np.cumsum(sums.exit_r[::-1])[::-1]
    at_risk = np.cumsum(sums.n_exit[::-1])[::-1] > 0
    tol = 1e-9 * max(float(risk[0]) if len(risk) else 0.0, 1.0)
    if np.any(risk[at_risk] <= 0) or np.any(np.diff(risk) > tol):
        raise AggregationError("risk-set sums of exp(x'beta) are not positive and non-increasing")
    if np.any(sums.exit_r < -tol) or np.any(sums.event_r > sums.exit_r + tol):
        raise AggregationError("per-bin sums of exp(x'beta) are inconsistent (events exceed exits)")


def cox_sums_from_patterns(patterns, n_exit, n_event, beta) -> CoxBinSums:
    """The exact per-bin sums for any beta from integer tallies by covariate pattern.

    With covariates taking finitely many joint values (categorical covariates, or numeric
    ones on a coarse public scale) one round of integer tallies, exits and events per bin
    and pattern (patterns: (K, p) centred pattern values; n_exit, n_event: (B, K)), gives
    every later round's sums at the coordinator: sum_{rows} f(x) = sum_k count_k f(x_k).
    """
    xk = np.asarray(patterns, dtype=float)
    ne = np.asarray(n_exit, dtype=float)
    nv = np.asarray(n_event, dtype=float)
    nc = ne - nv
    r = np.exp(xk @ np.asarray(beta, dtype=float))
    xx = xk[:, :, None] * xk[:, None, :]

    def by(counts, w):
        return np.tensordot(counts, w, axes=(1, 0))

    return CoxBinSums(
        n_exit=ne.sum(axis=1), exit_r=by(ne, r), exit_rx=by(ne, r[:, None] * xk),
        exit_rxx=by(ne, r[:, None, None] * xx), n_event=nv.sum(axis=1), event_x=by(nv, xk),
        event_xx=by(nv, xx), event_r=by(nv, r), event_rx=by(nv, r[:, None] * xk),
        event_rxx=by(nv, r[:, None, None] * xx), event_r2=by(nv, r * r),
        event_r2x=by(nv, (r * r)[:, None] * xk), event_r2xx=by(nv, (r * r)[:, None, None] * xx),
        cens_r2=by(nc, r * r), cens_r2x=by(nc, (r * r)[:, None] * xk),
        cens_r2xx=by(nc, (r * r)[:, None, None] * xx))
