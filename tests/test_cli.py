import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffdac.cli import build_parser, config_from_args, main


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "diffdac", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


BAD_TRAIN_INPUT = [
    (
        ["--adjacency", "[[0,1,0],[0,0,1],[0,1,0]]", "--num-learners", "3"],
        "not symmetric: entry (0,1) is 1 but (1,0) is 0",
    ),
    (["--adjacency", "[[0,1],[1,0]]", "--num-learners", "3"], "2x2"),
    (["--adjacency", "[[0,2],[2,0]]", "--num-learners", "2"], "must be 0 or 1"),
    (["--adjacency", "[[1,1],[1,0]]", "--num-learners", "2"], "diagonal"),
    (["--adjacency", "missing.npy"], "missing.npy"),
    (["--topology", "torus"], "torus"),
    (["--method", "federated"], "unknown --method 'federated'"),
    (["--topology", "erdos-renyi"], "--edge-prob"),
    (["--weights", "max-degree"], "max-degree"),
    (["--env", "NoSuchEnv-v0"], "NoSuchEnv-v0"),
    (["--num-learners", "0"], "--num-learners"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--envs-per-learner", "0"], "--envs-per-learner"),
    (["--total-steps", "-5"], "--total-steps"),
    (["--normalize", "obs,weights"], "--normalize"),
    (["--num-learners", "three"], "--num-learners"),
    (["--steps-per-update", "0"], "--steps-per-update"),
    (["--lr", "inf"], "--lr"),
    (["--save-every", "0"], "--save-every"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**64)], "--seed"),
    (["--rms-alpha", "1"], "--rms-alpha"),
    (["--rms-eps", "0"], "--rms-eps"),
    (["--total-steps", "100"], "less than one update of 160 env steps"),
    (["--fail-learner", "1@100,1@200"], "names learner 1 twice"),
    (["--env", "CarRacing-v3"], "CarRacing-v3"),  # needs box2d, which the project does not install
    (["--threads", "100000"], "--threads 100000 is more than the"),
    (["--num-learners", "1000000000", "--total-steps", str(10**14)], "needs about"),
    (["--envs-per-learner", "1000000000000", "--total-steps", str(10**18)], "needs about"),
    (["--hidden", "100000"], "needs about"),
    (["--steps-per-update", "100000000", "--total-steps", str(10**12)], "needs about"),
    (["--num-learners", "30000", "--topology", "full", "--total-steps", str(10**9)], "needs about"),
    (["--adjacency", "[" * 5000 + "]" * 5000], "nested too deeply"),
    (["--adjacency", "/dev/zero"], "not a regular file"),
    (["--log-dir", "/proc/diffdac-run"], "cannot write to --log-dir"),
    *([(["--device", "cuda"], "no CUDA device")] if not torch.cuda.is_available() else []),
]


def _garbage_adjacency(root: Path) -> None:
    (root / "adj.npy").write_bytes(b"\x00not a numpy file")


def _adjacency_directory(root: Path) -> None:
    (root / "adj.csv").mkdir()


def _other_run(root: Path) -> None:
    main(
        [
            "train",
            "--log-dir",
            str(root / "old"),
            "--num-learners",
            "2",
            "--envs-per-learner",
            "1",
            "--total-steps",
            "100",
            "--hidden",
            "8",
            "--no-progress",
        ]
    )


BAD_INPUT_WITH_FILES = [
    (_garbage_adjacency, ["--adjacency", "adj.npy", "--log-dir", "new"], "adj.npy"),
    (_adjacency_directory, ["--adjacency", "adj.csv", "--log-dir", "new"], "adj.csv"),
    (_other_run, ["--log-dir", "old", "--num-learners", "3"], "already holds a run"),
    (_other_run, ["--resume", "--log-dir", "old", "--num-learners", "3"], "--num-learners 3 (the run has 2)"),
]


@pytest.mark.parametrize("setup, args, expected", BAD_INPUT_WITH_FILES)
def test_bad_input_about_files_changes_no_file(tmp_path, monkeypatch, capsys, setup, args, expected):
    monkeypatch.chdir(tmp_path)
    setup(tmp_path)
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    status = _exit_status(["train", "--no-progress", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and expected in err[0], err
    assert before == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}


def _exit_status(argv: list[str]) -> int:
    """main() in this process; argparse's own errors arrive as SystemExit."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)


@pytest.mark.parametrize("args, expected", BAD_TRAIN_INPUT)
def test_bad_input_is_one_line_and_exit_2_before_anything_is_written(tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.chdir(tmp_path)
    log_dir = [] if "--log-dir" in args else ["--log-dir", str(tmp_path / "run")]
    status = _exit_status(["train", *log_dir, "--no-progress", *args])
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffdac: error: "), err
    assert expected in lines[0]
    assert list(tmp_path.iterdir()) == []  # no run directory, nor anything else in the working directory


def test_the_module_form_reports_bad_input_without_a_traceback(tmp_path):
    result = _run("train", "--adjacency", "[[0,1,0],[0,0,1],[0,1,0]]", "--num-learners", "3", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "diffdac: error: " + result.stderr.split("diffdac: error: ")[1].strip()
    ]


def test_a_directory_that_holds_a_run_is_refused_unless_overwrite(tmp_path):
    common = [
        "train",
        "--log-dir",
        str(tmp_path / "run"),
        "--num-learners",
        "2",
        "--envs-per-learner",
        "1",
        "--total-steps",
        "200",
        "--hidden",
        "8",
        "--no-progress",
    ]
    assert main(common) == 0
    assert main(common) == 2
    assert main([*common, "--overwrite"]) == 0


def test_every_config_field_is_an_option():
    args = build_parser().parse_args(
        ["train", "--num-learners", "5", "--normalize", "obs,reward", "--separate-init", "--gae-lambda", "0.9"]
    )
    config = config_from_args(args)
    assert (
        config.num_learners == 5
        and config.normalize == ("obs", "reward")
        and config.separate_init
        and config.gae_lambda == 0.9
    )


def test_adjacency_replaces_the_default_topology():
    config = config_from_args(build_parser().parse_args(["train", "--adjacency", "[[0,1],[1,0]]"]))
    assert config.topology is None and config.adjacency == "[[0,1],[1,0]]"


def test_topology_prints_adjacency_weights_and_eigenvalue(tmp_path):
    path = tmp_path / "graph.npy"
    np.save(path, np.array([[0, 1, 1], [1, 0, 0], [1, 0, 0]]))
    result = _run("topology", "--adjacency", str(path), "--num-learners", "3", "--weights", "metropolis")
    assert result.returncode == 0, result.stderr
    assert "SLEM" in result.stdout or "second-largest" in result.stdout.lower()


def test_topology_bad_input_exits_2():
    result = _run("topology", "--topology", "ring", "--num-learners", "0")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["topology", "--topology", "ring", "--num-learners", "8"], ["train", "--help"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(argv):
    """`diffdac topology | head -2`: the reader has closed the pipe before diffdac writes to it."""
    proc = subprocess.Popen([sys.executable, "-m", "diffdac", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == "", err


def test_a_run_reads_back_as_its_own_input_and_outlives_its_adjacency_file(tmp_path, capsys):
    ring4 = np.roll(np.eye(4, dtype=int), 1, axis=1) + np.roll(np.eye(4, dtype=int), -1, axis=1)
    np.savetxt(tmp_path / "graph.csv", ring4, fmt="%d", delimiter=",")
    run_dir = tmp_path / "run"
    small = ["--envs-per-learner", "1", "--hidden", "8", "--no-progress"]
    assert (
        main(
            [
                "train",
                "--adjacency",
                str(tmp_path / "graph.csv"),
                "--total-steps",
                "400",
                "--log-dir",
                str(run_dir),
                *small,
            ]
        )
        == 0
    )
    config = json.loads((run_dir / "config.json").read_text())
    assert config["num_learners"] == 4 and json.loads(config["adjacency"]) == ring4.tolist()  # the size from the matrix
    for path in (run_dir / "topology.csv", tmp_path / "graph.csv"):
        capsys.readouterr()
        assert main(["topology", "--adjacency", str(path)]) == 0  # our own topology.csv, header and learner column
        assert "learners: 4, edges: 4" in capsys.readouterr().out
    resume = ["train", "--resume", "--log-dir", str(run_dir), "--no-progress"]
    assert (
        main([*resume, "--total-steps", "800", "--adjacency", str(tmp_path / "graph.csv")]) == 0
    )  # the same file again
    (tmp_path / "graph.csv").unlink()
    assert main([*resume, "--total-steps", "1200"]) == 0  # the file is gone: the run holds its matrix
    again = tmp_path / "again"
    assert main(["train", "--config", str(run_dir / "config.json"), "--seed", "3", "--log-dir", str(again)]) == 0
    assert json.loads((again / "config.json").read_text())["adjacency"] == config["adjacency"]


def test_a_mujoco_id_without_mujoco_names_the_extra(tmp_path):
    """The Acrobot needs no MuJoCo: without it installed, a MuJoCo id is one line naming diffdac[mujoco]."""
    hide = "import sys; sys.modules['mujoco'] = None; from diffdac.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["train", "--env", "diffdac/RandomMassHopper-v5", "--log-dir", str(tmp_path / "run")]
    result = subprocess.run([sys.executable, "-c", hide, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "diffdac: error: diffdac/RandomMassHopper-v5 needs MuJoCo, which is an extra: pip install 'diffdac[mujoco]'"
    ]
    acrobot = subprocess.run(
        [
            sys.executable,
            "-c",
            hide,
            "train",
            "--total-steps",
            "200",
            "--num-learners",
            "2",
            "--envs-per-learner",
            "1",
            "--log-dir",
            str(tmp_path / "acrobot"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert acrobot.returncode == 0, acrobot.stderr
