"""Wall-clock timing of a step: warm-up, timed rounds until a count or a time budget.

The median is reported because single rounds are disturbed by other processes on a shared
machine; the inter-quartile range says how much they were.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["TimingResult", "time_rounds"]


@dataclasses.dataclass(frozen=True)
class TimingResult:
    """Median and inter-quartile range (seconds) over ``rounds`` timed calls."""

    median_s: float
    iqr_s: float
    rounds: int


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work so that the clock measures it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_rounds(
    fn: Callable[[], object],
    device: torch.device,
    *,
    warmup: int = 1,
    rounds: int = 5,
    max_seconds: float | None = None,
    on_round: Callable[[], None] | None = None,
) -> TimingResult:
    """Time ``fn`` after ``warmup`` untimed calls.

    Rounds stop at ``rounds`` calls or, if given, once ``max_seconds`` of timed calls have
    passed (at least one round is always timed). ``on_round`` is called after each call
    (warm-up included), e.g. to advance a progress bar.

    Args:
        fn: The step to time; called without arguments.
        device: Where the step runs; CUDA work is synchronised before each clock reading.
        warmup: Untimed calls first (allocator warm-up, cuDNN autotuning, lazy init).
        rounds: Maximum number of timed calls.
        max_seconds: Time budget of the timed calls.
        on_round: Progress callback.
    """
    for _ in range(warmup):
        fn()
        _sync(device)
        if on_round is not None:
            on_round()
    times: list[float] = []
    spent = 0.0
    while len(times) < max(1, rounds):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
        if on_round is not None:
            on_round()
        if max_seconds is not None and spent >= max_seconds:
            break
    if len(times) >= 2:
        q = statistics.quantiles(times, n=4, method="inclusive")
        iqr = q[2] - q[0]
    else:
        iqr = 0.0
    return TimingResult(median_s=statistics.median(times), iqr_s=iqr, rounds=len(times))
