"""The analysis plan: the one document a coordinator writes and every site reads.

A plan is parsed from TOML into frozen dataclasses, validated with errors that name the
offending key, and identified everywhere by the SHA-256 of its canonical JSON form.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from protocol.errors import FedsurvError

if TYPE_CHECKING:
    from protocol.dp_plan import PrivacySpec

KINDS = ("km", "cif", "logrank", "proportion", "describe", "gray", "rmst", "cox", "finegray")
# Regression kinds take Newton rounds after the tally round (coordinator/regression_rounds.py).
REGRESSION_KINDS = ("cox", "finegray")
TIES = ("efron", "breslow")
# strata = "site" stratifies a Cox model by site: each site sends only its own point.
SITE_STRATA = "site"
CONF_TYPES = ("log-log", "log", "plain")
TIME_UNITS = ("days", "weeks", "months", "years")
# Days per unit when time is derived from dates; months and years follow the Julian year,
# the convention of most registries (and of lubridate's time_length).
DAYS_PER_UNIT = {"days": 1.0, "weeks": 7.0, "months": 365.25 / 12.0, "years": 365.25}
PROPORTION_METHODS = ("clopper-pearson", "wilson")
ANY_CAUSE = "any"


def grid_bins(horizon: float, bin_width: float) -> int:
    """Bins of a grid: 0..ceil(horizon / bin_width); bin i holds times in ((i-1)w, iw]."""
    return int(math.ceil(horizon / bin_width - 1e-9)) + 1


class PlanError(FedsurvError, ValueError):
    """A plan that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Cause:
    code: int
    name: str


@dataclass(frozen=True)
class Endpoint:
    """A time-to-event endpoint, read from a time and an event column or derived from dates.

    Column form: ``time`` and ``event`` name columns; ``censored`` lists the censoring codes
    and ``causes`` maps every other allowed code to a cause name.
    Date form: ``origin`` names the origin date column, ``dates`` maps each cause name to its
    date column (codes 1..K in that order) and ``last_followup`` names the date the follow-up
    ended. Time is measured from the origin to the first cause date, or to the last follow-up.
    """

    name: str
    causes: tuple[Cause, ...]
    time: str | None = None
    event: str | None = None
    censored: tuple[int, ...] = (0,)
    origin: str | None = None
    dates: tuple[tuple[str, str], ...] = ()
    last_followup: str | None = None

    @property
    def from_dates(self) -> bool:
        return self.origin is not None

    @property
    def n_causes(self) -> int:
        return len(self.causes)

    def cause_index(self, name: str) -> int:
        """1-based outcome index of a cause (0 is censored)."""
        for i, c in enumerate(self.causes, start=1):
            if c.name == name:
                return i
        raise KeyError(name)

    @property
    def columns(self) -> tuple[str, ...]:
        if self.from_dates:
            cols = [self.origin] + [c for _, c in self.dates] + [self.last_followup]
            return tuple(c for c in cols if c is not None)
        return (self.time, self.event)  # type: ignore[return-value]


@dataclass(frozen=True)
class Variable:
    """A categorical variable (``levels``) or a numeric one (``decimals`` and ``range``).

    Numeric values are sent as fixed-point integers: round(x * 10**decimals).
    ``missing`` says what a missing value does: "error" refuses the data, "drop" leaves the
    row out of analyses that use the variable (counted and reported), "count" keeps it as
    its own category in descriptions.
    """

    name: str
    levels: tuple[str, ...] | None = None
    decimals: int = 0
    range: tuple[float, float] | None = None
    missing: str = "error"
    column: str | None = None
    # Public centre and scale of a numeric regression covariate: the site uses (x - center) / scale.
    center: float | None = None
    scale: float | None = None

    @property
    def is_numeric(self) -> bool:
        return self.levels is None

    @property
    def source(self) -> str:
        return self.column or self.name

    @property
    def regression_center(self) -> float:
        """The centre a regression uses: the declared one, else the middle of the range."""
        if self.center is not None:
            return self.center
        assert self.range is not None
        return (self.range[0] + self.range[1]) / 2

    @property
    def regression_scale(self) -> float:
        return 1.0 if self.scale is None else self.scale

    @property
    def terms(self) -> tuple[str, ...]:
        """Model terms as R names them: the variable, or treatment contrasts NAMElevel
        against the first level."""
        if self.levels is None:
            return (self.name,)
        return tuple(f"{self.name}{lev}" for lev in self.levels[1:])


@dataclass(frozen=True)
class Analysis:
    name: str
    kind: str
    endpoint: str | None = None
    cause: str | None = None
    strata: tuple[str, ...] = ()
    groups: str | None = None
    times: tuple[float, ...] = ()
    variable: str | None = None
    success: tuple[str, ...] = ()
    method: str = "clopper-pearson"
    variables: tuple[str, ...] = ()
    rho: float = 0.0
    tau: float | None = None
    conf_type: str | None = None
    covariates: tuple[str, ...] = ()
    ties: str = "efron"
    robust: bool = False
    # A regression model's own grid (coarser than the plan's where bins would hold single exits).
    bin_width: float | None = None
    horizon: float | None = None

    @property
    def is_regression(self) -> bool:
        return self.kind in REGRESSION_KINDS

    @property
    def site_strata(self) -> bool:
        return self.strata == (SITE_STRATA,)

    @property
    def stratification(self) -> tuple[str, ...]:
        """Variables whose joint levels split the endpoint's histogram for this analysis."""
        if self.kind in ("logrank", "gray", "rmst"):
            return ((self.groups,) if self.groups else ()) + self.strata
        return self.strata


@dataclass(frozen=True)
class Plan:
    title: str
    time_unit: str
    bin_width: float
    horizon: float
    conf_level: float
    conf_type: str
    endpoints: tuple[Endpoint, ...]
    variables: tuple[Variable, ...]
    analyses: tuple[Analysis, ...]
    min_count_release: int = 0
    timeout_seconds: float = 120.0
    extra: tuple[tuple[str, Any], ...] = field(default=())
    # Opt-in distributed differential privacy (protocol/dp_plan.py); None answers exactly.
    privacy: PrivacySpec | None = None

    def endpoint(self, name: str) -> Endpoint:
        for e in self.endpoints:
            if e.name == name:
                return e
        raise KeyError(name)

    def variable(self, name: str) -> Variable:
        for v in self.variables:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def n_bins(self) -> int:
        """Bins 0..ceil(horizon / bin_width); bin i holds times in ((i-1)w, iw]."""
        return grid_bins(self.horizon, self.bin_width)

    def bin_times(self):
        import numpy as np

        return np.arange(self.n_bins, dtype=float) * self.bin_width

    def to_dict(self) -> dict[str, Any]:
        return plan_to_dict(self)

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- parsing


def _num(x: Any, key: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise PlanError(f"{key}: expected a finite number, got {x!r}")
    return x


def _str(x: Any, key: str) -> str:
    if x is None:
        raise PlanError(f"{key}: missing")
    if not isinstance(x, str) or not x.strip():
        raise PlanError(f"{key}: expected a non-empty string, got {x!r}")
    return x


def _str_list(x: Any, key: str) -> tuple[str, ...]:
    if isinstance(x, str):
        x = [x]
    if not isinstance(x, list):
        raise PlanError(f"{key}: expected a list of strings, got {x!r}")
    return tuple(_str(v if not isinstance(v, (int, float)) or isinstance(v, bool) else str(v), f"{key}[{i}]") for i, v in enumerate(x))


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise PlanError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _parse_endpoint(name: str, t: Mapping[str, Any]) -> Endpoint:
    where = f"endpoints.{name}"
    if not isinstance(t, dict):
        raise PlanError(f"{where}: expected a table")
    _check_keys(t, {"time", "event", "censored", "causes", "origin", "dates", "last_followup"}, where)
    if "origin" in t:
        if "time" in t or "event" in t:
            raise PlanError(f"{where}: give either time/event columns or origin/dates, not both")
        dates = t.get("dates")
        # The canonical JSON form sorts object keys, so there the order of the causes (which
        # fixes their codes) travels as a list of [cause, column] pairs.
        if isinstance(dates, list) and all(isinstance(d, list) and len(d) == 2 for d in dates):
            pairs = [(str(k), v) for k, v in dates]
            if len({k for k, _ in pairs}) != len(pairs):
                raise PlanError(f"{where}.dates: a cause is listed twice")
            dates = dict(pairs)
        if not isinstance(dates, dict) or not dates:
            raise PlanError(f"{where}.dates: expected a table mapping each cause to its date column")
        causes = tuple(Cause(i, _str(k, f"{where}.dates")) for i, k in enumerate(dates, start=1))
        return Endpoint(
            name=name,
            causes=causes,
            origin=_str(t["origin"], f"{where}.origin"),
            dates=tuple((k, _str(v, f"{where}.dates.{k}")) for k, v in dates.items()),
            last_followup=_str(t.get("last_followup"), f"{where}.last_followup"),
        )
    for k in ("time", "event", "causes"):
        if k not in t:
            raise PlanError(f"{where}.{k}: missing (or give origin, dates and last_followup)")
    raw_causes = t["causes"]
    if not isinstance(raw_causes, dict) or not raw_causes:
        raise PlanError(f"{where}.causes: expected a table such as {{ 1 = \"death\" }}")
    causes = []
    for code, cname in raw_causes.items():
        try:
            c = int(code)
        except ValueError:
            raise PlanError(f"{where}.causes: code {code!r} is not an integer") from None
        causes.append(Cause(c, _str(cname, f"{where}.causes.{code}")))
    causes.sort(key=lambda c: c.code)
    censored = t.get("censored", [0])
    if not isinstance(censored, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in censored):
        raise PlanError(f"{where}.censored: expected a list of integer codes")
    clash = set(censored) & {c.code for c in causes}
    if clash:
        raise PlanError(f"{where}.censored: code {sorted(clash)[0]} is also a cause")
    names = [c.name for c in causes]
    if len(set(names)) != len(names) or ANY_CAUSE in names:
        raise PlanError(f"{where}.causes: cause names must be distinct and not {ANY_CAUSE!r}")
    return Endpoint(
        name=name,
        causes=tuple(causes),
        time=_str(t["time"], f"{where}.time"),
        event=_str(t["event"], f"{where}.event"),
        censored=tuple(censored),
    )


def _parse_variable(name: str, t: Mapping[str, Any]) -> Variable:
    where = f"variables.{name}"
    if not isinstance(t, dict):
        raise PlanError(f"{where}: expected a table")
    _check_keys(t, {"levels", "type", "decimals", "range", "missing", "column", "center", "scale"}, where)
    missing = t.get("missing", "error")
    if missing not in ("error", "drop", "count"):
        raise PlanError(f"{where}.missing: expected 'error', 'drop' or 'count', got {missing!r}")
    column = t.get("column")
    if column is not None:
        column = _str(column, f"{where}.column")
    if "levels" in t:
        for k in ("center", "scale", "range", "decimals"):
            if k in t:
                raise PlanError(f"{where}.{k}: only for numeric variables")
        levels = _str_list(t["levels"], f"{where}.levels")
        if len(set(levels)) != len(levels):
            raise PlanError(f"{where}.levels: levels must be distinct")
        return Variable(name=name, levels=levels, missing=missing, column=column)
    if t.get("type") != "numeric":
        raise PlanError(f"{where}: give levels = [...] or type = \"numeric\"")
    decimals = t.get("decimals", 0)
    if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 6:
        raise PlanError(f"{where}.decimals: expected an integer from 0 to 6")
    rng = t.get("range")
    if not isinstance(rng, list) or len(rng) != 2:
        raise PlanError(f"{where}.range: expected [low, high]")
    lo, hi = _num(rng[0], f"{where}.range"), _num(rng[1], f"{where}.range")
    if not lo < hi:
        raise PlanError(f"{where}.range: low must be below high")
    # Keeps the sum of squares of the fixed-point values below 2**63 for up to 2**23 patients.
    if max(abs(lo), abs(hi)) * 10**decimals > 2**20:
        raise PlanError(f"{where}.range: too wide for fixed point at {decimals} decimals "
                        f"(|value| * 10**decimals must stay within {2**20:,})")
    center = scale = None
    if "center" in t:
        center = float(_num(t["center"], f"{where}.center"))
        if not lo <= center <= hi:
            raise PlanError(f"{where}.center: must lie within the range")
    if "scale" in t:
        scale = float(_num(t["scale"], f"{where}.scale"))
        if scale <= 0:
            raise PlanError(f"{where}.scale: must be positive")
    return Variable(name=name, decimals=decimals, range=(float(lo), float(hi)), missing=missing, column=column,
                    center=center, scale=scale)


_ANALYSIS_KEYS = {"name", "kind", "endpoint", "cause", "strata", "groups", "times", "variable", "success",
                  "method", "variables", "rho", "tau", "conf_type", "covariates", "ties", "robust",
                  "bin_width", "horizon"}


def _parse_analysis(i: int, t: Mapping[str, Any], endpoints: dict[str, Endpoint],
                    variables: dict[str, Variable]) -> Analysis:
    where = f"analyses[{i}]"
    if not isinstance(t, dict):
        raise PlanError(f"{where}: expected a table")
    _check_keys(t, _ANALYSIS_KEYS, where)
    name = _str(t.get("name"), f"{where}.name")
    where = f"analyses[{i}] ({name})"
    kind = t.get("kind")
    if kind not in KINDS:
        raise PlanError(f"{where}.kind: expected one of {', '.join(KINDS)}, got {kind!r}")

    def var(vname: Any, key: str, categorical: bool = True) -> str:
        vname = _str(vname, f"{where}.{key}")
        if vname not in variables:
            raise PlanError(f"{where}.{key}: {vname!r} is not declared under [variables]")
        if categorical and variables[vname].is_numeric:
            raise PlanError(f"{where}.{key}: {vname!r} is numeric; strata and groups need levels")
        return vname

    kw: dict[str, Any] = {"name": name, "kind": kind}
    if kind in REGRESSION_KINDS:
        return _parse_regression(t, kw, where, endpoints, variables, var)
    strata = tuple(var(s, "strata") for s in _str_list(t.get("strata", []), f"{where}.strata"))
    if len(set(strata)) != len(strata):
        raise PlanError(f"{where}.strata: a variable is listed twice")
    kw["strata"] = strata
    if "conf_type" in t:
        if t["conf_type"] not in CONF_TYPES:
            raise PlanError(f"{where}.conf_type: expected one of {', '.join(CONF_TYPES)}")
        kw["conf_type"] = t["conf_type"]

    if kind in ("km", "cif", "logrank", "gray", "rmst"):
        ep_name = _str(t.get("endpoint"), f"{where}.endpoint")
        if ep_name not in endpoints:
            raise PlanError(f"{where}.endpoint: {ep_name!r} is not declared under [endpoints]")
        ep = endpoints[ep_name]
        kw["endpoint"] = ep_name
        if kind in ("km", "logrank", "rmst"):
            if "cause" in t:
                cause = _str(t["cause"], f"{where}.cause")
                if cause != ANY_CAUSE and cause not in [c.name for c in ep.causes]:
                    raise PlanError(f"{where}.cause: {cause!r} is not a cause of endpoint {ep_name!r} "
                                    f"(causes: {', '.join(c.name for c in ep.causes)}, or 'any')")
            elif ep.n_causes == 1:
                cause = ep.causes[0].name
            else:
                raise PlanError(f"{where}.cause: endpoint {ep_name!r} has several causes; name one or 'any'")
            kw["cause"] = cause
        elif "cause" in t:
            raise PlanError(f"{where}.cause: a {kind} analysis covers every cause; remove the key")
        if kind in ("logrank", "gray", "rmst"):
            kw["groups"] = var(t.get("groups"), "groups")
            if kw["groups"] in strata:
                raise PlanError(f"{where}.groups: {kw['groups']!r} is also a stratum")
        if kind == "gray" and ep.n_causes < 1:
            raise PlanError(f"{where}.endpoint: needs causes")
        if "rho" in t:
            if kind != "logrank":
                raise PlanError(f"{where}.rho: only for logrank")
            kw["rho"] = float(_num(t["rho"], f"{where}.rho"))
            if kw["rho"] < 0:
                raise PlanError(f"{where}.rho: must be 0 or more")
        if kind == "rmst":
            kw["tau"] = float(_num(t.get("tau"), f"{where}.tau"))
            if kw["tau"] <= 0:
                raise PlanError(f"{where}.tau: must be positive")
        times = t.get("times", [])
        if not isinstance(times, list):
            raise PlanError(f"{where}.times: expected a list of numbers")
        times_t = tuple(float(_num(x, f"{where}.times[{j}]")) for j, x in enumerate(times))
        if any(x < 0 for x in times_t) or list(times_t) != sorted(set(times_t)):
            raise PlanError(f"{where}.times: expected increasing, non-negative report times")
        kw["times"] = times_t
    elif kind == "proportion":
        vname = var(t.get("variable"), "variable")
        kw["variable"] = vname
        success = _str_list(t.get("success", []), f"{where}.success")
        if not success:
            raise PlanError(f"{where}.success: list the levels that count as a success")
        bad = [s for s in success if s not in variables[vname].levels]  # type: ignore[operator]
        if bad:
            raise PlanError(f"{where}.success: {bad[0]!r} is not a level of {vname!r}")
        kw["success"] = success
        method = t.get("method", "clopper-pearson")
        if method not in PROPORTION_METHODS:
            raise PlanError(f"{where}.method: expected one of {', '.join(PROPORTION_METHODS)}")
        kw["method"] = method
        if strata:
            raise PlanError(f"{where}.strata: not supported for proportions")
    elif kind == "describe":
        vs = _str_list(t.get("variables", []), f"{where}.variables")
        if not vs:
            raise PlanError(f"{where}.variables: list the variables to describe")
        kw["variables"] = tuple(var(v, "variables", categorical=False) for v in vs)
        if strata:
            raise PlanError(f"{where}.strata: not supported for describe")
    for k in ("endpoint", "cause", "groups", "times", "variable", "success", "variables", "rho", "tau", "method",
              "covariates", "ties", "robust", "bin_width", "horizon"):
        if k in t and k not in kw:
            raise PlanError(f"{where}.{k}: not used by a {kind} analysis")
    return Analysis(**kw)


def _parse_regression(t: Mapping[str, Any], kw: dict[str, Any], where: str, endpoints: dict[str, Endpoint],
                      variables: dict[str, Variable], var: Any) -> Analysis:
    """A Cox (``coxph``) or Fine-Gray (``cmprsk::crr``) model: endpoint, cause, covariates,
    ties, robust and strata (a categorical variable, or "site"; Cox only)."""
    kind = kw["kind"]
    ep_name = _str(t.get("endpoint"), f"{where}.endpoint")
    if ep_name not in endpoints:
        raise PlanError(f"{where}.endpoint: {ep_name!r} is not declared under [endpoints]")
    ep = endpoints[ep_name]
    kw["endpoint"] = ep_name
    causes = [c.name for c in ep.causes]
    if "cause" in t:
        cause = _str(t["cause"], f"{where}.cause")
        if cause not in causes and not (kind == "cox" and cause == ANY_CAUSE):
            raise PlanError(f"{where}.cause: {cause!r} is not a cause of endpoint {ep_name!r} "
                            f"(causes: {', '.join(causes)}{', or any' if kind == 'cox' else ''})")
    elif len(causes) == 1:
        cause = causes[0]
    else:
        raise PlanError(f"{where}.cause: endpoint {ep_name!r} has several causes; name the one modelled")
    kw["cause"] = cause
    covs = _str_list(t.get("covariates", []), f"{where}.covariates")
    if not covs:
        raise PlanError(f"{where}.covariates: list the model's covariates (declared under [variables])")
    if len(set(covs)) != len(covs):
        raise PlanError(f"{where}.covariates: a variable is listed twice")
    for c in covs:
        v = variables.get(c)
        if v is None:
            raise PlanError(f"{where}.covariates: {c!r} is not declared under [variables]")
        if v.levels is not None and len(v.levels) < 2:
            raise PlanError(f"{where}.covariates: {c!r} needs at least two levels")
        if v.is_numeric and v.regression_scale <= 0:
            raise PlanError(f"variables.{c}.scale: must be positive")
    kw["covariates"] = covs
    ties = t.get("ties", "efron" if kind == "cox" else "breslow")
    if ties not in TIES:
        raise PlanError(f"{where}.ties: expected one of {', '.join(TIES)}, got {ties!r}")
    if kind == "finegray" and ties != "breslow":
        raise PlanError(f"{where}.ties: cmprsk::crr handles ties as Breslow only")
    kw["ties"] = ties
    robust = t.get("robust", kind == "finegray")
    if not isinstance(robust, bool):
        raise PlanError(f"{where}.robust: expected true or false")
    if kind == "finegray" and not robust:
        raise PlanError(f"{where}.robust: crr's variance is always the sandwich; remove the key or set true")
    kw["robust"] = robust
    strata = _str_list(t.get("strata", []), f"{where}.strata")
    if strata and kind == "finegray":
        raise PlanError(f"{where}.strata: cmprsk::crr fits no strata")
    if len(strata) > 1:
        raise PlanError(f"{where}.strata: one variable, or \"site\"")
    if strata and strata[0] != SITE_STRATA:
        var(strata[0], "strata")
        if strata[0] in covs:
            raise PlanError(f"{where}.strata: {strata[0]!r} is also a covariate")
    kw["strata"] = strata
    for key in ("bin_width", "horizon"):
        if key in t:
            value = float(_num(t[key], f"{where}.{key}"))
            if value <= 0:
                raise PlanError(f"{where}.{key}: must be positive")
            kw[key] = value
    for k in ("groups", "times", "variable", "success", "variables", "rho", "tau", "method", "conf_type"):
        if k in t:
            raise PlanError(f"{where}.{k}: not used by a {kind} analysis")
    return Analysis(**kw)


def parse_plan(text: str) -> Plan:
    """Parse and validate a plan from TOML text."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PlanError(f"not valid TOML: {e}") from None
    return plan_from_dict(doc)


def load_plan(path: str) -> Plan:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return parse_plan(raw.decode("utf-8"))
    except PlanError as e:
        raise PlanError(f"{path}: {e}") from None
    except UnicodeDecodeError:
        raise PlanError(f"{path}: not UTF-8 text") from None


def plan_from_dict(doc: Mapping[str, Any]) -> Plan:
    _check_keys(doc, {"plan", "endpoints", "variables", "analyses", "privacy"}, "top level")
    head = doc.get("plan")
    if not isinstance(head, dict):
        raise PlanError("plan: missing [plan] table")
    _check_keys(head, {"title", "time_unit", "bin_width", "horizon", "conf_level", "conf_type",
                       "min_count_release", "timeout_seconds"}, "plan")
    title = _str(head.get("title"), "plan.title")
    time_unit = head.get("time_unit", "days")
    if time_unit not in TIME_UNITS:
        raise PlanError(f"plan.time_unit: expected one of {', '.join(TIME_UNITS)}, got {time_unit!r}")
    if "bin_width" not in head:
        raise PlanError("plan.bin_width: missing")
    bin_width = _num(head["bin_width"], "plan.bin_width")
    if bin_width <= 0:
        raise PlanError("plan.bin_width: must be positive")
    if "horizon" not in head:
        raise PlanError("plan.horizon: missing")
    horizon = _num(head["horizon"], "plan.horizon")
    if horizon <= 0:
        raise PlanError("plan.horizon: must be positive")
    if horizon / bin_width > 5_000_000:
        raise PlanError("plan.horizon: more than 5,000,000 bins; widen plan.bin_width")
    conf_level = _num(head.get("conf_level", 0.95), "plan.conf_level")
    if not 0 < conf_level < 1:
        raise PlanError("plan.conf_level: must be between 0 and 1")
    conf_type = head.get("conf_type", "log")
    if conf_type not in CONF_TYPES:
        raise PlanError(f"plan.conf_type: expected one of {', '.join(CONF_TYPES)}, got {conf_type!r}")
    mcr = head.get("min_count_release", 0)
    if not isinstance(mcr, int) or isinstance(mcr, bool) or mcr < 0:
        raise PlanError("plan.min_count_release: expected a non-negative integer")
    timeout = _num(head.get("timeout_seconds", 120.0), "plan.timeout_seconds")
    if timeout <= 0:
        raise PlanError("plan.timeout_seconds: must be positive")

    raw_eps = doc.get("endpoints", {})
    if not isinstance(raw_eps, dict):
        raise PlanError("endpoints: expected [endpoints.NAME] tables")
    endpoints = {n: _parse_endpoint(n, t) for n, t in raw_eps.items()}
    raw_vars = doc.get("variables", {})
    if not isinstance(raw_vars, dict):
        raise PlanError("variables: expected [variables.NAME] tables")
    variables = {n: _parse_variable(n, t) for n, t in raw_vars.items()}
    raw_an = doc.get("analyses")
    if not isinstance(raw_an, list) or not raw_an:
        raise PlanError("analyses: the plan asks for nothing; add [[analyses]] tables")
    analyses = [_parse_analysis(i, t, endpoints, variables) for i, t in enumerate(raw_an)]
    names = [a.name for a in analyses]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise PlanError(f"analyses: name {sorted(dup)[0]!r} is used twice")
    for i, a in enumerate(analyses):
        for tt in a.times:
            if tt > horizon:
                raise PlanError(f"analyses[{i}] ({a.name}).times: {tt:g} is past plan.horizon ({horizon:g})")
        if a.tau is not None and a.tau > horizon:
            raise PlanError(f"analyses[{i}] ({a.name}).tau: past plan.horizon ({horizon:g})")
        if a.is_regression and (a.horizon or horizon) / (a.bin_width or bin_width) > 5_000_000:
            raise PlanError(f"analyses[{i}] ({a.name}).bin_width: more than 5,000,000 bins; widen it")
    privacy = _parse_privacy(doc["privacy"]) if "privacy" in doc else None
    plan = Plan(
        title=title,
        time_unit=time_unit,
        bin_width=bin_width,
        horizon=horizon,
        conf_level=float(conf_level),
        conf_type=conf_type,
        # Sorted by name, as the canonical JSON has them: a plan read back from it is equal.
        endpoints=tuple(endpoints[k] for k in sorted(endpoints)),
        variables=tuple(variables[k] for k in sorted(variables)),
        analyses=tuple(analyses),
        min_count_release=mcr,
        timeout_seconds=float(timeout),
        privacy=privacy,
    )
    if privacy is not None:
        from protocol.dp_plan import dp_refusals

        refusals = dp_refusals(plan)
        if refusals:
            raise PlanError(f"privacy: {refusals[0]}")
    return plan


def _parse_privacy(table: Any) -> PrivacySpec | None:
    # Imported here: plans without [privacy] never load the accounting (and scipy's optimiser).
    from protocol.dp_plan import PrivacyPlanError, parse_privacy

    try:
        return parse_privacy(table)
    except PrivacyPlanError as e:
        raise PlanError(str(e)) from None


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as a TOML-shaped dict; ``plan_from_dict(plan_to_dict(p)) == p``."""
    head: dict[str, Any] = {
        "title": plan.title, "time_unit": plan.time_unit, "bin_width": plan.bin_width,
        "horizon": plan.horizon, "conf_level": plan.conf_level, "conf_type": plan.conf_type,
        "min_count_release": plan.min_count_release, "timeout_seconds": plan.timeout_seconds,
    }
    eps: dict[str, Any] = {}
    for e in plan.endpoints:
        if e.from_dates:
            eps[e.name] = {"origin": e.origin, "dates": [[k, v] for k, v in e.dates],
                           "last_followup": e.last_followup}
        else:
            eps[e.name] = {"time": e.time, "event": e.event, "censored": list(e.censored),
                           "causes": {str(c.code): c.name for c in e.causes}}
    vs: dict[str, Any] = {}
    for v in plan.variables:
        d: dict[str, Any] = {"missing": v.missing}
        if v.column:
            d["column"] = v.column
        if v.levels is not None:
            d["levels"] = list(v.levels)
        else:
            d.update(type="numeric", decimals=v.decimals, range=list(v.range))  # type: ignore[arg-type]
            # Only when set: plans without them keep the canonical form (and hash) they always had.
            if v.center is not None:
                d["center"] = v.center
            if v.scale is not None:
                d["scale"] = v.scale
        vs[v.name] = d
    ans = []
    defaults = Analysis(name="", kind="km")
    for a in plan.analyses:
        d = {"name": a.name, "kind": a.kind}
        for k in ("endpoint", "cause", "strata", "groups", "times", "variable", "success", "method",
                  "variables", "rho", "tau", "conf_type", "covariates", "ties", "robust", "bin_width",
                  "horizon"):
            val = getattr(a, k)
            if val != getattr(defaults, k) or (k == "method" and a.kind == "proportion") or (
                    k in ("ties", "robust") and a.is_regression):
                d[k] = list(val) if isinstance(val, tuple) else val
        ans.append(d)
    doc = {"plan": head, "endpoints": eps, "variables": vs, "analyses": ans}
    if plan.privacy is not None:
        # Only when set: a plan without the table keeps the canonical form (and hash) it always had.
        doc["privacy"] = plan.privacy.to_dict()
    return doc
