"""unetbench's U-Net against elektronn3's, timed in one run (marker `bench`).

Run with ``bash scripts/test.sh -m bench tests/benchmarks/test_model_speed.py``. The two models
are timed alternately (ABAB...) so that machine load affects both alike; the ratio
unetbench / reference goes into the benchmark's ``extra_info`` and is the number to read.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable

import pytest
import torch
from skips import ELEKTRONN3_INSTALL, require
from torch import nn

from unetbench import UNet

pytestmark = pytest.mark.bench

reference = require("elektronn3.models.unet", ELEKTRONN3_INSTALL)

SHAPE = (1, 1, 32, 64, 64)
ROUNDS = 7
# Generous margin for noise on shared CI machines; the target is a ratio <= 1.0.
MAX_RATIO = 1.15


def _train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x).mean().backward()
        opt.step()

    return step


def _infer(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    model.eval()

    def run() -> None:
        with torch.inference_mode():
            model(x)

    return run


def _alternating_medians(a: Callable[[], None], b: Callable[[], None]) -> tuple[float, float]:
    a()
    b()  # warm-up
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(ROUNDS):
        for fn, out in ((a, times[0]), (b, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


@pytest.mark.parametrize("kind", ["train_step", "inference"])
def test_speed_against_reference(benchmark, kind: str) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    x = torch.randn(SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = reference.UNet()
    ours = UNet()
    ours.load_state_dict(ref.state_dict())
    make = _train_step if kind == "train_step" else _infer
    ours_fn, ref_fn = make(ours, x), make(ref, x)
    ours_s, ref_s = _alternating_medians(ours_fn, ref_fn)
    ratio = ours_s / ref_s
    benchmark.extra_info.update(
        {"unetbench_s": ours_s, "reference_s": ref_s, "ratio_to_reference": ratio}
    )
    benchmark.pedantic(ours_fn, rounds=3, warmup_rounds=0)
    print(f"\n{kind}: unetbench {ours_s:.3f} s, reference {ref_s:.3f} s, ratio {ratio:.3f}")
    assert ratio <= MAX_RATIO, f"unetbench {kind} is {ratio:.2f}x the reference's time"
