"""Options checked and resolved once, before anything is allocated or written: `prepare` and what it returns.

Everything that can refuse the input happens here (and in TrainConfig.validate), so that bad
input ends every rank of a torchrun world before any of them waits on a rendezvous, and the
rest of the program receives a Prepared run it can trust.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import gymnasium
import networkx as nx
import numpy as np
import torch

import envs
import topologies
from diffdac import files
from diffdac.run import limits
from diffdac.run import provenance
from diffdac.config import NORMALIZE_CHOICES, TrainConfig, read_run_config
from diffdac.network.distributed import env_rank
from diffdac.errors import ConfigError, ResumeError, TrainingError
from diffdac.run.rundir import check_replaceable, only_leftovers
from diffdac.network.methods import Method, method_class, method_for
from diffdac.learners.population import action_dim, check_spaces


@dataclass(frozen=True)
class Prepared:
    """A checked config with its defaults resolved, its graph, its method over that graph and its run directory.

    `config.resume` is True only when the directory holds a run to continue: a --resume of a
    directory without one (a retry loop after a kill before config.json) starts a new run.
    """

    config: TrainConfig
    graph: nx.Graph
    method: Method
    run_dir: Path


def prepare(config: TrainConfig) -> Prepared:
    """Everything that can refuse the input, done once, before anything is allocated or written."""
    config = resolve_defaults(config.validate())
    check_machine(config)
    spaces = probe_spaces(config)
    graph = build_graph(config, spaces)
    run_dir = Path(config.log_dir) if config.log_dir else default_run_dir(config)
    if config.resume and (run_dir / "config.json").exists():
        config = check_resume(config)
    else:
        check_new_run_dir(run_dir, config.overwrite, config.resume)
        if config.resume and env_rank() == 0:
            print(f"diffdac: {run_dir} holds no run yet: starting a new one")
        config = dataclasses.replace(config, resume=False)
    return Prepared(config, graph, method_for(config, graph), run_dir)


def resolve_defaults(config: TrainConfig) -> TrainConfig:
    """Options whose default depends on the task: --normalize is obs,reward for MuJoCo tasks."""
    if config.normalize is None:
        normalize = NORMALIZE_CHOICES if envs.needs_mujoco(config.env) else ()
    else:
        normalize = tuple(n for n in config.normalize if n != "none")
    return dataclasses.replace(config, normalize=normalize)


def check_machine(config: TrainConfig) -> None:
    """Options this machine cannot serve: CUDA without a GPU, more threads than cores (torch crashes on absurd counts)."""
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda, but torch sees no CUDA device here (torch.cuda.is_available() is False): use --device cpu"
        )
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install 'diffdac[tensorboard]'")
    if config.tensorboard and Path(config.tensorboard).exists() and not Path(config.tensorboard).is_dir():
        raise ConfigError(f"--tensorboard {config.tensorboard} is a file: give a directory for the event files")
    cores = os.cpu_count() or 1
    counts = (
        ("--threads", config.threads),
        ("--sim-threads", config.sim_threads),
        ("--sim-processes", config.sim_processes),
    )
    for flag, count in counts:
        if count > cores:
            raise ConfigError(
                f"{flag} {count} is more than the {cores} CPU cores of this machine: give at most {cores}"
            )


def probe_spaces(config: TrainConfig) -> tuple[gymnasium.Space, gymnasium.Space]:
    """Make learner 0's task once: an unknown id, a missing dependency or unusable spaces end here, in one line."""
    tasks = make_tasks(config, np.arange(1), envs_per_learner=1)
    try:
        check_spaces(tasks.observation_space, tasks.action_space)
        return tasks.observation_space, tasks.action_space
    finally:
        tasks.close()


def build_graph(config: TrainConfig, spaces: tuple[gymnasium.Space, gymnasium.Space]) -> nx.Graph:
    """The run's graph, once the memory of the whole run (graph included) is known to fit this machine."""
    try:
        if config.adjacency is not None:  # the run without its edges must fit before a large matrix file is read
            limits.check_memory(memory_sizes(config, spaces, 0), processes_here())
        matrix = (
            topologies.read_adjacency(config.adjacency, config.num_learners) if config.adjacency is not None else None
        )
        edges = (
            int(np.count_nonzero(np.triu(matrix, 1)))
            if matrix is not None
            else topologies.edge_count(config.topology, config.num_learners, config.edge_prob)
        )
        limits.check_memory(memory_sizes(config, spaces, edges), processes_here())
        graph = (
            topologies.graph_from_adjacency(matrix)
            if matrix is not None
            else topologies.resolve_graph(config.topology, None, config.num_learners, config.edge_prob, config.seed)
        )
        topologies.combination_weights(nx.empty_graph(1), config.weights)
    except topologies.TopologyError as err:
        raise ConfigError(str(err)) from None
    return graph


def memory_sizes(config: TrainConfig, spaces: tuple[gymnasium.Space, gymnasium.Space], edges: int) -> limits.Sizes:
    """What one process of this run holds: its block of learners under torchrun, every learner otherwise."""
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    method = method_class(config.method)
    kind = envs.family_of(config.env).simulator_kind
    return limits.Sizes(
        learners=-(-config.num_learners // world),
        total_learners=config.num_learners,
        sims=config.envs_per_learner,
        steps=config.steps_per_update,
        obs_dim=spaces[0].shape[0],
        action_dim=action_dim(spaces[1]),
        hidden=config.hidden,
        edges=edges,
        simulator_kind=kind,
        history=method.Options.of(config).parameter_copies(),
        gathers_all=method.gathers_all,
    )


def processes_here() -> int:
    """Processes of the run on this machine: torchrun's LOCAL_WORLD_SIZE, else one."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def check_new_run_dir(run_dir: Path, overwrite: bool, resume: bool = False) -> None:
    """A new run goes into a new or empty directory; --overwrite replaces an earlier run's files, never a user's.

    A --resume of a directory that holds only what a kill during the first config.json left starts the run.
    """
    files.check_name_lengths(run_dir, "--log-dir")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--log-dir {run_dir} is a file, not a directory: choose another --log-dir")
    if run_dir.is_dir():
        holds_run = (run_dir / "config.json").exists() or (run_dir / "config.json").is_symlink()
        if holds_run and not overwrite:
            raise ConfigError(
                f"{run_dir} already holds a run: choose another --log-dir, pass --overwrite, or continue it with --resume"
            )
        if not holds_run and not only_leftovers(run_dir, lock_only=not resume) and not overwrite:
            raise ConfigError(
                f"{run_dir} exists and is not empty: choose a new or empty --log-dir "
                "(--overwrite writes there anyway and removes only an earlier run's files)"
            )
        check_replaceable(run_dir, holds_run)
    check_writable(run_dir)


def check_writable(run_dir: Path) -> None:
    """Create a file where the run directory will be (in its nearest existing parent): the only test that is right for root and read-only mounts."""
    place = run_dir
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        with tempfile.TemporaryFile(dir=place):
            pass
    except OSError as err:
        raise ConfigError(
            f"cannot write to --log-dir {run_dir} ({place}: {err.strerror or err}): choose a directory you can write to"
        ) from None


def check_resume(config: TrainConfig) -> TrainConfig:
    """The run's own options, refusing any given option that differs from them.

    --total-steps may be raised, so that a finished run can be extended; nothing else that
    changes what the run computes may differ.
    """
    stored = resolve_defaults(TrainConfig.from_run(config.log_dir).validate())
    if config.adjacency is not None and config.adjacency == read_run_config(Path(config.log_dir)).get("adjacency_file"):
        config = dataclasses.replace(config, adjacency=stored.adjacency)  # the file the run read, kept as its matrix
    differ = dataclasses.replace(config, total_steps=stored.total_steps).differences(stored)
    if differ:
        raise ResumeError(
            f"--resume keeps the run's options, but these differ from {config.log_dir}/config.json: {'; '.join(differ)}"
        )
    if config.total_steps < stored.total_steps:
        raise ResumeError(
            f"--resume can raise --total-steps but not lower it: {config.log_dir} runs to {stored.total_steps} "
            f"(given {config.total_steps})"
        )
    if env_rank() == 0:
        for warning in provenance.version_warnings(read_run_config(Path(config.log_dir))):
            print(f"diffdac: warning: {warning}")
    return config


def default_run_dir(config: TrainConfig) -> Path:
    """runs/<env>-<graph>-s<seed>-<time>, claimed by creating it (empty), with -2, -3, ... when a run
    started in the same second has it: a loop of runs never collides. Under torchrun only rank 0's
    name is used, so only rank 0 claims one."""
    name = config.env.split("/")[-1]
    graph = config.topology or "adjacency"
    base = Path("runs") / f"{name}-{graph}-s{config.seed}-{datetime.now():%Y%m%d-%H%M%S}"
    if env_rank() != 0:
        return base
    path, taken = base, 1
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        while not _claim(path):
            taken += 1
            path = base.with_name(f"{base.name}-{taken}")
    except OSError as err:
        raise ConfigError(
            f"cannot create a run directory in {base.parent.resolve()} ({err.strerror or err}): give one with --log-dir"
        ) from None
    return path


def _claim(path: Path) -> bool:
    """Create `path`; False if it exists already (mkdir is atomic, so two runs never claim one name)."""
    try:
        path.mkdir()
        return True
    except FileExistsError:
        return False


def make_tasks(config: TrainConfig, learner_ids: np.ndarray, envs_per_learner: int | None = None) -> envs.TaskBatch:
    """The task batch of these learners; an id gymnasium cannot make is bad input, named in one line."""
    sims = config.envs_per_learner if envs_per_learner is None else envs_per_learner
    try:
        spec = envs.TaskSpec(
            config.env,
            config.seed,
            learner_ids,
            sims,
            task_seeding=config.task_seeding,
            mass_scaling=config.mass_scaling,
            sim_threads=config.sim_threads,
            sim_processes=config.sim_processes,
        )
        return envs.make_task_batch(spec)
    except envs.WorkerError as err:
        raise TrainingError(str(err)) from None
    except ValueError as err:
        raise ConfigError(str(err)) from None
    except (gymnasium.error.Error, ImportError) as err:
        if envs.needs_mujoco(config.env) and importlib.util.find_spec("mujoco") is None:
            raise ConfigError(f"{config.env} needs MuJoCo, which is an extra: pip install 'diffdac[mujoco]'") from None
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"cannot make environment {config.env}: {reason}") from None
