"""Task families registered with gymnasium under the namespace `diffdac`, and batched simulators.

The seam: describe a batch with a `TaskSpec`, build it with `make_task_batch`; `family_of(env_id)`
answers the rest (held-out tasks, single envs for video, what an id needs). Families register in
envs.registry.
"""

from envs.acrobot import BatchedAcrobot, sample_acrobot_task
from envs.batch import MASS_SCALINGS, TASK_SEEDINGS, StepResult, TaskBatch, task_seed_for
from envs.family import TaskFamily
from envs.gym_batch import GymTaskBatch
from envs.registry import family_of, needs_mujoco, register, stock_id
from envs.sim_workers import WorkerError
from envs.spec import TaskSpec


def make_task_batch(spec: TaskSpec) -> TaskBatch:
    """The batch `spec` describes, built by its id's family; an unknown id is a one-line ValueError."""
    return family_of(spec.env_id).make_batch(spec)


__all__ = [
    "MASS_SCALINGS",
    "TASK_SEEDINGS",
    "BatchedAcrobot",
    "GymTaskBatch",
    "StepResult",
    "TaskBatch",
    "TaskFamily",
    "TaskSpec",
    "WorkerError",
    "family_of",
    "make_task_batch",
    "needs_mujoco",
    "register",
    "sample_acrobot_task",
    "stock_id",
    "task_seed_for",
]
