"""``profile``: one flat record per (checkpointing policy, precision, memory format) of a
U-Net on a shape.

For each pair the row holds exact operation counts, the training-step peak memory measured
(CUDA allocator or tracked CPU tensors) and estimated (fake tensors), optimizer-state and
inference memory, and median/IQR timings with what the machine was doing meanwhile (see
:mod:`unetbench.profiler.load`: a timing taken under load has a ``timing_note``).
``checkpointing="auto"`` rows name the policy they chose in ``checkpointing_chosen``. A
measurement that runs out of memory marks its row
``status="oom"`` and the others go on; any other failure marks ``status="error"``.
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

from unetbench.budget import split_budget
from unetbench.model.policies import CheckpointPolicy, get_policy
from unetbench.model.training import parse_memory_formats, to_memory_format, torch_memory_format
from unetbench.precision import autocast_dtype_name, parse_precisions
from unetbench.profiler import _measure, _step, devices, env, flops, load, memory
from unetbench.profiler.auto import AUTO, choose_policy
from unetbench.profiler.timing import check_timing_args
from unetbench.shapes import fmt_shape

__all__ = ["RECORD_COLUMNS", "profile"]

RECORD_COLUMNS = (
    "batch_size",
    "input_shape",
    "output_shape",
    "checkpointing",
    "checkpointing_chosen",
    "precision",
    "memory_format",
    "dice_loss",
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
    "peak_reserved_train_bytes",
    "opt_state_bytes",
    "peak_mem_infer_bytes",
    "peak_reserved_infer_bytes",
    "mem_method",
    "est_peak_mem_train_bytes",
    "memory_budget_bytes",
    "memory_headroom_bytes",
    "train_step_s",
    "train_step_iqr_s",
    "infer_s",
    "infer_iqr_s",
    "train_voxels_per_s",
    "infer_voxels_per_s",
    *load.LOAD_COLUMNS,
    "torch_version",
    "unetbench_version",
    "git_commit",
    "host",
    "device_name",
    "autocast_dtype",
    "cudnn_benchmark",
    "cudnn_deterministic",
    "tf32_matmul",
    "tf32_cudnn",
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
    precision: str | Iterable[str] = "fp32",
    memory_budget: int | str | None = None,
    memory_headroom: int | str | None = None,
    dice_loss: bool = False,
    memory_format: str | Iterable[str] = "contiguous",
) -> pd.DataFrame:
    """Profile a U-Net: one row per (checkpointing policy, precision); the columns are
    described in docs/profiler.md.

    Args:
        config_or_model: A UNetConfig, or a unetbench UNet (profiled on a copy, so its
            weights and statistics stay untouched).
        input_shape: Spatial shape (D, H, W) / (H, W), or full (N, C, *spatial).
        batch_size: Batch size when ``input_shape`` is spatial.
        checkpointing: Policy name(s): "none", "blocks", "top_units", ... (see
            ``unetbench.model.policies``),
            or "auto": the policy :func:`~unetbench.profiler.auto.choose_policy` picks for
            the shape, precision and budget, named in ``checkpointing_chosen``.
        device: "cpu", "cuda" or "cuda:N".
        warmup: Untimed steps before timing (the memory-tracked step counts as one).
        rounds: Timed steps at most.
        max_seconds: Stop timing a step kind after this many seconds (at least one round).
        timing: Time training and inference steps.
        measure_memory: Measure peak memory on the device (the fake estimate always runs).
        count_flops: Count fvcore MACs and torch FLOPs.
        progress: Called with the number of steps just run (e.g. ``tqdm.update``); see
            :func:`planned_steps` for the total.
        precision: "fp32", "bf16", "fp16" or several: autocast over forward and loss with
            float32 parameters (fp16 with a gradient scaler).
        memory_budget: Bytes or "11GiB": what ``auto`` must fit (less the headroom).
        memory_headroom: Bytes kept free of the budget; default 512 MiB on CUDA, 0 on CPU.
        dice_loss: The training step's loss adds the soft Dice loss, as training with
            ``dice_loss`` does (estimate, ``auto`` and measurement alike).
        memory_format: "contiguous", "channels_last" or both: the layout of the weights and
            the input, one set of rows each (estimated by a fake step in that layout).

    Raises:
        ConfigError: Illegal config or input shape.
        UsageError: Unknown device or policy, CUDA without a GPU, malformed arguments.
    """
    check_timing_args(warmup, rounds, max_seconds)
    cfg = _step.config_of(config_or_model)
    dev = devices.resolve_device(device)
    full = _step.resolve_shape(cfg, input_shape, batch_size)
    names = (checkpointing,) if isinstance(checkpointing, str) else tuple(checkpointing)
    for name in names:
        if name != AUTO:
            get_policy(name)
    precisions = parse_precisions(precision)
    formats = parse_memory_formats(memory_format)
    budget, headroom = _budget(memory_budget, memory_headroom, dev)
    out_shape = tuple(cfg.output_shape(full[2:]))
    out_voxels = full[0] * math.prod(out_shape)
    tick = progress or (lambda n: None)

    base: dict[str, Any] = {name: _cell(getattr(cfg, name)) for name in base_fields()}
    base.update(
        batch_size=full[0],
        input_shape=fmt_shape(full[2:]),
        output_shape=fmt_shape(out_shape),
        dice_loss=bool(dice_loss),
        device=str(dev),
        dtype="float32",
        status="ok",
        reason="",
        mem_method=("cuda_allocator" if dev.type == "cuda" else "cpu_tracked")
        if measure_memory
        else "",
        memory_budget_bytes=math.nan if budget is None else budget + headroom,
        memory_headroom_bytes=headroom,
        **env.environment(dev),
    )
    shared = _measure.Row(base, checkpointing="*")
    with shared.guard("setup", dev):  # model and batch may already not fit on the device
        model = _model_on(config_or_model, cfg, dev)
        x, target = _step.make_batch(cfg, full, dev)
    measured = not shared["reason"]
    if measured:
        base["params"] = sum(p.numel() for p in model.parameters())
        if count_flops:
            with shared.guard("fvcore", dev):
                shared["fwd_macs"], shared["unsupported_ops"] = flops.count_fwd_macs(model, x)
    rows = []
    for fmt in formats:
        if measured:  # the model and input in this layout (converted back for contiguous)
            to_memory_format(model, fmt, cfg.dim)
            x = x.contiguous(memory_format=torch_memory_format(fmt, cfg.dim))
        for prec in precisions:
            infer = _measure.Row(shared, precision=prec, memory_format=fmt)
            if measured:
                _measure.measure_inference(
                    infer, model, x, dev, out_voxels, measure_memory, timing, warmup, rounds,
                    max_seconds, tick, prec,
                )  # fmt: skip
            for name in names:
                row = _measure.Row(base, checkpointing=name, precision=prec, memory_format=fmt)
                row.update(autocast_dtype=autocast_dtype_name(prec))
                row.update({c: math.nan for c in RECORD_COLUMNS if c not in row})
                for key in _INFER_KEYS:
                    if key in infer:
                        row[key] = infer[key]
                if infer["reason"]:
                    row.fail(infer["status"], infer["reason"], "shared")
                policy = _policy(row, name, cfg, full, prec, budget, dev, dice_loss, fmt)
                if policy is not None:
                    _train_row(row, policy, cfg, full, prec, count_flops, dev, dice_loss, fmt)
                    if measured:
                        _measure.measure_training(
                            row, model, policy, x, target, dev, out_voxels, measure_memory,
                            timing, warmup, rounds, max_seconds, tick, prec, dice_loss,
                        )  # fmt: skip
                timed = [row[k] for k in ("infer_load", "train_load") if row.get(k) is not None]
                row.update(load.load_columns(timed, torch.get_num_threads()))
                rows.append(row)
    return pd.DataFrame(
        [{k: row.get(k) for k in (*base_fields(), *RECORD_COLUMNS)} for row in rows]
    )


_INFER_KEYS = (
    "fwd_macs",
    "unsupported_ops",
    "peak_mem_infer_bytes",
    "peak_reserved_infer_bytes",
    "infer_s",
    "infer_iqr_s",
    "infer_voxels_per_s",
    "infer_load",
)


def _budget(
    budget: int | str | None, headroom: int | str | None, dev: torch.device
) -> tuple[int | None, int]:
    """``(budget less headroom, headroom)`` in bytes; the budget is None when not given."""
    return split_budget(budget, headroom, str(dev))


def _policy(
    row: _measure.Row,
    name: str,
    cfg: Any,
    full: tuple[int, ...],
    precision: str,
    budget: int | None,
    dev: torch.device,
    dice_loss: bool = False,
    memory_format: str = "contiguous",
) -> CheckpointPolicy | None:
    """The policy a row trains with; for ``auto`` chosen from the estimates."""
    if name != AUTO:
        row["checkpointing_chosen"] = name
        return get_policy(name)
    with row.guard("auto", dev):
        choice = choose_policy(
            cfg, full, precision, budget, device=str(dev), dice_loss=dice_loss,
            memory_format=memory_format,
        )  # fmt: skip
        row["checkpointing_chosen"] = choice.name
        if not choice.fits:
            row["reason"] = "; ".join(
                r for r in (row["reason"], "auto: no policy fits the budget") if r
            )
        return get_policy(choice.name)
    return None


def _train_row(
    row: _measure.Row,
    policy: CheckpointPolicy,
    cfg: Any,
    full: tuple[int, ...],
    precision: str,
    count_flops: bool,
    dev: torch.device,
    dice_loss: bool = False,
    memory_format: str = "contiguous",
) -> None:
    """The estimate and FLOP counts of one row (nothing is allocated)."""
    with row.guard("estimate", dev):
        row["est_peak_mem_train_bytes"] = memory.estimate_train_memory(
            cfg, full, 1, policy.name, precision, str(dev), dice_loss=dice_loss,
            memory_format=memory_format,
        )  # fmt: skip
    if count_flops:
        with row.guard("flops", dev):
            row["fwd_flops"], row["train_flops"] = flops.count_torch_flops(cfg, full, 1, policy)


def base_fields() -> tuple[str, ...]:
    """The config columns of a record (every UNetConfig field, in declaration order)."""
    from unetbench.config import UNetConfig

    return tuple(UNetConfig.field_names())


def planned_steps(
    n_policies: int, *, warmup: int = 1, rounds: int = 5, n_precisions: int = 1
) -> int:
    """Upper bound of the steps :func:`profile` reports through ``progress``."""
    per_kind = max(1, warmup) + max(1, rounds)
    return per_kind * (n_policies + 1) * n_precisions


def _model_on(config_or_model: Any, cfg: Any, dev: torch.device) -> nn.Module:
    if isinstance(config_or_model, nn.Module):
        return copy.deepcopy(config_or_model).to(dev)
    return _step.build_model(cfg, dev)
