"""Score runs per task with `diffdac eval`: each learner's own policy on its own task, and the network-average policy.

    python experiments/per_task.py runs/sweeps/hopper-original/sweep/*-lr0.0007-s* --out experiments/results/hopper-original

For every run, `diffdac eval RUN --episodes N` plays each learner's policy and the network
average on every training task (greedy, the same initial states for every policy) and writes
RUN/eval-train.csv. Tasks are then split by their mass factor in tasks.csv into light (< 1) and
heavy (> 1) ones, and per method (the run name before `-lr`) the table gives, averaged over
tasks of each kind and then over seeds (± standard error):

- `own`: learner k's policy on learner k's task, what each learner achieved where it trained;
- `average`: the network-average policy on every task, the one common policy diffusion aims at
  (meaningless for isolated learners, whose parameters were never averaged).

Each cell also gives the mean episode length, since a return can be earned by surviving as well
as by moving: a MuJoCo Hopper earns 1 per step alive, so its return minus its length is about
the distance it hopped, and a policy that stands still for 1,000 steps scores about 1,000.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from diffdac import cli

EVAL_NAME = "eval-train.csv"


def evaluate(run_dir: Path, episodes: int) -> pd.DataFrame:
    """eval-train.csv of a run (made once), joined with the run's task parameters."""
    out = run_dir / EVAL_NAME
    if not out.is_file():
        status = cli.main(["eval", str(run_dir), "--episodes", str(episodes), "--out", str(out)])
        if status != 0:
            raise SystemExit(f"per_task: diffdac eval {run_dir} failed with exit status {status}")
    rows = pd.read_csv(out)
    tasks = pd.read_csv(run_dir / "tasks.csv").rename(columns={"learner": "task"})
    return rows.drop(columns=[c for c in tasks.columns if c != "task" and c in rows.columns]).merge(tasks, on="task")


def per_run(run_dir: Path, episodes: int, key: str) -> pd.DataFrame:
    """One row per (kind of task, policy): mean return over tasks of that kind, for one run."""
    rows = evaluate(run_dir, episodes)
    rows["kind"] = rows[key].map(lambda v: "light" if v < 1 else "heavy")
    rows["learner"] = rows["policy"].str.removeprefix("learner ").where(rows["policy"] != "average")
    own = rows[rows["learner"].notna() & (rows["learner"].astype(float) == rows["task"])].assign(policy="own")
    average = rows[rows["policy"] == "average"]
    per_task = pd.concat([own, average]).groupby(["policy", "kind", "task"])[["return", "episode_length"]].mean()
    table = (
        per_task.reset_index()
        .groupby(["policy", "kind"])
        .agg(mean=("return", "mean"), length=("episode_length", "mean"), tasks=("return", "size"))
        .reset_index()
    )
    return table.assign(method=run_dir.name.split("-lr")[0], run=str(run_dir))


def markdown(summary: pd.DataFrame) -> str:
    lines = [
        "| method | policy | light tasks: return (length) | heavy tasks: return (length) | seeds |",
        "|---|---|---|---|---|",
    ]
    for (method, policy), rows in summary.groupby(["method", "policy"], sort=False):
        cells = {
            r.kind: (f"{r.mean:.0f} ± {r.se:.0f}" if pd.notna(r.se) else f"{r.mean:.0f}") + f" ({r.length:.0f})"
            for r in rows.itertuples()
        }
        lines.append(
            f"| {method} | {policy} | {cells.get('light', '-')} | {cells.get('heavy', '-')} | {int(rows['seeds'].max())} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories; the method is the name before -lr")
    parser.add_argument("--episodes", type=int, default=5, help="episodes per policy and task (default 5)")
    parser.add_argument(
        "--key", default="mass", help="task parameter that splits light (< 1) from heavy (> 1) tasks (default mass)"
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for per-task.csv and per-task.md")
    args = parser.parse_args(argv)
    table = pd.concat([per_run(run, args.episodes, args.key) for run in args.runs], ignore_index=True)
    summary = (
        table.groupby(["method", "policy", "kind"], sort=False)
        .agg(mean=("mean", "mean"), se=("mean", "sem"), length=("length", "mean"), seeds=("mean", "size"))
        .reset_index()
    )
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "per-task.csv", index=False)
    text = markdown(summary)
    (args.out / "per-task.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
