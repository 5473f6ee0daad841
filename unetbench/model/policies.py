"""Gradient-checkpointing policies: how a U-Net's training forward trades compute for memory.

A policy is a named forward function ``(model, x) -> output``; the profiler measures each one
the same way, so a new policy is one :func:`register_policy` call. Built in:

* ``none``: the plain forward; every activation is kept for the backward pass.
* ``blocks``: every encoder and decoder block checkpointed (``model.forward_gradcp``): only
  block inputs and outputs are kept, each block is recomputed once in the backward pass.
* ``top_units``: like ``blocks``, but at the full-resolution level (where most of the memory
  is) each convolution+norm+activation unit is checkpointed on its own, and the first decoder
  convolution is applied to the upsampled and the skip tensor separately (split weights)
  instead of to their concatenation, so the concatenated tensor is never stored.
  Same recomputation as ``blocks`` (each forward op once more), lower peak.
* ``lean``: like ``blocks`` below the top level; at full resolution the encoder block is one
  checkpoint, the decoder's up-sampling, merge and first convolution another (so only the
  low-resolution decoder input is kept, not the up-sampled tensor, and the concatenation is
  never stored) and its second convolution a third. Lower peak than ``top_units`` for the
  same recomputation.
* ``cheap``: keeps every expensive convolution's output (before its norm) and recomputes only
  the cheap operations between two of them: norms, activations, pooling, up-sampling
  (transposed or 1-wide; a 3-wide resize convolution's output is kept), attention gates,
  merges, and the first convolution when it reads at most 1/8 as many channels as it writes
  (the image's). Each checkpoint ends with the next expensive convolution, whose recomputation
  the early stop skips, so no 3-wide convolution runs twice. The skips are not kept either:
  the decoder applies the encoder block's last norm and activation once more, statistics
  frozen (not for random activations like RReLU, whose skips are kept). At full resolution
  the first decoder convolution is split as in ``top_units``. The lowest peak of the
  built-in policies for almost no extra training FLOPs (the others recompute every forward
  convolution); the extra time is mostly the recomputed norms. Measured savings and step
  times are in docs/benchmarks.md.
  With RReLU the early stop is off (see ``unetbench.model.checkpoint``), so such models
  recompute the convolutions as well.

Every policy is built from the public pieces of the blocks (``DownConv.unit1``,
``UpConv.upsample``, ``UpConv.split_merge_unit``, ...), the same pieces the blocks' own
``forward`` is made of, and uses non-re-entrant checkpointing
(``unetbench.model.checkpoint.checkpoint``), so every parameter gets its gradient even when the
input does not require one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from unetbench._errors import UsageError
from unetbench.model import _cheap, _levels

__all__ = ["CheckpointPolicy", "ForwardFn", "get_policy", "policy_names", "register_policy"]

ForwardFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class CheckpointPolicy:
    """A named training forward of a U-Net with some activations recomputed."""

    name: str
    description: str
    forward: ForwardFn


_REGISTRY: dict[str, CheckpointPolicy] = {}


def register_policy(policy: CheckpointPolicy) -> None:
    """Make ``policy`` available by name to :func:`unetbench.profile` and the CLI."""
    _REGISTRY[policy.name] = policy


def unregister_policy(name: str) -> None:
    """Forget the policy called ``name`` (e.g. one a test registered); no error if unknown."""
    _REGISTRY.pop(name, None)


def policy_names() -> tuple[str, ...]:
    """Names of the registered policies, in registration order."""
    return tuple(_REGISTRY)


def get_policy(name: str) -> CheckpointPolicy:
    """Return the policy called ``name``; a UsageError lists the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(
            f"unknown checkpointing policy {name!r}; choose from {', '.join(_REGISTRY)}"
        ) from None


register_policy(CheckpointPolicy("none", "no checkpointing", _levels.forward_none))
register_policy(
    CheckpointPolicy("blocks", "every encoder/decoder block checkpointed", _levels.forward_blocks)
)
register_policy(
    CheckpointPolicy(
        "top_units",
        "blocks, plus per-unit checkpointing and concat-free merge at full resolution",
        _levels.forward_top_units,
    )
)
register_policy(
    CheckpointPolicy(
        "lean",
        "blocks, plus whole-block checkpoints at full resolution; "
        "neither the up-sampled nor the concatenated tensor is stored",
        _levels.forward_lean,
    )
)
register_policy(
    CheckpointPolicy(
        "cheap",
        "every convolution output kept; norms, activations, pooling, up-sampling and merges "
        "recomputed",
        _cheap.forward_cheap,
    )
)
