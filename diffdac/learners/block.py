"""The learner block: K actor-learners with their tasks, rollout storage, optimiser, normalisers and method.

One rank runs one block. Its loop is collect -> adapt -> combine: `collect` steps every simulator
with actions from keyed noise, `adapt` is one A2C step per learner (losses reduced per learner,
gradients clipped per learner, one RMSprop step on the stacked parameters), `combine` hands the
adapted parameters to the method's Mixer. Which learners have left the graph (--fail-learner) is
decided here and nowhere else: a departed learner stops logging and adapting, and the mixer is
told who is left.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

import envs
from diffdac.learners import kernels
from diffdac.learners.a2c import A2CLoss, a2c_loss, bootstrap_truncations, compute_returns
from diffdac.network.comm import Communicator
from diffdac.config import TrainConfig
from diffdac.network.mixing import disagreement
from diffdac.errors import ResumeError, TrainingError
from diffdac.network.methods import Method
from diffdac.learners.normalize import RunningNorm
from diffdac.learners.population import Population
from diffdac.metrics import Metrics

RECENT_EPISODES = 100  # mean_return: the last episodes of each process, whichever learners finished them
RECENT_PER_LEARNER = 10  # score: the last episodes of each learner

# Called in the step that ends episodes: returns [K, E], lengths [K, E], which ended [K, E].
EpisodeSink = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


@dataclass
class Rollout:
    """Preallocated storage of one update, learner-major as the network takes it: `[K, T, E, ...]` every tensor."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    truncated: torch.Tensor
    final_obs: torch.Tensor

    @classmethod
    def allocate(cls, pop: Population, steps: int, sims: int, device: torch.device) -> "Rollout":
        shape = (pop.num_learners, steps, sims)
        action_shape = (pop.action_dim,) if pop.continuous else ()
        action_dtype = torch.float32 if pop.continuous else torch.long
        return cls(
            obs=torch.zeros(*shape, pop.obs_dim, device=device),
            actions=torch.zeros(*shape, *action_shape, device=device, dtype=action_dtype),
            rewards=torch.zeros(shape, device=device),
            dones=torch.zeros(shape, device=device),
            truncated=torch.zeros(shape, device=device),
            final_obs=torch.zeros(*shape, pop.obs_dim, device=device),
        )


@dataclass
class RolloutBatch:
    """A rollout as one update trains on: obs `[K, T * E, D]` and actions `[K, T * E, ...]` (views of the
    rollout's storage), rewards `[K, T, E]` with truncated steps bootstrapped, dones `[K, T, E]`, next_value
    `[K, E]` after the last step."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    next_value: torch.Tensor


class Learners:
    """A block of learners with their tasks, optimiser and normalisers: everything one rank runs."""

    def __init__(
        self, config: TrainConfig, method: Method, comm: Communicator, tasks: envs.TaskBatch, learner_ids: np.ndarray
    ) -> None:
        self.config = config
        self.comm = comm
        self.tasks = tasks
        self.learner_ids = learner_ids
        self.device = torch.device(config.device)
        self.pop = Population(
            tasks.observation_space,
            tasks.action_space,
            learner_ids,
            config.hidden,
            config.seed,
            config.separate_init,
            self.device,
        )
        self.optimizer = torch.optim.RMSprop(
            [self.pop.flat], lr=config.lr, alpha=config.rms_alpha, eps=config.rms_eps, foreach=False
        )
        if self.device.type == "cpu":
            kernels.warm_up()
        self.mixer = method.mixer(comm, learner_ids, self.device)
        self.mixer.start(self.pop.flat)
        k, e = len(learner_ids), config.envs_per_learner
        self.obs_norm = RunningNorm(k, (self.pop.obs_dim,), self.device) if "obs" in config.normalize else None
        self.ret_norm = RunningNorm(k, (), self.device) if "reward" in config.normalize else None
        self.discounted = torch.zeros(k, e, dtype=torch.float64, device=self.device)
        self.rollout = Rollout.allocate(self.pop, config.steps_per_update, e, self.device)
        self.obs = self._tensor(tasks.reset())
        self.updates = 0
        self.failures = method.options.failures(config.num_learners)  # learner -> env step at which it leaves the graph
        self.alive = np.ones(k, dtype=bool)
        self.last_loss: A2CLoss | None = None
        self.metrics = Metrics(config.num_learners)
        self._declare_metrics()

    def _declare_metrics(self) -> None:
        """progress.csv's columns after the score: the last update's losses, then the graph's state."""
        for term in ("policy", "value"):
            self.metrics.declare(f"{term}_loss", "per_learner", sample=lambda t=term: self._loss_sum(t))
        self.metrics.declare("entropy", "per_learner", sample=lambda: self._loss_sum("entropy"))
        self.metrics.declare("disagreement", "same", sample=self.disagreement)
        self.metrics.declare("learners", "sum", sample=lambda: float(self.alive.sum()), integer=True)
        self.mixer.declare(self.metrics)

    def _loss_sum(self, term: str) -> float:
        """One term of the last update's loss, summed over this block's learners."""
        return float(getattr(self.last_loss, term).sum()) if self.last_loss is not None else float("nan")

    @property
    def steps(self) -> int:
        """Env steps of the whole network so far."""
        return self.updates * self.config.steps_per_update_all

    def alive_at(self, steps: int) -> np.ndarray:
        """Which learners of the whole network `[N]` still take part at env step `steps`."""
        alive = np.ones(self.config.num_learners, dtype=bool)
        for k, at in self.failures.items():
            alive[k] = steps < at
        return alive

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

    def collect(self, record: EpisodeSink) -> None:
        """Step every simulator `steps_per_update` times with actions drawn from keyed noise.

        `record` gets the episodes of the learners still in the graph in the step that ends them.
        """
        ro, cfg = self.rollout, self.config
        alive = self.alive_at(self.steps)[self.learner_ids]
        for k in self.learner_ids[self.alive & ~alive]:
            print(f"diffdac: learner {k} left the graph at step {self.steps} (--fail-learner)")
        self.alive = alive
        for t in range(cfg.steps_per_update):
            if self.obs_norm is not None:
                self.obs_norm.update(self.obs)
            ro.obs[:, t] = self._policy_input(self.obs)
            actions = self.pop.act(ro.obs[:, t], cfg.seed, self.updates * cfg.steps_per_update + t)
            ro.actions[:, t] = actions
            try:
                result = self.tasks.step(actions.cpu().numpy())
            except envs.WorkerError as err:  # a --sim-processes worker failed or died
                raise TrainingError(f"{err} at update {self.updates + 1}") from None
            done = result.terminated | result.truncated
            ro.dones[:, t] = torch.from_numpy(done)  # copied into the buffer's dtype and device
            ro.rewards[:, t] = torch.from_numpy(result.reward)
            if self.ret_norm is not None:
                ro.rewards[:, t] = self._scale_rewards(ro.rewards[:, t], ro.dones[:, t])
            cut = bootstrapped(result.terminated, result.truncated, cfg.time_limit)
            if cut.any():
                ro.truncated[:, t] = torch.from_numpy(cut)
                ro.final_obs[:, t] = self._policy_input(self._tensor(result.final_obs))
            else:
                ro.truncated[:, t] = 0.0
            if done.any():
                record(result.episode_return, result.episode_length, done & self.alive[:, None])
            self.obs = self._tensor(result.obs)

    def adapt(self) -> A2CLoss:
        """One A2C step per learner on its own rollout, gradients clipped per learner."""
        cfg, pop = self.config, self.pop
        batch = self.rollout_batch()
        params = pop.trainable()
        values = pop.value(batch.obs, params)
        logp, entropy = pop.evaluate(batch.obs, batch.actions, params)
        loss = self.loss(batch, values, logp, entropy)
        self._check_finite(loss.total, "loss")
        pop.backward(loss.total.sum(), params)
        self._check_finite(pop.flat.grad, "gradient")
        self.mixer.reduce_gradient(pop.flat.grad)
        if not self.alive.all():  # a departed learner's parameters stay as they were
            pop.flat.grad[torch.from_numpy(~self.alive).to(self.device)] = 0.0
        self._stop_if(kernels.clip_and_step(self.optimizer, pop.flat, cfg.max_grad_norm), "parameters")
        self.updates += 1
        self.last_loss = loss
        return loss

    def rollout_batch(self) -> RolloutBatch:
        """The rollout as the network takes it, `[K, T * E, ...]`, with the rewards and values the returns need."""
        ro, pop = self.rollout, self.pop
        k, steps, sims, dim = ro.obs.shape
        with torch.no_grad():
            next_value = pop.value(self._policy_input(self.obs))
            rewards = ro.rewards
            if ro.truncated.any():
                final_values = pop.value(ro.final_obs.view(k, steps * sims, dim)).view(k, steps, sims)
                rewards = bootstrap_truncations(rewards, ro.truncated, final_values, self.config.gamma)
        actions = ro.actions.view(k, steps * sims, *ro.actions.shape[3:])
        return RolloutBatch(ro.obs.view(k, steps * sims, dim), actions, rewards, ro.dones, next_value)

    def loss(self, batch: RolloutBatch, values: torch.Tensor, logp: torch.Tensor, entropy: torch.Tensor) -> A2CLoss:
        """The A2C loss of `batch` from the network's values, log-probabilities and entropies `[K, T * E]`."""
        cfg, flat, by_step = self.config, values.shape, batch.rewards.shape
        advantages, returns = compute_returns(
            batch.rewards, values.detach().view(by_step), batch.dones, batch.next_value, cfg.gamma, cfg.gae_lambda
        )
        return a2c_loss(
            logp, entropy, values, returns.reshape(flat), advantages.reshape(flat), cfg.value_coef, cfg.entropy_coef
        )

    def _check_finite(self, values: torch.Tensor, what: str) -> None:
        """Stop on a NaN or inf in any learner's row."""
        self._stop_if(kernels.first_non_finite_row(values), what)

    def _stop_if(self, row: int, what: str) -> None:
        """Raise TrainingError for learner row `row` of this block (none if it is -1)."""
        if row >= 0:
            learner = int(self.learner_ids[row])
            raise TrainingError(
                f"learner {learner} has non-finite {what} at update {self.updates + 1}: lower --lr or --max-grad-norm"
            )

    @torch.no_grad()
    def combine(self, round_index: int) -> None:
        """Replace every learner's parameters (and shared normaliser statistics) as the method mixes them."""
        norms = self._diffused_norms()
        blocks = [self.pop.flat.detach()] + [block for norm in norms for block in norm.state()]
        mixed = self.mixer.combine(round_index, self.alive_at(self.steps), blocks)
        self.pop.flat.copy_(mixed[0])
        for i, norm in enumerate(norms):
            norm.load_state(mixed[1 + 2 * i : 3 + 2 * i])

    def _diffused_norms(self) -> list[RunningNorm]:
        if self.config.local_normalizer:
            return []
        return [n for n in (self.obs_norm, self.ret_norm) if n is not None]

    def disagreement(self) -> float:
        """Over the learners still in the graph: a departed learner's frozen parameters are not a disagreement."""
        block = self.pop.flat.detach()
        if not self.alive.all():  # a copy of the rows; in the usual case none is needed
            block = block[torch.from_numpy(self.alive).to(self.device)]
        return disagreement(block, self.comm.all_sum)

    def state_dict(self) -> dict:
        """Everything that makes the next update the same as in an uninterrupted run."""
        return {
            "learner_ids": torch.from_numpy(self.learner_ids),
            "params": self.pop.flat.detach().cpu(),
            "optimizer": self.optimizer.state_dict(),
            "obs_norm": None if self.obs_norm is None else self.obs_norm.state_dict(),
            "ret_norm": None if self.ret_norm is None else self.ret_norm.state_dict(),
            "discounted": self.discounted.cpu(),
            "obs": self.obs.cpu(),
            "updates": self.updates,
            "tasks": self.tasks.state_dict(),
            "mixer": self.mixer.state_dict(),
            "metrics": self.metrics.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint; a task batch that cannot restore its simulators starts new episodes."""
        if not np.array_equal(state["learner_ids"].numpy(), self.learner_ids):
            raise ResumeError(
                "the checkpoint holds other learners than this rank: resume with the run's number of processes"
            )
        with torch.no_grad():
            self.pop.flat.copy_(state["params"].to(self.device))
        self.optimizer.load_state_dict(state["optimizer"])
        for norm, key in ((self.obs_norm, "obs_norm"), (self.ret_norm, "ret_norm")):
            if norm is not None:
                norm.load_state_dict(state[key])
        self.discounted = state["discounted"].to(self.device)
        self.updates = state["updates"]
        self.mixer.load_state_dict(state["mixer"])
        self.metrics.load_state_dict(state.get("metrics", {}))  # checkpoints from before the metrics have none
        if state["tasks"] is not None:
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


class EpisodeStats:
    """Returns of the last finished episodes (of this rank, and of each of its learners) and how many finished in all."""

    def __init__(
        self, num_learners: int, recent: list[float] = (), count: int = 0, by_learner: list[list[float]] = ()
    ) -> None:
        self.recent: collections.deque[float] = collections.deque(recent, maxlen=RECENT_EPISODES)
        self.count = count
        rows = list(by_learner) if len(by_learner) == num_learners else [[] for _ in range(num_learners)]
        self.by_learner = [collections.deque(row, maxlen=RECENT_PER_LEARNER) for row in rows]

    def record(self, episode_return: np.ndarray, episode_length: np.ndarray, done: np.ndarray) -> None:
        """Episodes that just ended (`done: [K, E]`), taken in learner and simulator order."""
        for k, e in zip(*np.nonzero(done)):
            ret = float(episode_return[k, e])
            self.recent.append(ret)
            self.by_learner[k].append(ret)
            self.count += 1

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
