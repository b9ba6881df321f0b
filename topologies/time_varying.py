"""Graphs that change every round: the directed exponential graph of GALA's gossip.

Edges come as directed reads (src, dst): learner dst reads learner src's row in that round.
"""

from __future__ import annotations

import math

import numpy as np

Reads = tuple[np.ndarray, np.ndarray]


def exponential_period(n: int) -> int:
    """Rounds after which the exponential graph's peers repeat: ceil(log2 N)."""
    return max(1, math.ceil(math.log2(n))) if n > 1 else 1


def exponential_reads(n: int, round_index: int, peers: int) -> Reads:
    """Round r: learner k pushes to k + 2^((r*peers + j) mod period), j < peers (Assran et al. 2019)."""
    if n == 1:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    period = exponential_period(n)
    offsets = sorted({2 ** ((round_index * peers + j) % period) for j in range(peers)})
    src = np.tile(np.arange(n, dtype=np.int64), len(offsets))
    dst = (src + np.repeat(np.asarray(offsets, dtype=np.int64), n)) % n
    return src, dst
