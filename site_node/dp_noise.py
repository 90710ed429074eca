"""A site's share of the privacy noise, added to its tallies before they are masked.

Every cell of every ``surv:``/``dropped:`` histogram and every categorical ``count:`` block
receives an independent draw of the site's share (protocol.dp_sampler.NoiseShare: a
discrete Gaussian N_Z(0, sigma_i^2) with sigma_i = max(1.5, sigma / sqrt(t)), or the Skellam
fallback). The ``n`` block is withheld (set to 0): the coordinator reads n from the noisy
histograms, and an exact n would let two releases differ by exactly one patient. Masking
then hides the noisy share; the sum carries the noise of every honest site, which the
coordinator cannot subtract because no party knows more than its own share.

The noise is added in int64; shares are bounded by tens of sigma in practice and the
masking arithmetic is modulo 2^64, so a negative cell is carried exactly to the sum.
"""

from __future__ import annotations

import numpy as np

from protocol.dp_sampler import OS_RANDOM, NoiseShare, RandomSource
from protocol.tallies import Block, Tallies

NOISED_PREFIXES = ("surv:", "dropped:", "count:")
WITHHELD = ("n",)


def noised_blocks(blocks: tuple[Block, ...]) -> tuple[Block, ...]:
    """The blocks that receive noise, in layout order."""
    return tuple(b for b in blocks if b.key.startswith(NOISED_PREFIXES))


def add_noise_shares(tallies: Tallies, share: NoiseShare, rs: RandomSource = OS_RANDOM) -> Tallies:
    """The tallies with this site's noise share added to every count cell and n withheld.

    Raises ValueError for a layout with blocks the mechanism does not cover (``moments:``),
    which protocol.dp_plan.dp_refusals refuses earlier with a readable reason.
    """
    uncovered = [b.key for b in tallies.blocks
                 if not b.key.startswith(NOISED_PREFIXES) and b.key not in WITHHELD]
    if uncovered:
        raise ValueError(f"no differential privacy for block(s) {', '.join(uncovered)}")
    targets = noised_blocks(tallies.blocks)
    noise = share.sample(sum(b.size for b in targets), rs)
    arrays = dict(tallies.arrays)
    offset = 0
    for b in targets:
        arrays[b.key] = tallies[b.key].astype(np.int64) + noise[offset: offset + b.size].reshape(b.shape)
        offset += b.size
    for key in WITHHELD:
        arrays[key] = np.zeros_like(tallies[key])
    return Tallies(tallies.blocks, arrays)
