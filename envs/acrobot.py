"""Multitask Acrobot: task sampling, a gymnasium variant env, and a batched simulator.

Task families follow Packer et al. 2018, "Assessing Generalization in Deep Reinforcement
Learning" (sunblaze rl-generalization): link mass, length and inertia are each scaled by an
independent draw. The batched simulator reproduces gymnasium's `AcrobotEnv` bit for bit.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from gymnasium.envs.classic_control.acrobot import AcrobotEnv

from envs import acrobot_kernel
from envs.acrobot_dynamics import Links, observe, step_physics
from envs.batch import EpisodeTracker, StepResult, simulator_rngs

FAMILIES = ("standard", "normal", "extreme")
TASK_KEYS = ("mass", "length", "inertia")
NORMAL_RANGE = (0.75, 1.25)  # Packer et al. 2018, Acrobot "Random" (R) range
EXTREME_LOW = (0.5, 0.75)  # Packer et al. 2018, Acrobot "Extreme" (E): [0.5, 0.75) U (1.25, 1.5]
EXTREME_HIGH = (1.25, 1.5)

AVAIL_TORQUE = np.array(AcrobotEnv.AVAIL_TORQUE, dtype=np.float64)  # indexed by action
INITIAL_STATE_BOUND = 0.1  # gymnasium AcrobotEnv.reset default
REWARD_AT_GOAL, REWARD_ELSEWHERE = np.float32(0.0), np.float32(-1.0)  # gymnasium's, as float32
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


class BatchedAcrobot:
    """K learners x E Acrobot simulators stepped together with float64 numpy arithmetic (envs.acrobot_dynamics).

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
        compiled: bool | None = None,
    ):
        """`compiled`: step with the numba kernel (`envs.acrobot_kernel`: the same numbers, about 10
        times fewer microseconds per step at 25 simulators) or with numpy; by default the kernel
        wherever numba (the `[fast]` extra) is installed and numpy's trig is libm's."""
        if len(tasks) != len(learner_ids):
            raise ValueError(f"got {len(tasks)} tasks for {len(learner_ids)} learners: give one task per learner")
        reference = AcrobotEnv()
        self.observation_space = reference.observation_space
        self.action_space = reference.action_space
        self.num_learners = len(learner_ids)
        self.envs_per_learner = envs_per_learner
        self.tasks = [dict(t) for t in tasks]
        self.max_episode_steps = max_episode_steps
        self._links = Links(*(np.array([t[key] for t in self.tasks], dtype=np.float64) for key in TASK_KEYS))
        self.compiled = acrobot_kernel.available() if compiled is None else compiled
        self._table = None
        if self.compiled:
            self._table = acrobot_kernel.constants(self._links)
            acrobot_kernel.warm_up()
        self._rngs = simulator_rngs(seed, learner_ids, envs_per_learner)
        shape = (self.num_learners, envs_per_learner)
        self._state = np.zeros((4,) + shape, dtype=np.float64)  # [4, K, E]: component-major
        self._episodes = EpisodeTracker(shape)

    @property
    def state(self) -> np.ndarray:
        """A copy of the physical state [theta1, theta2, dtheta1, dtheta2]: [K, E, 4] float64."""
        return np.moveaxis(self._state, 0, -1).copy()

    def _set_state(self, state: np.ndarray) -> None:
        """Take states `[K, E, 4]` (any float dtype) as the float64 component-major state."""
        shape = (self.num_learners, self.envs_per_learner, 4)
        self._state = np.ascontiguousarray(np.moveaxis(np.asarray(state, dtype=np.float64).reshape(shape), -1, 0))

    def _draw_initial(self, k: int, e: int) -> np.ndarray:
        """One simulator's initial state, drawn in float32 as gymnasium's reset does: [4]."""
        bound = INITIAL_STATE_BOUND
        return self._rngs[k][e].uniform(low=-bound, high=bound, size=(4,)).astype(np.float32)

    def reset(self) -> np.ndarray:
        """Start a new episode everywhere. Returns obs: [K, E, 6] float32."""
        K, E = self.num_learners, self.envs_per_learner
        initial = np.stack([np.stack([self._draw_initial(k, e) for e in range(E)]) for k in range(K)])
        self._set_state(initial)
        self._episodes.clear()
        return observe(np.moveaxis(initial, -1, 0))[0]

    def state_dict(self) -> dict:
        """Physical states, running episodes and reset generators: enough to continue bit for bit.

        Plain lists and ints only (float64 survives a Python float exactly), so a checkpoint holding
        it loads with torch.load(weights_only=True) and never unpickles an object.
        """
        return {
            "state": self.state.tolist(),
            "returns": self._episodes.returns.tolist(),
            "lengths": self._episodes.lengths.tolist(),
            "rngs": [[rng.bit_generator.state for rng in row] for row in self._rngs],
        }

    def load_state_dict(self, state: dict) -> None:
        """Take back `state_dict()`; a state of other learners or simulators raises ValueError."""
        shape = (self.num_learners, self.envs_per_learner)
        arrays = {
            key: np.asarray(state[key], dtype=dtype)
            for key, dtype in (("state", np.float64), ("returns", np.float64), ("lengths", np.int64))
        }
        if (
            arrays["state"].shape != shape + (4,)
            or arrays["returns"].shape != shape
            or arrays["lengths"].shape != shape
        ):
            raise ValueError(f"the saved simulators are not {shape[0]} learners x {shape[1]} simulators")
        self._set_state(arrays["state"])
        self._episodes.returns[...] = arrays["returns"]
        self._episodes.lengths[...] = arrays["lengths"]
        for row, saved_row in zip(self._rngs, state["rngs"], strict=True):
            for rng, saved in zip(row, saved_row, strict=True):
                rng.bit_generator.state = saved

    def step(self, actions: np.ndarray) -> StepResult:
        """Advance all simulators by one dt with actions [K, E] in {0, 1, 2}."""
        torque = AVAIL_TORQUE[np.asarray(actions)]  # [K, E]
        if self.compiled:
            final_obs, terminated = acrobot_kernel.step(self._state, torque, self._table)
        else:
            self._state = step_physics(self._links, self._state, torque)
            final_obs, terminated = observe(self._state)
        reward = np.where(terminated, REWARD_AT_GOAL, REWARD_ELSEWHERE)
        truncated = self._episodes.lengths + 1 >= self.max_episode_steps
        done = terminated | truncated
        episode_return, episode_length = self._episodes.update(reward, done)
        obs = self._autoreset(done, final_obs)
        return StepResult(obs, reward, terminated, truncated, final_obs, episode_return, episode_length)

    def close(self) -> None:
        """Nothing to release; here so every task batch can be closed alike."""

    def _autoreset(self, done: np.ndarray, final_obs: np.ndarray) -> np.ndarray:
        """Draw new initial states where done; returns the obs after reset: [K, E, 6] (final_obs itself if none is done)."""
        if not done.any():
            return final_obs
        obs = final_obs.copy()
        for k, e in zip(*np.nonzero(done)):
            initial = self._draw_initial(k, e)
            self._state[:, k, e] = initial
            obs[k, e] = observe(initial)[0]
        return obs
