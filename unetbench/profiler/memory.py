"""Peak memory of a training step, measured three ways that agree.

* CUDA: the caching allocator's peak statistics, reset before the step and read after a
  synchronisation.
* CPU: live tensor storages tracked at the dispatch level (``_live.LivePeak``): every tensor
  an op returns is counted once per storage and released through a weak reference when the
  storage dies.
* Anywhere: the same tracker over a step on fake tensors (``FakeTensorMode``: shapes
  propagate, nothing is allocated), so a config that does not fit here can still be sized.

torch's ``MemTracker`` (``torch.distributed._tools.mem_tracker``) counts the same quantity and
is kept as an independent cross-check (:func:`memtracker_peak_bytes`), but not used for the
records: its per-module backward hooks keep gradient tensors alive until a module's backward
ends, which raises the peak it reports by up to one activation (measured: 8 KiB of 309 KiB on
a tiny net; nothing on the default config), and it costs about three times as much.

All count parameters, buffers, gradients, activations and temporaries; not the input batch and
target, nor optimizer state (``opt_state_bytes``).
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from unetbench._errors import UsageError
from unetbench.budget import default_headroom_bytes
from unetbench.device_names import device_type
from unetbench.devices import empty_cache
from unetbench.model.policies import CheckpointPolicy, get_policy
from unetbench.model.training import (
    check_memory_format,
    deterministic_training,
    to_memory_format,
    torch_memory_format,
)
from unetbench.precision import check_precision, cuda_rules_on_cpu
from unetbench.profiler import _step
from unetbench.profiler._live import LivePeak

__all__ = [
    "OPT_STATE_FACTOR",
    "StepBytes",
    "batch_peak_bytes",
    "cuda_peak_bytes",
    "default_headroom_bytes",
    "estimate_step_bytes",
    "estimate_train_memory",
    "memtracker_peak_bytes",
    "model_bytes",
    "scaled_peak_bytes",
    "step_extra_bytes",
    "tracked_peak_bytes",
]

#: Float32 state tensors an optimizer keeps per parameter.
OPT_STATE_FACTOR = {"adam": 2, "sgd-momentum": 1, "sgd": 0}


class StepBytes(NamedTuple):
    """What one training step needs: its estimated peak (parameters, gradients, activations),
    the optimizer state and the input batch; ``total`` is what must fit a budget."""

    peak: int
    opt_state: int
    batch: int

    @property
    def total(self) -> int:
        return self.peak + self.opt_state + self.batch


def step_extra_bytes(
    config: Any, full_shape: tuple[int, ...], optimizer: str = "adam"
) -> tuple[int, int]:
    """``(optimizer state, batch)`` bytes a training step needs beside its estimated peak.

    The optimizer keeps float32 state per parameter (:data:`OPT_STATE_FACTOR`); the batch is
    a float32 input and its target (int64 class indices, or a float32 mask for one output
    channel). Neither depends on the precision: autocast casts inside the forward.
    """
    if optimizer not in OPT_STATE_FACTOR:
        raise UsageError(
            f"optimizer must be one of {', '.join(OPT_STATE_FACTOR)}, got {optimizer!r}"
        )
    cfg = _step.config_of(config)
    n_params = _n_params(cfg)
    n, spatial = full_shape[0], tuple(full_shape[2:])
    in_voxels = n * math.prod(spatial)
    out_voxels = n * math.prod(cfg.output_shape(spatial))
    target_item = 8 if cfg.out_channels >= 2 else 4
    batch = 4 * cfg.in_channels * in_voxels + target_item * out_voxels
    return OPT_STATE_FACTOR[optimizer] * 4 * n_params, batch


def estimate_step_bytes(
    config: Any,
    full_shape: tuple[int, ...],
    checkpointing: str = "none",
    precision: str = "fp32",
    device: str = "cpu",
    optimizer: str = "adam",
    *,
    dice_loss: bool = False,
    memory_format: str = "contiguous",
) -> StepBytes:
    """The fake-tensor peak of a training step at ``full_shape`` (N, C, *spatial) with the
    optimizer state and batch it needs beside it; ``dice_loss`` and ``memory_format`` as in
    :func:`estimate_train_memory`."""
    peak = estimate_train_memory(
        config, full_shape, 1, checkpointing, precision, device,
        dice_loss=dice_loss, memory_format=memory_format,
    )  # fmt: skip
    return StepBytes(peak, *step_extra_bytes(config, full_shape, optimizer))


def model_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _mem_tracker() -> Any:
    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError as exc:  # torch built without distributed support
        raise RuntimeError(
            "live-tensor tracking needs torch.distributed._tools.mem_tracker, which this "
            f"torch build lacks ({exc})"
        ) from exc
    return MemTracker()


def tracked_peak_bytes(fn: Callable[[], object], model: nn.Module) -> int:
    """Peak bytes of live tensors while ``fn`` runs: ``model``'s and those created in ``fn``.

    Works for real CPU/GPU tensors and for fake tensors alike. Tensors created before and not
    belonging to ``model`` (the input batch) are not counted.
    """
    return _tracked(fn, model).peak


def _tracked(fn: Callable[[], object], model: nn.Module, trace: bool = False) -> LivePeak:
    tracker = LivePeak(trace)
    tracker.track_module(model)
    with tracker:
        fn()
    return tracker


def memtracker_peak_bytes(fn: Callable[[], object], model: nn.Module) -> int:
    """The same peak as :func:`tracked_peak_bytes`, from torch's ``MemTracker`` (cross-check)."""
    tracker = _mem_tracker()
    tracker.track_external(model)
    with tracker:
        fn()
    peak = tracker.get_tracker_snapshot("peak")
    return int(sum(snap["Total"] for snap in peak.values()))


def cuda_peak_bytes(
    fn: Callable[[], object], model: nn.Module, device: torch.device
) -> tuple[int, int]:
    """Peak ``(allocated, reserved)`` CUDA bytes during ``fn``, on the tracked peak's footing.

    The allocator's peak counts everything allocated on the device, so the baseline before
    the step (model, batch and whatever else the process holds) is subtracted and the model's
    own bytes are added back. Reserved is what the caching allocator held at its peak (what
    ``nvidia-smi`` sees of this process, less the CUDA context): the cache is emptied first
    so that an earlier, larger step does not count, and the same baseline is taken off.
    """
    torch.cuda.synchronize(device)
    empty_cache(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    base_reserved = torch.cuda.memory_reserved(device)
    fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    reserved = torch.cuda.max_memory_reserved(device)
    own = model_bytes(model)
    return int(peak - base + own), int(reserved - base_reserved + own)


def estimate_train_memory(
    config: Any,
    input_shape: tuple[int, ...] | list[int],
    batch_size: int = 1,
    checkpointing: str = "none",
    precision: str = "fp32",
    device: str = "cpu",
    *,
    dice_loss: bool = False,
    memory_format: str = "contiguous",
) -> int:
    """Peak bytes of one training step of ``config``, estimated on fake tensors.

    Nothing is allocated, so this is cheap (well under a second) for any size; it matches the
    tracked CPU peak of the same step (``peak_mem_train_bytes``). Add ``opt_state_bytes`` and
    the batch to size a GPU.

    Args:
        config: A UNetConfig or a unetbench UNet.
        input_shape: Spatial shape (D, H, W) or (H, W), or full (N, C, *spatial).
        batch_size: Batch size when ``input_shape`` is spatial.
        checkpointing: Name of a checkpointing policy ("none", "blocks", ...).
        precision: "fp32", or "bf16"/"fp16" mixed precision.
        device: the device the step is sized for: "cuda..." applies CUDA's autocast rules
            (which differ from the CPU's for pooling and group/layer norm), anything else the
            CPU's; it does not change fp32.
        dice_loss: The loss adds the soft Dice loss, as training with ``dice_loss`` does.
        memory_format: "contiguous" or "channels_last": the layout of the weights and the
            input (channels-last convolutions allocate their outputs and gradients so too).

    Raises:
        ConfigError: Illegal shape for the config.
        UsageError: Unknown policy or malformed shape.
    """
    cfg = _step.config_of(config)
    full = _step.resolve_shape(cfg, input_shape, batch_size)
    return max(_step_trace(cfg, full, get_policy(checkpointing), check_precision(precision),
                           device_type(device) == "cuda", bool(dice_loss),
                           check_memory_format(memory_format)))  # fmt: skip


def batch_peak_bytes(
    config: Any,
    input_shape: tuple[int, ...] | list[int],
    checkpointing: str = "none",
    precision: str = "fp32",
    device: str = "cpu",
    *,
    dice_loss: bool = False,
    memory_format: str = "contiguous",
) -> Callable[[int], int] | None:
    """:func:`estimate_train_memory` at every batch size of one spatial shape, from two steps.

    A step runs the same operations at every batch size, and each tensor it makes is either
    independent of the batch (weights, their gradients, norm statistics, the loss) or
    proportional to it (activations). So the live bytes after the i-th allocation are
    ``a_i + (n - 1) * (b_i - a_i)``, from the live bytes ``a_i`` at batch 1 and ``b_i`` at
    batch 2, and the peak at batch ``n`` is their maximum: the number a fake step at batch
    ``n`` gives, without running it. None when the two steps did not allocate in the same
    sequence (then no batch can be predicted).
    """
    cfg = _step.config_of(config)
    policy, cuda = get_policy(checkpointing), device_type(device) == "cuda"
    check_precision(precision)
    check_memory_format(memory_format)
    one, two = (
        _step_trace(cfg, _step.resolve_shape(cfg, input_shape, n), policy, precision, cuda,
                    bool(dice_loss), memory_format)
        for n in (1, 2)
    )  # fmt: skip
    if len(one) != len(two):
        return None
    steps = [b - a for a, b in zip(one, two, strict=True)]

    def peak(batch: int) -> int:
        return max(a + (batch - 1) * d for a, d in zip(one, steps, strict=True))

    return peak


def scaled_peak_bytes(
    config: Any,
    input_shape: tuple[int, ...] | list[int],
    checkpointing: str = "none",
    precision: str = "fp32",
    device: str = "cpu",
    *,
    dice_loss: bool = False,
    memory_format: str = "contiguous",
) -> Callable[[int, tuple[int, ...]], int] | None:
    """:func:`estimate_train_memory` at every batch size and legal shape, from one fake step.

    In 'same' mode every legal size halves exactly at each pooling, so each tensor of a step
    holds ``c``, ``c * N``, ``c * V / F`` or ``c * N * V / F`` elements for ``N`` samples
    of ``V`` voxels (``F`` the pooling factor of its level): weights and their gradients,
    per-sample norm statistics, activations. The live bytes after the i-th allocation are
    then ``a_i + b_i * N + c_i * V + d_i * N * V``. One step at a prime batch size ``P`` and
    a shape whose every axis holds another prime ``Q`` (neither dividing any other size of
    the network) tells the four parts apart by divisibility, and the peak at ``(N, spatial)``
    is the maximum over i, in integer arithmetic: the number a fake step there gives.

    ``input_shape`` only checks the config and shape (any legal shape gives the same
    answers). None in 'valid' mode (sizes shrink by a constant, not a factor) or if some
    tensor fits none of the four forms; then each shape needs its own step.
    """
    cfg = _step.config_of(config)
    _step.resolve_shape(cfg, input_shape, 1)
    if cfg.conv_mode != "same":
        return None
    policy, cuda = get_policy(checkpointing), device_type(device) == "cuda"
    split = _split_trace(cfg, policy, check_precision(precision), cuda, bool(dice_loss),
                         check_memory_format(memory_format))  # fmt: skip
    if split is None:
        return None
    p, q_voxels, lines = split
    coeffs = np.array([[float(x) for x in line] for line in lines])

    def peak(batch: int, spatial: tuple[int, ...]) -> int:
        voxels = math.prod(spatial)
        # Floats find the few lines that can be the maximum; integers give it exactly.
        approx = coeffs @ np.array([1.0, batch / p, voxels / q_voxels,
                                    batch * voxels / (p * q_voxels)])  # fmt: skip
        top = np.flatnonzero(approx >= approx.max() * (1 - 1e-9))
        best = 0
        for i in top:
            a, b, c, d = lines[i]
            c_part, c_rest = divmod(c * voxels, q_voxels)
            d_part, d_rest = divmod(d // p * batch * voxels, q_voxels)
            if c_rest or d_rest:
                raise ArithmeticError(f"{spatial} is not a legal shape of this config")
            best = max(best, a + b // p * batch + c_part + d_part)
        return best

    return peak


@functools.lru_cache(maxsize=64)
def _split_trace(
    cfg: Any,
    policy: CheckpointPolicy,
    precision: str,
    cuda_rules: bool,
    dice_loss: bool,
    memory_format: str,
) -> tuple[int, int, tuple[tuple[int, int, int, int], ...]] | None:
    """``(P, voxels of the traced shape, live bytes per allocation as (constant,
    batch-proportional, voxel-proportional, both))`` of the fake step that
    :func:`scaled_peak_bytes` describes, with dominated allocations left out; None if a
    tensor fits none of the four forms."""
    base = [2 * _legal_sizes(cfg, axis)[0] for axis in range(cfg.dim)]
    sizes = {d for p in _fake_model(cfg, memory_format)[1].parameters() for d in p.shape}
    sizes |= {m // 2**k for m in base for k in range(m.bit_length())}
    avoid = {n for d in sizes for n in (d - 1, d, d + 1, 2 * d) if n > 1}
    p = _next_prime(10, avoid)
    q = _next_prime(p, avoid)
    spatial = tuple(q * m for m in base)

    def classify(nbytes: int) -> int:
        q_power = 0
        while nbytes % q == 0 and q_power <= cfg.dim:
            nbytes //= q
            q_power += 1
        if q_power not in (0, cfg.dim):
            return -1  # proportional to some axes only: not a form scaled_peak_bytes knows
        return (nbytes % p == 0) + 2 * (q_power == cfg.dim)

    tracker = _trace(
        cfg, (p, cfg.in_channels, *spatial), policy, precision, cuda_rules, dice_loss,
        memory_format, classify,
    )  # fmt: skip
    lines: set[tuple[int, int, int, int]] = set()
    for by_class in tracker.class_trace:
        parts = dict(by_class)
        if parts.get(-1):
            return None
        lines.add((parts.get(0, 0), parts.get(1, 0), parts.get(2, 0), parts.get(3, 0)))
    # Drop allocations another one matches or beats in all four parts (never the maximum).
    ordered = sorted(lines, key=sum, reverse=True)
    kept: list[tuple[int, int, int, int]] = []
    for line in ordered:
        if not any(all(k >= x for k, x in zip(other, line, strict=True)) for other in kept):
            kept.append(line)
    return p, math.prod(spatial), tuple(kept)


@functools.lru_cache(maxsize=32)
def _legal_sizes(cfg: Any, axis: int) -> list[int]:
    """Legal input sizes along ``axis`` up to 8192, smallest first."""
    sizes: list[int] = cfg.valid_input_sizes(range(1, 8193), axis=axis)
    return sizes


def _next_prime(n: int, avoid: set[int]) -> int:
    """The smallest prime above ``n`` that divides nothing in ``avoid``."""
    k = n + 1
    while any(k % f == 0 for f in range(2, math.isqrt(k) + 1)) or any(a % k == 0 for a in avoid):
        k += 1
    return k


@functools.lru_cache(maxsize=16)
def _n_params(cfg: Any) -> int:
    with _FAKE_LOCK:
        return sum(p.numel() for p in _fake_model(cfg, "contiguous")[1].parameters())


@functools.lru_cache(maxsize=64)
def _step_trace(
    cfg: Any,
    full: tuple[int, ...],
    policy: CheckpointPolicy,
    precision: str,
    cuda_rules: bool,
    dice_loss: bool,
    memory_format: str = "contiguous",
) -> tuple[int, ...]:
    """Live bytes after each allocation of one training step on fake tensors, under
    training's deterministic flags; its maximum is the step's peak. Kept because planning
    asks for the same step more than once."""
    tracker = _trace(cfg, full, policy, precision, cuda_rules, dice_loss, memory_format, None)
    return tuple(tracker.trace or (0,))


def _trace(
    cfg: Any,
    full: tuple[int, ...],
    policy: CheckpointPolicy,
    precision: str,
    cuda_rules: bool,
    dice_loss: bool,
    memory_format: str,
    classify: Callable[[int], int] | None,
) -> LivePeak:
    with _FAKE_LOCK:
        mode, model = _fake_model(cfg, memory_format)
        with mode, deterministic_training():
            model.train()
            x, target = _step.make_batch(cfg, full)
            x = x.contiguous(memory_format=torch_memory_format(memory_format, cfg.dim))
            with cuda_rules_on_cpu() if cuda_rules else nullcontext():
                tracker = LivePeak(trace=True, classify=classify)
                tracker.track_module(model)
                with tracker:
                    _step.train_step(
                        model, policy, x, target, precision=precision, dice_loss=dice_loss
                    )
            for p in model.parameters():
                p.grad = None
        return tracker


_FAKE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=8)
def _fake_model(config: Any, memory_format: str = "contiguous") -> tuple[Any, nn.Module]:
    """A fake-tensor model of ``config`` in ``memory_format`` with its fake mode, built once
    and reused (building costs as much as a fake step; planning calls the estimate many
    times)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode()
    with mode:
        model = to_memory_format(_step.build_model(config), memory_format, config.dim)
    return mode, model
