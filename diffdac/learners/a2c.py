"""Returns and the A2C loss, reduced per learner so learners never share a gradient."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffdac.learners import kernels


def bootstrap_truncations(
    rewards: torch.Tensor, truncated: torch.Tensor, final_values: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Add gamma * V(last obs) to the reward of a step cut by a time limit.

    A truncated episode did not end in the task, so its return continues past the cut; after
    this the step can be treated as done like a termination. All arguments: [K, T, E].
    """
    return rewards + gamma * final_values * truncated


def compute_returns(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    gamma: float,
    gae_lambda: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and return targets `[K, T, E]`, learner-major as the rollout.

    With `gae_lambda` None these are the n-step returns bootstrapped by `next_value: [K, E]`
    (GAE with lambda 1 is exactly that sum); otherwise GAE(lambda). `dones[:, t]` marks that the
    episode ended at step t, so nothing after it flows back into it. On the CPU in float32 one
    numba loop computes them where it gives these ops' bits (kernels).
    """
    lam = 1.0 if gae_lambda is None else gae_lambda
    tensors = (rewards, values, dones, next_value)
    if kernels.serves(kernels.returns_available, *tensors):
        return kernels.returns(*tensors, gamma, lam)
    return kernels.returns_by_ops(*tensors, gamma, lam)


@dataclass
class A2CLoss:
    """Per-learner loss terms, each `[K]`; only `total` carries gradients."""

    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor


def a2c_loss(
    logp: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor,
    returns: torch.Tensor,
    advantages: torch.Tensor,
    value_coef: float,
    entropy_coef: float,
) -> A2CLoss:
    """The original's A2C objective per learner, all inputs `[K, B]`, means over the learner's batch."""
    policy = -(advantages.detach() * logp).mean(1)
    value = (returns.detach() - values).square().mean(1)
    ent = entropy.mean(1)
    total = policy + value_coef * value - entropy_coef * ent
    return A2CLoss(total, policy.detach(), value.detach(), ent.detach())
