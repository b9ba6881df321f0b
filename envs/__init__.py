"""Task variants registered with gymnasium under the namespace `diffdac`, and batched simulators."""

import gymnasium

from envs.acrobot import DEFAULT_MAX_EPISODE_STEPS, BatchedAcrobot, sample_acrobot_task
from envs.batch import StepResult, TaskBatch, task_seed_for
from envs.factory import ACROBOT_FAMILIES, is_batched_acrobot, make_task_batch
from envs.gym_batch import GymTaskBatch

ACROBOT_REWARD_THRESHOLD = -100.0  # gymnasium Acrobot-v1


def _register_acrobots() -> None:
    """Register the Acrobot variants once; importing again leaves the registry as it is."""
    for env_id, family in ACROBOT_FAMILIES.items():
        if env_id in gymnasium.registry:
            continue
        gymnasium.register(
            id=env_id,
            entry_point="envs.acrobot:AcrobotVariantEnv",
            kwargs={"family": family},
            max_episode_steps=DEFAULT_MAX_EPISODE_STEPS,
            reward_threshold=ACROBOT_REWARD_THRESHOLD,
        )


_register_acrobots()

__all__ = [
    "BatchedAcrobot",
    "GymTaskBatch",
    "StepResult",
    "TaskBatch",
    "is_batched_acrobot",
    "make_task_batch",
    "sample_acrobot_task",
    "task_seed_for",
]
