"""Bytes sent per learner, counted by hand for every method: progress.csv's bytes_sent column.

A learner's message is its row of every diffused block at the dtype it moves in (float32
parameters, float64 normaliser statistics; push-sum moves float64), once per neighbour that reads
it over a link that works; centralised A2C is charged a ring all-reduce, 2 (N-1)/N of its size.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch

from diffdac.config import TrainConfig
from diffdac.metrics import Metrics
from diffdac.network.comm import LocalCommunicator
from diffdac.network.methods import method_for
from diffdac.run import checkpoint
from diffdac.run.training import train

# Acrobot: 6 observations, 3 actions; --hidden 8 gives an actor of 6*8+8 + 8*8+8 + 8*3+3 = 155 and a
# critic of 6*8+8 + 8*8+8 + 8+1 = 137 parameters.
PARAMS = 155 + 137
STATS = 2 * 6 + 2 * 1  # obs mean and var, return mean and var (float64)
SMALL = dict(num_learners=4, envs_per_learner=2, total_steps=2000, hidden=8, log_interval=1000, progress=False)
UPDATES = 2000 // (4 * 2 * 5)  # 50 updates, one combine round each


def _train(root: Path, name: str, **overrides) -> pd.DataFrame:
    run_dir = train(TrainConfig(**{**SMALL, "log_dir": str(root / name), **overrides}))
    return pd.read_csv(run_dir / "progress.csv")


def _final_bytes(root: Path, name: str, **overrides) -> float:
    return float(_train(root, name, **overrides)["bytes_sent"].iloc[-1])


def test_the_parameter_count_is_the_one_the_hand_counts_use(tmp_path):
    run = _train(tmp_path, "ring")
    assert checkpoint.gather(tmp_path / "ring").shape == (4, PARAMS)
    assert run["bytes_sent"].iloc[-1] == UPDATES * 2 * PARAMS * 4  # ring: two neighbours, float32 rows


@pytest.mark.parametrize(
    ("overrides", "total"),
    [
        (dict(topology="full"), UPDATES * 3 * PARAMS * 4),
        (dict(topology="ring", normalize=("obs", "reward")), UPDATES * 2 * (PARAMS * 4 + STATS * 8)),
        (dict(topology="ring", normalize=("obs", "reward"), local_normalizer=True), UPDATES * 2 * PARAMS * 4),
        (dict(method="gala"), UPDATES * (PARAMS + 1) * 8),  # one peer per round; numerator and weight in float64
        (dict(method="gala", normalize=("obs", "reward")), UPDATES * (PARAMS + STATS + 1) * 8),
        (dict(method="isolated"), 0),
        (dict(topology="random-matching"), UPDATES * PARAMS * 4),  # 4 learners: always a perfect matching
        (dict(topology="random-regular", degree=3), UPDATES * 3 * PARAMS * 4),  # on 4 learners: the full graph
        (dict(topology="ring", combine_every=5), UPDATES // 5 * 2 * PARAMS * 4),
    ],
)
def test_each_method_reports_its_messages(tmp_path, overrides, total):
    assert _final_bytes(tmp_path, "run", **overrides) == total


def test_centralised_a2c_is_charged_a_ring_all_reduce_of_its_gradient(tmp_path):
    per_update = 2 * 3 * PARAMS * 4 // 4  # 2 (N-1)/N x the gradient's bytes, N = 4
    assert _final_bytes(tmp_path, "central", method="centralized") == UPDATES * per_update
    stats = 2 * 3 * STATS * 8 // 4  # the normaliser statistics are averaged the same way every combine round
    both = _final_bytes(tmp_path, "normalised", method="centralized", normalize=("obs", "reward"))
    assert both == UPDATES * (per_update + stats)


def test_a_sequence_counts_each_rounds_links(tmp_path):
    path = tmp_path / "seq.npy"
    a = np.zeros((2, 4, 4))
    a[0][[0, 1], [1, 0]] = 1  # round 0: one link
    a[1] = nx.to_numpy_array(nx.cycle_graph(4))  # round 1: the ring's four
    np.save(path, a)
    assert _final_bytes(tmp_path, "seq", topology=None, adjacency=str(path)) == UPDATES // 2 * (2 + 8) * PARAMS * 4 / 4


# ---------------------------------------------------------------- faults: what actually moved


def _mixer_bytes(config: TrainConfig, graph: nx.Graph, alive: np.ndarray, rounds: int, width: int = 10) -> float:
    """bytes_sent after `rounds` combine rounds of float32 rows `width` wide, driving the mixer alone."""
    n = config.num_learners
    mixer = method_for(config, graph).mixer(LocalCommunicator(), np.arange(n), torch.device("cpu"))
    metrics = Metrics(n)
    mixer.declare(metrics)
    for r in range(rounds):
        mixer.combine(r, alive, [torch.zeros(n, width)])
    return metrics.row(lambda t: t)["bytes_sent"]


def test_a_departed_learner_sends_nothing_and_is_sent_nothing():
    config = TrainConfig(num_learners=4, topology="ring", fail_learner=("1@0",))
    alive = np.array([True, False, True, True])
    # links 2-3 and 3-0 work: four reads of a 40-byte row per round, over four learners
    assert _mixer_bytes(config, nx.cycle_graph(4), alive, 3) == 3 * 4 * 40 / 4


@pytest.mark.parametrize("staleness", [0, 2])
def test_dropped_links_carry_nothing_and_stale_reads_cost_what_a_fresh_one_does(staleness):
    ones = np.ones(6, dtype=bool)
    never = TrainConfig(num_learners=6, topology="full", link_drop=1.0, max_staleness=staleness)
    assert _mixer_bytes(never, nx.complete_graph(6), ones, 5) == 0
    config = TrainConfig(num_learners=6, topology="full", link_drop=0.5, max_staleness=staleness)
    mixer = method_for(config, nx.complete_graph(6)).mixer(LocalCommunicator(), np.arange(6), torch.device("cpu"))
    metrics = Metrics(6)
    mixer.declare(metrics)
    links = []
    for r in range(8):
        mixer.combine(r, ones, [torch.zeros(6, 10)])
        links.append(mixer.links)
    assert 0 < sum(links) < 8 * 15
    assert metrics.row(lambda t: t)["bytes_sent"] == sum(links) * 2 * 40 / 6  # both directions of each working link


def test_random_schedule_link_drops_count_the_links_that_work():
    config = TrainConfig(num_learners=6, topology="random-regular", degree=3, link_drop=0.5)
    mixer = method_for(config, nx.complete_graph(6)).mixer(LocalCommunicator(), np.arange(6), torch.device("cpu"))
    metrics = Metrics(6)
    mixer.declare(metrics)
    links = []
    for r in range(8):
        mixer.combine(r, np.ones(6, dtype=bool), [torch.zeros(6, 10)])
        links.append(mixer.links)
    assert 0 < sum(links) < 8 * 9
    assert metrics.row(lambda t: t)["bytes_sent"] == sum(links) * 2 * 40 / 6


# ---------------------------------------------------------------- reading it: plot --x bytes, the table


def test_plot_draws_score_against_bytes_on_a_log_axis_and_the_table_gives_mb_per_learner(tmp_path):
    from diffdac.cli import build_parser
    from diffdac.tools import plot, results

    for name, topology in (("ring", "ring"), ("full", "full")):
        _train(tmp_path, name, topology=topology, total_steps=8000)
    runs = results.load_runs([tmp_path / "ring", tmp_path / "full"])
    args = build_parser().parse_args(
        ["plot", str(tmp_path / "ring"), str(tmp_path / "full"), "--x", "bytes", "--bin-steps", "2000"]
    )
    ax = plot.draw(runs, args).axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "bytes sent per learner"
    ring, full = (line.get_xdata() for line in ax.get_lines())
    rounds = 8000 // 40
    assert max(ring) <= rounds * 2 * PARAMS * 4 and max(full) <= rounds * 3 * PARAMS * 4
    np.testing.assert_allclose(np.asarray(full) / np.asarray(ring), 1.5)  # three neighbours against two
    table = results.summary(runs, 2000).set_index("curve")
    assert table.loc["ring", "mb_sent"] == rounds * 2 * PARAMS * 4 / 1e6
    assert table.loc["full", "mb_sent"] == rounds * 3 * PARAMS * 4 / 1e6
    assert "MB sent per learner" in results.readable(table.reset_index()).columns
