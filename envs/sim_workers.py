"""Worker processes that step slices of a gymnasium task batch (`--sim-processes`).

MuJoCo releases the GIL only inside mj_step; the rest of a Hopper step (observation, reward,
wrappers, about a quarter of it) holds the GIL, and that bounds two threads near 1.5 times one.
A worker process holds its own interpreter, so its slice of the batch runs beside the parent's
in full. Each worker makes its simulators from the same (seed, learner, simulator) keys as the
parent would, and steps them with the same function, so the numbers do not depend on where a
simulator runs. Actions go out and results come back through a pipe: a few hundred bytes a step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from envs.gym_env import make_learner_env, step_envs


class WorkerError(RuntimeError):
    """A simulator worker failed or died; the message is the worker's error."""


class SimWorker:
    """One process stepping the simulators of `learners` (one entry per simulator, in batch order).

    The worker is a fresh interpreter (`serve_fds`) joined by two pipes, not a
    multiprocessing child: spawn would re-run the caller's main script, and fork would copy a process
    that runs torch threads.
    """

    def __init__(self, env_id: str, seed: int, learners: Sequence[int], task_seeding: str, task_options: dict) -> None:
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        root = str(Path(__file__).resolve().parent.parent)  # where the envs package is
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, envs.sim_workers as w; w.serve_fds(*sys.argv[1:])",
                str(to_child),
                str(from_child),
            ],
            pass_fds=(to_child, from_child),
            env=env,
        )
        os.close(to_child)
        os.close(from_child)
        self._send = Connection(from_parent, readable=False)
        self._recv = Connection(to_parent, writable=False)
        self._send.send((env_id, seed, list(learners), task_seeding, task_options))

    def tasks(self) -> list[dict]:
        """Each simulator's task (its env's `unwrapped.task`), once the worker has made its envs."""
        return self._receive()

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        self._post(("reset", list(seeds)))
        return self._receive()

    def send_step(self, actions: np.ndarray) -> None:
        """Start a step; `receive_step` collects it, so the parent can step its own slice meanwhile."""
        self._post(("step", actions))

    def receive_step(self) -> tuple[np.ndarray, ...]:
        """(obs, final_obs, reward, terminated, truncated) of the step `send_step` started."""
        return self._receive()

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                self._send.send(("close", None))
            except OSError:
                pass
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._send.close()
        self._recv.close()

    def _post(self, message: tuple) -> None:
        try:
            self._send.send(message)
        except OSError:  # the worker is gone
            raise self._died() from None

    def _receive(self):
        try:
            status, payload = self._recv.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if status == "error":
            raise WorkerError(f"a simulator worker failed: {payload}")
        return payload

    def _died(self) -> WorkerError:
        return WorkerError(f"a simulator worker process died (exit code {self._process.poll()})")


def _serve(commands: Connection, conn: Connection) -> None:
    """The worker's loop: make the envs, then answer reset, step and close until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ctrl-c is the parent's to handle; it closes the workers
    envs = []
    try:
        env_id, seed, learners, task_seeding, task_options = commands.recv()
        envs = [make_learner_env(env_id, seed, k, task_seeding, **task_options) for k in learners]
        conn.send(("ok", [dict(getattr(env.unwrapped, "task", {})) for env in envs]))
        shape = envs[0].observation_space.shape
        while True:
            command, argument = commands.recv()
            if command == "close":
                break
            if command == "reset":
                conn.send(("ok", np.stack([env.reset(seed=s)[0] for env, s in zip(envs, argument)])))
                continue
            n = len(envs)
            obs, final_obs = np.empty((n,) + shape, np.float32), np.empty((n,) + shape, np.float32)
            reward, terminated, truncated = np.empty(n, np.float32), np.empty(n, bool), np.empty(n, bool)
            step_envs(envs, argument, obs, final_obs, reward, terminated, truncated)
            conn.send(("ok", (obs, final_obs, reward, terminated, truncated)))
    except (EOFError, KeyboardInterrupt):  # the parent is gone
        pass
    except Exception as err:  # the parent raises it as a WorkerError
        conn.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        for env in envs:
            env.close()


def serve_fds(commands_fd: str, results_fd: str) -> None:
    """A worker's entry point: serve on the pipe ends the parent passed down."""
    _serve(Connection(int(commands_fd), writable=False), Connection(int(results_fd), readable=False))
