"""profile(): record layout, agreement of its numbers, bad input, and failures in rows."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest
import torch

from unetbench import ConfigError, UNet, UNetConfig, UsageError
from unetbench.profiler import RECORD_COLUMNS, _measure, _step, api, profile

TINY = UNetConfig(n_blocks=2, start_filts=4)
FAST: dict[str, Any] = dict(warmup=1, rounds=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return profile(TINY, (8, 16, 16), batch_size=2,
                       checkpointing=("none", "blocks", "top_units"), **FAST)  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def test_one_row_per_policy_with_exactly_the_record_columns(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == [*UNetConfig.field_names(), *RECORD_COLUMNS]
    assert list(frame["checkpointing"]) == ["none", "blocks", "top_units"]
    assert (frame["status"] == "ok").all(), frame["reason"].tolist()
    assert (frame["reason"] == "").all()


def test_record_values(frame: pd.DataFrame) -> None:
    row = frame.iloc[0]
    assert row["n_blocks"] == 2 and row["planar_blocks"] == "[]"
    assert (row["batch_size"], row["input_shape"], row["output_shape"]) == (2, "8x16x16", "8x16x16")
    assert (row["device"], row["dtype"], row["mem_method"]) == ("cpu", "float32", "cpu_tracked")
    assert row["params"] == sum(p.numel() for p in UNet.from_config(TINY).parameters())
    assert row["torch_version"] == torch.__version__
    assert row["timestamp"].endswith("+00:00")
    for col in ("fwd_macs", "fwd_flops", "train_flops", "peak_mem_train_bytes",
                "peak_mem_infer_bytes", "train_step_s", "infer_s"):  # fmt: skip
        assert (frame[col] > 0).all(), col
    assert (frame["train_step_iqr_s"] >= 0).all()


def test_numbers_agree_across_methods_and_rows(frame: pd.DataFrame) -> None:
    rel = (frame["peak_mem_train_bytes"] - frame["est_peak_mem_train_bytes"]).abs()
    assert (rel <= 0.01 * frame["peak_mem_train_bytes"]).all()
    none, blocks, top = frame["peak_mem_train_bytes"]
    assert top < blocks < none
    # Adam keeps two moments per parameter (plus one step counter per tensor).
    n_tensors = len(list(UNet.from_config(TINY).parameters()))
    assert (frame["opt_state_bytes"] == 2 * 4 * frame["params"] + 4 * n_tensors).all()
    assert frame["peak_mem_infer_bytes"].nunique() == 1  # one inference, shared by the rows
    assert frame["fwd_macs"].nunique() == frame["fwd_flops"].nunique() == 1
    assert frame["train_flops"].iloc[0] < frame["train_flops"].iloc[1]  # recomputation
    voxels = 2 * 8 * 16 * 16
    assert frame["train_voxels_per_s"].tolist() == pytest.approx(
        (voxels / frame["train_step_s"]).tolist()
    )


def test_a_model_is_profiled_on_a_copy() -> None:
    torch.manual_seed(0)
    model = UNet(n_blocks=1, start_filts=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    row = profile(model, (1, 1, 8, 8, 8), checkpointing="blocks", **FAST).iloc[0]
    assert row["status"] == "ok" and row["batch_size"] == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_switches_leave_columns_empty() -> None:
    row = profile(TINY, (8, 8, 8), checkpointing="none", timing=False, measure_memory=False,
                  count_flops=False).iloc[0]  # fmt: skip
    assert row["status"] == "ok"
    assert row["est_peak_mem_train_bytes"] > 0
    assert row["mem_method"] == ""
    for col in ("peak_mem_train_bytes", "train_step_s", "fwd_macs", "infer_s"):
        assert math.isnan(row[col]), col


BAD_INPUTS = [
    (dict(input_shape=(8, 15, 16)), ConfigError, r"15"),
    (dict(input_shape=(16, 16)), UsageError, r"3 spatial sizes"),
    (dict(input_shape=(1, 3, 8, 16, 16)), UsageError, r"3 channels but in_channels=1"),
    (dict(batch_size=0), UsageError, r"batch size must be a positive integer"),
    (dict(device="tpu"), UsageError, r"device 'tpu'"),
    (dict(device="gpu:x"), UsageError, r"unknown device 'gpu:x'"),
    (dict(checkpointing=("none", "all")), UsageError, r"unknown checkpointing policy 'all'"),
    (dict(config_or_model="n_blocks=2"), UsageError, r"expected a UNetConfig"),
]


@pytest.mark.parametrize(("change", "error", "match"), BAD_INPUTS)
def test_bad_input_is_refused_before_any_work(
    change: dict[str, Any], error: type[Exception], match: str
) -> None:
    kwargs: dict[str, Any] = dict(config_or_model=TINY, input_shape=(8, 16, 16), **FAST)
    kwargs.update(change)
    with pytest.raises(error, match=match):
        profile(**kwargs)


def test_cuda_without_a_gpu_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match=r"'cuda' requested but no CUDA GPU is available"):
        profile(TINY, (8, 8, 8), device="cuda")


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"), "oom"),
        (ValueError("something else broke"), "error"),
    ],
)
def test_failures_go_into_the_row_and_the_others_go_on(
    monkeypatch: pytest.MonkeyPatch, exc: Exception, status: str
) -> None:
    real_step = _step.train_step

    def failing_step(model: Any, policy: Any, *args: Any, **kwargs: Any) -> None:
        if policy.name == "blocks":
            raise exc
        real_step(model, policy, *args, **kwargs)

    monkeypatch.setattr(_step, "train_step", failing_step)
    frame = profile(TINY, (8, 8, 8), checkpointing=("blocks", "none"), **FAST)
    failed, ok = frame.iloc[0], frame.iloc[1]
    assert failed["status"] == status
    assert str(exc).split(".")[0] in failed["reason"]
    assert ok["status"] == "ok" and ok["reason"] == ""
    assert ok["train_step_s"] > 0


def test_status_keeps_the_worst_failure() -> None:
    row = _measure.Row(status="ok", reason="", checkpointing="none")
    row.fail("oom", "out of memory", "train memory")
    row.fail("error", "later", "train timing")
    assert row["status"] == "oom"
    assert row["reason"] == "train memory: out of memory; train timing: later"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_profile_on_cuda() -> None:
    frame = profile(TINY, (8, 16, 16), device="cuda", **FAST)
    assert (frame["status"] == "ok").all()
    assert (frame["mem_method"] == "cuda_allocator").all()
    ratio = frame["peak_mem_train_bytes"] / frame["est_peak_mem_train_bytes"]
    assert ratio.between(0.9, 1.2).all()


def test_a_model_that_does_not_fit_marks_every_row_but_still_estimates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_room(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    monkeypatch.setattr(api, "_model_on", no_room)
    frame = profile(TINY, (8, 8, 8), **FAST)
    assert (frame["status"] == "oom").all()
    assert frame["reason"].str.contains("setup: OutOfMemoryError").all()
    assert frame["peak_mem_train_bytes"].isna().all() and frame["train_step_s"].isna().all()
    assert (frame["est_peak_mem_train_bytes"] > 0).all()  # sizing needs no device memory
    assert (frame["train_flops"] > 0).all()
