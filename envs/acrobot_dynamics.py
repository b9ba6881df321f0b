"""gymnasium's Acrobot physics ("book" dynamics, RK4, wrap and clip) on arrays of simulators.

The state is component-major, `[4, K, E]` (theta1, theta2, dtheta1, dtheta2 over K learners x E
simulators), so RK4's state updates are one array operation each rather than one per component.
Every product of task constants that gymnasium evaluates before touching the state is computed
once per task (`Links`); what remains is gymnasium's expression, operation for operation and in
its order, so each simulator's float64 trajectory is gymnasium's bit for bit. At small batches
the cost is numpy's per-call overhead, which is why the operation count is what is minimised.
"""

from __future__ import annotations

import numpy as np
from gymnasium.envs.classic_control.acrobot import AcrobotEnv

GRAVITY = 9.8  # gymnasium AcrobotEnv._dsdt
LC1, LC2 = AcrobotEnv.LINK_COM_POS_1, AcrobotEnv.LINK_COM_POS_2
HALF_PI = np.pi / 2.0
MAX_VEL = np.array([AcrobotEnv.MAX_VEL_1, AcrobotEnv.MAX_VEL_2])[:, None, None]  # for [2, K, E]


def _sq(x: np.ndarray) -> np.ndarray:
    """x**2 through libm's pow, as gymnasium's scalar `x**2` computes it.

    numpy's array `x**2` is x*x, which differs from pow(x, 2) in the last bit for about one
    input in a thousand; float_power takes the pow path.
    """
    return np.float_power(x, 2.0)


class Links:
    """One task per learner, as `[K, 1]` columns, with gymnasium's state-free subexpressions.

    Each attribute is the left-hand part of a product or sum in `AcrobotEnv._dsdt`, grouped as
    Python evaluates it (left to right), so using it changes no rounding. Masses and inertias of
    the two links are equal in every task family, as in gymnasium's defaults.
    """

    def __init__(self, mass: np.ndarray, length: np.ndarray, inertia: np.ndarray) -> None:
        m1 = m2 = np.asarray(mass, dtype=np.float64).reshape(-1, 1)
        l1 = np.asarray(length, dtype=np.float64).reshape(-1, 1)
        i1 = i2 = np.asarray(inertia, dtype=np.float64).reshape(-1, 1)
        self.m2, self.i1, self.i2 = m2, i1, i2
        self.d1_const = m1 * LC1**2  # d1 = m1*lc1**2 + m2*(l1**2 + lc2**2 + 2*l1*lc2*cos t2) + I1 + I2
        self.d1_sum = _sq(l1) + LC2**2
        self.d1_cos = 2 * l1 * LC2
        self.d2_cos = l1 * LC2  # d2 = m2*(lc2**2 + l1*lc2*cos t2) + I2
        self.phi2 = m2 * LC2 * GRAVITY  # phi2 = m2*lc2*g*cos(t1 + t2 - pi/2)
        self.phi1_sq = -m2 * l1 * LC2  # phi1 = -m2*l1*lc2*dt2**2*sin t2 - 2*m2*l1*lc2*dt2*dt1*sin t2 + ...
        self.phi1_cross = 2 * m2 * l1 * LC2
        self.phi1_cos = (m1 * LC1 + m2 * l1) * GRAVITY  # ... + (m1*lc1 + m2*l1)*g*cos(t1 - pi/2) + phi2
        self.dd2_sq = (
            m2 * l1 * LC2
        )  # ddt2 = (a + d2/d1*phi1 - m2*l1*lc2*dt1**2*sin t2 - phi2) / (m2*lc2**2 + I2 - d2**2/d1)
        self.dd2_den = m2 * LC2**2 + i2


def derivatives(c: Links, s: np.ndarray, torque: np.ndarray, out: np.ndarray) -> np.ndarray:
    """gymnasium's `_dsdt` for states `s: [4, K, E]` into `out: [4, K, E]` (the velocities, then the accelerations)."""
    t1, t2, dt1, dt2 = s
    cos2, sin2 = np.cos(t2), np.sin(t2)
    d1 = c.d1_const + c.m2 * (c.d1_sum + c.d1_cos * cos2) + c.i1 + c.i2
    d2 = c.m2 * (LC2**2 + c.d2_cos * cos2) + c.i2
    phi2 = c.phi2 * np.cos(t1 + t2 - HALF_PI)
    phi1 = c.phi1_sq * _sq(dt2) * sin2 - c.phi1_cross * dt2 * dt1 * sin2 + c.phi1_cos * np.cos(t1 - HALF_PI) + phi2
    np.divide(torque + d2 / d1 * phi1 - c.dd2_sq * _sq(dt1) * sin2 - phi2, c.dd2_den - _sq(d2) / d1, out=out[3])
    np.divide(-(d2 * out[3] + phi1), d1, out=out[2])
    out[:2] = s[2:]
    return out


def rk4_step(c: Links, s: np.ndarray, torque: np.ndarray, dt: float) -> np.ndarray:
    """One RK4 step of gymnasium's `rk4(_dsdt, s_augmented, [0, dt])`: `[4, K, E]` -> a new `[4, K, E]`."""
    dt2 = dt / 2.0
    k1 = derivatives(c, s, torque, np.empty_like(s))
    k2 = derivatives(c, s + dt2 * k1, torque, np.empty_like(s))
    k3 = derivatives(c, s + dt2 * k2, torque, np.empty_like(s))
    k4 = derivatives(c, s + dt * k3, torque, np.empty_like(s))
    return s + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


def wrap(x: np.ndarray, m: float, M: float) -> np.ndarray:
    """gymnasium's `wrap`: repeated subtraction / addition of (M - m), elementwise."""
    if m <= x.min() and x.max() <= M:  # the common case, in two calls
        return x
    diff = M - m
    while np.any(x > M):
        x = np.where(x > M, x - diff, x)
    while np.any(x < m):
        x = np.where(x < m, x + diff, x)
    return x


def step_physics(c: Links, s: np.ndarray, torque: np.ndarray) -> np.ndarray:
    """gymnasium's `step` physics: RK4 over dt, angles wrapped to [-pi, pi], velocities clipped."""
    ns = rk4_step(c, s, torque, AcrobotEnv.dt)
    ns[:2] = wrap(ns[:2], -np.pi, np.pi)
    np.clip(ns[2:], -MAX_VEL, MAX_VEL, out=ns[2:])
    return ns


def observe(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(obs `[K, E, 6]` float32, terminal `[K, E]` bool) of states `s: [4, ...]`.

    Trig runs in s's own dtype, as gymnasium's `_get_ob` does: float32 right after reset,
    float64 after a step. Terminal is gymnasium's `_terminal`: the free end above the bar.
    """
    cos, sin = np.cos(s[:2]), np.sin(s[:2])
    obs = np.empty(s.shape[1:] + (6,), dtype=np.float32)
    obs[..., 0], obs[..., 1], obs[..., 2], obs[..., 3] = cos[0], sin[0], cos[1], sin[1]
    obs[..., 4], obs[..., 5] = s[2], s[3]
    terminal = -cos[0] - np.cos(s[1] + s[0]) > 1.0
    return obs, terminal
