"""Wall-clock timing of a step: warm-up, timed rounds until a count or a time budget.

The median is reported because single rounds are disturbed by other processes on a shared
machine; the inter-quartile range says how much they were. What the machine was doing during
the rounds (load average, CPU time, run-queue waits) is taken by a
:class:`~unetbench.profiler.load.LoadProbe`; :func:`~unetbench.profiler.load.timing_note` says
whether to trust the result.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable

import torch

from unetbench._errors import UsageError
from unetbench.profiler.load import LoadProbe, TimingLoad

__all__ = ["TimingResult", "check_timing_args", "time_rounds"]


@dataclasses.dataclass(frozen=True)
class TimingResult:
    """Median and inter-quartile range (seconds) over ``rounds`` timed calls, each call's
    time, and what the machine was doing meanwhile."""

    median_s: float
    iqr_s: float
    rounds: int
    times_s: tuple[float, ...] = ()
    load: TimingLoad | None = None


def check_timing_args(
    warmup: int, rounds: int, max_seconds: float | None, *, cli: bool = False
) -> None:
    """Refuse counts that cannot time anything: ``rounds >= 1``, ``warmup >= 0``,
    ``max_seconds > 0`` (or None). ``cli`` names them as options (``--max-seconds``)."""

    def name(arg: str) -> str:
        return "--" + arg.replace("_", "-") if cli else arg

    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise UsageError(f"{name('rounds')} must be an integer >= 1, but got {rounds!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise UsageError(f"{name('warmup')} must be an integer >= 0, but got {warmup!r}")
    if max_seconds is not None and not (
        isinstance(max_seconds, int | float)
        and not isinstance(max_seconds, bool)
        and max_seconds > 0
        and math.isfinite(max_seconds)
    ):
        raise UsageError(f"{name('max_seconds')} must be a number > 0, but got {max_seconds!r}")


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

    Raises:
        UsageError: ``rounds < 1``, ``warmup < 0`` or ``max_seconds <= 0``.
    """
    check_timing_args(warmup, rounds, max_seconds)
    for _ in range(warmup):
        fn()
        _sync(device)
        if on_round is not None:
            on_round()
    times: list[float] = []
    spent = 0.0
    probe = LoadProbe(torch.get_num_threads(), on_cuda=device.type == "cuda")
    while len(times) < rounds:
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
    load = probe.stop(times)
    if len(times) >= 2:
        q = statistics.quantiles(times, n=4, method="inclusive")
        iqr = q[2] - q[0]
    else:
        iqr = 0.0
    return TimingResult(
        median_s=statistics.median(times),
        iqr_s=iqr,
        rounds=len(times),
        times_s=tuple(times),
        load=load,
    )
