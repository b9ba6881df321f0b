"""What the tests that start torchrun worlds share: a free port, and an environment without an outer launcher's variables."""

from __future__ import annotations

import os
import socket

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")


def free_port() -> int:
    """A port nothing listens on now, for a world's rendezvous (workers of one suite must not share one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(**extra: str) -> dict[str, str]:
    """The test's environment without any torchrun variables of an outer launcher, one thread per process."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def torchrun(processes: int, *args: str) -> list[str]:
    """The command of a torchrun world of `processes` ranks on this machine, on a free port, running `args`."""
    import sys

    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes)]
    return [*launcher, "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *args]
