"""Malformed plans: each refused with a PlanError whose message names the offending key."""

import pytest

from protocol.plan import PlanError, load_plan, parse_plan

BASE = """
[plan]
title = "base"
time_unit = "days"
bin_width = 1
horizon = 1100
conf_level = 0.95
conf_type = "log-log"

[endpoints.os]
time = "time"
event = "event"
censored = [0]
causes = { 1 = "death" }

[endpoints.amp]
origin = "ilp"
dates = { amputation = "amp_date", death = "death_date" }
last_followup = "lfu"

[variables.sex]
levels = ["1", "2"]

[variables.age]
type = "numeric"
decimals = 0
range = [0, 110]

[[analyses]]
name = "os"
kind = "km"
endpoint = "os"
cause = "death"
strata = ["sex"]
times = [180, 365]

[[analyses]]
name = "amputation"
kind = "cif"
endpoint = "amp"
times = [365]

[[analyses]]
name = "by_sex"
kind = "logrank"
endpoint = "os"
groups = "sex"

[[analyses]]
name = "t1"
kind = "describe"
variables = ["sex", "age"]
"""


def test_base_plan_is_valid():
    plan = parse_plan(BASE)
    assert [a.name for a in plan.analyses] == ["os", "amputation", "by_sex", "t1"]


def edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


BAD = [
    ("not toml", edit('title = "base"', 'title = base'), "not valid TOML"),
    ("unknown top-level table", BASE + "\n[extras]\nx = 1\n", "top level: unknown key 'extras'"),
    ("unknown plan key", edit('conf_level = 0.95', 'conf_levels = 0.95'), "plan: unknown key 'conf_levels'"),
    ("no plan table", BASE.replace("[plan]", "[plans]"), "top level: unknown key 'plans'"),
    ("missing title", edit('title = "base"\n', ''), "plan.title: missing"),
    ("bad time unit", edit('time_unit = "days"', 'time_unit = "fortnights"'), "plan.time_unit: expected one of days, "
                                                                             "weeks, months, years, got 'fortnights'"),
    ("zero bin width", edit('bin_width = 1', 'bin_width = 0'), "plan.bin_width: must be positive"),
    ("text bin width", edit('bin_width = 1', 'bin_width = "1"'), "plan.bin_width: expected a finite number, got '1'"),
    ("missing horizon", edit('horizon = 1100\n', ''), "plan.horizon: missing"),
    ("negative horizon", edit('horizon = 1100', 'horizon = -5'), "plan.horizon: must be positive"),
    ("too many bins", edit('bin_width = 1', 'bin_width = 0.0001'), "plan.horizon: more than 5,000,000 bins"),
    ("conf level", edit('conf_level = 0.95', 'conf_level = 95'), "plan.conf_level: must be between 0 and 1"),
    ("conf type", edit('conf_type = "log-log"', 'conf_type = "logit"'), "plan.conf_type: expected one of log-log, log, "
                                                                       "plain, got 'logit'"),
    ("endpoint without event", edit('event = "event"\n', ''), "endpoints.os.event: missing"),
    ("cause code not integer", edit('causes = { 1 = "death" }', 'causes = { d = "death" }'),
     "endpoints.os.causes: code 'd' is not an integer"),
    ("censored code is a cause", edit('censored = [0]', 'censored = [0, 1]'), "endpoints.os.censored: code 1 is also "
                                                                             "a cause"),
    ("both time and origin", edit('origin = "ilp"', 'origin = "ilp"\ntime = "t"'),
     "endpoints.amp: give either time/event columns or origin/dates, not both"),
    ("dates not a table", edit('dates = { amputation = "amp_date", death = "death_date" }', 'dates = "amp_date"'),
     "endpoints.amp.dates: expected a table mapping each cause to its date column"),
    ("no last follow-up", edit('last_followup = "lfu"\n', ''), "endpoints.amp.last_followup: missing"),
    ("unknown endpoint key", edit('censored = [0]', 'censored = [0]\ncensor = [9]'),
     "endpoints.os: unknown key 'censor'"),
    ("duplicate levels", edit('levels = ["1", "2"]', 'levels = ["1", "1"]'), "variables.sex.levels: levels must be "
                                                                            "distinct"),
    ("variable without type", edit('type = "numeric"\n', ''),
     "variables.age: give levels = [...] or type = \"numeric\""),
    ("range reversed", edit('range = [0, 110]', 'range = [110, 0]'), "variables.age.range: low must be below high"),
    ("too many decimals", edit('decimals = 0', 'decimals = 9'), "variables.age.decimals: expected an integer from 0 "
                                                                "to 6"),
    ("bad missing", edit('levels = ["1", "2"]', 'levels = ["1", "2"]\nmissing = "ignore"'),
     "variables.sex.missing: expected 'error', 'drop' or 'count', got 'ignore'"),
    ("no analyses", BASE[:BASE.index("[[analyses]]")], "analyses: the plan asks for nothing"),
    ("unknown kind", edit('kind = "km"', 'kind = "kaplan-meier"'), "analyses[0] (os).kind: expected one of"),
    ("unknown endpoint", edit('endpoint = "os"\ncause', 'endpoint = "pfs"\ncause'),
     "analyses[0] (os).endpoint: 'pfs' is not declared under [endpoints]"),
    ("unknown cause", edit('cause = "death"', 'cause = "relapse"'),
     "analyses[0] (os).cause: 'relapse' is not a cause of endpoint 'os'"),
    ("km on competing risks without cause", BASE + '\n[[analyses]]\nname = "k2"\nkind = "km"\nendpoint = "amp"\n',
     "analyses[4] (k2).cause: endpoint 'amp' has several causes; name one or 'any'"),
    ("cif with cause", edit('endpoint = "amp"', 'endpoint = "amp"\ncause = "death"'),
     "analyses[1] (amputation).cause: a cif analysis covers every cause; remove the key"),
    ("undeclared stratum", edit('strata = ["sex"]', 'strata = ["limb"]'),
     "analyses[0] (os).strata: 'limb' is not declared under [variables]"),
    ("numeric stratum", edit('strata = ["sex"]', 'strata = ["age"]'),
     "analyses[0] (os).strata: 'age' is numeric; strata and groups need levels"),
    ("logrank without groups", edit('groups = "sex"\n', ''), "analyses[2] (by_sex).groups: missing"),
    ("times not increasing", edit('times = [180, 365]', 'times = [365, 180]'),
     "analyses[0] (os).times: expected increasing, non-negative report times"),
    ("time past horizon", edit('times = [365]', 'times = [2000]'),
     "analyses[1] (amputation).times: 2000 is past plan.horizon (1100)"),
    ("duplicate analysis name", edit('name = "by_sex"', 'name = "os"'), "analyses: name 'os' is used twice"),
    ("key not used by the kind", edit('variables = ["sex", "age"]', 'variables = ["sex", "age"]\ntimes = [1]'),
     "analyses[3] (t1).times: not used by a describe analysis"),
    ("proportion success not a level", BASE + '\n[[analyses]]\nname = "p"\nkind = "proportion"\nvariable = "sex"\n'
                                              'success = ["3"]\n',
     "analyses[4] (p).success: '3' is not a level of 'sex'"),
]


@pytest.mark.parametrize("text,expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_plan_names_the_key(text, expected):
    with pytest.raises(PlanError) as e:
        parse_plan(text)
    assert expected in str(e.value)


def test_load_plan_prefixes_the_file(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text(edit('bin_width = 1', 'bin_width = 0'))
    with pytest.raises(PlanError) as e:
        load_plan(str(path))
    assert str(e.value) == f"{path}: plan.bin_width: must be positive"
