"""One learner's gymnasium env and the stepping of a slice of them: what a GymTaskBatch and its
worker processes (envs.sim_workers) share, below both so neither imports the other."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium
import numpy as np

from envs.batch import task_seed_for

DIFFDAC_NAMESPACE = "diffdac/"  # every id in it takes a task_seed (envs.registry registers them)


def make_learner_env(
    env_id: str,
    seed: int,
    learner: int,
    task_seeding: str = "keyed",
    render_mode: str | None = None,
    **task_options: object,
) -> gymnasium.Env:
    """Learner `learner`'s env: its own task for diffdac ids (with `task_options` such as
    mass_scaling), the one standard task otherwise."""
    render = {} if render_mode is None else {"render_mode": render_mode}
    if env_id.startswith(DIFFDAC_NAMESPACE):
        return gymnasium.make(env_id, task_seed=task_seed_for(seed, learner, task_seeding), **render, **task_options)
    return gymnasium.make(env_id, **render)


def step_envs(
    envs: Sequence[gymnasium.Env],
    actions: np.ndarray,
    obs: np.ndarray,
    final_obs: np.ndarray,
    reward: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
) -> None:
    """Step each env with its action into the given rows; one that ends is reset in the same step (SAME_STEP)."""
    for i, env in enumerate(envs):
        final_obs[i], reward[i], terminated[i], truncated[i], _ = env.step(actions[i])
        obs[i] = env.reset()[0] if terminated[i] or truncated[i] else final_obs[i]
