"""Two ways past torch's per-op cost at 25 learners x 1 simulator, measured against torch itself.

    python experiments/engine_floor.py            # the paper's setting, 25 x 1
    python experiments/engine_floor.py --learners 4 --repeats 7

1. **A hand-written backward through the two tanh MLPs**, with autograd left only for the loss
   head. It calls the ops autograd's own formulas call (the two products of each `baddbmm`, the
   bias sums, `tanh_backward`), so its gradient must equal `Population.backward`'s to the last bit;
   the question is whether the autograd engine's bookkeeping is worth removing.
2. **The actor's forward as numba loops** (needs the `[fast]` extra), written so that the compiler
   can vectorise them without reordering a sum: the inner loop runs over a layer's outputs. It
   uses libm's tanh, or a rational tanh of plain arithmetic that vectorises. Neither gives torch's
   bits, so this measures what an engine that gave up bit-compatibility with earlier runs would
   gain on the network alone.

This is a measurement for docs/performance.md, on one torch thread; times are medians over
`--repeats` interleaved rounds, because this machine is shared.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from diffdac import TrainConfig
from diffdac.comm import LocalCommunicator
from diffdac.learners import Learners
from diffdac.population import Population
from diffdac.prepare import make_tasks, prepare


def build(learners: int, log_dir: Path) -> Learners:
    """A block of learners as `diffdac train` builds it, with one rollout collected."""
    config = TrainConfig(num_learners=learners, envs_per_learner=1, log_dir=str(log_dir), progress=False)
    prep = prepare(config)
    ids = np.arange(learners)
    block = Learners(prep.config, prep.method, LocalCommunicator(), make_tasks(prep.config, ids), ids)
    block.collect(lambda *args: None)
    return block


class Update:
    """The forward and backward of one A2C update of `block`'s rollout, two ways."""

    def __init__(self, block: Learners) -> None:
        self.block, self.pop = block, block.pop
        self.batch = block.rollout_batch()
        self.specs = {spec.name: spec for spec in self.pop.specs}

    def by_autograd(self) -> torch.Tensor:
        """The gradient as `Learners.adapt` computes it."""
        params = self.pop.trainable()
        values = self.pop.value(self.batch.obs, params)
        logp, entropy = self.pop.evaluate(self.batch.obs, self.batch.actions, params)
        self.pop.backward(self.block.loss(self.batch, values, logp, entropy).total.sum(), params)
        return self.pop.flat.grad

    def by_hand(self) -> torch.Tensor:
        """The gradient with the two MLPs' backward written out; autograd runs the loss head only."""
        with torch.no_grad():
            actor, critic = self._forward("actor"), self._forward("critic")
        logits, out = actor[-1].requires_grad_(), critic[-1].requires_grad_()
        logp_all = torch.log_softmax(logits, dim=-1)
        logp = logp_all.gather(-1, self.batch.actions.long().unsqueeze(-1)).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        loss = self.block.loss(self.batch, out.squeeze(-1), logp, entropy).total.sum()
        grad_logits, grad_out = torch.autograd.grad(loss, [logits, out])
        if self.pop.flat.grad is None:
            self.pop.flat.grad = torch.empty_like(self.pop.flat)
        self._backward("actor", actor, grad_logits)
        self._backward("critic", critic, grad_out)
        return self.pop.flat.grad

    def _forward(self, net: str) -> list[torch.Tensor]:
        views, x = self.pop._views, self.batch.obs
        layers = [x]
        for i in range(3):
            x = torch.baddbmm(views[f"{net}.{i}.bias"], x, views[f"{net}.{i}.weight"])
            layers.append(torch.tanh(x) if i < 2 else x)
            x = layers[-1]
        return layers

    def _grad_view(self, name: str) -> torch.Tensor:
        spec = self.specs[name]
        return self.pop.flat.grad[:, spec.offset : spec.offset + spec.numel].view(-1, *spec.shape)

    def _backward(self, net: str, layers: list[torch.Tensor], grad: torch.Tensor) -> None:
        """BaddbmmBackward0 and TanhBackward0 of derivatives.yaml, layer by layer, into flat.grad."""
        for i in (2, 1, 0):
            self._grad_view(f"{net}.{i}.weight").copy_(layers[i].transpose(1, 2).bmm(grad))
            self._grad_view(f"{net}.{i}.bias").copy_(grad.sum(1, keepdim=True))
            if i > 0:
                weight = self.pop._views[f"{net}.{i}.weight"]
                grad = torch.ops.aten.tanh_backward(grad.bmm(weight.transpose(1, 2)), layers[i])


def backward_rows(block: Learners, repeats: int) -> list[tuple[str, str, str]]:
    update = Update(block)
    reference = update.by_autograd().clone()
    same = torch.equal(reference, update.by_hand())
    times = interleaved({"autograd": update.by_autograd, "by hand": update.by_hand}, repeats, 300)
    verdict = "identical" if same else "differs"
    return [(name, f"{ms:.3f} ms", verdict) for name, ms in times.items()]


def forward_rows(pop: Population, repeats: int) -> list[tuple[str, str, str]]:
    """torch's actor forward against two numba versions, on 1 and 5 rows per learner."""
    mlp = numba_mlp()
    rows = []
    views = pop._views
    layers = [(views[f"actor.{i}.weight"], views[f"actor.{i}.bias"]) for i in range(3)]
    # an engine would lay out its parameters as its loops want them: contiguous per layer
    arrays = [(np.ascontiguousarray(w.numpy()), np.ascontiguousarray(b.numpy())) for w, b in layers]
    rng = np.random.default_rng(0)
    for batch in (1, 5):
        x = torch.from_numpy(rng.standard_normal((pop.num_learners, batch, pop.obs_dim)).astype(np.float32))
        with torch.no_grad():
            expected = pop.actor(x).numpy()
        candidates: dict[str, Callable[[], object]] = {"torch": lambda x=x: pop.actor(x)}
        for tanh in TANHS:
            candidates[f"numba, {tanh} tanh"] = lambda x=x.numpy(), tanh=tanh: mlp(x, arrays, TANHS.index(tanh))
        with torch.no_grad():
            times = interleaved(candidates, repeats, 2000)
            outputs = {label: np.asarray(f()) for label, f in candidates.items()}
        for label, ms in times.items():
            apart = float(np.abs(outputs[label] - expected).max())
            verdict = "-" if label.endswith("no tanh") else "identical" if apart == 0 else f"{apart:.1e}"
            rows.append((f"{batch} row(s): {label}", f"{1e3 * ms:.1f} us", verdict))
    return rows


TANHS = ("libm", "rational", "no")  # the numba loops' tanh, by index; "no" times the products alone

# A rational tanh of float32 arithmetic alone (the minimax fit Eigen uses), clamped where it saturates.
TANH_CLAMP = 7.90531110763549805
TANH_NUMERATOR = (
    -2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
    1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03,
)  # fmt: skip
TANH_DENOMINATOR = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)


def numba_mlp() -> Callable[[np.ndarray, list[tuple[np.ndarray, np.ndarray]], int], np.ndarray]:
    """Three affine layers with tanh between, as loops whose inner loop (a layer's outputs) vectorises."""
    import numba

    num = tuple(np.float32(c) for c in TANH_NUMERATOR)
    den = tuple(np.float32(c) for c in TANH_DENOMINATOR)
    clamp = np.float32(TANH_CLAMP)

    @numba.njit(inline="always")
    def rational_tanh(v):
        v = min(max(v, -clamp), clamp)
        v2 = v * v
        p = num[0]
        for c in num[1:]:
            p = p * v2 + c
        q = den[0]
        for c in den[1:]:
            q = q * v2 + c
        return p * v / q

    @numba.njit
    def layer(x, weight, bias, out, tanh):
        for k in range(x.shape[0]):
            for r in range(x.shape[1]):
                for j in range(out.shape[2]):
                    out[k, r, j] = bias[k, 0, j]
                for i in range(x.shape[2]):
                    xi = x[k, r, i]
                    for j in range(out.shape[2]):
                        out[k, r, j] += xi * weight[k, i, j]
                if tanh == 0:
                    for j in range(out.shape[2]):
                        out[k, r, j] = math.tanh(out[k, r, j])
                elif tanh == 1:
                    for j in range(out.shape[2]):
                        out[k, r, j] = rational_tanh(out[k, r, j])

    def mlp(x: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]], tanh: int) -> np.ndarray:
        for i, (weight, bias) in enumerate(layers):
            out = np.empty((x.shape[0], x.shape[1], weight.shape[2]), dtype=np.float32)
            layer(x, weight, bias, out, tanh if i < 2 else -1)
            x = out
        return x

    return mlp


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int, calls: int) -> dict[str, float]:
    """Median milliseconds per call of each candidate, the candidates taking turns in every round."""
    seen: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, f in candidates.items():
            f()
            start = time.perf_counter()
            for _ in range(calls):
                f()
            seen[name].append(1e3 * (time.perf_counter() - start) / calls)
    return {name: statistics.median(ms) for name, ms in seen.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        block = build(args.learners, Path(tmp) / "run")
        print(f"{args.learners} learners x 1 simulator, one torch thread, median of {args.repeats} rounds")
        print("\nthe forward and backward of one update (5 steps):")
        for row in backward_rows(block, args.repeats):
            print(f"  {row[0]:<26} {row[1]:>10}   {row[2]}")
        print("\nthe actor's forward (max |difference| from torch):")
        for row in forward_rows(block.pop, args.repeats):
            print(f"  {row[0]:<36} {row[1]:>10}   {row[2]}")
        block.tasks.close()


if __name__ == "__main__":
    main()
