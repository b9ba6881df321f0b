"""diffdac.tools.results on small synthetic run directories whose numbers are worked out by hand.

Every run below has 2 learners x 1 simulator, so an episode ending at a simulator's cumulative
length L lies at 2 * L total env steps; bins are 100 env steps wide.
"""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from diffdac.tools import results

W = 100
# (learner, sim) -> [(return, length), ...]
RING_S0 = {(0, 0): [(-300, 40), (-200, 30), (-90, 20)], (1, 0): [(-250, 45), (-80, 45)]}  # steps 80,140,180 and 90,180
RING_S1 = {(0, 0): [(-100, 50), (-60, 50)], (1, 0): [(-200, 100)]}  # steps 100,200 and 200
FULL_S0 = {(0, 0): [(-50, 100)], (1, 0): [(-150, 50)]}  # steps 200 and 100


def write_run(
    path: Path, episodes: dict, seed: int = 0, progress_steps: int | None = 200, tail: str = "", **config
) -> Path:
    """A run directory as diffdac train writes it; `tail` is appended unterminated to learner 0's Monitor file."""
    (path / "monitor").mkdir(parents=True)
    values = {
        "env": "diffdac/RandomExtremeAcrobot-v1",
        "num_learners": 2,
        "envs_per_learner": 1,
        "topology": "ring",
        "seed": seed,
        "log_dir": str(path),
        "version": "0.1.0",
        "world_size": 1,
        **config,
    }
    (path / "config.json").write_text(json.dumps(values))
    for (learner, sim), rows in episodes.items():
        lines = ['#{"t_start": 1700000000.0, "env_id": "diffdac/RandomExtremeAcrobot-v1", "mass": 0.6}', "r,l,t"]
        lines += [f"{r},{l},{i + 1.5}" for i, (r, l) in enumerate(rows)]
        text = "\n".join(lines) + "\n" + (tail if learner == 0 else "")
        (path / "monitor" / f"learner{learner:03d}.sim{sim:02d}.monitor.csv").write_text(text)
    if progress_steps is not None:
        rows = [
            {
                "steps": s,
                "time": s / 100,
                "mean_return": -100.0,
                "disagreement": 0.5 if values["topology"] == "ring" else 0.0,
            }
            for s in range(W, progress_steps + 1, W)
        ]
        pd.DataFrame(rows).to_csv(path / "progress.csv", index=False)
    return path


@pytest.fixture
def three_runs(tmp_path):
    return [
        write_run(tmp_path / "ring0", RING_S0, seed=0),
        write_run(tmp_path / "full0", FULL_S0, seed=0, topology="full"),
        write_run(tmp_path / "ring1", RING_S1, seed=1),
    ]


def test_episodes_lie_at_the_total_env_steps_of_the_run_when_they_ended(tmp_path):
    run = results.load_run(write_run(tmp_path / "r", RING_S0))
    ends = run.episodes.groupby("learner")["steps"].apply(list).to_dict()
    assert ends == {0: [80, 140, 180], 1: [90, 180]}
    assert run.extent == 200


def test_simulators_multiply_the_time_line(tmp_path):
    run = results.load_run(
        write_run(tmp_path / "r", {(0, 0): [(-1, 10)], (0, 1): [(-2, 10)]}, num_learners=1, envs_per_learner=2)
    )
    assert run.episodes["steps"].tolist() == [20, 20]


def test_bins_are_means_over_all_learners_of_the_episodes_that_ended_in_them(tmp_path):
    bins = results.run_bins(results.load_run(write_run(tmp_path / "r", RING_S0)), W, weighting="episode")
    assert bins["bin"].tolist() == [100, 200]
    assert bins["r"].tolist() == pytest.approx([(-300 - 250) / 2, (-200 - 90 - 80) / 3])
    assert bins["episodes"].tolist() == [2, 3]


def test_task_weighted_bins_count_every_learner_once(tmp_path):
    bins = results.run_bins(results.load_run(write_run(tmp_path / "r", RING_S0)), W)
    # bin 200: learner 0 finished -200 and -90 (mean -145), learner 1 finished -80
    assert bins["r"].tolist() == pytest.approx([(-300 - 250) / 2, (-145 - 80) / 2])
    assert bins["episodes"].tolist() == [2, 3]
    with pytest.raises(results.RunError, match="unknown weighting"):
        results.run_bins(results.load_run(tmp_path / "r"), W, weighting="seed")


def test_the_summary_gives_a_bootstrap_interval_over_seeds(tmp_path):
    runs = [
        write_run(tmp_path / f"s{s}", {(0, 0): [(r, 50)], (1, 0): [(r, 50)]}, seed=s, progress_steps=100)
        for s, r in enumerate([-10, -20, -60])
    ]
    row = results.summary(results.load_runs(runs), W).iloc[0]
    assert -60 <= row["final_ci_low"] < row["final"] < row["final_ci_high"] <= -10
    again = results.summary(results.load_runs(runs), W).iloc[0]
    assert (row["final_ci_low"], row["final_ci_high"]) == (again["final_ci_low"], again["final_ci_high"])
    assert "final 95% CI" in results.markdown(results.summary(results.load_runs(runs), W))
    one = results.summary(results.load_runs(runs[:1]), W).iloc[0]
    assert pd.isna(one["final_ci_low"])


def test_runs_that_differ_only_in_seed_form_one_curve_with_mean_and_standard_error(three_runs):
    table = results.curves(results.load_runs(three_runs), W, weighting="episode")
    ring = table[table["curve"] == "ring"].set_index("bin")
    a, b = [-275.0, -370 / 3], [-100.0, -130.0]  # ring seed 0 and seed 1, bins 100 and 200
    assert ring["mean"].tolist() == pytest.approx([(a[0] + b[0]) / 2, (a[1] + b[1]) / 2])
    assert ring["se"].tolist() == pytest.approx([abs(a[0] - b[0]) / 2, abs(a[1] - b[1]) / 2])  # s.d. (ddof 1) / sqrt(2)
    assert ring["n"].tolist() == [2, 2]
    full = table[table["curve"] == "full"]
    assert full["mean"].tolist() == [-150.0, -50.0] and full["se"].isna().all()
    assert list(table["curve"].cat.categories) == ["ring", "full"]  # order of first appearance


def test_standard_error_of_three_seeds(tmp_path):
    runs = [
        write_run(tmp_path / f"s{s}", {(0, 0): [(r, 50)], (1, 0): [(r, 50)]}, seed=s, progress_steps=100)
        for s, r in enumerate([-10, -20, -60])
    ]
    row = results.curves(results.load_runs(runs), W).iloc[0]
    assert row["mean"] == pytest.approx(-30.0)
    assert row["se"] == pytest.approx(math.sqrt(((20**2 + 10**2 + 30**2) / 2) / 3))


def test_labels_name_what_differs_and_can_be_given(tmp_path):
    runs = results.load_runs(
        [
            write_run(tmp_path / "a", RING_S0, lr=0.001),
            write_run(tmp_path / "b", RING_S0, topology="full", lr=0.001),
            write_run(tmp_path / "c", RING_S0, lr=0.01),
            write_run(tmp_path / "d", RING_S0, seed=3, lr=0.01, log_interval=7),
        ]
    )
    assert results.curve_labels(runs) == ["ring, lr=0.001", "full, lr=0.001", "ring, lr=0.01", "ring, lr=0.01"]
    assert results.curve_labels(runs, ["A", "B", "C"]) == ["A", "B", "C", "C"]
    with pytest.raises(results.RunError, match="3 curves"):
        results.curve_labels(runs, ["A", "B"])


def test_one_curve_is_named_by_its_graph_and_size(tmp_path):
    runs = results.load_runs([write_run(tmp_path / "a", RING_S0), write_run(tmp_path / "b", RING_S1, seed=1)])
    assert set(results.curve_labels(runs)) == {"ring, 2 learners x 1 sims"}


def test_summary_final_return_return_at_steps_and_steps_to_threshold(three_runs):
    table = results.summary(
        results.load_runs(three_runs), W, threshold=-130, at=[50, 100], weighting="episode"
    ).set_index("curve")
    ring, full = table.loc["ring"], table.loc["full"]
    assert (ring["seeds"], ring["steps"]) == (2, 200)
    assert ring["final"] == pytest.approx((-370 / 3 - 130) / 2) and ring["final_se"] == pytest.approx(
        (130 - 370 / 3) / 2
    )
    assert ring["return@100"] == pytest.approx(-187.5) and ring["return@100_se"] == pytest.approx(87.5)
    assert ring["return@50"] == ring["return@100"]  # step 50 lies in the bin (0, 100]
    # seed 0 first reaches -130 in bin 200 (-123.3), seed 1 in bin 100 (-100): 150 ± 50
    assert (
        ring["steps_to_-130"] == pytest.approx(150)
        and ring["steps_to_-130_se"] == pytest.approx(50)
        and ring["reached"] == "2/2"
    )
    assert full["final"] == -50 and full["steps_to_-130"] == 200 and full["reached"] == "1/1"


def test_steps_to_threshold_is_missing_when_a_seed_never_reaches_it(three_runs):
    table = results.summary(results.load_runs(three_runs), W, threshold=-100).set_index("curve")
    assert pd.isna(table.loc["ring", "steps_to_-100"]) and table.loc["ring", "reached"] == "1/2"
    assert "1/2" in results.markdown(table.reset_index())


def test_an_unfinished_last_episode_counts_neither_its_half_row_nor_its_partial_bin(tmp_path):
    # learner 0 is writing an episode of length 37: the row is cut after "3"; read, it would add (-10, 3) at steps 186
    finished = results.load_run(write_run(tmp_path / "done", RING_S0, tail="-10.0,3"))
    assert len(finished.episodes) == 5
    assert results.run_bins(finished, W, weighting="episode")["r"].tolist() == pytest.approx([-275.0, -370 / 3])
    # still running and not yet logged past step 180: bin (100, 200] is not complete, so it is left out
    running = results.load_run(write_run(tmp_path / "running", RING_S0, progress_steps=None, tail="-10.0,3"))
    assert running.extent == 180
    assert results.run_bins(running, W)["bin"].tolist() == [100]


def test_a_curve_ends_where_its_slowest_seed_is(tmp_path):
    runs = results.load_runs(
        [
            write_run(tmp_path / "a", RING_S0),
            write_run(tmp_path / "b", {(0, 0): [(-100, 50)], (1, 0): [(-100, 50)]}, seed=1, progress_steps=100),
        ]
    )
    assert results.curves(runs, W)["bin"].tolist() == [100]


def test_disagreement_is_averaged_over_seeds(three_runs):
    table = results.disagreement(results.load_runs(three_runs)).set_index(["curve", "steps"])
    assert table.loc[("ring", 200), "mean"] == 0.5 and table.loc[("full", 200), "mean"] == 0.0


def test_a_run_with_no_finished_episode_yet_is_refused_with_a_clear_message(tmp_path):
    empty = write_run(tmp_path / "empty", {(0, 0): [], (1, 0): []}, progress_steps=None)
    with pytest.raises(results.RunError, match="no finished episode yet"):
        results.load_run(empty)


def test_a_directory_without_config_is_not_a_run(tmp_path):
    with pytest.raises(results.RunError, match="no config.json"):
        results.load_run(tmp_path)


def test_a_run_from_before_an_option_existed_counts_as_its_default(tmp_path):
    old = write_run(tmp_path / "old", RING_S0, seed=0)  # no method, link_drop, ... in its config.json
    new = write_run(
        tmp_path / "new", RING_S1, seed=1, method="diff-a2c", link_drop=0.0, fail_learner=[], save_every=5000
    )
    central = write_run(tmp_path / "central", FULL_S0, seed=0, method="centralized")
    runs = results.load_runs([old, new, central])
    assert results.curve_labels(runs) == ["diff-a2c", "diff-a2c", "centralized"]
