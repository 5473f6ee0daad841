"""The U-Net factory: blocks, attention gates, checkpointing, checkpointing policies and the
assembled network."""

from __future__ import annotations

from unetbench.model.blocks import DownConv, ResizeConv, UpConv
from unetbench.model.checkpoint import checkpoint
from unetbench.model.policies import (
    CheckpointPolicy,
    get_policy,
    policy_names,
    register_policy,
    unregister_policy,
)
from unetbench.model.unet import UNet

__all__ = [
    "CheckpointPolicy",
    "DownConv",
    "ResizeConv",
    "UNet",
    "UpConv",
    "checkpoint",
    "get_policy",
    "policy_names",
    "register_policy",
    "unregister_policy",
]
