"""Safe by default: nothing read from a run directory runs code, no user file is deleted, resume falls back."""

from __future__ import annotations

import codecs
import errno
import json as _json
import os
import re
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
from diffdac.run.lock import RunLock
from diffdac.cli import main
from launch import launch_env, torchrun

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


# ------------------------------------------------------------------ shared and crowded run directories
#
# Each case plants something in a copy of a finished run (or an empty directory), runs one command and
# checks: its exit status, one line on stderr naming the problem, no traceback, and that nothing outside
# the run directory was read into the output, written or deleted.


PRECIOUS = "precious: nobody may read, write or delete this\n"


@pytest.fixture
def place(whole, tmp_path) -> dict[str, Path]:
    """A copy of the finished run and an `outside` directory of someone else's files beside it."""
    run_dir, outside = tmp_path / "run", tmp_path / "outside"
    subprocess.run(["cp", "-r", str(whole), str(run_dir)], check=True)
    outside.mkdir()
    (outside / "victim.txt").write_text(PRECIOUS)
    subprocess.run(["cp", "-r", str(whole / "checkpoints"), str(outside / "checkpoints")], check=True)
    subprocess.run(["cp", "-r", str(whole / "monitor"), str(outside / "monitor")], check=True)
    return {"run": run_dir, "outside": outside}


def _link(path: Path, target: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        subprocess.run(["rm", "-r", str(path)], check=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(target)


def _edit_config(run_dir: Path, **changes) -> None:
    path = run_dir / "config.json"
    values = _json.loads(path.read_text())
    values.update(changes)
    path.write_text(_json.dumps(values))


def _resume(run_dir: Path, *more: str) -> list[str]:
    return ["train", "--resume", "--log-dir", str(run_dir), "--no-progress", *more]


def _checkpoints_linked(p):
    _link(p["run"] / "checkpoints", p["outside"] / "checkpoints")
    return ["train", "--overwrite", "--log-dir", str(p["run"]), *TINY_RUN]


def _monitor_linked(p):
    _link(p["run"] / "monitor", p["outside"] / "monitor")
    return ["train", "--overwrite", "--log-dir", str(p["run"]), *TINY_RUN]


def _temporary_linked(name):
    def plant(p):
        _link(p["run"] / name, p["outside"] / "victim.txt")
        return _resume(p["run"], "--total-steps", "6000")

    plant.__name__ = f"_{name.replace('/', '_')}_linked"
    return plant


def _config_is(target):
    def plant(p):
        if target == "fifo":
            (p["run"] / "config.json").unlink()
            os.mkfifo(p["run"] / "config.json")
        else:
            _link(p["run"] / "config.json", Path(target))
        return _resume(p["run"])

    return plant


def _config_dev_zero_eval(p):
    _link(p["run"] / "config.json", Path("/dev/zero"))
    return ["eval", str(p["run"]), "--episodes", "1"]


def _config_dev_zero_plot(p):
    _link(p["run"] / "config.json", Path("/dev/zero"))
    return ["plot", str(p["run"]), "--table"]


def _adjacency_names_a_file(p):
    _edit_config(p["run"], adjacency=str(p["outside"] / "victim.txt"), topology=None)
    return _resume(p["run"])


def _env_edited(env):
    def plant(p):
        _edit_config(p["run"], env=env)
        return ["eval", str(p["run"]), "--episodes", "1"]

    return plant


def _hidden_edited(hidden):
    def plant(p):
        _edit_config(p["run"], hidden=hidden)
        return ["eval", str(p["run"]), "--episodes", "1"]

    return plant


def _lr_edited(p):
    _edit_config(p["run"], lr=0.1)
    return _resume(p["run"], "--total-steps", "6000")


def _not_text(name):
    def plant(p):
        (p["run"] / name).write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" + os.urandom(64))
        return (
            ["plot", "--graph", str(p["run"]), "--out", str(p["run"].parent / "g.png")]
            if "csv" in name and "/" not in name
            else ["plot", str(p["run"]), "--table"]
        )

    plant.__name__ = f"_{name.replace('/', '_')}_not_text"
    return plant


def _monitor_fifo(p):
    path = p["run"] / "monitor" / "learner000.sim00.monitor.csv"
    path.unlink()
    os.mkfifo(path)
    return ["plot", str(p["run"]), "--table"]


def _graph_missing(name):
    def plant(p):
        (p["run"] / name).unlink()
        return ["plot", "--graph", str(p["run"]), "--out", str(p["run"].parent / "g.png")]

    plant.__name__ = f"_{name}_missing"
    return plant


def _graph_garbage(p):
    (p["run"] / "topology.csv").write_text("learner,0\n0,1,2,3\nx\n")
    return ["plot", "--graph", str(p["run"]), "--out", str(p["run"].parent / "g.png")]


def _huge_num_learners(p):
    _edit_config(p["run"], num_learners=2**70)
    return ["plot", str(p["run"]), "--table"]


def _text_in_returns(p):
    path = p["run"] / "monitor" / "learner000.sim00.monitor.csv"
    lines = path.read_text().splitlines()[:2] + [f"abc{i},10,0.5" for i in range(99)]
    path.write_text("\n".join(lines) + "\n")
    return ["plot", str(p["run"]), "--table"]


def _eval_over_config(p):
    return ["eval", str(p["run"]), "--episodes", "1", "--out", str(p["run"] / "config.json")]


def _eval_into_monitor(p):
    return ["eval", str(p["run"]), "--episodes", "1", "--out", str(p["run"] / "monitor" / "x.csv")]


def _eval_tasks_rows(rows):
    def plant(p):
        table = pd.read_csv(p["run"] / "tasks.csv")
        pd.concat([table] * (rows // len(table)), ignore_index=True).to_csv(p["run"].parent / "many.csv", index=False)
        return ["eval", str(p["run"]), "--tasks", str(p["run"].parent / "many.csv")]

    return plant


def _eval_video_is_a_file(p):
    return ["eval", str(p["run"]), "--episodes", "1", "--video", str(p["outside"] / "victim.txt")]


HOSTILE_RUNS = [
    # 1. links inside a run directory
    (_checkpoints_linked, 2, "symbolic link"),
    (_monitor_linked, 2, "symbolic link"),
    (_temporary_linked("progress.csv.tmp"), 2, "symbolic link"),
    (_temporary_linked("config.json.tmp"), 2, "symbolic link"),
    (_temporary_linked("monitor/learner000.sim00.monitor.csv.tmp"), 2, "symbolic link"),
    (_temporary_linked("checkpoints/step000000005000.rank000.pt.tmp"), 1, "symbolic link"),
    (_config_dev_zero_eval, 2, "config.json is a symbolic link"),
    (_config_dev_zero_plot, 2, "config.json is a symbolic link"),
    (_config_is("/dev/zero"), 2, "config.json is a symbolic link"),
    (_config_is("fifo"), 2, "config.json is a FIFO"),
    # 2. fields that point outside
    (_adjacency_names_a_file, 2, "adjacency as a file name"),
    (_env_edited("CartPole-v1"), 2, "checkpoint does not match the run's options"),
    (_env_edited("diffdac/Nope-v0"), 2, "unknown environment id"),
    (_hidden_edited(32), 2, "checkpoint does not match the run's options"),
    (_hidden_edited(2**70), 2, "checkpoint does not match the run's options"),
    (_lr_edited, 2, "does not match the run's options in config.json: lr 0.1"),
    # 4. run files as eval's output
    (_eval_over_config, 2, "is a file of the run"),
    (_eval_into_monitor, 2, "is a file of the run"),
    # 6. files that are not text
    (_not_text("tasks.csv"), 2, "tasks.csv is not text"),
    (_not_text("topology.csv"), 2, "topology.csv is not text"),
    (_not_text("monitor/learner000.sim00.monitor.csv"), 2, "learner000.sim00.monitor.csv is not text"),
    # 8. the last bad inputs of eval and plot
    (_eval_tasks_rows(200_000), 2, "eval takes at most"),
    (_eval_video_is_a_file, 2, "--video"),
    (_graph_missing("topology.csv"), 2, "topology.csv is missing"),
    (_graph_missing("tasks.csv"), 2, "tasks.csv is missing"),
    (_graph_garbage, 2, "is not a table diffdac wrote"),
    (_huge_num_learners, 2, "num_learners"),
    (_text_in_returns, 2, "line 3 is not a row of numbers"),
    (_monitor_fifo, 2, "is a FIFO"),
]


def _outside_state(outside: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(outside.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("plant, status, expected", HOSTILE_RUNS, ids=[f"{i:02d}" for i in range(len(HOSTILE_RUNS))])
def test_a_hostile_run_directory_is_one_line_and_nothing_outside_it_is_touched(place, capsys, plant, status, expected):
    argv = plant(place)
    before = _outside_state(place["outside"])
    assert _exit_status(argv) == status
    captured = capsys.readouterr()
    line = _one_line_of(captured.err)
    assert expected in line, line
    assert "Traceback" not in captured.out + captured.err
    assert "precious" not in captured.out + captured.err  # nothing outside was read into a message
    assert _outside_state(place["outside"]) == before
    assert not (place["outside"] / "tb").exists()


def _one_line_of(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_an_eval_file_that_is_a_link_is_replaced_not_written_through(place, capsys):
    link = place["run"] / "eval-mine.csv"
    link.symlink_to(place["outside"] / "victim.txt")
    assert _exit_status(["eval", str(place["run"]), "--episodes", "1", "--out", str(link)]) == 0
    assert (place["outside"] / "victim.txt").read_text() == PRECIOUS
    assert not link.is_symlink() and "return" in link.read_text()


def test_resume_takes_no_tensorboard_directory_from_a_stored_config(place, capsys):
    _edit_config(place["run"], tensorboard=str(place["outside"] / "tb"))
    assert _exit_status(_resume(place["run"], "--total-steps", "6000")) == 0
    assert not (place["outside"] / "tb").exists()
    assert checkpoint.latest(place["run"]).steps == 6000


def test_a_tensorboard_option_naming_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    argv = ["train", "--log-dir", str(tmp_path / "run"), *TINY_RUN, "--tensorboard", str(tmp_path / "file")]
    assert _exit_status(argv) == 2
    assert "--tensorboard" in _one_line(capsys)


# 6. numbers a checkpoint records, checked before anything is cut


def _loop_field(**changes):
    def damage(run_dir: Path) -> None:
        path = checkpoint.rank_path(run_dir, 3000, 0)
        state = torch.load(path, weights_only=True)
        state["loop"].update(changes)
        torch.save(state, path)

    damage.__name__ = "_" + "_".join(changes)
    return damage


class Allocates:
    """What a planted data.pkl may ask of weights_only's allowed globals."""

    def __init__(self, call) -> None:
        self.call = call

    def __reduce__(self):
        return self.call


def _planted_global(call):
    def damage(run_dir: Path) -> None:
        torch.save({"learners": Allocates(call), "loop": {}}, checkpoint.rank_path(run_dir, 3000, 0))

    return damage


BAD_CHECKPOINTS = [
    _loop_field(monitor_rows=[[-1, 0], [0, 0]]),
    _loop_field(monitor_rows=[["abc", 0], [0, 0]]),
    _loop_field(monitor_rows=[[0], [0]]),
    _loop_field(progress_rows=-2),
    _planted_global((bytearray, (2**62,))),
    _planted_global((codecs.encode, ("x", "no-such-codec"))),
]


@pytest.mark.parametrize("damage", BAD_CHECKPOINTS)
def test_a_checkpoint_with_bad_numbers_or_hostile_globals_is_skipped(whole, cut_short, capsys, damage):
    damage(cut_short)
    assert _exit_status(["train", "--resume", "--log-dir", str(cut_short), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "skipping the checkpoint at step 3000" in out
    for name, episodes in _episodes(whole).items():
        pd.testing.assert_frame_equal(_episodes(cut_short)[name], episodes, obj=name)


def test_a_monitor_header_that_is_not_json_changes_nothing(cut_short, capsys):
    path = cut_short / "monitor" / "learner000.sim00.monitor.csv"
    path.write_text("#{not json\n" + "".join(line + "\n" for line in path.read_text().splitlines()[1:]))
    before = _snapshot(cut_short)
    assert _exit_status(["train", "--resume", "--log-dir", str(cut_short), "--no-progress"]) == 2
    assert "does not start with a Monitor header" in _one_line(capsys)
    assert _snapshot(cut_short) == before


def test_an_edited_lr_leaves_the_run_as_it_was(cut_short, capsys):
    _edit_config(cut_short, lr=0.1)
    before = _snapshot(cut_short)
    assert _exit_status(["train", "--resume", "--log-dir", str(cut_short), "--no-progress"]) == 2
    assert "no checkpoint of" in _one_line(capsys)
    assert _snapshot(cut_short) == before


# 4. --overwrite removes only what diffdac wrote


def _someone_elses_config(d: Path) -> None:
    (d / "config.json").write_text('{"name": "my-app"}')


def _users_run_named_files(d: Path) -> None:
    (d / "eval.csv").write_text("mine\n")
    (d / "eval-2024.csv").write_text("mine\n")
    (d / "monitor").mkdir()
    (d / "monitor" / "learner000.sim00.monitor.csv").write_text("mine\n")
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "step000000000100.json").write_text("{}")


@pytest.mark.parametrize("here", [False, True])
@pytest.mark.parametrize(
    "plant, expected",
    [
        (_someone_elses_config, "is not a diffdac run's config.json"),
        (_users_run_named_files, "is not from a diffdac run"),
    ],
)
def test_overwrite_refuses_a_directory_that_holds_no_diffdac_run(tmp_path, monkeypatch, capsys, plant, expected, here):
    proj = tmp_path / "proj"
    proj.mkdir()
    plant(proj)
    before = _snapshot(proj)
    monkeypatch.chdir(proj if here else tmp_path)
    assert _exit_status(["train", "--overwrite", "--log-dir", "." if here else str(proj), *TINY_RUN]) == 2
    assert expected in _one_line(capsys)
    assert _snapshot(proj) == before


def test_a_run_killed_while_writing_its_first_config_resumes(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json.tmp").write_text('{"env": "half')
    assert _exit_status(["train", "--resume", "--log-dir", str(run_dir), *TINY_RUN]) == 0
    assert checkpoint.latest(run_dir).complete and not (run_dir / "config.json.tmp").exists()


# 8. the last bad inputs: one line, exit 2


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "options.toml"
    path.write_text(text)
    return str(path)


BAD_INPUTS = [
    (lambda t: ["train", "--topology", "erdos-renyi", "--edge-prob", "nan"], "--edge-prob"),
    (lambda t: ["train", "--topology", "erdos-renyi", "--edge-prob", "inf"], "--edge-prob"),
    (lambda t: ["train", "--num-learners", str(2**70)], "--num-learners"),
    (lambda t: ["train", "--log-dir", str(t / ("x" * 300))], "longer than this file system allows"),
    (lambda t: ["train", "--topology", "full", "--adjacency", "[[0,1],[1,0]]"], "--topology and --adjacency"),
    (lambda t: ["train", "--dist-timeout", "1e15"], "--dist-timeout"),
    (
        lambda t: ["train", "--lr", "10", "--rms-eps", "1e-300", "--max-grad-norm", "0"],
        "--rms-eps 1e-300 is 0 in float32",
    ),
    (lambda t: ["train", "--config", _toml(t, "num_learners = 1e3\n")], "--num-learners must be an integer"),
    (
        lambda t: ["train", "--config", _toml(t, f'log_dir = "{t}/elsewhere"\n')],
        "'log_dir' cannot come from a config file",
    ),
    (lambda t: ["train", "--config", _toml(t, "resume = true\n")], "'resume' cannot come from a config file"),
    (lambda t: ["train", "--config", _toml(t, "overwrite = true\n")], "'overwrite' cannot come from a config file"),
    (lambda t: ["train", "--adjacency", str(_empty_file(t))], "holds no matrix"),
    (lambda t: ["topology", "--num-learners", str(2**70)], "--num-learners"),
    (lambda t: ["topology", "--num-learners", "20000000", "--topology", "full"], "GB of memory"),
    (lambda t: ["topology", "--seed", "-1"], "--seed"),
    (lambda t: ["topology", "--topology", "erdos-renyi", "--edge-prob", "nan"], "--edge-prob"),
    (lambda t: ["topology", "--adjacency", str(_empty_file(t))], "holds no matrix"),
]


def _empty_file(tmp_path: Path) -> Path:
    path = tmp_path / "empty.txt"
    path.write_text("")
    return path


@pytest.mark.parametrize("argv, expected", BAD_INPUTS)
def test_the_last_bad_inputs_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, expected):
    monkeypatch.chdir(tmp_path)
    args = argv(tmp_path)
    if args[0] == "train" and "--log-dir" not in args:
        args += ["--log-dir", str(tmp_path / "run"), "--no-progress"]
    before = sorted(tmp_path.rglob("*"))
    assert _exit_status(args) == 2
    assert expected in _one_line(capsys)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


BAD_EVAL_AND_PLOT = [
    (["eval", "RUN", "--episodes", str(2**70)], "--episodes"),
    (["eval", "RUN", "--episodes", str(10**9)], "--episodes"),
    (["eval", "RUN", "--seed", "-1"], "--seed"),
    (["plot", "RUN", "--table", "--bin-steps", str(2**70)], "--bin-steps"),
    (["plot", "RUN", "--table", "--at", "1e400"], "--at"),
]


@pytest.mark.parametrize("argv, expected", BAD_EVAL_AND_PLOT)
def test_bad_counts_of_eval_and_plot_are_one_line(whole, capsys, argv, expected):
    assert _exit_status([str(whole) if a == "RUN" else a for a in argv]) == 2
    assert expected in _one_line(capsys)


# 3. one run per directory


def test_a_locked_directory_refuses_a_second_run_an_overwrite_and_a_resume(whole, tmp_path, capsys):
    empty = tmp_path / "new"
    for run_dir, argv in (
        (empty, ["train", "--log-dir", str(empty), *TINY_RUN]),
        (whole, ["train", "--overwrite", "--log-dir", str(whole), *TINY_RUN]),
        (whole, _resume(whole, "--total-steps", "6000")),
    ):
        lock = RunLock(run_dir)
        lock.acquire_lead()  # what a running run holds
        try:
            before = _snapshot(run_dir)
            assert _exit_status(argv) == 2
            assert f"{run_dir} is in use by another diffdac run" in _one_line(capsys)
            assert _snapshot(run_dir) == before
        finally:
            lock.release()
    assert _exit_status(["train", "--log-dir", str(empty), *TINY_RUN]) == 0  # the lock went with its holder


def test_an_orphaned_rank_keeps_a_resume_out(whole, capsys):
    rank = RunLock(whole)
    rank.join()  # a rank of a world whose rank 0 is gone
    try:
        assert _exit_status(_resume(whole, "--total-steps", "6000")) == 2
        assert "is in use" in _one_line(capsys)
    finally:
        rank.release()


def test_two_runs_started_on_one_directory_do_not_both_run(tmp_path):
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "diffdac", "train", "--log-dir", str(run_dir), *TINY_RUN, "--total-steps", "20000"]
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], errs
    refused = errs[[p.returncode for p in procs].index(2)].strip().splitlines()
    assert len(refused) == 1 and ("is in use" in refused[0] or "already holds a run" in refused[0]), refused
    assert checkpoint.latest(run_dir).complete


# 5. preemption: SIGTERM / SIGINT, then --resume, as if never stopped

PREEMPT = ["--num-learners", "4", "--envs-per-learner", "2", "--hidden", "16", "--log-interval", "2000"]
PREEMPT += ["--save-every", "8000", "--total-steps", "40000", "--no-progress"]


def _progress(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "progress.csv").drop(columns=["time", "steps_per_s"])


def _assert_same(expected: Path, actual: Path) -> None:
    assert _episodes(actual).keys() == _episodes(expected).keys()
    for name, episodes in _episodes(expected).items():
        pd.testing.assert_frame_equal(_episodes(actual)[name], episodes, obj=name)
    pd.testing.assert_frame_equal(_progress(actual), _progress(expected))
    assert torch.equal(checkpoint.gather(actual), checkpoint.gather(expected))


@pytest.fixture(scope="module")
def preempt_reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    assert main(["train", "--log-dir", str(run_dir), *PREEMPT]) == 0
    return run_dir


def _wait_for_rows(run_dir: Path, rows: int, proc: subprocess.Popen) -> None:
    progress, end = run_dir / "progress.csv", time.monotonic() + 120
    while not (progress.exists() and len(progress.read_text().splitlines()) > rows):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < end, "the run never got going"
        time.sleep(0.02)


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signalled_run_saves_where_it_stopped_and_resumes_as_if_never_stopped(
    preempt_reference, tmp_path, capsys, sig, status
):
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-c",
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from diffdac.cli import main; sys.exit(main(sys.argv[1:]))",
        "train",
        "--log-dir",
        str(run_dir),
        *PREEMPT,
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(run_dir, 2, proc)
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == status, err
    line = _one_line_of(err)
    assert f"stopped by {sig.name}" in line and f"--resume --log-dir {run_dir}" in line
    stopped_at = checkpoint.latest(run_dir)
    assert (
        not stopped_at.complete and f"at step {stopped_at.steps} (checkpoint at step {stopped_at.steps} saved)" in line
    )
    assert _exit_status(["train", "--resume", "--log-dir", str(run_dir), "--no-progress"]) == 0
    _assert_same(preempt_reference, run_dir)


def _torchrun(run_dir: Path, *more: str) -> list[str]:
    return torchrun(2, "-m", "diffdac", "train", "--log-dir", str(run_dir), *PREEMPT, *more)


def test_sigterm_to_torchrun_saves_at_one_step_on_every_rank_and_resumes_as_if_never_stopped(tmp_path):
    """Against an uninterrupted 2-process run: progress.csv's mean_return is over each process's last episodes."""
    reference = tmp_path / "reference"
    whole_run = subprocess.run(_torchrun(reference), env=launch_env(), capture_output=True, text=True, timeout=300)
    assert whole_run.returncode == 0, whole_run.stdout + whole_run.stderr
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        _torchrun(run_dir), env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_for_rows(run_dir, 2, proc)
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped_at = checkpoint.latest(run_dir)
    assert stopped_at is not None and not stopped_at.complete, out
    assert stopped_at.steps % 2000 == 0, out  # the ranks agree at a log interval
    assert out.count(f"stopped by SIGTERM at step {stopped_at.steps} ") == 1, out  # said once, by rank 0
    assert not re.search(r'File ".*/diffdac/', out), out  # no traceback of a rank (torchrun may print its own)
    resumed = subprocess.run(
        _torchrun(run_dir, "--resume"), env=launch_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _assert_same(reference, run_dir)


# 6. full disks: a file size limit in a subprocess (what a full disk does to every write)

LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from diffdac.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _limited(limit: int, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", LIMITED, str(limit), *argv], capture_output=True, text=True, timeout=300
    )


def test_a_checkpoint_past_the_file_size_limit_is_one_line_and_leaves_no_partial_file(tmp_path):
    run_dir = tmp_path / "run"
    argv = ["train", "--log-dir", str(run_dir), *TINY_RUN[:-1], "--save-every", "100", "--no-progress"]
    result = _limited(4096, *argv)  # the logs fit, a checkpoint (about 10 kB) does not
    assert result.returncode == 1, result.stderr
    line = _one_line_of(result.stderr)
    assert "could not write its checkpoint" in line and "no checkpoint was saved before it" in line
    assert not (run_dir / "checkpoints").exists() or not list((run_dir / "checkpoints").iterdir())  # no partial file
    resumed = subprocess.run(
        [sys.executable, "-m", "diffdac", "train", "--resume", "--log-dir", str(run_dir), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr  # once there is room, the run goes on
    assert checkpoint.latest(run_dir).complete


@pytest.mark.parametrize(
    "argv, limit",
    [
        (["eval", "RUN", "--episodes", "1", "--out", "OUT/eval.csv"], 64),
        (["plot", "RUN", "--csv", "OUT/table.csv", "--bin-steps", "1000"], 64),
        (["plot", "RUN", "--out", "OUT/fig.png", "--bin-steps", "1000"], 1024),
        (["export", "RUN", "--out", "OUT/policy.pt2"], 1024),
    ],
)
def test_outputs_past_the_file_size_limit_are_one_line_and_leave_nothing(whole, tmp_path, argv, limit):
    result = _limited(limit, *[a.replace("RUN", str(whole)).replace("OUT", str(tmp_path)) for a in argv])
    assert result.returncode == 2, result.stderr
    line = _one_line_of(result.stderr)
    assert "File too large" in line, line
    assert list(tmp_path.iterdir()) == []


# 7. experiments/sweep.py stays inside its directories

SWEEP = """
name = "{name}"
[train]
num_learners = 2
envs_per_learner = 1
hidden = 8
[sweep]
{sweep}
[variants."{variant}"]
method = "diff-a2c"
"""


@pytest.mark.parametrize(
    "name, sweep_table, variant, more, expected",
    [
        ("s", "lrs = [1e-3]\nseeds = [0]\ntotal_steps = 100", "../../../escape", [], "must be a plain name"),
        ("../../../escname", "lrs = [1e-3]\nseeds = [0]\ntotal_steps = 100", "ring", [], "must be a plain name"),
        ("s", "lrs = [1e-3]\nseeds = [0]", "ring", [], "total_steps"),
        ("s", 'lrs = ["abc"]\nseeds = [0]\ntotal_steps = 100', "ring", [], "lrs"),
        ("s", "lrs = [1e-3]\nseeds = [0]\ntotal_steps = 100", "ring", ["--jobs", "0"], "--jobs"),
        ("s", "lrs = [1e-3]\nseeds = [0]\ntotal_steps = 100", "ring", ["--variants", "nope"], "unknown variant nope"),
    ],
)
def test_a_sweep_file_stays_inside_its_directories_and_bad_ones_are_one_line(
    tmp_path, name, sweep_table, variant, more, expected
):
    sys.path.insert(0, str(Path(__file__).parents[1] / "experiments"))
    import sweep

    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    path = deep / "sweep.toml"
    path.write_text(SWEEP.format(name=name, sweep=sweep_table, variant=variant))
    with pytest.raises(SystemExit) as stop:
        sweep.main([str(path), "--runs-dir", str(deep / "runs"), "--out-dir", str(deep / "out"), *more])
    message = str(stop.value.code)
    assert expected in message and len(message.splitlines()) == 1, message
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "c", "sweep.toml"]


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_ranks_whose_launcher_was_killed_stop_with_a_checkpoint_and_leave_the_directory_free(tmp_path, capsys):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_torchrun(run_dir), env=launch_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ranks: list[int] = []
    try:
        _wait_for_rows(run_dir, 2, proc)
        ranks = _children(proc.pid)
        assert len(ranks) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        end = time.monotonic() + 60
        while any(_alive(r) for r in ranks):
            assert time.monotonic() < end, "the orphaned ranks trained on"
            time.sleep(0.05)
    finally:
        for pid in [r for r in ranks if _alive(r)] + ([proc.pid] if proc.poll() is None else []):
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
    stopped_at = checkpoint.latest(run_dir)
    assert stopped_at is not None and not stopped_at.complete
    lock = RunLock(run_dir)
    lock.acquire_lead()  # no rank holds the directory any more
    lock.release()


def test_a_disk_that_is_full_before_the_run_starts_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    result = _limited(512, "train", "--log-dir", str(run_dir), *TINY_RUN)  # config.json (about 1.6 kB) does not fit
    assert result.returncode == 2, result.stderr
    line = _one_line_of(result.stderr)
    assert "cannot write the run's files" in line and "File too large" in line, line
    assert not (run_dir / "config.json").exists() and not list(run_dir.glob("*.tmp"))


def _read_only(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Writes below `root` fail as on a read-only mount (EROFS), reads still work."""
    import builtins

    real_os_open, real_open = os.open, builtins.open

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and str(path).startswith(str(root)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_os_open(path, flags, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and str(file).startswith(str(root)):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", open_)


@pytest.mark.parametrize("command", [["train", "--resume", "--total-steps", "400"], ["eval"]], ids=["resume", "eval"])
def test_a_run_on_a_read_only_file_system_is_one_line(tmp_path, monkeypatch, capsys, command):
    run_dir = tmp_path / "run"
    assert main(["train", "--log-dir", str(run_dir), *TINY_RUN]) == 0
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    capsys.readouterr()
    _read_only(monkeypatch, run_dir)
    argv = [*command, "--log-dir", str(run_dir)] if command[0] == "train" else [*command, str(run_dir)]
    assert main(argv) == 2
    assert "Read-only file system" in _one_line_of(capsys.readouterr().err)
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before
