"""CHOCO-SGD's compressed gossip (Koloskova, Stich and Jaggi, ICML 2019), on the parameters after each adapt step.

Every learner i keeps public copies x̂ of itself and of its neighbours, the same on every rank
that holds them. A round: i sends q_i = Q(x_i - x̂_i) to its neighbours, everyone adds the q it
receives to the matching copy (x̂_j += q_j, its own too), then
x_i <- x_i + γ Σ_j w_ij (x̂_j - x̂_i). With symmetric doubly stochastic weights this keeps the
network average, and the disagreement falls to 0 for any contraction Q and small enough γ.
Only q moves: the compressed bytes, over the graph's links. Normaliser statistics are averaged
uncompressed over the closed neighbourhood, as diff-a2c does.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
import torch

import topologies
from diffdac.errors import ConfigError, ResumeError
from diffdac.network import compress
from diffdac.network.comm import Communicator
from diffdac.network.methods.base import Method, Mixer
from diffdac.network.methods.diffusion import changing_graph
from diffdac.network.mixing import Combiner
from diffdac.options import MethodOptions, RunConfig, option
from topologies import Reads


@dataclass
class ChocoOptions(MethodOptions):
    compress: str = option("top-k:0.1", f"choco: how each learner compresses x - x̂ before sending it: {compress.SPECS}")
    consensus_step: float = option(0.2, "choco: the consensus step γ of x += γ Σ_j w_ij (x̂_j - x̂_i), in (0, 1]")

    def check(self, run: RunConfig) -> None:
        topology = None if getattr(run, "adjacency", None) is not None else getattr(run, "topology", None)
        if changing_graph(run, topology):
            raise ConfigError(
                "--method choco keeps public copies along the links of one fixed graph: give a fixed --topology "
                "or a single --adjacency matrix, not a graph that changes every round"
            )
        compress.parse(self.compress)
        step = self.consensus_step
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step <= 1:
            raise ConfigError(f"--consensus-step is γ in (0, 1], got {step!r}")

    def parameter_copies(self) -> int:
        return 2  # the parameters and their public copies


class ChocoGossip(Mixer):
    """CHOCO-gossip over a fixed graph (its directed `reads`); holds the public copies of the buffer's learners."""

    def __init__(
        self,
        config: RunConfig,
        comm: Communicator,
        learner_ids: np.ndarray,
        device: torch.device,
        reads: Reads,
        options: ChocoOptions,
    ) -> None:
        super().__init__(config, comm, learner_ids, device)
        src, dst = reads
        self.combiner = Combiner(
            *topologies.weights_from_edges(src, dst, config.num_learners, config.weights), learner_ids, device
        )
        self.buffer_ids = self.combiner.buffer_ids
        self.local_rows = torch.from_numpy(np.searchsorted(self.buffer_ids, learner_ids)).to(device)
        self.compressor = compress.parse(options.compress, config.seed)
        self.step = float(options.consensus_step)
        self.links = len(src) // 2
        self.readers = np.bincount(src, minlength=config.num_learners)[learner_ids]  # neighbours each learner sends to
        self.public: torch.Tensor | None = None

    def start(self, params: torch.Tensor) -> None:
        """The public copies start at zero, as in CHOCO's paper: the first rounds send the parameters themselves, compressed."""
        self.public = params.new_zeros((len(self.buffer_ids), params.shape[1]))

    def _exchange(self, rows: torch.Tensor) -> torch.Tensor:
        """This block's rows `[K, X]` -> the buffer's rows `[M, X]`: the one place that calls the transport."""
        return self.comm.exchange(rows, self.buffer_ids)

    def combine(self, round_index: int, alive: np.ndarray, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        stats = [self.combiner.combine(self._exchange(b)) for b in blocks[1:]]
        params = self._gossip(round_index, blocks[0])
        row_bytes = self.compressor.row_bytes(blocks[0].shape[1], blocks[0].dtype)
        row_bytes += sum(b.shape[1] * b.element_size() for b in blocks[1:])
        self.sent(int(self.readers.sum()) * row_bytes)
        return [params, *stats]

    def _gossip(self, round_index: int, x: torch.Tensor) -> torch.Tensor:
        """One CHOCO round on the parameters `x: [K, P]` -> the new parameters (x itself is left as it is).

        An exact compressor sends x itself and the copies become x: x̂ + (x - x̂) is x in exact
        arithmetic, and this way in floats too, so with γ = 1 the round is diff-a2c's bit for bit:
        (x - x̂_i) is 0 and W x̂ is W x, summed by the same Combiner.
        """
        public, codec = self.public, self.compressor
        assert public is not None, "start() sets the public copies"
        if codec.exact:
            message = self._exchange(codec.encode(x, self.learner_ids, round_index))
            public.copy_(codec.decode(message, self.buffer_ids, round_index, x.shape[1], x.dtype))
        else:
            own = public.index_select(0, self.local_rows)
            message = self._exchange(codec.encode(x - own, self.learner_ids, round_index))
            public.add_(codec.decode(message, self.buffer_ids, round_index, x.shape[1], x.dtype))
        own = public.index_select(0, self.local_rows)
        return x.sub(own, alpha=self.step).add_(self.combiner.combine(public), alpha=self.step)

    def state_dict(self) -> dict:
        """The public copies and whose they are (a rank holds its learners' and their neighbours')."""
        public = None if self.public is None else self.public.cpu()
        return {"public": public, "public_ids": torch.from_numpy(self.buffer_ids)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("public") is None:
            return
        if not np.array_equal(state["public_ids"].numpy(), self.buffer_ids):
            raise ResumeError("the checkpoint's public copies are of other learners: resume with the run's graph")
        self.public = state["public"].to(self.device)


class Choco(Method):
    name = "choco"
    summary = (
        "CHOCO-SGD's compressed gossip: each learner sends Q(x - x̂) of its adapted parameters (--compress) "
        "and moves γ (--consensus-step) towards its neighbours' public copies x̂"
    )
    Options = ChocoOptions
    options: ChocoOptions
    uses_graph = True

    def __init__(self, config: RunConfig, graph: nx.Graph) -> None:
        super().__init__(config, graph)
        check_symmetric(*self.communication()[0], config.num_learners, config.weights)

    def communication(self) -> list[Reads]:
        return [topologies.directed_edges(self.graph)]

    def logged_graph(self) -> nx.Graph:
        return self.graph

    def mixer(self, comm: Communicator, learner_ids: np.ndarray, device: torch.device) -> Mixer:
        return ChocoGossip(self.config, comm, learner_ids, device, self.communication()[0], self.options)


def check_symmetric(src: np.ndarray, dst: np.ndarray, num_learners: int, weights: str) -> None:
    """CHOCO keeps the network average only with symmetric weights: refuse `uniform` on a graph where they are not.

    Metropolis weights always are; uniform ones only where every learner has the same degree.
    """
    src, dst, weight = topologies.weights_from_edges(src, dst, num_learners, weights)
    forward = np.lexsort((dst, src))
    backward = np.lexsort((src, dst))
    if not np.allclose(weight[forward], weight[backward], rtol=1e-12, atol=0):
        raise ConfigError(
            f"--method choco needs symmetric combination weights, and --weights {weights} on this graph are not "
            "(learners have different degrees): use --weights metropolis"
        )
