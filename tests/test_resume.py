"""Checkpoints, resume after a kill, and a run stopped by non-finite numbers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from diffdac import TrainConfig, train
from diffdac.run import checkpoint
from diffdac.cli import main

OPTIONS = dict(num_learners=4, envs_per_learner=2, hidden=16, log_interval=2000, save_every=4000, progress=False)
STEPS = 24_000  # 600 updates of 40 env steps: long enough to kill half way


def _config(run_dir: Path, **overrides) -> TrainConfig:
    return TrainConfig(**{**OPTIONS, "total_steps": STEPS, "log_dir": str(run_dir), **overrides})


def _cli_args(config: TrainConfig) -> list[str]:
    return [
        "train",
        "--num-learners",
        "4",
        "--envs-per-learner",
        "2",
        "--hidden",
        "16",
        "--log-interval",
        "2000",
        "--save-every",
        "4000",
        "--no-progress",
        "--total-steps",
        str(config.total_steps),
        "--log-dir",
        config.log_dir,
    ]


def _episodes(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_csv(p, skiprows=1)[["r", "l"]] for p in sorted((run_dir / "monitor").glob("*.monitor.csv"))}


def _progress(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "progress.csv").drop(columns=["time", "steps_per_s"])


def _exit_status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)


def _kill_after_checkpoint(command: list[str], run_dir: Path, steps: int) -> None:
    """Start a training process and SIGKILL it once a checkpoint at >= `steps` env steps exists."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            last = checkpoint.latest(run_dir) if (run_dir / "checkpoints").is_dir() else None
            if last is not None and last.steps >= steps:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not checkpoint.latest(run_dir).complete


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    return train(_config(tmp_path_factory.mktemp("whole") / "run"))


def test_a_killed_run_resumes_to_exactly_the_uninterrupted_run(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    config = _config(run_dir)
    _kill_after_checkpoint([sys.executable, "-m", "diffdac", *_cli_args(config)], run_dir, 8000)
    killed_rows = sum(len(f) for f in _episodes(run_dir).values())
    assert _exit_status(["train", "--resume", "--log-dir", str(run_dir), "--no-progress"]) == 0

    resumed, whole = _episodes(run_dir), _episodes(uninterrupted)
    assert resumed.keys() == whole.keys() and killed_rows > 0
    for name in whole:
        pd.testing.assert_frame_equal(resumed[name], whole[name], obj=name)  # no episode lost, none twice
        steps_per_sim = STEPS // (4 * 2)
        assert steps_per_sim - 500 < resumed[name]["l"].sum() <= steps_per_sim
    pd.testing.assert_frame_equal(_progress(run_dir), _progress(uninterrupted))
    assert torch.equal(checkpoint.gather(run_dir), checkpoint.gather(uninterrupted))


def test_resume_of_a_complete_run_changes_nothing(uninterrupted, capsys):
    before = {p: p.read_bytes() for p in (uninterrupted / "monitor").iterdir()}
    assert _exit_status(["train", "--resume", "--log-dir", str(uninterrupted)]) == 0
    assert "already complete" in capsys.readouterr().out
    assert before == {p: p.read_bytes() for p in (uninterrupted / "monitor").iterdir()}


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    run_dir = train(_config(tmp_path / "run", total_steps=8000, save_every=1000, keep_checkpoints=2))
    assert [m.steps for m in checkpoint.manifests(run_dir)] == [7000, 8000]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step000000007000.json",
        "step000000007000.rank000.pt",
        "step000000008000.json",
        "step000000008000.rank000.pt",
    ]


def test_overwrite_removes_the_old_runs_checkpoints(tmp_path):
    run_dir = train(_config(tmp_path / "run", total_steps=8000))
    train(_config(run_dir, total_steps=2000, overwrite=True))
    assert [m.steps for m in checkpoint.manifests(run_dir)] == [2000]


def test_a_kill_before_the_first_checkpoint_starts_the_run_again(tmp_path, capsys):
    run_dir = train(_config(tmp_path / "run", total_steps=4000))
    whole = _episodes(run_dir)
    for path in (run_dir / "checkpoints").iterdir():
        path.unlink()
    (run_dir / "monitor" / "learner000.sim00.monitor.csv").write_text("half a file")
    assert _exit_status(["train", "--resume", "--log-dir", str(run_dir), "--no-progress"]) == 0
    assert "starting it again from step 0" in capsys.readouterr().out
    assert all(a.equals(b) for a, b in zip(_episodes(run_dir).values(), whole.values(), strict=True))


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--lr", "0.1"], "--lr 0.1 (the run has 0.0007)"),
        (["--topology", "full"], "--topology 'full'"),
    ],
)
def test_resume_refuses_options_that_differ_from_the_run(uninterrupted, capsys, args, expected):
    assert _exit_status(["train", "--resume", "--log-dir", str(uninterrupted), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_resume_accepts_options_that_match_or_only_steer_the_run(uninterrupted):
    args = ["--lr", "0.0007", "--num-learners", "4", "--no-progress", "--save-every", "999", "--dist-timeout", "9"]
    assert _exit_status(["train", "--resume", "--log-dir", str(uninterrupted), *args]) == 0


def test_resume_of_a_directory_of_other_files_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a run")
    assert _exit_status(["train", "--resume", "--log-dir", str(tmp_path)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_monitor_rows_missing_after_the_checkpoint_are_reported(tmp_path, capsys):
    run_dir = train(_config(tmp_path / "run", total_steps=8000))
    checkpoint.manifest_path(run_dir, 8000).unlink()  # as if killed before the last checkpoint
    path = run_dir / "monitor" / "learner001.sim00.monitor.csv"
    path.write_text("\n".join(path.read_text().splitlines()[:2]) + "\n")
    assert _exit_status(["train", "--resume", "--log-dir", str(run_dir), "--no-progress"]) == 2
    assert "does not match its checkpoint" in capsys.readouterr().err


def test_a_huge_learning_rate_stops_with_the_non_finite_message(tmp_path, capsys):
    run_dir = tmp_path / "run"
    status = _exit_status(
        [
            "train",
            "--lr",
            "1e30",
            "--num-learners",
            "4",
            "--envs-per-learner",
            "2",
            "--hidden",
            "16",
            "--save-every",
            "40",
            "--total-steps",
            "4000",
            "--log-dir",
            str(run_dir),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1, err
    assert (
        err[0].startswith("diffdac: training stopped: learner ") and "non-finite" in err[0] and "at update " in err[0]
    )
    last = checkpoint.latest(run_dir)
    assert f"last good checkpoint is at step {last.steps}" in err[0]
    assert torch.isfinite(checkpoint.gather(run_dir)).all()  # the checkpoint kept holds no NaN
    assert json.loads((run_dir / "config.json").read_text())["lr"] == 1e30


def test_gymnasium_tasks_resume_with_new_episodes_and_no_episode_twice(tmp_path):
    """Vector envs cannot restore their simulators: the episodes running at the checkpoint are dropped."""
    run_dir = train(_config(tmp_path / "run", env="CartPole-v1", total_steps=8000))
    whole = _episodes(run_dir)
    at_4000 = torch.load(checkpoint.rank_path(run_dir, 4000, 0), weights_only=True)["loop"]["monitor_rows"]
    checkpoint.manifest_path(run_dir, 8000).unlink()
    assert _exit_status(["train", "--resume", "--log-dir", str(run_dir), "--no-progress"]) == 0
    resumed = _episodes(run_dir)
    for (name, before), rows in zip(whole.items(), (n for row in at_4000 for n in row), strict=True):
        after = resumed[name]
        pd.testing.assert_frame_equal(after.iloc[:rows], before.iloc[:rows])  # kept up to the checkpoint
        assert after["l"].sum() <= 8000 // 8 and after["l"].iloc[rows:].sum() <= 4000 // 8  # nothing counted twice


def test_a_save_cut_short_leaves_no_stray_file_after_the_next_checkpoint(tmp_path):
    run_dir = train(_config(tmp_path / "run", total_steps=8000))
    checkpoint.manifest_path(run_dir, 8000).unlink()
    stray = checkpoint.rank_path(run_dir, 8000, 0).with_suffix(".pt.tmp")
    stray.write_bytes(b"half a checkpoint")
    assert _exit_status(["train", "--resume", "--log-dir", str(run_dir), "--no-progress"]) == 0
    assert not stray.exists() and checkpoint.latest(run_dir).complete


def test_a_finished_run_is_extended_by_raising_total_steps(uninterrupted, tmp_path, capsys):
    half = train(_config(tmp_path / "half", total_steps=STEPS // 2))
    assert (
        _exit_status(["train", "--resume", "--log-dir", str(half), "--total-steps", str(STEPS), "--no-progress"]) == 0
    )
    assert f"extending {half} from {STEPS // 2} to {STEPS} env steps" in capsys.readouterr().out
    extended, whole = _episodes(half), _episodes(uninterrupted)
    for name in whole:
        pd.testing.assert_frame_equal(extended[name], whole[name], obj=name)
    assert torch.equal(checkpoint.gather(half), checkpoint.gather(uninterrupted))
    assert TrainConfig.from_run(half).total_steps == STEPS and checkpoint.latest(half).complete
    assert _exit_status(["train", "--resume", "--log-dir", str(half), "--no-progress"]) == 0
    assert "already complete" in capsys.readouterr().out


def test_resume_cannot_lower_total_steps(uninterrupted, capsys):
    assert _exit_status(["train", "--resume", "--log-dir", str(uninterrupted), "--total-steps", "4000"]) == 2
    assert "can raise --total-steps but not lower it" in capsys.readouterr().err
