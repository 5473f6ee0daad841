"""The project's regression suite (marker ``bench``; not part of the default run).

For every config of the fixed regression set (tests/regression_suite.py, which uses every
config option and checkpointing policy) this times unetbench's training step with
pytest-benchmark and stores params, FLOPs and memory in the benchmark's ``extra_info``.
Timings are gated only as ratios measured in the same run, never as absolute seconds:

* unetbench's step against elektronn3's reference U-Net of the same config (parity);
* each checkpointing policy's step against the plain step of the same model.

Run::

    .venv/bin/python -m pytest -m bench tests/benchmarks --benchmark-enable \
        --benchmark-json=results/bench/latest.json
    .venv/bin/unetbench compare results/bench/previous.json results/bench/latest.json
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from regression_suite import BASELINE_PATH, CASES, Case
from skips import ELEKTRONN3_INSTALL, require

from unetbench.gate import Baseline
from unetbench.gate.pytest_plugin import TimeRatio, measure_time_ratio

pytestmark = pytest.mark.bench

ROUNDS = 3  # pytest-benchmark rounds of the step itself
RATIO_ROUNDS = 8  # alternating rounds of each same-run ratio, measured once
#: The first steps of a new model can take 10-30x longer (kernel/allocator set-up): not timed.
RATIO_WARMUP = 3
#: unetbench and elektronn3 build the same layers; a slower step is a regression.
MAX_RATIO_VS_REFERENCE = 1.5
#: Checkpointing recomputes each forward op once (about +1/3 of a large step); on these tiny
#: CPU inputs the per-block Python overhead dominates and 2.5x is normal. The bound catches a
#: broken policy (e.g. recomputing per op many times); trends are gated with
#: `unetbench compare` on the saved runs' train_step_ratio_vs_none.
MAX_CHECKPOINTING_RATIO = 4.0
CHECKPOINTED = [(c, p) for c in CASES for p in c.checkpointing if p != "none"]


def make_step(model: Any, forward: Callable[[Any], Any], case: Case) -> Callable[[], None]:
    """One SGD training step of ``model`` (cross-entropy) on a fixed random batch."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    cfg = case.config
    x = torch.randn(1, cfg.in_channels, *case.input_shape, generator=gen)
    target = torch.randint(
        0, cfg.out_channels, (1, *cfg.output_shape(case.input_shape)), generator=gen
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(forward(x), target).backward()
        optimizer.step()

    return step


def same_run_ratio(candidate: Callable[[], None], reference: Callable[[], None]) -> TimeRatio:
    """Median of alternating rounds, measured once: a ratio above its bound fails with the
    number measured, since retrying until it passes would select the luckiest measurement."""
    return measure_time_ratio(candidate, reference, rounds=RATIO_ROUNDS, warmup=RATIO_WARMUP)


def profile_extra_info(case: Case, policy: str) -> dict[str, Any]:
    """Setting, deterministic counts and the tracked CPU memory of one case and policy."""
    from unetbench.profiler import profile

    row = profile(case.config, case.input_shape, 1, checkpointing=policy, timing=False).iloc[0]
    assert row["status"] == "ok", row["reason"]
    keys = (
        "params",
        "fwd_macs",
        "fwd_flops",
        "train_flops",
        "est_peak_mem_train_bytes",
        "peak_mem_train_bytes",
        "peak_mem_infer_bytes",
        "opt_state_bytes",
    )
    info: dict[str, Any] = {k: (None if row[k] != row[k] else int(row[k])) for k in keys}
    info.update(
        case.config.to_dict(),
        input_shape="x".join(map(str, case.input_shape)),
        checkpointing=policy,
        torch_version=row["torch_version"],
    )
    return info


def check_against_baseline(name: str, info: dict[str, Any]) -> None:
    baseline = Baseline.load(BASELINE_PATH)
    metrics = {k: info[k] for k in baseline.entries[name]["metrics"]}
    result = baseline.compare(name, metrics)
    assert result.passed, result.format()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_train_step_vs_reference(benchmark: Any, case: Case) -> None:
    import torch

    from unetbench import UNet

    ReferenceUNet = require("elektronn3.models.unet", ELEKTRONN3_INSTALL).UNet

    torch.manual_seed(0)
    ours = UNet.from_config(case.config)
    kwargs = case.config.to_dict()
    kwargs["planar_blocks"] = tuple(kwargs["planar_blocks"])  # elektronn3 compares with ()
    reference = ReferenceUNet(**kwargs)
    ours_step = make_step(ours, ours, case)
    ratio = same_run_ratio(ours_step, make_step(reference, reference, case))
    info = profile_extra_info(case, "none")
    benchmark.extra_info.update(info, **ratio.as_info("train_step_ratio_vs_elektronn3"))
    benchmark.pedantic(ours_step, rounds=ROUNDS, warmup_rounds=1)
    check_against_baseline(case.entry_name("none"), info)
    assert ratio.median <= MAX_RATIO_VS_REFERENCE, (
        f"{case.name}: unetbench's training step takes {ratio} elektronn3's"
    )


@pytest.mark.parametrize(
    ("case", "policy"), CHECKPOINTED, ids=[f"{c.name}-{p}" for c, p in CHECKPOINTED]
)
def test_checkpointed_step_vs_plain(benchmark: Any, case: Case, policy: str) -> None:
    import torch

    from unetbench import UNet
    from unetbench.model import get_policy

    torch.manual_seed(0)
    model = UNet.from_config(case.config)
    forward = get_policy(policy).forward
    checkpointed = make_step(model, lambda x: forward(model, x), case)
    ratio = same_run_ratio(checkpointed, make_step(model, model, case))
    info = profile_extra_info(case, policy)
    plain = Baseline.load(BASELINE_PATH).entries[case.entry_name("none")]["metrics"]
    benchmark.extra_info.update(info, **ratio.as_info("train_step_ratio_vs_none"))
    benchmark.pedantic(checkpointed, rounds=ROUNDS, warmup_rounds=1)
    check_against_baseline(case.entry_name(policy), info)
    assert info["est_peak_mem_train_bytes"] < plain["est_peak_mem_train_bytes"]
    assert ratio.median <= MAX_CHECKPOINTING_RATIO, f"{case.name}: {policy} step is {ratio} plain"
