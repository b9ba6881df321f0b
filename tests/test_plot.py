"""`diffdac plot` on the command line: figures, the table, and bad input as one line with exit 2."""

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
