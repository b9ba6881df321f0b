"""Ring against full graph (and isolated learners) on the multitask Acrobot, several seeds.

    python experiments/ring_vs_full.py                      # the paper's setting, 3 seeds, 2M steps
    python experiments/ring_vs_full.py --quick              # the same pipeline in a few minutes
    python experiments/ring_vs_full.py --launcher torchrun  # one process per learner, as the paper

Every (variant, seed) is one `diffdac train` run in RUNS_DIR/<variant>-s<seed>; a run that is
already complete with the same options is kept, so a second call only redraws. Then
`diffdac plot` draws the curves (seeds grouped, shaded standard error, disagreement panel) and
the script writes OUT_DIR/results.md: the table and the exact command that made it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from diffdac import __version__, cli, results
from diffdac.config import TrainConfig

PAPER = {"num_learners": 25, "envs_per_learner": 1, "steps_per_update": 5}
ENV = "diffdac/RandomExtremeAcrobot-v1"
DISPLAY = {"none": "isolated (none)", "method-centralized": "centralized A2C"}  # curve names where the variant's name alone would puzzle a reader


@dataclass(frozen=True)
class Job:
    """One training run: a variant (topology or method) at one seed."""

    name: str
    options: tuple[str, ...]
    expected: tuple[tuple[str, object], ...]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="150k steps, 2 seeds, into RUNS_DIR: checks the pipeline in a few minutes")
    parser.add_argument("--topologies", default="ring,full,none", help="comma list of graphs (none: isolated learners)")
    parser.add_argument("--methods", default="", help="comma list of --method values of diffdac train (e.g. centralized), once it has that option")
    parser.add_argument("--seeds", default=None, help="comma list of seeds (default 0,1,2; --quick 0,1)")
    parser.add_argument("--total-steps", type=int, default=None, help="env steps of each run, all learners (default 2M; --quick 150k)")
    parser.add_argument("--num-learners", type=int, default=PAPER["num_learners"])
    parser.add_argument("--envs-per-learner", type=int, default=PAPER["envs_per_learner"])
    parser.add_argument("--steps-per-update", type=int, default=PAPER["steps_per_update"])
    parser.add_argument("--launcher", choices=("single", "torchrun"), default="single", help="one process per run, or torchrun with --nproc-per-node ranks")
    parser.add_argument("--nproc-per-node", type=int, default=None, help="ranks per run under torchrun (default: one per learner)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/ring_vs_full"), help="where the run directories go")
    parser.add_argument("--out-dir", type=Path, default=None, help="figure, CSV and results.md (default experiments/results; --quick: RUNS_DIR)")
    parser.add_argument("--bin-steps", type=int, default=None, help="smoothing bins in env steps (default 20k; --quick 10k)")
    parser.add_argument("--threshold", type=float, default=-100.0, help="return whose first crossing the table reports")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in (args.seeds or ("0,1" if args.quick else "0,1,2")).split(",")]
    args.total_steps = args.total_steps or (150_000 if args.quick else 2_000_000)
    args.bin_steps = args.bin_steps or (10_000 if args.quick else 20_000)
    args.out_dir = args.out_dir or (args.runs_dir if args.quick else Path("experiments/results"))
    return args


def variants(args: argparse.Namespace) -> list[tuple[str, list[str], dict[str, object]]]:
    """(name, diffdac train options, config.json values they must produce) of each compared variant."""
    out = [(topo, ["--topology", topo], {"topology": topo}) for topo in _names(args.topologies)]
    methods = _names(args.methods)
    if methods and "method" not in {f for f in TrainConfig.__dataclass_fields__}:
        raise SystemExit(f"ring_vs_full: diffdac train has no --method option yet; drop --methods {args.methods}")
    out += [(f"method-{m}", ["--method", m], {"method": m}) for m in methods]
    return out


def jobs(args: argparse.Namespace) -> list[Job]:
    """Every (variant, seed) run with its full option list."""
    common = {"env": ENV, "num_learners": args.num_learners, "envs_per_learner": args.envs_per_learner,
              "steps_per_update": args.steps_per_update, "total_steps": args.total_steps}
    out = []
    for seed in args.seeds:  # seed outermost: if a sweep is cut short, every variant has the same seeds
        for name, options, expected in variants(args):
            values = {**common, **expected, "seed": seed}
            flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**common, "seed": seed}.items()]
            out.append(Job(f"{name}-s{seed}", (*flags, *options, "--threads=1", "--no-progress"), tuple(values.items())))
    return out


def is_complete(run_dir: Path, job: Job) -> bool:
    """A finished run of exactly this job: same options in config.json and a last progress row at the end."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
        last = (run_dir / "progress.csv").read_text().strip().splitlines()[-1]
    except (OSError, IndexError, json.JSONDecodeError):
        return False
    if any(config.get(k) != v for k, v in job.expected):
        return False
    per_update = config["num_learners"] * config["envs_per_learner"] * config["steps_per_update"]
    return last.split(",")[0].isdigit() and int(last.split(",")[0]) >= config["total_steps"] // per_update * per_update


def command(args: argparse.Namespace, job: Job, run_dir: Path) -> list[str]:
    """The command line of one run, plain or under torchrun (--standalone: each run its own port)."""
    train = ["-m", "diffdac", "train", *job.options, f"--log-dir={run_dir}", "--overwrite"]
    if args.launcher == "single":
        return [sys.executable, *train]
    ranks = args.nproc_per_node or args.num_learners
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", *train]


def run(args: argparse.Namespace, job: Job) -> str:
    """Train one job unless a complete run is there; its output goes to RUN_DIR.log."""
    run_dir = args.runs_dir / job.name
    if is_complete(run_dir, job):
        return f"{job.name}: complete, kept"
    start = time.perf_counter()
    with open(args.runs_dir / f"{job.name}.log", "w") as log:
        done = subprocess.run(command(args, job, run_dir), stdout=log, stderr=subprocess.STDOUT, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"{job.name} failed (exit {done.returncode}); see {args.runs_dir / job.name}.log")
    return f"{job.name}: trained in {time.perf_counter() - start:.0f}s"


def train_all(args: argparse.Namespace, todo: list[Job]) -> int:
    """Run the jobs, `--jobs` at a time, printing each as it ends; returns how many were trained."""
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    trained = 0
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for line in pool.map(lambda job: run(args, job), todo):
            print(line, flush=True)
            trained += "trained" in line
    return trained


def report(args: argparse.Namespace, todo: list[Job], trained: int, wall: float) -> None:
    """Figure and CSV through `diffdac plot`, then results.md with the table and the command."""
    args.out_dir.mkdir(parents=True, exist_ok=True)
    run_dirs = [args.runs_dir / job.name for job in todo]
    figure, table_csv = args.out_dir / "ring_vs_full.png", args.out_dir / "ring_vs_full.csv"
    labels = [option for name, _, _ in variants(args) for option in ("--label", DISPLAY.get(name, name.removeprefix("method-")))]
    title = f"{ENV}: {args.num_learners} learners x {args.envs_per_learner} sim, {args.steps_per_update} steps/update"
    status = cli.main(["plot", *map(str, run_dirs), "--out", str(figure), "--csv", str(table_csv), "--disagreement",
                       "--bin-steps", str(args.bin_steps), "--threshold", str(args.threshold), "--title", title, *labels])
    if status != 0:
        raise SystemExit(status)
    text = results_markdown(args, pd.read_csv(table_csv), run_seconds(run_dirs), trained, wall)
    (args.out_dir / "results.md").write_text(text)
    print(f"ring_vs_full: wrote {figure}, {table_csv} and {args.out_dir / 'results.md'}")


def run_seconds(run_dirs: list[Path]) -> pd.Series:
    """Seconds of each run's training loop: the `time` of its last progress.csv row."""
    return pd.Series({d.name: results.read_progress(d)["time"].max() for d in run_dirs}, dtype=float)


def results_markdown(args: argparse.Namespace, table: pd.DataFrame, seconds: pd.Series, trained: int, wall: float) -> str:
    """results.md: what was run, the exact command, how long it took, the table."""
    cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    return "\n".join([
        "# Ring vs full graph (and isolated learners) on the multitask Acrobot",
        "",
        (f"`{ENV}`, {args.num_learners} learners x {args.envs_per_learner} simulator, {args.steps_per_update} steps per update, "
         f"{args.total_steps:,} env steps per run, seeds {', '.join(map(str, args.seeds))}, launcher {args.launcher}, "
         f"diffdac {__version__}; curves binned every {args.bin_steps:,} env steps. Made with"),
        "",
        "```bash",
        cmd,
        "```",
        "",
        (f"on a shared {os.cpu_count()}-core {platform.machine()} machine, {args.jobs} runs at a time: each run's training loop "
         f"took {seconds.min():.0f}-{seconds.max():.0f} s (progress.csv); this invocation trained {trained} of the "
         f"{len(seconds)} runs and took {wall / 60:.1f} min (complete runs of the same options are kept, not retrained)."),
        "",
        results.markdown(table),
        "",
        results.COLUMNS_DOC,
        "",
        "![ring vs full](ring_vs_full.png)",
        "",
    ])


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    todo = jobs(args)
    trained = train_all(args, todo)
    report(args, todo, trained, time.perf_counter() - start)


if __name__ == "__main__":
    main()
