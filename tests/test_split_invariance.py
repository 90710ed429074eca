"""Split invariance: however the same rows are split over 1 to 30 sites, every number of the
pooled results is identical to the one-site run (not merely close: the sums are integers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consortium import csv_for, plan_text, split_sites
from fedsurv.runner import run_in_process
from protocol.plan import parse_plan

DF = pd.read_csv(csv_for("colon_cr_rx"))
PLAN = parse_plan(plan_text("colon_cr_rx", "log-log", extra="""
[[analyses]]
name = "gray"
kind = "gray"
endpoint = "ep"
groups = "rx"
"""))


def analyses(tmp, assignment):
    results, _ = run_in_process(PLAN, split_sites(DF, assignment, tmp))
    return results["analyses"], sum(s["n"] for s in results["sites"])


@pytest.fixture(scope="module")
def one_site(tmp_path_factory):
    """The reference: every row at one site (computed once for all splits)."""
    one, n = analyses(tmp_path_factory.mktemp("one"), np.zeros(len(DF), dtype=int))
    assert n == len(DF)
    return one


def test_one_site_equals_many(tmp_path_factory, one_site):
    many, _ = analyses(tmp_path_factory.mktemp("many"), np.arange(len(DF)) % 30)
    assert many == one_site


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_sites=st.integers(1, 30), seed=st.integers(0, 2**32 - 1))
def test_random_splits(tmp_path_factory, one_site, n_sites, seed):
    rng = np.random.default_rng(seed)
    assignment = rng.integers(0, n_sites, len(DF))
    split, _ = analyses(tmp_path_factory.mktemp("split"), assignment)
    assert split == one_site
