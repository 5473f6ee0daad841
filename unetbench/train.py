"""Train one U-Net configuration briefly and measure its validation Dice and IoU.

This is the accuracy half of a sweep trial. It is built to be comparable across configs:
the same seed gives the same patches, the same initial weights and (on CPU, stopping by
``steps``) the same Dice; divergence is reported as a status instead of an exception, so a
sweep can record it; and all tensors are released at the end, so trials do not leak memory
into each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from unetbench._errors import ConfigError, UsageError
from unetbench.config import UNetConfig
from unetbench.data.metrics import OverlapCounts
from unetbench.data.patches import PatchSampler, predict_volume
from unetbench.data.volumes import SegmentationData
from unetbench.devices import empty_cache, on_device, resolve_device
from unetbench.model import UNet, get_policy
from unetbench.model.training import (
    check_memory_format,
    deterministic_training,
    segmentation_loss,
    soft_dice_loss,
    to_memory_format,
    torch_memory_format,
)
from unetbench.precision import autocast, check_precision, grad_scaler

__all__ = ["TrainResult", "TrainState", "soft_dice_loss", "train_and_evaluate"]

log = logging.getLogger(__name__)

_LOSS_WINDOW = 10  # train_loss is the mean of the last this-many steps
# Losses stay on the device and are read back (and checked for divergence) once per this many
# steps: a read waits for the device, so reading every step would stall a GPU's queue.
_READ_EVERY = 10


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one short training run.

    ``val_dice``/``val_iou`` are for the foreground class (mean over classes 1..C-1 when the
    labels have more than two classes), pooled over every voxel of the validation volumes.
    A diverged run gets 0.0 for both: its model is useless, and a number (not NaN) keeps it
    a valid objective value. ``train_s`` counts training steps only, not validation.
    """

    val_dice: float
    val_iou: float
    train_loss: float
    steps_done: int
    train_s: float
    status: str  # 'ok' | 'diverged'
    reason: str = ""
    state: TrainState | None = None  # where the run stopped, when asked to keep it

    def to_dict(self) -> dict[str, Any]:
        """The result's fields but ``state``."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "state"
        }


@dataclass(frozen=True)
class TrainState:
    """Where a run stopped: everything needed to continue it as if it had not stopped (model
    and optimizer state, the gradient scaler, the patch sampler's and torch's random state,
    the last losses). A run continued from it takes the same steps, patches and updates as
    one trained straight through (exactly, on the CPU)."""

    seed: int
    steps_done: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None
    sampler_rng: dict[str, Any]
    torch_rng: torch.Tensor
    losses: list[float]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(dataclasses.asdict(self), buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainState:
        """Read :meth:`to_bytes` (tensors land on the CPU; training moves them)."""
        raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return cls(**raw)


def _on_cpu(value: Any) -> Any:
    """A copy of a state dict with every tensor on the CPU (nested dicts and lists)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_on_cpu(v) for v in value]
    return value


def _to_device(array: np.ndarray, dev: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    if dev.type == "cuda":
        # A copy from pageable memory waits for the device to finish; from pinned memory it
        # is queued like a kernel.
        return tensor.pin_memory().to(dev, non_blocking=True)
    return tensor.to(dev)


def _read_losses(pending: list[torch.Tensor], losses: list[float], lr: float) -> str:
    """Move the ``pending`` step losses to ``losses`` with one host read; the divergence
    reason if one is not finite (``losses`` then ends before that step), else ``""``."""
    values = torch.stack(pending).tolist() if pending else []
    pending.clear()
    for value in values:
        if not math.isfinite(value):
            return f"loss became {value} at step {len(losses) + 1} (lr={lr:g})"
        losses.append(value)
    return ""


def _check(config: UNetConfig, data: SegmentationData, patch: tuple[int, ...]) -> None:
    if len(patch) != config.dim:
        raise ConfigError(
            f"patch_shape={list(patch)} has {len(patch)} axes but dim={config.dim} "
            f"(allowed: {config.dim} sizes)"
        )
    data.check_model(config.in_channels, config.out_channels)
    config.check_input_shape(patch)


def train_and_evaluate(
    config: UNetConfig,
    data: SegmentationData,
    *,
    patch_shape: Sequence[int],
    batch_size: int,
    steps: int,
    seconds: float | None = None,
    lr: float = 1e-3,
    dice_loss: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    checkpointing: str = "none",
    precision: str = "fp32",
    resume: TrainState | None = None,
    keep_state: bool = False,
    memory_format: str = "contiguous",
) -> TrainResult:
    """Train ``config`` on ``data`` with Adam for ``steps`` steps or ``seconds``, then validate.

    ``memory_format`` lays out the weights and the batches (``channels_last``: channels last,
    as the profile and the estimate of that format do).

    ``resume`` continues a run of the same config and ``seed`` that stopped at
    ``resume.steps_done`` (< ``steps``) up to ``steps`` in total; ``seconds`` then limits the
    new steps. ``keep_state`` returns the run's :class:`TrainState` in ``TrainResult.state``.

    Loss: cross-entropy, plus :func:`soft_dice_loss` if ``dice_loss``
    (:func:`~unetbench.model.training.segmentation_loss`, the loss the profiler's estimate and
    measurement use too), under deterministic algorithms. Training stops at
    ``steps`` or after ``seconds`` of training, whichever comes first (a time limit makes the
    step count, and so the Dice, depend on machine speed). A non-finite loss stops training
    with status ``'diverged'``. ``checkpointing`` names the checkpointing policy of the training
    forward (``none``, ``blocks``, ...), so a config that fits its memory budget only with
    checkpointing is trained with it. ``precision`` ``bf16``/``fp16`` runs forward and loss
    under autocast (float32 weights and Adam state; fp16 with a gradient scaler), validation
    too. Raises ConfigError if the patch does not suit the config or data, UsageError for a
    bad device, budget, policy or precision.
    """
    patch = tuple(int(s) for s in patch_shape)
    if steps < 1 or batch_size < 1 or (seconds is not None and seconds <= 0):
        raise UsageError(
            f"steps={steps}, batch_size={batch_size}, seconds={seconds}: "
            "steps and batch_size must be >= 1 and seconds > 0 or None"
        )
    dev = resolve_device(device)
    forward = get_policy(checkpointing).forward
    check_precision(precision)
    check_memory_format(memory_format)
    _check(config, data, patch)
    if resume is not None and (resume.seed != seed or resume.steps_done >= steps):
        raise UsageError(
            f"cannot continue a run of seed {resume.seed} at step {resume.steps_done} as seed "
            f"{seed} up to step {steps}: the seed must match and the steps grow"
        )
    torch.manual_seed(seed)
    model: torch.nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    flags = contextlib.ExitStack()
    flags.enter_context(deterministic_training())
    flags.enter_context(on_device(dev))  # cuda:N current: nothing here touches cuda:0
    try:
        model = to_memory_format(UNet.from_config(config).to(dev), memory_format, config.dim)
        layout = torch_memory_format(memory_format, config.dim)
        out = tuple(int(s) for s in config.output_shape(patch))
        sampler = PatchSampler(data.train, patch, out, rng=np.random.default_rng(seed))
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        scaler = grad_scaler(precision, dev.type)
        done_before, prior = 0, []  # steps and last losses of the run resumed
        losses: list[float] = []  # read back, all finite
        if resume is not None:
            model.load_state_dict(resume.model)
            optimizer.load_state_dict(resume.optimizer)
            if scaler is not None and resume.scaler is not None:
                scaler.load_state_dict(resume.scaler)
            sampler.rng.bit_generator.state = resume.sampler_rng
            torch.set_rng_state(resume.torch_rng)
            done_before, prior = resume.steps_done, list(resume.losses)
        model.train()
        pending: list[torch.Tensor] = []  # not read back yet
        reason = ""
        start = time.perf_counter()
        for _ in range(steps - done_before):
            # The host clock needs no sync; on a GPU the host may run up to _READ_EVERY steps
            # ahead, so a time limit can be overrun by that much.
            if seconds is not None and time.perf_counter() - start >= seconds:
                break
            x, y = sampler.sample(batch_size)
            target = _to_device(y, dev)
            with autocast(precision, dev.type):
                logits = forward(model, _to_device(x, dev).contiguous(memory_format=layout))
                loss = segmentation_loss(logits, target, dice_loss)
            # A non-finite loss is found up to _READ_EVERY - 1 steps late; the steps after it
            # are wasted but not counted, as the run is reported diverged at that step.
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:  # fp16: scaled loss; steps with inf/nan gradients are skipped
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            pending.append(loss.detach())
            if len(pending) >= _READ_EVERY:
                reason = _read_losses(pending, losses, lr)
                if reason:
                    break
        # The last read also waits for the queued steps, so train_s covers all of them.
        reason = reason or _read_losses(pending, losses, lr)
        train_s = time.perf_counter() - start
        if reason:
            log.info("training diverged: %s", reason)
        elif not bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()):
            reason = f"weights became non-finite by step {len(losses)}"
        status = "diverged" if reason else "ok"
        steps_done = done_before + len(losses)
        window = (prior + losses)[-_LOSS_WINDOW:]
        train_loss = float(np.mean(window)) if window else float("nan")
        if status == "diverged":
            return TrainResult(0.0, 0.0, float("nan"), steps_done, train_s, status, reason)
        state = None
        if keep_state:
            state = TrainState(
                seed=seed,
                steps_done=steps_done,
                model=_on_cpu(model.state_dict()),
                optimizer=_on_cpu(optimizer.state_dict()),
                scaler=None if scaler is None else scaler.state_dict(),
                sampler_rng=dict(sampler.rng.bit_generator.state),
                torch_rng=torch.get_rng_state(),
                losses=window,
            )
        with autocast(precision, dev.type):
            dice, iou = evaluate(model, data, patch, out, n_classes=config.out_channels)
        log.debug("trained %d steps in %.1f s: dice %.3f", steps_done, train_s, dice)
        return TrainResult(dice, iou, train_loss, steps_done, train_s, status, reason, state)
    finally:
        del model, optimizer
        gc.collect()
        empty_cache(dev)
        flags.close()


def evaluate(
    model: torch.nn.Module,
    data: SegmentationData,
    patch_shape: Sequence[int],
    out_shape: Sequence[int],
    *,
    n_classes: int = 2,
) -> tuple[float, float]:
    """Foreground Dice and IoU of ``model`` over all validation volumes (tiled prediction)."""
    dev = next(model.parameters()).device
    model.eval()

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = model(torch.from_numpy(batch).to(dev))
        return logits.argmax(dim=1).cpu().numpy()

    counts = [OverlapCounts() for _ in range(1, max(2, n_classes))]
    for vol in data.val:
        pred = predict_volume(predict, vol, patch_shape, out_shape)
        for cls, c in enumerate(counts, start=1):
            c.update(pred == cls, vol.label == cls)
    return float(np.mean([c.dice for c in counts])), float(np.mean([c.iou for c in counts]))
