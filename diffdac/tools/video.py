"""`diffdac eval RUN --video DIR`: a few episodes per task as MP4s, with gymnasium's RecordVideo.

Each task gets its own rendering env (rgb_array) with the task's parameters; the network-average
policy acts greedily, as `diffdac eval` does (diffdac.tools.policy). Needs the [video] extra (moviepy, and
pygame for the Acrobot's drawing); MuJoCo renders headless through EGL or OSMesa (MUJOCO_GL).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import torch

import envs
from diffdac.config import TrainConfig
from diffdac.errors import ConfigError

NEEDS = {"moviepy": "moviepy", "pygame": "pygame (for the Acrobot)"}


def check_video_support(env_id: str) -> None:
    """Refuse --video, before any episode is played, when what renders or encodes is missing."""
    needed = ["moviepy", *envs.family_of(env_id).render_needs]
    missing = [NEEDS[m] for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"--video needs {' and '.join(missing)}: pip install 'diffdac[video]'")


def task_env(config: TrainConfig, env_id: str, task_id: int, task: dict | None) -> gymnasium.Env:
    """One rendering env of a task: explicit Acrobot parameters, or the task seed of learner `task_id`."""
    spec = envs.TaskSpec(
        env_id,
        config.seed,
        [task_id],
        task_seeding=config.task_seeding,
        mass_scaling=config.mass_scaling,
        tasks=None if task is None else [task],  # explicit parameters (the Acrobot: train, held-out or a file)
    )
    return envs.family_of(env_id).make_env(spec, 0, render_mode="rgb_array")


def record(
    config: TrainConfig,
    policy: torch.nn.Module,
    env_id: str,
    task_ids: list[int],
    tasks: list[dict] | None,
    out: Path,
    episodes: int,
    seed: int,
) -> list[Path]:
    """`episodes` greedy episodes of `policy` on every task, one MP4 each in `out`; returns the files."""
    from gymnasium.wrappers import RecordVideo

    for driver in ("SDL_VIDEODRIVER", "SDL_AUDIODRIVER"):  # pygame draws off screen; no display, no sound device
        os.environ.setdefault(driver, "dummy")
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("MUJOCO_GL", "egl")  # headless MuJoCo rendering (osmesa is the other choice)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for index, task_id in enumerate(task_ids):
        prefix = f"task{index:03d}"
        with warnings.catch_warnings():  # the folder holds the tasks recorded before this one, by design
            warnings.filterwarnings("ignore", message=".*Overwriting existing videos.*")
            env = RecordVideo(
                task_env(config, env_id, task_id, None if tasks is None else tasks[index]),
                str(out),
                episode_trigger=lambda _: True,
                name_prefix=prefix,
                disable_logger=True,
            )
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            done = False
            while not done:
                action = policy(torch.as_tensor(np.asarray(obs), dtype=torch.float32)[None])[0].numpy()
                obs, _, terminated, truncated, _ = env.step(action if action.ndim else int(action))
                done = terminated or truncated
        env.close()
        written += sorted(out.glob(f"{prefix}-episode-*.mp4"))
    return written
