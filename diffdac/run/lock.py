"""One run per directory: an exclusive lock on DIR/diffdac.lock for as long as the run lives.

Two runs started on one --log-dir would mix their files, and an --overwrite or a --resume of a
directory whose run still trains would have the old process write into the new run's files. So
rank 0 holds `fcntl.flock(LOCK_EX)` on DIR/diffdac.lock on behalf of its world, and every rank
holds a shared lock on DIR/diffdac.ranks.lock; a newcomer must get the first and find the second
free, so a rank left running without its rank 0 (an orphan of a killed launcher) keeps it out too.
flock dies with its process: a killed run's lock never blocks a resume. The lock files stay (an
empty file each); removing them while held would let a second run lock a new file of that name.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from diffdac import files
from diffdac.errors import ConfigError

LOCK_FILE = "diffdac.lock"
RANKS_FILE = "diffdac.ranks.lock"
LOCK_FILES = (LOCK_FILE, RANKS_FILE)


class RunLocked(ConfigError):
    """The run directory is in use by another diffdac process."""


def _open(path: Path) -> IO[bytes]:
    """The lock file, created if missing, never through a link (a link there is refused)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if files.is_link(path):
            raise files.RunFileError(
                f"{path} is a symbolic link: diffdac writes through no link in a run directory"
            ) from None
        raise ConfigError(
            f"cannot lock the run directory {path.parent} ({files.reason(err)}): is it writable?"
        ) from None
    return os.fdopen(fd, "rb+")


def _try(file: IO[bytes], kind: int) -> bool:
    try:
        fcntl.flock(file.fileno(), kind | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _in_use(run_dir: Path) -> RunLocked:
    return RunLocked(
        f"{run_dir} is in use by another diffdac run that is still running: wait for it to end, stop it, "
        "or choose another --log-dir"
    )


class RunLock:
    """The locks of one process: `acquire_lead` (rank 0, before anything is written) then `join` (every rank)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.lead: IO[bytes] | None = None
        self.rank: IO[bytes] | None = None

    def acquire_lead(self) -> None:
        """Rank 0: the directory's exclusive lock, and proof that no rank of an earlier run holds its shared one."""
        files.make_dir(self.run_dir)
        self.lead = _open(self.run_dir / LOCK_FILE)
        if not _try(self.lead, fcntl.LOCK_EX):
            self.release()
            raise _in_use(self.run_dir)
        ranks = _open(self.run_dir / RANKS_FILE)
        free = _try(ranks, fcntl.LOCK_EX)
        ranks.close()  # closing drops the probe's lock
        if not free:
            self.release()
            raise _in_use(self.run_dir)

    def join(self) -> None:
        """Every rank, once rank 0 holds the lead lock: a shared lock for as long as this rank runs."""
        self.rank = _open(self.run_dir / RANKS_FILE)
        fcntl.flock(self.rank.fileno(), fcntl.LOCK_SH)

    def release(self) -> None:
        for file in (self.rank, self.lead):
            if file is not None:
                file.close()
        self.lead = self.rank = None
