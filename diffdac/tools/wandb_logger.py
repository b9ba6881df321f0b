"""A Weights & Biases logger, written as a user would write one: a Logger subclass outside the loop.

`diffdac train --wandb PROJECT` (or `diffdac.train(config, loggers=[WandbLogger("PROJECT")])`)
sends every progress.csv row, the run's options and the end of the run to W&B, from rank 0 only.
It needs the `[wandb]` extra; `WANDB_MODE=offline` keeps everything on disk (`wandb sync` later).
A resumed run continues the same W&B run: its id is kept in the run directory.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from diffdac.errors import ConfigError
from diffdac.run.loggers import Logger, RunInfo

ID_FILE = "wandb.json"


class WandbLogger(Logger):
    """Progress rows as W&B history (x axis: env steps), the options as its config."""

    def __init__(self, project: str, **init_kwargs: Any) -> None:
        self.project, self.init_kwargs = project, init_kwargs
        self.run: Any = None

    def start(self, run: RunInfo) -> None:
        if run.rank != 0:
            return
        try:
            import wandb
        except ImportError:
            raise ConfigError("--wandb needs the wandb package: pip install 'diffdac[wandb]'") from None
        self.run = wandb.init(
            project=self.project,
            name=run.run_dir.name,
            id=_run_id(run.run_dir),
            resume="allow",
            dir=str(run.run_dir),
            config=run.config.to_dict(),
            **self.init_kwargs,
        )
        self.run.define_metric("*", step_metric="steps")

    def write_progress(self, row: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in row.items() if v == v})  # NaN scores before the first episodes stay out

    def close(self, finished: bool) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if finished else 1)
            self.run = None


def _run_id(run_dir: Path) -> str:
    """The W&B run id of this run directory: the one it was given first, so a resume logs into the same run."""
    path = run_dir / ID_FILE
    if path.is_file():
        return str(json.loads(path.read_text())["id"])
    run_id = uuid.uuid4().hex[:12]
    path.write_text(json.dumps({"id": run_id}) + "\n")
    return run_id
