"""Non-re-entrant gradient checkpointing that updates BatchNorm statistics once per step.

Re-entrant checkpointing (elektronn3's) trains no parameter inside a checkpoint when the input
does not require grad, and both flavours run BatchNorm twice in training mode, so the running
statistics move twice per step. Here the recomputation runs exactly as the first pass did (so
autograd saves the same tensors and outputs are bit-identical), and afterwards the norms'
``running_mean``, ``running_var`` and ``num_batches_tracked`` are put back to their values from
before the recomputation, which already include this step's single update.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

__all__ = ["checkpoint", "frozen_norm_statistics", "recompute_also_under"]

_LOCAL = threading.local()


@contextlib.contextmanager
def recompute_also_under(
    factory: Callable[[], contextlib.AbstractContextManager[Any]],
) -> Iterator[None]:
    """Checkpoints created in this thread while active recompute under ``factory()`` too.

    Autocast is restored for a recomputation by torch, but not a torch-function mode active
    around the step (the recomputation runs inside autograd): a caller that changes how
    operations run (e.g. CUDA's autocast rules emulated on the CPU) registers it here.
    """
    stack = _LOCAL.__dict__.setdefault("factories", [])
    stack.append(factory)
    try:
        yield
    finally:
        stack.pop()


@contextlib.contextmanager
def _recompute_context(holder: nn.Module, factories: list[Any]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for factory in factories:
            stack.enter_context(factory())
        stack.enter_context(frozen_norm_statistics(holder))
        yield


@contextlib.contextmanager
def frozen_norm_statistics(module: nn.Module) -> Iterator[None]:
    """Restore the running statistics of the block's norms to what they were on entry."""
    buffers = [
        buf
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.training and m.track_running_stats
        for buf in m.buffers(recurse=False)
    ]
    saved = [buf.clone() for buf in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, old in zip(buffers, saved, strict=True):
                buf.copy_(old)


def checkpoint(fn: Callable[..., Any], *args: Any, owner: nn.Module | None = None) -> Any:
    """Run ``fn(*args)`` keeping only its inputs; recompute it during backward.

    Args:
        fn: the computation, usually an ``nn.Module``.
        owner: module whose norms ``fn`` uses (defaults to ``fn`` itself when it is a module).
    """
    holder = owner if owner is not None else fn
    if not isinstance(holder, nn.Module):
        raise TypeError("checkpoint() needs `owner` when `fn` is not an nn.Module")
    # Stopping the recomputation early corrupts RReLU's saved noise (seen with torch 2.13:
    # gradients off by orders of magnitude), so blocks with RReLU recompute in full.
    early_stop = not any(isinstance(m, nn.RReLU) for m in holder.modules())
    with torch.utils.checkpoint.set_checkpoint_early_stop(early_stop):
        return torch.utils.checkpoint.checkpoint(
            fn,
            *args,
            use_reentrant=False,
            context_fn=lambda: (
                contextlib.nullcontext(),
                _recompute_context(holder, list(_LOCAL.__dict__.get("factories", ()))),
            ),
        )
