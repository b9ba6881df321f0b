"""`diffdac bench --scenario compile`: whether torch.compile speeds up the policy, measured rather than assumed.

The batched actor forward (three batched affine layers with tanh between) is what every env
step runs. This times it eager and compiled, in the same process, and reports whether the
compiled logits equal the eager ones: training only takes an option that keeps results identical.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from diffdac.bench import Row, Setup, parse_setups, scenario
from diffdac.population import Population

CALLS = 200  # forwards per timing


def _per_call_us(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    """Median over `repeats` timings of CALLS calls, in microseconds per call."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(CALLS):
            fn()
        times.append((time.perf_counter() - start) / CALLS)
    return 1e6 * statistics.median(times)


def measure(setup: Setup, repeats: int) -> Row:
    """Eager against compiled actor forward of one population; a failed compile is reported, not raised."""
    torch.set_num_threads(setup.threads)
    space = gym.spaces.Box(-1.0, 1.0, shape=(6,), dtype=np.float32)  # Acrobot's sizes
    pop = Population(space, gym.spaces.Discrete(3), np.arange(setup.learners), seed=0)
    obs = torch.randn(setup.learners, setup.sims, 6, generator=torch.Generator().manual_seed(0))
    row: Row = {"scenario": "compile", "setup": str(setup)}
    with torch.no_grad():
        eager = pop.actor(obs)
        start = time.perf_counter()
        try:
            compiled_actor = torch.compile(pop.actor, dynamic=False)
            compiled = compiled_actor(obs)
        except Exception as err:  # no C++ compiler, an unsupported platform: the eager path stays
            return {
                **row,
                "eager_us": round(_per_call_us(lambda: pop.actor(obs), repeats), 1),
                "compiled_us": f"torch.compile failed: {str(err).splitlines()[0][:80]}",
            }
        compile_s = time.perf_counter() - start
        eager_us = _per_call_us(lambda: pop.actor(obs), repeats)
        compiled_us = _per_call_us(lambda: compiled_actor(obs), repeats)
    return {
        **row,
        "eager_us": round(eager_us, 1),
        "compiled_us": round(compiled_us, 1),
        "speedup": round(eager_us / compiled_us, 2),
        "compile_s": round(compile_s, 1),
        "identical": bool(torch.equal(eager, compiled)),
        "max_abs_diff": float((eager - compiled).abs().max()),
    }


@scenario("compile")
def compile_scenario(args: argparse.Namespace) -> list[Row]:
    """The actor forward of each --setups population, eager and under torch.compile."""
    torch._dynamo.reset()
    return [measure(setup, args.repeats) for setup in parse_setups(args.setups)]
