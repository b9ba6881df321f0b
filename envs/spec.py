"""What a task batch is asked to be: one frozen value instead of a row of positional parameters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from envs.batch import task_seed_for


@dataclass(frozen=True)
class TaskSpec:
    """Learners `learner_ids` x `envs_per_learner` simulators of `env_id`, each learner on its own task.

    A learner's task follows from (seed, learner id) by `task_seeding` (envs.batch.task_seed_for),
    unless `tasks` gives it explicitly (one parameter dict per learner, for families whose batch
    takes parameters: an Acrobot tasks.csv). `seed` also keys every simulator's initial states.
    `mass_scaling` is how a MuJoCo variant applies its mass factor (envs.mujoco.build_model);
    `sim_threads` or `sim_processes` how many threads or processes step a gymnasium batch.
    Families ignore what does not concern them.
    """

    env_id: str
    seed: int
    learner_ids: Sequence[int]
    envs_per_learner: int = 1
    task_seeding: str = "keyed"
    mass_scaling: str = "body-mass"
    sim_threads: int = 1
    sim_processes: int = 1
    tasks: Sequence[dict] | None = field(default=None, hash=False)  # dicts: compared, not hashed

    def __post_init__(self) -> None:
        # Plain ints, so the spec is one value however the ids were held (a numpy array, a range).
        object.__setattr__(self, "learner_ids", tuple(int(k) for k in self.learner_ids))
        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(dict(t) for t in self.tasks))
            if len(self.tasks) != len(self.learner_ids):
                raise ValueError(
                    f"got {len(self.tasks)} tasks for {len(self.learner_ids)} learners: give one task per learner"
                )

    def task_seed(self, learner: int) -> int:
        """The task seed of learner id `learner` (a function of seed and id only, never of the layout)."""
        return task_seed_for(self.seed, learner, self.task_seeding)
