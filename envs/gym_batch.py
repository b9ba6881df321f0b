"""A task batch over any gymnasium environment, one env per (learner, simulator)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gymnasium
import numpy as np

from envs.batch import (
    GYM_RESET_STREAM,
    EpisodeTracker,
    StepResult,
    simulator_seed_sequence,
    task_seed_for,
)

DIFFDAC_NAMESPACE = "diffdac/"


def make_learner_env(env_id: str, seed: int, learner: int) -> gymnasium.Env:
    """Learner `learner`'s env: its own task for diffdac ids, the one standard task otherwise."""
    if env_id.startswith(DIFFDAC_NAMESPACE):
        return gymnasium.make(env_id, task_seed=task_seed_for(seed, learner))
    return gymnasium.make(env_id)


class GymTaskBatch:
    """K learners x E simulators on a `SyncVectorEnv` that autoresets in the same step.

    Works for every gymnasium env (MuJoCo variants, CartPole, ...); slower than BatchedAcrobot,
    since each simulator steps through Python.
    """

    def __init__(self, env_id: str, seed: int, learner_ids: Sequence[int], envs_per_learner: int):
        self.num_learners = len(learner_ids)
        self.envs_per_learner = envs_per_learner
        self._reset_seeds = [
            int(simulator_seed_sequence(seed, k, e, GYM_RESET_STREAM).generate_state(1)[0])
            for k in learner_ids
            for e in range(envs_per_learner)
        ]
        factories = [self._factory(env_id, seed, k) for k in learner_ids for _ in range(envs_per_learner)]
        self._vec = gymnasium.vector.SyncVectorEnv(
            factories, autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP
        )
        self.observation_space = self._vec.single_observation_space
        self.action_space = self._vec.single_action_space
        self.tasks = [dict(getattr(self._vec.envs[i * envs_per_learner].unwrapped, "task", {}))
                      for i in range(self.num_learners)]
        self._episodes = EpisodeTracker((self.num_learners, envs_per_learner))

    @staticmethod
    def _factory(env_id: str, seed: int, learner: int) -> Callable[[], gymnasium.Env]:
        return lambda: make_learner_env(env_id, seed, learner)

    def _unflatten(self, x: np.ndarray) -> np.ndarray:
        """[K*E, ...] -> [K, E, ...]."""
        return x.reshape((self.num_learners, self.envs_per_learner) + x.shape[1:])

    def reset(self) -> np.ndarray:
        """Reset every simulator with its own (seed, learner, sim) seed. Returns obs [K, E, *obs_shape]."""
        obs, _ = self._vec.reset(seed=self._reset_seeds)
        self._episodes.clear()
        return self._unflatten(np.asarray(obs, dtype=np.float32))

    def step(self, actions: np.ndarray) -> StepResult:
        """actions: [K, E] for Discrete spaces, [K, E, act_dim] for Box.

        Box actions are clipped to the action space here, for the simulator only: the caller keeps
        the unclipped Gaussian samples, whose log-probabilities the policy gradient needs.
        """
        flat = np.asarray(actions).reshape((-1,) + self.action_space.shape)
        if isinstance(self.action_space, gymnasium.spaces.Box):
            flat = np.clip(flat, self.action_space.low, self.action_space.high)
        obs, reward, terminated, truncated, infos = self._vec.step(flat)
        obs = np.asarray(obs, dtype=np.float32)
        final_obs = obs.copy()
        for i in np.nonzero(infos.get("_final_obs", np.zeros(len(obs), dtype=bool)))[0]:
            final_obs[i] = infos["final_obs"][i]
        reward = self._unflatten(np.asarray(reward, dtype=np.float32))
        terminated = self._unflatten(np.asarray(terminated, dtype=bool))
        truncated = self._unflatten(np.asarray(truncated, dtype=bool))
        episode_return, episode_length = self._episodes.update(reward, terminated | truncated)
        return StepResult(self._unflatten(obs), reward, terminated, truncated,
                          self._unflatten(final_obs), episode_return, episode_length)

    def close(self) -> None:
        self._vec.close()
