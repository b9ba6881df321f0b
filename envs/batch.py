"""The interface every task batch offers, and the seeds that keep it layout independent.

A task batch steps K learners x E simulators in one call. Every random stream is keyed by the
global learner id (and simulator index), never by a generator shared by the batch, so the same
seed gives the same numbers whether learners run in one process or in many.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import gymnasium
import numpy as np

# Salts that keep the seed streams of different purposes apart.
RESET_STREAM = 0xAC  # initial states of simulators
GYM_RESET_STREAM = 0x6E  # seeds passed to gymnasium's reset


@dataclass
class StepResult:
    """What one call to `step` returns for all K x E simulators."""

    obs: np.ndarray  # [K, E, *obs_shape] float32, after autoreset
    reward: np.ndarray  # [K, E] float32
    terminated: np.ndarray  # [K, E] bool
    truncated: np.ndarray  # [K, E] bool
    final_obs: np.ndarray  # [K, E, *obs_shape] float32: last obs before any reset (= obs where not done)
    episode_return: np.ndarray  # [K, E] float64: return of the episode that ended here, 0 elsewhere
    episode_length: np.ndarray  # [K, E] int64: its length, 0 elsewhere


class TaskBatch(Protocol):
    """K learners x E simulators stepped together; spaces are those of ONE simulator."""

    observation_space: gymnasium.Space
    action_space: gymnasium.Space
    num_learners: int
    envs_per_learner: int
    tasks: list[dict]

    def reset(self) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> StepResult: ...

    def state_dict(self) -> dict | None:
        """What a checkpoint needs to continue every running episode exactly (tensors and plain values only),
        or None for a batch that cannot restore its simulators: a resumed run then starts new episodes."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Take back a `state_dict()` that was not None."""
        ...

    def close(self) -> None: ...


TASK_SEEDINGS = ("keyed", "original")  # how learner r's task follows from the seed (task_seed_for)
MASS_SCALINGS = ("body-mass", "mass-and-inertia")  # how a MuJoCo mass variant scales the body (envs.mujoco)


def task_seed_for(seed: int, learner: int, seeding: str = "keyed") -> int:
    """Learner `learner`'s task seed: a function of (seed, learner) only, never of the process layout.

    `keyed` hashes (seed, learner), so runs of different seeds share no task; `original` is the
    original Diff-DAC's seed + 2 * learner, under which seed s's learner 1 has seed s + 2's learner 0's task.
    """
    if seeding == "original":
        return seed + 2 * learner
    if seeding != "keyed":
        raise ValueError(f"unknown task seeding {seeding!r}: choose one of {', '.join(TASK_SEEDINGS)}")
    return int(np.random.SeedSequence([seed, learner]).generate_state(1)[0])


def simulator_seed_sequence(seed: int, learner: int, sim: int, stream: int) -> np.random.SeedSequence:
    """The seed of one simulator's private stream, so regrouping learners changes no draw."""
    return np.random.SeedSequence([seed, learner, sim, stream])


def simulator_rngs(seed: int, learner_ids: Sequence[int], envs_per_learner: int) -> list[list[np.random.Generator]]:
    """One generator per (learner, simulator) for initial states: rngs[k][e]."""
    return [
        [
            np.random.Generator(np.random.PCG64(simulator_seed_sequence(seed, k, e, RESET_STREAM)))
            for e in range(envs_per_learner)
        ]
        for k in learner_ids
    ]


class EpisodeTracker:
    """Running return and length of every simulator's current episode."""

    def __init__(self, shape: tuple[int, ...]):
        self.returns = np.zeros(shape, dtype=np.float64)  # [K, E]
        self.lengths = np.zeros(shape, dtype=np.int64)  # [K, E]

    def clear(self) -> None:
        self.returns[...] = 0.0
        self.lengths[...] = 0

    def update(self, reward: np.ndarray, done: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add this step's reward; return (return, length) of episodes ending here, 0 elsewhere."""
        self.returns += reward
        self.lengths += 1
        if not done.any():
            return np.zeros_like(self.returns), np.zeros_like(self.lengths)
        ended_return = np.where(done, self.returns, 0.0)
        ended_length = np.where(done, self.lengths, 0)
        self.returns[done] = 0.0
        self.lengths[done] = 0
        return ended_return, ended_length
