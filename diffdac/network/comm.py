"""Where neighbours' parameters come from. Knows nothing of how graphs are built."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from diffdac.errors import ConfigError


def learner_block(rank: int, world_size: int, num_learners: int) -> np.ndarray:
    """Global ids of the contiguous block of learners a rank hosts; block sizes differ by at most one."""
    base, extra = divmod(num_learners, world_size)
    start = rank * base + min(rank, extra)
    return np.arange(start, start + base + (rank < extra), dtype=np.int64)


def check_world_size(world_size: int, num_learners: int) -> None:
    """Every process hosts at least one learner: refuse more processes than learners."""
    if world_size > num_learners:
        raise ConfigError(
            f"{world_size} processes for {num_learners} learners: use at most {num_learners} processes in all"
        )


class Communicator(Protocol):
    """Moves rows of learner parameters between the processes that host them."""

    rank: int
    world_size: int

    def exchange(self, block: torch.Tensor, buffer_ids: np.ndarray, graph: Any = 0) -> torch.Tensor:
        """This block's rows `[K, X]` -> rows of `buffer_ids` `[M, X]` over communication graph `graph`:
        the index of a graph planned at connect time, or a plan `plan()` made for this round."""
        ...

    def plan(self, src: np.ndarray, dst: np.ndarray) -> Any:
        """An exchange plan for one round's directed reads (dst reads src), for graphs drawn every round."""
        ...

    def all_gather(self, block: torch.Tensor) -> torch.Tensor:
        """Every learner's row `[N, X]` in learner order (centralised A2C's gradient average)."""
        ...

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over all ranks, for logging statistics only (its order of addition depends on the layout)."""
        ...

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (for tables rank 0 writes once)."""
        ...

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        ...


class LocalCommunicator:
    """A world of one process: every learner is local, so nothing moves."""

    rank = 0
    world_size = 1

    def exchange(self, block: torch.Tensor, buffer_ids: np.ndarray, graph: Any = 0) -> torch.Tensor:
        # One process hosts every learner, so the buffer is the block itself.
        return block

    def plan(self, src: np.ndarray, dst: np.ndarray) -> None:
        return None  # nothing moves

    def all_gather(self, block: torch.Tensor) -> torch.Tensor:
        return block

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def gather_objects(self, obj: Any) -> list[Any]:
        return [obj]

    def barrier(self) -> None:
        pass
