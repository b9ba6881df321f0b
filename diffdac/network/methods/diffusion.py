"""Diff-DAC: adapt on your own task, then combine with your neighbours' parameters over a fixed graph.

theta_k <- sum_l C[l, k] psi_l. With faults, C is rebuilt each round over the links that work, from
neighbours' parameters up to --max-staleness rounds old. Every draw (dropped links, delays) is
keyed by (seed, link, round), the same on every rank, and every combination sums in ascending
global order, so one process and many give the same numbers.
"""

from __future__ import annotations

import collections

import networkx as nx
import numpy as np
import torch

import topologies
from diffdac import noise
from diffdac.network.comm import Communicator
from diffdac.config import TrainConfig
from diffdac.network.mixing import Combiner, csr_matrix
from diffdac.network.methods.base import Method, Mixer
from topologies import Reads


class Diffusion(Mixer):
    """Diff-DAC's combine step on a fixed graph (its directed `reads`), with optional dropped links, stale messages and departed learners."""

    def __init__(
        self, config: TrainConfig, comm: Communicator, learner_ids: np.ndarray, device: torch.device, reads: Reads
    ) -> None:
        super().__init__(config, comm, learner_ids, device)
        self.src, self.dst = reads
        weights = topologies.weights_from_edges(self.src, self.dst, config.num_learners, config.weights)
        self.static = Combiner(*weights, learner_ids, device)
        self.buffer_ids = self.static.buffer_ids
        self.faulty = config.link_drop > 0 or config.max_staleness > 0 or bool(config.fail_learner)
        self.links = len(self.src) // 2
        # undirected link id of each directed read, for drop draws shared by both directions
        self.link_id = np.unique(np.sort(np.stack([self.src, self.dst]), axis=0), axis=1, return_inverse=True)[
            1
        ].reshape(-1)
        self.history: collections.deque[list[torch.Tensor]] = collections.deque(maxlen=config.max_staleness + 1)
        reads_key = self.src * config.num_learners + self.dst  # each directed read as one sortable key
        self._read_order = np.argsort(reads_key)
        self._sorted_reads = reads_key[self._read_order]

    def combine(self, round_index: int, alive: np.ndarray, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        buffers = [self.comm.exchange(b, self.buffer_ids) for b in blocks]
        if not self.faulty:
            return [self.static.combine(buf) for buf in buffers]
        self.history.appendleft(
            [buf.clone() for buf in buffers]
        )  # in one process the buffer is the live parameter tensor
        matrix = self._round_matrix(round_index, alive)
        stacked = [torch.cat([h[i] for h in self.history]) for i in range(len(blocks))]
        return [matrix.to(s.dtype) @ s for s in stacked]

    def _round_matrix(self, round_index: int, alive: np.ndarray) -> torch.Tensor:
        """This round's C over the stacked history [newest buffer; one round older; ...]."""
        cfg = self.config
        working = alive[self.src] & alive[self.dst]
        if cfg.link_drop > 0:
            draws = noise.uniform(cfg.seed, noise.LINK_DROP, np.arange(self.link_id.max() + 1), 1, round_index)[:, 0, 0]
            working &= draws[self.link_id] >= cfg.link_drop
        self.links = int(working.sum()) // 2
        src, dst, weight = topologies.weights_from_edges(
            self.src[working], self.dst[working], cfg.num_learners, cfg.weights
        )
        delay = np.zeros(len(src), dtype=np.int64)
        if cfg.max_staleness > 0:  # delays keyed by the directed read, whatever else works this round
            keyed = noise.uniform(cfg.seed, noise.DELAY, np.arange(len(self.src)), 1, round_index)[:, 0, 0]
            off = src != dst
            delay[off] = np.minimum((keyed * (cfg.max_staleness + 1)).astype(np.int64), len(self.history) - 1)[
                self._read_index(src[off], dst[off])
            ]
        mine = np.isin(dst, self.learner_ids)
        row = np.searchsorted(self.learner_ids, dst[mine])
        col = delay[mine] * len(self.buffer_ids) + np.searchsorted(self.buffer_ids, src[mine])
        return csr_matrix(
            row, col, weight[mine], (len(self.learner_ids), len(self.history) * len(self.buffer_ids)), self.device
        )

    def _read_index(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Positions of the reads (src, dst) in the graph's list of directed reads."""
        n = self.config.num_learners
        return self._read_order[np.searchsorted(self._sorted_reads, src * n + dst)]

    def state_dict(self) -> dict:
        return {"history": [[t.cpu() for t in h] for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.history.clear()
        self.history.extend([[t.to(self.device) for t in h] for h in state.get("history", [])])


class DiffA2C(Method):
    name = "diff-a2c"
    summary = "Diff-DAC: adapt, then average actor and critic over the closed neighbourhood of the graph"
    models_faults = True
    uses_graph = True

    def communication(self) -> list[Reads]:
        return [topologies.directed_edges(self.graph)]

    def logged_graph(self) -> nx.Graph:
        return self.graph

    def mixer(self, comm: Communicator, learner_ids: np.ndarray, device: torch.device) -> Mixer:
        return Diffusion(self.config, comm, learner_ids, device, self.communication()[0])
