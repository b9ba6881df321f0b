"""How learners share what they learned: the --method choices and diffusion's network faults.

A Mixer runs after every adapt step (and may reshape the gradient before it):
- Diffusion: theta_k <- sum_l C[l, k] psi_l over the graph; with faults, C is rebuilt each round
  over the links that work, from neighbours' parameters up to --max-staleness rounds old;
- Isolated: nothing moves;
- Centralized: every learner's gradient is replaced by the mean over all learners, so one shared
  RMSprop step keeps one parameter set;
- PushSum: GALA's gossip, each learner pushing to --peers-per-round peers of a time-varying
  exponential graph, with push-sum weights that de-bias the parameters to the exact average.

Every draw (dropped links, delays) is keyed by (seed, link, round), the same on every rank, and
every combination sums in ascending global order, so one process and many give the same numbers.
"""

from __future__ import annotations

import collections
import math

import networkx as nx
import numpy as np
import torch

import topologies
from diffdac import noise
from diffdac.comm import Communicator
from diffdac.config import TrainConfig
from diffdac.diffusion import Combiner, csr_matrix

Reads = tuple[np.ndarray, np.ndarray]  # (src, dst): learner dst reads learner src's row


def communication(config: TrainConfig, graph: nx.Graph) -> list[Reads]:
    """The communication graphs of a run's method, one exchange plan each (GALA: one per round)."""
    n = config.num_learners
    if config.method in ("centralized", "isolated"):
        return [(np.zeros(0, np.int64), np.zeros(0, np.int64))]
    if config.method == "gala":
        return [gala_reads(n, r, config.peers_per_round) for r in range(gala_period(n))]
    return [topologies.directed_edges(graph)]


def logged_graph(config: TrainConfig, graph: nx.Graph) -> nx.Graph:
    """The graph topology.csv records: the union of GALA's rounds, none for centralised and isolated runs."""
    if config.method in ("centralized", "isolated"):
        return nx.empty_graph(config.num_learners)
    if config.method == "gala":
        union = nx.empty_graph(config.num_learners)
        for src, dst in communication(config, graph):
            union.add_edges_from(zip(src.tolist(), dst.tolist()))
        return union
    return graph


def combination_matrix(config: TrainConfig, graph: nx.Graph) -> np.ndarray:
    """The dense C that combination.csv records (GALA: round 0's push-sum matrix; the rounds cycle)."""
    n = config.num_learners
    if config.method == "gala":
        src, dst = gala_reads(n, 0, config.peers_per_round)
        matrix = np.eye(n)
        matrix[src, dst] = 1.0
        return matrix / matrix.sum(1, keepdims=True)
    return topologies.dense_combination_matrix(logged_graph(config, graph), config.weights)


def gala_period(n: int) -> int:
    """Rounds after which the exponential graph's peers repeat: ceil(log2 N)."""
    return max(1, math.ceil(math.log2(n))) if n > 1 else 1


def gala_reads(n: int, round_index: int, peers: int) -> Reads:
    """Round r: learner k pushes to k + 2^((r*peers + j) mod period), j < peers (Assran et al. 2019)."""
    if n == 1:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    period = gala_period(n)
    offsets = sorted({2 ** ((round_index * peers + j) % period) for j in range(peers)})
    src = np.tile(np.arange(n, dtype=np.int64), len(offsets))
    dst = (src + np.repeat(np.asarray(offsets, dtype=np.int64), n)) % n
    return src, dst


class Mixer:
    """Isolated learners: no gradient change, no combination. The base of every method."""

    links = 0

    def __init__(self, config: TrainConfig, comm: Communicator, learner_ids: np.ndarray, device: torch.device) -> None:
        self.config, self.comm, self.learner_ids, self.device = config, comm, learner_ids, device

    def start(self, params: torch.Tensor) -> None:
        """Called once on the initial parameters."""

    def reduce_gradient(self, grad: torch.Tensor) -> None:
        """Called on the per-learner gradients `[K, P]` before clipping and the optimizer step."""

    def combine(self, round_index: int, steps: int, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        """Rows `[K, X]` of every diffused tensor (parameters first) -> their combined rows."""
        return blocks

    def alive(self, steps: int) -> np.ndarray:
        """Which of this block's learners still train at env step `steps`."""
        return np.ones(len(self.learner_ids), dtype=bool)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Centralized(Mixer):
    """One A2C on all learners' experience: the mean gradient, applied by every learner alike."""

    def start(self, params: torch.Tensor) -> None:
        with torch.no_grad():  # one parameter set even with --separate-init
            params.copy_(self.comm.all_gather(params).mean(0, keepdim=True).expand_as(params))

    def reduce_gradient(self, grad: torch.Tensor) -> None:
        """Every row becomes the mean gradient, so per-learner clipping clips the one model's gradient."""
        grad.copy_(self.comm.all_gather(grad).mean(0, keepdim=True).expand_as(grad))

    def combine(self, round_index: int, steps: int, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        """Parameters are already equal; normaliser statistics are averaged over all learners."""
        return [blocks[0]] + [self.comm.all_gather(b).mean(0, keepdim=True).expand_as(b).clone() for b in blocks[1:]]


class Diffusion(Mixer):
    """Diff-DAC's combine step on a fixed graph, with optional dropped links, stale messages and departed learners."""

    def __init__(self, config: TrainConfig, comm: Communicator, learner_ids: np.ndarray, device: torch.device, graph: nx.Graph) -> None:
        super().__init__(config, comm, learner_ids, device)
        self.src, self.dst = topologies.directed_edges(graph)
        weights = topologies.weights_from_edges(self.src, self.dst, config.num_learners, config.weights)
        self.static = Combiner(*weights, learner_ids, device)
        self.buffer_ids = self.static.buffer_ids
        self.failures = config.failures()
        self.faulty = config.link_drop > 0 or config.max_staleness > 0 or bool(self.failures)
        self.links = graph.number_of_edges()
        # undirected link id of each directed read, for drop draws shared by both directions
        self.link_id = np.unique(np.sort(np.stack([self.src, self.dst]), axis=0), axis=1, return_inverse=True)[1].reshape(-1)
        self.history: collections.deque[list[torch.Tensor]] = collections.deque(maxlen=config.max_staleness + 1)
        reads = self.src * config.num_learners + self.dst  # each directed read as one sortable key
        self._read_order = np.argsort(reads)
        self._sorted_reads = reads[self._read_order]

    def alive(self, steps: int) -> np.ndarray:
        return self._alive_all(steps)[self.learner_ids]

    def _alive_all(self, steps: int) -> np.ndarray:
        alive = np.ones(self.config.num_learners, dtype=bool)
        for k, at in self.failures.items():
            alive[k] = steps < at
        return alive

    def combine(self, round_index: int, steps: int, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        buffers = [self.comm.exchange(b, self.buffer_ids) for b in blocks]
        if not self.faulty:
            return [self.static.combine(buf) for buf in buffers]
        self.history.appendleft([buf.clone() for buf in buffers])  # in one process the buffer is the live parameter tensor
        matrix = self._round_matrix(round_index, steps)
        stacked = [torch.cat([h[i] for h in self.history]) for i in range(len(blocks))]
        return [matrix.to(s.dtype) @ s for s in stacked]

    def _round_matrix(self, round_index: int, steps: int) -> torch.Tensor:
        """This round's C over the stacked history [newest buffer; one round older; ...]."""
        cfg = self.config
        alive = self._alive_all(steps)
        working = alive[self.src] & alive[self.dst]
        if cfg.link_drop > 0:
            draws = noise.uniform(cfg.seed, noise.LINK_DROP, np.arange(self.link_id.max() + 1), 1, round_index)[:, 0, 0]
            working &= draws[self.link_id] >= cfg.link_drop
        self.links = int(working.sum()) // 2
        src, dst, weight = topologies.weights_from_edges(self.src[working], self.dst[working], cfg.num_learners, cfg.weights)
        delay = np.zeros(len(src), dtype=np.int64)
        if cfg.max_staleness > 0:  # delays keyed by the directed read, whatever else works this round
            keyed = noise.uniform(cfg.seed, noise.DELAY, np.arange(len(self.src)), 1, round_index)[:, 0, 0]
            off = src != dst
            delay[off] = np.minimum((keyed * (cfg.max_staleness + 1)).astype(np.int64), len(self.history) - 1)[self._read_index(src[off], dst[off])]
        mine = np.isin(dst, self.learner_ids)
        row = np.searchsorted(self.learner_ids, dst[mine])
        col = delay[mine] * len(self.buffer_ids) + np.searchsorted(self.buffer_ids, src[mine])
        return csr_matrix(row, col, weight[mine], (len(self.learner_ids), len(self.history) * len(self.buffer_ids)), self.device)

    def _read_index(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Positions of the reads (src, dst) in the graph's list of directed reads."""
        n = self.config.num_learners
        return self._read_order[np.searchsorted(self._sorted_reads, src * n + dst)]

    def state_dict(self) -> dict:
        return {"history": [[t.cpu() for t in h] for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.history.clear()
        self.history.extend([[t.to(self.device) for t in h] for h in state.get("history", [])])


class PushSum(Mixer):
    """GALA's gossip: push-sum over a time-varying directed exponential graph, one plan per round.

    Each learner holds de-biased parameters z and a push-sum weight w. A round mixes x = w z and w:
    a learner keeps 1/(p+1) of both and pushes 1/(p+1) to each of its p peers; then z = x / w.
    With a learning rate of 0 every z converges to the exact average of the initial z.
    """

    def __init__(self, config: TrainConfig, comm: Communicator, learner_ids: np.ndarray, device: torch.device) -> None:
        super().__init__(config, comm, learner_ids, device)
        n, p = config.num_learners, config.peers_per_round
        self.combiners = []
        for r in range(gala_period(n)):
            src, dst = gala_reads(n, r, p)
            loops = np.arange(n, dtype=np.int64)
            src, dst = np.concatenate([src, loops]), np.concatenate([dst, loops])
            weight = np.full(len(src), 1.0 / (len(src) // n))
            self.combiners.append(Combiner(src, dst, weight, learner_ids, device))
        self.weight = torch.ones(len(learner_ids), 1, dtype=torch.float64, device=device)
        self.links = n * min(p, gala_period(n)) if n > 1 else 0

    def combine(self, round_index: int, steps: int, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        graph = round_index % len(self.combiners)
        combiner = self.combiners[graph]
        mixed_weight = combiner.combine(self.comm.exchange(self.weight, combiner.buffer_ids, graph))
        out = []
        for block in blocks:
            x = block.double() * self.weight
            mixed = combiner.combine(self.comm.exchange(x, combiner.buffer_ids, graph))
            out.append((mixed / mixed_weight).to(block.dtype))
        self.weight = mixed_weight
        return out

    def state_dict(self) -> dict:
        return {"weight": self.weight.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.weight = state["weight"].to(self.device)


def make_mixer(config: TrainConfig, comm: Communicator, learner_ids: np.ndarray, device: torch.device, graph: nx.Graph) -> Mixer:
    if config.method == "centralized":
        return Centralized(config, comm, learner_ids, device)
    if config.method == "gala":
        return PushSum(config, comm, learner_ids, device)
    if config.method == "isolated":
        return Mixer(config, comm, learner_ids, device)
    return Diffusion(config, comm, learner_ids, device, graph)
