"""Task families: what one kind of task knows about itself, in one place.

A family owns its gymnasium ids and says how a learner's task is drawn, how a batch of its
learners is built from a TaskSpec, which tasks are held out for evaluation, what it needs
(MuJoCo, pygame to draw) and how one rendering env of a task is made. envs.registry maps
each id to its family; everything outside envs reaches families through that seam.

The base class is the plain gymnasium family (CartPole-v1, Hopper-v5, ...): one standard task
for every learner, stepped by a GymTaskBatch. A new family subclasses it, overrides what
differs, and is registered in envs.registry.
"""

from __future__ import annotations

import gymnasium

from envs.acrobot import DEFAULT_MAX_EPISODE_STEPS, BatchedAcrobot, apply_task, sample_acrobot_task
from envs.batch import TaskBatch
from envs.gym_batch import GymTaskBatch
from envs.gym_env import make_learner_env
from envs.mujoco_tasks import ROBOT_NAMES, sample_mujoco_task, variant_id
from envs.spec import TaskSpec

ACROBOT_REWARD_THRESHOLD = -100.0  # gymnasium Acrobot-v1


class TaskFamily:
    """A family of tasks on some gymnasium ids; these defaults are plain gymnasium's."""

    ids: tuple[str, ...] = ()
    needs_mujoco = False  # making one of its envs imports mujoco
    simulator_kind = "gym"  # what a simulator costs in memory (diffdac.run.limits.SIMULATOR_BYTES)
    task_keys: tuple[str, ...] = ()  # a task's parameters where a batch can take them (a tasks.csv's columns)
    render_needs: tuple[str, ...] = ()  # modules its envs draw with, beyond gymnasium

    def registration(self, env_id: str) -> dict | None:
        """gymnasium.register's arguments for `env_id`, or None for an id gymnasium has already."""
        return None

    def sample_task(self, task_seed: int) -> dict:
        """The task of a learner whose task seed is `task_seed` (plain gymnasium ids have one, empty)."""
        return {}

    def learner_tasks(self, spec: TaskSpec) -> list[dict]:
        """The task of each learner of `spec`: its explicit tasks, else those its task seeds draw."""
        if spec.tasks is not None:
            return [dict(t) for t in spec.tasks]
        return [self.sample_task(spec.task_seed(k)) for k in spec.learner_ids]

    def make_batch(self, spec: TaskSpec) -> TaskBatch:
        """The batch of `spec`'s learners, each on its own task."""
        self._refuse_explicit_tasks(spec)
        return GymTaskBatch(spec, **self.env_options(spec))

    def make_env(self, spec: TaskSpec, index: int, render_mode: str | None = None) -> gymnasium.Env:
        """One env of `spec`'s `index`-th learner, on its task (for video: `render_mode` rgb_array)."""
        self._refuse_explicit_tasks(spec)
        learner = spec.learner_ids[index]
        return make_learner_env(
            spec.env_id, spec.seed, learner, spec.task_seeding, render_mode, **self.env_options(spec)
        )

    def env_options(self, spec: TaskSpec) -> dict:
        """Keyword arguments from `spec` that each of its envs takes."""
        return {}

    def heldout(self, env_id: str, num_learners: int) -> tuple[str, list[int]]:
        """The id and learner ids of tasks no learner of a `num_learners` run trained on: by default
        the task seeds of learners the run never had."""
        return env_id, list(range(num_learners, 2 * num_learners))

    def stock_id(self, env_id: str) -> str | None:
        """The stock gymnasium id `env_id` varies (a benchmark's peer), or None."""
        return None

    def _refuse_explicit_tasks(self, spec: TaskSpec) -> None:
        if spec.tasks is not None:
            raise ValueError(f"{spec.env_id} draws its tasks from task seeds: it takes no task parameters")


class GymnasiumFamily(TaskFamily):
    """A gymnasium id no family registered: the fallback, made for that one id on lookup.

    Nothing but gymnasium's registration is known of it, so whether it needs MuJoCo is read off
    its entry point's module (gymnasium.envs.mujoco...), without importing it.
    """

    def __init__(self, env_id: str):
        self.ids = (env_id,)
        entry = getattr(gymnasium.registry.get(env_id), "entry_point", "")
        module = entry if isinstance(entry, str) else getattr(entry, "__module__", "")
        self.needs_mujoco = "mujoco" in module
        self.simulator_kind = "mujoco" if self.needs_mujoco else "gym"


class AcrobotFamily(TaskFamily):
    """Acrobots with link masses, lengths and inertias of one range (Packer et al. 2018), all
    stepped as one array computation (BatchedAcrobot); a batch can take explicit tasks."""

    simulator_kind = "batched"
    task_keys = ("mass", "length", "inertia")
    render_needs = ("pygame",)

    def __init__(self, env_id: str, task_range: str, heldout_id: str | None = None):
        self.ids = (env_id,)
        self.task_range = task_range  # envs.acrobot.FAMILIES
        self.heldout_id = heldout_id  # the other range, if there is one

    def registration(self, env_id: str) -> dict:
        return {
            "entry_point": "envs.acrobot:AcrobotVariantEnv",
            "kwargs": {"family": self.task_range},
            "max_episode_steps": DEFAULT_MAX_EPISODE_STEPS,
            "reward_threshold": ACROBOT_REWARD_THRESHOLD,
        }

    def sample_task(self, task_seed: int) -> dict:
        return sample_acrobot_task(self.task_range, task_seed)

    def make_batch(self, spec: TaskSpec) -> TaskBatch:
        return BatchedAcrobot(self.learner_tasks(spec), spec.envs_per_learner, spec.seed, spec.learner_ids)

    def make_env(self, spec: TaskSpec, index: int, render_mode: str | None = None) -> gymnasium.Env:
        if spec.tasks is None:
            return super().make_env(spec, index, render_mode)
        env = gymnasium.make(spec.env_id, render_mode=render_mode)
        apply_task(env.unwrapped, spec.tasks[index])
        env.unwrapped.task = dict(spec.tasks[index])
        return env

    def heldout(self, env_id: str, num_learners: int) -> tuple[str, list[int]]:
        """The other range's tasks, if there is one; else new task seeds."""
        if self.heldout_id is None:
            return super().heldout(env_id, num_learners)
        return self.heldout_id, list(range(num_learners))


class MujocoFamily(TaskFamily):
    """One MuJoCo task family (envs.mujoco_tasks.FAMILIES) on every robot: gymnasium's v5 env on
    a model built for each learner's task (envs.mujoco), stepped by a GymTaskBatch."""

    needs_mujoco = True
    simulator_kind = "mujoco"

    def __init__(self, family: str):
        self.family = family
        self.robots = {variant_id(family, robot): robot for robot in ROBOT_NAMES}
        self.ids = tuple(self.robots)

    def registration(self, env_id: str) -> dict:
        """The stock v5 env's episode limit and threshold; a string entry point, so mujoco itself
        is imported only when a variant is made."""
        robot = self.robots[env_id]
        stock = gymnasium.spec(f"{robot}-v5")
        return {
            "entry_point": f"envs.mujoco:{robot}VariantEnv",
            "kwargs": {"family": self.family},
            "max_episode_steps": stock.max_episode_steps,
            "reward_threshold": stock.reward_threshold,
        }

    def sample_task(self, task_seed: int) -> dict:
        return sample_mujoco_task(self.family, task_seed)

    def env_options(self, spec: TaskSpec) -> dict:
        return {"mass_scaling": spec.mass_scaling}

    def stock_id(self, env_id: str) -> str:
        return f"{self.robots[env_id]}-v5"
