"""The A2C step's elementwise passes as numba loops, with the float32 bits of the torch ops they replace.

At 25 learners every torch op on the `[K, P]` parameter block costs its fixed call overhead, and
at 1,024 learners every op is a pass over 37 MB. Here the returns are one loop, and clipping plus
RMSprop are two passes around torch's own square root (MKL's, which these loops could not
reproduce), instead of eight ops. A probe at first use settles which rounding torch's `addcmul`
has on this machine: one fused multiply-add in its AVX2 and AVX-512 kernels, a product then a sum
in its default one. Where no variant gives torch's bits, where numba (the `[fast]` extra) is
absent, or off the CPU, the torch ops serve. `tests/test_kernels.py` holds each kernel to the
torch ops, bit for bit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch

try:
    import numba
    from llvmlite import ir
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:  # numba is the [fast] extra
    numba = None

CHUNK = 1 << 19  # floats of parameters per block of the RMSprop kernels: 2 MB, about the L2 of a core
PROBE_ROWS, PROBE_COLS = 7, 1_003  # not a multiple of any vector width: the kernels' tails are probed too


def clip_scale(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Each learner's factor `[K, 1]` that brings its gradient row to norm at most max_norm (clip_grad_norm_'s)."""
    norms = grad.norm(dim=1, keepdim=True)
    return (max_norm / (norms + 1e-6)).clamp(max=1.0)


def first_non_finite_row(values: torch.Tensor) -> int:
    """The first row `[K, ...]` holding a NaN or inf, or -1; one sum finds out whether there is one.

    A finite total can hide an inf row only by cancelling it with another inf, which gives NaN, so
    the per-row search runs only when the total is not finite.
    """
    if torch.isfinite(values.sum()):
        return -1
    bad = ~torch.isfinite(values.reshape(values.shape[0], -1).sum(1))
    return int(bad.nonzero()[0, 0]) if bad.any() else -1


def clip_and_step(optimizer: torch.optim.RMSprop, flat: torch.Tensor, max_norm: float) -> int:
    """Clip each learner's row of `flat.grad` to max_norm (not if it is 0), take the RMSprop step.

    Returns the first row whose parameters are not finite afterwards, or -1. The kernels run where
    they give torch's bits; `rmsprop_torch` otherwise.
    """
    scale = clip_scale(flat.grad, max_norm) if max_norm > 0 else None
    state = optimizer.state[flat]
    fits = plain_rmsprop(optimizer) and on_cpu(flat, flat.grad, *([state["square_avg"]] if state else []))
    fused = rmsprop_variant() if fits else None
    if fused is None:
        rmsprop_torch(optimizer, flat, scale)
        return first_non_finite_row(flat.detach())
    return rmsprop_kernel(optimizer, flat, scale, fused)


def rmsprop_torch(optimizer: torch.optim.RMSprop, flat: torch.Tensor, scale: torch.Tensor | None) -> None:
    """Clip `flat.grad` by `scale` and take torch's RMSprop step: what the kernels must equal."""
    if scale is not None:
        flat.grad.mul_(scale)
    optimizer.step()


def _returns(rewards, values, dones, next_value, gamma, gamma_lam, advantages, targets):
    """returns_by_ops for every simulator: the same float32 operations in the same order."""
    learners, steps, sims = rewards.shape
    one = np.float32(1.0)
    for k in range(learners):
        for e in range(sims):
            last = np.float32(0.0)
            following = next_value[k, e]
            for t in range(steps - 1, -1, -1):
                alive = one - dones[k, t, e]
                delta = rewards[k, t, e] + gamma * following * alive - values[k, t, e]
                last = delta + gamma_lam * alive * last
                advantages[k, t, e] = last
                targets[k, t, e] = last + values[k, t, e]
                following = values[k, t, e]


def _categorical(probs, u, actions):
    """Population.act's inverse-CDF draw: the count of float64 running sums of probs that u exceeds."""
    last = probs.shape[2] - 1
    for k in range(probs.shape[0]):
        for e in range(probs.shape[1]):
            cdf = 0.0
            count = 0
            for a in range(probs.shape[2]):
                cdf += np.float64(probs[k, e, a])
                count += u[k, e, 0] > cdf
            actions[k, e] = min(count, last)


def _square_avg(grad, square_avg, scale, alpha, weight, fused):
    """Rows scaled by `scale` (clipping), then square_avg.mul_(alpha).addcmul_(grad, grad, value=weight)."""
    for k in range(grad.shape[0]):
        g, avg, s = grad[k], square_avg[k], scale[k]
        if s != np.float32(1.0):
            for j in range(g.shape[0]):
                g[j] = g[j] * s
        if fused:
            for j in range(g.shape[0]):
                avg[j] = _fma(weight * g[j], g[j], avg[j] * alpha)
        else:
            for j in range(g.shape[0]):
                avg[j] = avg[j] * alpha + weight * g[j] * g[j]


def _apply(param, grad, root, eps, step_size):
    """param.addcdiv_(grad, root + eps, value=step_size); the first row left non-finite, or -1."""
    bad = -1
    for k in range(param.shape[0]):
        p, g, r = param[k], grad[k], root[k]
        non_finite = 0  # counted, not searched: a loop without an exit vectorises
        for j in range(p.shape[0]):
            x = step_size * g[j] / (r[j] + eps) + p[j]
            p[j] = x
            non_finite += not np.isfinite(x)
        if bad < 0 and non_finite:
            bad = k
    return bad


if numba is not None:

    @intrinsic
    def _fma(typingctx, a, b, c):
        """LLVM's fused multiply-add on float32: one rounding, as torch's vectorised addcmul."""

        def codegen(context, builder, signature, args):
            f32 = ir.FloatType()
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [f32] * 3), "llvm.fma.f32")
            return builder.call(fma, args)

        return numba.float32(numba.float32, numba.float32, numba.float32), codegen

    # error_model="numpy": a division by zero gives inf (as torch does), with no test in the loop to stop vectorising
    _returns = numba.njit(cache=True, error_model="numpy")(_returns)
    _categorical = numba.njit(cache=True)(_categorical)
    _square_avg = numba.njit(cache=True, error_model="numpy")(_square_avg)
    _apply = numba.njit(cache=True, error_model="numpy")(_apply)


def returns(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """returns_by_ops in one call (CPU float32 tensors)."""
    advantages, targets = torch.empty_like(rewards), torch.empty_like(rewards)
    _returns(
        rewards.numpy(),
        values.numpy(),
        dones.numpy(),
        next_value.numpy(),
        np.float32(gamma),
        np.float32(gamma * lam),
        advantages.numpy(),
        targets.numpy(),
    )
    return advantages, targets


def categorical(probs: torch.Tensor, u: np.ndarray) -> torch.Tensor:
    """Actions `[K, E]` (int64) for probabilities `[K, E, A]` (CPU float32) and uniforms `u: [K, E, 1]`."""
    actions = np.empty(probs.shape[:2], dtype=np.int64)
    _categorical(probs.numpy(), u, actions)
    return torch.from_numpy(actions)


def categorical_by_ops(probs: torch.Tensor, u: np.ndarray) -> torch.Tensor:
    """`categorical` in torch ops, on any device: the running sums in float64, as the kernel's."""
    cdf = probs.double().cumsum(-1)
    u_t = torch.from_numpy(u).to(cdf.device)
    return (u_t > cdf).sum(-1).clamp_(max=probs.shape[-1] - 1)


def rmsprop_kernel(optimizer: torch.optim.RMSprop, flat: torch.Tensor, scale: torch.Tensor | None, fused: bool) -> int:
    """`rmsprop_torch` in two passes around torch's sqrt; returns the first row with a non-finite parameter, or -1.

    The rows go in blocks of about CHUNK floats, so each block's square root is a small buffer that
    stays in cache (and out of the peak memory: 37 MB at 1,024 learners). The state stays the
    optimizer's own (`step`, `square_avg`), so checkpoints and `load_state_dict` are the same
    whichever path ran.
    """
    group, state = optimizer.param_groups[0], optimizer.state[flat]
    if not state:  # RMSprop's _init_group
        state["step"] = torch.tensor(0.0)
        state["square_avg"] = torch.zeros_like(flat, memory_format=torch.preserve_format)
    state["step"] += 1
    param, grad, square_avg = flat.detach().numpy(), flat.grad.numpy(), state["square_avg"]
    scales = np.ones(flat.shape[0], np.float32) if scale is None else scale.reshape(-1).numpy()
    alpha, eps, step_size = np.float32(group["alpha"]), np.float32(group["eps"]), np.float32(-group["lr"])
    weight = np.float32(1 - group["alpha"])
    rows = max(1, CHUNK // flat.shape[1])
    root = torch.empty(min(rows, flat.shape[0]), flat.shape[1])
    first_bad = -1
    for lo in range(0, flat.shape[0], rows):
        hi = min(lo + rows, flat.shape[0])
        _square_avg(grad[lo:hi], square_avg[lo:hi].numpy(), scales[lo:hi], alpha, weight, fused)
        block = torch.sqrt(square_avg[lo:hi], out=root[: hi - lo]).numpy()
        bad = _apply(param[lo:hi], grad[lo:hi], block, eps, step_size)
        if first_bad < 0 and bad >= 0:
            first_bad = lo + int(bad)
    return first_bad


def plain_rmsprop(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer` is the RMSprop the kernels compute: one parameter, no momentum, centring or decay."""
    if type(optimizer) is not torch.optim.RMSprop or len(optimizer.param_groups) != 1:
        return False
    group = optimizer.param_groups[0]
    plain = not (group["momentum"] or group["centered"] or group["weight_decay"] or group["maximize"])
    return plain and len(group["params"]) == 1 and not isinstance(group["lr"], torch.Tensor)


def serves(probe: Callable[[], bool], *tensors: torch.Tensor) -> bool:
    """Whether a kernel may stand in for its torch ops on these tensors: CPU float32 all, and its probe passes.

    Every kernel is chosen this way (RMSprop asks `on_cpu` as well, as it writes in place), so a
    kernel that numba cannot compile, or that differs from torch on this machine, never serves.
    """
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and probe()


def on_cpu(*tensors: torch.Tensor) -> bool:
    """Whether the kernels can read and write these tensors in place: CPU, float32, row-major."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors)


def warm_up() -> None:
    """Load (or compile, the first time on a machine) the kernels and run their probes now, not in the first update."""
    from diffdac import noise

    returns_available(), categorical_available(), rmsprop_variant(), noise.compiled()


def returns_by_ops(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """compute_returns one torch op at a time, all simulators of a step `[:, t]` at once: any device and dtype."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    following = next_value
    for t in reversed(range(rewards.shape[1])):
        alive = 1.0 - dones[:, t]
        delta = rewards[:, t] + gamma * following * alive - values[:, t]
        last = delta + gamma * lam * alive * last
        advantages[:, t] = last
        following = values[:, t]
    return advantages, advantages + values


@functools.cache
def returns_available() -> bool:
    """numba imports and its returns equal torch's on a probe."""
    if numba is None:
        return False
    gen = torch.Generator().manual_seed(0)
    k, t, e = PROBE_ROWS, 5, 3
    rewards, values = torch.randn(k, t, e, generator=gen), torch.randn(k, t, e, generator=gen)
    dones = (torch.rand(k, t, e, generator=gen) < 0.3).float()
    next_value = torch.randn(k, e, generator=gen)
    want = returns_by_ops(rewards, values, dones, next_value, 0.99, 0.95)
    got = returns(rewards, values, dones, next_value, 0.99, 0.95)
    return all(torch.equal(a, b) for a, b in zip(want, got))


@functools.cache
def categorical_available() -> bool:
    """numba imports and its draws equal the torch ops' on a probe, ties and the last action included."""
    if numba is None:
        return False
    gen = torch.Generator().manual_seed(2)
    probs = torch.softmax(torch.randn(PROBE_ROWS, 64, 3, generator=gen) * 3.0, dim=-1)
    u = np.random.default_rng(2).random((PROBE_ROWS, 64, 1))
    cdf = probs.double().cumsum(-1).numpy()
    u[0, 0, 0], u[0, 1, 0], u[0, 2, 0] = cdf[0, 0, 0], cdf[0, 1, 1], np.nextafter(1.0, 0.0)  # on a sum, above all
    return torch.equal(categorical(probs, u), categorical_by_ops(probs, u))


@functools.cache
def rmsprop_variant() -> bool | None:
    """Which `_square_avg` gives torch's bits here: True (fused multiply-add), False, or None (neither: use torch)."""
    if numba is None:
        return None
    for fused in (True, False):
        if _rmsprop_matches(fused):
            return fused
    return None


def _rmsprop_matches(fused: bool) -> bool:
    """Three clipped RMSprop steps by the kernels and by torch, from the same start, end in the same bits."""
    gen = torch.Generator().manual_seed(1)
    start = torch.randn(PROBE_ROWS, PROBE_COLS, generator=gen)
    grads = [
        torch.randn(PROBE_ROWS, PROBE_COLS, generator=gen) * 3.0 ** torch.arange(-3.0, 4.0)[:, None] for _ in range(3)
    ]
    ends = []
    for kernel in (False, True):
        flat = start.clone().requires_grad_(True)
        optimizer = torch.optim.RMSprop([flat], lr=7e-4, alpha=0.99, eps=1e-5, foreach=False)
        for grad in grads:
            flat.grad = grad.clone()
            scale = clip_scale(flat.grad, 0.5)
            rmsprop_kernel(optimizer, flat, scale, fused) if kernel else rmsprop_torch(optimizer, flat, scale)
        ends.append((flat.detach(), optimizer.state[flat]["square_avg"]))
    return all(torch.equal(a, b) for a, b in zip(*ends))
