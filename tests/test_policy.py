"""A trained policy on its own: load_policy's module and the exported program act as diffdac eval does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import diffdac
from diffdac import TrainConfig, train
from diffdac.tools import evaluate
from diffdac.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    config = TrainConfig(
        env="CartPole-v1",
        num_learners=3,
        envs_per_learner=2,
        hidden=16,
        total_steps=20_000,
        normalize=("obs",),
        topology="line",
        lr=3e-3,
        log_dir=str(tmp_path_factory.mktemp("policy") / "run"),
        progress=False,
    )
    return train(config)


def _returns_of(module: torch.nn.Module, run_dir: Path, episodes: int) -> np.ndarray:
    """The episodes diffdac eval plays (same tasks, same initial states), with `module` choosing the actions."""
    config = TrainConfig.from_run(run_dir)
    tasks = evaluate.task_set(config, "train")
    batch = evaluate.eval_batch(config, tasks, 1, episodes, 0)

    def choose(obs: np.ndarray, step: int) -> np.ndarray:
        flat = torch.from_numpy(obs.reshape(-1, obs.shape[-1]))
        actions = module(flat).numpy()
        return actions.reshape(obs.shape[:2] + actions.shape[1:])

    return evaluate.play(batch, choose)[0].reshape(-1)


@pytest.mark.parametrize("learner, policy", [("average", "average"), ("1", "learner 1")])
def test_the_exported_policy_plays_exactly_the_episodes_diffdac_eval_plays(run_dir, tmp_path, learner, policy):
    out = tmp_path / "eval.csv"
    assert main(["eval", str(run_dir), "--episodes", "3", "--out", str(out)]) == 0
    expected = pd.read_csv(out).query("policy == @policy")["return"].to_numpy()
    assert len(np.unique(expected)) > 1  # a policy that does different things on different tasks
    assert main(["export", str(run_dir), "--learner", learner, "--out", str(tmp_path / "policy.pt2")]) == 0
    exported = torch.export.load(str(tmp_path / "policy.pt2")).module()
    np.testing.assert_array_equal(_returns_of(exported, run_dir, 3), expected)
    loaded = diffdac.load_policy(run_dir, int(learner) if learner != "average" else learner)
    np.testing.assert_array_equal(_returns_of(loaded, run_dir, 3), expected)


def test_one_observation_gives_one_action_and_bad_learners_are_refused(run_dir, capsys):
    module = diffdac.load_policy(run_dir)
    action = module(torch.zeros(4))
    assert action.dim() == 0 and 0 <= int(action) < 2
    assert main(["export", str(run_dir), "--learner", "7", "--out", "x.pt2"]) == 2
    assert "--learner 7: the run has learners 0..2" in capsys.readouterr().err


def test_a_continuous_policy_gives_clipped_mean_actions_and_the_episodes_eval_plays(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo may write MUJOCO_LOG.TXT
    run_dir = train(
        TrainConfig(
            env="diffdac/RandomMassHopper-v5",
            num_learners=2,
            envs_per_learner=1,
            hidden=8,
            total_steps=400,
            log_dir=str(tmp_path / "hop"),
            progress=False,
        )
    )
    module = diffdac.load_policy(run_dir, 0)
    actions = module(torch.randn(5, 11) * 100)
    assert actions.shape == (5, 3) and actions.abs().max() <= 1.0
    out = tmp_path / "eval.csv"
    assert main(["eval", str(run_dir), "--episodes", "1", "--policies", "learners", "--out", str(out)]) == 0
    expected = pd.read_csv(out).query("policy == 'learner 0'")["return"].to_numpy()
    np.testing.assert_array_equal(_returns_of(module, run_dir, 1), expected)
