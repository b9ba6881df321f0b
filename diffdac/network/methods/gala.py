"""GALA-A2C's gossip (Assran et al., NeurIPS 2019) in its synchronous form: push-sum on a time-varying exponential graph."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import torch

from dataclasses import dataclass

from diffdac.errors import ConfigError
from diffdac.network.comm import Communicator
from diffdac.network.methods.base import Method, Mixer, row_bytes
from diffdac.network.mixing import Combiner
from diffdac.options import MethodOptions, RunConfig, option
from topologies import PUSH, Reads, Schedule, exponential_period, exponential_schedule


@dataclass
class GossipOptions(MethodOptions):
    peers_per_round: int = option(1, "gala: peers each learner pushes to per round on the time-varying exponential graph")

    def check(self, run: RunConfig) -> None:
        if not isinstance(self.peers_per_round, int) or self.peers_per_round < 1:
            raise ConfigError(f"--peers-per-round must be a positive integer, got {self.peers_per_round!r}")
        distinct = max(1, math.ceil(math.log2(run.num_learners)))
        if self.peers_per_round > distinct:
            raise ConfigError(
                f"--peers-per-round {self.peers_per_round} exceeds the {distinct} distinct peers of the "
                f"exponential graph on {run.num_learners} learners"
            )


class PushSum(Mixer):
    """Push-sum over the rounds of a time-varying directed graph, one plan (communication graph) per round.

    Each learner holds de-biased parameters z and a push-sum weight w. A round mixes x = w z and w:
    a learner keeps 1/(p+1) of both and pushes 1/(p+1) to each of its p peers; then z = x / w.
    With a learning rate of 0 every z converges to the exact average of the initial z. Each push
    carries the numerator x of every block and the weight w, in float64 as they move.
    """

    def __init__(
        self,
        config: RunConfig,
        comm: Communicator,
        learner_ids: np.ndarray,
        device: torch.device,
        schedule: Schedule,
        peers: int,
    ) -> None:
        super().__init__(config, comm, learner_ids, device)
        n, p = config.num_learners, peers
        self.combiners, self.pushes = [], []
        for r in range(schedule.period):
            self.combiners.append(Combiner(*schedule.weights(r, PUSH), learner_ids, device))
            self.pushes.append(int(np.isin(schedule.reads(r)[0], learner_ids).sum()))  # pushes from this process's learners
        self.weight = torch.ones(len(learner_ids), 1, dtype=torch.float64, device=device)
        self.links = n * min(p, exponential_period(n)) if n > 1 else 0

    def combine(self, round_index: int, alive: np.ndarray, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        graph = round_index % len(self.combiners)
        combiner = self.combiners[graph]
        mixed_weight = combiner.combine(self.comm.exchange(self.weight, combiner.buffer_ids, graph))
        out, sent = [], row_bytes([self.weight])
        for block in blocks:
            x = block.double() * self.weight
            sent += row_bytes([x])
            mixed = combiner.combine(self.comm.exchange(x, combiner.buffer_ids, graph))
            out.append((mixed / mixed_weight).to(block.dtype))
        self.weight = mixed_weight
        self.sent(self.pushes[graph] * sent)
        return out

    def state_dict(self) -> dict:
        return {"weight": self.weight.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.weight = state["weight"].to(self.device)


class Gala(Method):
    name = "gala"
    summary = (
        "GALA-A2C's push-sum gossip on a time-varying exponential graph (--peers-per-round); --topology is ignored"
    )

    Options = GossipOptions
    options: GossipOptions

    def __init__(self, config: RunConfig, graph: nx.Graph) -> None:
        super().__init__(config, graph)
        self.schedule = exponential_schedule(config.num_learners, self.options.peers_per_round)

    def communication(self) -> list[Reads]:
        return self.schedule.rounds()

    def logged_graph(self) -> nx.Graph:
        """The union of the rounds' graphs."""
        union = nx.empty_graph(self.config.num_learners)
        for src, dst in self.communication():
            union.add_edges_from(zip(src.tolist(), dst.tolist()))
        return union

    def combination_matrix(self) -> np.ndarray:
        """Round 0's push-sum matrix (the rounds cycle)."""
        return self.schedule.matrix(0, PUSH)

    def mixer(self, comm: Communicator, learner_ids: np.ndarray, device: torch.device) -> Mixer:
        return PushSum(self.config, comm, learner_ids, device, self.schedule, self.options.peers_per_round)
