"""A run from start to end: train() and run(), the loop (rollout -> adapt -> combine -> log), checkpoints and progress rows."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

import topologies
from diffdac import files
from diffdac.run import checkpoint
from diffdac.run import memory
from diffdac.run import signals
from diffdac.run.lock import RunLock
from diffdac.network.comm import Communicator, LocalCommunicator, check_world_size, learner_block
from diffdac.config import RESUME_FREE, TrainConfig, read_run_config
from diffdac.network.distributed import PeerLost, launched_by_torchrun
from diffdac.errors import CheckpointError, ConfigError, ResumeError, TrainingError
from diffdac.learners.block import EpisodeStats, Learners, task_weighted_score
from diffdac.run.loggers import Logger, MonitorLogger, ProgressLogger, RunInfo, TensorBoardLogger, TerminalLogger
from diffdac.run.rundir import (
    MonitorSet,
    ProgressFile,
    check_monitor_header,
    check_rows,
    monitor_path,
    write_json,
    write_run_files,
)
from diffdac.run.prepare import Prepared, make_tasks, prepare


def train(config: TrainConfig, comm: Communicator | None = None, loggers: Sequence[Logger] = ()) -> Path:
    """Train config.num_learners learners by diffusion and return the run directory.

    `comm` connects the processes of a torchrun world; without it this process hosts every learner.
    With `config.resume`, the run in `config.log_dir` continues from its newest checkpoint that loads.
    `loggers` are called beside the run's own (Monitor files, progress.csv, the terminal, TensorBoard).
    """
    return run(prepare(config), comm or LocalCommunicator(), loggers)


def run(prepared: Prepared, comm: Communicator, loggers: Sequence[Logger] = ()) -> Path:
    """Train a prepared run (see `prepare`) as this rank of `comm`'s world; returns the run directory.

    The run holds its directory's lock (diffdac.run.lock) from before it reads anything there to its end.
    """
    check_world_size(comm.world_size, prepared.config.num_learners)
    run_dir = Path(comm.gather_objects(str(prepared.run_dir))[0])  # rank 0's name: default names carry a time stamp
    lock = hold_lock(comm, run_dir, prepared.config)
    try:
        return run_locked(prepared, comm, run_dir, loggers)
    finally:
        lock.release()


def hold_lock(comm: Communicator, run_dir: Path, config: TrainConfig) -> RunLock:
    """Rank 0 locks the directory for the world (every rank refuses together if it cannot), then every rank joins.

    A new run checks again, under the lock, that no run has written the directory since `prepare` looked.
    """
    lock, error = RunLock(run_dir), None
    if comm.rank == 0:
        try:
            lock.acquire_lead()
            if not config.resume and not config.overwrite and (run_dir / "config.json").exists():
                lock.release()
                raise ConfigError(
                    f"{run_dir} already holds a run: choose another --log-dir, pass --overwrite, or continue it with --resume"
                )
        except ConfigError as err:
            error = str(err)
    error = comm.gather_objects(error)[0]
    if error:
        raise ConfigError(error)
    lock.join()
    return lock


def run_locked(prepared: Prepared, comm: Communicator, run_dir: Path, loggers: Sequence[Logger] = ()) -> Path:
    """The run itself, once its directory is locked."""
    config, graph = prepared.config, prepared.graph
    lead = comm.rank == 0
    learner_ids = learner_block(comm.rank, comm.world_size, config.num_learners)
    tasks = make_tasks(config, learner_ids)
    torch.set_num_threads(config.threads)
    memory.keep_freed_memory()
    learners = Learners(config, prepared.method, comm, tasks, learner_ids)
    saved = restore(learners, run_dir) if config.resume else None
    if saved is not None and saved["manifest"].complete and saved["manifest"].steps >= config.steps_to_run:
        if lead:
            print(f"diffdac: {run_dir} is already complete ({saved['manifest'].steps} env steps): nothing to resume")
        tasks.close()
        return run_dir
    state = LoopState.from_saved(saved, config)
    check_logs(learners, run_dir, state)
    if saved is not None and lead:
        extend_run(run_dir, config, saved["manifest"])
    warning = topologies.disconnection_warning(graph)
    if warning and config.topology != "none" and prepared.method.uses_graph and lead and saved is None:
        print(f"diffdac: warning: {warning}")
    if lead and saved is None and config.steps_to_run != config.total_steps:
        print(
            f"diffdac: --total-steps {config.total_steps} is not a multiple of the {config.steps_per_update_all} env steps "
            f"of one update: the run makes {config.steps_to_run}"
        )
    all_tasks = [task for block in comm.gather_objects(list(tasks.tasks)) for task in block]
    comm.barrier()  # every rank has checked the directory before rank 0 writes into it
    if lead and saved is None:
        start_files(run_dir, prepared, all_tasks, comm.world_size)
    comm.barrier()
    run_loop(learners, run_dir, state, start_loggers(learners, run_dir, state) + list(loggers))
    return run_dir


def start_files(run_dir: Path, prepared: Prepared, all_tasks: list, world_size: int) -> None:
    """write_run_files, with a full disk or a read-only place said in one line (nothing trained yet)."""
    try:
        write_run_files(run_dir, prepared.config, prepared.graph, prepared.method, all_tasks, world_size)
    except OSError as err:
        raise ConfigError(f"cannot write the run's files in {run_dir} ({files.reason(err)})") from None


def start_loggers(learners: Learners, run_dir: Path, state: "LoopState") -> list[Logger]:
    """default_loggers, with a full disk or a read-only place said in one line."""
    try:
        return default_loggers(learners, run_dir, state)
    except OSError as err:
        raise ConfigError(f"cannot write the logs in {run_dir} ({files.reason(err)})") from None


def extend_run(run_dir: Path, config: TrainConfig, manifest: checkpoint.Manifest) -> None:
    """A resume with a raised --total-steps: config.json says the new length from now on."""
    stored = read_run_config(run_dir)
    if stored.get("total_steps") != config.total_steps:
        write_json(run_dir / "config.json", {**stored, "total_steps": config.total_steps})
        if manifest.complete:
            print(f"diffdac: extending {run_dir} from {manifest.steps} to {config.steps_to_run} env steps")


def default_loggers(learners: Learners, run_dir: Path, state: "LoopState") -> list[Logger]:
    """Every rank's Monitor files (and TensorBoard events with --tensorboard); rank 0 also progress.csv and the terminal."""
    cfg = learners.config
    monitors = MonitorSet(
        run_dir, cfg.env, learners.learner_ids, cfg.envs_per_learner, learners.tasks.tasks, state.monitor_rows
    )
    loggers: list[Logger] = [MonitorLogger(monitors)]
    if learners.comm.rank == 0:
        loggers += [ProgressLogger(ProgressFile(run_dir / "progress.csv", state.progress_rows)), TerminalLogger()]
    if cfg.tensorboard:
        loggers.append(TensorBoardLogger(Path(cfg.tensorboard), learners.comm.rank, learners.learner_ids))
    return loggers


def restore(learners: Learners, run_dir: Path) -> dict | None:
    """Load the newest checkpoint that every rank can load into `learners`; None when the run has none yet.

    An unreadable checkpoint (truncated, edited, planted) is skipped with one line saying why, and
    the one before it is tried; only when none loads does resume fail. Returns the checkpoint's
    state with its manifest under "manifest".
    """
    comm = learners.comm
    lead = comm.rank == 0
    found, problems = comm.gather_objects(checkpoint.scan(run_dir) if lead else None)[
        0
    ]  # other machines may not see rank 0's files
    world_size = read_run_config(run_dir).get("world_size", 1)
    if found and world_size != comm.world_size:
        raise ResumeError(
            f"{run_dir} was trained by {world_size} processes: resume it with {world_size}, not {comm.world_size}"
        )
    if lead:
        for problem in problems:
            print(f"diffdac: skipping {problem}")
    skipped = list(problems)
    for manifest in reversed(found):
        error, saved = None, None
        try:
            saved = checkpoint.load_rank(run_dir, manifest, comm.rank, learners.device)
            check_options(saved, learners.config)
            learners.load_state_dict(saved["learners"])
            check_row_shape(LoopState.from_saved(saved, learners.config), learners)
        except (CheckpointError, KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
            error = (
                str(err)
                if isinstance(err, CheckpointError)
                else f"{checkpoint.rank_path(run_dir, manifest.steps, comm.rank)} does not fit this run ({type(err).__name__}: {err})"
            )
        errors = [e for e in comm.gather_objects(error) if e]
        if not errors:
            return {**saved, "manifest": manifest}
        skipped.append(errors[0])
        if lead:
            print(f"diffdac: skipping the checkpoint at step {manifest.steps}: {errors[0]}")
    if skipped:
        raise ResumeError(
            f"no checkpoint of {run_dir} can be loaded ({skipped[-1]}): start the run again with --overwrite instead of --resume"
        )
    if lead:
        print(f"diffdac: {run_dir} has no checkpoint yet: starting it again from step 0")
    return None


def options_key(config: TrainConfig) -> str:
    """What a checkpoint records of the options it was trained with: those a resume may not change, as JSON."""
    # the graph is checked against config.json on its own (a file's matrix is kept there as a literal)
    fixed = {
        k: v for k, v in config.to_dict().items() if k not in RESUME_FREE | {"total_steps", "adjacency", "topology"}
    }
    return json.dumps(fixed, sort_keys=True, default=list)


def check_options(saved: dict, config: TrainConfig) -> None:
    """A checkpoint made with other options than config.json now holds (an edited lr) does not load."""
    if "options" not in saved:  # checkpoints from before the options were recorded
        return
    recorded = saved["options"]
    if not isinstance(recorded, str) or recorded != options_key(config):
        try:
            theirs = json.loads(recorded) if isinstance(recorded, str) else {}
        except json.JSONDecodeError:
            theirs = {}
        ours = json.loads(options_key(config))
        differ = [f"{k} {ours[k]!r} (the checkpoint has {theirs.get(k)!r})" for k in ours if theirs.get(k) != ours[k]]
        raise CheckpointError(
            f"the checkpoint does not match the run's options in config.json: {'; '.join(differ[:3]) or 'unreadable options'}"
        )


def check_logs(learners: Learners, run_dir: Path, state: LoopState) -> None:
    """Before any log is cut back to a checkpoint, every rank checks that all of its logs can be."""
    if state.monitor_rows is None:
        return
    error = None
    try:
        for i, learner in enumerate(learners.learner_ids):
            for sim, rows in enumerate(state.monitor_rows[i]):
                check_rows(monitor_path(run_dir, int(learner), sim), 2, rows)
                check_monitor_header(monitor_path(run_dir, int(learner), sim))
        if state.progress_rows is not None:
            check_rows(run_dir / "progress.csv", 1, state.progress_rows)
    except ResumeError as err:
        error = str(err)
    errors = [e for e in learners.comm.gather_objects(error) if e]
    if errors:
        raise ResumeError(errors[0])


@dataclass
class LoopState:
    """Where the loop stands: saved in every checkpoint so a resumed run logs exactly what an uninterrupted one would."""

    update: int
    elapsed: float
    next_log: int
    next_save: int
    recent: list[float]
    episodes: int
    recent_by_learner: list[list[float]]  # each of this rank's learners' last episodes, for the task-weighted score
    monitor_rows: list[list[int]] | None  # rows of this rank's Monitor files; None for a new run
    progress_rows: int | None  # rows of progress.csv (rank 0)

    @classmethod
    def from_saved(cls, saved: dict | None, config: TrainConfig) -> "LoopState":
        """A new run's state, or the checkpoint's, checked field by field (a checkpoint is untrusted input)."""
        if saved is None:
            return cls(0, 0.0, config.log_interval, config.save_every, [], 0, [], None, None)
        values = {"recent_by_learner": [], **saved["loop"]}  # checkpoints from before the score have none
        names = [f.name for f in dataclasses.fields(cls)]
        if sorted(values) != sorted(names):
            raise CheckpointError(f"the checkpoint's loop state has the keys {sorted(values)}, not {names}")
        state = cls(**values)
        counts = [state.update, state.next_log, state.next_save, state.episodes]
        if not all(type(v) is int and v >= 0 for v in counts) or not isinstance(state.elapsed, float):
            raise CheckpointError("the checkpoint's loop counters are not non-negative integers")
        check_log_rows(state)
        if not all(isinstance(r, float) for r in state.recent) or not all(
            isinstance(row, list) and all(isinstance(r, float) for r in row) for row in state.recent_by_learner
        ):
            raise CheckpointError("the checkpoint's recent returns are not numbers")
        return state


def check_log_rows(state: "LoopState") -> None:
    """The rows a checkpoint says to cut the logs back to are counts (never -1 or "abc"), read before anything is cut."""
    count = lambda v: type(v) is int and v >= 0  # noqa: E731
    if state.progress_rows is not None and not count(state.progress_rows):
        raise CheckpointError(f"the checkpoint's progress.csv row count {state.progress_rows!r} is not a count")
    rows = state.monitor_rows
    if rows is not None and not (
        isinstance(rows, list) and all(isinstance(r, list) and all(count(v) for v in r) for r in rows)
    ):
        raise CheckpointError("the checkpoint's Monitor row counts are not lists of counts")


def check_row_shape(state: "LoopState", learners: Learners) -> None:
    """One Monitor row count per simulator of this rank's learners."""
    rows, sims = state.monitor_rows, learners.config.envs_per_learner
    if rows is not None and (len(rows) != len(learners.learner_ids) or any(len(r) != sims for r in rows)):
        raise CheckpointError("the checkpoint's Monitor row counts do not fit this rank's learners and simulators")


def run_loop(learners: Learners, run_dir: Path, state: LoopState, loggers: list[Logger]) -> None:
    """Repeat rollout -> adapt -> combine, logging every log_interval and saving every save_every env steps."""
    cfg = learners.config
    steps_per_update, num_updates = cfg.steps_per_update_all, max(1, cfg.total_steps // cfg.steps_per_update_all)
    stats = EpisodeStats(len(learners.learner_ids), state.recent, state.episodes, state.recent_by_learner)
    start, update, finished = time.time() - state.elapsed, state.update, False
    for logger in loggers:
        logger.start(
            RunInfo(
                run_dir,
                cfg,
                state.update * steps_per_update,
                num_updates * steps_per_update,
                learners.comm.rank,
                learners.metrics,
            )
        )

    def record(episode_return, episode_length, done) -> None:
        stats.record(episode_return, episode_length, done)
        for logger in loggers:
            logger.record_episodes(episode_return, episode_length, done)

    last_saved = checkpoint.latest(run_dir) if learners.comm.rank == 0 else None
    flag = signals.StopFlag(launched_by_torchrun())
    try:
        flag.install()
        for update in range(state.update + 1, num_updates + 1):
            learners.collect(record)
            learners.adapt()
            if update % cfg.combine_every == 0:
                learners.combine(update // cfg.combine_every - 1)
            steps = update * steps_per_update
            for logger in loggers:
                logger.after_update(steps)
            logging = steps >= state.next_log or update == num_updates
            if logging:
                state.next_log += cfg.log_interval
                row = progress_row(learners, stats, steps, update, time.time() - start)
                for logger in loggers:
                    logger.write_progress(row)
            saving = steps >= state.next_save or update == num_updates
            if saving:
                state.next_save += cfg.save_every
            stop = (
                0
                if update == num_updates
                else flag.agreed(logging, learners.comm.world_size, learners.comm.all_sum, learners.device)
            )
            if saving or stop:
                kept = {k: v for logger in loggers for k, v in logger.state().items()}
                state = LoopState(
                    update,
                    time.time() - start,
                    state.next_log,
                    state.next_save,
                    list(stats.recent),
                    stats.count,
                    [list(r) for r in stats.by_learner],
                    kept.get("monitor_rows"),
                    kept.get("progress_rows"),
                )
                last_saved = save_checkpoint(learners, run_dir, state, steps, complete=update == num_updates)
            if stop:
                raise signals.stopped(stop, steps, run_dir, True, learners.comm.world_size)
        finished = True
    except PeerLost as err:
        raise err.at_update(update) from None
    except TrainingError as err:
        raise TrainingError(f"{err}; {_last_good(last_saved, run_dir)}") from None
    except OSError as err:  # a log that cannot be written: a full disk, a file size limit
        raise TrainingError(
            f"cannot write the run's logs ({files.reason(err)}); {_last_good(last_saved, run_dir)}"
        ) from None
    finally:
        flag.restore()
        for logger in loggers:
            logger.close(finished)


def _last_good(last_saved: checkpoint.Manifest | None, run_dir: Path) -> str:
    where = (
        f"the last good checkpoint is at step {last_saved.steps}" if last_saved else "no checkpoint was saved before it"
    )
    return f"{where} in {checkpoint.checkpoint_dir(run_dir)}"


def save_checkpoint(
    learners: Learners, run_dir: Path, state: LoopState, steps: int, complete: bool
) -> checkpoint.Manifest:
    """Every rank writes its file; after the barrier rank 0 declares the checkpoint valid."""
    comm, cfg = learners.comm, learners.config
    checkpoint.save_rank(
        run_dir,
        steps,
        comm.rank,
        {"learners": learners.state_dict(), "loop": dataclasses.asdict(state), "options": options_key(cfg)},
    )
    comm.barrier()
    manifest = checkpoint.Manifest(steps, state.update, comm.world_size, complete)
    if comm.rank == 0:
        checkpoint.commit(run_dir, manifest, cfg.keep_checkpoints)
    checkpoint.prune_rank(run_dir, comm.rank, cfg.keep_checkpoints, steps)
    return manifest


def progress_row(learners: Learners, stats: EpisodeStats, steps: int, update: int, elapsed: float) -> dict[str, float]:
    """One progress.csv row: the steps and scores, every declared metric, the speed; summed over processes."""
    local = torch.tensor([sum(stats.recent), len(stats.recent), stats.count], dtype=torch.float64)
    ret_sum, ret_count, episodes = learners.comm.all_sum(local.to(learners.device)).tolist()
    head = {
        "steps": steps,
        "updates": update,
        "time": round(elapsed, 3),
        "score": task_weighted_score(learners, stats),
        "mean_return": ret_sum / ret_count if ret_count else float("nan"),
        "episodes": int(episodes),
    }
    metrics = learners.metrics.row(lambda t: learners.comm.all_sum(t.to(learners.device)))
    return {**head, **metrics, "steps_per_s": round(steps / max(elapsed, 1e-9), 1)}
