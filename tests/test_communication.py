"""Bytes under torchrun: what progress.csv reports is what the communicator moved, and the same as in one process.

With one learner per process every message between learners is a message between processes, so
the bytes the ranks hand to send (DistributedCommunicator.bytes_sent, summed over ranks) must
equal the network's total in progress.csv (bytes_sent x N). Schedules drawn every round must
give the same numbers in one process and two, bit for bit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import networkx as nx
import pandas as pd
import pytest
import torch

from diffdac.cli import main
from diffdac.run import checkpoint
from launch import free_port, launch_env

PROBE = Path(__file__).with_name("communication_probe.py")
TINY = ["--envs-per-learner", "2", "--hidden", "8", "--log-interval", "960", "--total-steps", "2880", "--no-progress"]


def _torchrun(processes: int, *args: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes)]
    command += ["--master-port", str(free_port()), *args]
    result = subprocess.run(command, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


CASES = {
    "ring": ["--topology", "ring", "--normalize", "obs,reward"],
    "link drops": ["--topology", "ring", "--link-drop", "0.4"],
    "gala": ["--method", "gala"],
    "random-matching": ["--topology", "random-matching"],
}


@pytest.mark.parametrize("case", CASES)
def test_the_bytes_reported_are_the_bytes_the_ranks_sent(tmp_path, case):
    n = 3
    run_dir = tmp_path / "run"
    _torchrun(
        n, str(PROBE), str(tmp_path), "train", "--num-learners", str(n), *TINY, *CASES[case], "--log-dir", str(run_dir)
    )
    moved = sum(json.loads((tmp_path / f"rank{r}.json").read_text())["bytes_sent"] for r in range(n))
    reported = pd.read_csv(run_dir / "progress.csv")["bytes_sent"].iloc[-1] * n
    assert moved > 0 and reported == moved


def _sequence(root: Path) -> str:
    a = np.stack([nx.to_numpy_array(g) for g in (nx.path_graph(4), nx.star_graph(3), nx.empty_graph(4))])
    np.save(root / "seq.npy", a)
    return str(root / "seq.npy")


SCHEDULES = {
    "random-matching": lambda root: ["--topology", "random-matching"],
    "random-regular": lambda root: ["--topology", "random-regular", "--degree", "2", "--normalize", "obs,reward"],
    "sequence": lambda root: ["--adjacency", _sequence(root), "--link-drop", "0.3"],
}


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_a_schedule_gives_the_same_numbers_in_one_process_and_two(tmp_path, schedule):
    options = ["train", "--num-learners", "4", *TINY, *SCHEDULES[schedule](tmp_path)]
    assert main([*options, "--log-dir", str(tmp_path / "one")]) == 0
    _torchrun(2, "-m", "diffdac", *options, "--log-dir", str(tmp_path / "two"))
    assert torch.equal(checkpoint.gather(tmp_path / "one"), checkpoint.gather(tmp_path / "two"))
    one, two = (
        pd.read_csv(tmp_path / r / "progress.csv").drop(columns=["time", "steps_per_s"]) for r in ("one", "two")
    )
    pd.testing.assert_frame_equal(one, two)
    assert one["bytes_sent"].iloc[-1] > 0
