"""unetbench's U-Net against elektronn3's, timed in one run (marker `bench`).

Run with ``bash scripts/test.sh -m bench tests/benchmarks/test_model_speed.py``. The two models
are timed back to back in each of ``ROUNDS`` rounds, alternating which goes first, so that
machine load affects both alike; the median of the per-round ratios unetbench / reference and
their spread (IQR) go into the benchmark's ``extra_info``. It is measured once: a ratio above
the bound fails with the measured numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from skips import ELEKTRONN3_INSTALL, require
from torch import nn

from unetbench import UNet
from unetbench.gate.pytest_plugin import measure_time_ratio

pytestmark = pytest.mark.bench

reference = require("elektronn3.models.unet", ELEKTRONN3_INSTALL)

SHAPE = (1, 1, 32, 64, 64)
ROUNDS = 8
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
    ratio = measure_time_ratio(ours_fn, ref_fn, rounds=ROUNDS, warmup=1)
    benchmark.extra_info.update(ratio.as_info("ratio_to_reference"))
    benchmark.pedantic(ours_fn, rounds=3, warmup_rounds=0)
    print(f"\n{kind}: unetbench takes {ratio} the reference's time")
    assert ratio.median <= MAX_RATIO, f"unetbench {kind} takes {ratio} the reference's time"
