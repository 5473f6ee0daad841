"""The block-wise checkpointing policies ``none``, ``blocks``, ``top_units`` and ``lean``.

``top_units`` and ``lean`` checkpoint each block below the full-resolution level whole, as
``blocks`` does, and group the full-resolution blocks' public pieces into smaller checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn

from unetbench.model.blocks import DownConv, UpConv
from unetbench.model.checkpoint import checkpoint
from unetbench.model.unet import DownFn, UNet, UpFn

__all__ = ["forward_blocks", "forward_lean", "forward_none", "forward_top_units", "unet_of"]


def unet_of(model: nn.Module) -> UNet:
    """``model`` itself, checked: the policies run the public pieces of unetbench's blocks."""
    if not isinstance(model, UNet):
        raise TypeError(f"checkpointing policies run a unetbench UNet, not {type(model).__name__}")
    return model


def forward_none(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def forward_blocks(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return unet_of(model).forward_gradcp(x)


def _top_level_forward(
    model: nn.Module, x: torch.Tensor, top_down: DownFn, top_up: UpFn
) -> torch.Tensor:
    """Per-block checkpointing below the full-resolution level, ``top_down``/``top_up`` at it."""
    unet = unet_of(model)
    top_enc = unet.encoder_blocks[0]
    top_dec = unet.decoder_blocks[-1] if unet.decoder_blocks else None

    def down(block: DownConv, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return top_down(block, t) if block is top_enc else checkpoint(block, t)

    def up(block: UpConv, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        return top_up(block, enc, dec) if block is top_dec else checkpoint(block, enc, dec)

    return unet.forward_with(x, down, up)


def _unit_down(block: DownConv, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y = checkpoint(block.unit1, x, owner=block)
    y = checkpoint(block.unit2, y, owner=block)
    return block.pool(y), y


def _unit_up(block: UpConv, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
    up = checkpoint(block.upsample, dec, owner=block)
    y = checkpoint(block.split_merge_unit, enc, dec, up, owner=block)
    return checkpoint(block.unit2, y, owner=block)


def forward_top_units(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _top_level_forward(model, x, _unit_down, _unit_up)


def _lean_down(block: DownConv, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y = checkpoint(block.convs, x, owner=block)
    return block.pool(y), y


def _lean_up(block: UpConv, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
    """Two checkpoints; the up-sampled tensor is recomputed, not kept."""

    def upsample_and_merge(enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        return block.split_merge_unit(enc, dec, block.upsample(dec))

    y = checkpoint(upsample_and_merge, enc, dec, owner=block)
    return checkpoint(block.unit2, y, owner=block)


def forward_lean(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _top_level_forward(model, x, _lean_down, _lean_up)
