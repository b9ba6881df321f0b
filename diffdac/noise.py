"""Counter-based random numbers keyed by (seed, stream, learner, simulator, step).

Every random draw of training comes from here, so a learner's draws do not depend on which
process hosts it or how many learners share its block: the same seed gives the same numbers
for one process of N learners and for N processes of one.
"""

from __future__ import annotations

import functools

import numpy as np

try:
    import numba
except ImportError:  # numba is the [fast] extra; numpy draws the same numbers
    numba = None

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
_UNIT = 1.0 / (1 << 53)  # 53 random bits -> [0, 1)


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

    def head(self, step: int) -> int:
        """The key folded up to the step: what the learner, simulator and draw parts are folded into."""
        return _splitmix64_int(self._head ^ int(step))

    def uniform(self, step: int) -> np.ndarray:
        """Uniform floats in [0, 1): `[K, E, draws]`."""
        return self._by_loop(step) if compiled() else self._by_numpy(step)

    def _by_numpy(self, step: int) -> np.ndarray:
        key = np.uint64(self.head(step))
        with np.errstate(over="ignore"):
            for part in self._parts:
                key = _splitmix64(key ^ part)
        return (key >> _S11).astype(np.float64) * _UNIT

    def _by_loop(self, step: int) -> np.ndarray:
        """The same draws from one numba loop: at 25 learners a tenth of the time of the numpy calls."""
        learners, sims, _ = self._parts
        out = np.empty((len(learners), sims.shape[1], self.draws))
        _uniform_block(np.uint64(self.head(step)), learners[:, 0, 0], out)
        return out

    def normal(self, step: int) -> np.ndarray:
        """Standard normals `[K, E, draws // 2]` by Box-Muller from the two halves of the draws."""
        u = self.uniform(step)
        half = self.draws // 2
        u1, u2 = 1.0 - u[..., :half], u[..., half:]
        return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def uniform(seed: int, stream: int, learners: np.ndarray, num_sims: int, step: int, draws: int = 1) -> np.ndarray:
    """Uniform floats in [0, 1): `[K, E, draws]` for global learner ids `learners: [K]`."""
    return Stream(seed, stream, learners, num_sims, draws).uniform(step)


def _mix(x):
    """_splitmix64 on one uint64 (every constant a uint64, so numba keeps the arithmetic unsigned)."""
    x = x + _GOLDEN
    x = (x ^ (x >> _S30)) * _MIX1
    x = (x ^ (x >> _S27)) * _MIX2
    return x ^ (x >> _S31)


def _uniform_one(head, learner, sim, draw):
    """The draw `Stream.uniform` makes for one (learner, simulator, draw) under the key head `head`."""
    key = _mix(head ^ learner)
    key = _mix(key ^ np.uint64(sim))
    key = _mix(key ^ np.uint64(draw))
    return np.float64(key >> _S11) * _UNIT


def _uniform_block(head, learners, out):
    """Every draw of `out: [K, E, draws]` in one loop."""
    for k in range(out.shape[0]):
        for e in range(out.shape[1]):
            for d in range(out.shape[2]):
                out[k, e, d] = _uniform_one(head, learners[k], e, d)


if numba is not None:
    _mix = numba.njit(cache=True)(_mix)
    _uniform_one = numba.njit(cache=True)(_uniform_one)
    _uniform_block = numba.njit(cache=True)(_uniform_block)


@functools.cache
def compiled() -> bool:
    """Whether the numba loop draws: numba imports and its draws are numpy's on a probe (integer arithmetic: always)."""
    if numba is None:
        return False
    stream = Stream(12345, ACTION, np.array([0, 3, 2**40 + 7]), 5, 4)
    return bool(np.array_equal(stream._by_loop(99), stream._by_numpy(99)))
