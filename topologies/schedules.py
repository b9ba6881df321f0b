"""A graph per combine round: a Schedule says which learners read which in round r, and with what weights.

A fixed graph is the schedule of period 1; a sequence of adjacency matrices repeats with its
length; GALA's exponential graph with ceil(log2 N); random matchings and random regular graphs
are drawn afresh every round. A random round is drawn from a numpy Generator seeded by
(seed, stream, round) alone, so every process of a run draws the same graph for the same round
and a resumed run draws what the uninterrupted one would have. A new schedule is one function
here returning a Schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import networkx as nx
import numpy as np

from topologies.combination import directed_edges, second_largest_eigenvalue_modulus, weights_from_edges
from topologies.errors import TopologyError
from topologies.graphs import adjacency_rounds, graph_from_adjacency, read_adjacencies
from topologies.time_varying import Reads, exponential_period, exponential_reads

PUSH = "push"  # push-sum's rule: a learner keeps 1/(p+1) of its mass and pushes 1/(p+1) to each of its p peers
RANDOM_MATCHING = "random-matching"
RANDOM_REGULAR = "random-regular"
RANDOM_SCHEDULES = (RANDOM_MATCHING, RANDOM_REGULAR)
# Streams of the random schedules' generators: one per kind, so that they never share draws.
_MATCHING_STREAM = 0x3A7C
_REGULAR_STREAM = 0x4E6D


@dataclass(frozen=True)
class Schedule:
    """Round r's directed reads (dst reads src's row; no self-loops, the weights add them).

    `period`: the reads repeat after this many rounds (1 for a fixed graph); 0 means every round
    is drawn afresh and never repeats by design.
    """

    num_learners: int
    period: int
    draw: Callable[[int], Reads]
    kind: str

    @property
    def static(self) -> bool:
        return self.period == 1

    @property
    def random(self) -> bool:
        return self.period == 0

    def reads(self, round_index: int) -> Reads:
        return self.draw(round_index % self.period if self.period else round_index)

    def rounds(self) -> list[Reads]:
        """One period's reads, for a transport that plans its exchanges once (periodic schedules only)."""
        if self.random:
            raise ValueError("a random schedule has no period to list: draw its rounds with reads(r)")
        return [self.draw(r) for r in range(self.period)]

    def weights(self, round_index: int, rule: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Round r's sparse C as (src, dst, weight), self-loops included (see combination_weights)."""
        return round_weights(*self.reads(round_index), self.num_learners, rule)

    def matrix(self, round_index: int, rule: str) -> np.ndarray:
        """Round r's dense C, C[l, k] = weight of l's parameters in k's average (printing and small tests)."""
        src, dst, weight = self.weights(round_index, rule)
        c = np.zeros((self.num_learners, self.num_learners))
        c[src, dst] = weight
        return c


def round_weights(src: np.ndarray, dst: np.ndarray, n: int, rule: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """C over directed reads: a weight rule of combination.py, or PUSH (1/(out-degree + 1) from each source)."""
    if rule != PUSH:
        return weights_from_edges(src, dst, n, rule)
    loops = np.arange(n, dtype=np.int64)
    all_src, all_dst = np.concatenate([src, loops]), np.concatenate([dst, loops])
    out_degree = np.bincount(src, minlength=n)
    return all_src, all_dst, 1.0 / (out_degree[all_src] + 1.0)


def static_schedule(graph: nx.Graph) -> Schedule:
    """The same graph every round."""
    reads = directed_edges(graph)
    return Schedule(graph.number_of_nodes(), 1, lambda r: reads, "static")


def sequence_schedule(matrices: np.ndarray) -> Schedule:
    """Round r uses adjacency matrix r mod R of `matrices` [R, N, N] (checked: symmetric 0/1, one N)."""
    reads = [directed_edges(graph_from_adjacency(a)) for a in matrices]
    return Schedule(int(matrices.shape[1]), len(reads), lambda r: reads[r], "sequence")


def exponential_schedule(n: int, peers: int) -> Schedule:
    """GALA's time-varying directed exponential graph (Assran et al. 2019), period ceil(log2 N)."""
    return Schedule(n, exponential_period(n), lambda r: exponential_reads(n, r, peers), "exponential")


def round_generator(seed: int, stream: int, round_index: int) -> np.random.Generator:
    """A generator keyed by (seed, stream, round) alone: the same draw in every process and after a resume."""
    return np.random.default_rng([int(seed), stream, int(round_index)])


def random_matching(n: int, seed: int) -> Schedule:
    """Each round a uniformly random perfect matching (one learner left out when N is odd): randomised
    pairwise gossip (Boyd et al. 2006), every learner averages with its one partner."""

    def draw(r: int) -> Reads:
        order = round_generator(seed, _MATCHING_STREAM, r).permutation(n).astype(np.int64)
        pairs = order[: 2 * (n // 2)].reshape(-1, 2)
        return np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])

    return Schedule(n, 0, draw, RANDOM_MATCHING)


def check_degree(n: int, degree: int | None) -> int:
    """A degree a random regular graph on n learners can have: 1 <= d < N and N d even."""
    if degree is None:
        raise TopologyError("--topology random-regular needs --degree D: give e.g. --degree 2")
    if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree < max(n, 2):
        raise TopologyError(f"--degree must be an integer in 1..{max(n - 1, 1)} for {n} learners, got {degree!r}")
    if n * degree % 2:
        raise TopologyError(
            f"no {degree}-regular graph on {n} learners exists (N x degree must be even): give an even --degree"
        )
    return degree


def random_regular(n: int, degree: int, seed: int) -> Schedule:
    """Each round a fresh random d-regular graph (as in Epidemic Learning, de Vos et al. 2023)."""
    check_degree(n, degree)

    def draw(r: int) -> Reads:
        graph = nx.random_regular_graph(degree, n, seed=round_generator(seed, _REGULAR_STREAM, r))
        return directed_edges(graph)

    return Schedule(n, 0, draw, RANDOM_REGULAR)


def schedule_for(
    topology: str | None, adjacency: str | None, graph: nx.Graph, seed: int = 0, degree: int | None = None
) -> Schedule:
    """The schedule of a run's options: a random one by --topology, a sequence when --adjacency gives
    several matrices (read again here: the run's graph is their union), else `graph` every round."""
    n = graph.number_of_nodes()
    if adjacency is None and topology == RANDOM_MATCHING:
        return random_matching(n, seed)
    if adjacency is None and topology == RANDOM_REGULAR:
        return random_regular(n, check_degree(n, degree), seed)
    if adjacency is not None and adjacency_rounds(adjacency) > 1:
        return sequence_schedule(read_adjacencies(adjacency, n))
    return static_schedule(graph)


def expected_matrix(schedule: Schedule, rule: str) -> np.ndarray:
    """E[C] of a schedule: the mean over one period, or for a random schedule the exact expectation.

    Both random schedules are exchangeable (relabelling learners does not change their law), so
    E[C] = a I + (1 - a)/(N - 1) (J - I) with a = E[C_kk]: 1/(d + 1) on a d-regular graph (uniform
    and metropolis weights agree there), and 1/2 for a matched learner, 1 for the one left out.
    """
    n = schedule.num_learners
    if not schedule.random:
        return np.mean([schedule.matrix(r, rule) for r in range(schedule.period)], axis=0)
    if n == 1:
        return np.ones((1, 1))
    if schedule.kind == RANDOM_MATCHING:
        diagonal = 0.5 if n % 2 == 0 else (n - 1) / n * 0.5 + 1 / n
    else:
        diagonal = 1.0 / (1 + len(schedule.reads(0)[0]) // n)
    off = (1.0 - diagonal) / (n - 1)
    return np.full((n, n), off) + np.eye(n) * (diagonal - off)


def period_product(schedule: Schedule, rule: str) -> np.ndarray:
    """C_0 C_1 ... C_{R-1}: one period of combining (periodic schedules)."""
    product = np.eye(schedule.num_learners)
    for r in range(schedule.period):
        product = product @ schedule.matrix(r, rule)
    return product


def describe_schedule(schedule: Schedule, rule: str) -> list[str]:
    """The lines `diffdac topology` adds for a schedule that changes every round."""
    if schedule.random:
        slem = second_largest_eigenvalue_modulus(expected_matrix(schedule, rule))
        fixed = second_largest_eigenvalue_modulus(schedule.matrix(0, rule))
        return [
            f"schedule: {schedule.kind}, a fresh graph every combine round (drawn from the seed and the round)",
            f"SLEM of the expected combination matrix E[C]: {slem:.4f} "
            f"(round 0's graph held fixed every round instead: {fixed:.4f})",
        ]
    rounds = schedule.period
    slem = second_largest_eigenvalue_modulus(period_product(schedule, rule))
    each = [second_largest_eigenvalue_modulus(schedule.matrix(r, rule)) for r in range(min(rounds, 8))]
    more = " ..." if rounds > 8 else ""
    return [
        f"schedule: {schedule.kind} of {rounds} rounds, round r uses graph r mod {rounds}",
        f"SLEM of each round's C alone: {' '.join(f'{s:.4f}' for s in each)}{more}",
        f"SLEM of the product of one period's combination matrices: {slem:.4f} "
        f"(per round {slem ** (1 / rounds):.4f}; the union graph's static figure is above)",
    ]
