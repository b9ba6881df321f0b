"""Diff-DAC: adapt on your own task, then combine with your neighbours' parameters over the round's graph.

theta_k <- sum_l C[l, k] psi_l, over a schedule of graphs (topologies.schedules): a fixed graph,
a sequence of adjacency matrices, or a random graph drawn every round. With faults, C is rebuilt
each round over the links that work, from neighbours' parameters up to --max-staleness rounds
old (fixed graphs only). Every draw (graphs, dropped links, delays) is keyed by the seed and the
round, the same on every rank, and every combination sums in ascending global order, so one
process and many give the same numbers.
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
from diffdac.network.methods.base import Method, Mixer, row_bytes
from diffdac.network.mixing import Combiner, csr_matrix
from diffdac.options import MethodOptions, RunConfig, option
from topologies import RANDOM_SCHEDULES, Reads, Schedule


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


@dataclass
class DiffusionOptions(Faults):
    """Diff-A2C's options: its faults, and the degree of the random regular graph it may draw each round.

    --degree is diff-a2c's own, not the run's: only diffusion combines over --topology's graph
    (GALA draws its own exponential graph; centralised and isolated learners use none), so the
    option is refused with every other method by the same rule as any method's option.
    """

    degree: int | None = option(
        None, "diff-a2c: degree d of --topology random-regular (a fresh random d-regular graph every combine round)"
    )

    def check(self, run: RunConfig) -> None:
        super().check(run)
        topology = None if getattr(run, "adjacency", None) is not None else getattr(run, "topology", None)
        if topology == "random-regular":
            try:
                topologies.schedules.check_degree(run.num_learners, self.degree)
            except topologies.TopologyError as err:
                raise ConfigError(str(err)) from None
        elif self.degree is not None:
            raise ConfigError(
                f"--degree {self.degree} is the degree of --topology random-regular: drop it or use that topology"
            )
        if self.max_staleness > 0 and changing_graph(run, topology):
            raise ConfigError(
                "--max-staleness needs a fixed graph: a graph that changes every round has no standing links to delay"
            )


def changing_graph(run: RunConfig, topology: str | None) -> bool:
    """Whether the run's graph changes from round to round (a random schedule or a sequence)."""
    adjacency = getattr(run, "adjacency", None)
    try:
        return topology in RANDOM_SCHEDULES or (adjacency is not None and topologies.adjacency_rounds(adjacency) > 1)
    except topologies.TopologyError as err:
        raise ConfigError(str(err)) from None


class Diffusion(Mixer):
    """Diff-DAC's combine step over a schedule of graphs, with optional dropped links, stale messages and departed learners.

    A fixed graph keeps one Combiner (the fast path); a periodic schedule without faults one per
    round of its period, over exchange plans made at connect time; anything else (a random graph
    per round, or faults on a changing graph) builds the round's Combiner and exchange plan from
    its reads. Every learner reports the bytes of its row (every diffused block) for each
    neighbour that reads it over a working link.
    """

    def __init__(
        self,
        config: RunConfig,
        comm: Communicator,
        learner_ids: np.ndarray,
        device: torch.device,
        schedule: Schedule,
        faults: Faults,
    ) -> None:
        super().__init__(config, comm, learner_ids, device)
        self.schedule, self.faults = schedule, faults
        self.faulty = faults.any
        self.history: collections.deque[list[torch.Tensor]] = collections.deque(maxlen=faults.parameter_copies())
        self.rounds: list[tuple[Combiner, int, int]] | None = None
        if schedule.static:
            self._fixed_graph(*schedule.reads(0))
        elif not schedule.random and not self.faulty:
            self.rounds = [self._planned(src, dst) for src, dst in schedule.rounds()]

    def _fixed_graph(self, src: np.ndarray, dst: np.ndarray) -> None:
        self.src, self.dst = src, dst
        weights = topologies.weights_from_edges(self.src, self.dst, self.config.num_learners, self.config.weights)
        self.static = Combiner(*weights, self.learner_ids, self.device)
        self.buffer_ids = self.static.buffer_ids
        self.links = len(self.src) // 2
        self.mine = np.isin(self.src, self.learner_ids)  # reads of this process's rows
        # undirected link id of each directed read, for drop draws shared by both directions
        self.link_id = np.unique(np.sort(np.stack([self.src, self.dst]), axis=0), axis=1, return_inverse=True)[
            1
        ].reshape(-1)
        reads_key = self.src * self.config.num_learners + self.dst  # each directed read as one sortable key
        self._read_order = np.argsort(reads_key)
        self._sorted_reads = reads_key[self._read_order]

    def _planned(self, src: np.ndarray, dst: np.ndarray) -> tuple[Combiner, int, int]:
        """A round's Combiner, how many of its reads this process's rows serve, and its links."""
        weights = topologies.round_weights(src, dst, self.config.num_learners, self.config.weights)
        return (
            Combiner(*weights, self.learner_ids, self.device),
            int(np.isin(src, self.learner_ids).sum()),
            len(src) // 2,
        )

    def combine(self, round_index: int, alive: np.ndarray, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.schedule.static:
            return self._combine_fixed(round_index, alive, blocks)
        if self.rounds is not None:
            graph = round_index % len(self.rounds)
            combiner, reads, self.links = self.rounds[graph]
            self.sent(reads * row_bytes(blocks))
            return [combiner.combine(self.comm.exchange(b, combiner.buffer_ids, graph)) for b in blocks]
        src, dst = self.schedule.reads(round_index)
        working = self._working_pairs(round_index, alive, src, dst)
        combiner, reads, self.links = self._planned(src[working], dst[working])
        plan = self.comm.plan(src[working], dst[working])
        self.sent(reads * row_bytes(blocks))
        return [combiner.combine(self.comm.exchange(b, combiner.buffer_ids, plan)) for b in blocks]

    def _working_pairs(self, round_index: int, alive: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Which of a drawn round's reads work: both learners in the graph, the link not dropped (drawn per
        learner pair and round, both directions alike)."""
        working = alive[src] & alive[dst]
        if self.faults.link_drop > 0:
            n = self.config.num_learners
            pair = np.minimum(src, dst) * n + np.maximum(src, dst)
            draws = noise.uniform(self.config.seed, noise.LINK_DROP, pair, 1, round_index)[:, 0, 0]
            working &= draws >= self.faults.link_drop
        return working

    def _combine_fixed(self, round_index: int, alive: np.ndarray, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        if not self.faulty:
            self.sent(int(self.mine.sum()) * row_bytes(blocks))
            return [self.static.combine(self.comm.exchange(b, self.buffer_ids)) for b in blocks]
        working = self._working(round_index, alive)
        self.sent(int((working & self.mine).sum()) * row_bytes(blocks))
        if self.faults.max_staleness == 0:  # only the links that work carry a message
            buffers = self._fetch_working(blocks, working)
        else:  # a delayed read may reach back to any neighbour's older row: every row travels every round
            buffers = [self.comm.exchange(b, self.buffer_ids) for b in blocks]
        self.history.appendleft(
            [buf.clone() for buf in buffers]
        )  # in one process the buffer is the live parameter tensor
        matrix = self._round_matrix(round_index, alive, working)
        stacked = [torch.cat([h[i] for h in self.history]) for i in range(len(blocks))]
        return [matrix.to(s.dtype) @ s for s in stacked]

    def _fetch_working(self, blocks: list[torch.Tensor], working: np.ndarray) -> list[torch.Tensor]:
        """The fixed graph's buffers with only the working reads' rows fetched (the others stay zero, unused)."""
        src, dst = self.src[working], self.dst[working]
        plan = self.comm.plan(src, dst)
        ids = np.union1d(self.learner_ids, src[np.isin(dst, self.learner_ids)])
        buffers = [self.comm.exchange(b, ids, plan) for b in blocks]
        if len(ids) == len(self.buffer_ids):
            return buffers
        rows = torch.from_numpy(np.searchsorted(self.buffer_ids, ids)).to(self.device)
        out = []
        for buf in buffers:
            full = buf.new_zeros((len(self.buffer_ids), *buf.shape[1:]))
            full[rows] = buf
            out.append(full)
        return out

    def _working(self, round_index: int, alive: np.ndarray) -> np.ndarray:
        """Which of the fixed graph's directed reads work this round (both learners alive, the link not dropped)."""
        working = alive[self.src] & alive[self.dst]
        if self.faults.link_drop > 0:
            draws = noise.uniform(self.config.seed, noise.LINK_DROP, np.arange(self.link_id.max() + 1), 1, round_index)[
                :, 0, 0
            ]
            working &= draws[self.link_id] >= self.faults.link_drop
        self.links = int(working.sum()) // 2
        return working

    def _round_matrix(self, round_index: int, alive: np.ndarray, working: np.ndarray | None = None) -> torch.Tensor:
        """This round's C over the stacked history [newest buffer; one round older; ...] (`working`: the
        round's working reads, if already drawn)."""
        cfg, faults = self.config, self.faults
        if working is None:
            working = self._working(round_index, alive)
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
    Options = DiffusionOptions
    options: DiffusionOptions
    uses_graph = True

    def __init__(self, config: RunConfig, graph: nx.Graph) -> None:
        super().__init__(config, graph)
        self.schedule = topologies.schedule_for(
            getattr(config, "topology", None),
            getattr(config, "adjacency", None),
            graph,
            config.seed,
            self.options.degree,
        )

    def communication(self) -> list[Reads]:
        """One plan per round of a periodic schedule; a random one plans each round's exchange as it is drawn."""
        return [] if self.schedule.random else self.schedule.rounds()

    def logged_graph(self) -> nx.Graph:
        """The graph, or for a schedule every link it can use (a sequence's union; any pair for a random one)."""
        return self.graph

    def combination_matrix(self) -> np.ndarray:
        """The graph's C, or a schedule's mean C over its period (its expectation for a random schedule)."""
        if self.schedule.static:
            return super().combination_matrix()
        return topologies.expected_matrix(self.schedule, self.config.weights)

    def mixer(self, comm: Communicator, learner_ids: np.ndarray, device: torch.device) -> Mixer:
        return Diffusion(self.config, comm, learner_ids, device, self.schedule, self.options)
