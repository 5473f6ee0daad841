"""The U-Net factory: blocks, attention gates, checkpointing and the assembled network."""

from __future__ import annotations

from unetbench.model.blocks import DownConv, ResizeConv, UpConv
from unetbench.model.checkpoint import checkpoint
from unetbench.model.unet import UNet

__all__ = ["DownConv", "ResizeConv", "UNet", "UpConv", "checkpoint"]
