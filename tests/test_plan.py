"""plan(): the answer fits the budget, the next larger candidate does not; bad input."""

from __future__ import annotations

import math

import pytest

from unetbench import ConfigError, UNet, UNetConfig, UsageError
from unetbench.profiler import PLAN_COLUMNS, estimate_train_memory, plan
from unetbench.profiler.planner import _largest_fitting, _shape_candidates
from unetbench.units import parse_bytes

TINY = UNetConfig(n_blocks=2, start_filts=4)
MiB = 2**20


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("11GiB", 11 * 2**30), ("8 GB", 8 * 10**9), ("512MiB", 512 * MiB), ("1.5gib", 3 * 2**29),
     ("4096", 4096), (1000, 1000), ("2KiB", 2048)],
)  # fmt: skip
def test_parse_bytes(text: str | int, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["11 parsecs", "GiB", "-3GiB", "0", "", "1e9"])
def test_parse_bytes_refuses(text: str) -> None:
    with pytest.raises(UsageError, match=r"memory size"):
        parse_bytes(text)


def _total(cfg: UNetConfig, shape: tuple[int, ...], batch: int, policy: str) -> int:
    n_params = sum(p.numel() for p in UNet.from_config(cfg).parameters())
    batch_bytes = batch * (4 + 8) * shape[0] * shape[1] * shape[2]  # float input, int64 target
    return estimate_train_memory(cfg, shape, batch, policy) + 2 * 4 * n_params + batch_bytes


@pytest.mark.parametrize("policy", ["none", "blocks"])
def test_largest_shape_fits_and_the_next_does_not(policy: str) -> None:
    budget = 24 * MiB
    row = plan(TINY, budget, (8, 16, 16), vary="shape", checkpointing=policy).iloc[0]
    assert list(row.index) == list(PLAN_COLUMNS)
    shape = tuple(int(s) for s in row["input_shape"].split("x"))
    assert row["fits"] and row["total_bytes"] <= budget
    assert row["total_bytes"] == _total(TINY, shape, 1, policy)
    assert shape[1] == shape[2]
    assert abs(shape[1] - 2 * shape[0]) <= 2  # aspect ratio kept up to one legal size step
    cands = _shape_candidates(TINY, (8, 16, 16), None)
    bigger = cands[cands.index(shape) + 1]
    assert _total(TINY, bigger, 1, policy) > budget


def test_checkpointing_plans_a_larger_patch_and_batch() -> None:
    frame = plan(TINY, 24 * MiB, (8, 16, 16))
    assert list(frame["vary"]) == ["shape", "shape", "batch", "batch"]
    by = {(r.vary, r.checkpointing): r for r in frame.itertuples()}
    assert by["shape", "blocks"].voxels > by["shape", "none"].voxels
    assert by["batch", "blocks"].batch_size > by["batch", "none"].batch_size
    b = by["batch", "none"].batch_size
    assert by["batch", "none"].total_bytes <= 24 * MiB < _total(TINY, (8, 16, 16), b + 1, "none")


def test_fixed_depth_keeps_the_first_axis() -> None:
    row = plan(TINY, 16 * MiB, (4, 16, 32), fixed_depth=4, vary="shape").iloc[0]
    d, h, w = (int(s) for s in row["input_shape"].split("x"))
    assert d == 4 and h > 16
    assert abs(w - 2 * h) <= 2  # aspect ratio kept up to one legal size step


def test_nothing_fits_is_reported_not_raised() -> None:
    frame = plan(TINY, "40KiB", (8, 16, 16))
    assert not frame["fits"].any()
    assert (frame["total_bytes"] > 40 * 1024).all()


def test_largest_fitting_search() -> None:
    for limit in (-1, 0, 1, 5, 99):
        for guess in (0, 3, 50, 99):
            calls: list[int] = []
            fits = calls.append  # records the probe, returns None
            assert _largest_fitting(100, lambda i, f=fits, n=limit: f(i) or i <= n, guess) == limit
            assert len(calls) < 20


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(vary="depth"), UsageError, r"vary must be 'shape' and/or 'batch'"),
        (dict(optimizer="lbfgs"), UsageError, r"optimizer must be one of"),
        (dict(checkpointing="all"), UsageError, r"unknown checkpointing policy"),
        (dict(shape=(8, 15, 16)), ConfigError, r"15"),
        (dict(fixed_depth=3), ConfigError, r"3"),
        (dict(budget="lots"), UsageError, r"budget must be a positive size .*GiB.* got 'lots'"),
    ],
)
def test_bad_input(kwargs: dict, error: type[Exception], match: str) -> None:
    args: dict = dict(config=TINY, budget="1GiB", shape=(8, 16, 16))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        plan(**args)


def test_fixed_depth_needs_3d() -> None:
    with pytest.raises(UsageError, match=r"fixed_depth needs a 3D config"):
        plan(UNetConfig(dim=2, n_blocks=2, start_filts=4), "1GiB", (16, 16), fixed_depth=4)


def test_2d_config() -> None:
    row = plan(UNetConfig(dim=2, n_blocks=2, start_filts=4), "8MiB", (16, 32), vary="shape")
    h, w = (int(s) for s in row.iloc[0]["input_shape"].split("x"))
    assert row.iloc[0]["fits"] and w == 2 * h


POLICIES = ("none", "blocks", "top_units", "lean", "cheap")
SOME = ("none", "cheap")
# (config kwargs, reference shape, budgets, policies, precisions, memory formats): every kind
# of config the scaled estimate covers, and 'valid' mode, which it does not (each candidate is
# traced there).
EXACT_CASES = [
    (dict(n_blocks=2, start_filts=4), (8, 16, 16), ("6MiB", "24MiB"), POLICIES,
     ("fp32", "bf16"), ("contiguous",)),
    (dict(n_blocks=2, start_filts=4), (8, 16, 16), ("6MiB",), SOME, ("bf16",),
     ("channels_last",)),
    (dict(n_blocks=3, start_filts=4, planar_blocks=(0,)), (4, 16, 16), ("8MiB",), POLICIES,
     ("fp32",), ("contiguous",)),
    (dict(n_blocks=2, start_filts=4, attention=True, up_mode="resizeconv_linear"), (8, 8, 8),
     ("8MiB",), SOME, ("fp32", "bf16"), ("contiguous",)),
    (dict(n_blocks=2, start_filts=4, merge_mode="add", normalization="instance"), (8, 8, 8),
     ("8MiB",), SOME, ("fp32",), ("contiguous",)),
    (dict(n_blocks=3, start_filts=4, dim=2, out_channels=1), (16, 16), ("2MiB",), SOME,
     ("fp32",), ("contiguous",)),
    (dict(n_blocks=2, start_filts=4, conv_mode="valid"), (20, 20, 20), ("16MiB",), ("lean",),
     ("fp32",), ("contiguous",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "shape", "budgets", "policies", "precisions", "formats"), EXACT_CASES
)
def test_every_planned_estimate_is_the_traced_estimate(
    kwargs: dict,
    shape: tuple[int, ...],
    budgets: tuple[str, ...],
    policies: tuple[str, ...],
    precisions: tuple[str, ...],
    formats: tuple[str, ...],
) -> None:
    """Whatever plan reports as an estimate is exactly what a fake step at that size gives,
    for every policy, precision, memory format, budget and both directions."""
    cfg = UNetConfig(**kwargs)
    frame = plan(
        cfg, budgets, shape, checkpointing=policies, precision=precisions, memory_format=formats
    )
    assert len(frame) == len(budgets) * len(precisions) * len(formats) * 2 * len(policies)
    assert frame["fits"].any()
    for row in frame.itertuples():
        spatial = tuple(int(s) for s in row.input_shape.split("x"))
        traced = estimate_train_memory(
            cfg, spatial, row.batch_size, row.checkpointing, row.precision,
            memory_format=row.memory_format,
        )  # fmt: skip
        assert row.est_peak_mem_train_bytes == traced, row


def test_planned_estimate_with_dice_loss_and_fixed_depth_is_traced() -> None:
    cfg = UNetConfig(n_blocks=3, start_filts=4)
    frame = plan(cfg, "12MiB", (8, 16, 32), fixed_depth=8, checkpointing=SOME,
                 dice_loss=True)  # fmt: skip
    assert frame["dice_loss"].all()
    for row in frame.itertuples():
        spatial = tuple(int(s) for s in row.input_shape.split("x"))
        assert spatial[0] == 8 or row.vary == "batch"
        traced = estimate_train_memory(
            cfg, spatial, row.batch_size, row.checkpointing, dice_loss=True
        )
        assert row.est_peak_mem_train_bytes == traced


def test_scaled_estimate_equals_traced_at_any_batch_and_shape() -> None:
    from unetbench.profiler.memory import scaled_peak_bytes

    cfg = UNetConfig(n_blocks=3, start_filts=4)
    for name in POLICIES:
        for precision in ("fp32", "bf16") if name in SOME else ("fp32",):
            scaled = scaled_peak_bytes(cfg, (8, 16, 16), name, precision, "cuda")
            assert scaled is not None
            for batch, spatial in [(1, (8, 16, 16)), (5, (8, 16, 16)), (2, (16, 24, 40)),
                                   (3, (4, 4, 4))]:  # fmt: skip
                traced = estimate_train_memory(cfg, spatial, batch, name, precision, "cuda")
                assert scaled(batch, spatial) == traced, (name, precision, batch, spatial)
    assert scaled_peak_bytes(UNetConfig(n_blocks=2, conv_mode="valid"), (20, 20, 20)) is None


def test_cuda_plan_keeps_the_measured_margin_for_policies_with_a_gap() -> None:
    from unetbench.profiler.planner import CUDA_GAP_MARGIN

    frame = plan(TINY, "600MiB", (8, 16, 16), checkpointing=POLICIES, device="cuda",
                 memory_headroom=0, vary="shape")  # fmt: skip
    cpu = plan(TINY, "600MiB", (8, 16, 16), checkpointing=POLICIES, device="cpu", vary="shape")
    for row, on_cpu in zip(frame.itertuples(), cpu.itertuples(), strict=True):
        extra = row.opt_state_bytes + row.batch_bytes
        gap = CUDA_GAP_MARGIN.get(row.checkpointing, 0.0)
        assert row.gap_margin_bytes == math.ceil(gap * row.est_peak_mem_train_bytes)
        assert row.total_bytes == row.est_peak_mem_train_bytes + row.gap_margin_bytes + extra
        assert row.total_bytes <= 600 * MiB
        assert on_cpu.gap_margin_bytes == 0 and on_cpu.note == ""
        if gap:
            assert (
                row.note == f"{row.checkpointing}: CUDA allocates up to {gap:.0%} more "
                "than the estimate (measured); that margin of the estimate is kept free"
            )
            assert row.voxels < on_cpu.voxels  # the margin costs patch size
        else:
            assert row.note == "" and row.voxels == on_cpu.voxels


def test_cli_plans_two_budgets_and_precisions_in_one_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from unetbench.cli.main import main

    code = main(["plan", "--set", "n_blocks=2", "--set", "start_filts=4", "--budget",
                 "6MiB,24MiB", "--shape", "8,16,16", "--checkpointing", "none,lean",
                 "--precision", "fp32,bf16", "--device", "cuda", "--headroom", "0"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert out.count(" lean ") >= 8 and out.count(" bf16 ") == 8  # 2 budgets x 2 vary x 2
    assert out.strip().splitlines()[-1] == (
        "note: lean: CUDA allocates up to 12% more than the estimate (measured); that margin "
        "of the estimate is kept free"
    )
