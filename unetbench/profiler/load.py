"""Was the machine busy while a step was timed? What every timed record carries, and one rule.

A time measured while other processes compete for the CPUs is a measurement of that
competition, not of the step. Around its timed rounds :func:`unetbench.profiler.timing.time_rounds`
takes a :class:`LoadProbe`; the record gets these columns (see :data:`LOAD_COLUMNS`):

* ``load_avg_1m``: the machine's 1-minute load average when timing started (``os.getloadavg``;
  host-wide, and it lags: it says what the last minute was like).
* ``cpus_usable``: CPUs this process may use (:func:`unetbench.cpus.usable_cpus`).
* ``torch_threads``: ``torch.get_num_threads()`` while timing.
* ``timing_cpu_per_wall``: CPU time of this process during the timed rounds over their wall
  time. On the CPU a step running ``t`` threads uncontended is close to ``t`` (less where
  threads idle, e.g. in Python between operators); on CUDA it is NaN: the host thread mostly
  waits for the GPU, so the ratio says nothing about contention.
* ``timing_wait_share``: of the time this process's threads were ready to run during the
  rounds, the share they spent waiting for a CPU (Linux ``/proc/self/task/*/schedstat``: the
  scheduler's run-queue delay; NaN where the kernel does not report it). This is the direct
  measure: a thread waits only when every CPU it may use is busy.
* ``timing_note``: "" when nothing says the timing was disturbed, else the reasons, as decided
  by :func:`timing_note`. Readers ask :func:`under_load`.

Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from unetbench.cpus import usable_cpus

__all__ = [
    "LOAD_COLUMNS",
    "MAX_LOAD_EXCESS",
    "MAX_ROUND_SPREAD",
    "MAX_WAIT_SHARE",
    "MIN_CPU_SHARE",
    "LoadProbe",
    "TimingLoad",
    "combine",
    "load_columns",
    "timing_note",
    "under_load",
]

#: The columns this module adds to a timed record, in order.
LOAD_COLUMNS = (
    "load_avg_1m",
    "cpus_usable",
    "torch_threads",
    "timing_cpu_per_wall",
    "timing_wait_share",
    "timing_note",
)
#: Flag when the threads waited for a CPU more than this share of their runnable time.
MAX_WAIT_SHARE = 0.15
#: Without run-queue figures (not Linux), flag a CPU timing whose process got less than this
#: share of ``min(torch_threads, cpus_usable)`` CPUs.
MIN_CPU_SHARE = 0.5
#: Flag when the load average exceeds the machine's CPUs by more than this.
MAX_LOAD_EXCESS = 0.5
#: Flag when the slowest timed round took more than this many times the fastest.
MAX_ROUND_SPREAD = 2.0

_TASKS = Path("/proc/self/task")


def timing_note(
    *,
    load_avg_1m: float,
    cpus_usable: int,
    cpus_machine: int,
    torch_threads: int,
    cpu_per_wall: float,
    wait_share: float,
    round_spread: float,
) -> str:
    """Why a timing should not be trusted, or "" when nothing says so; the one rule.

    Reasons, each checked on its own and joined with "; ":

    1. ``torch_threads > cpus_usable``: the step's own threads compete for the CPUs
       ("4 torch threads on 2 usable CPUs").
    2. ``wait_share > MAX_WAIT_SHARE`` (0.15): the process's threads spent more than 15% of
       their runnable time waiting for a CPU ("waited for a CPU 62% of the time"); a busy
       thread that waits a share ``w`` takes ``1 / (1 - w)`` times as long (1.18 at 15%). Only where
       the run-queue delay is unknown (NaN): ``cpu_per_wall < MIN_CPU_SHARE * min(threads,
       CPUs)``, i.e. the process got less than half the CPUs its threads could use ("0.31
       CPUs busy for 1 thread"); ``cpu_per_wall`` is NaN on CUDA and then not judged.
    3. ``load_avg_1m > cpus_machine + MAX_LOAD_EXCESS`` (0.5): more runnable threads than the
       machine has CPUs over the last minute ("load 3.4 on 2 CPUs"). The load average covers
       the whole machine, so it is set against the machine's CPUs, not the usable ones (a job
       pinned to 4 of 64 cores does not compete with the other 60 cores' load).
    4. ``round_spread > MAX_ROUND_SPREAD`` (2.0): the slowest timed round took more than twice
       as long as the fastest ("rounds differ: slowest/fastest 2.9x"); the median of a few rounds
       that differ that much depends on which rounds were disturbed.

    NaN inputs are not judged. The thresholds are module constants.

    >>> timing_note(load_avg_1m=3.4, cpus_usable=2, cpus_machine=2, torch_threads=1,
    ...             cpu_per_wall=0.3, wait_share=0.7, round_spread=1.1)
    'waited for a CPU 70% of the time; load 3.4 on 2 CPUs'
    >>> timing_note(load_avg_1m=0.2, cpus_usable=2, cpus_machine=2, torch_threads=1,
    ...             cpu_per_wall=0.98, wait_share=0.01, round_spread=1.05)
    ''
    """
    reasons = []
    if torch_threads > cpus_usable:
        reasons.append(f"{torch_threads} torch threads on {cpus_usable} usable CPUs")
    if wait_share > MAX_WAIT_SHARE:
        reasons.append(f"waited for a CPU {wait_share:.0%} of the time")
    elif math.isnan(wait_share):
        usable = max(1, min(torch_threads, cpus_usable))
        if cpu_per_wall < MIN_CPU_SHARE * usable:
            threads = f"{usable} thread" + ("s" if usable > 1 else "")
            reasons.append(f"{cpu_per_wall:.2f} CPUs busy for {threads}")
    if load_avg_1m > cpus_machine + MAX_LOAD_EXCESS:
        reasons.append(f"load {load_avg_1m:.1f} on {cpus_machine} CPUs")
    if round_spread > MAX_ROUND_SPREAD:
        reasons.append(f"rounds differ: slowest/fastest {round_spread:.1f}x")
    return "; ".join(reasons)


class _Row(Protocol):
    def get(self, key: str, default: Any = None, /) -> Any: ...


def under_load(row: _Row | Mapping[str, Any]) -> bool:
    """Whether a record's timing was flagged by :func:`timing_note` (a non-empty
    ``timing_note``); ``row`` is a dict or a pandas row. Records without the column (older
    files, untimed rows) are not."""
    note = row.get("timing_note")
    return isinstance(note, str) and note.strip() != ""


@dataclasses.dataclass(frozen=True)
class TimingLoad:
    """What the machine and this process did during some timed rounds (seconds, counts)."""

    load_avg_1m: float
    cpus_usable: int
    cpus_machine: int
    torch_threads: int
    wall_s: float
    cpu_s: float  # process CPU time; NaN on CUDA (see the module docstring)
    run_s: float  # summed over threads, from schedstat; NaN where unavailable
    wait_s: float
    round_spread: float  # slowest / fastest round; NaN with one round

    @property
    def cpu_per_wall(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def wait_share(self) -> float:
        busy = self.run_s + self.wait_s
        return self.wait_s / busy if busy > 0 else math.nan

    def note(self) -> str:
        return timing_note(
            load_avg_1m=self.load_avg_1m,
            cpus_usable=self.cpus_usable,
            cpus_machine=self.cpus_machine,
            torch_threads=self.torch_threads,
            cpu_per_wall=self.cpu_per_wall,
            wait_share=self.wait_share,
            round_spread=self.round_spread,
        )


def _load_avg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return math.nan


def _schedstat() -> dict[str, tuple[int, int]] | None:
    """Per thread of this process: (ns on a CPU, ns waiting for one); None if unavailable."""
    try:
        tids = os.listdir(_TASKS)
    except OSError:
        return None
    out = {}
    for tid in tids:
        try:
            fields = (_TASKS / tid / "schedstat").read_text().split()
            out[tid] = (int(fields[0]), int(fields[1]))
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile, or the kernel reports no schedstat
    return out or None


class LoadProbe:
    """Readings at the start of some timed rounds; :meth:`stop` turns them into a
    :class:`TimingLoad`."""

    def __init__(self, torch_threads: int, on_cuda: bool) -> None:
        self.torch_threads = torch_threads
        self.on_cuda = on_cuda
        self.load_avg_1m = _load_avg()
        self._sched = _schedstat()
        self._cpu = time.process_time()
        self._wall = time.perf_counter()

    def stop(self, rounds_s: Sequence[float]) -> TimingLoad:
        wall = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        run = wait = math.nan
        end = _schedstat()
        if self._sched is not None and end is not None:
            zero = (0, 0)  # a thread started during the rounds
            run = sum(r - self._sched.get(t, zero)[0] for t, (r, _) in end.items()) / 1e9
            wait = sum(w - self._sched.get(t, zero)[1] for t, (_, w) in end.items()) / 1e9
        fastest = min(rounds_s) if rounds_s else math.nan
        spread = max(rounds_s) / fastest if len(rounds_s) >= 2 and fastest > 0 else math.nan
        return TimingLoad(
            load_avg_1m=self.load_avg_1m,
            cpus_usable=usable_cpus(),
            cpus_machine=os.cpu_count() or 1,
            torch_threads=self.torch_threads,
            wall_s=wall,
            cpu_s=math.nan if self.on_cuda else cpu,
            run_s=run,
            wait_s=wait,
            round_spread=spread,
        )


def combine(loads: Sequence[TimingLoad]) -> TimingLoad:
    """One :class:`TimingLoad` for a record timed in several phases (inference, training):
    times summed, the highest load average, thread count and round spread."""
    if len(loads) == 1:
        return loads[0]

    def most(values: list[float]) -> float:
        known = [v for v in values if not math.isnan(v)]
        return max(known) if known else math.nan

    return TimingLoad(
        load_avg_1m=most([t.load_avg_1m for t in loads]),
        cpus_usable=min(t.cpus_usable for t in loads),
        cpus_machine=min(t.cpus_machine for t in loads),
        torch_threads=max(t.torch_threads for t in loads),
        wall_s=sum(t.wall_s for t in loads),
        cpu_s=sum(t.cpu_s for t in loads),
        run_s=sum(t.run_s for t in loads),
        wait_s=sum(t.wait_s for t in loads),
        round_spread=most([t.round_spread for t in loads]),
    )


def load_columns(loads: Sequence[TimingLoad], torch_threads: int) -> dict[str, object]:
    """The :data:`LOAD_COLUMNS` of a record timed in ``loads`` (none: an untimed record,
    whose timing columns are NaN and note empty)."""
    if not loads:
        return {
            "load_avg_1m": math.nan,
            "cpus_usable": usable_cpus(),
            "torch_threads": torch_threads,
            "timing_cpu_per_wall": math.nan,
            "timing_wait_share": math.nan,
            "timing_note": "",
        }
    load = combine(loads)
    return {
        "load_avg_1m": load.load_avg_1m,
        "cpus_usable": load.cpus_usable,
        "torch_threads": load.torch_threads,
        "timing_cpu_per_wall": load.cpu_per_wall,
        "timing_wait_share": load.wait_share,
        "timing_note": load.note(),
    }
