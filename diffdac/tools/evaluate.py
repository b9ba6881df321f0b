"""`diffdac eval`: each learner's policy and the network-average policy on training and held-out tasks.

This is how the paper's generalisation claim is checked: the common policy that diffusion
converges to should do well on tasks no learner trained on. Every (policy, task) pair runs
`--episodes` simulators of one episode each, all stepped as one batch; the simulators of a task
start from the same initial states whichever policy drives them (common random numbers), so
policies are compared on equal terms.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gymnasium
import numpy as np
import pandas as pd
import torch

import envs
from diffdac.run import checkpoint
from diffdac.run import provenance
from diffdac.tools import video
from diffdac.tools.policy import load_policy
from diffdac import files
from diffdac.config import MAX_SEED, TrainConfig, read_run_config
from diffdac.errors import ConfigError
from diffdac.learners.normalize import RunningNorm
from diffdac.learners.population import Population

AVERAGE = "average"
EVAL_SEED_SALT = 0xE7A1  # eval episodes start from other initial states than training's


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by diffdac train")
    parser.add_argument(
        "--checkpoint", default=None, help="env step count or file of a checkpoint (default: the newest)"
    )
    parser.add_argument(
        "--tasks",
        default="train",
        help="train (the learners' own tasks), heldout (tasks no learner trained on: "
        "the other Acrobot range, or new task seeds), or a tasks.csv of Acrobot tasks (default: train)",
    )
    parser.add_argument("--episodes", type=int, default=5, help="episodes per policy and task (default: 5)")
    parser.add_argument(
        "--stochastic", action="store_true", help="sample actions instead of taking the most likely one"
    )
    parser.add_argument(
        "--policies",
        choices=("all", "average", "learners"),
        default="all",
        help="every learner's policy and the network average, or one kind only (default: all)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the evaluation episodes' initial states (default: 0)"
    )
    parser.add_argument(
        "--video",
        type=Path,
        default=None,
        metavar="DIR",
        help="also record the network-average policy on every task as MP4s in DIR (the [video] extra)",
    )
    parser.add_argument(
        "--video-episodes", type=int, default=1, metavar="N", help="episodes recorded per task (default: 1)"
    )
    parser.add_argument(
        "--out", default=None, help="CSV to write (default: RUN_DIR/eval-<tasks>-step<S>-<mode>-<N>ep-seed<seed>.csv)"
    )


@dataclass
class Policies:
    """Stacked parameters and observation statistics of the policies to evaluate."""

    names: list[str]
    params: torch.Tensor  # [P, num_params]
    obs_mean: torch.Tensor | None  # [P, D] float64
    obs_var: torch.Tensor | None


@dataclass
class TaskSet:
    """The tasks to evaluate on: an env id, one row of parameters per task, and how to build them."""

    env_id: str
    table: pd.DataFrame  # one row per task: task index + parameters
    task_ids: list[int]  # ids whose task seeds give the tasks (gymnasium envs)
    acrobot_tasks: list[dict] | None  # explicit tasks, for families whose batch takes them (the Acrobot)


def load_policies(run_dir: Path, config: TrainConfig, manifest: checkpoint.Manifest, which: str) -> Policies:
    """Learners' parameters from the checkpoint, plus their average (parameters and normaliser statistics)."""
    params = checkpoint.gather(run_dir, "params", manifest)
    has_norm = "obs" in (config.normalize or ())
    mean = checkpoint.gather(run_dir, "obs_norm.mean", manifest) if has_norm else None
    var = checkpoint.gather(run_dir, "obs_norm.var", manifest) if has_norm else None
    names = [f"learner {k}" for k in range(len(params))]
    if which != "learners":
        names.append(AVERAGE)
        params = torch.cat([params, params.mean(0, keepdim=True)])
        if has_norm:
            mean, var = torch.cat([mean, mean.mean(0, keepdim=True)]), torch.cat([var, var.mean(0, keepdim=True)])
    if which == "average":
        names, params = names[-1:], params[-1:]
        mean, var = (None, None) if not has_norm else (mean[-1:], var[-1:])
    return Policies(names, params, mean, var)


def task_set(config: TrainConfig, which: str) -> TaskSet:
    """train: the learners' tasks; heldout: tasks nobody trained on; otherwise a tasks.csv file."""
    n = config.num_learners
    if which in ("train", "heldout"):
        env_id, ids = config.env, list(range(n))
        if which == "heldout":  # the family's held-out split: another range, or new task seeds
            env_id, ids = envs.family_of(env_id).heldout(env_id, n)
        family = envs.family_of(env_id)
        if family.task_keys:
            tasks = family.learner_tasks(envs.TaskSpec(env_id, config.seed, ids, task_seeding=config.task_seeding))
            return TaskSet(env_id, _table(tasks), ids, tasks)
        return TaskSet(env_id, pd.DataFrame({"task": range(len(ids))}), ids, None)
    return _task_file(Path(which), config)


def _task_file(path: Path, config: TrainConfig) -> TaskSet:
    if not path.is_file():
        raise ConfigError(f"--tasks takes train, heldout or a tasks.csv file; {path} is none of them")
    keys = list(envs.family_of(config.env).task_keys)
    if not keys:
        raise ConfigError("--tasks FILE holds Acrobot task parameters; for other envs use --tasks train or heldout")
    try:
        frame = pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"cannot read --tasks {path} as a CSV table ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from None
    missing = set(keys) - set(frame.columns)
    if missing:
        raise ConfigError(f"{path} lacks the column(s) {', '.join(sorted(missing))} of an Acrobot tasks.csv")
    values = frame[keys].apply(pd.to_numeric, errors="coerce")
    bad = values[~(np.isfinite(values) & (values > 0)).all(axis=1)]
    if len(frame) == 0 or len(bad):
        where = f"row {bad.index[0] + 1} has {bad.iloc[0].to_dict()}" if len(bad) else "it has no rows"
        raise ConfigError(f"{path} must give masses, lengths and inertias > 0: {where}")
    tasks = values.to_dict("records")
    return TaskSet(config.env, _table(tasks), list(range(len(tasks))), tasks)


def _table(tasks: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(tasks).rename_axis("task").reset_index()


def eval_batch(config: TrainConfig, tasks: TaskSet, copies: int, episodes: int, seed: int) -> envs.TaskBatch:
    """`copies` x tasks pairs of `episodes` simulators each (pair i plays task i % T): the same initial
    states for every copy of a task, whichever policy drives it."""
    pair_task_ids = np.tile(np.asarray(tasks.task_ids), copies)
    if tasks.acrobot_tasks is not None:  # explicit tasks: the episodes' own seed for the initial states
        spec = envs.TaskSpec(
            tasks.env_id,
            int(envs.task_seed_for(seed, EVAL_SEED_SALT)),
            pair_task_ids,
            episodes,
            tasks=tasks.acrobot_tasks * copies,
        )
    else:
        spec = envs.TaskSpec(
            tasks.env_id,
            config.seed,
            pair_task_ids,
            episodes,
            task_seeding=config.task_seeding,
            mass_scaling=config.mass_scaling,
        )
    return envs.make_task_batch(spec)


def run_episodes(
    config: TrainConfig, policies: Policies, tasks: TaskSet, episodes: int, stochastic: bool, seed: int
) -> pd.DataFrame:
    """One episode in each of episodes x (policy, task) simulators; returns one row per episode."""
    num_p, num_t = len(policies.names), len(tasks.task_ids)
    batch = eval_batch(config, tasks, num_p, episodes, seed)
    pop = Population(batch.observation_space, batch.action_space, np.arange(num_p * num_t), config.hidden)
    with torch.no_grad():
        pop.flat.copy_(policies.params.repeat_interleave(num_t, 0))
    norm = (
        None
        if policies.obs_mean is None
        else RunningNorm.from_statistics(
            policies.obs_mean.repeat_interleave(num_t, 0), policies.obs_var.repeat_interleave(num_t, 0)
        )
    )

    def choose(obs: np.ndarray, step: int) -> np.ndarray:
        x = torch.as_tensor(obs, dtype=torch.float32)
        if norm is not None:
            x = norm.normalize(x)
        return (pop.act(x, seed, step) if stochastic else pop.greedy(x)).numpy()

    returns, lengths = play(batch, choose)
    batch.close()
    rows = pd.DataFrame(
        {
            "policy": np.repeat(policies.names, num_t * episodes),
            "task": np.tile(np.repeat(np.arange(num_t), episodes), num_p),
            "episode": np.tile(np.arange(episodes), num_p * num_t),
            "return": returns.reshape(-1),
            "episode_length": lengths.reshape(-1),
        }
    )
    return rows.merge(tasks.table, on="task", how="left").assign(env_id=tasks.env_id, stochastic=stochastic)


def play(batch: envs.TaskBatch, choose: Callable[[np.ndarray, int], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Step until every simulator has finished its first episode (later ones are ignored); returns and lengths `[K, E]`.

    `choose(obs, step)` gives the actions for observations `[K, E, D]`.
    """
    shape = (batch.num_learners, batch.envs_per_learner)
    returns, lengths = np.zeros(shape), np.zeros(shape, dtype=np.int64)
    finished = np.zeros(shape, dtype=bool)
    obs, step = batch.reset(), 0
    while not finished.all():
        result = batch.step(choose(obs, step))
        done = (result.terminated | result.truncated) & ~finished
        returns[done], lengths[done] = result.episode_return[done], result.episode_length[done]
        finished |= done
        obs, step = result.obs, step + 1
    return returns, lengths


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of the return per policy, over tasks and episodes."""
    table = rows.groupby("policy", sort=False)["return"].agg(["mean", "std", "min", "max", "count"])
    return table.rename(columns={"count": "episodes"})


MAX_EPISODES = 10_000  # per policy and task: the mean of a return is settled long before
MAX_TASKS = 10_000  # rows of a --tasks file
MAX_SIMULATORS = 1_000_000  # policies x tasks x episodes stepped as one batch


def check_counts(args: argparse.Namespace) -> None:
    """Counts of eval's options: positive, and bounded (an eval of 2**70 episodes would run forever)."""
    for flag, value, most in (
        ("--episodes", args.episodes, MAX_EPISODES),
        ("--video-episodes", args.video_episodes, MAX_EPISODES),
    ):
        if not 1 <= value <= most:
            raise ConfigError(f"{flag} must be a positive integer up to {most}, got {value}")
    if not 0 <= args.seed <= MAX_SEED:
        raise ConfigError(f"--seed must be an integer in [0, 2**63 - 1], got {args.seed}")
    if args.video is not None and args.video.exists() and not args.video.is_dir():
        raise ConfigError(f"--video {args.video} is a file: give a directory for the videos")


def check_size(config: TrainConfig, policies: int, tasks: TaskSet, episodes: int) -> None:
    """Refuse a batch of simulators too large to step at once, before anything is allocated."""
    if len(tasks.task_ids) > MAX_TASKS:
        raise ConfigError(f"--tasks gives {len(tasks.task_ids)} tasks; eval takes at most {MAX_TASKS}")
    sims = policies * len(tasks.task_ids) * episodes
    if sims > MAX_SIMULATORS:
        raise ConfigError(
            f"{policies} policies x {len(tasks.task_ids)} tasks x {episodes} episodes is {sims} simulators, "
            f"more than the {MAX_SIMULATORS} eval steps at once: lower --episodes or use --policies average"
        )


def check_fits(config: TrainConfig, policies: Policies, spaces: tuple) -> None:
    """The checkpoint's parameters must be those of a network of the run's options (env, hidden) before any is built."""
    from diffdac.learners.population import _layout, action_dim

    act = spaces[1]
    width = sum(
        p.numel
        for p in _layout(spaces[0].shape[0], config.hidden, action_dim(act), isinstance(act, gymnasium.spaces.Box))
    )
    if policies.params.dim() != 2 or policies.params.shape[1] != width:
        raise ConfigError(
            f"the checkpoint does not match the run's options in config.json (env {config.env} and hidden {config.hidden} "
            f"make {width} parameters per learner, the checkpoint has {tuple(policies.params.shape[1:])})"
        )


def main(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    check_counts(args)
    config = TrainConfig.from_run(run_dir).validate()
    for warning in provenance.version_warnings(read_run_config(run_dir)):
        print(f"diffdac: warning: {warning}")
    from diffdac.run.prepare import probe_spaces

    spaces = probe_spaces(config)  # an env id that cannot be made (an edited config.json) is one line
    manifest = checkpoint.resolve(run_dir, args.checkpoint)
    out = Path(args.out) if args.out else run_dir / default_out_name(args, manifest.steps)
    check_out(out, run_dir)
    tasks = task_set(config, args.tasks)
    if args.video is not None:
        video.check_video_support(tasks.env_id)
    torch.set_num_threads(min(config.threads, os.cpu_count() or 1))
    policies = load_policies(run_dir, config, manifest, args.policies)
    check_size(config, len(policies.names), tasks, args.episodes)
    check_fits(config, policies, spaces)
    rows = run_episodes(config, policies, tasks, args.episodes, args.stochastic, args.seed)
    write_out(out, rows.assign(checkpoint_steps=manifest.steps))
    mode = "stochastic" if args.stochastic else "greedy"
    print(
        f"{mode} policies of {run_dir} at step {manifest.steps} on {len(tasks.task_ids)} {args.tasks} tasks of {tasks.env_id}, "
        f"{args.episodes} episodes each:"
    )
    print(_short(summary(rows)).to_string(float_format=lambda v: f"{v:.1f}"))
    print(f"wrote {out}")
    if args.video is not None:
        average = load_policy(run_dir, "average", args.checkpoint)
        files = video.record(
            config,
            average,
            tasks.env_id,
            tasks.task_ids,
            tasks.acrobot_tasks,
            args.video,
            args.video_episodes,
            args.seed,
        )
        print(f"wrote {len(files)} videos of the network-average policy to {args.video}")
    return 0


def default_out_name(args: argparse.Namespace, steps: int) -> str:
    """eval-<tasks>-step<S>-<greedy|stochastic>[-<policies>]-<episodes>ep-seed<seed>.csv: one file per
    evaluation that gives other numbers, so an eval on held-out tasks never replaces one on training tasks."""
    tasks = args.tasks if args.tasks in ("train", "heldout") else re.sub(r"[^A-Za-z0-9_.-]", "_", Path(args.tasks).stem)
    policies = "" if args.policies == "all" else f"-{args.policies}"
    mode = "stochastic" if args.stochastic else "greedy"
    return f"eval-{tasks}-step{steps}-{mode}{policies}-{args.episodes}ep-seed{args.seed}.csv"


def check_out(out: Path, run_dir: Path | None = None) -> None:
    """Refuse an --out that cannot take a CSV before any episode is played: a directory, a missing or read-only
    place, or a file of the run itself (config.json, a Monitor file, a checkpoint)."""
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory: give a file name such as {out / 'eval.csv'}")
    if not out.parent.is_dir():
        raise ConfigError(f"cannot write {out}: directory {out.parent} does not exist")
    if run_dir is not None and _is_run_file(out, run_dir):
        raise ConfigError(f"--out {out} is a file of the run {run_dir}: give another name (eval-NAME.csv, for one)")
    try:
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as err:
        raise ConfigError(
            f"cannot write {out} ({files.reason(err)}): give an --out in a place you can write to"
        ) from None


def _is_run_file(out: Path, run_dir: Path) -> bool:
    """A name a run writes inside its directory (eval files aside): what an eval's CSV must not replace."""
    from diffdac.run.rundir import EVAL_FILE, LOCK_NAMES, RUN_FILES

    try:
        inside = out.resolve().relative_to(run_dir.resolve())
    except ValueError:
        return False
    top = inside.parts[0] if inside.parts else ""
    name = inside.name.removesuffix(".tmp")
    return (
        top in ("monitor", "checkpoints")
        or name in RUN_FILES + LOCK_NAMES
        or (len(inside.parts) == 1 and not EVAL_FILE.fullmatch(name) and name.endswith((".json", ".pt")))
    )


def write_out(out: Path, rows: pd.DataFrame) -> None:
    """The eval table, written whole or not at all; a full disk is one line."""
    try:
        files.write_text(out, rows.to_csv(index=False))
    except OSError as err:
        raise ConfigError(f"cannot write {out} ({files.reason(err)})") from None


def _short(table: pd.DataFrame) -> pd.DataFrame:
    """The network average, then the learners summarised (mean, best, worst) when there are many."""
    learners = table.drop(index=AVERAGE, errors="ignore")
    if len(learners) <= 8:
        return table
    best, worst = learners["mean"].idxmax(), learners["mean"].idxmin()
    parts = [table.loc[[AVERAGE]]] if AVERAGE in table.index else []
    mean_row = learners.mean().to_frame(f"mean of {len(learners)} learners").T
    parts += [
        mean_row,
        table.loc[[best]].rename(index={best: f"best: {best}"}),
        table.loc[[worst]].rename(index={worst: f"worst: {worst}"}),
    ]
    return pd.concat(parts)
