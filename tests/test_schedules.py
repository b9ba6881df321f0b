"""A graph per combine round: the schedules of topologies/schedules.py and how a run uses them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch

import topologies
from diffdac.cli import main
from diffdac.config import TrainConfig
from diffdac.network.comm import LocalCommunicator
from diffdac.network.methods import method_for
from diffdac.run import checkpoint
from topologies.combination import second_largest_eigenvalue_modulus


def _adjacency(reads: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
    a = np.zeros((n, n), dtype=int)
    a[reads[0], reads[1]] = 1
    return a


@pytest.mark.parametrize("n", [6, 7])
def test_a_random_matching_pairs_every_learner_with_at_most_one_partner(n):
    schedule = topologies.random_matching(n, seed=3)
    seen = set()
    for r in range(20):
        a = _adjacency(schedule.reads(r), n)
        assert (a == a.T).all() and not a.diagonal().any()
        assert sorted(a.sum(1)) == [0] * (n % 2) + [1] * (n - n % 2)  # perfect, or one left out when N is odd
        seen.add(a.tobytes())
    assert len(seen) > 5  # a fresh matching every round


def test_a_random_regular_schedule_draws_a_fresh_d_regular_graph_each_round():
    schedule = topologies.random_regular(10, 3, seed=1)
    graphs = [_adjacency(schedule.reads(r), 10) for r in range(10)]
    for a in graphs:
        assert (a == a.T).all() and (a.sum(1) == 3).all()
    assert len({a.tobytes() for a in graphs}) == 10


def test_random_rounds_depend_on_seed_and_round_only():
    for make in (lambda s: topologies.random_matching(9, s), lambda s: topologies.random_regular(8, 2, s)):
        a, b = make(5), make(5)
        for r in (7, 0, 3, 7):  # any order of asking, as after a resume
            assert all(np.array_equal(x, y) for x, y in zip(a.reads(r), b.reads(r)))
        assert not np.array_equal(
            _adjacency(make(5).reads(0), 9 if a.kind == "random-matching" else 8),
            _adjacency(make(6).reads(0), 9 if a.kind == "random-matching" else 8),
        )


def test_a_sequence_repeats_with_its_length_and_the_exponential_graph_is_gala_s():
    matrices = np.stack([nx.to_numpy_array(nx.path_graph(4)), nx.to_numpy_array(nx.cycle_graph(4))])
    schedule = topologies.sequence_schedule(matrices)
    assert schedule.period == 2
    for r in range(5):
        assert (_adjacency(schedule.reads(r), 4) == matrices[r % 2]).all()
    gala = topologies.exponential_schedule(8, 1)
    assert gala.period == 3
    for r in range(6):
        assert all(np.array_equal(x, y) for x, y in zip(gala.reads(r), topologies.exponential_reads(8, r, 1)))


@pytest.mark.parametrize(("kind", "n"), [("random-matching", 6), ("random-matching", 5), ("random-regular", 8)])
def test_the_expected_matrix_is_the_mean_of_many_rounds(kind, n):
    schedule = topologies.random_matching(n, 0) if kind == "random-matching" else topologies.random_regular(n, 3, 0)
    mean = np.mean([schedule.matrix(r, "metropolis") for r in range(3000)], axis=0)
    np.testing.assert_allclose(topologies.expected_matrix(schedule, "metropolis"), mean, atol=0.03)


def test_one_period_of_the_exponential_graph_averages_exactly_on_a_power_of_two():
    product = topologies.period_product(topologies.exponential_schedule(8, 1), topologies.PUSH)
    assert second_largest_eigenvalue_modulus(product) < 1e-9
    np.testing.assert_allclose(product, np.full((8, 8), 1 / 8))


def test_the_topology_command_prints_the_schedules_figure(capsys):
    assert main(["topology", "--topology", "random-matching", "--num-learners", "6"]) == 0
    out = capsys.readouterr().out
    assert "SLEM of the expected combination matrix E[C]: 0.4000" in out  # |1/2 - 1/10|
    assert "round 0's graph held fixed every round instead: 1.0000" in out
    assert main(["topology", "--adjacency", "[[[0,1,0],[1,0,0],[0,0,0]],[[0,0,0],[0,0,1],[0,1,0]]]"]) == 0
    out = capsys.readouterr().out
    assert "SLEM of each round's C alone: 1.0000 1.0000" in out
    # C0 C1 = [[.5,.25,.25],[.5,.25,.25],[0,.5,.5]]: eigenvalues 1, 1/4 and 0
    assert "SLEM of the product of one period's combination matrices: 0.2500 (per round 0.5000" in out


# ---------------------------------------------------------------- runs


SMALL = ["--num-learners", "4", "--envs-per-learner", "2", "--hidden", "8", "--log-interval", "1000", "--no-progress"]


def _sequence_files(root: Path) -> list[Path]:
    paths = []
    for r, graph in enumerate((nx.path_graph(4), nx.cycle_graph(4), nx.star_graph(3))):
        path = root / f"g{r}.csv"
        np.savetxt(path, nx.to_numpy_array(graph), delimiter=",", fmt="%d")
        paths.append(path)
    return paths


def _progress(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "progress.csv").drop(columns=["time", "steps_per_s"])


def test_a_sequence_run_keeps_its_copy_and_resumes_from_it_exactly(tmp_path):
    spec = ",".join(map(str, _sequence_files(tmp_path)))
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert main(["train", *SMALL, "--adjacency", spec, "--total-steps", "4000", "--log-dir", str(whole)]) == 0
    assert main(["train", *SMALL, "--adjacency", spec, "--total-steps", "2000", "--log-dir", str(part)]) == 0
    stored = json.loads((part / "config.json").read_text())
    assert np.array(json.loads(stored["adjacency"])).shape == (3, 4, 4) and stored["adjacency_file"] == spec
    for path in spec.split(","):
        Path(path).unlink()  # the run needs only its own copy now
    assert main(["train", "--resume", "--log-dir", str(part), "--total-steps", "4000", "--no-progress"]) == 0
    assert torch.equal(checkpoint.gather(whole), checkpoint.gather(part))
    pd.testing.assert_frame_equal(_progress(whole), _progress(part))


def test_a_sequence_differs_from_its_union_and_a_random_schedule_from_the_full_graph(tmp_path):
    spec = ",".join(map(str, _sequence_files(tmp_path)))
    runs = {}
    for name, graph in (
        ("seq", ["--adjacency", spec]),
        ("match", ["--topology", "random-matching"]),
        ("full", ["--topology", "full"]),
    ):
        assert main(["train", *SMALL, *graph, "--total-steps", "2000", "--log-dir", str(tmp_path / name)]) == 0
        runs[name] = checkpoint.gather(tmp_path / name)
    assert not torch.equal(runs["seq"], runs["full"]) and not torch.equal(runs["match"], runs["full"])
    assert pd.read_csv(tmp_path / "match" / "topology.csv", index_col=0).to_numpy().sum() == 12  # any pair may talk


def test_the_mixer_combines_over_the_rounds_graph():
    config = TrainConfig(num_learners=6, topology="random-matching", seed=2)
    method = method_for(config, nx.complete_graph(6))
    mixer = method.mixer(LocalCommunicator(), np.arange(6), torch.device("cpu"))
    x = torch.arange(6, dtype=torch.float64).reshape(6, 1)
    for r in range(3):
        src, dst = method.schedule.reads(r)
        out = mixer.combine(r, np.ones(6, dtype=bool), [x])[0]
        np.testing.assert_array_equal(out[dst, 0].numpy(), (x[dst, 0] + x[src, 0]).numpy() / 2)  # partner averages


BAD = [
    ("non-symmetric", [[[0, 1], [1, 0]], [[0, 1], [0, 0]]], "matrix 1: adjacency matrix is not symmetric"),
    ("different N", None, "matrix 1 has shape (3, 3) but matrix 0 has (2, 2)"),
    ("bad .npy shape", np.zeros((2, 2, 3)), "adjacency matrix must be square"),
    ("4-d .npy", np.zeros((1, 2, 2, 2)), "adjacency matrix must be square"),
]


@pytest.mark.parametrize(("what", "value", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_schedule_is_one_line_and_exit_status_2(tmp_path, what, value, message):
    if value is None:
        np.savetxt(tmp_path / "a.csv", [[0, 1], [1, 0]], delimiter=",", fmt="%d")
        np.savetxt(tmp_path / "b.csv", np.zeros((3, 3)), delimiter=",", fmt="%d")
        spec = f"{tmp_path / 'a.csv'},{tmp_path / 'b.csv'}"
    elif isinstance(value, list):
        spec = json.dumps(value)
    else:
        spec = str(tmp_path / "bad.npy")
        np.save(spec, value)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "diffdac",
            "train",
            "--adjacency",
            spec,
            "--num-learners",
            "2",
            "--log-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--topology", "random-regular"], "needs --degree"),
        (["--topology", "random-regular", "--degree", "3", "--num-learners", "5"], "N x degree must be even"),
        (["--topology", "ring", "--degree", "2"], "--degree 2 is the degree of --topology random-regular"),
        (["--method", "gala", "--degree", "2"], "is an option of --method diff-a2c"),
        (["--topology", "random-matching", "--max-staleness", "1"], "--max-staleness needs a fixed graph"),
    ],
)
def test_bad_random_schedule_options_are_refused(capsys, tmp_path, options, message):
    assert main(["train", *options, "--log-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
