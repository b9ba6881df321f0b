"""Loggers and metrics as plug-ins: a user's logger beside the run's own, metrics by name, W&B as one such logger."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pandas as pd
import pytest

from diffdac import TrainConfig, train
from diffdac.cli import main
from diffdac.metrics import Metrics
from diffdac.run.loggers import Logger, RunInfo, TerminalLogger, status_line

SMALL = dict(num_learners=3, envs_per_learner=2, hidden=8, total_steps=6000, log_interval=1500, progress=False)


class Counting(Logger):
    """Overrides only what it needs; declares a cumulative metric and a shown one of its own."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.rows: list[dict] = []
        self.episodes = 0

    def start(self, run: RunInfo) -> None:
        self.metrics = run.metrics
        run.metrics.declare("my_updates", "sum", cumulative=True, integer=True)
        run.metrics.declare("my_gauge", "same", sample=lambda: 0.25, show=True)

    def record_episodes(self, episode_return, episode_length, done) -> None:
        self.episodes += int(np.count_nonzero(done))

    def after_update(self, steps: int) -> None:
        self.calls["after_update"] = self.calls.get("after_update", 0) + 1
        self.metrics.record("my_updates", 1)

    def write_progress(self, row: dict[str, float]) -> None:
        self.rows.append(dict(row))


def test_a_users_logger_gets_every_hook_and_its_metrics_become_columns(tmp_path):
    logger = Counting()
    run_dir = train(TrainConfig(**SMALL, log_dir=str(tmp_path / "run")), loggers=[logger])
    progress = pd.read_csv(run_dir / "progress.csv")
    updates = SMALL["total_steps"] // (3 * 2 * 5)
    assert logger.calls["after_update"] == updates
    assert progress["my_updates"].tolist() == progress["updates"].tolist()  # one per update, cumulative
    assert progress["my_gauge"].eq(0.25).all()
    assert [r["steps"] for r in logger.rows] == progress["steps"].tolist()
    assert logger.episodes == progress["episodes"].iloc[-1]
    assert list(progress.columns[-3:]) == ["my_updates", "my_gauge", "steps_per_s"]


def test_a_cumulative_metric_continues_across_a_resume(tmp_path):
    whole = train(TrainConfig(**SMALL, log_dir=str(tmp_path / "whole")), loggers=[Counting()])
    part = TrainConfig(**{**SMALL, "total_steps": 3000}, save_every=1500, log_dir=str(tmp_path / "part"))
    train(part, loggers=[Counting()])
    resumed = train(TrainConfig(**SMALL, save_every=1500, log_dir=str(tmp_path / "part"), resume=True), loggers=[Counting()])
    a, b = pd.read_csv(whole / "progress.csv"), pd.read_csv(resumed / "progress.csv")
    assert a["my_updates"].tolist() == b["my_updates"].tolist()


def test_a_resumed_run_gains_the_columns_its_first_part_lacked(tmp_path):
    part = TrainConfig(**{**SMALL, "total_steps": 3000}, save_every=1500, log_dir=str(tmp_path / "run"))
    train(part)  # no plug-in: no my_updates column yet
    before = pd.read_csv(tmp_path / "run" / "progress.csv")
    train(TrainConfig(**SMALL, save_every=1500, log_dir=str(tmp_path / "run"), resume=True), loggers=[Counting()])
    after = pd.read_csv(tmp_path / "run" / "progress.csv")
    assert len(after) == 4 and "my_updates" in after.columns
    assert after["my_updates"].iloc[: len(before)].isna().all() and after["my_updates"].iloc[len(before) :].notna().all()
    pd.testing.assert_frame_equal(after[before.columns].iloc[: len(before)], before)


def test_an_undeclared_metric_is_refused_by_name_and_a_name_is_declared_once():
    metrics = Metrics(num_learners=4)
    metrics.declare("bytes", "per_learner")
    with pytest.raises(KeyError, match="no metric 'bites' was declared"):
        metrics.record("bites", 1)
    with pytest.raises(ValueError, match="declared twice"):
        metrics.declare("bytes", "sum")
    with pytest.raises(ValueError, match="not 'median'"):
        metrics.declare("x", "median")


def test_metrics_reduce_over_processes_as_declared():
    metrics = Metrics(num_learners=4)
    metrics.declare("total", "sum")
    metrics.declare("mean", "per_learner", cumulative=True)
    metrics.declare("shared", "same")
    for name, value in (("total", 3), ("mean", 2), ("mean", 6), ("shared", 7)):
        metrics.record(name, value)
    two_ranks = lambda t: t * 2  # noqa: E731  (another rank with the same values)
    assert metrics.row(two_ranks) == {"total": 6.0, "mean": 4.0, "shared": 7.0}
    assert metrics.state_dict() == {"mean": 8.0}


def test_a_shown_metric_reaches_the_status_line(tmp_path):
    run = RunInfo(tmp_path, TrainConfig(), 0, 1000)
    row = {"steps": 500, "steps_per_s": 100.0, "score": -90.0, "bytes_sent": 12345.0}
    assert "score -90.0, bytes_sent 12.3k, 5s left" in status_line(row, run, ["bytes_sent"])
    assert isinstance(TerminalLogger(), Logger)


class FakeRun:
    def __init__(self, log: list) -> None:
        self.log_calls = log

    def define_metric(self, *args, **kwargs) -> None:
        pass

    def log(self, row: dict) -> None:
        self.log_calls.append(row)

    def finish(self, exit_code: int = 0) -> None:
        self.log_calls.append({"finished": exit_code})


def test_the_wandb_logger_logs_every_row_and_resumes_the_same_wandb_run(tmp_path, monkeypatch):
    inits, logged = [], []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: inits.append(kw) or FakeRun(logged)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    from diffdac.tools.wandb_logger import WandbLogger

    part = TrainConfig(**{**SMALL, "total_steps": 3000}, save_every=1500, log_dir=str(tmp_path / "run"))
    train(part, loggers=[WandbLogger("proj")])
    train(TrainConfig(**SMALL, save_every=1500, log_dir=str(tmp_path / "run"), resume=True), loggers=[WandbLogger("proj")])
    progress = pd.read_csv(tmp_path / "run" / "progress.csv")
    assert [r["steps"] for r in logged if "steps" in r] == progress["steps"].tolist()
    assert [r for r in logged if "finished" in r] == [{"finished": 0}] * 2
    assert inits[0]["id"] == inits[1]["id"] and inits[0]["project"] == "proj" and inits[0]["resume"] == "allow"


def test_wandb_offline_writes_its_run_into_the_run_directory(tmp_path, monkeypatch):
    pytest.importorskip("wandb")  # the [test] extra brings it; the stub test above covers the logger itself
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    flags = ["--num-learners", "2", "--hidden", "8", "--total-steps", "2000", "--log-interval", "1000"]
    assert main(["train", *flags, "--log-dir", str(tmp_path / "run"), "--wandb", "proj"]) == 0
    run_id = json.loads((tmp_path / "run" / "wandb.json").read_text())["id"]
    (history,) = (tmp_path / "run" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    assert history.stat().st_size > 0  # what it holds is wandb's own format; the stand-in test checks the rows


def test_wandb_without_its_package_is_refused_before_the_run_starts(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main(["train", "--total-steps", "2000", "--log-dir", str(tmp_path / "run"), "--wandb", "proj"]) == 2
    assert "pip install 'diffdac[wandb]'" in capsys.readouterr().err and not (tmp_path / "run").exists()
