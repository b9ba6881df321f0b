"""What every method is: a Method (name, graphs, what the run directory records, its Mixer) and the Mixer protocol."""

from __future__ import annotations

from typing import ClassVar

import networkx as nx
import numpy as np
import torch

import topologies
from diffdac.network.comm import Communicator
from diffdac.config import TrainConfig
from diffdac.errors import ConfigError
from topologies import Reads

NO_READS: Reads = (np.zeros(0, np.int64), np.zeros(0, np.int64))
FAULTS = (("link_drop", "--link-drop"), ("max_staleness", "--max-staleness"), ("fail_learner", "--fail-learner"))


class Mixer:
    """What a method does after every adapt step (and to the gradient before it). This base moves nothing."""

    links = 0  # links that carried a message in the last round (progress.csv)

    def __init__(self, config: TrainConfig, comm: Communicator, learner_ids: np.ndarray, device: torch.device) -> None:
        self.config, self.comm, self.learner_ids, self.device = config, comm, learner_ids, device

    def start(self, params: torch.Tensor) -> None:
        """Called once on the initial parameters."""

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

    A subclass sets `name` and `summary` and says which communication graphs it needs, what
    topology.csv and combination.csv record, and which Mixer runs the combine step.
    """

    name: ClassVar[str]
    summary: ClassVar[str]  # one line: --help and the README's table of methods
    models_faults: ClassVar[bool] = False  # whether --link-drop, --max-staleness and --fail-learner apply
    uses_graph: ClassVar[bool] = False  # whether --topology / --adjacency / --weights matter

    def __init__(self, config: TrainConfig, graph: nx.Graph) -> None:
        self.config, self.graph = config, graph

    @classmethod
    def validate(cls, config: TrainConfig) -> None:
        """Refuse options this method cannot honour (ConfigError)."""
        faults = [flag for key, flag in FAULTS if getattr(config, key)]
        if faults and not cls.models_faults:
            raise ConfigError(
                f"{', '.join(faults)} model faults of diffusion: use them with --method diff-a2c, not {cls.name}"
            )

    def communication(self) -> list[Reads]:
        """The communication graphs of a run, one exchange plan each (directed: dst reads src's row)."""
        return [NO_READS]

    def logged_graph(self) -> nx.Graph:
        """The graph topology.csv records."""
        return nx.empty_graph(self.config.num_learners)

    def combination_matrix(self) -> np.ndarray:
        """The dense C that combination.csv records."""
        return topologies.dense_combination_matrix(self.logged_graph(), self.config.weights)

    def mixer(self, comm: Communicator, learner_ids: np.ndarray, device: torch.device) -> Mixer:
        return Mixer(self.config, comm, learner_ids, device)
