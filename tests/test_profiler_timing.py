"""Timing: warm-up, round count and time budget, median and inter-quartile range."""

from __future__ import annotations

import pytest
import torch

from unetbench import UsageError
from unetbench.profiler import timing


class FakeClock:
    """perf_counter stand-in; each call of ``step`` takes the next of ``durations`` seconds."""

    def __init__(self, durations: list[float]) -> None:
        self.now = 0.0
        self.durations = list(durations)
        self.calls = 0

    def perf_counter(self) -> float:
        return self.now

    def step(self) -> None:
        self.now += self.durations[self.calls]
        self.calls += 1


def _clock(monkeypatch: pytest.MonkeyPatch, durations: list[float]) -> FakeClock:
    clock = FakeClock(durations)
    monkeypatch.setattr(timing.time, "perf_counter", clock.perf_counter)
    return clock


def test_rounds_median_and_iqr(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _clock(monkeypatch, [9.0, 1.0, 2.0, 3.0, 4.0, 100.0])  # first is the warm-up
    ticks: list[int] = []
    res = timing.time_rounds(
        clock.step, torch.device("cpu"), warmup=1, rounds=5, on_round=lambda: ticks.append(1)
    )
    assert clock.calls == len(ticks) == 6
    assert res.rounds == 5
    assert res.median_s == 3.0
    assert res.iqr_s == 2.0  # quartiles 2 and 4 of 1, 2, 3, 4, 100: the outlier does not count


def test_time_budget_stops_early_but_times_at_least_once(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _clock(monkeypatch, [5.0, 5.0, 5.0])
    res = timing.time_rounds(clock.step, torch.device("cpu"), warmup=0, rounds=10, max_seconds=1)
    assert (res.rounds, res.median_s, res.iqr_s) == (1, 5.0, 0.0)
    assert clock.calls == 1


def test_budget_allows_several_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _clock(monkeypatch, [1.0] * 10)
    res = timing.time_rounds(clock.step, torch.device("cpu"), warmup=0, rounds=10, max_seconds=3)
    assert res.rounds == 3


def test_cuda_work_is_synchronised(monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: synced.append(d))
    timing.time_rounds(lambda: None, torch.device("cuda", 0), warmup=1, rounds=2)
    assert len(synced) == 1 + 2 * 2  # after the warm-up; before and after each timed call
    timing.time_rounds(lambda: None, torch.device("cpu"), warmup=1, rounds=2)
    assert len(synced) == 5  # never on CPU


def test_each_round_and_the_load_meanwhile_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _clock(monkeypatch, [9.0, 1.0, 3.0, 2.0])
    res = timing.time_rounds(clock.step, torch.device("cpu"), warmup=1, rounds=3)
    assert res.times_s == (1.0, 3.0, 2.0)
    assert res.load is not None
    assert res.load.wall_s == 6.0  # the timed rounds only, not the warm-up
    assert res.load.round_spread == 3.0
    assert res.load.torch_threads == torch.get_num_threads()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rounds": 0}, r"^rounds must be an integer >= 1, but got 0$"),
        ({"rounds": -1}, r"^rounds must be an integer >= 1, but got -1$"),
        ({"rounds": 2.5}, r"^rounds must be an integer >= 1, but got 2.5$"),
        ({"warmup": -1}, r"^warmup must be an integer >= 0, but got -1$"),
        ({"max_seconds": 0}, r"^max_seconds must be a number > 0, but got 0$"),
        ({"max_seconds": float("inf")}, r"^max_seconds must be a number > 0, but got inf$"),
        ({"max_seconds": "5"}, r"^max_seconds must be a number > 0, but got '5'$"),
    ],
)
def test_counts_that_time_nothing_are_refused(kwargs: dict[str, object], match: str) -> None:
    calls: list[int] = []
    with pytest.raises(UsageError, match=match):
        timing.time_rounds(lambda: calls.append(1), torch.device("cpu"), **kwargs)  # type: ignore[arg-type]
    assert calls == []  # refused before the first call
