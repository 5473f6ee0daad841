"""The measurements behind one record: failures kept in the row, inference and training steps.

Each measurement runs under :meth:`Row.guard`: running out of memory marks the row ``oom``,
any other exception ``error``, with the reason; the caller goes on with the next measurement.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from unetbench.model.policies import CheckpointPolicy
from unetbench.model.training import deterministic_training
from unetbench.precision import autocast, grad_scaler
from unetbench.profiler import _step, devices
from unetbench.profiler.timing import time_rounds

__all__ = ["Row", "measure_inference", "measure_training"]

logger = logging.getLogger(__name__)

_STATUS_RANK = {"ok": 0, "error": 1, "oom": 2}


def _failure(exc: BaseException) -> tuple[str, str]:
    """Classify an exception from a measurement as ("oom" | "error", one-line reason)."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    if devices.is_oom(exc):
        return "oom", text
    return "error", text


class Row(dict[str, Any]):
    """A record under construction: measurements fill columns, failures set the status."""

    def fail(self, status: str, reason: str, what: str) -> None:
        if _STATUS_RANK[status] > _STATUS_RANK[self["status"]]:
            self["status"] = status
        self["reason"] = "; ".join(r for r in (self["reason"], f"{what}: {reason}") if r)

    @contextlib.contextmanager
    def guard(self, what: str, device: torch.device) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # every measurement failure goes into the record
            status, reason = _failure(exc)
            logger.warning("%s (%s) failed: %s", what, self["checkpointing"], reason)
            self.fail(status, reason, what)
            devices.release(device)


def measure_inference(
    row: Row,
    model: nn.Module,
    x: torch.Tensor,
    dev: torch.device,
    voxels: int,
    measure_memory: bool,
    timing: bool,
    warmup: int,
    rounds: int,
    max_seconds: float | None,
    tick: Callable[[int], None],
    precision: str = "fp32",
) -> None:
    """Inference-mode forward in eval mode under ``precision``: peak memory and timing.

    On CUDA the memory is taken on a second forward, after cuDNN has chosen its algorithms
    (the first call's search and workspaces are not what a running job holds).
    """

    def infer() -> None:
        with torch.inference_mode(), autocast(precision, dev.type):
            model(x)

    model.eval()
    try:
        done = 0
        if measure_memory:
            with row.guard("infer memory", dev):
                if dev.type == "cuda":
                    infer()
                    done += 1
                peak = devices.peak_bytes(infer, model, dev)
                row["peak_mem_infer_bytes"] = peak.allocated
                row["peak_reserved_infer_bytes"] = peak.reserved
                done += 1
                tick(done)
        if timing and row["status"] != "oom":
            with row.guard("infer timing", dev):
                res = time_rounds(
                    infer,
                    dev,
                    warmup=max(0, warmup - done),
                    rounds=rounds,
                    max_seconds=max_seconds,
                    on_round=lambda: tick(1),
                )
                row["infer_s"], row["infer_iqr_s"] = res.median_s, res.iqr_s
                row["infer_voxels_per_s"] = voxels / res.median_s
                row["infer_load"] = res.load
    finally:
        model.train()


def measure_training(
    row: Row,
    model: nn.Module,
    policy: CheckpointPolicy,
    x: torch.Tensor,
    target: torch.Tensor,
    dev: torch.device,
    voxels: int,
    measure_memory: bool,
    timing: bool,
    warmup: int,
    rounds: int,
    max_seconds: float | None,
    tick: Callable[[int], None],
    precision: str = "fp32",
    dice_loss: bool = False,
) -> None:
    """Training steps under ``policy`` and ``precision``: peak memory, optimizer state, timing.

    The step is training's (:func:`unetbench.train.train_and_evaluate`): its loss, with the
    soft Dice loss if ``dice_loss``, under deterministic algorithms.

    On CUDA the peak is taken on a step after a warm-up step (cuDNN's algorithm search
    done), as allocated and as reserved by the caching allocator; on the CPU the tracked peak
    of the first step (the CPU has no such first-step effects).
    """
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = grad_scaler(precision, dev.type)
    done = 0

    def step(opt: torch.optim.Optimizer | None = None) -> None:
        with deterministic_training():
            _step.train_step(
                model, policy, x, target, opt, precision, scaler if opt else None, dice_loss
            )

    if measure_memory:
        with row.guard("train memory", dev):
            if dev.type == "cuda":
                step(optimizer)
                done += 1
            peak = devices.peak_bytes(step, model, dev)
            row["peak_mem_train_bytes"] = peak.allocated
            row["peak_reserved_train_bytes"] = peak.reserved
            optimizer.step()
            done += 1
            tick(done)
    if timing and row["status"] != "oom":
        with row.guard("train timing", dev):
            res = time_rounds(
                lambda: step(optimizer),
                dev,
                warmup=max(0, warmup - done),
                rounds=rounds,
                max_seconds=max_seconds,
                on_round=lambda: tick(1),
            )
            row["train_step_s"], row["train_step_iqr_s"] = res.median_s, res.iqr_s
            row["train_voxels_per_s"] = voxels / res.median_s
            row["train_load"] = res.load
    if optimizer.state:
        row["opt_state_bytes"] = _step.state_bytes(optimizer)
    for p in model.parameters():
        p.grad = None
