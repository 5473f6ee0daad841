"""Operation counts of a U-Net: fvcore multiply-adds and torch FLOPs.

The two tools count differently, and the column names say which is which:

* ``fwd_macs``: fvcore's ``FlopCountAnalysis`` of one forward. fvcore counts one fused
  multiply-add as one "flop", so its total is a MAC count. Operators it has no handler for
  (3D max-pool and trilinear upsampling, the attention gate's add/mul/sigmoid, ...) are not
  guessed: they are listed in ``unsupported_ops``.
* ``fwd_flops`` / ``train_flops``: ``torch.utils.flop_counter.FlopCounterMode``, 2 FLOPs per
  multiply-add, forward only / forward + backward of a whole training step (including the
  forward ops a checkpointing policy recomputes). Counted on fake tensors, so it costs no
  compute.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from unetbench.model.policies import CheckpointPolicy, get_policy
from unetbench.profiler import _step

__all__ = ["count_fwd_macs", "count_torch_flops", "format_unsupported"]


def format_unsupported(counts: dict[str, int]) -> str:
    """Render fvcore's unsupported-operator counter as ``"aten::op=n;..."`` (sorted)."""
    return ";".join(f"{name}={n}" for name, n in sorted(counts.items()))


def count_fwd_macs(model: nn.Module, x: torch.Tensor) -> tuple[int, str]:
    """fvcore multiply-add count of one forward of ``model`` on ``x``, and what it skipped.

    fvcore traces the model with TorchScript, which needs real tensors. The trace is of the
    training-mode forward (fvcore counts a training batch norm as more work than an inference
    one); the model's buffers (batch-norm running statistics) are restored afterwards.
    """
    with warnings.catch_warnings():
        # fvcore's import decorates helpers with torch.jit.script, which new torch releases
        # deprecate with one warning each; they are not the user's to act on.
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated")
        from fvcore.nn import FlopCountAnalysis

    saved = {name: buf.clone() for name, buf in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        with torch.no_grad():
            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            total = int(analysis.total())
            unsupported = format_unsupported(dict(analysis.unsupported_ops()))
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, buf in model.named_buffers():
                buf.copy_(saved[name])
    return total, unsupported


def count_torch_flops(
    config: Any,
    input_shape: tuple[int, ...] | list[int],
    batch_size: int = 1,
    checkpointing: str | CheckpointPolicy = "none",
) -> tuple[int, int]:
    """Return ``(fwd_flops, train_flops)`` of ``config`` from torch's FLOP counter.

    ``train_flops`` counts one training step, forward + backward (without the optimizer's
    elementwise update), under the given checkpointing policy. Runs on fake tensors.
    """
    cfg = _step.config_of(config)
    full = _step.resolve_shape(cfg, input_shape, batch_size)
    policy = get_policy(checkpointing) if isinstance(checkpointing, str) else checkpointing
    with _step.fake_mode():
        model = _step.build_model(cfg)
        model.train()
        x, target = _step.make_batch(cfg, full)
        counter = FlopCounterMode(display=False)
        with counter:
            model(x)
        fwd = int(counter.get_total_flops())
        counter = FlopCounterMode(display=False)
        with counter:
            _step.train_step(model, policy, x, target)
        train = int(counter.get_total_flops())
    return fwd, train
