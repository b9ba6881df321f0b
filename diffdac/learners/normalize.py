"""Running mean and variance per learner (the original's VecNormalize, one per learner)."""

from __future__ import annotations

import torch

CLIP = 10.0  # VecNormalize's clip for observations and rewards
EPS = 1e-8


class RunningNorm:
    """Per-learner statistics `mean, var: [K, *shape]` and sample counts `count: [K]`."""

    def __init__(self, num_learners: int, shape: tuple[int, ...], device: torch.device | str = "cpu") -> None:
        self.mean = torch.zeros(num_learners, *shape, dtype=torch.float64, device=device)
        self.var = torch.ones(num_learners, *shape, dtype=torch.float64, device=device)
        self.count = torch.full((num_learners,), 1e-4, dtype=torch.float64, device=device)

    @classmethod
    def from_statistics(cls, mean: torch.Tensor, var: torch.Tensor) -> "RunningNorm":
        """Fixed statistics `[K, *shape]` (a checkpoint's), to normalise with as training did."""
        norm = cls(len(mean), tuple(mean.shape[1:]), mean.device)
        norm.mean, norm.var = mean.double(), var.double()
        return norm

    def update(self, x: torch.Tensor) -> None:
        """Merge a batch `x: [K, B, *shape]` into each learner's statistics (Chan et al. parallel update)."""
        x = x.double()
        batch_mean, batch_var, n = x.mean(1), x.var(1, unbiased=False), x.shape[1]
        count = self.count.view(-1, *([1] * (self.mean.dim() - 1)))
        total = count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * n / total
        self.var = (self.var * count + batch_var * n + delta.square() * count * n / total) / total
        self.count = self.count + n

    def normalize(self, x: torch.Tensor, center: bool = True) -> torch.Tensor:
        """x: [K, B, *shape] scaled by each learner's statistics and clipped to +-10."""
        mean = self.mean.unsqueeze(1) if center else 0.0
        scaled = (x.double() - mean) / torch.sqrt(self.var.unsqueeze(1) + EPS)
        return scaled.clamp(-CLIP, CLIP).to(x.dtype)

    def state(self) -> list[torch.Tensor]:
        """The statistics that diffusion may average, as `[K, X]` blocks."""
        return [self.mean.reshape(len(self.count), -1), self.var.reshape(len(self.count), -1)]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything a checkpoint needs to continue the statistics exactly."""
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        device = self.mean.device
        self.mean, self.var, self.count = (state[k].to(device) for k in ("mean", "var", "count"))

    def load_state(self, blocks: list[torch.Tensor]) -> None:
        """Take back statistics produced by `state()` (after combining)."""
        self.mean = blocks[0].reshape(self.mean.shape)
        self.var = blocks[1].reshape(self.var.shape)
