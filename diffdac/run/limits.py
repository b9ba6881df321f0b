"""How much memory a run will need, checked before anything is allocated.

A typo such as `--num-learners 1000000000` or `--hidden 100000` should end in one line that says
what the run would need, not in a machine swapping itself to death or an allocator's traceback.
The estimate counts what grows with the options (parameters and their optimiser state, rollout
buffers, activations, simulators, the graph, the dense matrices written to the run directory);
it is meant to be within a factor of about two, which is all a refusal needs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from diffdac.errors import ConfigError
from diffdac.learners.population import parameter_count

FLOAT = 4  # bytes of a float32
DOUBLE = 8
PROCESS_BASE = 400e6  # python, torch, numpy and gymnasium imported
BYTES_PER_EDGE = 200  # networkx: two adjacency entries and an attribute dict per edge (measured ~140)
# Per simulator, measured: a batched Acrobot's own generator and state; a MuJoCo env (model + data);
# any other gymnasium env (CartPole-sized).
SIMULATOR_BYTES = {"batched": 2_000, "mujoco": 1_200_000, "gym": 16_000}
USABLE_FRACTION = 0.9  # leave the machine some room


@dataclass(frozen=True)
class Sizes:
    """What a run is made of: learners in this process and in all, simulators, network widths, graph edges."""

    learners: int  # in this process
    total_learners: int
    sims: int  # per learner
    steps: int  # per update
    obs_dim: int
    action_dim: int
    hidden: int
    edges: int
    simulator_kind: str
    history: int = 1  # parameter copies kept for stale reads
    gathers_all: bool = False  # centralised A2C all-gathers every learner's gradient


def estimate_bytes(s: Sizes, dense_matrices: bool = True) -> int:
    """Peak resident memory of one process of the run, in bytes (approximate)."""
    params = s.learners * parameter_count(s.obs_dim, s.hidden, s.action_dim) * FLOAT  # continuous: the larger
    # flat, its gradient, the per-parameter leaves, RMSprop's state and temporaries, the combine buffers
    optimiser = params * (8 + s.history) + (s.total_learners * params // max(s.learners, 1) if s.gathers_all else 0)
    batch = s.steps * s.sims  # samples per learner and update
    activations = 2 * 3 * 4 * s.learners * batch * (2 * s.hidden + max(s.action_dim, 1)) * FLOAT
    rollout = s.learners * batch * (2 * s.obs_dim + 2 * max(s.action_dim, 1) + 4) * DOUBLE
    simulators = s.learners * s.sims * SIMULATOR_BYTES[s.simulator_kind]
    graph = s.edges * BYTES_PER_EDGE
    matrices = 4 * s.total_learners**2 * DOUBLE if dense_matrices else 0  # topology.csv and combination.csv, via pandas
    return int(PROCESS_BASE + optimiser + activations + rollout + simulators + graph + matrices)


def available_bytes() -> int | None:
    """Memory the kernel can give without swapping (MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(s: Sizes, processes_here: int = 1) -> None:
    """Refuse a run whose processes on this machine would need more memory than it has available."""
    need = estimate_bytes(s) * processes_here
    have = available_bytes()
    if have is None or need <= have * USABLE_FRACTION:
        return
    where = f"{processes_here} processes x " if processes_here > 1 else ""
    raise ConfigError(
        f"this run needs about {_gb(need)} of memory ({where}{s.learners} learners x {s.sims} simulators, "
        f"hidden {s.hidden}, {s.steps} steps per update, {s.total_learners} learners in all) but this machine has "
        f"{_gb(have)} available: lower --num-learners, --envs-per-learner, --hidden or --steps-per-update, "
        "or spread the learners over more machines with torchrun"
    )


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{math.ceil(n / 1e6)} MB"
