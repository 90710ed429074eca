"""Fine-Gray subdistribution hazards regression on the plan's grid, as ``cmprsk::crr``.

Outcomes: 0 censored, 1 the cause of interest, 2 a competing event. After a competing event
a patient stays in the risk set of later failures of interest with the weight
G(t_fail-) / G(t_own-), G the Kaplan-Meier estimate of the censoring distribution (only
code 0 censors it). On a grid G(b-) = prod_{k < b} (1 - c_k / n_k) is a function of the
pooled histogram, so the weighted risk set at a bin c with failures is
  S0(c) = sum_{rows exiting in bins >= c} r + G(c-) sum_{bins b < c} (sum_{competing in b} r) / G(b-)
and likewise S1 (r x) and S2 (r x x'): per-bin sums by outcome that sites can send. Ties as
Breslow (crr's only choice).

crr's variance is H^-1 (sum_i (eta_i + psi_i)(eta_i + psi_i)') H^-1 (Fine & Gray 1999,
section 3): eta_i the score residual and psi_i the term for estimating G, which on the grid
depends only on the patient's exit bin and outcome. With the pooled per-bin quantities,
for a row exiting in bin b,
  eta_i = [failure] (x_i - xbar_b) - r_i (A_b x_i - B_b) - [competing] r_i (A'_b x_i - B'_b) / G(b-)
with A_b = sum_{c <= b} d_c / S0_c, B_b = sum_{c <= b} d_c xbar_c / S0_c and A'_b, B'_b the
same over c > b weighted by G(c-); and psi_i = -sum_{b' <= b} c_b' q_b' / n_b'^2
+ [censored] q_b / n_b with q_b = sum_{c >= b} d_c G(c-) (C1_b - xbar_c C0_b) / S0_c, where C0_b,
C1_b are the G-weighted competing sums over bins before b. So sum_i (eta_i + psi_i)(..)' needs
per-(bin, outcome) sums of x, x x', r, r x, r x x', r^2, r^2 x, r^2 x x': one round, the one
at the final beta.

The Newton path is crr's (cmprsk 2.2-11, Gray): start at 0; stop when
max |score_j| max(|b_j|, 1) < max(|loglik|, 1) gtol (gtol = 1e-6); otherwise a Newton step,
halved while -loglik(b + step) > -loglik(b) - 1e-4 step' score (Armijo backtracking, at most
20 halvings); at most maxiter (10) steps.

References: Fine & Gray (1999) JASA 94:496-509; Gray, cmprsk package documentation (crr).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2, norm

from coordinator.cox import _bin_sum, unflatten

N_OUTCOMES = 3  # 0 censored, 1 cause of interest, 2 competing


@dataclass(frozen=True)
class FineGrayBinSums:
    """Per-(bin, outcome) sums for one beta; all add up over sites. Shapes (B, 3, ...)."""

    n: np.ndarray      # (B, 3)
    x: np.ndarray      # (B, 3, p)
    xx: np.ndarray     # (B, 3, p, p)
    r: np.ndarray      # (B, 3)
    rx: np.ndarray     # (B, 3, p)
    rxx: np.ndarray    # (B, 3, p, p)
    r2: np.ndarray     # (B, 3)
    r2x: np.ndarray    # (B, 3, p)
    r2xx: np.ndarray   # (B, 3, p, p)

    def __add__(self, other: FineGrayBinSums) -> FineGrayBinSums:
        return FineGrayBinSums(**{k: getattr(self, k) + getattr(other, k) for k in _FIELDS})

    def flat(self) -> np.ndarray:
        return np.concatenate([getattr(self, k).ravel() for k in _FIELDS])

    @classmethod
    def from_flat(cls, vec: np.ndarray, n_bins: int, p: int) -> FineGrayBinSums:
        return cls(**unflatten(vec, {k: (n_bins, N_OUTCOMES) + (p,) * k.count("x") for k in _FIELDS}))


_FIELDS = ("n", "x", "xx", "r", "rx", "rxx", "r2", "r2x", "r2xx")


def finegray_bin_sums(time_bin, outcome, X, beta, n_bins: int) -> FineGrayBinSums:
    """A site's per-(bin, outcome) sums for one beta; outcome 0 censored, 1 cause, 2 competing."""
    b = np.asarray(time_bin, dtype=np.int64)
    o = np.asarray(outcome, dtype=np.int64)
    if np.any((o < 0) | (o > 2)):
        raise ValueError("outcome codes must be 0 (censored), 1 (cause) or 2 (competing)")
    X = np.asarray(X, dtype=float)
    x = X.reshape(len(b), X.shape[-1] if X.ndim == 2 else -1)
    r = np.exp(x @ np.asarray(beta, dtype=float))
    cell = b * N_OUTCOMES + o
    m = n_bins * N_OUTCOMES
    xx = x[:, :, None] * x[:, None, :]
    r2 = r * r

    def cells(v):
        return _bin_sum(cell, v, m).reshape((n_bins, N_OUTCOMES) + v.shape[1:])

    return FineGrayBinSums(
        n=cells(np.ones(len(b))), x=cells(x), xx=cells(xx),
        r=cells(r), rx=cells(r[:, None] * x), rxx=cells(r[:, None, None] * xx),
        r2=cells(r2), r2x=cells(r2[:, None] * x), r2xx=cells(r2[:, None, None] * xx))


def censoring_km(n: np.ndarray) -> np.ndarray:
    """G(b-) per bin: Kaplan-Meier of the censoring times (code 0 is the 'event'), left limit.

    n: (B, 3) pooled counts per bin and outcome. As crr's summary(survfit(...), times =
    t (1 - eps)): the product over earlier bins of (1 - censored / at risk).
    """
    at_risk = np.cumsum(n.sum(axis=1)[::-1])[::-1]
    factor = np.where(at_risk > 0, 1 - n[:, 0] / np.where(at_risk > 0, at_risk, 1), 1.0)
    return np.concatenate([[1.0], np.cumprod(factor)[:-1]])


@dataclass(frozen=True)
class FineGrayPoint:
    loglik: float
    score: np.ndarray
    info: np.ndarray
    meat: np.ndarray   # sum_i (eta_i + psi_i)(eta_i + psi_i)'


def _revcum(a):
    return np.cumsum(a[::-1], axis=0)[::-1]


def _excl_cum(a):
    """Sum over earlier bins (exclusive cumulative sum along axis 0)."""
    c = np.cumsum(a, axis=0)
    return np.concatenate([np.zeros_like(c[:1]), c[:-1]])


def finegray_point(s: FineGrayBinSums, beta, with_meat: bool = True) -> FineGrayPoint:
    """Log pseudo-likelihood, score, information (and the variance's middle) at beta."""
    beta = np.asarray(beta, dtype=float)
    p = s.x.shape[-1]
    gm = censoring_km(s.n)                                    # G(b-)
    # G(b-) = 0 only after a bin where everyone left at risk was censored: no row lies beyond
    # it, so every sum divided by G there is 0 and any positive divisor gives that 0.
    gd = np.where(gm > 0, gm, 1.0)
    d = s.n[:, 1]
    # competing rows weighted by 1 / G(own bin -), summed over bins strictly before c
    cw0, cw1, cw2 = (_excl_cum(v[:, 2] / gd.reshape((-1,) + (1,) * (v.ndim - 2)))
                     for v in (s.r, s.rx, s.rxx))
    s0 = _revcum(s.r.sum(axis=1)) + gm * cw0
    s1 = _revcum(s.rx.sum(axis=1)) + gm[:, None] * cw1
    s2 = _revcum(s.rxx.sum(axis=1)) + gm[:, None, None] * cw2
    ev = d > 0
    s0e = np.where(ev, s0, 1.0)
    xbar = np.where(ev[:, None], s1 / s0e[:, None], 0.0)
    sum_x = s.x[:, 1].sum(axis=0)
    loglik = float(sum_x @ beta - np.sum(d[ev] * np.log(s0[ev])))
    score = sum_x - (d[:, None] * xbar).sum(axis=0)
    info = (np.einsum("b,bij->ij", d / s0e, s2)
            - np.einsum("b,bi,bj->ij", d, xbar, xbar))
    if not with_meat:
        return FineGrayPoint(loglik, score, info, np.full((p, p), np.nan))

    h = d / s0e                                # hazard increments
    hg = h * gm                                # the same weighted by G(c-)
    A = np.cumsum(h)
    B = np.cumsum(h[:, None] * xbar, axis=0)
    Aq = _revcum(hg)                           # over c >= b
    Bq = _revcum(hg[:, None] * xbar)
    Ap = Aq - hg                               # over c > b
    Bp = Bq - hg[:, None] * xbar
    q = cw1 * Aq[:, None] - cw0[:, None] * Bq
    at_risk = _revcum(s.n.sum(axis=1))
    nr = np.where(at_risk > 0, at_risk, 1.0)
    psi_cum = -np.cumsum((s.n[:, 0] / nr**2)[:, None] * q, axis=0)
    psi0 = psi_cum + q / nr[:, None]

    meat = (_group_outer(s, 1, 1.0, xbar - psi_cum, A, B)
            + _group_outer(s, 0, 0.0, -psi0, A, B)
            + _group_outer(s, 2, 0.0, -psi_cum, A + Ap / gd, B + Bp / gd[:, None]))
    return FineGrayPoint(loglik, score, info, meat)


def _group_outer(s: FineGrayBinSums, o: int, alpha: float, m, A, B) -> np.ndarray:
    """sum over rows with outcome o of u u', u = alpha x - m + r (B - A x), per bin, summed.

    alpha, m, A, B are the same for every row of a bin and outcome, so the sum is a
    polynomial in that cell's sums of x, x x', r, r x, r x x', r^2, r^2 x, r^2 x x'.
    """
    n, sx, sxx = s.n[:, o], s.x[:, o], s.xx[:, o]
    sr, srx, srxx = s.r[:, o], s.rx[:, o], s.rxx[:, o]
    sr2, sr2x, sr2xx = s.r2[:, o], s.r2x[:, o], s.r2xx[:, o]

    def outer(u, v):
        return u[:, :, None] * v[:, None, :]

    vv = alpha * (sxx - outer(sx, m) - outer(m, sx)) + n[:, None, None] * outer(m, m)
    vw = (alpha * (outer(srx, B) - A[:, None, None] * srxx)
          - outer(m, sr[:, None] * B - A[:, None] * srx))
    ww = (sr2[:, None, None] * outer(B, B)
          - A[:, None, None] * (outer(B, sr2x) + outer(sr2x, B))
          + (A * A)[:, None, None] * sr2xx)
    return (vv + vw + vw.transpose(0, 2, 1) + ww).sum(axis=0)


@dataclass(frozen=True)
class FineGrayResult:
    coef: np.ndarray
    var: np.ndarray
    loglik: float              # at the estimate (crr's loglik)
    loglik0: float             # at beta = 0
    score: np.ndarray
    info: np.ndarray
    iterations: int
    converged: bool
    n: int
    n_event: int
    n_competing: int


def finegray_fit(sums_fn: Callable[[np.ndarray], FineGrayBinSums], p: int,
                 gtol: float = 1e-6, maxiter: int = 10) -> FineGrayResult:
    """Replay crr's Newton path; sums_fn(beta) returns the pooled sums (one round per call)."""
    from coordinator.cox import drive

    return drive(finegray_path(p, gtol, maxiter), sums_fn)  # type: ignore[return-value]


def finegray_path(p: int, gtol: float = 1e-6, maxiter: int = 10
                  ) -> Generator[np.ndarray, FineGrayBinSums, FineGrayResult]:
    """crr's path as a generator: yields each beta it needs the pooled sums at, is sent them,
    returns the FineGrayResult (as coordinator.cox.cox_path)."""
    b = np.zeros(p)
    converged = False
    it = 0
    pt = finegray_point((yield b.copy()), b, with_meat=False)
    loglik0 = pt.loglik
    for it in range(maxiter + 1):
        f, g = -pt.loglik, -pt.score
        if np.max(np.abs(g) * np.maximum(np.abs(b), 1)) < max(abs(f), 1) * gtol:
            converged = True
            break
        if it == maxiter:
            break
        sc = -np.linalg.solve(pt.info, g)
        bn = b + sc
        new = finegray_point((yield bn.copy()), bn, with_meat=False)
        halvings = 0
        while not np.isfinite(new.loglik) or -new.loglik > f + 1e-4 * float(sc @ g):
            halvings += 1
            sc = sc * 0.5
            bn = b + sc
            new = finegray_point((yield bn.copy()), bn, with_meat=False)
            if halvings > 20:
                break
        if halvings > 20:
            break
        b, pt = bn, new
    s = yield b.copy()
    final = finegray_point(s, b)
    hinv = np.linalg.inv(final.info)
    var = hinv @ final.meat @ hinv.T
    return FineGrayResult(
        coef=b, var=var, loglik=final.loglik, loglik0=loglik0, score=final.score, info=final.info,
        iterations=it, converged=converged, n=round(s.n.sum()),
        n_event=round(s.n[:, 1].sum()), n_competing=round(s.n[:, 2].sum()))


def finegray_result_dict(fit: FineGrayResult, terms: Sequence[str], conf_level: float = 0.95) -> dict:
    """results.json's block for kind "finegray", the shape of a Cox block (issue 8).

    crr's variance is already the sandwich, so std_err and robust_std_err are the same; the
    Wald test is b' V^-1 b; LR 2 (l(b) - l(0)) of the pseudo-likelihood (not chi-square
    distributed under the weights: reported for completeness, as crr reports no test).
    """
    se = np.sqrt(np.diag(fit.var))
    z = norm.ppf(1 - (1 - conf_level) / 2)
    wald = float(fit.coef @ np.linalg.solve(fit.var, fit.coef))
    p = len(fit.coef)
    return {
        "kind": "finegray", "terms": list(terms), "ties": "breslow", "robust": True,
        "coef": fit.coef.tolist(), "std_err": se.tolist(), "robust_std_err": se.tolist(),
        "hazard_ratio": np.exp(fit.coef).tolist(),
        "lower": np.exp(fit.coef - z * se).tolist(), "upper": np.exp(fit.coef + z * se).tolist(),
        "var": fit.var.tolist(), "loglik": [fit.loglik0, fit.loglik],
        "tests": {"wald": wald, "score": None, "lr": 2 * (fit.loglik - fit.loglik0), "df": p,
                  "p_wald": float(chi2.sf(wald, p))},
        "iterations": fit.iterations, "converged": fit.converged,
        "n": fit.n, "n_event": fit.n_event, "n_competing": fit.n_competing,
    }
