"""The combine step: theta_k <- sum_l C[l, k] * psi_l, one sparse matmul over the learner axis."""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch


class Combiner:
    """Combination rows of the learners `local_ids`, over a buffer of the learners they read.

    The buffer holds the rows of `buffer_ids` (sorted global ids: the local learners and the
    neighbours hosted elsewhere), so every learner sums its closed neighbourhood in ascending
    global order, the same order whichever process hosts it. Cost grows with edges, not N^2.
    """

    def __init__(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        weight: np.ndarray,
        local_ids: np.ndarray,
        device: torch.device | str = "cpu",
    ) -> None:
        local_ids = np.asarray(local_ids, dtype=np.int64)
        mine = np.isin(dst, local_ids)
        src, dst, weight = src[mine], dst[mine], weight[mine]
        self.buffer_ids = np.union1d(local_ids, src)
        row = np.searchsorted(local_ids, dst)  # local_ids ascending: a contiguous block
        col = np.searchsorted(self.buffer_ids, src)
        self.matrix = csr_matrix(row, col, weight, (len(local_ids), len(self.buffer_ids)), device, check=True)
        self._matrices: dict[torch.dtype, torch.Tensor] = {torch.float64: self.matrix}

    def combine(self, buffer: torch.Tensor) -> torch.Tensor:
        """buffer: [len(buffer_ids), X] adapted rows -> [K, X] combined rows of the local learners."""
        matrix = self._matrices.get(buffer.dtype)
        if matrix is None:
            matrix = self._matrices[buffer.dtype] = self.matrix.to(buffer.dtype)
        return matrix @ buffer


def csr_matrix(
    row: np.ndarray,
    col: np.ndarray,
    weight: np.ndarray,
    size: tuple[int, int],
    device: torch.device | str,
    check: bool = False,
) -> torch.Tensor:
    """A float64 CSR matrix from COO entries, each row's entries in ascending column order: one canonical sum."""
    order = np.lexsort((col, row))
    row, col, weight = row[order], col[order], weight[order]
    crow = np.zeros(size[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=size[0]), out=crow[1:])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(crow),
            torch.from_numpy(np.asarray(col, dtype=np.int64)),
            torch.from_numpy(np.asarray(weight, dtype=np.float64)),
            size=size,
            device=device,
            check_invariants=check,
        )


def disagreement(block: torch.Tensor, all_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> float:
    """Mean over learners of the squared distance to the network average.

    block: [K, P], this process's learners; `all_sum` adds a tensor over processes, so the
    network average and the distances take two small reductions, never a gather of all N rows.
    """
    block = block.to(torch.float64, copy=True)  # one [K, P] float64 copy, then worked on in place:
    totals = all_sum(torch.cat([block.sum(0), torch.tensor([len(block)], dtype=torch.float64, device=block.device)]))
    mean, count = totals[:-1] / totals[-1], totals[-1]
    squares = block.sub_(mean).square_()  # at 1,024 learners two more copies would be 150 MB of peak memory
    return float(all_sum(squares.sum().reshape(1))[0] / count)
