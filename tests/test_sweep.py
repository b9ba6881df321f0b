"""experiments/sweep.py: the grid it plans, which runs it keeps, resumes or starts, and a tiny sweep end to end."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import experiment_scripts
from diffdac.cli import main as diffdac_main

TINY = """
name = "tiny"
[train]
env = "CartPole-v1"
num_learners = 2
envs_per_learner = 1
hidden = 8
log_interval = 200
save_every = 200
[sweep]
lrs = [1e-3, 1e-2]
seeds = [0]
total_steps = 600
final_window = 300
[best]
seeds = [5, 6]
reference = "central"
total_steps = 400
final_window = 200
[variants.ring]
topology = "ring"
[variants.central]
method = "centralized"
"""


@pytest.fixture(scope="module")
def sweep():
    return experiment_scripts.load("sweep")


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_the_grid_puts_seeds_outermost_and_every_option_on_the_command_line(sweep, tiny):
    spec = sweep.Sweep.read(tiny)
    todo = sweep.jobs(spec, "sweep", sweep.stage_settings(spec, "sweep", False), {}, None)
    assert [j.name for j in todo] == ["ring-lr0.001-s0", "ring-lr0.01-s0", "central-lr0.001-s0", "central-lr0.01-s0"]
    assert {"--num-learners=2", "--topology=ring", "--lr=0.001", "--seed=0", "--total-steps=600"} <= set(todo[0].flags)
    best = sweep.jobs(
        spec, "best", sweep.stage_settings(spec, "best", False), {"ring": 0.01, "central": 0.001}, ["ring"]
    )
    assert [j.name for j in best] == ["ring-lr0.01-s5", "ring-lr0.01-s6"]
    assert sweep.flags({"separate_init": False, "normalize": ["obs", "reward"]}) == [
        "--no-separate-init",
        "--normalize=obs,reward",
    ]


def test_a_run_is_kept_only_when_complete_with_the_same_options_and_resumed_when_cut_short(sweep, tiny, tmp_path):
    spec = sweep.Sweep.read(tiny)
    job = sweep.jobs(spec, "sweep", sweep.stage_settings(spec, "sweep", False), {}, None)[0]
    run_dir = tmp_path / "run"
    assert sweep.state(run_dir, job) == "new"
    assert diffdac_main(["train", *job.flags, "--log-dir", str(run_dir)]) == 0
    assert sweep.state(run_dir, job) == "complete"
    other = sweep.jobs(spec, "sweep", sweep.stage_settings(spec, "sweep", False), {}, None)[1]  # another lr
    assert sweep.state(run_dir, other) == "new"
    (run_dir / "checkpoints" / "step000000000600.json").unlink()
    assert sweep.state(run_dir, job) == "partial"
    assert sweep.command(job, run_dir, "partial")[-1] == "--resume"


def test_best_rates_take_the_highest_mean_over_seeds(sweep):
    table = pd.DataFrame(
        {
            "variant": ["a"] * 4 + ["b"] * 2,
            "lr": [1, 1, 2, 2, 1, 2],
            "seed": [0, 1] * 3,
            "score": [-10.0, -30.0, -15.0, -16.0, -5.0, -50.0],
            "run": [""] * 6,
        }
    )
    best = sweep.best_rates(sweep.by_rate(table)).set_index("variant")
    assert best.loc["a", "lr"] == 2 and best.loc["a", "mean"] == -15.5 and best.loc["b", "lr"] == 1


def test_a_tiny_sweep_runs_end_to_end_and_keeps_its_runs(sweep, tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [str(tiny), "--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out")]
    sweep.main(args)
    out = tmp_path / "out" / "tiny"
    assert {"sweep.csv", "sweep-summary.csv", "sweep.png", "results.md"} <= {p.name for p in out.iterdir()}
    assert len(pd.read_csv(out / "sweep.csv")) == 4
    capsys.readouterr()
    sweep.main(args)  # called again, it keeps every complete run
    assert capsys.readouterr().out.count("complete, kept") == 4
    sweep.main([*args, "--stage", "best"])
    best = pd.read_csv(out / "best.csv")
    assert sorted(best["seed"].unique()) == [5, 6] and len(best) == 4
    paired = pd.read_csv(out / "best-paired.csv")
    scores = best.pivot(index="seed", columns="variant", values="score")
    assert paired["variant"].tolist() == ["ring"] and paired["mean_difference"][0] == pytest.approx(
        (scores["ring"] - scores["central"]).mean()
    )
    results = (out / "results.md").read_text()
    assert "Each method at its best learning rate" in results
    made_by = f"Made by `python experiments/sweep.py {' '.join(args)}` (and the same with `--stage best`)"
    assert made_by in results  # the command that trains, not the stage or redraw that wrote the file last


def test_results_name_the_best_stage_only_for_a_sweep_that_has_one(sweep, tiny, tmp_path):
    no_best = tmp_path / "no-best.toml"
    no_best.write_text(TINY.split("[best]")[0] + TINY.split("total_steps = 400\nfinal_window = 200\n")[1])
    out = tmp_path / "out"
    out.mkdir()
    sweep.write_results(sweep.Sweep.read(no_best), out, [str(no_best), "--report-only"])
    assert (
        (out / "results.md").read_text().splitlines()[2].startswith(f"Made by `python experiments/sweep.py {no_best}`,")
    )
