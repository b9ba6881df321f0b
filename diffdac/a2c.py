"""Returns and the A2C loss, reduced per learner so learners never share a gradient."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffdac import a2c_kernels


def bootstrap_truncations(
    rewards: torch.Tensor, truncated: torch.Tensor, final_values: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Add gamma * V(last obs) to the reward of a step cut by a time limit.

    A truncated episode did not end in the task, so its return continues past the cut; after
    this the step can be treated as done like a termination. All arguments: [T, K, E].
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
    """Advantages and return targets `[T, K, E]`.

    With `gae_lambda` None these are the n-step returns bootstrapped by `next_value: [K, E]`
    (GAE with lambda 1 is exactly that sum); otherwise GAE(lambda). `dones[t]` marks that the
    episode ended at step t, so nothing after it flows back into it. On the CPU in float32 one
    numba loop computes them where it gives these ops' bits (a2c_kernels).
    """
    lam = 1.0 if gae_lambda is None else gae_lambda
    tensors = (rewards, values, dones, next_value)
    if a2c_kernels.serves(a2c_kernels.returns_available, *tensors):
        return a2c_kernels.returns(*tensors, gamma, lam)
    return returns_by_ops(*tensors, gamma, lam)


def returns_by_ops(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """compute_returns one torch op at a time: any device and dtype."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    following = next_value
    for t in reversed(range(rewards.shape[0])):
        alive = 1.0 - dones[t]
        delta = rewards[t] + gamma * following * alive - values[t]
        last = delta + gamma * lam * alive * last
        advantages[t] = last
        following = values[t]
    return advantages, advantages + values


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
