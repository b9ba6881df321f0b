"""Learners across processes and machines: a Communicator over torch.distributed.

torchrun starts the processes and sets RANK, WORLD_SIZE and LOCAL_RANK; each rank hosts the
contiguous block `learner_block(rank, world_size, N)`. The combine step moves rows only between
ranks that host neighbouring learners, with point-to-point messages in an order fixed by the
graph, so a rank's traffic grows with its learners' neighbours, never with N.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Protocol, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from diffdac.network.comm import Communicator, LocalCommunicator, check_world_size, learner_block
from diffdac.errors import TrainingError

T = TypeVar("T")


class PeerLost(TrainingError):
    """A message to or from another rank failed: the peer died, hung past --dist-timeout, or the network broke."""

    def __init__(self, rank: int, peer: int | None, detail: str, update: int | None = None) -> None:
        self.rank, self.peer, self.detail, self.update = rank, peer, detail, update
        who = "a peer" if peer is None else f"peer rank {peer}"
        when = "" if update is None else f" at update {update}"
        super().__init__(f"rank {rank} lost {who}{when}: {detail}")

    def at_update(self, update: int) -> "PeerLost":
        """The same loss, naming the update the training loop was in (the communicator does not count updates)."""
        return PeerLost(self.rank, self.peer, self.detail, update)


@dataclass(frozen=True)
class ExchangePlan:
    """Which rows move between one rank and each peer; fixed by the graph for the whole run.

    `sends[peer]`: positions in this rank's block of the rows the peer's learners read;
    `recvs[peer]`: global ids this rank's learners read from the peer. Both ascending.
    """

    rank: int
    local_ids: np.ndarray
    sends: dict[int, np.ndarray]
    recvs: dict[int, np.ndarray]

    @property
    def peers(self) -> list[int]:
        """Ranks this rank sends to or receives from, ascending: the order of every exchange."""
        return sorted(set(self.sends) | set(self.recvs))


def plan_reads(src: np.ndarray, dst: np.ndarray, num_learners: int, world_size: int, rank: int) -> ExchangePlan:
    """The rows `rank` sends to and receives from each peer, from directed reads: learner dst[i] reads
    learner src[i]'s row (an undirected graph gives both directions; push-sum gossip is one-way)."""
    blocks = [learner_block(r, world_size, num_learners) for r in range(world_size)]
    owner = np.repeat(np.arange(world_size), [len(b) for b in blocks])
    local_ids = blocks[rank]
    sends: dict[int, set[int]] = defaultdict(set)
    recvs: dict[int, set[int]] = defaultdict(set)
    for row, reader in zip(np.asarray(src).tolist(), np.asarray(dst).tolist()):
        if owner[row] == owner[reader]:
            continue
        if owner[row] == rank:
            sends[int(owner[reader])].add(row)
        if owner[reader] == rank:
            recvs[int(owner[row])].add(row)
    return ExchangePlan(
        rank=rank,
        local_ids=local_ids,
        sends={p: np.array(sorted(ids), dtype=np.int64) - local_ids[0] for p, ids in sends.items()},
        recvs={p: np.array(sorted(ids), dtype=np.int64) for p, ids in recvs.items()},
    )


def _one_line(err: BaseException) -> str:
    """A backend error's first sentence without gloo's `[file.cc:123]` prefix: the part a user can act on."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0].rstrip(".")


class DistributedCommunicator:
    """The Communicator of one rank in a torch.distributed world (process group already initialised).

    exchange() talks to each peer in ascending rank order; within a pair the lower rank sends
    first and the higher receives first, and every handle is waited on before the next message.
    Every rank walks its pairs in an order consistent with one global order of pairs, so the
    blocking sequence cannot deadlock, and it avoids batch_isend_irecv, which hangs on gloo.
    `bytes_sent` counts the bytes this rank has handed to send in exchanges (collectives, whose
    traffic the backend's algorithm decides, are not counted).
    """

    def __init__(self, plans: list[ExchangePlan], num_learners: int, backend: str, local_rank: int) -> None:
        self.rank = dist.get_rank()
        self.num_learners = num_learners
        self.world_size = dist.get_world_size()
        self.plans = plans
        self.backend = backend
        self.local_rank = local_rank
        self.bytes_sent = 0

    def _guard(self, peer: int | None, action: Callable[[], T]) -> T:
        """Run a message or collective; a backend failure becomes one PeerLost naming the peer."""
        try:
            return action()
        except RuntimeError as err:
            raise PeerLost(self.rank, peer, _one_line(err)) from None

    def _transport(self, tensor: torch.Tensor) -> torch.Tensor:
        """gloo moves CPU tensors, nccl CUDA tensors: a contiguous copy on the backend's device."""
        device = torch.device("cpu") if self.backend == "gloo" else tensor.device
        return tensor.to(device).contiguous()

    def _swap(self, peer: int, outgoing: torch.Tensor | None, incoming: torch.Tensor | None) -> None:
        """One pair's messages (either may be absent), lower rank sending first; each waited on before the next."""
        ops = [(dist.isend, outgoing), (dist.irecv, incoming)]
        for op, tensor in ops if self.rank < peer else ops[::-1]:
            if tensor is not None:
                self._guard(peer, lambda: op(tensor, peer).wait())

    def plan(self, src: np.ndarray, dst: np.ndarray) -> ExchangePlan:
        """The plan of one round's reads, for schedules that draw a graph per round (every rank draws the same)."""
        return plan_reads(src, dst, self.num_learners, self.world_size, self.rank)

    def exchange(self, block: torch.Tensor, buffer_ids: np.ndarray, graph: int | ExchangePlan = 0) -> torch.Tensor:
        """This block's rows `[K, X]` -> rows of `buffer_ids` `[M, X]`, neighbours' fetched from their ranks.

        `graph` picks one of the communication graphs the plans were made from (GALA has one per
        round), or is a plan of this round's reads (`plan`). The method made both the plans and
        its mixer's `buffer_ids` from the same reads (diffdac.network.methods.Method.communication),
        so the rows the plan yields are the buffer's.
        """
        plan = graph if isinstance(graph, ExchangePlan) else self.plans[graph]
        source = self._transport(block)
        pieces: dict[int, torch.Tensor] = {self.rank: source}
        for peer in plan.peers:
            rows = plan.sends.get(peer)
            outgoing = None if rows is None else source[torch.from_numpy(rows).to(source.device)]
            if outgoing is not None:
                self.bytes_sent += outgoing.numel() * outgoing.element_size()
            incoming = None if peer not in plan.recvs else source.new_empty((len(plan.recvs[peer]), *source.shape[1:]))
            self._swap(peer, outgoing, incoming)
            if incoming is not None:
                pieces[peer] = incoming
        return torch.cat([pieces[r] for r in sorted(pieces)]).to(block.device)

    def all_gather(self, block: torch.Tensor) -> torch.Tensor:
        """Every learner's row `[N, X]` in learner order (blocks padded to one size, as all_gather needs)."""
        sizes = [len(learner_block(r, self.world_size, self.num_learners)) for r in range(self.world_size)]
        source = self._transport(block)
        padded = source.new_zeros((max(sizes), *source.shape[1:]))
        padded[: len(source)] = source
        out = [torch.empty_like(padded) for _ in sizes]
        self._guard(None, lambda: dist.all_gather(out, padded))
        return torch.cat([piece[:n] for piece, n in zip(out, sizes)]).to(block.device)

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        reduced = self._transport(tensor).clone()
        self._guard(None, lambda: dist.all_reduce(reduced))
        return reduced.to(tensor.device)

    def gather_objects(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        self._guard(None, lambda: dist.all_gather_object(out, obj))
        return out

    def barrier(self) -> None:
        device_ids = [self.local_rank] if self.backend == "nccl" else None
        self._guard(None, lambda: dist.barrier(device_ids=device_ids))


def launched_by_torchrun() -> bool:
    """torchrun (or any launcher of torch.distributed) sets WORLD_SIZE; without it we are a world of one."""
    return "WORLD_SIZE" in os.environ


def env_rank() -> int:
    """This process's global rank from the launcher's environment (0 outside torchrun), known before any rendezvous."""
    return int(os.environ.get("RANK", "0"))


def _world_from_env(num_learners: int) -> tuple[int, int, int]:
    """(rank, world size, local rank); refuses more processes than learners before anyone waits on a rendezvous."""
    world_size = int(os.environ["WORLD_SIZE"])
    check_world_size(world_size, num_learners)
    return env_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0"))


class WorldOptions(Protocol):
    """The options that say how a rank joins the world (TrainConfig has them)."""

    num_learners: int
    device: str
    backend: str | None
    dist_timeout: float


@contextmanager
def connect(config: WorldOptions, reads: list[tuple[np.ndarray, np.ndarray]]) -> Iterator[Communicator]:
    """The communicator of this process: LocalCommunicator without torchrun, else a rank of the world.

    `reads` are the communication graphs of the method (directed: dst reads src), one exchange
    plan each (see diffdac.network.methods.Method.communication).

    The process group is torn down after a clean run only: after a lost peer, teardown could
    wait on that peer again, and the process is about to exit anyway.
    """
    if not launched_by_torchrun():
        yield LocalCommunicator()
        return
    rank, world_size, local_rank = _world_from_env(config.num_learners)
    backend = config.backend or ("nccl" if config.device == "cuda" else "gloo")
    if config.device == "cuda":
        torch.cuda.set_device(local_rank)  # before the first collective, or nccl can hang
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=config.dist_timeout))
    except RuntimeError as err:
        raise TrainingError(
            f"rank {rank} could not join the world of {world_size} processes: {_one_line(err)}"
        ) from None
    plans = [plan_reads(src, dst, config.num_learners, world_size, rank) for src, dst in reads]
    comm = DistributedCommunicator(plans, config.num_learners, backend, local_rank)
    yield comm
    comm.barrier()  # no rank tears its connections down while a peer still reads from them
    dist.destroy_process_group()
