"""Reading and writing the files of a run directory so that nothing reaches outside it.

A run directory travels between people, so any entry in it may be a symbolic link, a FIFO, a
device or a planted temporary file. Everything diffdac writes there goes through this module:

- a new file is created exclusively (O_CREAT | O_EXCL | O_NOFOLLOW), so an existing entry of that
  name, a link above all, is never written through;
- a replaced file is written to `NAME.tmp`, created the same way, and renamed over NAME, so no
  reader ever sees half a file and a failed write leaves no partial file behind;
- a file reopened to append is opened with O_NOFOLLOW;
- a file is removed only when it is a regular file (a link is left where it is);
- a file is read only when it is a regular file of a sane size, opened without following a link
  and without blocking on a FIFO; bytes that are not UTF-8 are "not text".

This module imports nothing of diffdac but its errors, so every layer can use it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import signal
import stat
from pathlib import Path
from typing import IO, Iterator

from diffdac.errors import ConfigError

MAX_TEXT = 1 << 30  # a Monitor file of a very long run stays far below this
MAX_SMALL = 64 << 20  # config.json, manifests, tables of tasks and graphs
_WRITE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class RunFileError(ConfigError):
    """A run file that diffdac will not read or write: a link, a FIFO, a device, too large, or not text."""


def fail_writes_past_the_file_size_limit() -> None:
    """A write past `ulimit -f` fails with EFBIG (said in one line) instead of SIGXFSZ killing the process."""
    if hasattr(signal, "SIGXFSZ"):
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        except ValueError:  # not the main thread
            pass


def check_name_lengths(path: Path, option: str) -> None:
    """Every part of a path this file system can hold (NAME_MAX, usually 255 bytes): else mkdir fails mid-run."""
    most = 255
    for place in [*Path(path).absolute().parents][::-1]:  # the deepest existing parent's limit
        try:
            most = os.pathconf(place, "PC_NAME_MAX")
        except (OSError, ValueError):
            break
    for part in Path(path).parts:
        if len(os.fsencode(part)) > most:
            raise ConfigError(
                f"{option}: the name {part[:40]}... is longer than this file system allows ({most} bytes)"
            )


def reason(err: BaseException) -> str:
    """The cause of an OSError as a user reads it (`No space left on device`), else the error's first line."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _not_plain(path: Path, mode: int | None) -> RunFileError:
    kind = "a symbolic link" if mode is not None and stat.S_ISLNK(mode) else "not a regular file"
    if mode is not None and stat.S_ISFIFO(mode):
        kind = "a FIFO"
    elif mode is not None and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
        kind = "a device"
    elif mode is not None and stat.S_ISDIR(mode):
        kind = "a directory"
    return RunFileError(f"{path} is {kind}: diffdac reads and writes only plain files in a run directory")


def _mode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return None


def is_plain(path: Path) -> bool:
    """A regular file that is not a link (what diffdac may read, cut back or remove)."""
    mode = _mode(path)
    return mode is not None and stat.S_ISREG(mode)


def is_link(path: Path) -> bool:
    mode = _mode(path)
    return mode is not None and stat.S_ISLNK(mode)


def check_plain_dir(path: Path) -> None:
    """A place inside a run (monitor/, checkpoints/) must be a real directory, not a link to somewhere else."""
    mode = _mode(path)
    if mode is not None and not stat.S_ISDIR(mode):
        raise _not_plain(path, mode)


def make_dir(path: Path) -> None:
    """mkdir -p, refusing a link or a file where the directory goes."""
    check_plain_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    check_plain_dir(path)


def create(path: Path, binary: bool = False) -> IO:
    """A new file, opened for writing only if nothing of that name exists (link, FIFO or file).

    The caller removes an earlier run's file first; anything else in the way is refused.
    """
    try:
        fd = os.open(path, _WRITE, 0o644)
    except FileExistsError:
        raise RunFileError(
            f"{path} already exists ({_kind(path)}): diffdac creates its files anew and writes through nothing; remove it"
        ) from None
    return os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": "", "encoding": "utf-8"}))


def _kind(path: Path) -> str:
    mode = _mode(path)
    if mode is not None and stat.S_ISLNK(mode):
        return "a symbolic link"
    return "a file" if mode is not None and stat.S_ISREG(mode) else "not a regular file"


def open_append(path: Path) -> IO[str]:
    """A run's own log reopened to append (a resumed run), never through a link."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _not_plain(path, _mode(path)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_plain(path, _mode(path))
    return os.fdopen(fd, "a", newline="", encoding="utf-8")


def _temporary(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _open_temporary(path: Path) -> tuple[Path, IO[bytes]]:
    """NAME.tmp, created exclusively; a stale one (a plain file left by a kill) is removed first, a link never."""
    tmp = _temporary(path)
    if is_plain(tmp):
        tmp.unlink()
    try:
        return tmp, os.fdopen(os.open(tmp, _WRITE, 0o644), "wb")
    except FileExistsError:
        raise RunFileError(
            f"{tmp} is {_kind(tmp)} where diffdac writes its temporary file: remove it (diffdac writes through nothing)"
        ) from None


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[IO[bytes]]:
    """Write `path` whole or not at all: into NAME.tmp (created exclusively), then renamed over NAME.

    On any error the temporary file is removed and the old file, if any, stays as it was.
    """
    tmp, file = _open_temporary(path)
    try:
        with file:
            yield file
        os.replace(tmp, path)  # a link at `path` is replaced itself, never written through
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def replacing_path(path: Path) -> Iterator[Path]:
    """`replacing` for writers that take a file name (torch.save): NAME.tmp is created exclusively, empty,
    before the writer opens it, so a planted link there is refused rather than written through."""
    tmp, file = _open_temporary(path)
    file.close()
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data` (see `replacing`)."""
    with replacing(path) as file:
        file.write(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def remove(path: Path) -> bool:
    """Remove a regular file (a link, a directory, a FIFO stay); True if one was removed."""
    if not is_plain(path):
        return False
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return True


def open_plain(path: Path, limit: int | None = None) -> IO[bytes]:
    """A regular file opened for reading without following a link or blocking on a FIFO; refused above `limit` bytes."""
    try:
        fd = os.open(path, _READ)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENXIO):
            raise _not_plain(path, _mode(path)) from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _not_plain(path, info.st_mode)
    if limit is not None and info.st_size > limit:
        os.close(fd)
        raise RunFileError(f"{path} is {info.st_size} bytes, more than any run file diffdac writes: is it one?")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bytes(path: Path, limit: int = MAX_TEXT) -> bytes:
    with open_plain(path, limit) as file:
        return file.read(limit + 1)


def read_text(path: Path, limit: int = MAX_TEXT) -> str:
    """A run file's text; RunFileError when it is a link, FIFO, device, too large, or not UTF-8 text."""
    data = read_bytes(path, limit)
    if b"\0" in data:
        raise RunFileError(f"{path} is not text: diffdac writes it as text, so it is not a run file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise RunFileError(f"{path} is not text: diffdac writes it as text, so it is not a run file") from None


def text_stream(path: Path, limit: int = MAX_SMALL) -> io.StringIO:
    """A run file's text as a file object, for pandas."""
    return io.StringIO(read_text(path, limit))
