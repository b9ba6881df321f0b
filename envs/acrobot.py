"""Multitask Acrobot: task sampling, a gymnasium variant env, and a batched simulator.

Task families follow Packer et al. 2018, "Assessing Generalization in Deep Reinforcement
Learning" (sunblaze rl-generalization): link mass, length and inertia are each scaled by an
independent draw. The batched simulator reproduces gymnasium's `AcrobotEnv` bit for bit.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from gymnasium.envs.classic_control.acrobot import AcrobotEnv

from envs.batch import EpisodeTracker, StepResult, simulator_rngs

FAMILIES = ("standard", "normal", "extreme")
TASK_KEYS = ("mass", "length", "inertia")
NORMAL_RANGE = (0.75, 1.25)  # Packer et al. 2018, Acrobot "Random" (R) range
EXTREME_LOW = (0.5, 0.75)  # Packer et al. 2018, Acrobot "Extreme" (E): [0.5, 0.75) U (1.25, 1.5]
EXTREME_HIGH = (1.25, 1.5)

AVAIL_TORQUE = np.array(AcrobotEnv.AVAIL_TORQUE, dtype=np.float64)  # indexed by action
GRAVITY = 9.8  # gymnasium AcrobotEnv._dsdt
INITIAL_STATE_BOUND = 0.1  # gymnasium AcrobotEnv.reset default
DEFAULT_MAX_EPISODE_STEPS = 500  # gymnasium Acrobot-v1; Packer et al. 2018


def uniform_extreme(rng: np.random.Generator, size: int) -> np.ndarray:
    """Uniform on [0.5, 0.75) U (1.25, 1.5]: one draw of width 0.5 mapped onto the two pieces."""
    u = rng.uniform(0.0, 0.5, size=size)
    low_width = EXTREME_LOW[1] - EXTREME_LOW[0]
    return np.where(u < low_width, EXTREME_LOW[0] + u, EXTREME_HIGH[1] + low_width - u)


def sample_acrobot_task(family: str, task_seed: int) -> dict:
    """Task parameters {mass, length, inertia} of one learner, fixed by `task_seed`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown Acrobot family {family!r}: choose one of {', '.join(FAMILIES)}")
    rng = np.random.default_rng(task_seed)
    if family == "standard":
        values = np.ones(len(TASK_KEYS))
    elif family == "normal":
        values = rng.uniform(*NORMAL_RANGE, size=len(TASK_KEYS))
    else:
        values = uniform_extreme(rng, len(TASK_KEYS))
    return {key: float(v) for key, v in zip(TASK_KEYS, values)}


def apply_task(env: AcrobotEnv, task: dict) -> None:
    """Set an AcrobotEnv's link constants to a task's.

    gymnasium's dynamics never read LINK_LENGTH_2 (it only draws with it), so a length variant
    changes link 1's length in the physics. We keep that, since the oracle test compares with
    gymnasium. Inertia sets LINK_MOI, which gymnasium uses for both links.
    """
    env.LINK_MASS_1 = env.LINK_MASS_2 = task["mass"]
    env.LINK_LENGTH_1 = env.LINK_LENGTH_2 = task["length"]
    env.LINK_MOI = task["inertia"]


class AcrobotVariantEnv(AcrobotEnv):
    """gymnasium's Acrobot with one task's link parameters, exposed as `self.task`."""

    def __init__(self, family: str = "standard", task_seed: int = 0, render_mode: str | None = None):
        super().__init__(render_mode=render_mode)
        self.task = sample_acrobot_task(family, task_seed)
        apply_task(self, self.task)


def _sq(x: np.ndarray) -> np.ndarray:
    """x**2 through libm's pow, as gymnasium's scalar `x**2` computes it.

    numpy's array `x**2` is x*x, which differs from pow(x, 2) in the last bit for about one
    input in a thousand; float_power takes the pow path.
    """
    return np.float_power(x, 2.0)


def _dsdt(p: dict, theta1, theta2, dtheta1, dtheta2, a):
    """gymnasium AcrobotEnv._dsdt ("book" dynamics), same expression order, on arrays [K, E].

    Squares of Python constants (lc1**2, lc2**2 = 0.25) are exact either way.
    """
    m1, m2, l1, I1, I2 = p["m1"], p["m2"], p["l1"], p["I"], p["I"]
    lc1, lc2, g, pi = AcrobotEnv.LINK_COM_POS_1, AcrobotEnv.LINK_COM_POS_2, GRAVITY, np.pi
    d1 = m1 * lc1**2 + m2 * (_sq(l1) + lc2**2 + 2 * l1 * lc2 * np.cos(theta2)) + I1 + I2
    d2 = m2 * (lc2**2 + l1 * lc2 * np.cos(theta2)) + I2
    phi2 = m2 * lc2 * g * np.cos(theta1 + theta2 - pi / 2.0)
    phi1 = (
        -m2 * l1 * lc2 * _sq(dtheta2) * np.sin(theta2)
        - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * np.sin(theta2)
        + (m1 * lc1 + m2 * l1) * g * np.cos(theta1 - pi / 2)
        + phi2
    )
    ddtheta2 = (
        a + d2 / d1 * phi1 - m2 * l1 * lc2 * _sq(dtheta1) * np.sin(theta2) - phi2
    ) / (m2 * lc2**2 + I2 - _sq(d2) / d1)
    ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
    return dtheta1, dtheta2, ddtheta1, ddtheta2


def _rk4(p: dict, s: np.ndarray, a: np.ndarray, dt: float) -> np.ndarray:
    """One RK4 step of gymnasium's `rk4(_dsdt, s_augmented, [0, dt])`. s: [K, E, 4] -> [K, E, 4]."""
    dt2 = dt / 2.0
    y0 = [s[..., i] for i in range(4)]
    k1 = _dsdt(p, *y0, a)
    k2 = _dsdt(p, *[y + dt2 * k for y, k in zip(y0, k1)], a)
    k3 = _dsdt(p, *[y + dt2 * k for y, k in zip(y0, k2)], a)
    k4 = _dsdt(p, *[y + dt * k for y, k in zip(y0, k3)], a)
    out = [y + dt / 6.0 * (c1 + 2 * c2 + 2 * c3 + c4) for y, c1, c2, c3, c4 in zip(y0, k1, k2, k3, k4)]
    return np.stack(out, axis=-1)


def _wrap(x: np.ndarray, m: float, M: float) -> np.ndarray:
    """gymnasium's `wrap`: repeated subtraction / addition of (M - m), elementwise."""
    diff = M - m
    while np.any(x > M):
        x = np.where(x > M, x - diff, x)
    while np.any(x < m):
        x = np.where(x < m, x + diff, x)
    return x


def _observe(s: np.ndarray) -> np.ndarray:
    """[cos s0, sin s0, cos s1, sin s1, s2, s3] in float32. s: [..., 4] -> [..., 6].

    Trig runs in s's own dtype, as gymnasium's `_get_ob` does: float32 right after reset,
    float64 after a step.
    """
    s0, s1 = s[..., 0], s[..., 1]
    parts = [np.cos(s0), np.sin(s0), np.cos(s1), np.sin(s1), s[..., 2], s[..., 3]]
    return np.stack(parts, axis=-1).astype(np.float32)


def _is_terminal(s: np.ndarray) -> np.ndarray:
    """Free end above the bar, as gymnasium's `_terminal`. s: [K, E, 4] -> [K, E] bool."""
    return -np.cos(s[..., 0]) - np.cos(s[..., 1] + s[..., 0]) > 1.0


class BatchedAcrobot:
    """K learners x E Acrobot simulators stepped together with float64 numpy arithmetic.

    Learner i (global id `learner_ids[i]`) runs task `tasks[i]` on all its E simulators. Each
    simulator draws its initial states from its own generator keyed by (seed, learner, sim), so
    trajectories do not depend on how learners are grouped into batches. Episodes autoreset in
    the step that ends them, as in Stable-Baselines3's VecEnv.
    """

    def __init__(
        self,
        tasks: Sequence[dict],
        envs_per_learner: int,
        seed: int,
        learner_ids: Sequence[int],
        max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS,
    ):
        if len(tasks) != len(learner_ids):
            raise ValueError(f"got {len(tasks)} tasks for {len(learner_ids)} learners: give one task per learner")
        reference = AcrobotEnv()
        self.observation_space = reference.observation_space
        self.action_space = reference.action_space
        self.num_learners = len(learner_ids)
        self.envs_per_learner = envs_per_learner
        self.tasks = [dict(t) for t in tasks]
        self.max_episode_steps = max_episode_steps
        self._params = self._stack_params(self.tasks)
        self._rngs = simulator_rngs(seed, learner_ids, envs_per_learner)
        shape = (self.num_learners, envs_per_learner)
        self._state = np.zeros(shape + (4,), dtype=np.float64)  # [K, E, 4]
        self._episodes = EpisodeTracker(shape)

    @staticmethod
    def _stack_params(tasks: list[dict]) -> dict:
        """Task parameters as [K, 1] columns broadcasting over the E simulators."""
        mass, length, inertia = (np.array([t[key] for t in tasks], dtype=np.float64)[:, None] for key in TASK_KEYS)
        return {"m1": mass, "m2": mass, "l1": length, "I": inertia}

    @property
    def state(self) -> np.ndarray:
        """A copy of the physical state [theta1, theta2, dtheta1, dtheta2]: [K, E, 4] float64."""
        return self._state.copy()

    def _draw_initial(self, k: int, e: int) -> np.ndarray:
        """One simulator's initial state, drawn in float32 as gymnasium's reset does: [4]."""
        bound = INITIAL_STATE_BOUND
        return self._rngs[k][e].uniform(low=-bound, high=bound, size=(4,)).astype(np.float32)

    def reset(self) -> np.ndarray:
        """Start a new episode everywhere. Returns obs: [K, E, 6] float32."""
        K, E = self.num_learners, self.envs_per_learner
        initial = np.stack([np.stack([self._draw_initial(k, e) for e in range(E)]) for k in range(K)])
        self._state = initial.astype(np.float64)
        self._episodes.clear()
        return _observe(initial)

    def set_state(self, state: np.ndarray) -> None:
        """Put every simulator in `state` [K, E, 4] at the start of an episode (for tests)."""
        self._state = np.array(state, dtype=np.float64).reshape(self._state.shape)
        self._episodes.clear()

    def state_dict(self) -> dict:
        """Physical states, running episodes and reset generators: enough to continue bit for bit."""
        return {
            "state": self._state.copy(),
            "returns": self._episodes.returns.copy(),
            "lengths": self._episodes.lengths.copy(),
            "rngs": [[rng.bit_generator.state for rng in row] for row in self._rngs],
        }

    def load_state_dict(self, state: dict) -> None:
        self._state = np.array(state["state"], dtype=np.float64).reshape(self._state.shape)
        self._episodes.returns[...] = state["returns"]
        self._episodes.lengths[...] = state["lengths"]
        for row, saved_row in zip(self._rngs, state["rngs"]):
            for rng, saved in zip(row, saved_row):
                rng.bit_generator.state = saved

    def step(self, actions: np.ndarray) -> StepResult:
        """Advance all simulators by one dt with actions [K, E] in {0, 1, 2}."""
        torque = AVAIL_TORQUE[np.asarray(actions)]  # [K, E]
        ns = _rk4(self._params, self._state, torque, AcrobotEnv.dt)
        ns[..., 0] = _wrap(ns[..., 0], -np.pi, np.pi)
        ns[..., 1] = _wrap(ns[..., 1], -np.pi, np.pi)
        ns[..., 2] = np.clip(ns[..., 2], -AcrobotEnv.MAX_VEL_1, AcrobotEnv.MAX_VEL_1)
        ns[..., 3] = np.clip(ns[..., 3], -AcrobotEnv.MAX_VEL_2, AcrobotEnv.MAX_VEL_2)
        self._state = ns
        terminated = _is_terminal(ns)
        reward = np.where(terminated, 0.0, -1.0).astype(np.float32)
        truncated = self._episodes.lengths + 1 >= self.max_episode_steps
        done = terminated | truncated
        episode_return, episode_length = self._episodes.update(reward, done)
        final_obs = _observe(ns)
        obs = self._autoreset(done, final_obs)
        return StepResult(obs, reward, terminated, truncated, final_obs, episode_return, episode_length)

    def close(self) -> None:
        """Nothing to release; here so every task batch can be closed alike."""

    def _autoreset(self, done: np.ndarray, final_obs: np.ndarray) -> np.ndarray:
        """Draw new initial states where done; returns the obs after reset: [K, E, 6]."""
        obs = final_obs.copy()
        for k, e in zip(*np.nonzero(done)):
            initial = self._draw_initial(k, e)
            self._state[k, e] = initial
            obs[k, e] = _observe(initial)
        return obs
