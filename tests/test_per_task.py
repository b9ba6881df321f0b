"""experiments/per_task.py on a tiny RandomMassHopper run: own-task and network-average scores, light against heavy."""

from __future__ import annotations

import pandas as pd

import experiment_scripts
from diffdac.cli import main


def test_per_task_scores_split_tasks_by_mass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo may write MUJOCO_LOG.TXT
    run_dir = tmp_path / "ring-lr0.001-s0"
    assert (
        main(
            [
                "train",
                "--env",
                "diffdac/RandomMassHopper-v5",
                "--num-learners",
                "4",
                "--envs-per-learner",
                "1",
                "--hidden",
                "8",
                "--total-steps",
                "400",
                "--log-dir",
                str(run_dir),
                "--no-progress",
            ]
        )
        == 0
    )
    experiment_scripts.load("per_task").main([str(run_dir), "--episodes", "1", "--out", str(tmp_path / "out")])
    table = pd.read_csv(tmp_path / "out" / "per-task.csv")
    masses = pd.read_csv(run_dir / "tasks.csv")["mass"]
    assert set(table["policy"]) == {"own", "average"} and set(table["method"]) == {"ring"}
    counts = table[table["policy"] == "own"].set_index("kind")["tasks"].to_dict()
    assert counts == {
        kind: n for kind, n in {"light": int((masses < 1).sum()), "heavy": int((masses > 1).sum())}.items() if n
    }
    assert (run_dir / "eval-train.csv").is_file()
    assert "| ring | own |" in (tmp_path / "out" / "per-task.md").read_text()
    average = pd.read_csv(run_dir / "eval-train.csv").query("policy == 'average'")
    average = average.merge(pd.read_csv(run_dir / "tasks.csv"), left_on="task", right_on="learner")
    average["kind"] = average["mass"].map(lambda m: "light" if m < 1 else "heavy")
    for kind, rows in average.groupby("kind"):  # mean episode length per task, then over the tasks of a kind
        got = table.query("policy == 'average' and kind == @kind")["length"].iloc[0]
        assert got == rows.groupby("task")["episode_length"].mean().mean()
