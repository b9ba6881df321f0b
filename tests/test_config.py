"""Config files (TOML, a run's config.json) and the switches the original's settings need."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from diffdac import TrainConfig, train
from diffdac.cli import build_parser, config_from_args, main
from envs import sample_acrobot_task, task_seed_for

CONFIGS = Path(__file__).parent.parent / "experiments" / "configs"
SMALL = ["--num-learners", "3", "--envs-per-learner", "1", "--hidden", "8", "--total-steps", "300", "--no-progress"]


def _config(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


def _exit_status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)


@pytest.mark.parametrize("name", ["original-acrobot.toml", "original-mujoco.toml"])
def test_the_shipped_configs_hold_valid_options_each_with_its_source(name):
    path = CONFIGS / name
    config = _config("--config", str(path)).validate()
    assert config.max_grad_norm == 0 and config.entropy_coef == 0.01 and config.time_limit == "terminal"
    assert config.normalize == ("obs", "reward") and config.local_normalizer and config.task_seeding == "original"
    options = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    assert options and all("#" in line for line in options), "every option says where it comes from"


def test_the_command_line_overrides_the_file(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text('lr = 0.01\nnum-learners = 6\ntopology = "full"\nnormalize = "obs"\n')
    config = _config("--config", str(path), "--lr", "0.02", "--adjacency", "[[0,1],[1,0]]", "--num-learners", "2")
    assert (config.lr, config.num_learners, config.topology, config.adjacency, config.normalize) == (
        0.02,
        2,
        None,
        "[[0,1],[1,0]]",
        ("obs",),
    )


def test_a_run_repeats_from_its_config_json_with_another_seed(tmp_path):
    first = tmp_path / "first"
    assert main(["train", *SMALL, "--lr", "0.003", "--entropy-coef", "0.02", "--log-dir", str(first)]) == 0
    second = tmp_path / "second"
    assert main(["train", "--config", str(first / "config.json"), "--seed", "1", "--log-dir", str(second)]) == 0
    a, b = (json.loads((d / "config.json").read_text()) for d in (first, second))
    assert b["seed"] == 1 and b["log_dir"] == str(second)
    assert {k: v for k, v in a.items() if k not in ("seed", "log_dir")} == {
        k: v for k, v in b.items() if k not in ("seed", "log_dir")
    }


@pytest.mark.parametrize(
    "text, expected",
    [
        ("lr = [", "is not valid TOML"),
        ("learning-rate = 0.1", "unknown option 'learning-rate'"),
        ("max_grad = 0.1", "did you mean max-grad-norm?"),
        ('lr = "fast"', "--lr must be a number"),
        ('time_limit = "never"', "--time-limit takes bootstrap or terminal"),
    ],
)
def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path, capsys, text, expected):
    (tmp_path / "bad.toml").write_text(text)
    assert _exit_status(["train", "--config", str(tmp_path / "bad.toml"), "--log-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "run").exists()


def test_a_config_json_that_is_not_an_object_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text("[1, 2]")
    assert _exit_status(["train", "--config", str(tmp_path / "config.json")]) == 2
    assert "must hold a JSON object" in capsys.readouterr().err


def test_original_task_seeding_gives_learner_r_the_task_of_seed_plus_2r(tmp_path):
    run_dir = train(_config(*SMALL, "--seed", "5", "--task-seeding", "original", "--log-dir", str(tmp_path / "run")))
    tasks = pd.read_csv(run_dir / "tasks.csv")[["mass", "length", "inertia"]].to_dict("records")
    assert tasks == [sample_acrobot_task("extreme", 5 + 2 * r) for r in range(3)]
    assert task_seed_for(0, 1, "original") == task_seed_for(2, 0, "original")  # the original's seeds overlap
    assert task_seed_for(0, 1) != task_seed_for(2, 0)  # ours do not
    keyed = train(_config(*SMALL, "--seed", "5", "--log-dir", str(tmp_path / "keyed")))
    assert pd.read_csv(keyed / "tasks.csv")[["mass", "length", "inertia"]].to_dict("records") != tasks


def test_runs_from_before_mass_scaling_existed_keep_the_scaling_they_had(tmp_path):
    run_dir = train(_config(*SMALL, "--log-dir", str(tmp_path / "run")))
    values = json.loads((run_dir / "config.json").read_text())
    del values["mass_scaling"]
    (run_dir / "config.json").write_text(json.dumps(values))
    assert TrainConfig.from_run(run_dir).mass_scaling == "mass-and-inertia"


def test_mass_scaling_reaches_the_mujoco_models(tmp_path):
    from diffdac.run.prepare import make_tasks

    stock, original = (
        make_tasks(TrainConfig(env="diffdac/RandomMassHopper-v5", num_learners=1, mass_scaling=m), [0], 1)
        for m in ("mass-and-inertia", "body-mass")
    )
    models = [batch._envs[0].unwrapped.model for batch in (stock, original)]
    assert (models[0].body_mass == models[1].body_mass).all()
    assert (models[0].body_inertia != models[1].body_inertia).any()
