"""Timing: warm-up, round count and time budget, median and inter-quartile range."""

from __future__ import annotations

import pytest
import torch

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
