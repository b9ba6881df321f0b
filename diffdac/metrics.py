"""Numbers a run reports by name: declared once, recorded from anywhere, one progress.csv column each.

The learners, the method's mixer and any logger declare the metrics they report and record them
(`metrics.record("bytes_sent", n)`); every log interval the loop turns them into one row, reduced
over the processes of a torchrun world, for progress.csv, TensorBoard, the terminal and any
plugged-in logger. A name nobody declared is refused with an error naming it, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

Reduce = Literal["sum", "per_learner", "same"]
REDUCTIONS: tuple[str, ...] = ("sum", "per_learner", "same")


@dataclass
class Metric:
    """One column. `reduce`: `sum` adds every process's value, `per_learner` divides that sum by the
    network's learners (each process records the sum over its own), `same` keeps this process's value
    (one every process already shares). `cumulative` values add up over the run and are checkpointed;
    `sample` is called when a row is made, for values that cost too much to keep up to date."""

    name: str
    reduce: Reduce
    cumulative: bool = False
    sample: Callable[[], float] | None = None
    show: bool = False  # on the terminal's progress bar and status lines
    integer: bool = False  # a count: written as an integer
    value: float = float("nan")


class Metrics:
    """The run's metrics, in the order of their columns."""

    def __init__(self, num_learners: int) -> None:
        self.num_learners = num_learners
        self._metrics: dict[str, Metric] = {}
        self._restored: dict[str, float] = {}  # totals from a checkpoint, for metrics declared after it loaded

    def declare(
        self,
        name: str,
        reduce: Reduce = "same",
        *,
        cumulative: bool = False,
        sample: Callable[[], float] | None = None,
        show: bool = False,
        integer: bool = False,
    ) -> None:
        """Add a column (declaring a name twice is an error: two parts of the code would share it)."""
        if name in self._metrics:
            raise ValueError(f"the metric {name!r} is declared twice")
        if reduce not in REDUCTIONS:
            raise ValueError(f"a metric is reduced by {', '.join(REDUCTIONS)}, not {reduce!r}")
        start = self._restored.pop(name, 0.0) if cumulative else float("nan")
        self._metrics[name] = Metric(name, reduce, cumulative, sample, show, integer, start)

    def record(self, name: str, value: float) -> None:
        """This update's value (added to the total for a cumulative metric)."""
        metric = self._metrics.get(name)
        if metric is None:
            known = ", ".join(self._metrics) or "none"
            raise KeyError(f"no metric {name!r} was declared (declared: {known}): declare it before recording it")
        metric.value = metric.value + float(value) if metric.cumulative else float(value)

    @property
    def names(self) -> list[str]:
        return list(self._metrics)

    @property
    def shown(self) -> list[str]:
        return [m.name for m in self._metrics.values() if m.show]

    def row(self, all_sum: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """Every metric's value for this row, reduced over the processes with `all_sum` (one collective)."""
        for metric in self._metrics.values():
            if metric.sample is not None:
                self.record(metric.name, metric.sample())
        summed = [m for m in self._metrics.values() if m.reduce != "same"]
        totals = all_sum(torch.tensor([m.value for m in summed], dtype=torch.float64)).tolist() if summed else []
        out = {m.name: m.value for m in self._metrics.values()}
        for metric, total in zip(summed, totals):
            out[metric.name] = total / self.num_learners if metric.reduce == "per_learner" else total
        for metric in self._metrics.values():
            if metric.integer and out[metric.name] == out[metric.name]:
                out[metric.name] = int(out[metric.name])
        return out

    def state_dict(self) -> dict[str, float]:
        """The cumulative totals: a resumed run goes on counting from them."""
        return {m.name: m.value for m in self._metrics.values() if m.cumulative}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Totals of a checkpoint; a metric a logger declares only when the run starts gets its total then."""
        for name, value in state.items():
            if name in self._metrics and self._metrics[name].cumulative:
                self._metrics[name].value = float(value)
            elif name not in self._metrics:
                self._restored[name] = float(value)
