"""``profile``: one flat record per checkpointing policy of a U-Net on an input shape.

For each policy the row holds exact operation counts, the training-step peak memory measured
(CUDA allocator or tracked CPU tensors) and estimated (fake tensors), optimizer-state and
inference memory, and median/IQR timings. A measurement that runs out of memory marks its
row ``status="oom"`` and the others go on; any other failure marks ``status="error"``.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
import torch
from torch import nn

from unetbench.profiler import _measure, _step, devices, env, flops, memory
from unetbench.profiler.policies import get_policy

__all__ = ["RECORD_COLUMNS", "profile"]

RECORD_COLUMNS = (
    "batch_size",
    "input_shape",
    "output_shape",
    "checkpointing",
    "device",
    "dtype",
    "status",
    "reason",
    "params",
    "fwd_macs",
    "fwd_flops",
    "train_flops",
    "unsupported_ops",
    "peak_mem_train_bytes",
    "opt_state_bytes",
    "peak_mem_infer_bytes",
    "mem_method",
    "est_peak_mem_train_bytes",
    "train_step_s",
    "train_step_iqr_s",
    "infer_s",
    "infer_iqr_s",
    "train_voxels_per_s",
    "infer_voxels_per_s",
    "torch_version",
    "unetbench_version",
    "git_commit",
    "host",
    "device_name",
    "timestamp",
)
"""Record columns after the config fields, in order."""


def _cell(value: Any) -> Any:
    """A config value as a flat record cell: sequences as JSON lists, modules by repr."""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    if isinstance(value, nn.Module):
        return repr(value)
    return value


def _shape_str(shape: Iterable[int]) -> str:
    return "x".join(str(s) for s in shape)


def profile(
    config_or_model: Any,
    input_shape: tuple[int, ...] | list[int],
    batch_size: int = 1,
    checkpointing: str | Iterable[str] = ("none", "blocks"),
    device: str | torch.device = "cpu",
    *,
    warmup: int = 1,
    rounds: int = 5,
    max_seconds: float | None = None,
    timing: bool = True,
    measure_memory: bool = True,
    count_flops: bool = True,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Profile a U-Net: one row per checkpointing policy (columns: README, "Record columns").

    Args:
        config_or_model: A UNetConfig, or a unetbench UNet (profiled on a copy, so its
            weights and statistics stay untouched).
        input_shape: Spatial shape (D, H, W) / (H, W), or full (N, C, *spatial).
        batch_size: Batch size when ``input_shape`` is spatial.
        checkpointing: Policy name(s): "none", "blocks", "top_units" (see policies.py).
        device: "cpu", "cuda" or "cuda:N".
        warmup: Untimed steps before timing (the memory-tracked step counts as one).
        rounds: Timed steps at most.
        max_seconds: Stop timing a step kind after this many seconds (at least one round).
        timing: Time training and inference steps.
        measure_memory: Measure peak memory on the device (the fake estimate always runs).
        count_flops: Count fvcore MACs and torch FLOPs.
        progress: Called with the number of steps just run (e.g. ``tqdm.update``); see
            :func:`planned_steps` for the total.

    Raises:
        ConfigError: Illegal config or input shape.
        UsageError: Unknown device or policy, CUDA without a GPU, malformed arguments.
    """
    cfg = _step.config_of(config_or_model)
    dev = devices.resolve_device(device)
    full = _step.resolve_shape(cfg, input_shape, batch_size)
    names = (checkpointing,) if isinstance(checkpointing, str) else tuple(checkpointing)
    policies = [get_policy(n) for n in names]
    out_shape = tuple(cfg.output_shape(full[2:]))
    out_voxels = full[0] * math.prod(out_shape)
    tick = progress or (lambda n: None)

    base: dict[str, Any] = {name: _cell(getattr(cfg, name)) for name in base_fields()}
    base.update(
        batch_size=full[0],
        input_shape=_shape_str(full[2:]),
        output_shape=_shape_str(out_shape),
        device=str(dev),
        dtype="float32",
        status="ok",
        reason="",
        mem_method=("cuda_allocator" if dev.type == "cuda" else "cpu_tracked")
        if measure_memory
        else "",
        **env.environment(dev),
    )
    rows = [_measure.Row(base, checkpointing=p.name) for p in policies]
    for row in rows:
        row.update({c: math.nan for c in RECORD_COLUMNS if c not in row})

    shared = _measure.Row(base, checkpointing="*")
    with shared.guard("setup", dev):  # model and batch may already not fit on the device
        model = _model_on(config_or_model, cfg, dev)
        x, target = _step.make_batch(cfg, full, dev)
    measured = not shared["reason"]
    if measured:
        for row in rows:
            row["params"] = sum(p.numel() for p in model.parameters())
        if count_flops:
            with shared.guard("fvcore", dev):
                shared["fwd_macs"], shared["unsupported_ops"] = flops.count_fwd_macs(model, x)
        _measure.measure_inference(
            shared, model, x, dev, out_voxels, measure_memory, timing, warmup, rounds,
            max_seconds, tick,
        )  # fmt: skip
    for row, policy in zip(rows, policies, strict=True):
        for key in (
            "fwd_macs",
            "unsupported_ops",
            "peak_mem_infer_bytes",
            "infer_s",
            "infer_iqr_s",
            "infer_voxels_per_s",
        ):
            if key in shared:
                row[key] = shared[key]
        if shared["reason"]:
            row.fail(shared["status"], shared["reason"], "shared")
        with row.guard("estimate", dev):
            row["est_peak_mem_train_bytes"] = memory.estimate_train_memory(
                cfg, full, 1, policy.name
            )
        if count_flops:
            with row.guard("flops", dev):
                row["fwd_flops"], row["train_flops"] = flops.count_torch_flops(cfg, full, 1, policy)
        if measured:
            _measure.measure_training(
                row, model, policy, x, target, dev, out_voxels, measure_memory, timing,
                warmup, rounds, max_seconds, tick,
            )  # fmt: skip
    frame = pd.DataFrame(
        [{k: row.get(k) for k in (*base_fields(), *RECORD_COLUMNS)} for row in rows]
    )
    return frame


def base_fields() -> tuple[str, ...]:
    """The config columns of a record (every UNetConfig field, in declaration order)."""
    from unetbench.config import UNetConfig

    return tuple(UNetConfig.field_names())


def planned_steps(n_policies: int, *, warmup: int = 1, rounds: int = 5) -> int:
    """Upper bound of the steps :func:`profile` reports through ``progress``."""
    per_kind = max(1, warmup) + max(1, rounds)
    return per_kind * (n_policies + 1)


def _model_on(config_or_model: Any, cfg: Any, dev: torch.device) -> nn.Module:
    if isinstance(config_or_model, nn.Module):
        return copy.deepcopy(config_or_model).to(dev)
    return _step.build_model(cfg, dev)
