"""config.json records what a run was made with; eval and --resume warn when this machine differs."""

from __future__ import annotations

import json

import torch

from diffdac import TrainConfig, train
from diffdac.run import provenance
from diffdac.cli import main


def test_a_run_records_versions_command_and_commit_and_eval_and_resume_warn_on_a_difference(tmp_path, capsys):
    run_dir = train(
        TrainConfig(
            num_learners=2, envs_per_learner=1, hidden=8, total_steps=400, log_dir=str(tmp_path / "r"), progress=False
        )
    )
    values = json.loads((run_dir / "config.json").read_text())
    recorded = values["provenance"]
    assert recorded["versions"]["torch"] == torch.__version__ and recorded["versions"]["python"]
    assert isinstance(recorded["command"], list) and "git_commit" in recorded
    assert provenance.version_warnings(values) == []
    values["provenance"]["versions"]["torch"] = "1.0.0"
    (run_dir / "config.json").write_text(json.dumps(values))
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "1"]) == 0
    assert f"warning: the run was made with torch 1.0.0, this is {torch.__version__}" in capsys.readouterr().out
    assert main(["train", "--resume", "--log-dir", str(run_dir), "--total-steps", "800", "--no-progress"]) == 0
    assert "the run was made with torch 1.0.0" in capsys.readouterr().out


def test_the_git_commit_is_that_of_the_checkout_or_none():
    commit = provenance.git_commit()
    assert commit is None or len(commit.removesuffix("-dirty")) == 40


def test_a_library_installed_after_the_run_is_no_reason_to_warn():
    here = provenance.facts()["versions"]
    absent_then = {"provenance": {"versions": {**here, "mujoco": None}}}
    assert provenance.version_warnings(absent_then) == []
    older = {"provenance": {"versions": {**here, "numpy": "0.1"}}}
    assert provenance.version_warnings(older) == [
        f"the run was made with numpy 0.1, this is {here['numpy']}: numbers may differ"
    ]
