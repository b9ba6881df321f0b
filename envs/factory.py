"""Pick the fastest task batch for an environment id."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import gymnasium

from envs.acrobot import BatchedAcrobot, sample_acrobot_task
from envs.batch import TaskBatch, task_seed_for
from envs.gym_batch import GymTaskBatch
from envs.mujoco_tasks import is_mujoco_variant

# env id -> task family of the batched Acrobot (registered in envs/__init__.py)
ACROBOT_FAMILIES = {
    "diffdac/Acrobot-v1": "standard",
    "diffdac/RandomNormalAcrobot-v1": "normal",
    "diffdac/RandomExtremeAcrobot-v1": "extreme",
}


def is_batched_acrobot(env_id: str) -> bool:
    """Whether `env_id` runs on BatchedAcrobot rather than through gymnasium."""
    return env_id in ACROBOT_FAMILIES


def check_env_id(env_id: str) -> None:
    """Raise a one-line ValueError for an id gymnasium does not know."""
    if env_id in gymnasium.registry:
        return
    close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ValueError(
        f"unknown environment id {env_id!r}: {hint}see gymnasium.registry for the ids, "
        "e.g. diffdac/RandomExtremeAcrobot-v1"
    )


def make_task_batch(
    env_id: str,
    seed: int,
    learner_ids: Sequence[int],
    envs_per_learner: int,
    task_seeding: str = "keyed",
    mass_scaling: str = "body-mass",
    sim_threads: int = 1,
    sim_processes: int = 1,
) -> TaskBatch:
    """Learners `learner_ids` x `envs_per_learner` simulators of `env_id`, each learner on its own task.

    `task_seeding` picks how a learner's task seed follows from (seed, learner) (envs.batch.task_seed_for);
    `mass_scaling` how a MuJoCo variant's mass factor is applied (envs.mujoco.build_model);
    `sim_threads` how many threads, or `sim_processes` how many processes, step a gymnasium batch (the
    batched Acrobot is one array computation).
    """
    if is_batched_acrobot(env_id):
        family = ACROBOT_FAMILIES[env_id]
        tasks = [sample_acrobot_task(family, task_seed_for(seed, k, task_seeding)) for k in learner_ids]
        return BatchedAcrobot(tasks, envs_per_learner, seed, learner_ids)
    check_env_id(env_id)
    options = {"mass_scaling": mass_scaling} if is_mujoco_variant(env_id) else {}
    return GymTaskBatch(
        env_id, seed, learner_ids, envs_per_learner, task_seeding, sim_threads, sim_processes, **options
    )
