"""Load columns of timed records: the rule that flags a timing taken under load, and a real
timing flagged while other processes burn every usable CPU."""

from __future__ import annotations

import doctest
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from unetbench import UNetConfig
from unetbench.cpus import usable_cpus
from unetbench.profiler import RECORD_COLUMNS, load, profile
from unetbench.profiler.load import LOAD_COLUMNS, TimingLoad, timing_note, under_load

NAN = math.nan
QUIET: dict[str, Any] = dict(
    load_avg_1m=0.5,
    cpus_usable=4,
    cpus_machine=4,
    torch_threads=2,
    cpu_per_wall=1.9,
    wait_share=0.02,
    round_spread=1.1,
)

RULE = [
    ({}, ""),
    ({"torch_threads": 8}, "8 torch threads on 4 usable CPUs"),
    ({"wait_share": 0.15}, ""),  # the threshold itself is not over it
    ({"wait_share": 0.151}, "waited for a CPU 15% of the time"),
    ({"wait_share": 0.62}, "waited for a CPU 62% of the time"),
    # without run-queue figures, CPU time stands in: less than half of min(threads, CPUs)
    ({"wait_share": NAN, "cpu_per_wall": 1.0}, ""),
    ({"wait_share": NAN, "cpu_per_wall": 0.95}, "0.95 CPUs busy for 2 threads"),
    ({"wait_share": NAN, "torch_threads": 1, "cpu_per_wall": 0.31}, "0.31 CPUs busy for 1 thread"),
    # ... but not when run-queue figures exist: a thread idle in Python is not under load
    ({"wait_share": 0.01, "cpu_per_wall": 0.3}, ""),
    ({"wait_share": NAN, "cpu_per_wall": NAN}, ""),  # CUDA without schedstat: nothing to judge
    ({"load_avg_1m": 4.5}, ""),
    ({"load_avg_1m": 4.6}, "load 4.6 on 4 CPUs"),
    # the load average is the machine's: set against its CPUs, not the usable ones
    ({"load_avg_1m": 6.0, "cpus_usable": 2, "cpus_machine": 64}, ""),
    ({"load_avg_1m": NAN}, ""),
    ({"round_spread": 2.0}, ""),
    ({"round_spread": 2.9}, "rounds differ: slowest/fastest 2.9x"),
    ({"round_spread": NAN}, ""),  # one round
    (
        {"torch_threads": 8, "wait_share": 0.7, "load_avg_1m": 9.0, "round_spread": 3.0},
        "8 torch threads on 4 usable CPUs; waited for a CPU 70% of the time; "
        "load 9.0 on 4 CPUs; rounds differ: slowest/fastest 3.0x",
    ),
]


@pytest.mark.parametrize(("change", "note"), RULE)
def test_the_rule(change: dict[str, Any], note: str) -> None:
    assert timing_note(**{**QUIET, **change}) == note


def test_the_rule_s_docstring_examples_hold() -> None:
    result = doctest.testmod(load, raise_on_error=False)
    assert result.attempted == 2 and result.failed == 0


@pytest.mark.parametrize(
    ("row", "flagged"),
    [
        ({"timing_note": "load 3.4 on 2 CPUs"}, True),
        ({"timing_note": ""}, False),
        ({"timing_note": NAN}, False),  # an empty cell read back from CSV
        ({"timing_note": None}, False),
        ({}, False),  # a record older than the column
    ],
)
def test_under_load_reads_the_note(row: dict[str, Any], flagged: bool) -> None:
    assert under_load(row) is flagged
    assert under_load(pd.Series(row, dtype=object)) is flagged


def _timing(**kw: Any) -> TimingLoad:
    base: dict[str, Any] = dict(
        load_avg_1m=1.0,
        cpus_usable=2,
        cpus_machine=2,
        torch_threads=1,
        wall_s=1.0,
        cpu_s=1.0,
        run_s=1.0,
        wait_s=0.0,
        round_spread=1.1,
    )
    return TimingLoad(**{**base, **kw})


def test_phases_of_a_record_combine() -> None:
    infer = _timing(wall_s=1.0, cpu_s=0.9, run_s=0.9, wait_s=0.1, load_avg_1m=1.5)
    train = _timing(wall_s=3.0, cpu_s=1.1, run_s=1.0, wait_s=2.0, round_spread=2.5)
    cols = load.load_columns([infer, train], torch_threads=1)
    assert list(cols) == list(LOAD_COLUMNS)
    assert cols["load_avg_1m"] == 1.5
    assert cols["timing_cpu_per_wall"] == pytest.approx(2.0 / 4.0)
    assert cols["timing_wait_share"] == pytest.approx(2.1 / 4.0)
    assert cols["timing_note"] == (
        "waited for a CPU 52% of the time; rounds differ: slowest/fastest 2.5x"
    )


def test_an_untimed_record_has_no_timing_figures() -> None:
    cols = load.load_columns([], torch_threads=3)
    assert cols["cpus_usable"] == usable_cpus() and cols["torch_threads"] == 3
    assert math.isnan(cols["load_avg_1m"]) and math.isnan(cols["timing_wait_share"])
    assert cols["timing_note"] == ""


def test_the_probe_counts_threads_started_during_the_rounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readings = iter(
        [
            {"1": (1_000_000_000, 0)},
            {"1": (1_500_000_000, 100_000_000), "2": (400_000_000, 400_000_000)},
        ]
    )
    monkeypatch.setattr(load, "_schedstat", lambda: next(readings))
    got = load.LoadProbe(torch_threads=2, on_cuda=True).stop([0.1, 0.3])
    assert got.run_s == pytest.approx(0.9) and got.wait_s == pytest.approx(0.5)
    assert got.round_spread == pytest.approx(3.0)
    assert math.isnan(got.cpu_s)  # on CUDA the host's CPU time says nothing


def test_the_probe_without_schedstat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load, "_schedstat", lambda: None)
    got = load.LoadProbe(torch_threads=1, on_cuda=False).stop([0.2])
    assert math.isnan(got.wait_share) and math.isnan(got.round_spread)
    assert got.cpu_s >= 0 and got.wall_s > 0


@pytest.fixture
def every_cpu_busy() -> Iterator[int]:
    """Two busy-looping processes per usable CPU, started here and killed after the test: a
    thread of the test then gets about half a CPU, whatever the machine's size."""
    n = 2 * usable_cpus()
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5)  # every burner running
        assert all(p.poll() is None for p in burners)
        yield n
    finally:
        for p in burners:
            p.kill()
        for p in burners:
            p.wait()


@pytest.mark.usefixtures("one_thread")
def test_a_timing_under_real_load_is_flagged(every_cpu_busy: int) -> None:
    cfg = UNetConfig(n_blocks=2, start_filts=4)
    frame = profile(
        cfg, (16, 32, 32), checkpointing="none", rounds=5, measure_memory=False,
        count_flops=False,
    )  # fmt: skip
    assert set(LOAD_COLUMNS) <= set(RECORD_COLUMNS) <= set(frame.columns)
    row = frame.iloc[0]
    assert row["status"] == "ok" and row["torch_threads"] == 1
    assert row["cpus_usable"] == usable_cpus()
    assert under_load(row), row[list(LOAD_COLUMNS)].to_dict()
    if math.isnan(row["timing_wait_share"]):  # no schedstat: CPU time tells
        assert "CPUs busy for 1 thread" in row["timing_note"]
    else:
        assert row["timing_wait_share"] > load.MAX_WAIT_SHARE
        assert "waited for a CPU" in row["timing_note"]


def test_readers_of_records_import_no_torch() -> None:
    """The report and ``compare`` ask :func:`under_load` without importing torch."""
    probe = "import sys, unetbench.profiler.load; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
