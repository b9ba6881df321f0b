"""--method choco: CHOCO-gossip reaches consensus without moving the average, sends what it counts,
agrees across process layouts and resumes exactly; uncompressed with γ = 1 it is diff-a2c."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch

import topologies
from diffdac import TrainConfig, train
from diffdac.cli import main
from diffdac.errors import ConfigError
from diffdac.metrics import Metrics
from diffdac.network.comm import LocalCommunicator
from diffdac.network.methods.choco import ChocoGossip, ChocoOptions
from diffdac.network.mixing import disagreement
from diffdac.run import checkpoint
from launch import launch_env, torchrun

TINY = dict(num_learners=5, envs_per_learner=1, hidden=8, log_interval=500, progress=False, method="choco")


def _run(run_dir: Path, **options) -> Path:
    return train(TrainConfig(**{**TINY, "total_steps": 3000, "log_dir": str(run_dir), **options}))


def _episodes(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_csv(p, skiprows=1)[["r", "l"]] for p in sorted((run_dir / "monitor").glob("*.monitor.csv"))}


def _progress(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "progress.csv").drop(columns=["time", "steps_per_s"])


def _assert_same_episodes(a: Path, b: Path) -> None:
    episodes, other = _episodes(a), _episodes(b)
    assert episodes.keys() == other.keys() and sum(map(len, episodes.values())) > 0
    for name in episodes:
        pd.testing.assert_frame_equal(episodes[name], other[name], check_exact=True, obj=name)


def _gossip(spec: str, step: float, n: int = 8, width: int = 2000) -> ChocoGossip:
    config = SimpleNamespace(num_learners=n, weights="metropolis", seed=0, method="choco")
    reads = topologies.directed_edges(nx.cycle_graph(n))
    mixer = ChocoGossip(config, LocalCommunicator(), np.arange(n), torch.device("cpu"), reads, ChocoOptions(spec, step))
    mixer.declare(Metrics(n))
    return mixer


# ---------------------------------------------------------------- consensus at learning rate 0


def test_top_k_disagreement_falls_geometrically_to_zero_on_a_ring_and_the_average_stays():
    mixer = _gossip("top-k:0.1", 0.2)
    x = torch.randn(8, 2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    average = x.mean(0)
    mixer.start(x)
    trace = []
    for r in range(400):
        x = mixer.combine(r, np.ones(8, bool), [x])[0]
        trace.append(disagreement(x))
    assert torch.allclose(x.mean(0), average, atol=1e-12)  # metropolis weights are symmetric: Σ_i x_i is kept
    assert trace[-1] < 1e-15 * trace[0]
    per_50 = [trace[i + 50] / trace[i] for i in range(49, 350, 50)]
    assert max(per_50) < 0.05  # every 50 rounds at least 20 times smaller: geometric


def test_at_lr_0_a_training_run_reaches_the_average_of_its_initial_parameters(tmp_path):
    options = dict(num_learners=8, envs_per_learner=1, lr=0.0, separate_init=True, weights="metropolis")
    start = checkpoint.gather(_run(tmp_path / "isolated", **{**options, "method": "isolated", "total_steps": 12000}))
    run = _run(tmp_path / "choco", **options, total_steps=12000)  # 300 rounds
    end = checkpoint.gather(run)
    assert torch.allclose(end.double().mean(0), start.double().mean(0), atol=1e-5)
    spread = pd.read_csv(run / "progress.csv")["disagreement"].to_numpy()
    assert spread[-1] < 1e-8 * disagreement(start)
    assert (np.diff(np.log(spread[:8])) < -0.5).all()  # falls by a factor > 1.6 every 500 env steps


# ---------------------------------------------------------------- uncompressed, γ = 1: diff-a2c


@pytest.mark.parametrize("weights", ["metropolis", "uniform"])
def test_no_compression_and_a_step_of_1_is_diff_a2c_bit_for_bit(tmp_path, weights):
    same = dict(weights=weights, normalize=("obs", "reward"), separate_init=True, lr=0.01)
    diffusion = _run(tmp_path / "diff", **same, method="diff-a2c")
    choco = _run(tmp_path / "choco", **same, compress="none", consensus_step=1.0)
    assert torch.equal(checkpoint.gather(choco), checkpoint.gather(diffusion))
    _assert_same_episodes(choco, diffusion)
    columns = ["steps", "score", "policy_loss", "value_loss", "disagreement"]
    pd.testing.assert_frame_equal(_progress(choco)[columns], _progress(diffusion)[columns], check_exact=True)


# ---------------------------------------------------------------- bytes


@pytest.mark.parametrize(("spec", "row_bytes"), [("top-k:0.1", 8), ("none", 4), ("sign", None)])
def test_bytes_sent_are_the_message_and_the_uncompressed_statistics_per_neighbour(tmp_path, spec, row_bytes):
    run = _run(tmp_path / "run", compress=spec, normalize=("obs", "reward"), total_steps=2000)
    params = checkpoint.gather(run).shape[1]
    obs_dim = 6  # the Acrobot's observation: mean and variance float64 each, and the return's (1 + 1)
    message = {
        "top-k:0.1": round(0.1 * params) * 8,  # float32 values and int32 indices
        "none": params * 4,
        "sign": 4 + -(-params // 8),  # one float32 scale and a bit per entry
    }[spec]
    statistics = (2 * obs_dim + 2) * 8
    progress = pd.read_csv(run / "progress.csv")
    rounds = progress["updates"].to_numpy()
    expected = rounds * 2 * (message + statistics)  # a ring: two neighbours read every message
    np.testing.assert_array_equal(progress["bytes_sent"].to_numpy(), expected)


class Recording(LocalCommunicator):
    """One process's transport that remembers what it was handed."""

    def __init__(self) -> None:
        self.moved: list[torch.Tensor] = []

    def exchange(self, block, buffer_ids, graph=0):
        self.moved.append(block)
        return block


def test_the_transport_moves_the_compressed_bytes_not_the_dense_rows():
    config = SimpleNamespace(num_learners=4, weights="metropolis", seed=0, method="choco")
    comm = Recording()
    reads = topologies.directed_edges(nx.cycle_graph(4))
    mixer = ChocoGossip(config, comm, np.arange(4), torch.device("cpu"), reads, ChocoOptions("top-k:0.1", 0.2))
    mixer.declare(Metrics(4))
    x = torch.randn(4, 500)
    mixer.start(x)
    mixer.combine(0, np.ones(4, bool), [x, torch.zeros(4, 3, dtype=torch.float64)])
    params, statistics = comm.moved[1], comm.moved[0]
    assert params.dtype == torch.uint8 and params.shape == (4, 50 * 8)  # 50 float32 values, 50 int32 indices
    assert statistics.dtype == torch.float64 and statistics.shape == (4, 3)  # statistics travel as they are


# ---------------------------------------------------------------- one process and two


CLI = [
    "--method",
    "choco",
    "--num-learners",
    "5",
    "--envs-per-learner",
    "1",
    "--hidden",
    "8",
    "--total-steps",
    "3000",
    "--log-interval",
    "500",
    "--normalize",
    "obs,reward",
    "--lr",
    "0.01",
    "--no-progress",
]


@pytest.mark.parametrize("spec", ["random-k:0.2", "qsgd:4"])
def test_random_k_and_qsgd_give_the_same_numbers_in_one_process_and_two(tmp_path, spec):
    args = [*CLI, "--compress", spec, "--consensus-step", "0.1"]
    assert main(["train", *args, "--log-dir", str(tmp_path / "one")]) == 0
    command = torchrun(2, "-m", "diffdac", "train", *args, "--log-dir", str(tmp_path / "two"))
    done = subprocess.run(command, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert torch.equal(checkpoint.gather(tmp_path / "one"), checkpoint.gather(tmp_path / "two"))
    _assert_same_episodes(tmp_path / "one", tmp_path / "two")
    one, two = _progress(tmp_path / "one"), _progress(tmp_path / "two")
    pd.testing.assert_frame_equal(one, two)  # losses are summed over ranks in the layout's order: float rounding
    assert one["bytes_sent"].tolist() == two["bytes_sent"].tolist() and one["bytes_sent"].iloc[-1] > 0


# ---------------------------------------------------------------- resume


def test_resume_from_a_checkpoint_is_exact_because_the_public_copies_are_in_it(tmp_path):
    whole = _run(tmp_path / "whole", total_steps=4000, compress="qsgd:4", consensus_step=0.1)
    half = _run(tmp_path / "half", total_steps=2000, compress="qsgd:4", consensus_step=0.1)
    assert main(["train", "--resume", "--log-dir", str(half), "--total-steps", "4000", "--no-progress"]) == 0
    assert torch.equal(checkpoint.gather(half), checkpoint.gather(whole))
    _assert_same_episodes(half, whole)
    pd.testing.assert_frame_equal(_progress(half), _progress(whole), check_exact=True)
    public, params = checkpoint.gather(half, "mixer.public"), checkpoint.gather(half)
    assert torch.count_nonzero(public) > 0 and (public - params).norm() < 0.5 * params.norm()  # copies that track x


# ---------------------------------------------------------------- what it refuses


def test_uniform_weights_on_an_irregular_graph_are_refused_and_metropolis_accepted(tmp_path):
    with pytest.raises(ConfigError, match="--weights metropolis"):
        _run(tmp_path / "star", topology="star", total_steps=200)
    assert _run(tmp_path / "ok", topology="star", weights="metropolis", total_steps=200).is_dir()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (dict(link_drop=0.3), "--link-drop is an option of --method diff-a2c"),
        (dict(consensus_step=1.5), "--consensus-step is γ in"),
        (dict(compress="top-k:2"), "is not a compressor"),
    ],
)
def test_faults_and_bad_options_are_refused(tmp_path, option, message):
    with pytest.raises(ConfigError, match=message):
        _run(tmp_path / "run", **option)


@pytest.mark.parametrize(
    "graph",
    [dict(topology="random-matching"), dict(topology=None, adjacency="[[[0,1],[1,0]],[[0,1],[1,0]]]")],
    ids=["random-matching", "sequence"],
)
def test_a_graph_that_changes_every_round_is_refused(graph):
    with pytest.raises(ConfigError, match="one fixed graph"):
        TrainConfig(method="choco", num_learners=2, **graph).validate()
