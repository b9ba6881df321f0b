"""K learners' actor and critic parameters stacked on a leading learner axis.

All parameters of a block live in one leaf tensor `flat: [K, P]`; layers are views into it.
That makes the forward pass a batched matmul, RMSprop (elementwise) a single optimizer over
the block with per-learner state, per-learner clipping one row-norm, and the combine step one
sparse matmul over the learner axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from diffdac import noise
from diffdac.learners import kernels
from diffdac.errors import ConfigError

# Orthogonal gains of the original's MLP base (Kostrikov's pytorch-a2c-ppo-acktr-gail).
HIDDEN_GAIN = math.sqrt(2)
CATEGORICAL_GAIN = 0.01
GAUSSIAN_GAIN = 1.0

Params = dict[str, torch.Tensor]  # parameter name -> [K, *shape]


@dataclass(frozen=True)
class ParamSpec:
    """Where one per-learner parameter lives inside a row of `flat`."""

    name: str
    shape: tuple[int, ...]
    offset: int
    gain: float | None  # orthogonal gain for weights; None for zero-initialised tensors

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _layout(obs_dim: int, hidden: int, action_dim: int, continuous: bool) -> list[ParamSpec]:
    """Actor and critic as two separate tanh MLPs (in -> h -> h -> out), weights stored [in, out]."""
    shapes: list[tuple[str, tuple[int, ...], float | None]] = []
    head_gain = GAUSSIAN_GAIN if continuous else CATEGORICAL_GAIN
    for net, out, gain in (("actor", action_dim, head_gain), ("critic", 1, HIDDEN_GAIN)):
        sizes = [obs_dim, hidden, hidden, out]
        for i in range(3):
            layer_gain = gain if i == 2 else HIDDEN_GAIN
            shapes.append((f"{net}.{i}.weight", (sizes[i], sizes[i + 1]), layer_gain))
            shapes.append((f"{net}.{i}.bias", (1, sizes[i + 1]), None))
    if continuous:
        shapes.append(("actor.log_std", (1, action_dim), None))
    specs, offset = [], 0
    for name, shape, gain in shapes:
        specs.append(ParamSpec(name, shape, offset, gain))
        offset += math.prod(shape)
    return specs


def parameter_count(obs_dim: int, hidden: int, action_dim: int, continuous: bool = True) -> int:
    """Parameters of one learner (actor and critic, and a log-std per action dimension when continuous)."""
    return sum(s.numel for s in _layout(obs_dim, hidden, action_dim, continuous))


def check_spaces(observation_space: gym.Space, action_space: gym.Space) -> None:
    """Refuse (ConfigError) the spaces an MLP actor-critic cannot serve: images, dicts, multi-discrete actions."""
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ConfigError(f"diffdac needs flat Box observations, the environment gives {observation_space}")
    if not isinstance(action_space, (gym.spaces.Box, gym.spaces.Discrete)) or len(action_space.shape or ()) > 1:
        raise ConfigError(f"diffdac needs Discrete or flat Box actions, the environment takes {action_space}")


def action_dim(action_space: gym.Space) -> int:
    """Logits of a Discrete space, or the size of a flat Box."""
    return int(action_space.n) if isinstance(action_space, gym.spaces.Discrete) else action_space.shape[0]


def _gaussian(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.distributions.Normal's log_prob and entropy `[K, B]`, summed over action dimensions.

    The same ops on the same broadcast tensors as Normal (so the same bits, forward and backward),
    without building a distribution and validating its arguments in every update.
    """
    loc, scale = torch.broadcast_tensors(mean, log_std.exp())  # log_std: [K, 1, A]
    logp = -((actions - loc) ** 2) / (2 * scale**2) - scale.log() - math.log(math.sqrt(2 * math.pi))
    entropy = 0.5 + 0.5 * math.log(2 * math.pi) + torch.log(scale)
    return logp.sum(-1), entropy.sum(-1)


class Population:
    """A block of K actor-critic learners with global ids `learner_ids`."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        learner_ids: np.ndarray,
        hidden: int = 64,
        seed: int = 0,
        separate_init: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        check_spaces(observation_space, action_space)
        self.continuous = isinstance(action_space, gym.spaces.Box)
        self.obs_dim = observation_space.shape[0]
        self.action_dim = action_dim(action_space)
        self.learner_ids = np.asarray(learner_ids, dtype=np.int64)
        self.specs = _layout(self.obs_dim, hidden, self.action_dim, self.continuous)
        self.num_params = sum(s.numel for s in self.specs)
        if separate_init:
            rows = torch.stack([self._initial_row(seed, int(k)) for k in self.learner_ids])
        else:  # one shared draw, made once
            rows = self._initial_row(seed, -1).expand(self.num_learners, -1).clone()
        self.flat = rows.to(device).requires_grad_(True)  # [K, P]
        self._views = self._param_views(self.flat.detach())
        self._streams: dict[tuple[int, int], noise.Stream] = {}

    @property
    def num_learners(self) -> int:
        return len(self.learner_ids)

    def _initial_row(self, seed: int, learner: int) -> torch.Tensor:
        """One learner's initial parameters, drawn from (seed, learner) alone: layout-independent."""
        gen = torch.Generator().manual_seed(noise.derive(seed, noise.INIT, learner + 1))
        row = torch.zeros(self.num_params)
        for spec in self.specs:
            if spec.gain is not None:
                w = torch.empty(spec.shape[1], spec.shape[0])  # torch's [out, in] convention
                torch.nn.init.orthogonal_(w, gain=spec.gain, generator=gen)
                row[spec.offset : spec.offset + spec.numel] = w.t().reshape(-1)
        return row

    def _view(self, flat: torch.Tensor, spec: ParamSpec) -> torch.Tensor:
        """One parameter of every learner as a `[K, *shape]` view of `flat`."""
        return flat[:, spec.offset : spec.offset + spec.numel].view(self.num_learners, *spec.shape)

    def _param_views(self, flat: torch.Tensor) -> Params:
        """Every parameter as a view of `flat`, in layout order."""
        return {spec.name: self._view(flat, spec) for spec in self.specs}

    def trainable(self) -> Params:
        """Per-parameter leaves sharing `flat`'s storage, for one forward-backward.

        Backward through slices of `flat` would scatter every parameter's gradient into its own
        zero `[K, P]` tensor and add them up; at 1,024 learners that was 60% of a run. With these
        leaves each gradient is written once, and `backward` lays them side by side.
        """
        return {name: view.detach().requires_grad_() for name, view in self._views.items()}

    def backward(self, loss: torch.Tensor, params: Params) -> None:
        """Set `flat.grad` to d loss / d flat through the leaves of `trainable()`."""
        grads = torch.autograd.grad(loss, list(params.values()))
        if self.flat.grad is None:
            self.flat.grad = torch.empty_like(self.flat)
        torch.cat([g.reshape(self.num_learners, -1) for g in grads], dim=1, out=self.flat.grad)

    def _params(self, params: Params | None) -> Params:
        """The given leaves; else views of `flat` that autograd tracks, or (no grad) the views made once."""
        if params is not None:
            return params
        if torch.is_grad_enabled() and self.flat.requires_grad:
            return self._param_views(self.flat)
        return self._views

    def _mlp(self, net: str, x: torch.Tensor, params: Params) -> torch.Tensor:
        """x: [K, B, in] -> [K, B, out] through three batched affine layers with tanh between.

        A batch of one matrix takes another BLAS kernel than a batch of several (at some shapes,
        e.g. 5 x 64 times 64 x 64, its last bits differ), so a block of one learner is computed
        beside a detached copy of itself: a learner's numbers then never depend on whether its
        process hosts it alone (the paper's one learner per process) or with others.
        """
        alone = x.shape[0] == 1
        pad = (lambda t: torch.cat([t, t.detach()])) if alone else (lambda t: t)
        x = pad(x)
        for i in range(3):
            x = torch.baddbmm(pad(params[f"{net}.{i}.bias"]), x, pad(params[f"{net}.{i}.weight"]))
            if i < 2:
                x = torch.tanh(x)
        return x[:1] if alone else x

    def actor(self, obs: torch.Tensor, params: Params | None = None) -> torch.Tensor:
        """Logits (discrete) or action means (continuous): `[K, B, A]`."""
        return self._mlp("actor", obs, self._params(params))

    def value(self, obs: torch.Tensor, params: Params | None = None) -> torch.Tensor:
        """State values `[K, B]`."""
        return self._mlp("critic", obs, self._params(params)).squeeze(-1)

    def evaluate(
        self, obs: torch.Tensor, actions: torch.Tensor, params: Params | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities `[K, B]` of actions and per-sample entropies `[K, B]`."""
        params = self._params(params)
        out = self.actor(obs, params)
        if self.continuous:
            return _gaussian(out, params["actor.log_std"], actions)
        logp_all = torch.log_softmax(out, dim=-1)
        logp = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        return logp, entropy

    @torch.no_grad()
    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        """The most likely action (discrete) or the mean action (continuous), for evaluation."""
        out = self.actor(obs)
        return out if self.continuous else out.argmax(-1)

    def _action_stream(self, seed: int, num_sims: int) -> noise.Stream:
        key = (seed, num_sims)
        if key not in self._streams:
            draws = 2 * self.action_dim if self.continuous else 1
            self._streams[key] = noise.Stream(seed, noise.ACTION, self.learner_ids, num_sims, draws)
        return self._streams[key]

    @torch.no_grad()
    def act(self, obs: torch.Tensor, seed: int, step: int) -> torch.Tensor:
        """Sample actions for obs `[K, E, D]` from keyed noise: `[K, E]` or `[K, E, A]`."""
        out = self.actor(obs)
        stream = self._action_stream(seed, obs.shape[1])
        if self.continuous:
            std = self._views["actor.log_std"].exp()
            return out + std * torch.from_numpy(stream.normal(step)).to(out)
        probs, u = torch.softmax(out, dim=-1), stream.uniform(step)  # u: [K, E, 1]
        if kernels.serves(kernels.categorical_available, probs):
            return kernels.categorical(probs, u)
        return kernels.categorical_by_ops(probs, u)
