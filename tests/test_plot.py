"""`diffdac plot` on the command line: figures, the table, and bad input as one line with exit 2."""

import numpy as np
import pandas as pd
import pytest
from test_results import FULL_S0, RING_S0, RING_S1, W, write_run

from diffdac import TrainConfig, train
from diffdac.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _exit_status(argv: list[str]) -> int:
    """main() in this process; argparse's own errors arrive as SystemExit."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffdac: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def synthetic(tmp_path):
    return [
        str(write_run(tmp_path / "ring0", RING_S0, seed=0)),
        str(write_run(tmp_path / "full0", FULL_S0, seed=0, topology="full")),
        str(write_run(tmp_path / "ring1", RING_S1, seed=1)),
    ]


def test_plot_writes_a_non_empty_png_from_two_tiny_real_runs(tmp_path):
    runs = []
    for topology in ("ring", "none"):
        # 8 simulators x 550 steps: every simulator passes Acrobot's 500-step limit, so each has an episode
        config = TrainConfig(
            num_learners=2,
            envs_per_learner=4,
            steps_per_update=10,
            total_steps=4400,
            log_interval=800,
            topology=topology,
            log_dir=str(tmp_path / topology),
            progress=False,
        )
        runs.append(str(train(config)))
    out = tmp_path / "curves.png"
    status = main(
        ["plot", *runs, "--out", str(out), "--bin-steps", "800", "--disagreement", "--per-learner", "--table"]
    )
    assert status == 0
    assert out.stat().st_size > 10_000 and out.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize("suffix, magic", [(".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_plot_writes_svg_and_pdf_with_every_panel_against_wall_time(tmp_path, synthetic, suffix, magic):
    out = tmp_path / f"curves{suffix}"
    assert (
        main(
            [
                "plot",
                *synthetic,
                "--out",
                str(out),
                "--bin-steps",
                str(W),
                "--x",
                "time",
                "--disagreement",
                "--per-learner",
            ]
        )
        == 0
    )
    assert out.read_bytes().startswith(magic)


def test_table_prints_and_csv_holds_the_numbers_of_each_curve(tmp_path, synthetic, capsys):
    csv = tmp_path / "table.csv"
    assert (
        main(
            [
                "plot",
                *synthetic,
                "--table",
                "--csv",
                str(csv),
                "--bin-steps",
                str(W),
                "--threshold",
                "-130",
                "--at",
                "100",
                "--weighting",
                "episode",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "ring" in printed and "-126.7 ± 3.3" in printed and "-187.5 ± 87.5" in printed
    table = pd.read_csv(csv).set_index("curve")
    assert table.loc["ring", "final"] == pytest.approx((-370 / 3 - 130) / 2)
    assert table.loc["ring", "steps_to_-130"] == 150 and table.loc["full", "seeds"] == 1


def test_the_table_is_task_weighted_by_default(tmp_path, synthetic, capsys):
    assert main(["plot", *synthetic, "--table", "--bin-steps", str(W)]) == 0
    ring = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("ring")][0]
    assert "-121.2 ± 8.8" in ring  # bin 200: seed 0 (-145 - 80) / 2, seed 1 (-60 - 200) / 2


def test_labels_replace_the_automatic_names(tmp_path, synthetic):
    csv = tmp_path / "table.csv"
    assert (
        main(["plot", *synthetic, "--csv", str(csv), "--bin-steps", str(W), "--label", "sparse", "--label", "dense"])
        == 0
    )
    assert pd.read_csv(csv)["curve"].tolist() == ["sparse", "dense"]


def test_a_run_directory_with_no_finished_episode_yet_is_exit_2_with_a_clear_message(tmp_path, synthetic, capsys):
    empty = write_run(tmp_path / "empty", {(0, 0): [], (1, 0): []}, progress_steps=None)
    status = _exit_status(["plot", *synthetic, str(empty), "--out", str(tmp_path / "x.png")])
    assert status == 2
    line = _one_error_line(capsys)
    assert str(empty) in line and "no finished episode yet" in line
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--out", "curves.jpg"], ".png, .pdf or .svg"),
        ([], "nothing to do"),
        (["--out", "no/such/dir/curves.png"], "does not exist"),
        (["--table", "--at", "half"], "--at"),
        (["--table", "--bin-steps", "0"], "--bin-steps"),
        (["--table", "--bin-steps", "10000000"], "holds no whole bin of any run"),
        (["--out", "curves.png", "--bin-steps", "10000000"], "holds no whole bin of any run"),
        (["--table", "--label", "only one"], "--label was given 1 times but the runs form 2 curves"),
        (["--table", "--label", "same", "--label", "same"], "differently"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path, synthetic, capsys, monkeypatch, extra, expected):
    monkeypatch.chdir(tmp_path)
    assert _exit_status(["plot", *synthetic, *extra]) == 2
    assert expected in _one_error_line(capsys)


def test_a_directory_that_is_not_a_run_is_exit_2(tmp_path, capsys):
    assert _exit_status(["plot", str(tmp_path), "--table"]) == 2
    assert "no config.json" in _one_error_line(capsys)


def _figure(run_dirs: list[str], *options: str):
    from diffdac.tools import plot
    from diffdac.tools import results
    from diffdac.cli import build_parser

    args = build_parser().parse_args(["plot", *run_dirs, "--out", "unused.png", "--bin-steps", str(W), *options])
    return plot.draw(results.load_runs(args.runs), args)


def test_every_curve_is_visible_named_shortly_and_its_legend_stays_in_the_figure(tmp_path):
    """Four runs of different lengths and options; one of them has a single bin."""
    one_bin = {(0, 0): [(-120, 50)], (1, 0): [(-140, 50)]}  # episodes end at step 100 only
    runs = [
        str(write_run(tmp_path / "a", RING_S0, seed=0)),
        str(write_run(tmp_path / "b", one_bin, seed=0, progress_steps=100, method="gala")),
        str(
            write_run(
                tmp_path / "c", FULL_S0, seed=0, topology=None, adjacency="/data/graphs/my-graph.csv", fail_learner=[]
            )
        ),
        str(write_run(tmp_path / "d", RING_S1, seed=0, fail_learner=["1@150"], lr=0.01)),
    ]
    fig = _figure(runs, "--disagreement")
    returns, spread = fig.axes[0], fig.axes[1]
    lines = returns.get_lines()
    assert len(lines) == 4 and all(line.get_marker() == "o" for line in lines)  # a single bin is a visible point
    labels = [text.get_text() for text in returns.get_legend().get_texts()]
    assert labels[1] == "gala (1 seed)"  # not "ring, gala": GALA ignores the graph
    assert (
        "adjacency my-graph.csv" in labels[2] and "fail_learner=" not in labels[2]
    )  # no empty option, the file by its name
    assert all(len(label) <= 50 for label in labels)
    fig.canvas.draw()
    inside = fig.bbox
    for legend in (returns.get_legend(), spread.get_legend()):
        box = legend.get_window_extent()
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
    assert fig.texts[0].get_text() == "RandomExtremeAcrobot-v1: 2 learners x 1 sim"  # the default title


def test_exact_consensus_is_drawn_on_the_log_axis_and_named(tmp_path):
    runs = [str(write_run(tmp_path / "ring", RING_S0)), str(write_run(tmp_path / "full", FULL_S0, topology="full"))]
    spread = _figure(runs, "--disagreement").axes[1]
    assert spread.get_yscale() == "log"
    labels = [text.get_text() for text in spread.get_legend().get_texts()]
    assert labels == ["ring", "full (= 0)"]
    assert all(y > 0 for line in spread.get_lines() for y in line.get_ydata())


def test_the_graph_of_a_run_colours_learners_by_score_and_sizes_them_by_task(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--num-learners",
                "4",
                "--envs-per-learner",
                "2",
                "--hidden",
                "8",
                "--total-steps",
                "6000",
                "--log-dir",
                str(run_dir),
                "--no-progress",
            ]
        )
        == 0
    )
    from diffdac.run import graph_figure
    from diffdac.tools import results
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = results.load_run(run_dir)
    scores, (masses, name) = results.learner_scores(run), graph_figure.task_parameter(run_dir, None)
    fig, ax = plt.subplots()
    graph_figure.draw_graph(ax, graph_figure.run_graph(run_dir), scores, masses, name, "ring")
    nodes = ax.collections[-1]
    assert len(nodes.get_offsets()) == 4 and name == "mass"
    sizes = nodes.get_sizes()
    assert np.argmax(sizes) == masses.to_numpy().argmax() and np.argmin(sizes) == masses.to_numpy().argmin()
    colours = [tuple(c) for c in nodes.get_facecolors()]
    assert len(set(colours)) == len(set(scores.round(6)))  # one colour per distinct score
    out = tmp_path / "graph.png"
    assert main(["plot", "--graph", str(run_dir), "--out", str(out)]) == 0 and out.read_bytes().startswith(PNG_MAGIC)
    assert _exit_status(["plot", "--graph", str(run_dir)]) == 2 and "--graph needs --out" in _one_error_line(capsys)
