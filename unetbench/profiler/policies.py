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
  never stored) and its second convolution a third. About -54% on the default config, against
  -48% for ``top_units``, for the same recomputation.
* ``cheap``: keeps every expensive convolution's output (before its norm) and recomputes only
  the cheap operations between two of them: norms, activations, pooling, up-sampling
  (transposed or 1-wide; a 3-wide resize convolution's output is kept), attention gates,
  merges, and the first convolution when it reads at most 1/8 as many channels as it writes
  (the image's). Each checkpoint ends with the next expensive convolution, whose recomputation
  the early stop skips, so no 3-wide convolution runs twice. The skips are not kept either:
  the decoder applies the encoder block's last norm and activation once more, statistics
  frozen (not for random activations like RReLU, whose skips are kept). At full resolution
  the first decoder convolution is split as in ``top_units``. Default config: -57% peak
  (``lean``: -54%) for +0.7% training FLOPs (``blocks``, ``top_units``, ``lean``: +33%);
  the extra time is mostly the recomputed norms.
  With RReLU the early stop is off (see ``unetbench.model.checkpoint``), so such models
  recompute the convolutions as well.

All policies use non-re-entrant checkpointing (``unetbench.model.checkpoint.checkpoint``), so
every parameter gets its gradient even when the input does not require one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from unetbench._errors import UsageError

__all__ = ["CheckpointPolicy", "get_policy", "policy_names", "register_policy"]

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


def _checkpoint(fn: Callable[..., Any], *args: Any, owner: nn.Module | None = None) -> Any:
    """Run ``fn`` under the model package's non-re-entrant checkpointing (BN stats once)."""
    from unetbench.model.checkpoint import checkpoint

    return checkpoint(fn, *args, owner=owner)


def _forward_none(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def _forward_blocks(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    gradcp = getattr(model, "forward_gradcp", None)
    if gradcp is not None:
        return gradcp(x)
    return _levels_forward(model, x, _blocks_down, _blocks_up)


def _blocks_down(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _checkpoint(block, x)


def _blocks_up(block: nn.Module, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
    return _checkpoint(block, enc, dec)


DownFn = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
UpFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _levels_forward(
    model: nn.Module,
    x: torch.Tensor,
    top_down: DownFn,
    top_up: UpFn,
) -> torch.Tensor:
    """U-Net forward with per-block checkpointing below the top level and given top blocks."""
    down_convs: Any = model.down_convs
    up_convs: Any = model.up_convs
    skips = []
    for i, block in enumerate(down_convs):
        x, before_pool = top_down(block, x) if i == 0 else _blocks_down(block, x)
        skips.append(before_pool)
    n_up = len(up_convs)
    for i, block in enumerate(up_convs):
        enc = skips[-(i + 2)]
        x = top_up(block, enc, x) if i == n_up - 1 else _blocks_up(block, enc, x)
    conv_final: Any = model.conv_final
    return conv_final(x)


def _unit_down(block: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y = _checkpoint(lambda t: block.act1(block.norm0(block.conv1(t))), x, owner=block)
    y = _checkpoint(lambda t: block.act2(block.norm1(block.conv2(t))), y, owner=block)
    return block.pool(y), y


def _merged_conv1(block: Any, enc: torch.Tensor, dec: torch.Tensor, up: torch.Tensor) -> Any:
    """The decoder's first convolution of the merged skip and up-sampled tensors, unnormalized."""
    from unetbench.model.blocks import center_crop

    if block.crop:
        enc = center_crop(enc, up)
    enc = block.attention(enc, dec)
    conv = block.conv1
    if not block.concat:
        return conv(up + enc)
    # conv(cat(a, b)) == conv_a(a) + conv_b(b): the concatenation is never stored.
    c = up.shape[1]
    y = conv._conv_forward(up, conv.weight[:, :c], conv.bias)
    return y + conv._conv_forward(enc, conv.weight[:, c:], None)


def _unit_up(block: Any, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
    """The decoder block's forward (``UpConv.forward``) split into three checkpointed units."""

    def merge_conv(enc: torch.Tensor, dec: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return block.act1(block.norm1(_merged_conv1(block, enc, dec, up)))

    up = _checkpoint(lambda d: block.act0(block.norm0(block.upconv(d))), dec, owner=block)
    y = _checkpoint(merge_conv, enc, dec, up, owner=block)
    out = _checkpoint(lambda t: block.act2(block.norm2(block.conv2(t))), y, owner=block)
    return out


def _forward_top_units(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _levels_forward(model, x, _unit_down, _unit_up)


def _act(act: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """``act(t)``, out of place on purpose.

    In place inside a checkpoint saves nothing at the peak, and its backward makes autograd
    allocate one more gradient buffer on real tensors than on fake ones, so the estimate
    would miss it (measured: 7.8% of the step on add-merge + instance norm under ``cheap``;
    out of place, estimate and tracked peak agree and are lower).
    """
    return act(t)


def _lean_down(block: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    def both_units(t: torch.Tensor) -> torch.Tensor:
        y = _act(block.act1, block.norm0(block.conv1(t)))
        return _act(block.act2, block.norm1(block.conv2(y)))

    y = _checkpoint(both_units, x, owner=block)
    return block.pool(y), y


def _lean_up(block: Any, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
    """``UpConv.forward`` as two checkpoints; the up-sampled tensor is recomputed, not kept."""

    def upsample_merge_conv(enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        up = _act(block.act0, block.norm0(block.upconv(dec)))
        return _act(block.act1, block.norm1(_merged_conv1(block, enc, dec, up)))

    def second_conv(t: torch.Tensor) -> torch.Tensor:
        return _act(block.act2, block.norm2(block.conv2(t)))

    y = _checkpoint(upsample_merge_conv, enc, dec, owner=block)
    return _checkpoint(second_conv, y, owner=block)


def _forward_lean(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _levels_forward(model, x, _lean_down, _lean_up)


register_policy(CheckpointPolicy("none", "no checkpointing", _forward_none))
register_policy(
    CheckpointPolicy("blocks", "every encoder/decoder block checkpointed", _forward_blocks)
)
register_policy(
    CheckpointPolicy(
        "top_units",
        "blocks, plus per-unit checkpointing and concat-free merge at full resolution",
        _forward_top_units,
    )
)
register_policy(
    CheckpointPolicy(
        "lean",
        "blocks, plus whole-block checkpoints at full resolution; "
        "neither the up-sampled nor the concatenated tensor is stored",
        _forward_lean,
    )
)


# --- cheap --------------------------------------------------------------------------------------
# Every checkpointed segment runs from one kept convolution output through the cheap operations
# after it (norm, activation, pooling or up-sampling and merge) up to the next expensive
# convolution. A convolution saves its input and weight before it computes, so the early stop of
# non-re-entrant checkpointing ends the recomputation there: that convolution never runs again.
# (With RReLU the checkpoint helper turns the early stop off, so such models also recompute the
# convolutions: correct, but no faster than ``blocks``.)

# Activations whose second application reproduces the first (no randomness, no state).
_PURE_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.SiLU, nn.ELU, nn.GELU, nn.Identity)


def _cheap_conv(conv: Any) -> bool:
    """Whether recomputing ``conv`` costs little next to the 3-wide convolutions of its level.

    True for transposed (2-wide, stride-2) and 1-wide convolutions, and for one that reads at
    most 1/8 as many channels as it writes (the first convolution, on the image).
    """
    if isinstance(conv, nn.modules.conv._ConvTransposeNd):
        return True
    return math.prod(conv.kernel_size) == 1 or 8 * conv.in_channels <= conv.out_channels


def _gated(block: Any) -> bool:
    from unetbench.model.attention import NoAttention

    return not isinstance(block.attention, NoAttention)


def _splittable(block: Any) -> bool:
    """Whether the decoder's first convolution can be applied to its two inputs separately."""
    return bool(block.concat) and not _gated(block) and not block.crop


def _norm_act(norm: nn.Module, act: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """``act(norm(t))``."""
    return act(norm(t))


def _encoder_conv2(block: Any, t: torch.Tensor, with_conv1: bool) -> torch.Tensor:
    if with_conv1:
        t = block.conv1(t)
    return block.conv2(_norm_act(block.norm0, block.act1, t))


def _skip(block: Any, t: torch.Tensor) -> torch.Tensor:
    """An encoder block's output (the skip tensor) from its second convolution's output."""
    return _norm_act(block.norm1, block.act2, t)


def _pool_conv1(block: Any, nxt: Any, t: torch.Tensor, keep_skip: bool) -> Any:
    """The next encoder block's first convolution of ``block``'s pooled output."""
    y = _skip(block, t)
    c1 = nxt.conv1(block.pool(y))
    return (y, c1) if keep_skip else c1


def _up_half_conv1(block: Any, norm: Any, act: Any, t: torch.Tensor) -> Any:
    """The decoder's first convolution of the up-sampled half of its input (bias included)."""
    conv = block.conv1
    up = _norm_act(block.norm0, block.act0, block.upconv(_norm_act(norm, act, t)))
    return conv._conv_forward(up, conv.weight[:, : conv.out_channels], conv.bias)


def _skip_half_conv1(block: Any, down: Any, t: torch.Tensor) -> Any:
    """The decoder's first convolution of the skip half of its input (no bias)."""
    conv = block.conv1
    enc = t if down is None else _skip(down, t)
    return conv._conv_forward(enc, conv.weight[:, conv.out_channels :], None)


def _merge_conv1(block: Any, down: Any, enc: torch.Tensor, dec: Any, up: torch.Tensor) -> Any:
    """``UpConv.forward`` from the up-sampled tensor (before its norm) to the first convolution."""
    from unetbench.model.blocks import center_crop

    if down is not None:
        enc = _skip(down, enc)
    up = _norm_act(block.norm0, block.act0, up)
    if block.crop:
        enc = center_crop(enc, up)
    enc = block.attention(enc, dec)
    merged = torch.cat((up, enc), 1) if block.concat else up + enc
    return block.conv1(merged)


def _up_merge_conv1(block: Any, down: Any, norm: Any, act: Any, enc: Any, t: Any) -> Any:
    dec = _norm_act(norm, act, t)
    return _merge_conv1(block, down, enc, dec, block.upconv(dec))


def _upsample(block: Any, norm: Any, act: Any, t: torch.Tensor) -> Any:
    """The up-sampled tensor, and the decoder input too when the attention gate needs it."""
    dec = _norm_act(norm, act, t)
    return (dec, block.upconv(dec)) if _gated(block) else (None, block.upconv(dec))


def _decoder_conv2(block: Any, t: torch.Tensor) -> torch.Tensor:
    return block.conv2(_norm_act(block.norm1, block.act1, t))


def _final(conv_final: Any, norm: Any, act: Any, t: torch.Tensor) -> torch.Tensor:
    return conv_final(_norm_act(norm, act, t))


def _owner(*blocks: Any) -> nn.Module:
    """The module whose norms a checkpoint spanning ``blocks`` must not update twice."""
    return nn.ModuleList([b for b in blocks if b is not None])


def _forward_cheap(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from unetbench.model.checkpoint import frozen_norm_statistics

    down_convs: Any = model.down_convs
    up_convs: Any = model.up_convs
    conv_final: Any = model.conv_final

    # Encoder. ``pre`` is the output of the latest convolution, before its norm: kept.
    first = down_convs[0]
    if _cheap_conv(first.conv1):
        pre = _checkpoint(partial(_encoder_conv2, first, with_conv1=True), x, owner=first)
    else:
        pre = _checkpoint(
            partial(_encoder_conv2, first, with_conv1=False), first.conv1(x), owner=first
        )
    # A skip is (block, its second convolution's output) when the decoder can apply the
    # block's last norm and activation once more (statistics frozen) instead of keeping their
    # output; otherwise (None, the block's output).
    skips: list[tuple[Any, torch.Tensor]] = []
    for block, nxt in itertools.pairwise(down_convs):
        pure = isinstance(block.act2, _PURE_ACTIVATIONS)
        fn = partial(_pool_conv1, block, nxt, keep_skip=not pure)
        if pure:
            skips.append((block, pre))
            c1 = _checkpoint(fn, pre, owner=_owner(block, nxt))
        else:
            skip_and_c1 = _checkpoint(fn, pre, owner=_owner(block, nxt))
            skips.append((None, skip_and_c1[0]))
            c1 = skip_and_c1[1]
            del skip_and_c1
        pre = _checkpoint(partial(_encoder_conv2, nxt, with_conv1=False), c1, owner=nxt)

    # Decoder: ``prev``'s last norm and activation are still to be applied to ``pre``.
    prev: Any = down_convs[-1]
    norm, act = prev.norm1, prev.act2
    for block in up_convs:
        down, enc = skips.pop()
        again = frozen_norm_statistics(down) if down is not None else contextlib.nullcontext()
        up_conv = getattr(block.upconv, "conv", block.upconv)
        if _cheap_conv(up_conv) and _splittable(block) and block is up_convs[-1]:
            # At full resolution conv(cat(up, enc)) == conv_up(up) + conv_enc(enc): the
            # concatenation is never made and the skip half is a checkpoint of its own. (Not
            # below: splitting adds rounding for little memory there.)
            with again:
                from_enc = _checkpoint(
                    partial(_skip_half_conv1, block, down), enc, owner=_owner(block, down)
                )
            from_up = _checkpoint(
                partial(_up_half_conv1, block, norm, act), pre, owner=_owner(prev, block)
            )
            c1 = from_up + from_enc
            del from_up, from_enc
        elif _cheap_conv(up_conv):
            fn = partial(_up_merge_conv1, block, down, norm, act)
            with again:
                c1 = _checkpoint(fn, enc, pre, owner=_owner(prev, block, down))
        else:  # an expensive up-sampling convolution: its output is kept
            fn = partial(_upsample, block, norm, act)
            dec, up = _checkpoint(fn, pre, owner=_owner(prev, block))
            with again:
                fn = partial(_merge_conv1, block, down)
                c1 = _checkpoint(fn, enc, dec, up, owner=_owner(block, down))
            del dec, up
        del enc  # what the decoder keeps of the skip is held by its checkpoints
        pre = _checkpoint(partial(_decoder_conv2, block), c1, owner=block)
        prev, norm, act = block, block.norm2, block.act2
    return _checkpoint(partial(_final, conv_final, norm, act), pre, owner=prev)


register_policy(
    CheckpointPolicy(
        "cheap",
        "every convolution output kept; norms, activations, pooling, up-sampling and merges "
        "recomputed",
        _forward_cheap,
    )
)
