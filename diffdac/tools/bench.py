"""`diffdac bench`: throughput of whole runs, so users see what a set-up costs before they pick it.

A scenario is a function of the parsed options that returns rows (plain dicts, one per measured
set-up); `diffdac bench` prints them as a table or as JSON. Scenarios register themselves in
SCENARIOS, so new comparisons (a Stable-Baselines3 peer, big populations) are one function each.
Figures are env steps per second summed over all learners; ratios are against a set-up measured
in the same invocation, since this kind of machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from diffdac.run import memory
from diffdac.errors import ConfigError

Row = dict[str, Any]
Scenario = Callable[[argparse.Namespace], list[Row]]
SCENARIOS: dict[str, Scenario] = {}


class BenchError(RuntimeError):
    """A measured run failed: the message carries the tail of its output."""


def scenario(name: str) -> Callable[[Scenario], Scenario]:
    """Register a scenario under the name `--scenario` takes."""

    def register(fn: Scenario) -> Scenario:
        SCENARIOS[name] = fn
        return fn

    return register


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `diffdac bench`, shared by all scenarios."""
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="processes", help="what to compare")
    parser.add_argument("--num-learners", type=int, default=4, help="learners in the measured run")
    parser.add_argument("--envs-per-learner", type=int, default=4, help="simulators per learner")
    parser.add_argument("--total-steps", type=int, default=40_000, help="env steps of each measured run")
    parser.add_argument("--topology", default="ring", help="graph of the measured run")
    parser.add_argument("--env", default=None, help="gymnasium id of the task family (default: train's default)")
    parser.add_argument(
        "--processes", default=None, help="comma list of process counts (default: 1, 2 and the number of learners)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per set-up; the table shows the median")
    parser.add_argument(
        "--setups",
        default=DEFAULT_SETUPS,
        help="speed: comma list of LEARNERSxSIMS[@THREADS] populations on a ring (THREADS: torch CPU threads, default 1)",
    )
    parser.add_argument(
        "--peer-steps", type=int, default=100_000, help="speed: env steps of the Stable-Baselines3 A2C peer"
    )
    parser.add_argument(
        "--sim-threads",
        type=int,
        default=2,
        help="mujoco: also step and train with this many simulator threads (default 2)",
    )
    parser.add_argument(
        "--sim-processes",
        type=int,
        default=2,
        help="mujoco: also step and train with this many simulator processes (default 2)",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")


def train_args(args: argparse.Namespace, run_dir: Path) -> list[str]:
    """`diffdac train` options of one measured run: the same run whatever the process count."""
    options = [
        "--num-learners",
        str(args.num_learners),
        "--envs-per-learner",
        str(args.envs_per_learner),
        "--total-steps",
        str(args.total_steps),
        "--log-interval",
        str(args.total_steps),
        "--topology",
        args.topology,
        "--log-dir",
        str(run_dir),
        "--no-progress",
    ]
    return options + (["--env", args.env] if args.env else [])


# Runs `python -m diffdac` and reports the process's peak resident memory on stderr at exit.
_WITH_MAXRSS = (
    "import atexit, resource, runpy, sys; "
    "atexit.register(lambda: print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)); "
    "sys.argv = ['diffdac'] + sys.argv[1:]; runpy.run_module('diffdac', run_name='__main__', alter_sys=True)"
)


def launch_training(processes: int, options: list[str]) -> tuple[float, float]:
    """(env steps/s of the training loop, wall seconds of the whole launch) of one run at `processes` ranks.

    One process runs plainly (a world of one, as a user would); more go through torchrun
    --standalone, which picks its own free port. Steps/s comes from progress.csv, so it leaves out
    start-up; the wall time includes it, which is the other half of what processes cost.
    """
    command = [sys.executable, "-m", "diffdac", "train", *options]
    if processes > 1:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(processes),
            *command[1:],
        ]
    start = time.perf_counter()
    done = subprocess.run(
        command, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(
            f"the run at {processes} processes failed (exit {done.returncode}): {(done.stdout + done.stderr)[-1500:]}"
        )
    return loop_speed(Path(options[options.index("--log-dir") + 1])), wall


def loop_speed(run_dir: Path) -> float:
    """Env steps/s of a finished run's training loop: the last row of its progress.csv."""
    last = (run_dir / "progress.csv").read_text().strip().splitlines()
    header, values = last[0].split(","), last[-1].split(",")
    return float(values[header.index("steps_per_s")])


def process_counts(args: argparse.Namespace) -> list[int]:
    """The process counts to compare, always with 1 (the reference) and never more than the learners."""
    wanted = (
        {1, 2, args.num_learners}
        if args.processes is None
        else {int(p) for p in args.processes.split(",") if p.strip()} | {1}
    )
    return sorted(p for p in wanted if 1 <= p <= args.num_learners)


@scenario("processes")
def processes(args: argparse.Namespace) -> list[Row]:
    """The same run at P = 1, 2 and N processes: what splitting learners over processes costs or gains."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="diffdac-bench-") as tmp:
        for p in process_counts(args):
            runs = [launch_training(p, train_args(args, Path(tmp) / f"p{p}-{i}")) for i in range(args.repeats)]
            speed = statistics.median(r[0] for r in runs)
            rows.append(
                {
                    "scenario": "processes",
                    "processes": p,
                    "learners_per_process": _block_sizes(args.num_learners, p),
                    "steps_per_s": round(speed, 1),
                    "ratio_to_1": round(speed / (rows[0]["steps_per_s"] if rows else speed), 3),
                    "wall_s": round(statistics.median(r[1] for r in runs), 2),
                }
            )
    return rows


MUJOCO_ENV = "diffdac/RandomMassHopper-v5"


def random_actions(space: Any, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Uniform actions in a Box space, drawn before the clock starts: `[*shape, *space.shape]`."""
    rng = np.random.default_rng(seed)
    return rng.uniform(space.low, space.high, size=shape + space.shape).astype(space.dtype)


def stock_env_steps_per_s(env_id: str, steps: int, seed: int) -> float:
    """Env steps/s of one plain gymnasium env stepping alone, reset whenever an episode ends."""
    import gymnasium

    env = gymnasium.make(env_id)
    actions = random_actions(env.action_space, (steps,), seed)
    env.reset(seed=seed)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def task_batch_steps_per_s(
    env_id: str, learners: int, sims: int, steps: int, seed: int, threads: int = 1, processes: int = 1
) -> float:
    """Env steps/s of a learners x sims task batch (what `diffdac train` steps), all simulators per call."""
    import envs

    spec = envs.TaskSpec(env_id, seed, range(learners), sims, sim_threads=threads, sim_processes=processes)
    batch = envs.make_task_batch(spec)
    actions = random_actions(batch.action_space, (max(1, steps // (learners * sims)), learners, sims), seed)
    batch.reset()
    start = time.perf_counter()
    for action in actions:
        batch.step(action)
    elapsed = time.perf_counter() - start
    batch.close()
    return actions.shape[0] * learners * sims / elapsed


# How a batch may be stepped on more than one core: key suffix -> (option, row label)
PARALLEL = {"t": ("sim_threads", "sim threads"), "p": ("sim_processes", "sim processes")}


@scenario("mujoco")
def mujoco(args: argparse.Namespace) -> list[Row]:
    """MuJoCo variants stepped as a task batch (and trained on) against one stock robot stepping alone.

    The peer is the stock robot the variant is built on (Hopper-v5 for RandomMassHopper-v5). The
    stock robot in a task batch separates what batching costs from what the variants' physics
    (air, other masses) costs. With --sim-threads / --sim-processes above 1 the batch is also
    stepped, and trained on, that way, against itself on one core. The set-ups are measured in
    turn in every repeat, so a busy moment costs all of them alike.
    """
    import envs

    env_id = args.env or MUJOCO_ENV
    try:
        peer = envs.stock_id(env_id)
    except ValueError as err:
        raise ConfigError(f"--scenario mujoco: {err}") from None
    learners, sims = args.num_learners, args.envs_per_learner
    ways = [(f"@{n}{kind}", option, n) for kind, (option, _) in PARALLEL.items() if (n := getattr(args, option)) > 1]
    keys = ["stock", "stock_batch", "batch", "train"] + [
        f"{base}{at}" for at, _, _ in ways for base in ("batch", "train")
    ]
    speeds: dict[str, list[float]] = {key: [] for key in keys}
    with tempfile.TemporaryDirectory(prefix="diffdac-bench-") as tmp:
        for i in range(args.repeats):
            speeds["stock"].append(stock_env_steps_per_s(peer, args.total_steps, i))
            speeds["stock_batch"].append(task_batch_steps_per_s(peer, learners, sims, args.total_steps, i))
            for at, option, n in [("", "sim_threads", 1), *ways]:
                parallel = {option.removeprefix("sim_"): n}  # threads= or processes=
                speeds[f"batch{at}"].append(
                    task_batch_steps_per_s(env_id, learners, sims, args.total_steps, i, **parallel)
                )
                options = train_args(argparse.Namespace(**{**vars(args), "env": env_id}), Path(tmp) / f"train{at}-{i}")
                flag = "--" + option.replace("_", "-")
                speeds[f"train{at}"].append(launch_training(1, [*options, flag, str(n)])[0])
    names = {
        "stock": f"{peer} alone",
        "stock_batch": f"{peer} task batch",
        "batch": f"{env_id} task batch",
        "train": f"diffdac train on {env_id}",
    }
    median = {key: statistics.median(values) for key, values in speeds.items()}
    rows = []
    for key in keys:
        base, _, at = key.partition("@")
        same_batch = median["batch" + (f"@{at}" if at else "")] if base == "train" else None
        rows.append(
            {
                "scenario": "mujoco",
                "setup": names[base] + (f", {at[:-1]} {PARALLEL[at[-1]][1]}" if at else ""),
                "learners_x_sims": "1" if key == "stock" else f"{learners}x{sims}",
                "steps_per_s": round(median[key], 1),
                "ratio_to_stock": round(median[key] / median["stock"], 3),
                "ratio_to_batch": round(median[key] / same_batch, 3) if same_batch else "",
                "ratio_to_1_core": round(median[key] / median[base], 3) if at else "",
            }
        )
    return rows


PEER = "Stable-Baselines3 A2C, Acrobot-v1, 16 envs"


def sb3_peer_steps_per_s(steps: int) -> float | None:
    """The reference peer: Stable-Baselines3's A2C on Acrobot-v1 with 16 envs (None without the [bench] extra)."""
    try:
        from stable_baselines3 import A2C
        from stable_baselines3.common.env_util import make_vec_env
    except ImportError:
        return None
    model = A2C("MlpPolicy", make_vec_env("Acrobot-v1", n_envs=16, seed=0), device="cpu", seed=0, verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    return model.num_timesteps / (time.perf_counter() - start)


class Setup(NamedTuple):
    """One measured population: learners x simulators each, on this many torch threads."""

    learners: int
    sims: int
    threads: int = 1

    def __str__(self) -> str:
        return f"{self.learners}x{self.sims}" + (f"@{self.threads}" if self.threads != 1 else "")


# The targets (25x16, 25x1, 1,024x1), a middle size, and the big ones again on both cores.
DEFAULT_SETUPS = "25x16,25x16@2,25x1,256x1,1024x1,1024x1@2"


def parse_setups(text: str) -> list[Setup]:
    setups = []
    try:
        for item in filter(None, (part.strip().lower() for part in text.split(","))):
            size, at, threads = item.partition("@")
            learners, sims = (int(x) for x in size.split("x"))
            setups.append(Setup(learners, sims, int(threads) if at else 1))
    except ValueError:
        setups = []
    if not setups or any(min(s) < 1 for s in setups):
        raise ConfigError(f"--setups takes LEARNERSxSIMS[@THREADS] items such as 25x16,1024x1@2, got {text!r}")
    return setups


def train_speed(setup: Setup, min_steps: int, run_dir: Path) -> tuple[float, float]:
    """(env steps/s, peak resident MB) of one diffdac train run on a ring of the default Acrobot family.

    At least 100 updates, so start-up effects are small against the loop.
    """
    steps = max(min_steps, 100 * setup.learners * setup.sims * 5)
    options = [
        "--num-learners",
        str(setup.learners),
        "--envs-per-learner",
        str(setup.sims),
        "--total-steps",
        str(steps),
        "--threads",
        str(setup.threads),
        "--log-interval",
        str(steps),
        "--save-every",
        str(steps),
        "--log-dir",
        str(run_dir),
        "--no-progress",
    ]
    done = subprocess.run(
        [sys.executable, "-c", _WITH_MAXRSS, "train", *options],
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": str(setup.threads)},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BenchError(f"the {setup} run failed (exit {done.returncode}): {(done.stdout + done.stderr)[-1500:]}")
    rss_kb = int(done.stderr.split("MAXRSS_KB")[-1].split()[0])
    return loop_speed(run_dir), rss_kb / 1024


def combine_seconds(learners: int, threads: int = 1, repeats: int = 30) -> float:
    """Median time of one combine step (parameters only) on a ring of `learners` Acrobot learners, on `threads` threads."""
    import networkx as nx
    import torch

    import topologies
    from diffdac.network.mixing import Combiner

    src, dst, weight = topologies.combination_weights(nx.cycle_graph(learners), "uniform")
    combiner = Combiner(src, dst, weight, np.arange(learners))
    params = torch.randn(learners, 9_000)  # about the size of the default actor-critic on Acrobot
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # as training runs it
    memory.keep_freed_memory()  # as training does: the [K, P] output reuses freed pages
    times = []
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            combiner.combine(params)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(saved_threads)
    return statistics.median(times)


@scenario("speed")
def speed(args: argparse.Namespace) -> list[Row]:
    """Populations of Acrobot learners on a ring against the Stable-Baselines3 A2C peer, measured in this invocation.

    Each set-up's figure is the median over --repeats runs; the peer runs between them, so a busy
    moment of a shared machine weighs on both sides of a ratio.
    """
    setups = parse_setups(args.setups)
    speeds: dict[Setup, list[float]] = {s: [] for s in setups}
    peak_mb: dict[Setup, float] = {}
    peer: list[float] = []
    with tempfile.TemporaryDirectory(prefix="diffdac-bench-") as tmp:
        for i in range(args.repeats):
            measured = sb3_peer_steps_per_s(args.peer_steps)
            if measured is not None:
                peer.append(measured)
            for setup in setups:
                value, rss = train_speed(setup, args.total_steps, Path(tmp) / f"{setup}-{i}")
                speeds[setup].append(value)
                peak_mb[setup] = max(peak_mb.get(setup, 0.0), rss)
    reference = statistics.median(peer) if peer else None
    rows: list[Row] = [
        {
            "scenario": "speed",
            "setup": PEER if peer else f"{PEER}: not installed (pip install diffdac[bench])",
            "steps_per_s": round(reference, 1) if reference else "",
            "ratio_to_peer": 1.0 if peer else "",
            "peak_rss_mb": "",
            "combine_ms": "",
        }
    ]
    for setup in setups:
        value = statistics.median(speeds[setup])
        rows.append(
            {
                "scenario": "speed",
                "setup": f"diffdac {setup} ring",
                "steps_per_s": round(value, 1),
                "ratio_to_peer": round(value / reference, 2) if reference else "",
                "peak_rss_mb": round(peak_mb[setup]),
                "combine_ms": round(1000 * combine_seconds(setup.learners, setup.threads), 3)
                if setup.sims == 1
                else "",
            }
        )
    return rows


COMPRESSORS = ("none", "top-k:0.1", "top-k:0.01", "random-k:0.1", "qsgd:4", "qsgd:8", "sign")  # choco's rows
BENCH_WIDTH = 9_000  # about the size of the default actor-critic on Acrobot


def choco_seconds(learners: int, spec: str, threads: int = 1, repeats: int = 30) -> tuple[float, int]:
    """Median time of one choco combine round (compress, decode every copy, gossip) on a ring, and its message's bytes."""
    from types import SimpleNamespace

    import networkx as nx
    import torch

    import topologies
    from diffdac.metrics import Metrics
    from diffdac.network.comm import LocalCommunicator
    from diffdac.network.methods.choco import ChocoGossip, ChocoOptions

    config = SimpleNamespace(num_learners=learners, weights="metropolis", seed=0, method="choco")
    reads = topologies.directed_edges(nx.cycle_graph(learners))
    ids = np.arange(learners)
    mixer = ChocoGossip(config, LocalCommunicator(), ids, torch.device("cpu"), reads, ChocoOptions(spec, 0.2))
    mixer.declare(Metrics(learners))
    params = torch.randn(learners, BENCH_WIDTH)
    mixer.start(params)
    alive = np.ones(learners, dtype=bool)
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    times = []
    try:
        for r in range(repeats):
            start = time.perf_counter()
            mixer.combine(r, alive, [params])
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(saved_threads)
    return statistics.median(times), mixer.compressor.row_bytes(BENCH_WIDTH, params.dtype)


def _combine_row(setup: Setup, method: str, compress: str, seconds: float, message_bytes: int) -> Row:
    edge_ends = 3 * setup.learners  # a ring: two neighbours and itself per learner
    return {
        "scenario": "combine",
        "method": method,
        "compress": compress,
        "learners": setup.learners,
        "threads": setup.threads,
        "combine_ms": round(1000 * seconds, 3),
        "ns_per_edge_end": round(1e9 * seconds / edge_ends),
        "message_bytes": message_bytes,
    }


@scenario("combine")
def combine(args: argparse.Namespace) -> list[Row]:
    """The combine step alone on rings of --setups learners: its time per edge shows it is linear in the edges.

    A row for diff-a2c's combine, then one per choco compressor (a whole round: compress each
    learner's difference, decode every public copy, gossip), with the bytes of one message.
    """
    rows: list[Row] = []
    for setup in parse_setups(args.setups):
        seconds = statistics.median(combine_seconds(setup.learners, setup.threads) for _ in range(args.repeats))
        rows.append(_combine_row(setup, "diff-a2c", "", seconds, 4 * BENCH_WIDTH))
        for spec in COMPRESSORS:
            timed = [choco_seconds(setup.learners, spec, setup.threads) for _ in range(args.repeats)]
            rows.append(_combine_row(setup, "choco", spec, statistics.median(t for t, _ in timed), timed[0][1]))
    return rows


def _block_sizes(num_learners: int, processes: int) -> str:
    """Learners per process as `K` or `K-K+1` (blocks differ by at most one)."""
    low, extra = divmod(num_learners, processes)
    return str(low) if extra == 0 else f"{low}-{low + 1}"


def format_table(rows: list[Row]) -> str:
    """Rows as an aligned text table, columns in the order of the first row."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [columns] + [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in cells)


def validate(args: argparse.Namespace) -> None:
    """Refuse bad counts before minutes of measuring start."""
    for name in ("num_learners", "envs_per_learner", "total_steps", "repeats", "sim_threads", "sim_processes"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    parse_setups(args.setups)
    if args.processes is not None and not all(p.strip().isdigit() for p in args.processes.split(",")):
        raise ConfigError(f"--processes takes a comma list of process counts like 1,2,4, got {args.processes!r}")


def run(args: argparse.Namespace) -> int:
    """`diffdac bench`: measure one scenario and print its rows (exit 1 if a measured run fails)."""
    validate(args)
    try:
        rows = SCENARIOS[args.scenario](args)
    except BenchError as err:
        print(f"diffdac: bench failed: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"scenario": args.scenario, "rows": rows}, indent=2) if args.json else format_table(rows))
    return 0
