"""Learning curves of finished runs from their Monitor files (pandas + matplotlib).

    python experiments/learning_curve.py RUN_DIR [RUN_DIR ...] --out curve.png

An episode is placed at the run's total env steps when it ended: its simulator's own step count
times the number of simulators, since all simulators of a run step in lockstep.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def episodes(run_dir: Path) -> pd.DataFrame:
    """Every finished episode of a run with the total env steps at which it ended."""
    files = sorted((run_dir / "monitor").glob("*.monitor.csv"))
    frames = [pd.read_csv(p, skiprows=1).assign(sim_steps=lambda f: f["l"].cumsum()) for p in files]
    table = pd.concat(frames, ignore_index=True)
    table["steps"] = table["sim_steps"] * len(files)
    return table.sort_values("steps")


def label(run_dir: Path) -> str:
    config = json.loads((run_dir / "config.json").read_text())
    graph = config["topology"] or "adjacency"
    return f"{graph}, {config['num_learners']} learners x {config['envs_per_learner']} sims"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bin-steps", type=int, default=20_000)
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for run_dir in args.runs:
        table = episodes(run_dir)
        binned = table.groupby(table["steps"] // args.bin_steps * args.bin_steps)["r"].mean().iloc[:-1]  # last bin: partial
        ax.plot(binned.index, binned.values, label=label(run_dir))
    ax.set_xlabel("env steps, all learners")
    ax.set_ylabel("episode return")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)


if __name__ == "__main__":
    main()
