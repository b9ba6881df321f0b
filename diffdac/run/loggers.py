"""Where a run's numbers go: the Logger base class, and the loggers every run has.

The training loop calls each logger it is given: `start` once, `record_episodes` in every step
that ends an episode, `after_update` after every update, `write_progress` every log interval,
`state` at every checkpoint (what the logger needs to continue exactly after a resume), and
`close` at the end. Every hook does nothing unless a subclass says otherwise, so a logger of
your own (`diffdac.train(config, loggers=[MyLogger()])`) overrides only what it needs; it may
declare and record metrics of its own through `RunInfo.metrics`, which then become columns of
progress.csv like any other.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from diffdac.config import TrainConfig
from diffdac.learners.block import RECENT_EPISODES, RECENT_PER_LEARNER
from diffdac.metrics import Metrics
from diffdac.run.rundir import MonitorSet, ProgressFile


@dataclass(frozen=True)
class RunInfo:
    """What a logger may want to know when the run starts."""

    run_dir: Path
    config: TrainConfig
    steps_done: int  # env steps made before this start (a resumed run)
    total_steps: int  # env steps made when the run ends
    rank: int = 0  # this process in a torchrun world: a logger that writes once writes on rank 0
    metrics: Metrics | None = None  # declare and record metrics of your own here


class Logger:
    """A place a run's numbers go. Every hook is called on every rank and does nothing by default."""

    def start(self, run: RunInfo) -> None:
        """The run starts (or resumes at `run.steps_done`)."""

    def record_episodes(self, episode_return: np.ndarray, episode_length: np.ndarray, done: np.ndarray) -> None:
        """Episodes that ended in this step: return and length `[K, E]` where `done: [K, E]`."""

    def after_update(self, steps: int) -> None:
        """An update ended; `steps` env steps are made in all."""

    def write_progress(self, row: dict[str, float]) -> None:
        """One row of progress.csv, every log interval (the same row on every rank)."""

    def state(self) -> dict[str, Any]:
        """What a checkpoint records to continue this logger exactly (merged into the loop's state)."""
        return {}

    def close(self, finished: bool) -> None:
        """The run ended (`finished`) or stopped with an error."""


class MonitorLogger(Logger):
    """One Monitor file per simulator of this rank (diffdac.run.rundir.MonitorSet)."""

    def __init__(self, monitors: MonitorSet) -> None:
        self.monitors = monitors

    def record_episodes(self, episode_return: np.ndarray, episode_length: np.ndarray, done: np.ndarray) -> None:
        self.monitors.record(episode_return, episode_length, done)

    def state(self) -> dict[str, Any]:
        return {"monitor_rows": self.monitors.rows()}

    def close(self, finished: bool) -> None:
        self.monitors.close()


class ProgressLogger(Logger):
    """progress.csv (rank 0)."""

    def __init__(self, progress: ProgressFile) -> None:
        self.progress = progress

    def write_progress(self, row: dict[str, float]) -> None:
        self.progress.write(row)

    def state(self) -> dict[str, Any]:
        return {"progress_rows": self.progress.rows}

    def close(self, finished: bool) -> None:
        self.progress.close()


class TensorBoardLogger(Logger):
    """TensorBoard event files in one directory: every rank writes its learners' returns to its own file
    (TensorBoard merges a directory's files); rank 0 adds progress.csv's scalars and the graph."""

    def __init__(self, log_dir: Path, rank: int, learner_ids: Sequence[int]) -> None:
        self.log_dir, self.rank, self.learner_ids = log_dir, rank, list(map(int, learner_ids))
        self.writer: Any = None
        self.steps = 0

    def start(self, run: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.steps = run.steps_done
        # a resumed run drops what a killed one logged after its checkpoint
        self.writer = SummaryWriter(
            str(self.log_dir), filename_suffix=f".rank{self.rank}", purge_step=run.steps_done or None
        )
        if self.rank == 0 and not run.steps_done:
            self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in run.config.to_dict().items()))
            from diffdac.run import graph_figure

            self.writer.add_figure("graph", graph_figure.figure(run.run_dir))

    def record_episodes(self, episode_return: np.ndarray, episode_length: np.ndarray, done: np.ndarray) -> None:
        for k, e in zip(*np.nonzero(done)):
            self.writer.add_scalar(f"learner{self.learner_ids[k]:03d}/return", float(episode_return[k, e]), self.steps)

    def after_update(self, steps: int) -> None:
        self.steps = steps

    def write_progress(self, row: dict[str, float]) -> None:
        if self.rank == 0:
            for key, value in row.items():
                if key != "steps" and value == value:  # NaN scores before the first episodes stay out
                    self.writer.add_scalar(f"progress/{key}", value, row["steps"])

    def close(self, finished: bool) -> None:
        if self.writer is not None:
            self.writer.close()


class TerminalLogger(Logger):
    """What the terminal shows (rank 0): the run directory at the start; with --progress a bar on a
    terminal, or one status line per log interval when stdout is not one (nohup, SLURM, CI,
    notebooks); the closing line."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.run: RunInfo | None = None
        self.last: dict[str, float] = {}
        self.status_lines = False
        self.shown: list[str] = []  # metrics declared to be shown on the terminal

    def start(self, run: RunInfo) -> None:
        self.run, cfg = run, run.config
        self.shown = run.metrics.shown if run.metrics is not None else []
        where = f"from step {run.steps_done} " if run.steps_done else ""
        print(
            f"diffdac: {cfg.num_learners} learners x {cfg.envs_per_learner} simulators of {cfg.env} ({cfg.method}), "
            f"{where}to {run.total_steps} env steps; logs in {run.run_dir}",
            flush=True,
        )
        self.status_lines = cfg.progress and not sys.stdout.isatty()
        self.bar = tqdm(
            total=run.total_steps,
            initial=run.steps_done,
            unit="step",
            unit_scale=True,
            disable=not cfg.progress or self.status_lines,
            dynamic_ncols=True,
        )

    def after_update(self, steps: int) -> None:
        self.bar.update(steps - self.bar.n)

    def write_progress(self, row: dict[str, float]) -> None:
        self.last = row
        self.bar.set_postfix({"score": f"{row['score']:.1f}", **{k: _short(row[k]) for k in self.shown}}, refresh=False)
        if self.status_lines:
            print(status_line(row, self.run, self.shown), flush=True)

    def close(self, finished: bool) -> None:
        if self.bar is not None:
            self.bar.close()
        if finished and self.last:
            row = self.last
            print(
                f"diffdac: {row['steps']} env steps in {row['time']:.1f}s; score {row['score']:.1f} (mean over learners of each one's "
                f"last {RECENT_PER_LEARNER} episodes); mean return of the last {RECENT_EPISODES} episodes (of each process) "
                f"{row['mean_return']:.1f}; logs in {self.run.run_dir}"
            )


def status_line(row: dict[str, float], run: RunInfo, shown: Sequence[str] = ()) -> str:
    """`diffdac: 120k/600k env steps (20%), 35.2k steps/s, score -250.3, 14s left` (and the metrics shown)."""
    steps, total, rate = row["steps"], run.total_steps, row["steps_per_s"]
    left = (total - steps) / rate if rate > 0 else float("nan")
    extra = "".join(f", {name} {_short(row[name])}" for name in shown)
    return (
        f"diffdac: {_short(steps)}/{_short(total)} env steps ({100 * steps / total:.0f}%), {_short(rate)} steps/s, "
        f"score {row['score']:.1f}{extra}, {_duration(left)} left"
    )


def _short(n: float) -> str:
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k" if n >= 1e3 else f"{n:.0f}"


def _duration(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
