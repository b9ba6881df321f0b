"""A task batch over any gymnasium environment, one env per (learner, simulator)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import gymnasium
import numpy as np

from envs.batch import GYM_RESET_STREAM, EpisodeTracker, StepResult, simulator_seed_sequence
from envs.gym_env import make_learner_env, step_envs
from envs.sim_workers import SimWorker
from envs.spec import TaskSpec


class GymTaskBatch:
    """K learners x E gymnasium envs stepped in one call, each autoreset in the step that ends it.

    Works for every gymnasium env (MuJoCo variants, CartPole, ...); slower than BatchedAcrobot,
    since each simulator steps through Python. The loop is gymnasium's SyncVectorEnv with
    SAME_STEP autoreset (a test holds them equal) without its per-step merging of info dicts,
    which nothing here reads and which costs about a tenth of a MuJoCo step.

    With `sim_threads` > 1 the simulators are stepped in that many slices from a thread pool:
    mujoco releases the GIL in mj_step, so MuJoCo batches use more than one core. Every
    simulator is stepped exactly as alone, so the numbers do not depend on the thread count.
    With `sim_processes` > 1 this process steps the first slice and a worker process
    (envs.sim_workers) each other one, beside it: the Python of a step runs in parallel too.
    """

    def __init__(self, spec: TaskSpec, **task_options: object):
        """`task_options` go to every env's constructor (a MuJoCo variant's mass_scaling)."""
        if spec.sim_threads > 1 and spec.sim_processes > 1:
            raise ValueError("give --sim-threads or --sim-processes, not both")
        E = spec.envs_per_learner
        self.num_learners = len(spec.learner_ids)
        self.envs_per_learner = E
        owners = [k for k in spec.learner_ids for _ in range(E)]  # the learner of each simulator
        self._reset_seeds = [
            int(simulator_seed_sequence(spec.seed, k, e, GYM_RESET_STREAM).generate_state(1)[0])
            for k in spec.learner_ids
            for e in range(E)
        ]
        n = len(owners)
        parts = min(max(spec.sim_threads, spec.sim_processes), n)
        self._slices = [(int(s[0]), int(s[-1]) + 1) for s in np.array_split(np.arange(n), parts)]
        # Processes: this one steps the first slice, a worker each other slice. Threads: every env is here.
        processes = spec.sim_processes > 1
        local = self._slices[0][1] if processes else n
        make = (spec.env_id, spec.seed)
        self._workers = (
            [SimWorker(*make, owners[lo:hi], spec.task_seeding, task_options) for lo, hi in self._slices[1:]]
            if processes
            else []
        )
        try:
            self._envs = [make_learner_env(*make, k, spec.task_seeding, **task_options) for k in owners[:local]]
            sim_tasks = [dict(getattr(env.unwrapped, "task", {})) for env in self._envs]
            for worker in self._workers:
                sim_tasks += worker.tasks()
        except BaseException:
            self._close_workers()
            raise
        self.observation_space = self._envs[0].observation_space
        self.action_space = self._envs[0].action_space
        self.tasks = sim_tasks[::E]
        self._episodes = EpisodeTracker((self.num_learners, E))
        self._pool = ThreadPoolExecutor(len(self._slices)) if len(self._slices) > 1 and not self._workers else None

    def _unflatten(self, x: np.ndarray) -> np.ndarray:
        """[K*E, ...] -> [K, E, ...]."""
        return x.reshape((self.num_learners, self.envs_per_learner) + x.shape[1:])

    def reset(self) -> np.ndarray:
        """Reset every simulator with its own (seed, learner, sim) seed. Returns obs [K, E, *obs_shape]."""
        obs = [np.stack([env.reset(seed=s)[0] for env, s in zip(self._envs, self._reset_seeds)])]
        obs += [worker.reset(self._reset_seeds[lo:hi]) for worker, (lo, hi) in zip(self._workers, self._slices[1:])]
        obs = np.concatenate(obs)
        self._episodes.clear()
        return self._unflatten(obs.astype(np.float32))

    def step(self, actions: np.ndarray) -> StepResult:
        """actions: [K, E] for Discrete spaces, [K, E, act_dim] for Box.

        Box actions are clipped to the action space here, for the simulator only: the caller keeps
        the unclipped Gaussian samples, whose log-probabilities the policy gradient needs.
        """
        flat = np.asarray(actions).reshape((-1,) + self.action_space.shape)
        if isinstance(self.action_space, gymnasium.spaces.Box):
            flat = np.clip(flat, self.action_space.low, self.action_space.high)
        n = self.num_learners * self.envs_per_learner
        obs = np.empty((n,) + self.observation_space.shape, dtype=np.float32)
        final_obs = np.empty_like(obs)
        reward = np.empty(n, dtype=np.float32)
        terminated, truncated = np.empty(n, dtype=bool), np.empty(n, dtype=bool)
        out = (obs, final_obs, reward, terminated, truncated)

        def step_slice(lo: int, hi: int) -> None:
            step_envs(self._envs[lo:hi], flat[lo:hi], *(a[lo:hi] for a in out))

        if self._workers:
            for worker, (lo, hi) in zip(self._workers, self._slices[1:]):
                worker.send_step(flat[lo:hi])
            step_slice(*self._slices[0])
            for worker, (lo, hi) in zip(self._workers, self._slices[1:]):
                for array, part in zip(out, worker.receive_step()):
                    array[lo:hi] = part
        elif self._pool is None:
            step_slice(0, n)
        else:
            for done in [self._pool.submit(step_slice, lo, hi) for lo, hi in self._slices]:
                done.result()  # re-raises a simulator's error here
        reward, terminated, truncated = self._unflatten(reward), self._unflatten(terminated), self._unflatten(truncated)
        episode_return, episode_length = self._episodes.update(reward, terminated | truncated)
        return StepResult(
            self._unflatten(obs),
            reward,
            terminated,
            truncated,
            self._unflatten(final_obs),
            episode_return,
            episode_length,
        )

    def state_dict(self) -> None:
        """None: gymnasium envs cannot hand over their simulator state, so a resumed run starts new episodes."""
        return None

    def load_state_dict(self, state: dict) -> None:
        raise TypeError("GymTaskBatch cannot restore its simulators (its state_dict is None)")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        self._close_workers()
        for env in self._envs:
            env.close()

    def _close_workers(self) -> None:
        for worker in self._workers:
            worker.close()
