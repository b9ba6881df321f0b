"""Safe by default: nothing read from a run directory runs code, no user file is deleted, resume falls back."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from diffdac import TrainConfig, train
from diffdac.run import checkpoint
from diffdac.cli import main

TINY_RUN = ["--num-learners", "2", "--envs-per-learner", "1", "--total-steps", "200", "--hidden", "8", "--no-progress"]
SMALL = dict(
    num_learners=2, envs_per_learner=2, hidden=8, log_interval=400, save_every=1000, keep_checkpoints=5, progress=False
)


def _exit_status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _episodes(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_csv(p, skiprows=1)[["r", "l"]] for p in sorted((run_dir / "monitor").glob("*.monitor.csv"))}


class Payload:
    """What a hostile checkpoint holds: unpickling it would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path) -> None:
    torch.save({"learners": Payload(marker), "loop": {}}, path)


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """An uninterrupted 4,000-step run with checkpoints at 1,000 ... 4,000."""
    return train(TrainConfig(**SMALL, total_steps=4000, log_dir=str(tmp_path_factory.mktemp("whole") / "run")))


@pytest.fixture
def cut_short(tmp_path) -> Path:
    """The same run as if killed just after its 3,000-step checkpoint."""
    run_dir = train(TrainConfig(**SMALL, total_steps=4000, log_dir=str(tmp_path / "run")))
    checkpoint.manifest_path(run_dir, 4000).unlink()
    checkpoint.rank_path(run_dir, 4000, 0).unlink()
    return run_dir


def test_a_planted_checkpoint_runs_nothing_and_eval_names_the_file(whole, tmp_path, capsys):
    marker = tmp_path / "pwned.txt"
    run_dir = tmp_path / "shared-run"
    subprocess.run(["cp", "-r", str(whole), str(run_dir)], check=True)
    planted = checkpoint.rank_path(run_dir, 4000, 0)
    _plant(planted, marker)
    assert _exit_status(["eval", str(run_dir), "--episodes", "1"]) == 2
    line = _one_line(capsys)
    assert str(planted) in line and "does not unpickle" in line
    assert not marker.exists()


def test_resume_skips_a_planted_checkpoint_and_continues_from_the_one_before(whole, cut_short, tmp_path, capsys):
    marker = tmp_path / "pwned.txt"
    _plant(checkpoint.rank_path(cut_short, 3000, 0), marker)
    assert _exit_status(["train", "--resume", "--log-dir", str(cut_short), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "skipping the checkpoint at step 3000" in out and "does not unpickle" in out
    assert not marker.exists()
    assert _episodes(cut_short).keys() == _episodes(whole).keys()
    for name, episodes in _episodes(whole).items():
        pd.testing.assert_frame_equal(_episodes(cut_short)[name], episodes, obj=name)


def _truncate(run_dir: Path) -> None:
    path = checkpoint.rank_path(run_dir, 3000, 0)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(run_dir: Path) -> None:
    checkpoint.rank_path(run_dir, 3000, 0).write_bytes(b"")


def _garbage(run_dir: Path) -> None:
    checkpoint.rank_path(run_dir, 3000, 0).write_bytes(os.urandom(4096))


def _empty_manifest(run_dir: Path) -> None:
    checkpoint.manifest_path(run_dir, 3000).write_text("{}")


def _manifest_directory(run_dir: Path) -> None:
    path = checkpoint.manifest_path(run_dir, 3000)
    path.unlink()
    path.mkdir()


def _wrong_shapes(run_dir: Path) -> None:
    path = checkpoint.rank_path(run_dir, 3000, 0)
    state = torch.load(path, weights_only=True)
    state["learners"]["params"] = torch.zeros(5, 7)
    torch.save(state, path)


@pytest.mark.parametrize("damage", [_truncate, _empty, _garbage, _empty_manifest, _wrong_shapes])
def test_resume_falls_back_to_the_newest_checkpoint_that_loads(whole, cut_short, capsys, damage):
    damage(cut_short)
    assert _exit_status(["train", "--resume", "--log-dir", str(cut_short), "--no-progress"]) == 0
    assert "skipping" in capsys.readouterr().out
    for name, episodes in _episodes(whole).items():
        pd.testing.assert_frame_equal(_episodes(cut_short)[name], episodes, obj=name)
    assert torch.equal(checkpoint.gather(cut_short), checkpoint.gather(whole))


def test_a_manifest_that_is_a_directory_is_skipped_and_blocks_only_its_own_checkpoint(cut_short, capsys):
    """diffdac deletes only files it wrote: a directory where the 3,000-step manifest goes stays, and stops that save."""
    _manifest_directory(cut_short)
    assert _exit_status(["train", "--resume", "--log-dir", str(cut_short), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "skipping" in captured.out and "step000000003000.json is not a readable checkpoint manifest" in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "Is a directory" in err[0] and "last good checkpoint is at step 2000" in err[0]
    assert checkpoint.manifest_path(cut_short, 3000).is_dir()


def test_resume_fails_in_one_line_and_changes_nothing_when_no_checkpoint_loads(cut_short, capsys):
    for manifest in checkpoint.manifests(cut_short):
        checkpoint.rank_path(cut_short, manifest.steps, 0).write_bytes(b"not a checkpoint")
    before = _snapshot(cut_short)
    assert _exit_status(["train", "--resume", "--log-dir", str(cut_short), "--no-progress"]) == 2
    assert "no checkpoint of" in _one_line(capsys)
    assert _snapshot(cut_short) == before


def test_resume_checks_every_log_before_it_cuts_any(cut_short, capsys):
    (cut_short / "monitor" / "learner001.sim01.monitor.csv").unlink()
    before = _snapshot(cut_short)
    assert _exit_status(["train", "--resume", "--log-dir", str(cut_short), "--no-progress"]) == 2
    assert "learner001.sim01.monitor.csv is missing" in _one_line(capsys)
    assert _snapshot(cut_short) == before  # learner 0's files and progress.csv were not cut either


@pytest.mark.parametrize("make_dir", [False, True])
def test_resume_of_a_run_killed_before_its_config_starts_it(tmp_path, capsys, make_dir):
    run_dir = tmp_path / "run"
    if make_dir:
        run_dir.mkdir()
    args = [
        "train",
        "--resume",
        "--log-dir",
        str(run_dir),
        *TINY_RUN,
    ]
    assert _exit_status(args) == 0
    assert "holds no run yet: starting a new one" in capsys.readouterr().out
    assert (run_dir / "config.json").is_file() and checkpoint.latest(run_dir).complete
    assert _exit_status(args) == 0 and "already complete" in capsys.readouterr().out  # the retry loop's next call


def _user_files(root: Path) -> dict[Path, bytes]:
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "my_model.pt").write_bytes(b"x")
    (root / "notes.txt").write_text("mine")
    return _snapshot(root)


def test_a_new_run_refuses_a_directory_with_other_files(tmp_path, capsys):
    mine = _user_files(tmp_path / "proj")
    args = [
        "train",
        "--log-dir",
        str(tmp_path / "proj"),
        *TINY_RUN,
    ]
    assert _exit_status(args) == 2
    assert "exists and is not empty" in _one_line(capsys)
    assert _snapshot(tmp_path / "proj") == mine


def test_overwrite_removes_only_the_files_a_run_wrote(tmp_path):
    proj = tmp_path / "proj"
    mine = _user_files(proj)
    args = [
        "train",
        "--log-dir",
        str(proj),
        "--num-learners",
        "2",
        "--envs-per-learner",
        "1",
        "--hidden",
        "8",
        "--no-progress",
        "--overwrite",
        "--save-every",
        "100",
    ]
    assert _exit_status([*args, "--total-steps", "400"]) == 0
    assert [m.steps for m in checkpoint.manifests(proj)] == [200, 300, 400]
    (proj / "eval.csv").write_text("an earlier eval\n")
    assert _exit_status([*args, "--total-steps", "200"]) == 0  # replaces the first run
    assert [m.steps for m in checkpoint.manifests(proj)] == [100, 200]
    assert not (proj / "eval.csv").exists()
    assert {p: b for p, b in _snapshot(proj).items() if p in mine} == mine


def test_overwrite_refuses_to_replace_a_file_that_is_not_from_a_run(tmp_path, capsys):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "progress.csv").write_text("my own progress notes\n")
    before = _snapshot(proj)
    args = [
        "train",
        "--log-dir",
        str(proj),
        *TINY_RUN,
        "--overwrite",
    ]
    assert _exit_status(args) == 2
    assert "progress.csv is not from a diffdac run" in _one_line(capsys)
    assert _snapshot(proj) == before


def test_a_checkpoint_that_cannot_be_written_stops_the_run_and_keeps_the_last_good_one(tmp_path, monkeypatch, capsys):
    saves = []
    real_save = torch.save

    def full_disk(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 3:
            Path(path).write_bytes(b"half")  # what a full disk leaves behind
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    run_dir = tmp_path / "run"
    args = [
        "train",
        "--log-dir",
        str(run_dir),
        "--num-learners",
        "2",
        "--envs-per-learner",
        "1",
        "--total-steps",
        "1000",
        "--save-every",
        "100",
        "--hidden",
        "8",
        "--no-progress",
    ]
    assert _exit_status(args) == 1
    line = _one_line(capsys)
    assert "No space left on device" in line and "the last good checkpoint is at step 200" in line
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    assert checkpoint.latest(run_dir).steps == 200 and checkpoint.gather(run_dir).isfinite().all()


# A real SIGINT in the middle of start-up (while the options are checked), at a point that does not
# depend on how fast the machine is: the child signals itself from inside `prepare`.
CTRL_C_IN_START_UP = """
import os, signal, sys
import diffdac.run.prepare as preparing
from diffdac.cli import main
signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell's background job starts with SIGINT ignored
checked = preparing.prepare
def prepare(config):
    os.kill(os.getpid(), signal.SIGINT)
    return checked(config)
preparing.prepare = prepare
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_during_start_up_exits_130_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", CTRL_C_IN_START_UP, "train", "--log-dir", str(tmp_path / "run"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines() == ["diffdac: interrupted"]
    assert not (tmp_path / "run").exists()


def _config_file(run_dir: Path, text: str) -> None:
    run_dir.mkdir()
    (run_dir / "config.json").write_text(text)
    (run_dir / "monitor").mkdir()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[1, 2]", "is not a diffdac run's config.json"),
        ("{not json", "is not valid JSON"),
        ('{"env": "diffdac/Acrobot-v1", "num_learners": "four"}', "--num-learners must be an integer"),
    ],
)
@pytest.mark.parametrize("command", [["train", "--resume", "--log-dir"], ["eval"], ["plot", "--table"]])
def test_a_config_json_that_is_not_a_run_config_is_one_line(tmp_path, capsys, text, expected, command):
    run_dir = tmp_path / "run"
    _config_file(run_dir, text)
    argv = [*command, str(run_dir)] if command[0] != "plot" else ["plot", str(run_dir), "--table"]
    assert _exit_status(argv) == 2
    line = _one_line(capsys)
    assert line.startswith("diffdac: error: ") and ("config.json" in line or "--num-learners" in line), line
    if command[0] != "plot":
        assert expected in line


@pytest.mark.parametrize("out", ["dir", "missing/x.csv"])
def test_eval_refuses_an_unusable_out_before_playing(whole, tmp_path, capsys, out):
    (tmp_path / "dir").mkdir()
    assert _exit_status(["eval", str(whole), "--out", str(tmp_path / out)]) == 2
    line = _one_line(capsys)
    assert ("is a directory" if out == "dir" else "does not exist") in line


def test_plot_refuses_an_out_that_is_a_directory(whole, tmp_path, capsys):
    (tmp_path / "fig.png").mkdir()
    assert _exit_status(["plot", str(whole), "--out", str(tmp_path / "fig.png")]) == 2
    assert "is a directory" in _one_line(capsys)


@pytest.mark.parametrize("column, value", [("mass", 0.0), ("length", -1.0), ("inertia", "nan"), ("mass", "heavy")])
def test_eval_refuses_task_parameters_that_are_not_positive(whole, tmp_path, capsys, column, value):
    tasks = pd.read_csv(whole / "tasks.csv")
    tasks[column] = tasks[column].astype(object)
    tasks.loc[1, column] = value
    tasks.to_csv(tmp_path / "tasks.csv", index=False)
    assert _exit_status(["eval", str(whole), "--tasks", str(tmp_path / "tasks.csv")]) == 2
    assert "must give masses, lengths and inertias > 0: row 2" in _one_line(capsys)


def test_plot_names_a_garbage_row_of_progress_csv(whole, tmp_path, capsys):
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-r", str(whole), str(run_dir)], check=True)
    with open(run_dir / "progress.csv", "a") as progress:
        progress.write("garbage,row,x\n")
    rows = len((run_dir / "progress.csv").read_text().splitlines())
    assert _exit_status(["plot", str(run_dir), "--table"]) == 2
    assert f"progress.csv line {rows} is not a row of numbers" in _one_line(capsys)
