"""The learner loop: rollout -> adapt -> combine -> log, for a block of K learners."""

from __future__ import annotations

import collections
import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import gymnasium
import networkx as nx
import numpy as np
import torch
from tqdm import tqdm

import envs
import topologies
from diffdac import __version__, checkpoint, limits, memory
from diffdac.a2c import A2CLoss, a2c_loss, bootstrap_truncations, compute_returns
from diffdac.comm import Communicator, LocalCommunicator, check_world_size, learner_block
from diffdac.config import NORMALIZE_CHOICES, TrainConfig, read_run_config
from diffdac.diffusion import disagreement
from diffdac.distributed import PeerLost, env_rank
from diffdac.errors import CheckpointError, ConfigError, ResumeError, TrainingError
from diffdac.logs import RUN_FILES, MonitorSet, ProgressFile, check_rows, monitor_path, remove_run_files, write_json, write_matrix, write_tasks
from diffdac.methods import combination_matrix, logged_graph, make_mixer
from diffdac.normalize import RunningNorm
from diffdac.population import Population, action_dim, check_spaces

RECENT_EPISODES = 100  # mean_return: the last episodes of each process, whichever learners finished them
RECENT_PER_LEARNER = 10  # score: the last episodes of each learner


@dataclass
class Rollout:
    """Preallocated storage of one update: obs `[K, T, E, D]`, the rest `[T, K, E]`."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    truncated: torch.Tensor
    final_obs: torch.Tensor

    @classmethod
    def allocate(cls, pop: Population, steps: int, sims: int, device: torch.device) -> "Rollout":
        k = pop.num_learners
        action_shape = (pop.action_dim,) if pop.continuous else ()
        return cls(
            obs=torch.zeros(k, steps, sims, pop.obs_dim, device=device),
            actions=torch.zeros(steps, k, sims, *action_shape, device=device, dtype=torch.float32 if pop.continuous else torch.long),
            rewards=torch.zeros(steps, k, sims, device=device),
            dones=torch.zeros(steps, k, sims, device=device),
            truncated=torch.zeros(steps, k, sims, device=device),
            final_obs=torch.zeros(k, steps, sims, pop.obs_dim, device=device),
        )


class Learners:
    """A block of learners with their tasks, optimiser and normalisers: everything one rank runs."""

    def __init__(self, config: TrainConfig, graph: nx.Graph, comm: Communicator, tasks: envs.TaskBatch, learner_ids: np.ndarray) -> None:
        self.config = config
        self.comm = comm
        self.tasks = tasks
        self.learner_ids = learner_ids
        self.device = torch.device(config.device)
        self.pop = Population(
            tasks.observation_space, tasks.action_space, learner_ids, config.hidden, config.seed, config.separate_init, self.device
        )
        self.optimizer = torch.optim.RMSprop([self.pop.flat], lr=config.lr, alpha=config.rms_alpha, eps=config.rms_eps, foreach=False)
        self.mixer = make_mixer(config, comm, learner_ids, self.device, graph)
        self.mixer.start(self.pop.flat)
        k, e = len(learner_ids), config.envs_per_learner
        self.obs_norm = RunningNorm(k, (self.pop.obs_dim,), self.device) if "obs" in config.normalize else None
        self.ret_norm = RunningNorm(k, (), self.device) if "reward" in config.normalize else None
        self.discounted = torch.zeros(k, e, dtype=torch.float64, device=self.device)
        self.rollout = Rollout.allocate(self.pop, config.steps_per_update, e, self.device)
        self.obs = self._tensor(tasks.reset())
        self.updates = 0
        self.steps_per_update = config.num_learners * e * config.steps_per_update
        self.alive = np.ones(k, dtype=bool)

    @property
    def steps(self) -> int:
        """Env steps of the whole network so far."""
        return self.updates * self.steps_per_update

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=torch.float32, device=self.device)

    def _policy_input(self, obs: torch.Tensor) -> torch.Tensor:
        return obs if self.obs_norm is None else self.obs_norm.normalize(obs)

    def _scale_rewards(self, rewards: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
        """VecNormalize's reward scaling: divide by the std of a running discounted return."""
        if self.ret_norm is None:
            return rewards
        self.discounted = self.discounted * self.config.gamma + rewards
        self.ret_norm.update(self.discounted)
        self.discounted = self.discounted * (1.0 - dones.double())
        return self.ret_norm.normalize(rewards, center=False)

    def collect(self, monitors: MonitorSet, stats: "EpisodeStats") -> None:
        """Step every simulator `steps_per_update` times with actions drawn from keyed noise."""
        ro, cfg = self.rollout, self.config
        alive = self.mixer.alive(self.steps)
        for k in self.learner_ids[self.alive & ~alive]:
            print(f"diffdac: learner {k} left the graph at step {self.steps} (--fail-learner)")
        self.alive = alive
        for t in range(cfg.steps_per_update):
            if self.obs_norm is not None:
                self.obs_norm.update(self.obs)
            ro.obs[:, t] = self._policy_input(self.obs)
            actions = self.pop.act(ro.obs[:, t], cfg.seed, self.updates * cfg.steps_per_update + t)
            ro.actions[t] = actions
            result = self.tasks.step(actions.cpu().numpy())
            done = result.terminated | result.truncated
            ro.dones[t] = torch.from_numpy(done)  # copied into the buffer's dtype and device
            ro.rewards[t] = torch.from_numpy(result.reward)
            if self.ret_norm is not None:
                ro.rewards[t] = self._scale_rewards(ro.rewards[t], ro.dones[t])
            cut = bootstrapped(result.terminated, result.truncated, cfg.time_limit)
            if cut.any():
                ro.truncated[t] = torch.from_numpy(cut)
                ro.final_obs[:, t] = self._policy_input(self._tensor(result.final_obs))
            else:
                ro.truncated[t] = 0.0
            if done.any():
                stats.extend(monitors.record(result.episode_return, result.episode_length, done & self.alive[:, None]))
            self.obs = self._tensor(result.obs)

    def adapt(self) -> A2CLoss:
        """One A2C step per learner on its own rollout, gradients clipped per learner."""
        ro, cfg, pop = self.rollout, self.config, self.pop
        k, steps, sims, dim = ro.obs.shape
        obs = ro.obs.view(k, steps * sims, dim)
        actions = ro.actions.transpose(0, 1).reshape(k, steps * sims, *ro.actions.shape[3:])
        with torch.no_grad():
            next_value = pop.value(self._policy_input(self.obs))
            rewards = ro.rewards
            if ro.truncated.any():
                final_values = pop.value(ro.final_obs.view(k, steps * sims, dim)).view(k, steps, sims).transpose(0, 1)
                rewards = bootstrap_truncations(rewards, ro.truncated, final_values, cfg.gamma)
        params = pop.trainable()
        values = pop.value(obs, params)
        logp, entropy = pop.evaluate(obs, actions, params)
        advantages, returns = compute_returns(
            rewards, values.detach().view(k, steps, sims).transpose(0, 1), ro.dones, next_value, cfg.gamma, cfg.gae_lambda
        )
        loss = a2c_loss(
            logp, entropy, values, _learner_major(returns), _learner_major(advantages), cfg.value_coef, cfg.entropy_coef
        )
        self._check_finite(loss.total, "loss")
        pop.backward(loss.total.sum(), params)
        self._check_finite(pop.flat.grad, "gradient")
        self.mixer.reduce_gradient(pop.flat.grad)
        if not self.alive.all():  # a departed learner's parameters stay as they were
            pop.flat.grad[torch.from_numpy(~self.alive).to(self.device)] = 0.0
        if cfg.max_grad_norm > 0:
            clip_per_learner(pop.flat.grad, cfg.max_grad_norm)
        self.optimizer.step()
        self._check_finite(pop.flat.detach(), "parameters")
        self.updates += 1
        return loss

    def _check_finite(self, values: torch.Tensor, what: str) -> None:
        """Stop on a NaN or inf in any learner's row; one sum finds it (NaN and inf propagate) in one pass.

        A finite total can hide an inf row only by cancelling it with another inf, which gives NaN, so
        the per-row search runs only when the total is not finite.
        """
        if torch.isfinite(values.sum()):
            return
        bad = ~torch.isfinite(values.reshape(len(self.learner_ids), -1).sum(1))
        if bad.any():
            learner = int(self.learner_ids[int(bad.nonzero()[0, 0])])
            raise TrainingError(f"learner {learner} has non-finite {what} at update {self.updates + 1}: lower --lr or --max-grad-norm")

    @torch.no_grad()
    def combine(self, round_index: int) -> None:
        """Replace every learner's parameters (and shared normaliser statistics) as the method mixes them."""
        norms = self._diffused_norms()
        blocks = [self.pop.flat.detach()] + [block for norm in norms for block in norm.state()]
        mixed = self.mixer.combine(round_index, self.steps, blocks)
        self.pop.flat.copy_(mixed[0])
        for i, norm in enumerate(norms):
            norm.load_state(mixed[1 + 2 * i : 3 + 2 * i])

    def _diffused_norms(self) -> list[RunningNorm]:
        if self.config.local_normalizer:
            return []
        return [n for n in (self.obs_norm, self.ret_norm) if n is not None]

    def disagreement(self) -> float:
        """Over the learners still in the graph: a departed learner's frozen parameters are not a disagreement."""
        return disagreement(self.pop.flat.detach()[torch.from_numpy(self.alive).to(self.device)], self.comm.all_sum)

    def state_dict(self) -> dict:
        """Everything that makes the next update the same as in an uninterrupted run."""
        tasks = getattr(self.tasks, "state_dict", None)
        return {
            "learner_ids": torch.from_numpy(self.learner_ids),
            "params": self.pop.flat.detach().cpu(),
            "optimizer": self.optimizer.state_dict(),
            "obs_norm": None if self.obs_norm is None else self.obs_norm.state_dict(),
            "ret_norm": None if self.ret_norm is None else self.ret_norm.state_dict(),
            "discounted": self.discounted.cpu(),
            "obs": self.obs.cpu(),
            "updates": self.updates,
            "tasks": None if tasks is None else tasks(),
            "mixer": self.mixer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint; a task batch that cannot restore its simulators starts new episodes."""
        if not np.array_equal(state["learner_ids"].numpy(), self.learner_ids):
            raise ResumeError("the checkpoint holds other learners than this rank: resume with the run's number of processes")
        with torch.no_grad():
            self.pop.flat.copy_(state["params"].to(self.device))
        self.optimizer.load_state_dict(state["optimizer"])
        for norm, key in ((self.obs_norm, "obs_norm"), (self.ret_norm, "ret_norm")):
            if norm is not None:
                norm.load_state_dict(state[key])
        self.discounted = state["discounted"].to(self.device)
        self.updates = state["updates"]
        self.mixer.load_state_dict(state["mixer"])
        if state["tasks"] is not None and hasattr(self.tasks, "load_state_dict"):
            self.tasks.load_state_dict(state["tasks"])
            self.obs = state["obs"].to(self.device)
        else:
            self.discounted.zero_()


def bootstrapped(terminated: np.ndarray, truncated: np.ndarray, time_limit: str) -> np.ndarray:
    """Where the return goes on past the end of an episode: cut by its time limit, not ended by the task.

    A step that is both terminated and truncated (the goal reached at the last allowed step) ended
    in the task, so nothing is bootstrapped there. With `--time-limit terminal` (the original's
    choice) no step is.
    """
    if time_limit == "terminal":
        return np.zeros_like(truncated)
    return truncated & ~terminated


def _learner_major(x: torch.Tensor) -> torch.Tensor:
    """[T, K, E] -> [K, T*E], the order of the learners' flattened batches."""
    t, k, e = x.shape
    return x.permute(1, 0, 2).reshape(k, t * e)


def clip_per_learner(grad: torch.Tensor, max_norm: float) -> None:
    """Scale each learner's gradient row `[K, P]` to norm at most max_norm, as clip_grad_norm_ does for one model."""
    norms = grad.norm(dim=1, keepdim=True)
    grad.mul_((max_norm / (norms + 1e-6)).clamp(max=1.0))


class Prepared(NamedTuple):
    """A checked config with its defaults resolved, its graph and its run directory.

    `config.resume` is True only when the directory holds a run to continue: a --resume of a
    directory without one (a retry loop after a kill before config.json) starts a new run.
    """

    config: TrainConfig
    graph: nx.Graph
    run_dir: Path


def prepare(config: TrainConfig) -> Prepared:
    """Everything that can refuse the input, done once, before anything is allocated or written."""
    config = resolve_defaults(config.validate())
    check_machine(config)
    spaces = probe_spaces(config)
    graph = build_graph(config, spaces)
    run_dir = Path(config.log_dir) if config.log_dir else default_run_dir(config)
    if config.resume and (run_dir / "config.json").exists():
        return Prepared(check_resume(config), graph, run_dir)
    check_new_run_dir(run_dir, config.overwrite)
    if config.resume and env_rank() == 0:
        print(f"diffdac: {run_dir} holds no run yet: starting a new one")
    return Prepared(dataclasses.replace(config, resume=False), graph, run_dir)


def resolve_defaults(config: TrainConfig) -> TrainConfig:
    """Options whose default depends on the task: --normalize is obs,reward for MuJoCo tasks."""
    if config.normalize is None:
        normalize = NORMALIZE_CHOICES if _is_mujoco(config.env) else ()
    else:
        normalize = tuple(n for n in config.normalize if n != "none")
    return dataclasses.replace(config, normalize=normalize)


def _is_mujoco(env_id: str) -> bool:
    spec = gymnasium.registry.get(env_id)
    entry = getattr(spec, "entry_point", "")
    return "mujoco" in (entry if isinstance(entry, str) else getattr(entry, "__module__", ""))


def check_machine(config: TrainConfig) -> None:
    """Options this machine cannot serve: CUDA without a GPU, more threads than cores (torch crashes on absurd counts)."""
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but torch sees no CUDA device here (torch.cuda.is_available() is False): use --device cpu")
    cores = os.cpu_count() or 1
    if config.threads > cores:
        raise ConfigError(f"--threads {config.threads} is more than the {cores} CPU cores of this machine: give at most {cores}")


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
        matrix = topologies.read_adjacency(config.adjacency, config.num_learners) if config.adjacency is not None else None
        edges = int(np.count_nonzero(np.triu(matrix, 1))) if matrix is not None else topologies.edge_count(
            config.topology, config.num_learners, config.edge_prob)
        limits.check_memory(memory_sizes(config, spaces, edges), processes_here())
        graph = topologies.graph_from_adjacency(matrix) if matrix is not None else topologies.resolve_graph(
            config.topology, None, config.num_learners, config.edge_prob, config.seed)
        topologies.combination_weights(nx.empty_graph(1), config.weights)
    except topologies.TopologyError as err:
        raise ConfigError(str(err)) from None
    return graph


def memory_sizes(config: TrainConfig, spaces: tuple[gymnasium.Space, gymnasium.Space], edges: int) -> limits.Sizes:
    """What one process of this run holds: its block of learners under torchrun, every learner otherwise."""
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    kind = "batched" if envs.is_batched_acrobot(config.env) else "mujoco" if _is_mujoco(config.env) else "gym"
    return limits.Sizes(
        learners=-(-config.num_learners // world), total_learners=config.num_learners, sims=config.envs_per_learner,
        steps=config.steps_per_update, obs_dim=spaces[0].shape[0], action_dim=action_dim(spaces[1]), hidden=config.hidden,
        edges=edges, simulator_kind=kind, history=config.max_staleness + 1, gathers_all=config.method == "centralized",
    )


def processes_here() -> int:
    """Processes of the run on this machine: torchrun's LOCAL_WORLD_SIZE, else one."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def check_new_run_dir(run_dir: Path, overwrite: bool) -> None:
    """A new run goes into a new or empty directory; --overwrite replaces an earlier run's files, never a user's."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--log-dir {run_dir} is a file, not a directory: choose another --log-dir")
    if run_dir.is_dir():
        holds_run = (run_dir / "config.json").exists()
        if holds_run and not overwrite:
            raise ConfigError(f"{run_dir} already holds a run: choose another --log-dir, pass --overwrite, or continue it with --resume")
        if not holds_run and any(run_dir.iterdir()):
            if not overwrite:
                raise ConfigError(f"{run_dir} exists and is not empty: choose a new or empty --log-dir "
                                  "(--overwrite writes there anyway and removes only an earlier run's files)")
            clash = next((name for name in RUN_FILES if (run_dir / name).exists()), None)
            if clash:
                raise ConfigError(f"{run_dir / clash} is not from a diffdac run and a run would replace it: move it or choose another --log-dir")
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
        raise ConfigError(f"cannot write to --log-dir {run_dir} ({place}: {err.strerror or err}): choose a directory you can write to") from None


def check_resume(config: TrainConfig) -> TrainConfig:
    """The run's own options, refusing any given option that differs from them."""
    stored = resolve_defaults(TrainConfig.from_run(config.log_dir).validate())
    differ = config.differences(stored)
    if differ:
        raise ResumeError(f"--resume keeps the run's options, but these differ from {config.log_dir}/config.json: {'; '.join(differ)}")
    return config


def default_run_dir(config: TrainConfig) -> Path:
    name = config.env.split("/")[-1]
    graph = config.topology or "adjacency"
    return Path("runs") / f"{name}-{graph}-s{config.seed}-{datetime.now():%Y%m%d-%H%M%S}"


def make_tasks(config: TrainConfig, learner_ids: np.ndarray, envs_per_learner: int | None = None) -> envs.TaskBatch:
    """The task batch of these learners; an id gymnasium cannot make is bad input, named in one line."""
    sims = config.envs_per_learner if envs_per_learner is None else envs_per_learner
    try:
        return envs.make_task_batch(config.env, config.seed, learner_ids, sims, config.task_seeding, config.mass_scaling)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    except (gymnasium.error.Error, ImportError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"cannot make environment {config.env}: {reason}") from None


def write_run_files(run_dir: Path, config: TrainConfig, graph: nx.Graph, tasks: list[dict], world_size: int) -> None:
    """config.json, topology.csv, combination.csv and tasks.csv (all learners' tasks, in order).

    An earlier run's logs and checkpoints here (--overwrite) are removed first, so that a later
    --resume can never pick up another run's checkpoint; files diffdac did not write stay.
    """
    remove_run_files(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stored = {k: v for k, v in config.to_dict().items() if k not in ("resume", "overwrite")}
    write_json(run_dir / "config.json", {**stored, "version": __version__, "world_size": world_size})
    write_matrix(run_dir / "topology.csv", nx.to_numpy_array(logged_graph(config, graph), nodelist=range(config.num_learners), dtype=int))
    write_matrix(run_dir / "combination.csv", combination_matrix(config, graph))
    write_tasks(run_dir / "tasks.csv", config.env, range(config.num_learners), tasks)


def train(config: TrainConfig, comm: Communicator | None = None) -> Path:
    """Train config.num_learners learners by diffusion and return the run directory.

    `comm` connects the processes of a torchrun world; without it this process hosts every learner.
    With `config.resume`, the run in `config.log_dir` continues from its newest checkpoint that loads.
    """
    return run(prepare(config), comm or LocalCommunicator())


def run(prepared: Prepared, comm: Communicator) -> Path:
    """Train a prepared run (see `prepare`) as this rank of `comm`'s world; returns the run directory."""
    config, graph = prepared.config, prepared.graph
    check_world_size(comm.world_size, config.num_learners)
    run_dir = Path(comm.gather_objects(str(prepared.run_dir))[0])  # rank 0's name: default names carry a time stamp
    lead = comm.rank == 0
    learner_ids = learner_block(comm.rank, comm.world_size, config.num_learners)
    tasks = make_tasks(config, learner_ids)
    torch.set_num_threads(config.threads)
    memory.keep_freed_memory()
    learners = Learners(config, graph, comm, tasks, learner_ids)
    saved = restore(learners, run_dir) if config.resume else None
    if saved is not None and saved["manifest"].complete:
        if lead:
            print(f"diffdac: {run_dir} is already complete ({saved['manifest'].steps} env steps): nothing to resume")
        tasks.close()
        return run_dir
    state = LoopState.from_saved(saved, config)
    check_logs(learners, run_dir, state)
    warning = topologies.disconnection_warning(graph)
    if warning and config.topology != "none" and config.method == "diff-a2c" and lead and saved is None:
        print(f"diffdac: warning: {warning}")
    if lead and saved is None and config.steps_to_run != config.total_steps:
        print(f"diffdac: --total-steps {config.total_steps} is not a multiple of the {config.steps_per_update_all} env steps "
              f"of one update: the run makes {config.steps_to_run}")
    all_tasks = [task for block in comm.gather_objects(list(tasks.tasks)) for task in block]
    comm.barrier()  # every rank has checked the directory before rank 0 writes into it
    if lead and saved is None:
        write_run_files(run_dir, config, graph, all_tasks, comm.world_size)
    comm.barrier()
    run_loop(learners, run_dir, state)
    return run_dir


def restore(learners: Learners, run_dir: Path) -> dict | None:
    """Load the newest checkpoint that every rank can load into `learners`; None when the run has none yet.

    An unreadable checkpoint (truncated, edited, planted) is skipped with one line saying why, and
    the one before it is tried; only when none loads does resume fail. Returns the checkpoint's
    state with its manifest under "manifest".
    """
    comm = learners.comm
    lead = comm.rank == 0
    found, problems = comm.gather_objects(checkpoint.scan(run_dir) if lead else None)[0]  # other machines may not see rank 0's files
    world_size = read_run_config(run_dir).get("world_size", 1)
    if found and world_size != comm.world_size:
        raise ResumeError(f"{run_dir} was trained by {world_size} processes: resume it with {world_size}, not {comm.world_size}")
    if lead:
        for problem in problems:
            print(f"diffdac: skipping {problem}")
    skipped = list(problems)
    for manifest in reversed(found):
        error, saved = None, None
        try:
            saved = checkpoint.load_rank(run_dir, manifest, comm.rank, learners.device)
            learners.load_state_dict(saved["learners"])
            LoopState.from_saved(saved, learners.config)
        except (CheckpointError, KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
            error = str(err) if isinstance(err, CheckpointError) else f"{checkpoint.rank_path(run_dir, manifest.steps, comm.rank)} does not fit this run ({type(err).__name__}: {err})"
        errors = [e for e in comm.gather_objects(error) if e]
        if not errors:
            return {**saved, "manifest": manifest}
        skipped.append(errors[0])
        if lead:
            print(f"diffdac: skipping the checkpoint at step {manifest.steps}: {errors[0]}")
    if skipped:
        raise ResumeError(f"no checkpoint of {run_dir} can be loaded ({skipped[-1]}): start the run again with --overwrite instead of --resume")
    if lead:
        print(f"diffdac: {run_dir} has no checkpoint yet: starting it again from step 0")
    return None


def check_logs(learners: Learners, run_dir: Path, state: LoopState) -> None:
    """Before any log is cut back to a checkpoint, every rank checks that all of its logs can be."""
    if state.monitor_rows is None:
        return
    error = None
    try:
        for i, learner in enumerate(learners.learner_ids):
            for sim, rows in enumerate(state.monitor_rows[i]):
                check_rows(monitor_path(run_dir, int(learner), sim), 2, rows)
        if state.progress_rows is not None:
            check_rows(run_dir / "progress.csv", 1, state.progress_rows)
    except ResumeError as err:
        error = str(err)
    errors = [e for e in learners.comm.gather_objects(error) if e]
    if errors:
        raise ResumeError(errors[0])


@dataclass
class LoopState:
    """Where the loop stands: saved in every checkpoint so a resumed run logs exactly what an uninterrupted one would."""

    update: int
    elapsed: float
    next_log: int
    next_save: int
    recent: list[float]
    episodes: int
    recent_by_learner: list[list[float]]  # each of this rank's learners' last episodes, for the task-weighted score
    monitor_rows: list[list[int]] | None  # rows of this rank's Monitor files; None for a new run
    progress_rows: int | None  # rows of progress.csv (rank 0)

    @classmethod
    def from_saved(cls, saved: dict | None, config: TrainConfig) -> "LoopState":
        """A new run's state, or the checkpoint's, checked field by field (a checkpoint is untrusted input)."""
        if saved is None:
            return cls(0, 0.0, config.log_interval, config.save_every, [], 0, [], None, None)
        values = {"recent_by_learner": [], **saved["loop"]}  # checkpoints from before the score have none
        names = [f.name for f in dataclasses.fields(cls)]
        if sorted(values) != sorted(names):
            raise CheckpointError(f"the checkpoint's loop state has the keys {sorted(values)}, not {names}")
        state = cls(**values)
        counts = [state.update, state.next_log, state.next_save, state.episodes]
        if not all(type(v) is int and v >= 0 for v in counts) or not isinstance(state.elapsed, float):
            raise CheckpointError("the checkpoint's loop counters are not non-negative integers")
        if not all(isinstance(r, float) for r in state.recent) or not all(
                isinstance(row, list) and all(isinstance(r, float) for r in row) for row in state.recent_by_learner):
            raise CheckpointError("the checkpoint's recent returns are not numbers")
        return state


def run_loop(learners: Learners, run_dir: Path, state: LoopState) -> None:
    """Repeat rollout -> adapt -> combine, logging every log_interval and saving every save_every env steps."""
    cfg, comm = learners.config, learners.comm
    lead = comm.rank == 0
    steps_per_update = cfg.num_learners * cfg.envs_per_learner * cfg.steps_per_update
    num_updates = max(1, cfg.total_steps // steps_per_update)
    monitors = MonitorSet(run_dir, cfg.env, learners.learner_ids, cfg.envs_per_learner, learners.tasks.tasks, state.monitor_rows)
    progress = ProgressFile(run_dir / "progress.csv", state.progress_rows) if lead else None
    stats = EpisodeStats(len(learners.learner_ids), state.recent, state.episodes, state.recent_by_learner)
    start, row, update = time.time() - state.elapsed, {}, state.update
    bar = tqdm(total=num_updates * steps_per_update, initial=state.update * steps_per_update, unit="step", unit_scale=True,
               disable=None if cfg.progress and lead else True, dynamic_ncols=True)
    last_saved = checkpoint.latest(run_dir) if lead else None
    try:
        for update in range(state.update + 1, num_updates + 1):
            learners.collect(monitors, stats)
            loss = learners.adapt()
            if update % cfg.combine_every == 0:
                learners.combine(update // cfg.combine_every - 1)
            bar.update(steps_per_update)
            steps = update * steps_per_update
            if steps >= state.next_log or update == num_updates:
                state.next_log += cfg.log_interval
                row = progress_row(learners, loss, stats, steps, update, time.time() - start)
                if progress is not None:
                    progress.write(row)
                bar.set_postfix(score=f"{row['score']:.1f}", refresh=False)
            if steps >= state.next_save or update == num_updates:
                state.next_save += cfg.save_every
                state = LoopState(update, time.time() - start, state.next_log, state.next_save, list(stats.recent), stats.count,
                                  [list(r) for r in stats.by_learner], monitors.rows(), progress.rows if progress is not None else None)
                last_saved = save_checkpoint(learners, run_dir, state, steps, complete=update == num_updates)
    except PeerLost as err:
        raise err.at_update(update) from None
    except TrainingError as err:
        where = f"the last good checkpoint is at step {last_saved.steps}" if last_saved else "no checkpoint was saved before it"
        raise TrainingError(f"{err}; {where} in {checkpoint.checkpoint_dir(run_dir)}") from None
    finally:
        bar.close()
        monitors.close()
        if progress is not None:
            progress.close()
    if lead:
        print(f"diffdac: {row['steps']} env steps in {row['time']:.1f}s; score {row['score']:.1f} (mean over learners of each one's "
              f"last {RECENT_PER_LEARNER} episodes); mean return of the last {RECENT_EPISODES} episodes (of each process) "
              f"{row['mean_return']:.1f}; logs in {run_dir}")


def save_checkpoint(learners: Learners, run_dir: Path, state: LoopState, steps: int, complete: bool) -> checkpoint.Manifest:
    """Every rank writes its file; after the barrier rank 0 declares the checkpoint valid."""
    comm, cfg = learners.comm, learners.config
    checkpoint.save_rank(run_dir, steps, comm.rank, {"learners": learners.state_dict(), "loop": dataclasses.asdict(state)})
    comm.barrier()
    manifest = checkpoint.Manifest(steps, state.update, comm.world_size, complete)
    if comm.rank == 0:
        checkpoint.commit(run_dir, manifest, cfg.keep_checkpoints)
    checkpoint.prune_rank(run_dir, comm.rank, cfg.keep_checkpoints, steps)
    return manifest


class EpisodeStats:
    """Returns of the last finished episodes (of this rank, and of each of its learners) and how many finished in all."""

    def __init__(self, num_learners: int, recent: list[float] = (), count: int = 0, by_learner: list[list[float]] = ()) -> None:
        self.recent: collections.deque[float] = collections.deque(recent, maxlen=RECENT_EPISODES)
        self.count = count
        rows = list(by_learner) if len(by_learner) == num_learners else [[] for _ in range(num_learners)]
        self.by_learner = [collections.deque(row, maxlen=RECENT_PER_LEARNER) for row in rows]

    def extend(self, finished: list[tuple[int, float]]) -> None:
        """Episodes that just ended, as (this rank's learner index, return) in learner and simulator order."""
        for k, ret in finished:
            self.recent.append(ret)
            self.by_learner[k].append(ret)
        self.count += len(finished)

    def learner_means(self) -> tuple[np.ndarray, np.ndarray]:
        """Each learner's mean recent return (0 where it has none yet) and how many episodes it rests on."""
        counts = np.array([len(row) for row in self.by_learner], dtype=np.float64)
        means = np.array([sum(row) / len(row) if row else 0.0 for row in self.by_learner], dtype=np.float64)
        return means, counts


def task_weighted_score(learners: Learners, stats: EpisodeStats) -> float:
    """The mean over learners (those still in the graph, with an episode) of each one's mean recent return.

    Every task counts once, however many episodes it finishes; and the learners' means are placed
    in one vector of all N learners before they are averaged, so the score is the same to the last
    bit whatever the number of processes.
    """
    n, ids = learners.config.num_learners, torch.from_numpy(learners.learner_ids)
    means, counts = stats.learner_means()
    local = torch.zeros(2, n, dtype=torch.float64)
    local[0, ids] = torch.from_numpy(means)
    local[1, ids] = torch.from_numpy(counts * learners.alive)
    every = learners.comm.all_sum(local.to(learners.device)).cpu().numpy()
    scored = every[1] > 0
    return float(every[0][scored].mean()) if scored.any() else float("nan")


def progress_row(learners: Learners, loss: A2CLoss, stats: EpisodeStats, steps: int, update: int, elapsed: float) -> dict[str, float]:
    """One progress.csv row; sums over processes so every rank contributes its learners."""
    local = torch.tensor(
        [sum(stats.recent), len(stats.recent), stats.count, float(loss.policy.sum()), float(loss.value.sum()), float(loss.entropy.sum()),
         float(learners.alive.sum())],
        dtype=torch.float64,
    )
    ret_sum, ret_count, episodes, policy, value, entropy, alive = learners.comm.all_sum(local.to(learners.device)).tolist()
    n = learners.config.num_learners
    return {
        "steps": steps,
        "updates": update,
        "time": round(elapsed, 3),
        "score": task_weighted_score(learners, stats),
        "mean_return": ret_sum / ret_count if ret_count else float("nan"),
        "episodes": int(episodes),
        "policy_loss": policy / n,
        "value_loss": value / n,
        "entropy": entropy / n,
        "disagreement": learners.disagreement(),
        "learners": int(alive),
        "links": learners.mixer.links,
        "steps_per_s": round(steps / max(elapsed, 1e-9), 1),
    }
