"""Diff-DAC: adapt on your own task, then combine with your neighbours' parameters over a fixed graph.

theta_k <- sum_l C[l, k] psi_l. With faults, C is rebuilt each round over the links that work, from
neighbours' parameters up to --max-staleness rounds old. Every draw (dropped links, delays) is
keyed by (seed, link, round), the same on every rank, and every combination sums in ascending
global order, so one process and many give the same numbers.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import networkx as nx
import numpy as np
import torch

import topologies
from diffdac import noise
from diffdac.errors import ConfigError
from diffdac.network.comm import Communicator
from diffdac.network.methods.base import Method, Mixer
from diffdac.network.mixing import Combiner, csr_matrix
from diffdac.options import MethodOptions, RunConfig, option
from topologies import Reads


@dataclass
class Faults(MethodOptions):
    """What can go wrong in diffusion: links that fail, messages that arrive late, learners that leave."""

    link_drop: float = option(
        0.0,
        "diff-a2c: probability that a link fails in a combine round (both directions; weights renormalised over the links that work)",
    )
    max_staleness: int = option(
        0, "diff-a2c: a neighbour's parameters may be up to this many combine rounds old (delays drawn from the seed)"
    )
    fail_learner: tuple[str, ...] = option(
        (), "diff-a2c: LEARNER@STEP[,LEARNER@STEP...]: the learner stops at that env step and leaves the graph"
    )

    def check(self, run: RunConfig) -> None:
        if not isinstance(self.link_drop, (int, float)) or not 0 <= self.link_drop <= 1:
            raise ConfigError(f"--link-drop is a probability in [0, 1], got {self.link_drop!r}")
        if not isinstance(self.max_staleness, int) or self.max_staleness < 0:
            raise ConfigError(f"--max-staleness must be an integer >= 0, got {self.max_staleness!r}")
        self.failures(run.num_learners)

    def parameter_copies(self) -> int:
        return self.max_staleness + 1  # the rounds a stale read may reach back

    @property
    def any(self) -> bool:
        return self.link_drop > 0 or self.max_staleness > 0 or bool(self.fail_learner)

    def failures(self, num_learners: int) -> dict[int, int]:
        """--fail-learner as {learner: env step}, refusing learners outside 0..N-1 and bad syntax."""
        out: dict[int, int] = {}
        for item in self.fail_learner:
            learner, _, step = item.partition("@")
            try:
                k, s = int(learner), int(step)
            except ValueError:
                raise ConfigError(f"--fail-learner takes LEARNER@STEP such as 3@100000, got {item!r}") from None
            if not 0 <= k < num_learners or s < 0:
                raise ConfigError(
                    f"--fail-learner {item}: the learner must be in 0..{num_learners - 1} and the step >= 0"
                )
            if k in out:
                raise ConfigError(
                    f"--fail-learner names learner {k} twice ({k}@{out[k]} and {item}): a learner leaves the graph once"
                )
            out[k] = s
        return out


class Diffusion(Mixer):
    """Diff-DAC's combine step on a fixed graph (its directed `reads`), with optional dropped links, stale messages and departed learners."""

    def __init__(
        self,
        config: RunConfig,
        comm: Communicator,
        learner_ids: np.ndarray,
        device: torch.device,
        reads: Reads,
        faults: Faults,
    ) -> None:
        super().__init__(config, comm, learner_ids, device)
        self.faults = faults
        self.src, self.dst = reads
        weights = topologies.weights_from_edges(self.src, self.dst, config.num_learners, config.weights)
        self.static = Combiner(*weights, learner_ids, device)
        self.buffer_ids = self.static.buffer_ids
        self.faulty = faults.any
        self.links = len(self.src) // 2
        # undirected link id of each directed read, for drop draws shared by both directions
        self.link_id = np.unique(np.sort(np.stack([self.src, self.dst]), axis=0), axis=1, return_inverse=True)[
            1
        ].reshape(-1)
        self.history: collections.deque[list[torch.Tensor]] = collections.deque(maxlen=faults.parameter_copies())
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
        cfg, faults = self.config, self.faults
        working = alive[self.src] & alive[self.dst]
        if faults.link_drop > 0:
            draws = noise.uniform(cfg.seed, noise.LINK_DROP, np.arange(self.link_id.max() + 1), 1, round_index)[:, 0, 0]
            working &= draws[self.link_id] >= faults.link_drop
        self.links = int(working.sum()) // 2
        src, dst, weight = topologies.weights_from_edges(
            self.src[working], self.dst[working], cfg.num_learners, cfg.weights
        )
        delay = np.zeros(len(src), dtype=np.int64)
        if faults.max_staleness > 0:  # delays keyed by the directed read, whatever else works this round
            keyed = noise.uniform(cfg.seed, noise.DELAY, np.arange(len(self.src)), 1, round_index)[:, 0, 0]
            off = src != dst
            delay[off] = np.minimum((keyed * (faults.max_staleness + 1)).astype(np.int64), len(self.history) - 1)[
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
    Options = Faults
    options: Faults
    uses_graph = True

    def communication(self) -> list[Reads]:
        return [topologies.directed_edges(self.graph)]

    def logged_graph(self) -> nx.Graph:
        return self.graph

    def mixer(self, comm: Communicator, learner_ids: np.ndarray, device: torch.device) -> Mixer:
        return Diffusion(self.config, comm, learner_ids, device, self.communication()[0], self.options)
