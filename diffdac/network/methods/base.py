"""What every method is: a Method (name, its options, graphs, what the run directory records, its Mixer) and the Mixer protocol."""

from __future__ import annotations

from typing import ClassVar

import networkx as nx
import numpy as np
import torch

import topologies
from diffdac.metrics import Metrics
from diffdac.network.comm import Communicator
from diffdac.options import MethodOptions, RunConfig
from topologies import Reads

NO_READS: Reads = (np.zeros(0, np.int64), np.zeros(0, np.int64))


def row_bytes(blocks: list[torch.Tensor]) -> int:
    """Bytes of one learner's row of every block `[K, X]`, at the dtype each moves in."""
    return sum(b.shape[1] * b.element_size() for b in blocks)


class Mixer:
    """What a method does after every adapt step (and to the gradient before it). This base moves nothing."""

    links = 0  # links that carried a message in the last round (progress.csv)

    def __init__(self, config: RunConfig, comm: Communicator, learner_ids: np.ndarray, device: torch.device) -> None:
        self.config, self.comm, self.learner_ids, self.device = config, comm, learner_ids, device
        self.metrics: Metrics | None = None  # the run's, once declared; a mixer driven alone reports nothing

    def start(self, params: torch.Tensor) -> None:
        """Called once on the initial parameters."""

    def declare(self, metrics: Metrics) -> None:
        """The metrics this method reports; a subclass may add its own and record them (`self.metrics`)."""
        self.metrics = metrics
        metrics.declare("links", "same", sample=lambda: self.links, integer=True)
        metrics.declare("bytes_sent", "per_learner", cumulative=True)

    def sent(self, nbytes: int) -> None:
        """Bytes this process's learners sent in this round, summed over them (progress.csv's bytes_sent is
        the network's mean per learner, cumulative). Count what a learner's messages carry at the dtype they
        move in, learner to learner, so the figure does not depend on how learners are grouped into processes."""
        if self.metrics is not None:
            self.metrics.record("bytes_sent", nbytes)

    def reduce_gradient(self, grad: torch.Tensor) -> None:
        """Called on the per-learner gradients `[K, P]` before clipping and the optimizer step."""

    def combine(self, round_index: int, alive: np.ndarray, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        """Rows `[K, X]` of every diffused tensor (parameters first) -> their combined rows.

        `alive: [N]` says which learners of the whole network still take part (--fail-learner).
        """
        return blocks

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Method:
    """One --method: how a run's learners share what they learn, given its config and graph.

    A subclass sets `name` and `summary`, declares its own options (`Options`, checked by
    TrainConfig and refused with any other method), and says which communication graphs it needs,
    what topology.csv and combination.csv record, and which Mixer runs the combine step.
    """

    name: ClassVar[str]
    summary: ClassVar[str]  # one line: --help and the README's table of methods
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    uses_graph: ClassVar[bool] = False  # whether --topology / --adjacency / --weights matter
    gathers_all: ClassVar[bool] = False  # every learner's gradient reaches every process (the memory estimate)

    def __init__(self, config: RunConfig, graph: nx.Graph) -> None:
        self.config, self.graph = config, graph
        self.options = self.Options.of(config)

    def communication(self) -> list[Reads]:
        """The communication graphs of a run, one exchange plan each made at connect time (directed: dst
        reads src's row); a mixer whose graph is drawn every round plans that round with `comm.plan`."""
        return [NO_READS]

    def logged_graph(self) -> nx.Graph:
        """The graph topology.csv records."""
        return nx.empty_graph(self.config.num_learners)

    def combination_matrix(self) -> np.ndarray:
        """The dense C that combination.csv records."""
        return topologies.dense_combination_matrix(self.logged_graph(), self.config.weights)

    def mixer(self, comm: Communicator, learner_ids: np.ndarray, device: torch.device) -> Mixer:
        return Mixer(self.config, comm, learner_ids, device)
