"""A plan with several histograms and count blocks, shared by the DP tests."""

from protocol.plan import parse_plan

HEAD = """
[plan]
title = "t"
bin_width = 30
horizon = 720
[endpoints.os]
time = "t"
event = "s"
causes = { 1 = "death" }
[endpoints.amp]
time = "t2"
event = "s2"
causes = { 1 = "amputation", 2 = "death" }
[variables.sex]
levels = ["1", "2"]
[variables.limb]
levels = ["arm", "leg"]
[variables.age]
type = "numeric"
range = [0, 120]
"""

PLAN = parse_plan(HEAD + """
[[analyses]]
name = "os"
kind = "km"
endpoint = "os"
strata = ["sex"]
[[analyses]]
name = "os_limb"
kind = "logrank"
endpoint = "os"
groups = "limb"
[[analyses]]
name = "os_rmst"
kind = "rmst"
endpoint = "os"
groups = "limb"
tau = 360
[[analyses]]
name = "amp"
kind = "cif"
endpoint = "amp"
[[analyses]]
name = "t1"
kind = "describe"
variables = ["sex", "limb"]
""")


class SeededRandom:
    """A reproducible RandomSource for the samplers (tests only; the mechanism uses the OS's)."""

    def __init__(self, seed: int) -> None:
        import random

        import numpy as np

        self._scalar = random.Random(seed)
        self._array = np.random.default_rng(seed)

    def randbelow(self, n: int) -> int:
        return self._scalar.randrange(n)

    def randbelow_array(self, n):
        return self._array.integers(0, n)
