"""`diffdac eval`: learners' and network-average policies on training, held-out and listed tasks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from diffdac import TrainConfig, train
from diffdac.cli import main
from diffdac.learners.population import Population


def _exit_status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)


def _run(root: Path, name: str, **overrides) -> Path:
    options = dict(
        num_learners=3, envs_per_learner=2, hidden=16, total_steps=3000, log_dir=str(root / name), progress=False
    )
    return train(TrainConfig(**{**options, **overrides}))


@pytest.fixture(scope="module")
def ring(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("eval"), "ring", topology="ring", normalize=("obs",))


def _eval(run_dir: Path, *args: str) -> pd.DataFrame:
    out = run_dir / "test-eval.csv"
    assert _exit_status(["eval", str(run_dir), "--episodes", "2", "--out", str(out), *args]) == 0
    return pd.read_csv(out)


def test_every_policy_plays_every_task_for_the_asked_episodes(ring, capsys):
    rows = _eval(ring)
    assert len(rows) == 4 * 3 * 2  # (3 learners + average) x 3 tasks x 2 episodes
    assert list(rows["policy"].unique()) == ["learner 0", "learner 1", "learner 2", "average"]
    assert ((rows["return"] >= -500) & (rows["return"] <= 0)).all()
    assert (rows["episode_length"] == -rows["return"] + (rows["return"] > -500)).all()  # -1 per step, 0 at the goal
    tasks = pd.read_csv(ring / "tasks.csv")
    assert rows.groupby("task")["mass"].first().tolist() == tasks["mass"].tolist()
    assert "average" in capsys.readouterr().out


def test_greedy_and_stochastic_evaluations_are_reproducible_and_each_uses_its_own_action_rule(ring, monkeypatch):
    """A barely trained Acrobot policy times out (-500) greedy and sampled alike, so the returns
    cannot tell the two rules apart: count which rule chose the actions instead."""
    pd.testing.assert_frame_equal(_eval(ring), _eval(ring))
    pd.testing.assert_frame_equal(_eval(ring, "--stochastic"), _eval(ring, "--stochastic"))
    calls = {"act": 0, "greedy": 0}
    for rule in calls:
        original = getattr(Population, rule)

        def counted(self, *args, _rule=rule, _original=original, **kwargs):
            calls[_rule] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Population, rule, counted)
    _eval(ring, "--stochastic")
    assert calls["act"] > 0 and calls["greedy"] == 0
    _eval(ring)
    assert calls["greedy"] > 0


def test_with_consensus_the_average_policy_is_every_learners_policy(tmp_path):
    run_dir = _run(tmp_path, "full", topology="full")  # uniform weights on a full graph: one step to consensus
    rows = _eval(run_dir).set_index(["policy", "task", "episode"])["return"]
    for learner in range(3):
        assert rows.loc[f"learner {learner}"].equals(rows.loc["average"])


def test_heldout_acrobot_tasks_come_from_the_other_range(ring):
    rows = _eval(ring, "--tasks", "heldout", "--policies", "average")
    assert set(rows["env_id"]) == {"diffdac/RandomNormalAcrobot-v1"} and set(rows["policy"]) == {"average"}
    assert rows["mass"].between(0.75, 1.25).all()


def test_a_tasks_file_gives_the_same_episodes_as_those_tasks(ring):
    listed = _eval(ring, "--tasks", str(ring / "tasks.csv"))
    pd.testing.assert_series_equal(listed["return"], _eval(ring)["return"])


def test_other_gymnasium_ids_evaluate_on_new_task_seeds(tmp_path):
    run_dir = _run(tmp_path, "cartpole", env="CartPole-v1", num_learners=2, total_steps=1000)
    rows = _eval(run_dir, "--tasks", "heldout")
    assert len(rows) == 3 * 2 * 2 and (rows["return"] > 0).all()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--tasks", "nowhere.csv"], "--tasks takes train, heldout or a tasks.csv"),
        (["--checkpoint", "123"], "no checkpoint '123'"),
        (["--episodes", "0"], "--episodes must be a positive integer"),
    ],
)
def test_bad_eval_input_is_one_line_and_exit_2(ring, capsys, args, expected):
    assert _exit_status(["eval", str(ring), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_eval_of_a_directory_that_is_not_a_run_is_refused(tmp_path, capsys):
    assert _exit_status(["eval", str(tmp_path)]) == 2
    assert "is not a diffdac run" in capsys.readouterr().err


def test_each_evaluation_keeps_its_own_file_and_says_where(tmp_path, capsys):
    run_dir = _run(tmp_path, "run", save_every=1500)
    for args in (
        ["--tasks", "train"],
        ["--tasks", "heldout"],
        ["--tasks", "train", "--checkpoint", "1500"],
        ["--stochastic"],
    ):
        assert _exit_status(["eval", str(run_dir), "--episodes", "1", *args]) == 0
    names = sorted(p.name for p in run_dir.glob("eval-*.csv"))
    assert names == [
        "eval-heldout-step3000-greedy-1ep-seed0.csv",
        "eval-train-step1500-greedy-1ep-seed0.csv",
        "eval-train-step3000-greedy-1ep-seed0.csv",
        "eval-train-step3000-stochastic-1ep-seed0.csv",
    ]
    assert f"wrote {run_dir / names[-1]}" in capsys.readouterr().out


def test_eval_records_a_video_of_the_average_policy_on_every_task(ring, tmp_path, capsys):
    import imageio.v3 as iio

    videos = tmp_path / "videos"
    assert (
        _exit_status(
            [
                "eval",
                str(ring),
                "--episodes",
                "1",
                "--tasks",
                "heldout",
                "--video",
                str(videos),
                "--out",
                str(tmp_path / "e.csv"),
            ]
        )
        == 0
    )
    files = sorted(p.name for p in videos.glob("*.mp4"))
    assert files == ["task000-episode-0.mp4", "task001-episode-0.mp4", "task002-episode-0.mp4"]
    frames = iio.imread(videos / files[0])
    assert frames.ndim == 4 and frames.shape[-1] == 3 and len(frames) > 10  # frames of an episode, in colour
    assert f"wrote 3 videos of the network-average policy to {videos}" in capsys.readouterr().out
