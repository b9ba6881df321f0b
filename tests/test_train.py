import json

import numpy as np
import pandas as pd
import pytest
import torch

from diffdac import TrainConfig, train
from diffdac.run import checkpoint


def _config(tmp_path, name="run", **overrides) -> TrainConfig:
    options = dict(
        num_learners=4,
        envs_per_learner=2,
        total_steps=4000,
        log_interval=1000,
        hidden=16,
        log_dir=str(tmp_path / name),
        progress=False,
    )
    options.update(overrides)
    return TrainConfig(**options)


def _monitors(run_dir) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_csv(p, skiprows=1) for p in sorted((run_dir / "monitor").glob("*.monitor.csv"))}


def _final_params(run_dir) -> torch.Tensor:
    return checkpoint.gather(run_dir, "params")


def test_a_run_writes_the_run_directory_of_the_design(tmp_path):
    run_dir = train(_config(tmp_path))
    for name in ("config.json", "topology.csv", "combination.csv", "tasks.csv", "progress.csv"):
        assert (run_dir / name).is_file(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["num_learners"] == 4 and config["world_size"] == 1 and "version" in config
    tasks = pd.read_csv(run_dir / "tasks.csv")
    assert list(tasks.columns[:2]) == ["learner", "env_id"] and len(tasks) == 4
    assert {"mass", "length", "inertia"} <= set(tasks.columns)
    progress = pd.read_csv(run_dir / "progress.csv")
    assert {
        "steps",
        "time",
        "mean_return",
        "policy_loss",
        "value_loss",
        "entropy",
        "disagreement",
        "steps_per_s",
    } <= set(progress.columns)
    assert progress["steps"].iloc[-1] == 4000


def test_monitor_files_are_in_the_baselines_format(tmp_path):
    run_dir = train(_config(tmp_path, total_steps=8000))
    paths = sorted((run_dir / "monitor").glob("*.monitor.csv"))
    assert [p.name for p in paths][:2] == ["learner000.sim00.monitor.csv", "learner000.sim01.monitor.csv"]
    assert len(paths) == 8
    header = json.loads(paths[0].read_text().splitlines()[0][1:])
    assert {"t_start", "env_id", "mass", "length", "inertia"} <= set(header)
    frame = pd.read_csv(paths[0], skiprows=1)
    assert list(frame.columns) == ["r", "l", "t"] and len(frame) >= 1
    assert (frame["l"] <= 500).all() and (frame["r"] == -(frame["l"] - (frame["l"] < 500))).all()


def test_same_seed_gives_identical_episodes_and_parameters(tmp_path):
    first, second = train(_config(tmp_path, "a")), train(_config(tmp_path, "b"))
    a, b = _monitors(first), _monitors(second)
    assert a.keys() == b.keys()
    for name in a:
        pd.testing.assert_frame_equal(a[name][["r", "l"]], b[name][["r", "l"]])
    assert torch.equal(_final_params(first), _final_params(second))
    other = train(_config(tmp_path, "c", seed=1))
    assert not torch.equal(_final_params(first), _final_params(other))


def test_a_ring_keeps_learners_far_closer_than_isolation(tmp_path):
    ring = pd.read_csv(train(_config(tmp_path, "ring")) / "progress.csv")
    alone = pd.read_csv(train(_config(tmp_path, "none", topology="none")) / "progress.csv")
    assert ring["disagreement"].iloc[-1] * 10 < alone["disagreement"].iloc[-1]


def test_learning_rate_zero_and_separate_init_converge_to_the_exact_mean(tmp_path):
    config = _config(
        tmp_path,
        lr=0.0,
        separate_init=True,
        weights="metropolis",
        total_steps=4 * 60,
        envs_per_learner=1,
        steps_per_update=1,
    )
    from diffdac.learners.population import Population
    import envs

    tasks = envs.make_task_batch(envs.TaskSpec(config.env, config.seed, np.arange(4), 1))
    start = Population(
        tasks.observation_space, tasks.action_space, np.arange(4), 16, config.seed, separate_init=True
    ).flat.detach()
    final = _final_params(train(config))
    torch.testing.assert_close(final, start.mean(0, keepdim=True).expand_as(final), atol=1e-5, rtol=0)


@pytest.mark.parametrize("normalize", [("obs",), ("obs", "reward")])
def test_normalisation_runs_and_its_statistics_are_diffused(tmp_path, normalize):
    run_dir = train(_config(tmp_path, normalize=normalize, topology="full"))
    mean = checkpoint.gather(run_dir, "obs_norm.mean")
    torch.testing.assert_close(mean, mean[:1].expand_as(mean))


def test_local_normaliser_keeps_statistics_apart(tmp_path):
    run_dir = train(_config(tmp_path, normalize=("obs",), topology="full", local_normalizer=True))
    mean = checkpoint.gather(run_dir, "obs_norm.mean")
    assert not torch.equal(mean[0], mean[1])


def test_other_gymnasium_ids_train_through_vector_envs(tmp_path):
    run_dir = train(_config(tmp_path, env="CartPole-v1", num_learners=2, total_steps=2000))
    assert len(_monitors(run_dir)) == 4


def test_gae_option_trains(tmp_path):
    run_dir = train(_config(tmp_path, gae_lambda=0.95, total_steps=2000))
    assert pd.read_csv(run_dir / "progress.csv")["steps"].iloc[-1] == 2000


def test_default_run_directories_never_collide(tmp_path, monkeypatch):
    """A learning-rate loop in Python makes several runs in one second."""
    monkeypatch.chdir(tmp_path)
    options = dict(num_learners=2, envs_per_learner=1, hidden=8, total_steps=100, progress=False)
    dirs = [train(TrainConfig(**options, lr=lr)) for lr in (1e-3, 2e-3, 3e-3, 4e-3)]
    assert len(set(dirs)) == 4 and all((d / "config.json").is_file() for d in dirs)
    assert [TrainConfig.from_run(d).lr for d in dirs] == [1e-3, 2e-3, 3e-3, 4e-3]


def test_without_a_terminal_a_run_says_where_it_logs_and_prints_a_status_line_per_interval(tmp_path):
    import subprocess
    import sys

    args = [
        "--num-learners",
        "2",
        "--envs-per-learner",
        "1",
        "--hidden",
        "8",
        "--total-steps",
        "1000",
        "--log-interval",
        "250",
    ]
    shown = subprocess.run(
        [sys.executable, "-m", "diffdac", "train", *args, "--log-dir", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = shown.stdout.splitlines()
    assert shown.returncode == 0 and lines[0].endswith(f"logs in {tmp_path / 'a'}"), shown.stdout
    status = [line for line in lines if "env steps (" in line]
    assert (
        len(status) == 4 and status[-1].startswith("diffdac: 1k/1k env steps (100%)") and "steps/s, score" in status[0]
    )
    quiet = subprocess.run(
        [sys.executable, "-m", "diffdac", "train", *args, "--log-dir", str(tmp_path / "b"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert quiet.returncode == 0 and not [line for line in quiet.stdout.splitlines() if "env steps (" in line]
