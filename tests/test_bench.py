"""`diffdac bench`: the scenario registry, the processes and mujoco scenarios' arithmetic, and real launches."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest

from diffdac.tools import bench
from diffdac.cli import build_parser, main


def _args(*argv: str):
    return build_parser().parse_args(["bench", *argv])


def test_the_processes_scenario_is_registered_and_the_default():
    assert "processes" in bench.SCENARIOS and _args().scenario == "processes"


@pytest.mark.parametrize(
    "argv,counts", [((), [1, 2, 4]), (("--num-learners", "1"), [1]), (("--processes", "3,8"), [1, 3])]
)
def test_process_counts_always_start_at_one_and_never_exceed_the_learners(argv, counts):
    assert bench.process_counts(_args(*argv)) == counts


def test_rows_hold_the_median_and_the_ratio_to_one_process(monkeypatch):
    speeds = {1: [100.0, 300.0, 200.0], 2: [390.0, 410.0, 400.0], 4: [50.0, 60.0, 40.0]}
    monkeypatch.setattr(bench, "launch_training", lambda p, options: (speeds[p].pop(), 1.5))
    rows = bench.SCENARIOS["processes"](_args("--num-learners", "4", "--repeats", "3"))
    assert [(r["processes"], r["learners_per_process"], r["steps_per_s"], r["ratio_to_1"]) for r in rows] == [
        (1, "4", 200.0, 1.0),
        (2, "2", 400.0, 2.0),
        (4, "1", 50.0, 0.25),
    ]
    table = bench.format_table(rows).splitlines()
    assert table[0].split() == list(rows[0]) and len(table) == 4 and len({len(line) for line in table}) == 1


def test_a_failed_measured_run_is_one_line_and_exit_1(monkeypatch, capsys):
    def fail(p, options):
        raise bench.BenchError("the run at 2 processes failed (exit 1): boom")

    monkeypatch.setattr(bench, "launch_training", fail)
    assert main(["bench", "--repeats", "1"]) == 1
    assert capsys.readouterr().err.strip() == "diffdac: bench failed: the run at 2 processes failed (exit 1): boom"


@pytest.mark.parametrize("argv", [("--repeats", "0"), ("--processes", "1,two")])
def test_bad_options_exit_2(argv, capsys):
    assert main(["bench", *argv]) == 2
    assert capsys.readouterr().err.startswith("diffdac: error: --")


def test_bench_measures_real_runs_at_one_and_two_processes(capsys):
    argv = [
        "bench",
        "--num-learners",
        "2",
        "--envs-per-learner",
        "2",
        "--total-steps",
        "2000",
        "--repeats",
        "1",
        "--json",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scenario"] == "processes" and [r["processes"] for r in report["rows"]] == [1, 2]
    assert (
        all(r["steps_per_s"] > 0 and r["wall_s"] > 0 for r in report["rows"]) and report["rows"][0]["ratio_to_1"] == 1.0
    )


def test_the_mujoco_scenario_puts_every_setup_against_the_stock_robot_alone(monkeypatch):
    monkeypatch.setattr(bench, "stock_env_steps_per_s", lambda env_id, steps, seed: {0: 100.0, 1: 300.0}[seed])
    batch = {"Hopper-v5": 250.0, "diffdac/RandomMassHopper-v5": 150.0}
    monkeypatch.setattr(
        bench,
        "task_batch_steps_per_s",
        lambda env_id, learners, sims, steps, seed, threads=1, processes=1: batch[env_id] + seed,
    )
    monkeypatch.setattr(bench, "launch_training", lambda p, options: (50.0, 2.0))
    rows = bench.SCENARIOS["mujoco"](
        _args("--scenario", "mujoco", "--repeats", "2", "--sim-threads", "1", "--sim-processes", "1")
    )
    assert [(r["setup"], r["learners_x_sims"], r["steps_per_s"], r["ratio_to_stock"]) for r in rows] == [
        ("Hopper-v5 alone", "1", 200.0, 1.0),
        ("Hopper-v5 task batch", "4x4", 250.5, 1.252),
        ("diffdac/RandomMassHopper-v5 task batch", "4x4", 150.5, 0.752),
        ("diffdac train on diffdac/RandomMassHopper-v5", "4x4", 50.0, 0.25),
    ]


def test_the_mujoco_scenario_refuses_an_id_that_is_not_a_mujoco_variant(capsys):
    assert main(["bench", "--scenario", "mujoco", "--env", "CartPole-v1"]) == 2
    assert capsys.readouterr().err.startswith(
        "diffdac: error: --scenario mujoco: 'CartPole-v1' is not a MuJoCo task variant"
    )


def test_the_mujoco_scenario_measures_real_stepping_and_training(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [
        "bench",
        "--scenario",
        "mujoco",
        "--num-learners",
        "2",
        "--envs-per-learner",
        "2",
        "--total-steps",
        "400",
        "--repeats",
        "1",
        "--json",
    ]
    assert main([*argv, "--sim-threads", "1", "--sim-processes", "1"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["learners_x_sims"] for r in rows] == ["1", "2x2", "2x2", "2x2"] and rows[0]["ratio_to_stock"] == 1.0
    assert all(r["steps_per_s"] > 0 for r in rows)
    assert main(argv) == 0  # by default also on 2 simulator threads and on 2 processes, against one core
    parallel = json.loads(capsys.readouterr().out)["rows"][4:]
    assert [r["setup"].rsplit(", ", 1)[1] for r in parallel] == ["2 sim threads"] * 2 + ["2 sim processes"] * 2
    assert all(r["steps_per_s"] > 0 and r["ratio_to_1_core"] > 0 for r in parallel)
    assert parallel[1]["ratio_to_batch"] > 0 and parallel[3]["ratio_to_batch"] > 0


def test_random_actions_lie_inside_the_box():
    space = gymnasium.spaces.Box(-0.4, 0.4, shape=(3,))
    actions = bench.random_actions(space, (50, 2), seed=0)
    assert actions.shape == (50, 2, 3) and actions.dtype == np.float32 and np.abs(actions).max() <= 0.4


@pytest.mark.parametrize("text", ["25", "25x0", "ax1", "", "2x2x2", "4x1@0", "4x1@", "4x1@two"])
def test_bad_setups_are_refused(text):
    with pytest.raises(ValueError, match="--setups"):
        bench.parse_setups(text)


def test_setups_take_an_optional_thread_count():
    assert bench.parse_setups("25x16, 1024x1@2") == [bench.Setup(25, 16, 1), bench.Setup(1024, 1, 2)]
    assert [str(s) for s in bench.parse_setups(bench.DEFAULT_SETUPS)] == bench.DEFAULT_SETUPS.split(",")


def test_the_speed_scenario_measures_real_runs_against_the_peer(capsys, monkeypatch):
    peer_calls = []
    monkeypatch.setattr(bench, "sb3_peer_steps_per_s", lambda steps: peer_calls.append(steps) or 1000.0)
    assert (
        main(
            [
                "bench",
                "--scenario",
                "speed",
                "--setups",
                "2x2,3x1@2",
                "--total-steps",
                "2000",
                "--repeats",
                "1",
                "--json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert peer_calls == [100_000] and rows[0]["steps_per_s"] == 1000.0
    assert [r["setup"] for r in rows[1:]] == ["diffdac 2x2 ring", "diffdac 3x1@2 ring"]
    for row in rows[1:]:
        assert row["steps_per_s"] > 0 and row["ratio_to_peer"] == round(row["steps_per_s"] / 1000.0, 2)
        assert 50 < row["peak_rss_mb"] < 4000
    assert (
        rows[1]["combine_ms"] == "" and rows[2]["combine_ms"] > 0
    )  # the combine step is timed for 1-simulator set-ups


def test_without_stable_baselines3_the_peer_row_says_how_to_get_it(capsys, monkeypatch):
    monkeypatch.setattr(bench, "sb3_peer_steps_per_s", lambda steps: None)
    monkeypatch.setattr(bench, "train_speed", lambda *a: (5000.0, 300.0))
    assert main(["bench", "--scenario", "speed", "--setups", "2x1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "not installed (pip install diffdac[bench])" in out and "5000.0" in out


def test_the_combine_scenario_times_one_combine_per_ring_size(capsys):
    assert main(["bench", "--scenario", "combine", "--setups", "8x1,32x1@2", "--repeats", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    diffusion = [r for r in rows if r["method"] == "diff-a2c"]
    assert [(r["learners"], r["threads"]) for r in diffusion] == [(8, 1), (32, 2)]
    assert all(r["combine_ms"] > 0 and r["ns_per_edge_end"] > 0 for r in rows)
    choco = [(r["learners"], r["compress"]) for r in rows if r["method"] == "choco"]
    assert choco == [(n, spec) for n in (8, 32) for spec in bench.COMPRESSORS]  # a row per compressor
    sizes = {r["compress"]: r["message_bytes"] for r in rows if r["learners"] == 8}
    assert sizes["top-k:0.01"] < sizes["top-k:0.1"] < sizes["none"] == sizes[""] == 4 * bench.BENCH_WIDTH
