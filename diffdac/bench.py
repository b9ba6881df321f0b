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
from pathlib import Path
from typing import Any, Callable

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
    parser.add_argument("--processes", default=None, help="comma list of process counts (default: 1, 2 and the number of learners)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per set-up; the table shows the median")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")


def train_args(args: argparse.Namespace, run_dir: Path) -> list[str]:
    """`diffdac train` options of one measured run: the same run whatever the process count."""
    options = [
        "--num-learners", str(args.num_learners), "--envs-per-learner", str(args.envs_per_learner),
        "--total-steps", str(args.total_steps), "--log-interval", str(args.total_steps), "--topology", args.topology,
        "--log-dir", str(run_dir), "--no-progress",
    ]
    return options + (["--env", args.env] if args.env else [])


def launch_training(processes: int, options: list[str]) -> tuple[float, float]:
    """(env steps/s of the training loop, wall seconds of the whole launch) of one run at `processes` ranks.

    One process runs plainly (a world of one, as a user would); more go through torchrun
    --standalone, which picks its own free port. Steps/s comes from progress.csv, so it leaves out
    start-up; the wall time includes it, which is the other half of what processes cost.
    """
    command = [sys.executable, "-m", "diffdac", "train", *options]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes), *command[1:]]
    start = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"the run at {processes} processes failed (exit {done.returncode}): {(done.stdout + done.stderr)[-1500:]}")
    run_dir = Path(options[options.index("--log-dir") + 1])
    last = (run_dir / "progress.csv").read_text().strip().splitlines()
    header, values = last[0].split(","), last[-1].split(",")
    return float(values[header.index("steps_per_s")]), wall


def process_counts(args: argparse.Namespace) -> list[int]:
    """The process counts to compare, always with 1 (the reference) and never more than the learners."""
    wanted = {1, 2, args.num_learners} if args.processes is None else {int(p) for p in args.processes.split(",") if p.strip()} | {1}
    return sorted(p for p in wanted if 1 <= p <= args.num_learners)


@scenario("processes")
def processes(args: argparse.Namespace) -> list[Row]:
    """The same run at P = 1, 2 and N processes: what splitting learners over processes costs or gains."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="diffdac-bench-") as tmp:
        for p in process_counts(args):
            runs = [launch_training(p, train_args(args, Path(tmp) / f"p{p}-{i}")) for i in range(args.repeats)]
            speed = statistics.median(r[0] for r in runs)
            rows.append({
                "scenario": "processes", "processes": p, "learners_per_process": _block_sizes(args.num_learners, p),
                "steps_per_s": round(speed, 1), "ratio_to_1": round(speed / (rows[0]["steps_per_s"] if rows else speed), 3),
                "wall_s": round(statistics.median(r[1] for r in runs), 2),
            })
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
    for name in ("num_learners", "envs_per_learner", "total_steps", "repeats"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
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
