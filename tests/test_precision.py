"""Mixed precision: estimates equal the tracked CPU peak under autocast, every parameter gets
its gradient, and profile/plan/auto/headroom behave as documented."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from unetbench import UNetConfig, UsageError
from unetbench.model import get_policy, policy_names
from unetbench.precision import parse_precisions
from unetbench.profiler import _step, estimate_train_memory, memory, plan, profile
from unetbench.profiler.auto import choose_policy

pytestmark = pytest.mark.usefixtures("one_thread")

# The memory test table of test_profiler_memory.py, small enough for bf16 on two cores.
CASES: list[tuple[dict[str, Any], tuple[int, ...], int]] = [
    (dict(n_blocks=2, start_filts=4), (8, 16, 16), 2),
    (dict(n_blocks=3, start_filts=4, planar_blocks=(0,)), (4, 16, 16), 1),
    (dict(n_blocks=2, start_filts=4, attention=True, up_mode="resizeconv_linear"), (8, 8, 8), 1),
    (dict(n_blocks=2, start_filts=4, merge_mode="add", normalization="instance"), (8, 8, 8), 1),
    (dict(n_blocks=2, start_filts=4, normalization="group2"), (8, 8, 8), 1),
    (dict(n_blocks=2, start_filts=4, conv_mode="valid"), (20, 20, 20), 1),
    (dict(n_blocks=3, start_filts=4, dim=2, out_channels=1), (16, 16), 2),
]


def _tracked(cfg: UNetConfig, shape: tuple[int, ...], batch: int, name: str, prec: str) -> int:
    torch.manual_seed(0)
    model = _step.build_model(cfg)
    model.train()
    x, target = _step.make_batch(cfg, _step.resolve_shape(cfg, shape, batch))
    policy = get_policy(name)
    return memory.tracked_peak_bytes(
        lambda: _step.train_step(model, policy, x, target, precision=prec), model
    )


@pytest.mark.parametrize(("kwargs", "shape", "batch"), CASES)
def test_bf16_estimate_equals_tracked_cpu_peak(
    kwargs: dict[str, Any], shape: tuple[int, ...], batch: int
) -> None:
    cfg = UNetConfig(**kwargs)
    for name in policy_names():
        fp32 = estimate_train_memory(cfg, shape, batch, name)
        bf16 = estimate_train_memory(cfg, shape, batch, name, precision="bf16")
        assert bf16 == pytest.approx(_tracked(cfg, shape, batch, name, "bf16"), rel=0.01), name
        assert bf16 < fp32, name  # activations in half the bytes


@pytest.mark.parametrize("prec", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize(("kwargs", "shape", "batch"), CASES[:4])
def test_every_parameter_gets_a_gradient_under_each_precision(
    kwargs: dict[str, Any], shape: tuple[int, ...], batch: int, prec: str
) -> None:
    cfg = UNetConfig(**kwargs)
    model = _step.build_model(cfg)
    x, target = _step.make_batch(cfg, _step.resolve_shape(cfg, shape, batch))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu") if prec == "fp16" else None
    for name in ("none", "blocks", "cheap"):
        # train_step raises MissingGradientError if any parameter is left without a gradient
        _step.train_step(model, get_policy(name), x, target, optimizer, prec, scaler)
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
        assert all(p.dtype == torch.float32 for p in model.parameters())


def test_parse_precisions() -> None:
    assert parse_precisions("fp32, bf16") == ("fp32", "bf16")
    assert parse_precisions(["bf16", "bf16"]) == ("bf16",)
    with pytest.raises(UsageError, match="unknown precision 'fp8'; choose from fp32, bf16, fp16"):
        parse_precisions("fp32,fp8")
    with pytest.raises(UsageError, match="no precision"):
        parse_precisions("")


def test_profile_gives_one_row_per_policy_and_precision_with_auto_named() -> None:
    cfg = UNetConfig(n_blocks=2, start_filts=4)
    frame = profile(
        cfg, (8, 16, 16), checkpointing=("none", "auto"), precision=("fp32", "bf16"),
        rounds=1, count_flops=False,
    )  # fmt: skip
    assert list(zip(frame["checkpointing"], frame["precision"], strict=True)) == [
        ("none", "fp32"), ("auto", "fp32"), ("none", "bf16"), ("auto", "bf16"),
    ]  # fmt: skip
    assert (frame["status"] == "ok").all()
    assert list(frame["checkpointing_chosen"])[0::2] == ["none", "none"]
    leanest = [choose_policy(cfg, (1, 1, 8, 16, 16), p).name for p in ("fp32", "bf16")]
    assert list(frame["checkpointing_chosen"])[1::2] == leanest
    assert list(frame["autocast_dtype"]) == ["", "", "bfloat16", "bfloat16"]
    for _, row in frame.iterrows():  # CPU: the estimate is the tracked peak
        assert row["est_peak_mem_train_bytes"] == pytest.approx(
            row["peak_mem_train_bytes"], rel=0.01
        )
    bf16, fp32 = frame.iloc[2], frame.iloc[0]
    assert bf16["peak_mem_train_bytes"] < fp32["peak_mem_train_bytes"]
    assert {"cudnn_benchmark", "tf32_matmul", "peak_reserved_train_bytes"} <= set(frame.columns)


# Configs on which lean and top_units differ in which is lower (README, "Checkpointing").
@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        (dict(n_blocks=3, start_filts=8), (16, 32, 32)),
        (dict(n_blocks=2, start_filts=8, merge_mode="add", normalization="instance"), (16, 32, 32)),
        (
            dict(n_blocks=2, start_filts=8, attention=True, up_mode="resizeconv_linear"),
            (16, 32, 32),
        ),
    ],
)
def test_auto_without_budget_takes_the_lower_of_lean_and_top_units(
    kwargs: dict[str, Any], shape: tuple[int, ...]
) -> None:
    cfg = UNetConfig(**kwargs)
    full = (1, 1, *shape)
    lean = estimate_train_memory(cfg, shape, 1, "lean")
    top = estimate_train_memory(cfg, shape, 1, "top_units")
    assert lean != top
    choice = choose_policy(cfg, full, candidates=("lean", "top_units"))
    assert choice.name == ("lean" if lean < top else "top_units")


def test_auto_with_a_budget_takes_the_fewest_flops_that_fit() -> None:
    cfg = UNetConfig(n_blocks=2, start_filts=8)
    full = (1, 1, 16, 32, 32)
    free = choose_policy(cfg, full)
    roomy = choose_policy(cfg, full, budget_bytes=10 * max(free.total_bytes.values()))
    assert roomy.name == "none"  # plain training has the fewest FLOPs, and it fits
    tight_budget = min(free.total_bytes.values())
    tight = choose_policy(cfg, full, budget_bytes=tight_budget)
    assert tight.fits and tight.total_bytes[tight.name] <= tight_budget
    assert tight.name == min(free.total_bytes, key=lambda n: free.total_bytes[n])
    medium_budget = free.total_bytes["blocks"]  # blocks fits, none does not
    medium = choose_policy(cfg, full, budget_bytes=medium_budget)
    fitting = [n for n, t in medium.total_bytes.items() if t <= medium_budget]
    assert medium.name in fitting and "none" not in fitting
    assert medium.train_flops[medium.name] == min(medium.train_flops[n] for n in fitting)
    nothing = choose_policy(cfg, full, budget_bytes=1000)
    assert not nothing.fits and nothing.name == tight.name


def test_plan_bf16_reaches_a_larger_patch_and_auto_any_policy() -> None:
    cfg = UNetConfig(n_blocks=2, start_filts=8)
    kw: dict[str, Any] = dict(vary="shape", checkpointing=("none", "auto"), shape=(32, 32, 32))
    fp32 = plan(cfg, "256MiB", **kw)
    bf16 = plan(cfg, "256MiB", precision="bf16", **kw)
    vox = {(p, r["checkpointing"]): r["voxels"] for p, f in (("fp32", fp32), ("bf16", bf16))
           for _, r in f.iterrows()}  # fmt: skip
    assert vox[("bf16", "none")] > vox[("fp32", "none")]
    assert vox[("fp32", "auto")] >= vox[("fp32", "none")]
    auto = fp32[fp32["checkpointing"] == "auto"].iloc[0]
    assert auto["fits"] and auto["checkpointing_chosen"] in policy_names()


def test_headroom_is_kept_free_of_the_budget() -> None:
    cfg = UNetConfig(n_blocks=2, start_filts=8)
    kw: dict[str, Any] = dict(vary="shape", checkpointing="none", shape=(32, 32, 32))
    cpu = plan(cfg, "1GiB", **kw).iloc[0]
    cuda = plan(cfg, "1GiB", device="cuda", **kw).iloc[0]
    explicit = plan(cfg, "1GiB", memory_headroom="512MiB", **kw).iloc[0]
    assert (cpu["headroom_bytes"], cuda["headroom_bytes"]) == (0, 512 * 2**20)
    assert cuda["total_bytes"] <= 2**30 - 512 * 2**20 < cpu["total_bytes"]
    assert explicit["voxels"] == cuda["voxels"]
    with pytest.raises(UsageError, match="headroom"):
        plan(cfg, "256MiB", memory_headroom="512MiB", **kw)
