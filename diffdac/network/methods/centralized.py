"""Centralised A2C: one model trained on every learner's experience, the baseline diffusion is measured against.

Its bytes are those of a ring all-reduce, the standard figure: each learner sends 2 (N-1)/N times
the size of what is averaged (its gradient every update, normaliser statistics every combine
round), rounded down to whole bytes, whatever collective the backend really runs.
"""

from __future__ import annotations

import numpy as np
import torch

from diffdac.network.comm import Communicator
from diffdac.network.methods.base import Method, Mixer, row_bytes


class Centralized(Mixer):
    """One A2C on all learners' experience: the mean gradient, applied by every learner alike."""

    def start(self, params: torch.Tensor) -> None:
        with torch.no_grad():  # one parameter set even with --separate-init
            params.copy_(self.comm.all_gather(params).mean(0, keepdim=True).expand_as(params))

    def all_reduce_bytes(self, blocks: list[torch.Tensor]) -> int:
        """This process's learners' bytes for a ring all-reduce of these blocks: 2 (N-1)/N x one row each."""
        n = self.config.num_learners
        return len(self.learner_ids) * (2 * (n - 1) * row_bytes(blocks) // n)

    def reduce_gradient(self, grad: torch.Tensor) -> None:
        """Every row becomes the mean gradient, so per-learner clipping clips the one model's gradient."""
        self.sent(self.all_reduce_bytes([grad]))
        grad.copy_(self.comm.all_gather(grad).mean(0, keepdim=True).expand_as(grad))

    def combine(self, round_index: int, alive: np.ndarray, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        """Parameters are already equal; normaliser statistics are averaged over all learners."""
        self.sent(self.all_reduce_bytes(blocks[1:]))
        return [blocks[0]] + [self.comm.all_gather(b).mean(0, keepdim=True).expand_as(b).clone() for b in blocks[1:]]


class CentralizedA2C(Method):
    name = "centralized"
    summary = "one A2C: every learner's gradient averaged (all-gather) before one shared step"
    gathers_all = True

    def mixer(self, comm: Communicator, learner_ids: np.ndarray, device: torch.device) -> Mixer:
        return Centralized(self.config, comm, learner_ids, device)
