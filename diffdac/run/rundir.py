"""The run directory: config.json, graph and task tables, Monitor CSVs and progress.csv."""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Sequence

import networkx as nx
import numpy as np
import pandas as pd

import topologies

from diffdac import files
from diffdac.errors import ResumeError
from diffdac.run import provenance

if TYPE_CHECKING:
    from diffdac.config import TrainConfig
    from diffdac.network.methods import Method


# The files a run writes at the top of its directory (eval.csv: diffdac eval); monitor/ and
# checkpoints/ hold only files named by MONITOR_NAME and checkpoint.is_checkpoint_file.
RUN_FILES = ("config.json", "topology.csv", "combination.csv", "tasks.csv", "progress.csv")
EVAL_FILE = re.compile(r"eval(-[A-Za-z0-9_.-]+)?\.csv$")
MONITOR_NAME = re.compile(r"learner(\d+)\.sim(\d+)\.monitor\.csv$")


def monitor_path(run_dir: Path, learner: int, sim: int) -> Path:
    """One Monitor file per simulator: several writers on one CSV would interleave rows."""
    return run_dir / "monitor" / f"learner{learner:03d}.sim{sim:02d}.monitor.csv"


def _written_by_a_run(path: Path) -> bool:
    """Whether diffdac writes a file of this name at this place of a run directory (temporaries included)."""
    name = path.name.removesuffix(".tmp")
    if path.parent.name == "monitor":
        return bool(MONITOR_NAME.fullmatch(name))
    if path.parent.name == "checkpoints":
        from diffdac.run import checkpoint  # torch: only --overwrite needs it

        return checkpoint.is_checkpoint_file(path.name)
    return name in RUN_FILES or bool(EVAL_FILE.fullmatch(name))


def run_places(run_dir: Path) -> list[Path]:
    """The run directory and its monitor/ and checkpoints/, each refused (RunFileError) when it is a link."""
    places = [run_dir, run_dir / "monitor", run_dir / "checkpoints"]
    for place in places[1:]:
        files.check_plain_dir(place)
    return [place for place in places if place.is_dir()]


def run_files(run_dir: Path) -> list[Path]:
    """The files in `run_dir` that a diffdac run (or diffdac eval) writes, found by name; nothing else.

    Only regular files count: a link of a run file's name is not something a run wrote.
    """
    return [
        p
        for place in run_places(run_dir)
        for p in sorted(place.iterdir())
        if files.is_plain(p) and _written_by_a_run(p)
    ]


def linked_run_files(run_dir: Path) -> list[Path]:
    """Links (or other non-files) where a run writes its files: --overwrite refuses them rather than write through them."""
    return [
        p
        for place in run_places(run_dir)
        for p in sorted(place.iterdir())
        if _written_by_a_run(p) and not files.is_plain(p) and not p.is_dir()
    ]


LOCK_NAMES = ("diffdac.lock", "diffdac.ranks.lock")  # diffdac.run.lock: kept, never removed


def is_a_run_config(values: object) -> bool:
    """A config.json that a diffdac run wrote: its options and what the run adds (version, world size)."""
    return (
        isinstance(values, dict)
        and {"env", "num_learners", "version", "world_size"} <= set(values)
        and isinstance(values["version"], str)
        and type(values["world_size"]) is int
    )


def check_replaceable(run_dir: Path, holds_run: bool) -> None:
    """--overwrite removes only a diffdac run's own files: refuse a directory whose config.json is not a run's,
    files of a run's names in a directory that holds no run, and links where a run's files go."""
    from diffdac.errors import ConfigError

    if holds_run:
        try:
            values = json.loads(files.read_text(run_dir / "config.json", files.MAX_SMALL))
        except (OSError, files.RunFileError, json.JSONDecodeError, RecursionError):
            values = None
        if not is_a_run_config(values):
            raise ConfigError(
                f"{run_dir / 'config.json'} is not a diffdac run's config.json: --overwrite replaces only a diffdac run; "
                "choose another --log-dir"
            )
    linked = linked_run_files(run_dir)
    if linked:
        raise ConfigError(
            f"{linked[0]} is a link or not a regular file: --overwrite removes nothing through links; remove it"
        )
    if not holds_run:
        named = [p for p in run_files(run_dir) if p.name != "config.json.tmp"]
        if named:
            raise ConfigError(
                f"{named[0]} is not from a diffdac run ({run_dir} holds none) and a run would replace it: "
                "move it or choose another --log-dir"
            )


def only_leftovers(run_dir: Path, lock_only: bool = False) -> bool:
    """A directory as good as empty: nothing but lock files, or (`lock_only` False, for --resume) also what a run
    killed while writing its first config.json leaves."""
    names = LOCK_NAMES if lock_only else ("config.json.tmp", *LOCK_NAMES)
    return all(p.name in names and files.is_plain(p) for p in run_dir.iterdir())


def remove_run_files(run_dir: Path) -> None:
    """Remove an earlier run's files before --overwrite writes a new one, and only those.

    A user's own files (a notes.txt, checkpoints/my_model.pt) stay, and so do monitor/ and
    checkpoints/ when something of theirs is left in them. Nothing is removed through a link.
    """
    for path in run_files(run_dir):
        files.remove(path)
    for place in (run_dir / "monitor", run_dir / "checkpoints"):
        if place.is_dir() and not place.is_symlink() and not any(place.iterdir()):
            place.rmdir()


def check_rows(path: Path, header_lines: int, keep_rows: int) -> None:
    """Refuse (ResumeError) a log that cannot be cut back to `keep_rows` rows: missing, or with fewer rows.

    Resume checks every log with this before it cuts any of them, so a run directory that does
    not match its checkpoint is left exactly as it was.
    """
    _complete_lines(path, header_lines, keep_rows)


def complete_lines(text: str) -> list[str]:
    """The lines of a log that end in a newline, without it: a row cut in half by a kill, or still being written, is left out."""
    return text.split("\n")[:-1]


def _complete_lines(path: Path, header_lines: int, keep_rows: int) -> list[str]:
    """The newline-terminated lines of a log holding at least `keep_rows` rows (a row cut in half by a kill is dropped)."""
    if not path.exists() and not path.is_symlink():
        raise ResumeError(f"{path} is missing: the run directory does not match its checkpoint")
    try:
        lines = complete_lines(files.read_text(path))
    except files.RunFileError as err:
        raise ResumeError(f"{err} (the run directory does not match its checkpoint)") from None
    except OSError as err:
        raise ResumeError(
            f"cannot read {path} ({files.reason(err)}): the run directory does not match its checkpoint"
        ) from None
    if len(lines) < header_lines + keep_rows:
        raise ResumeError(
            f"{path} has {len(lines) - header_lines} rows but its checkpoint counted {keep_rows}: the run directory does not match its checkpoint"
        )
    return lines


class MonitorFile:
    """A Stable-Baselines3 / OpenAI-baselines Monitor file, flushed per row.

    First line `#` + JSON with `t_start` and `env_id` (plus the task's parameters), then the
    header `r,l,t`, then one row per finished episode: return, length, seconds since t_start.
    `keep_rows` reopens an existing file for a resumed run: rows after the first `keep_rows`
    (episodes that ended after the checkpoint) are cut, and `t_start` stays the original one.
    """

    def __init__(
        self, path: Path, env_id: str, t_start: float, task: dict[str, Any], keep_rows: int | None = None
    ) -> None:
        files.make_dir(path.parent)
        if keep_rows is None:
            self.t_start, self.rows = t_start, 0
            self._file: IO[str] = files.create(path)
            self._file.write("#" + json.dumps({"t_start": t_start, "env_id": env_id, **task}) + "\n")
            self._file.write("r,l,t\n")
            self._file.flush()
        else:
            header = truncate_rows(path, 2, keep_rows)
            self.t_start, self.rows = monitor_start(path, header[0]), keep_rows
            self._file = files.open_append(path)
        self._writer = csv.writer(self._file, lineterminator="\n")

    def write(self, ret: float, length: int, now: float) -> None:
        self._writer.writerow((round(float(ret), 6), int(length), round(now - self.t_start, 6)))
        self._file.flush()
        self.rows += 1

    def close(self) -> None:
        self._file.close()


def monitor_start(path: Path, first_line: str) -> float:
    """t_start of a Monitor file's `#` + JSON header; ResumeError when the header is not one."""
    try:
        value = json.loads(first_line[1:])["t_start"] if first_line.startswith("#") else None
    except (json.JSONDecodeError, RecursionError, TypeError, KeyError):
        value = None
    if type(value) not in (int, float) or value != value:
        raise ResumeError(
            f"{path} does not start with a Monitor header ('#' + JSON with t_start): it is not this run's"
        )
    return float(value)


def check_monitor_header(path: Path) -> None:
    """Resume checks a Monitor file's header before anything is cut, like its rows."""
    monitor_start(path, (_complete_lines(path, 2, 0) or [""])[0])


def truncate_rows(path: Path, header_lines: int, keep_rows: int) -> list[str]:
    """Cut a CSV back to its header and first `keep_rows` rows (atomically); returns the header lines.

    A row cut in half by a kill has no newline yet and is dropped with the rest.
    """
    complete = _complete_lines(path, header_lines, keep_rows)
    files.write_text(path, "".join(line + "\n" for line in complete[: header_lines + keep_rows]))
    return complete[:header_lines]


class MonitorSet:
    """The Monitor files of a block's K x E simulators."""

    def __init__(
        self,
        run_dir: Path,
        env_id: str,
        learner_ids: Sequence[int],
        envs_per_learner: int,
        tasks: Sequence[dict[str, Any]],
        keep_rows: list[list[int]] | None = None,
    ) -> None:
        t_start = time.time()
        self.files = [
            [
                MonitorFile(
                    monitor_path(run_dir, int(k), e),
                    env_id,
                    t_start,
                    _plain(task),
                    None if keep_rows is None else keep_rows[i][e],
                )
                for e in range(envs_per_learner)
            ]
            for i, (k, task) in enumerate(zip(learner_ids, tasks))
        ]

    def rows(self) -> list[list[int]]:
        """Rows written to each file so far: what a checkpoint records to cut back to on resume."""
        return [[f.rows for f in row] for row in self.files]

    def record(self, episode_return: np.ndarray, episode_length: np.ndarray, done: np.ndarray) -> None:
        """Write a row for every simulator whose episode ended (`done: [K, E]`)."""
        now = time.time()
        for k, e in zip(*np.nonzero(done)):
            self.files[k][e].write(episode_return[k, e], episode_length[k, e], now)

    def close(self) -> None:
        for row in self.files:
            for f in row:
                f.close()


class ProgressFile:
    """progress.csv: one row per log interval, flushed as written; `keep_rows` reopens it on resume.

    The columns are the first row's keys. A later row with a key the header lacks (a resumed run
    of a newer diffdac, a metric declared late) widens the file: earlier rows get empty cells.
    """

    def __init__(self, path: Path, keep_rows: int | None = None) -> None:
        self.path = path
        if keep_rows is None:
            self._file = files.create(path)
            self.header: list[str] | None = None
            self.rows = 0
        else:
            self.header = truncate_rows(path, 1, keep_rows)[0].split(",")
            self._file = files.open_append(path)
            self.rows = keep_rows

    def write(self, row: dict[str, float]) -> None:
        if self.header is None:
            self.header = list(row)
            self._file.write(",".join(self.header) + "\n")
        elif any(k not in self.header for k in row):
            self._widen([k for k in row if k not in self.header])
        csv.DictWriter(self._file, fieldnames=self.header, lineterminator="\n").writerow(
            {k: row.get(k, "") for k in self.header}
        )
        self._file.flush()
        self.rows += 1

    def _widen(self, new: list[str]) -> None:
        """Rewrite the file (atomically) with the new columns at the end, empty in the rows so far."""
        self._file.close()
        lines = files.read_text(self.path).splitlines()
        self.header = self.header + new
        body = [line + "," * len(new) for line in lines[1:]]
        files.write_text(self.path, "".join(line + "\n" for line in [",".join(self.header), *body]))
        self._file = files.open_append(self.path)

    def close(self) -> None:
        self._file.close()


def write_run_files(
    run_dir: Path, config: TrainConfig, graph: nx.Graph, method: Method, tasks: list[dict], world_size: int
) -> None:
    """config.json, topology.csv, combination.csv and tasks.csv (all learners' tasks, in order).

    An earlier run's logs and checkpoints here (--overwrite) are removed first, so that a later
    --resume can never pick up another run's checkpoint; files diffdac did not write stay.
    """
    remove_run_files(run_dir)
    files.make_dir(run_dir)
    stored = {k: v for k, v in config.to_dict().items() if k not in ("resume", "overwrite")}
    if config.adjacency is not None and not config.adjacency.strip().startswith("["):
        # the matrix itself (every matrix of a sequence), so the run can be resumed or repeated after the
        # file has moved or changed
        if topologies.adjacency_rounds(config.adjacency) > 1:
            matrix = topologies.read_adjacencies(config.adjacency, config.num_learners).astype(int)
        else:
            matrix = nx.to_numpy_array(graph, nodelist=range(config.num_learners), dtype=int)
        stored.update(adjacency=json.dumps(matrix.tolist(), separators=(",", ":")), adjacency_file=config.adjacency)
    write_json(
        run_dir / "config.json",
        {**stored, "version": provenance.VERSION, "world_size": world_size, "provenance": provenance.facts()},
    )
    write_matrix(
        run_dir / "topology.csv",
        nx.to_numpy_array(method.logged_graph(), nodelist=range(config.num_learners), dtype=int),
    )
    write_matrix(run_dir / "combination.csv", method.combination_matrix())
    write_tasks(run_dir / "tasks.csv", config.env, range(config.num_learners), tasks)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically, so a crash never leaves half a file behind."""
    files.write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def write_matrix(path: Path, matrix: np.ndarray) -> None:
    """A square matrix as CSV with learner indices on both axes."""
    n = matrix.shape[0]
    frame = pd.DataFrame(matrix, index=pd.Index(range(n), name="learner"), columns=range(n))
    files.write_text(path, frame.to_csv())


def write_tasks(path: Path, env_id: str, learner_ids: Sequence[int], tasks: Sequence[dict[str, Any]]) -> None:
    """tasks.csv: learner, env id and each task parameter."""
    rows = [{"learner": int(k), "env_id": env_id, **_plain(t)} for k, t in zip(learner_ids, tasks)]
    files.write_text(path, pd.DataFrame(rows).to_csv(index=False))


def _plain(task: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in task.items()}


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)
