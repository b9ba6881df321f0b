"""Task variants registered with gymnasium under the namespace `diffdac`, and batched simulators."""

import gymnasium

from envs.acrobot import DEFAULT_MAX_EPISODE_STEPS, BatchedAcrobot, sample_acrobot_task
from envs.batch import StepResult, TaskBatch, task_seed_for
from envs.factory import ACROBOT_FAMILIES, is_batched_acrobot, make_task_batch
from envs.gym_batch import GymTaskBatch
from envs.mujoco_tasks import FAMILIES as MUJOCO_FAMILIES
from envs.mujoco_tasks import ROBOT_NAMES, sample_mujoco_task, variant_id
from envs.sim_workers import WorkerError

ACROBOT_REWARD_THRESHOLD = -100.0  # gymnasium Acrobot-v1


def needs_mujoco(env_id: str) -> bool:
    """Whether making `env_id` imports mujoco (our variants and gymnasium's own MuJoCo envs)."""
    spec = gymnasium.registry.get(env_id)
    entry = getattr(spec, "entry_point", "")
    return "mujoco" in (entry if isinstance(entry, str) else getattr(entry, "__module__", ""))


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


def _register_mujoco_variants() -> None:
    """Register every MuJoCo family x robot with the stock v5 env's episode limit and threshold.

    The entry point is a string, so mujoco itself is imported only when a variant is made.
    """
    for robot in ROBOT_NAMES:
        stock = gymnasium.spec(f"{robot}-v5")
        for family in MUJOCO_FAMILIES:
            env_id = variant_id(family, robot)
            if env_id in gymnasium.registry:
                continue
            gymnasium.register(
                id=env_id,
                entry_point=f"envs.mujoco:{robot}VariantEnv",
                kwargs={"family": family},
                max_episode_steps=stock.max_episode_steps,
                reward_threshold=stock.reward_threshold,
            )


_register_acrobots()
_register_mujoco_variants()

__all__ = [
    "BatchedAcrobot",
    "GymTaskBatch",
    "StepResult",
    "TaskBatch",
    "WorkerError",
    "is_batched_acrobot",
    "needs_mujoco",
    "make_task_batch",
    "sample_acrobot_task",
    "sample_mujoco_task",
    "task_seed_for",
]
