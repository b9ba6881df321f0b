"""Counter-based random numbers keyed by (seed, stream, learner, simulator, step).

Every random draw of training comes from here, so a learner's draws do not depend on which
process hosts it or how many learners share its block: the same seed gives the same numbers
for one process of N learners and for N processes of one.
"""

from __future__ import annotations

import numpy as np

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)

# Streams: one per kind of draw, so adding a draw never shifts another.
ACTION = 1
INIT = 0x1A17
LINK_DROP = 0x11D0  # per (undirected link, combine round)
DELAY = 0xDE1A  # per (directed link, combine round)


# SplitMix64's constants, as Python ints (for the scalar mix) and as numpy uint64 (for arrays).
_GOLDEN_INT, _MIX1_INT, _MIX2_INT = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_GOLDEN, _MIX1, _MIX2 = np.uint64(_GOLDEN_INT), np.uint64(_MIX1_INT), np.uint64(_MIX2_INT)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_MASK64 = 0xFFFFFFFFFFFFFFFF


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele et al. 2014): a bijective 64-bit mix with full avalanche."""
    x = x + _GOLDEN
    x = (x ^ (x >> _S30)) * _MIX1
    x = (x ^ (x >> _S27)) * _MIX2
    return x ^ (x >> _S31)


def _key(*parts: np.ndarray | int) -> np.ndarray:
    """Fold the parts into one 64-bit key, broadcasting array parts."""
    with np.errstate(over="ignore"):
        key = np.uint64(0)
        for part in parts:
            key = _splitmix64(key ^ np.asarray(part, dtype=np.uint64))
        return key


def derive(*parts: int) -> int:
    """A 63-bit seed for a torch.Generator, keyed like every other draw."""
    return int(_key(*parts)) & 0x7FFFFFFFFFFFFFFF


def _splitmix64_int(x: int) -> int:
    """_splitmix64 on one Python int: the scalar head of a key costs no numpy calls."""
    x = (x + _GOLDEN_INT) & _MASK64
    x = ((x ^ (x >> 30)) * _MIX1_INT) & _MASK64
    x = ((x ^ (x >> 27)) * _MIX2_INT) & _MASK64
    return x ^ (x >> 31)


class Stream:
    """The draws of one stream for fixed learners, simulators and draws, one array per step.

    This runs every env step, so the parts are converted once and the scalar head of the key
    (seed, stream, step) is folded with Python ints; only the learner, simulator and draw parts
    are array operations. The key, and so every draw, is the one `_key` folds.
    """

    def __init__(self, seed: int, stream: int, learners: np.ndarray, num_sims: int, draws: int = 1) -> None:
        self._head = _splitmix64_int(_splitmix64_int(int(seed) & _MASK64) ^ int(stream))
        self._parts = (
            np.asarray(learners, dtype=np.uint64)[:, None, None],
            np.arange(num_sims, dtype=np.uint64)[None, :, None],
            np.arange(draws, dtype=np.uint64)[None, None, :],
        )
        self.draws = draws

    def uniform(self, step: int) -> np.ndarray:
        """Uniform floats in [0, 1): `[K, E, draws]`."""
        key = np.uint64(_splitmix64_int(self._head ^ int(step)))
        with np.errstate(over="ignore"):
            for part in self._parts:
                key = _splitmix64(key ^ part)
        return (key >> _S11).astype(np.float64) * (1.0 / (1 << 53))

    def normal(self, step: int) -> np.ndarray:
        """Standard normals `[K, E, draws // 2]` by Box-Muller from the two halves of the draws."""
        u = self.uniform(step)
        half = self.draws // 2
        u1, u2 = 1.0 - u[..., :half], u[..., half:]
        return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def uniform(seed: int, stream: int, learners: np.ndarray, num_sims: int, step: int, draws: int = 1) -> np.ndarray:
    """Uniform floats in [0, 1): `[K, E, draws]` for global learner ids `learners: [K]`."""
    return Stream(seed, stream, learners, num_sims, draws).uniform(step)
