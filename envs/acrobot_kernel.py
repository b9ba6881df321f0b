"""gymnasium's Acrobot step (RK4, wrap, clip, observation, terminal) as one compiled loop over simulators.

`envs.acrobot_dynamics` does the same with numpy, about 200 array calls per step; at 25
simulators those calls' overhead is the whole cost. Here one numba call steps every simulator,
with each operation of gymnasium's `_dsdt` in its order (the same expression tree as
`derivatives`). sin, cos and pow are the C math library's, called under alias names rather than
as LLVM intrinsics: LLVM may rewrite `pow(x, 2.0)` as `x * x`, which differs from libm's pow in
the last bit, and numpy's float64 sin and cos are libm's on the machines where `available()`
holds. `tests/test_acrobot.py` holds the kernel to the numpy path and to gymnasium's AcrobotEnv,
state for state, over whole episodes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math

import numpy as np
from gymnasium.envs.classic_control.acrobot import AcrobotEnv

from envs.acrobot_dynamics import HALF_PI, LC2, Links

try:
    import llvmlite.binding
    import numba
except ImportError:  # numba is the [fast] extra; without it the numpy path serves
    numba = None

_LIBM = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")


def _libm(name: str, arity: int):
    """libm's `name` under a name LLVM does not know, so it is called as it is, never rewritten.

    The symbol is registered in this process (addresses change between processes), so the
    compiled code refers to it by name and can be cached on disk.
    """
    alias = f"diffdac_libm_{name}"
    llvmlite.binding.add_symbol(alias, ctypes.cast(getattr(_LIBM, name), ctypes.c_void_p).value)
    return numba.types.ExternalFunction(alias, numba.float64(*[numba.float64] * arity))


c_sin, c_cos, c_pow = (_libm("sin", 1), _libm("cos", 1), _libm("pow", 2)) if numba is not None else (None, None, None)

DT = AcrobotEnv.dt
LC2_SQ = LC2**2
PI = math.pi
TWO_PI = PI - (-PI)  # gymnasium's wrap: diff = M - m
MAX_VEL_1, MAX_VEL_2 = AcrobotEnv.MAX_VEL_1, AcrobotEnv.MAX_VEL_2


def _derivatives(t1, t2, dt1, dt2, torque, c):
    """`derivatives` for one simulator; c: the task's constants in `_COLUMNS` order."""
    d1_const, m2, d1_sum, d1_cos, i1, i2, d2_cos, phi2_c, phi1_sq, phi1_cross, phi1_cos, dd2_sq, dd2_den = c
    cos2, sin2 = c_cos(t2), c_sin(t2)
    d1 = d1_const + m2 * (d1_sum + d1_cos * cos2) + i1 + i2
    d2 = m2 * (LC2_SQ + d2_cos * cos2) + i2
    phi2 = phi2_c * c_cos(t1 + t2 - HALF_PI)
    phi1 = phi1_sq * c_pow(dt2, 2.0) * sin2 - phi1_cross * dt2 * dt1 * sin2 + phi1_cos * c_cos(t1 - HALF_PI) + phi2
    ddt2 = (torque + d2 / d1 * phi1 - dd2_sq * c_pow(dt1, 2.0) * sin2 - phi2) / (dd2_den - c_pow(d2, 2.0) / d1)
    ddt1 = -(d2 * ddt2 + phi1) / d1
    return dt1, dt2, ddt1, ddt2


def _wrap(x):
    while x > PI:
        x = x - TWO_PI
    while x < -PI:
        x = x + TWO_PI
    return x


def _step(state, torque, constants, obs, terminal):
    """Step `state: [4, K, E]` in place; write `obs: [K, E, 6]` float32 and `terminal: [K, E]`."""
    half = DT / 2.0
    sixth = DT / 6.0
    for k in range(state.shape[1]):
        c = (
            constants[k, 0],
            constants[k, 1],
            constants[k, 2],
            constants[k, 3],
            constants[k, 4],
            constants[k, 5],
            constants[k, 6],
            constants[k, 7],
            constants[k, 8],
            constants[k, 9],
            constants[k, 10],
            constants[k, 11],
            constants[k, 12],
        )
        for e in range(state.shape[2]):
            s0, s1, s2, s3 = state[0, k, e], state[1, k, e], state[2, k, e], state[3, k, e]
            a = torque[k, e]
            k1 = _derivatives(s0, s1, s2, s3, a, c)
            k2 = _derivatives(s0 + half * k1[0], s1 + half * k1[1], s2 + half * k1[2], s3 + half * k1[3], a, c)
            k3 = _derivatives(s0 + half * k2[0], s1 + half * k2[1], s2 + half * k2[2], s3 + half * k2[3], a, c)
            k4 = _derivatives(s0 + DT * k3[0], s1 + DT * k3[1], s2 + DT * k3[2], s3 + DT * k3[3], a, c)
            n0 = _wrap(s0 + sixth * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0]))
            n1 = _wrap(s1 + sixth * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1]))
            n2 = min(max(s2 + sixth * (k1[2] + 2 * k2[2] + 2 * k3[2] + k4[2]), -MAX_VEL_1), MAX_VEL_1)
            n3 = min(max(s3 + sixth * (k1[3] + 2 * k2[3] + 2 * k3[3] + k4[3]), -MAX_VEL_2), MAX_VEL_2)
            state[0, k, e], state[1, k, e], state[2, k, e], state[3, k, e] = n0, n1, n2, n3
            cos0 = c_cos(n0)
            obs[k, e, 0], obs[k, e, 1], obs[k, e, 2], obs[k, e, 3] = cos0, c_sin(n0), c_cos(n1), c_sin(n1)
            obs[k, e, 4], obs[k, e, 5] = n2, n3
            terminal[k, e] = -cos0 - c_cos(n1 + n0) > 1.0


_COLUMNS = (
    "d1_const",
    "m2",
    "d1_sum",
    "d1_cos",
    "i1",
    "i2",
    "d2_cos",
    "phi2",
    "phi1_sq",
    "phi1_cross",
    "phi1_cos",
    "dd2_sq",
    "dd2_den",
)


def constants(links: Links) -> np.ndarray:
    """The task constants of `links` as a `[K, 13]` float64 table for the kernel."""
    return np.ascontiguousarray(np.concatenate([getattr(links, name) for name in _COLUMNS], axis=1))


def _trig(x):
    sin, cos = np.empty_like(x), np.empty_like(x)
    for i in range(x.shape[0]):
        sin[i], cos[i] = c_sin(x[i]), c_cos(x[i])
    return sin, cos


if numba is not None:
    _trig = numba.njit(cache=True)(_trig)
    _derivatives = numba.njit(cache=True)(_derivatives)
    _wrap = numba.njit(cache=True)(_wrap)
    _step = numba.njit(cache=True)(_step)


@functools.cache
def available() -> bool:
    """True where the compiled kernel can be used: numba imports, and numpy's float64 sin and cos are libm's."""
    if numba is None:
        return False
    x = np.random.default_rng(0).uniform(-30.0, 30.0, 4096)
    sin, cos = _trig(x)
    return bool(np.array_equal(np.sin(x), sin) and np.array_equal(np.cos(x), cos))


@functools.cache
def warm_up() -> None:
    """Load (or compile, the first time on a machine) the kernel now, at start-up, not in the first step."""
    table = np.ones((1, len(_COLUMNS)))
    step(np.zeros((4, 1, 1)), np.zeros((1, 1)), table)


def step(state: np.ndarray, torque: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of every simulator, `state: [4, K, E]` in place: (obs `[K, E, 6]` float32, terminal `[K, E]`)."""
    obs = np.empty(state.shape[1:] + (6,), dtype=np.float32)
    terminal = np.empty(state.shape[1:], dtype=np.bool_)
    _step(state, np.ascontiguousarray(torque, dtype=np.float64), table, obs, terminal)
    return obs, terminal
