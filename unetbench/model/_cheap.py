"""The ``cheap`` checkpointing policy: every expensive convolution's output kept, the rest
recomputed.

Every checkpointed segment runs from one kept convolution output through the cheap operations
after it (norm, activation, pooling or up-sampling and merge) up to the next expensive
convolution. A convolution saves its input and weight before it computes, so the early stop of
non-re-entrant checkpointing ends the recomputation there: that convolution never runs again.
(With RReLU the checkpoint helper turns the early stop off, so such models also recompute the
convolutions: correct, but no faster than ``blocks``.)
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from unetbench.model._levels import unet_of
from unetbench.model.blocks import DownConv, ResizeConv, UpConv
from unetbench.model.checkpoint import checkpoint, frozen_norm_statistics

__all__ = ["forward_cheap"]

# Activations whose second application reproduces the first (no randomness, no state).
_PURE_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.SiLU, nn.ELU, nn.GELU, nn.Identity)

# A block's last norm and activation (``DownConv.norm_act2`` or ``UpConv.norm_act2``), still to
# be applied to the kept output of its last convolution.
Finish = Callable[[torch.Tensor], torch.Tensor]


def _cheap_conv(conv: nn.Module) -> bool:
    """Whether recomputing ``conv`` costs little next to the 3-wide convolutions of its level.

    True for transposed (2-wide, stride-2) and 1-wide convolutions, and for one that reads at
    most 1/8 as many channels as it writes (the first convolution, on the image).
    """
    if isinstance(conv, (nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return True
    if isinstance(conv, (nn.Conv2d, nn.Conv3d)):
        return math.prod(conv.kernel_size) == 1 or 8 * conv.in_channels <= conv.out_channels
    return False


def _up_conv(block: UpConv) -> nn.Module:
    """The convolution of the block's up-sampling."""
    up = block.upconv
    return up.conv if isinstance(up, ResizeConv) else up


def _splittable(block: UpConv) -> bool:
    """Whether the decoder's first convolution can be applied to its two inputs separately."""
    return block.concat and not block.gated and not block.crop


def _encoder_conv2(block: DownConv, t: torch.Tensor, with_conv1: bool) -> torch.Tensor:
    if with_conv1:
        t = block.conv1(t)
    return block.conv2(block.norm_act1(t))


def _pool_conv1(
    block: DownConv, nxt: DownConv, t: torch.Tensor, keep_skip: bool
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The next encoder block's first convolution of ``block``'s pooled output."""
    y = block.norm_act2(t)
    c1 = nxt.conv1(block.pool(y))
    return (y, c1) if keep_skip else c1


def _up_half_conv1(block: UpConv, finish: Finish, t: torch.Tensor) -> torch.Tensor:
    """The decoder's first convolution of the up-sampled half of its input (bias included)."""
    return block.conv1_of_up(block.upsample(finish(t)))


def _skip_half_conv1(block: UpConv, down: DownConv | None, t: torch.Tensor) -> torch.Tensor:
    """The decoder's first convolution of the skip half of its input (no bias)."""
    return block.conv1_of_skip(t if down is None else down.norm_act2(t))


def _merge_conv1(
    block: UpConv,
    down: DownConv | None,
    enc: torch.Tensor,
    dec: torch.Tensor | None,
    up: torch.Tensor,
) -> torch.Tensor:
    """The decoder block from its up-sampling's output (before its norm) to the first
    convolution; ``dec`` is None when the block has no attention gate to read it."""
    if down is not None:
        enc = down.norm_act2(enc)
    up = block.norm_act0(up)
    # Without a gate the decoder features are not read (nor kept): any tensor will do.
    enc = block.skip_features(enc, up if dec is None else dec, up)
    return block.merge_conv1(up, enc)


def _up_merge_conv1(
    block: UpConv, down: DownConv | None, finish: Finish, enc: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    dec = finish(t)
    return _merge_conv1(block, down, enc, dec, block.upconv(dec))


def _upsample(
    block: UpConv, finish: Finish, t: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The up-sampled tensor, and the decoder input too when the attention gate needs it."""
    dec = finish(t)
    return (dec if block.gated else None), block.upconv(dec)


def _decoder_conv2(block: UpConv, t: torch.Tensor) -> torch.Tensor:
    return block.conv2(block.norm_act1(t))


def _final(conv_final: nn.Module, finish: Finish, t: torch.Tensor) -> torch.Tensor:
    return conv_final(finish(t))


def _owner(*blocks: nn.Module | None) -> nn.Module:
    """The module whose norms a checkpoint spanning ``blocks`` must not update twice."""
    return nn.ModuleList([b for b in blocks if b is not None])


def forward_cheap(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    unet = unet_of(model)
    down_convs = unet.encoder_blocks
    up_convs = unet.decoder_blocks

    # Encoder. ``pre`` is the output of the latest convolution, before its norm: kept.
    first = down_convs[0]
    if _cheap_conv(first.conv1):
        pre = checkpoint(partial(_encoder_conv2, first, with_conv1=True), x, owner=first)
    else:
        pre = checkpoint(
            partial(_encoder_conv2, first, with_conv1=False), first.conv1(x), owner=first
        )
    # A skip is (block, its second convolution's output) when the decoder can apply the
    # block's last norm and activation once more (statistics frozen) instead of keeping their
    # output; otherwise (None, the block's output).
    skips: list[tuple[DownConv | None, torch.Tensor]] = []
    for enc_block, nxt in itertools.pairwise(down_convs):
        pure = isinstance(enc_block.act2, _PURE_ACTIVATIONS)
        fn = partial(_pool_conv1, enc_block, nxt, keep_skip=not pure)
        if pure:
            skips.append((enc_block, pre))
            c1 = checkpoint(fn, pre, owner=_owner(enc_block, nxt))
        else:
            skip_and_c1 = checkpoint(fn, pre, owner=_owner(enc_block, nxt))
            skips.append((None, skip_and_c1[0]))
            c1 = skip_and_c1[1]
            del skip_and_c1
        pre = checkpoint(partial(_encoder_conv2, nxt, with_conv1=False), c1, owner=nxt)

    # Decoder: ``prev``'s last norm and activation (``finish``) are still to be applied to
    # ``pre``.
    prev: DownConv | UpConv = down_convs[-1]
    finish: Finish = down_convs[-1].norm_act2
    for block in up_convs:
        down, enc = skips.pop()
        again = frozen_norm_statistics(down) if down is not None else contextlib.nullcontext()
        cheap_up = _cheap_conv(_up_conv(block))
        if cheap_up and _splittable(block) and block is up_convs[-1]:
            # At full resolution conv(cat(up, enc)) == conv_up(up) + conv_enc(enc): the
            # concatenation is never made and the skip half is a checkpoint of its own. (Not
            # below: splitting adds rounding for little memory there.)
            with again:
                from_enc = checkpoint(
                    partial(_skip_half_conv1, block, down), enc, owner=_owner(block, down)
                )
            from_up = checkpoint(
                partial(_up_half_conv1, block, finish), pre, owner=_owner(prev, block)
            )
            c1 = from_up + from_enc
            del from_up, from_enc
        elif cheap_up:
            fn_up = partial(_up_merge_conv1, block, down, finish)
            with again:
                c1 = checkpoint(fn_up, enc, pre, owner=_owner(prev, block, down))
        else:  # an expensive up-sampling convolution: its output is kept
            dec, up = checkpoint(partial(_upsample, block, finish), pre, owner=_owner(prev, block))
            with again:
                fn_merge = partial(_merge_conv1, block, down)
                c1 = checkpoint(fn_merge, enc, dec, up, owner=_owner(block, down))
            del dec, up
        del enc  # what the decoder keeps of the skip is held by its checkpoints
        pre = checkpoint(partial(_decoder_conv2, block), c1, owner=block)
        prev, finish = block, block.norm_act2
    return checkpoint(partial(_final, unet.conv_final, finish), pre, owner=prev)
