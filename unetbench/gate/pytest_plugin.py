"""pytest plugin: gate your U-Net variants' cost against a baseline file in your own CI.

Installed with unetbench (entry point ``pytest11: unetbench``). It adds the ``unet_gate``
fixture and these options (or ini keys):

``--unetbench-baseline PATH`` (ini ``unetbench_baseline``, default ``unetbench-baseline.json``
in the rootdir), ``--unetbench-update-baseline`` (record instead of check; the file is written
at the end of the session), ``--unetbench-ratio-tolerance`` (ini ``unetbench_ratio_tolerance``,
default 0.2: how much worse a timing ratio may get).

Deterministic metrics (parameters, MACs, FLOPs, fake-estimated memory) are compared exactly.
Timings are compared only as ratios measured in the same run (your step against a reference
step), because CI machines are shared and absolute seconds are noise. Nothing here runs unless
a test uses the fixture: the plugin imports only pytest at start-up.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from unetbench.gate.baseline import Baseline

__all__ = ["TimeRatio", "UNetGate", "measure_time_ratio", "time_ratio"]

_STASH: pytest.StashKey[_Session] = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("unetbench", "unetbench cost gate")
    group.addoption(
        "--unetbench-baseline",
        default=None,
        metavar="PATH",
        help="baseline JSON the unet_gate fixture checks against "
        "(default: ini unetbench_baseline or unetbench-baseline.json in the rootdir)",
    )
    group.addoption(
        "--unetbench-update-baseline",
        action="store_true",
        default=False,
        help="record the unet_gate measurements into the baseline instead of checking them",
    )
    group.addoption(
        "--unetbench-ratio-tolerance",
        type=float,
        default=None,
        metavar="TOL",
        help="relative tolerance of timing ratios (default 0.2)",
    )
    parser.addini(
        "unetbench_baseline",
        "baseline JSON of the unet_gate fixture",
        default="unetbench-baseline.json",
    )
    parser.addini("unetbench_ratio_tolerance", "relative tolerance of timing ratios", default="0.2")


class _Session:
    """Per-session state: the baseline (loaded on first use) and whether to update it."""

    def __init__(self, config: pytest.Config) -> None:
        option = config.getoption("unetbench_baseline")
        path = (
            Path(option) if option else config.rootpath / str(config.getini("unetbench_baseline"))
        )
        self.path = path
        self.update = bool(config.getoption("unetbench_update_baseline"))
        tol = config.getoption("unetbench_ratio_tolerance")
        raw = tol if tol is not None else config.getini("unetbench_ratio_tolerance")
        try:
            self.ratio_tolerance = float(raw)
        except ValueError:
            self.ratio_tolerance = -1.0
        if not self.ratio_tolerance >= 0:
            raise pytest.UsageError(
                f"unetbench ratio tolerance must be a number >= 0, but got {raw!r}"
            )
        self._baseline: Baseline | None = None
        self.recorded = 0

    @property
    def baseline(self) -> Baseline:
        if self._baseline is None:
            from unetbench.gate.baseline import Baseline

            self._baseline = Baseline.load(self.path)
        return self._baseline


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STASH] = _Session(config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(_STASH, None)
    if state is not None and state.update and state.recorded:
        state.baseline.save()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(_STASH, None)
    if state is not None and state.update and state.recorded:
        terminalreporter.write_line(
            f"unetbench: recorded {state.recorded} gate entries into {state.path}"
        )


@dataclass(frozen=True)
class TimeRatio:
    """Per-round time ratios ``candidate / reference`` of one measurement, and their summary."""

    ratios: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    @property
    def iqr(self) -> tuple[float, float]:
        """First and third quartile of the per-round ratios (both the ratio with one round)."""
        if len(self.ratios) < 2:
            return (self.ratios[0], self.ratios[0])
        q1, _, q3 = statistics.quantiles(self.ratios, n=4)
        return (q1, q3)

    def as_info(self, name: str) -> dict[str, Any]:
        """``{name: median, name_iqr: [q1, q3], name_rounds: [...]}``, e.g. for a
        pytest-benchmark's ``extra_info``, so that a saved run keeps the spread too."""
        return {name: self.median, f"{name}_iqr": list(self.iqr), f"{name}_rounds": self.ratios}

    def __str__(self) -> str:
        q1, q3 = self.iqr
        return f"x{self.median:.3f} (IQR {q1:.3f}-{q3:.3f}, {len(self.ratios)} rounds)"


def measure_time_ratio(
    candidate: Callable[[], object],
    reference: Callable[[], object],
    *,
    rounds: int = 8,
    warmup: int = 2,
) -> TimeRatio:
    """Time ``candidate`` against ``reference`` in this run, ``rounds`` times.

    Each round times both back to back, alternating which goes first, and keeps the round's
    ratio: the two calls of a round see the same machine load, so load that comes and goes on
    a shared CI machine cancels out far better than in a ratio of separately measured medians.
    """
    if rounds < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1 and warmup >= 0, but got ({rounds=}, {warmup=})")
    for _ in range(warmup):
        candidate()
        reference()
    ratios = []
    for i in range(rounds):
        seconds = {}
        pair = (("c", candidate), ("r", reference))
        for tag, fn in pair if i % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            fn()
            seconds[tag] = time.perf_counter() - start
        ratios.append(seconds["c"] / seconds["r"])
    return TimeRatio(tuple(ratios))


def time_ratio(
    candidate: Callable[[], object],
    reference: Callable[[], object],
    *,
    rounds: int = 8,
    warmup: int = 2,
) -> float:
    """How many times longer ``candidate`` takes than ``reference``: the median of
    :func:`measure_time_ratio`'s per-round ratios."""
    return measure_time_ratio(candidate, reference, rounds=rounds, warmup=warmup).median


class UNetGate:
    """What the ``unet_gate`` fixture returns; each check fails the calling test on regression.

    Entry names must be unique in the baseline file; use one per (variant, setting).
    """

    def __init__(self, state: _Session) -> None:
        self._state = state

    @property
    def updating(self) -> bool:
        """True under ``--unetbench-update-baseline`` (checks record instead of compare)."""
        return self._state.update

    def check_config(
        self,
        name: str,
        config_or_model: Any,
        input_shape: Iterable[int],
        *,
        batch_size: int = 1,
        checkpointing: str = "none",
    ) -> dict[str, int]:
        """Count params, ``fwd_macs``, ``fwd_flops``, ``train_flops`` and
        ``est_peak_mem_train_bytes`` of a UNetConfig or unetbench UNet; compare them exactly."""
        from unetbench import UNetConfig, UsageError
        from unetbench.gate.baseline import deterministic_metrics

        cfg = getattr(config_or_model, "config", config_or_model)
        if not isinstance(cfg, UNetConfig):
            raise UsageError(
                f"check_config needs a UNetConfig or a unetbench UNet, but got {type(cfg)!r}; "
                "use check_metrics for other models"
            )
        shape = tuple(input_shape)
        metrics = deterministic_metrics(config_or_model, shape, batch_size, checkpointing)
        setting = {
            **cfg.to_dict(),
            "input_shape": list(shape),
            "batch_size": batch_size,
            "checkpointing": checkpointing,
        }
        self.check_metrics(name, metrics, setting=setting)
        return metrics

    def check_time_ratio(
        self,
        name: str,
        candidate: Callable[[], object],
        reference: Callable[[], object],
        *,
        rounds: int = 8,
        warmup: int = 2,
        max_ratio: float | None = None,
    ) -> float:
        """Time ``candidate`` against ``reference`` in this run; fail if the ratio got worse
        than the baseline's by more than the ratio tolerance, or exceeds ``max_ratio``."""
        ratio = time_ratio(candidate, reference, rounds=rounds, warmup=warmup)
        if max_ratio is not None and ratio > max_ratio:
            pytest.fail(
                f"unetbench gate {name!r}: time ratio {ratio:.3f} > max_ratio {max_ratio}",
                pytrace=False,
            )
        self.check_metrics(
            name, {"time_ratio": ratio}, tolerances={"time_ratio": self._state.ratio_tolerance}
        )
        return ratio

    def check_metrics(
        self,
        name: str,
        metrics: Mapping[str, float],
        *,
        tolerances: Mapping[str, float] | None = None,
        setting: Mapping[str, Any] | None = None,
    ) -> None:
        """Compare any metrics with entry ``name``: the deterministic ones exactly, others
        (names ending in ``_ratio``, ``_s``, ``_bytes``) within ``tolerances`` or the ratio
        tolerance."""
        state = self._state
        baseline = state.baseline
        if state.update:
            baseline.set(name, metrics, setting or {})
            state.recorded += 1
            return
        if name not in baseline.entries:
            where = "has no entry" if baseline.exists else "does not exist, so it has no entry"
            pytest.fail(
                f"unetbench gate: baseline {state.path} {where} {name!r}; record it with "
                "pytest --unetbench-update-baseline and commit the file",
                pytrace=False,
            )
        result = baseline.compare(
            name, metrics, tolerances, default_tolerance=state.ratio_tolerance
        )
        if not result.passed:
            note = baseline.environment_note()
            pytest.fail(
                f"unetbench gate {name!r} regressed against {state.path}:\n{result.format()}"
                + (f"\n{note}" if note else "")
                + "\nIf the change is intended, run pytest --unetbench-update-baseline and "
                "commit the baseline.",
                pytrace=False,
            )


@pytest.fixture
def unet_gate(request: pytest.FixtureRequest) -> UNetGate:
    """Gate a U-Net's cost against the baseline file (see the module docstring)."""
    return UNetGate(request.config.stash[_STASH])
