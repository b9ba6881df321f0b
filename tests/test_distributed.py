"""Learners across processes: torchrun on loopback must reproduce the one-process run bit for bit.

Bit for bit holds on CPU because nothing depends on how learners are grouped: noise is keyed by
learner, each learner's combination sums its neighbourhood in ascending global order whichever
rank hosts it, and every process runs one torch thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch

import diffdac
import topologies
from diffdac.run import checkpoint
from diffdac.cli import build_parser, config_from_args
from diffdac.network.comm import learner_block
from diffdac.network.mixing import Combiner
from diffdac.network.distributed import plan_reads
from diffdac.run.training import train
from launch import free_port, launch_env

# 5 learners: P = 2 gives blocks of 3 and 2, P = 4 blocks of 2, 1, 1, 1. Normalisers make
# the float64 statistics travel too.
OPTIONS = [
    "--num-learners",
    "5",
    "--envs-per-learner",
    "2",
    "--total-steps",
    "5000",
    "--hidden",
    "16",
    "--log-interval",
    "1000",
    "--lr",
    "0.01",
    "--normalize",
    "obs,reward",
    "--no-progress",
]
# Seconds a launch may take before a test calls it hung: starting torch in several processes on a
# busy machine (the suite runs on every core) can take a minute; a hang is what this guards against.
PATIENCE = 300
LOST = re.compile(r"^diffdac: training stopped: rank \d lost peer rank \d at update \d+: \S.*$")


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args, "-m", "diffdac"]


def _train_args(run_dir: Path, topology: str, *more: str) -> list[str]:
    return ["train", *OPTIONS, "--topology", topology, "--log-dir", str(run_dir), *more]


def _learners(run_dir: Path) -> dict[int, torch.Tensor]:
    """Final parameters of every learner, whichever rank's checkpoint holds it."""
    return dict(enumerate(checkpoint.gather(run_dir, "params")))


def _episodes(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_csv(p, skiprows=1)[["r", "l"]] for p in sorted((run_dir / "monitor").glob("*.monitor.csv"))}


def _assert_same_run(expected: Path, actual: Path) -> None:
    a, b = _learners(expected), _learners(actual)
    assert sorted(a) == sorted(b) == list(range(5))
    for learner in a:
        assert torch.equal(a[learner], b[learner]), f"learner {learner} parameters differ"
    episodes, other = _episodes(expected), _episodes(actual)
    assert episodes.keys() == other.keys() and sum(map(len, episodes.values())) > 0
    for name in episodes:
        pd.testing.assert_frame_equal(episodes[name], other[name], check_exact=True)


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on `path` (created if missing): one pytest-xdist worker at a time passes."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict[str, Path]:
    """The one-process runs every multi-process run must reproduce, made once for all xdist workers.

    The workers of one session share the parent of their base temporary directories; the first to
    get there trains, the others wait on the lock and reuse its finished runs.
    """
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "single-process-runs"
    root.mkdir(exist_ok=True)
    with _locked(root / ".lock"):
        for topology in ("ring", "full"):
            finished = root / f"{topology}.finished"
            if not finished.exists():
                shutil.rmtree(root / topology, ignore_errors=True)  # what a worker that died on it left
                train(config_from_args(build_parser().parse_args(_train_args(root / topology, topology))))
                finished.touch()
    return {t: root / t for t in ("ring", "full")}


# ---------------------------------------------------------------- the exchange plan, no processes


def test_a_rank_sends_only_to_ranks_hosting_neighbours():
    plan = plan_reads(*topologies.directed_edges(nx.cycle_graph(40)), 40, 4, rank=1)  # rank 1 hosts 10..19
    assert plan.peers == [0, 2]
    assert {p: ids.tolist() for p, ids in plan.sends.items()} == {0: [0], 2: [9]}  # rows of learners 10 and 19
    assert {p: ids.tolist() for p, ids in plan.recvs.items()} == {0: [9], 2: [20]}


def test_traffic_grows_with_neighbours_not_with_the_network():
    for n in (40, 4000):
        plans = [plan_reads(*topologies.directed_edges(nx.cycle_graph(n)), n, 4, r) for r in range(4)]
        assert [sum(map(len, p.sends.values())) for p in plans] == [2, 2, 2, 2]


@pytest.mark.parametrize("world_size", [2, 3, 7])
def test_plans_agree_between_ranks_and_yield_the_combiners_buffer(world_size):
    graph = topologies.resolve_graph("erdos-renyi", None, 11, 0.3, 4)
    src, dst, weight = topologies.combination_weights(graph, "metropolis")
    plans = [plan_reads(*topologies.directed_edges(graph), 11, world_size, r) for r in range(world_size)]
    for a in plans:
        for b in a.peers:
            assert np.array_equal(a.local_ids[a.sends[b]], plans[b].recvs[a.rank])
        combiner = Combiner(src, dst, weight, learner_block(a.rank, world_size, 11))
        pieces = {a.rank: a.local_ids, **a.recvs}  # the rows exchange() yields, concatenated in rank order
        assert np.array_equal(np.concatenate([pieces[r] for r in sorted(pieces)]), combiner.buffer_ids)


# ---------------------------------------------------------------- torchrun on loopback, bit for bit


@pytest.mark.parametrize("topology,processes", [("ring", 2), ("ring", 4), ("full", 2)])
def test_processes_reproduce_the_one_process_run(single, tmp_path, topology, processes):
    run_dir = tmp_path / "run"
    command = _torchrun(
        "--nproc-per-node", str(processes), "--master-addr", "127.0.0.1", "--master-port", str(free_port())
    )
    done = subprocess.run(
        [*command, *_train_args(run_dir, topology)], env=launch_env(), capture_output=True, text=True, timeout=PATIENCE
    )
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_same_run(single[topology], run_dir)
    last = checkpoint.latest(run_dir)
    assert last.complete and last.world_size == processes
    assert [checkpoint.rank_path(run_dir, last.steps, r).name for r in range(processes)] == sorted(
        p.name for p in (run_dir / "checkpoints").glob(f"step{last.steps:012d}.rank*.pt")
    )
    assert '"world_size": ' + str(processes) in (run_dir / "config.json").read_text()


def test_two_nodes_of_two_processes_reproduce_the_one_process_run(single, tmp_path):
    """Also the full graph at world size 4: every rank talks to every other."""
    run_dir, endpoint = tmp_path / "run", f"127.0.0.1:{free_port()}"
    nodes = [
        subprocess.Popen(
            [
                *_torchrun(
                    "--nnodes",
                    "2",
                    "--node-rank",
                    str(node),
                    "--nproc-per-node",
                    "2",
                    "--rdzv-backend",
                    "c10d",
                    "--rdzv-endpoint",
                    endpoint,
                    "--rdzv-id",
                    "test",
                ),
                *_train_args(run_dir, "full"),
            ],
            env=launch_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in (0, 1)
    ]
    try:
        outputs = [node.communicate(timeout=PATIENCE)[0] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert [node.returncode for node in nodes] == [0, 0], outputs
    _assert_same_run(single["full"], run_dir)


# ---------------------------------------------------------------- faults and bad input


def _launch(run_dir: Path, world_size: int, *more: str) -> list[subprocess.Popen]:
    """One process per rank with the variables torchrun would set, so the test owns every process."""
    port = str(free_port())
    return [
        subprocess.Popen(
            [sys.executable, "-m", "diffdac", *_train_args(run_dir, "ring", *more)],
            env=launch_env(
                RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=port
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(world_size)
    ]


@pytest.fixture
def launched():
    """Processes a test starts; whatever is still alive at the end is killed."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _wait_for_progress_rows(run_dir: Path, rows: int, deadline: float = PATIENCE) -> None:
    progress, end = run_dir / "progress.csv", time.monotonic() + deadline
    while not (progress.exists() and len(progress.read_text().splitlines()) > rows):
        assert time.monotonic() < end, "the run never got going"
        time.sleep(0.05)


def _outcomes(procs: list[subprocess.Popen], skip: int, timeout: float) -> tuple[list[int], list[str]]:
    """Exit codes and outputs of every process but `skip` (each must end within `timeout` seconds)."""
    codes, outputs = [], []
    for r, proc in enumerate(procs):
        if r != skip:
            outputs.append(proc.communicate(timeout=timeout)[0])
            codes.append(proc.returncode)
    return codes, outputs


def test_a_killed_rank_stops_the_others_at_once_with_one_line(tmp_path, launched):
    """The peers notice the closed connections: they stop long before their hour-long --dist-timeout would."""
    run_dir = tmp_path / "run"
    launched += _launch(run_dir, 3, "--total-steps", "100000000", "--dist-timeout", "3600")
    _wait_for_progress_rows(run_dir, 2)
    launched[0].send_signal(signal.SIGKILL)
    codes, outputs = _outcomes(launched, skip=0, timeout=PATIENCE)
    assert codes == [1, 1], outputs
    for out in outputs:
        assert LOST.match(out.strip()) and len(out.strip().splitlines()) == 1, out
        assert "Timed out" not in out


def test_a_hung_rank_stops_the_others_after_the_timeout(tmp_path, launched):
    """A stopped peer closes nothing: rank 0 gives up when --dist-timeout runs out, and says so."""
    run_dir = tmp_path / "run"
    launched += _launch(run_dir, 2, "--total-steps", "100000000", "--dist-timeout", "2")
    _wait_for_progress_rows(run_dir, 2)
    launched[1].send_signal(signal.SIGSTOP)
    codes, outputs = _outcomes(launched, skip=1, timeout=PATIENCE)
    assert codes == [1], outputs
    started, failed = outputs[0].strip().splitlines()  # rank 0 says where it logs, then one line for the failure
    assert started.startswith("diffdac: 5 learners") and started.endswith(f"logs in {run_dir}")
    assert LOST.match(failed) and "rank 0 lost peer rank 1" in failed, outputs
    assert "Timed out" in failed and "2000ms" in failed, outputs


@pytest.mark.parametrize("bad", [["--lr", "-1"], ["--num-learners", "1"]])
def test_bad_input_is_reported_once_by_rank_0_and_every_rank_exits_2(tmp_path, launched, bad):
    launched += _launch(tmp_path / "run", 2, *bad)
    outputs = [proc.communicate(timeout=PATIENCE)[0] for proc in launched]
    assert [proc.returncode for proc in launched] == [2, 2]
    assert outputs[0].startswith("diffdac: error: ") and len(outputs[0].splitlines()) == 1, outputs
    assert outputs[1] == ""


def test_torchrun_shows_the_error_once_and_no_traceback_of_ours(tmp_path):
    command = _torchrun("--nproc-per-node", "2", "--master-port", str(free_port()))
    done = subprocess.run(
        [*command, *_train_args(tmp_path / "run", "ring", "--no-such-option")],
        env=launch_env(),
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0 and output.count("diffdac: error: unrecognized arguments: --no-such-option") == 1
    assert "exitcode  : 2" in output and f'File "{Path(diffdac.__file__).parent}' not in output


def test_a_killed_world_resumes_under_torchrun_to_the_one_process_run(tmp_path, launched):
    longer = ("--total-steps", "10000", "--save-every", "1000")
    reference = train(config_from_args(build_parser().parse_args(_train_args(tmp_path / "single", "ring", *longer))))
    run_dir = tmp_path / "run"
    launched.extend(_launch(run_dir, 2, *longer))
    end = time.monotonic() + PATIENCE
    while not (checkpoint.latest(run_dir) if (run_dir / "checkpoints").is_dir() else None):
        assert time.monotonic() < end and all(p.poll() is None for p in launched), "no checkpoint before the run ended"
        time.sleep(0.02)
    for proc in launched:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert not checkpoint.latest(run_dir).complete
    resumed = _launch(run_dir, 2, *longer, "--resume")
    launched.extend(resumed)
    outputs = [proc.communicate(timeout=PATIENCE)[0] for proc in resumed]
    assert [proc.returncode for proc in resumed] == [0, 0], outputs
    _assert_same_run(reference, run_dir)


@pytest.mark.parametrize(
    "method",
    [
        ("--method", "centralized"),
        ("--method", "isolated"),
        ("--method", "gala", "--peers-per-round", "2"),
        ("--link-drop", "0.3", "--max-staleness", "2", "--fail-learner", "3@2500"),
    ],
)
def test_each_method_gives_the_same_numbers_in_one_and_two_processes(tmp_path, launched, method):
    reference = train(config_from_args(build_parser().parse_args(_train_args(tmp_path / "single", "ring", *method))))
    procs = _launch(tmp_path / "run", 2, *method)
    launched.extend(procs)
    outputs = [proc.communicate(timeout=PATIENCE)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    _assert_same_run(reference, tmp_path / "run")
    progress = [
        pd.read_csv(d / "progress.csv").drop(columns=["time", "steps_per_s"]) for d in (reference, tmp_path / "run")
    ]
    pd.testing.assert_frame_equal(*progress)


def test_the_task_weighted_score_is_the_same_in_one_and_two_processes(tmp_path, launched):
    """CartPole's short episodes fill every learner's window many times over, so the windows matter."""
    options = ("--env", "CartPole-v1", "--total-steps", "6000", "--log-interval", "2000")
    reference = train(config_from_args(build_parser().parse_args(_train_args(tmp_path / "single", "ring", *options))))
    procs = _launch(tmp_path / "run", 2, *options)
    launched.extend(procs)
    outputs = [proc.communicate(timeout=PATIENCE)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    scores = [pd.read_csv(d / "progress.csv")["score"] for d in (reference, tmp_path / "run")]
    assert scores[0].notna().all() and len(scores[0]) == 3
    pd.testing.assert_series_equal(*scores, check_exact=True)
    per_learner = (
        pd.Series({name: len(f) for name, f in _episodes(reference).items()}).groupby(lambda name: name[:10]).sum()
    )
    assert len(per_learner) == 5 and per_learner.min() > 10  # more than each learner's window of 10 holds


def test_one_learner_per_process_at_the_default_width_reproduces_the_one_process_run(tmp_path, launched):
    """Every rank hosts one learner: its matrix products (a batch of one) must round as in a block of learners."""
    paper = ("--num-learners", "4", "--envs-per-learner", "4", "--hidden", "64", "--total-steps", "1600")
    reference = train(config_from_args(build_parser().parse_args(_train_args(tmp_path / "single", "ring", *paper))))
    procs = _launch(tmp_path / "run", 4, *paper)
    launched.extend(procs)
    outputs = [proc.communicate(timeout=PATIENCE)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, outputs
    a, b = checkpoint.gather(reference), checkpoint.gather(tmp_path / "run")
    assert torch.equal(a, b)
    episodes, other = _episodes(reference), _episodes(tmp_path / "run")
    assert episodes.keys() == other.keys()
    for name in episodes:
        pd.testing.assert_frame_equal(episodes[name], other[name], check_exact=True)
