"""Preemption: SIGTERM and SIGINT end a run at an update boundary, with a checkpoint there.

SLURM and Kubernetes send SIGTERM before they take a machine back; Ctrl-C sends SIGINT. While
the loop runs, either one only sets a flag; the loop reads it after each update, writes a
checkpoint at that step, and the command line prints how to continue and exits 128 + the
signal's number (143, 130). Under torchrun every rank must stop at the same update (a checkpoint
is one file per rank of one step), so the ranks agree by summing their flags at every log
interval; one process needs no agreement and checks after every update.

A rank whose launcher is gone (torchrun killed with -9) would train on as an orphan: each rank
compares its parent's pid with its launcher's at every check, and then stops as if sent SIGTERM.
(PR_SET_PDEATHSIG is not used: it fires when the launcher's *thread* that started the rank ends,
which need not be the launcher's end.)
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Callable

import torch

from diffdac.errors import Stopped

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopFlag:
    """What the handlers set and the loop reads; installed for the loop's life, then the old handlers return."""

    def __init__(self, under_launcher: bool) -> None:
        self.signum = 0
        self.under_launcher = under_launcher
        self.parent = os.getppid()
        self._old: dict[int, Callable | int | None] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = self.signum or signum

    def install(self) -> "StopFlag":
        """Handlers that only set the flag, in place of the process's own (Ctrl-C's KeyboardInterrupt)."""
        try:
            for sig in SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: signals keep their old meaning
            self._old.clear()
        return self

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def local(self) -> int:
        """This process's reason to stop: a signal's number, SIGTERM when its launcher is gone, else 0."""
        if not self.signum and self.under_launcher and os.getppid() != self.parent:
            self.signum = int(signal.SIGTERM)
        return self.signum

    def agreed(self, at_log: bool, world_size: int, all_sum: Callable[[torch.Tensor], torch.Tensor], device) -> int:
        """The signal every rank stops for after this update (0: go on).

        One process checks after every update. Under torchrun the ranks agree when they write a
        progress row (`at_log`), beside the collective that row needs already: a collective in any
        other update would be where a hung peer is found, and it would not name that peer.
        """
        if world_size == 1:
            return self.local()
        if not at_log:
            return 0
        flags = torch.zeros(len(SIGNALS), dtype=torch.float64)
        mine = self.local()
        if mine:
            flags[SIGNALS.index(mine) if mine in SIGNALS else 0] = 1.0
        total = all_sum(flags.to(device)).cpu()
        return next((int(sig) for sig, n in zip(SIGNALS, total.tolist()) if n > 0), 0)


def stopped(signum: int, steps: int, run_dir: object, saved: bool, world_size: int) -> Stopped:
    """The one line a stopped run prints, and its exit status."""
    name = signal.Signals(signum).name
    launcher = "diffdac train" if world_size == 1 else f"torchrun --nproc-per-node {world_size} -m diffdac train"
    where = f"checkpoint at step {steps} saved" if saved else "no checkpoint could be saved"
    return Stopped(
        f"diffdac: stopped by {name} at step {steps} ({where}); continue with: {launcher} --resume --log-dir {run_dir}",
        128 + signum,
    )
