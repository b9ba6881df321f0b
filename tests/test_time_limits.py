"""Which episode ends are bootstrapped: a hand-made rollout, and the rule as the learner loop applies it."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

import topologies
from diffdac import TrainConfig
from diffdac.learners.a2c import bootstrap_truncations, compute_returns
from diffdac.network.comm import LocalCommunicator
from diffdac.learners.block import EpisodeStats, Learners, bootstrapped
from diffdac.network.methods import method_for
from diffdac.run.prepare import resolve_defaults
from envs.batch import StepResult

GAMMA = 0.5


def _col(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).view(1, -1, 1)  # [K, T, E]


def _returns(terminated, truncated, time_limit="bootstrap") -> list[float]:
    """Return targets of a 3-step rollout whose last observations are worth 10 (V = 0 elsewhere)."""
    rewards, values, final_values = _col([1.0, 1.0, 1.0]), _col([0.0, 0.0, 0.0]), _col([10.0, 10.0, 10.0])
    cut = bootstrapped(np.array(terminated).reshape(1, -1, 1), np.array(truncated).reshape(1, -1, 1), time_limit)
    dones = _col(np.logical_or(terminated, truncated).astype(float))
    rewards = bootstrap_truncations(rewards, torch.from_numpy(cut).double(), final_values, GAMMA)
    _, ret = compute_returns(rewards, values, dones, torch.tensor([[10.0]], dtype=torch.float64), GAMMA)
    return ret.flatten().tolist()


def test_a_step_cut_by_the_time_limit_is_bootstrapped():
    # step 1 truncated: R1 = 1 + 0.5*10 = 6, R0 = 1 + 0.5*6 = 4; R2 = 1 + 0.5*10 = 6
    assert _returns([False, False, False], [False, True, False]) == pytest.approx([4.0, 6.0, 6.0])


def test_a_step_both_terminated_and_truncated_is_not_bootstrapped():
    # the goal reached at the last allowed step ends the episode in the task: R1 = 1, R0 = 1.5
    assert _returns([False, True, False], [False, True, False]) == pytest.approx([1.5, 1.0, 6.0])
    assert _returns([False, True, False], [False, False, False]) == pytest.approx([1.5, 1.0, 6.0])


def test_time_limits_treated_as_terminal_bootstrap_nothing():
    assert _returns([False, False, False], [False, True, False], "terminal") == pytest.approx([1.5, 1.0, 6.0])


class ScriptedBatch:
    """One learner, one simulator, with the terminated and truncated flags of a script."""

    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)
    num_learners, envs_per_learner, tasks = 1, 1, [{}]

    def __init__(self, script: list[tuple[bool, bool]]) -> None:
        self.script, self.t = script, 0

    def reset(self) -> np.ndarray:
        return np.zeros((1, 1, 2), np.float32)

    def step(self, actions: np.ndarray) -> StepResult:
        terminated, truncated = (np.array([[flag]]) for flag in self.script[self.t])
        self.t += 1
        obs, done = np.full((1, 1, 2), 0.5, np.float32), terminated | truncated
        return StepResult(
            obs,
            np.full((1, 1), -1.0, np.float32),
            terminated,
            truncated,
            obs,
            np.where(done, -float(self.t), 0.0),
            np.where(done, self.t, 0),
        )

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "time_limit, expected", [("bootstrap", [0.0, 1.0, 0.0, 0.0]), ("terminal", [0.0, 0.0, 0.0, 0.0])]
)
def test_the_learner_loop_bootstraps_only_cuts_that_did_not_end_the_task(tmp_path, time_limit, expected):
    config = resolve_defaults(
        TrainConfig(
            num_learners=1,
            envs_per_learner=1,
            steps_per_update=4,
            hidden=4,
            topology="none",
            time_limit=time_limit,
            total_steps=4,
        ).validate()
    )
    script = [(False, False), (False, True), (True, True), (True, False)]  # cut; cut at the goal; the goal
    method = method_for(config, topologies.resolve_graph("none", None, 1))
    learners = Learners(config, method, LocalCommunicator(), ScriptedBatch(script), np.arange(1))
    learners.collect(EpisodeStats(1).record)
    assert learners.rollout.truncated.flatten().tolist() == expected
    assert learners.rollout.dones.flatten().tolist() == [0.0, 1.0, 1.0, 1.0]
