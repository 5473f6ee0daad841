"""Checkpointing policies at the reference point of issue 3 (marker `bench`).

Default config, input 1x1x32x64x64, every parameter gets its gradient. The goal is a policy
that saves at least 50% of the peak training memory for at most 30% extra step time (stretch:
15%). Memory is exact (the fake-tensor estimate, equal to the tracked CPU peak) and the goal
is asserted for the policies offered for it. Time is the ratio of a training step (with Adam)
to the plain step, measured once: the median of ``ROUNDS`` alternating rounds (both steps
timed back to back in each round, first one then the other going first), with the spread of
the per-round ratios. It is reported (printed and in ``extra_info``), never asserted nor
measured again: on a shared machine a retry until it passes would only select the luckiest
measurement. ``none`` is timed against itself as a control of the noise.

Run with ``bash scripts/test.sh -m bench tests/benchmarks/test_checkpointing_policies.py -s``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import pytest
import torch

from unetbench import UNet, UNetConfig
from unetbench.gate.pytest_plugin import time_ratio
from unetbench.model import get_policy
from unetbench.profiler import _step, estimate_train_memory

pytestmark = pytest.mark.bench

SHAPE = (32, 64, 64)
MEMORY_SAVED_GOAL = 0.50
TIME_ADDED_GOAL = 0.30
TIME_ADDED_STRETCH = 0.15
ROUNDS = 10  # alternating rounds of one measurement (at least 8)
WARMUP = 2
GOAL_POLICIES = ("lean", "cheap")  # the policies offered for the memory goal


def _step_fn(model: UNet, policy: str, x: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    chosen = get_policy(policy)

    def step() -> None:
        _step.train_step(model, chosen, x, target)
        optimizer.step()

    return step


def round_ratios(
    candidate: Callable[[], object], reference: Callable[[], object], rounds: int, warmup: int
) -> list[float]:
    """Per-round time ratios ``candidate / reference``, alternating which one runs first.

    Each round is one ``time_ratio`` round; on odd rounds the pair is swapped (the reference
    runs first) and the ratio inverted, as ``time_ratio`` itself alternates.
    """
    for _ in range(warmup):
        candidate()
        reference()
    ratios = []
    for i in range(rounds):
        if i % 2 == 0:
            ratios.append(time_ratio(candidate, reference, rounds=1, warmup=0))
        else:
            ratios.append(1 / time_ratio(reference, candidate, rounds=1, warmup=0))
    return ratios


@pytest.mark.parametrize("policy", ["none", "blocks", "top_units", "lean", "cheap"])
def test_policy_memory_saved_and_time_added(benchmark: Any, policy: str) -> None:
    cfg = UNetConfig()
    plain_bytes = estimate_train_memory(cfg, SHAPE, 1, "none")
    policy_bytes = estimate_train_memory(cfg, SHAPE, 1, policy)
    saved = 1 - policy_bytes / plain_bytes

    torch.manual_seed(0)
    model = UNet.from_config(cfg)
    x, target = _step.make_batch(cfg, (1, 1, *SHAPE))
    candidate = _step_fn(model, policy, x, target)
    plain = _step_fn(model, "none", x, target)
    ratios = benchmark.pedantic(
        lambda: round_ratios(candidate, plain, ROUNDS, WARMUP), rounds=1, iterations=1
    )
    ratio = statistics.median(ratios)
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    time_goal_met = ratio <= 1 + TIME_ADDED_GOAL
    benchmark.extra_info.update(
        policy=policy,
        est_peak_mem_train_bytes=policy_bytes,
        plain_peak_mem_train_bytes=plain_bytes,
        mem_saved_ratio=saved,
        train_step_ratio_vs_none=ratio,
        train_step_ratio_iqr=[q1, q3],
        train_step_ratio_min_max=[min(ratios), max(ratios)],
        train_step_ratios=ratios,
        time_goal_met=time_goal_met,
        time_stretch_goal_met=ratio <= 1 + TIME_ADDED_STRETCH,
    )
    print(
        f"\n{policy}: memory saved {saved:.2%} ({policy_bytes} of {plain_bytes} B); step time "
        f"x{ratio:.3f} (median of {ROUNDS} alternating rounds, IQR {q1:.3f}..{q3:.3f}, "
        f"min-max {min(ratios):.3f}..{max(ratios):.3f}); time goal x{1 + TIME_ADDED_GOAL:.2f} "
        f"{'met' if time_goal_met else 'MISSED (reported, not asserted)'}"
    )
    if policy == "none":
        assert policy_bytes == plain_bytes
        return
    assert policy_bytes < plain_bytes
    if policy in GOAL_POLICIES:
        assert saved >= MEMORY_SAVED_GOAL, f"{policy} saves {saved:.1%} of the peak"
