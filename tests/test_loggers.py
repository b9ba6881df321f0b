"""Loggers the loop is given: TensorBoard event files read back, and the terminal's lines."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

from diffdac import TrainConfig, train
from diffdac.errors import ConfigError

SMALL = dict(num_learners=3, envs_per_learner=2, hidden=8, total_steps=6000, log_interval=1500, progress=False)


def test_tensorboard_gets_the_progress_scalars_each_learners_returns_and_the_graph(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = train(TrainConfig(**SMALL, log_dir=str(tmp_path / "run"), tensorboard=str(tmp_path / "tb")))
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    progress = pd.read_csv(run_dir / "progress.csv")
    disagreement = events.Scalars("progress/disagreement")
    assert [e.step for e in disagreement] == progress["steps"].tolist()
    assert [e.value for e in disagreement] == pytest.approx(progress["disagreement"].tolist(), rel=1e-6)
    for learner in range(3):
        returns = [e.value for e in events.Scalars(f"learner{learner:03d}/return")]
        monitor = pd.concat(
            pd.read_csv(run_dir / "monitor" / f"learner{learner:03d}.sim{s:02d}.monitor.csv", skiprows=1)
            for s in range(2)
        )
        assert sorted(returns) == pytest.approx(sorted(monitor["r"].tolist()))
    assert "graph" in events.Tags()["images"] and "config/text_summary" in events.Tags()["tensors"]


def test_tensorboard_without_its_package_is_one_clear_refusal(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'diffdac\[tensorboard\]'"):
        train(TrainConfig(**SMALL, log_dir=str(tmp_path / "run"), tensorboard=str(tmp_path / "tb")))
    assert not (tmp_path / "run").exists()
