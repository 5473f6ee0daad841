"""Factories for the layers a U-Net block is made of: convolutions, norms, activations."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetbench.config import group_count

__all__ = [
    "activation",
    "conv",
    "conv_on_channels",
    "conv_transpose",
    "max_pool",
    "normalization",
]

_CONV: dict[int, Any] = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T: dict[int, Any] = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_POOL: dict[int, Any] = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_BATCH: dict[int, Any] = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTANCE: dict[int, Any] = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


def _extent(size: int, dim: int, planar: bool) -> tuple[int, ...]:
    """Kernel/stride tuple: ``size`` along every axis, 1 along depth in planar blocks."""
    return (1, size, size) if planar else (size,) * dim


def conv(
    in_ch: int, out_ch: int, dim: int, kernel: int, planar: bool = False, padded: bool = True
) -> nn.Conv2d | nn.Conv3d:
    """A stride-1 convolution; ``padded`` keeps the spatial shape ('same')."""
    size = _extent(kernel, dim, planar)
    padding = tuple(k // 2 for k in size) if padded else 0
    made: nn.Conv2d | nn.Conv3d = _CONV[dim](in_ch, out_ch, kernel_size=size, padding=padding)
    return made


def conv_on_channels(
    conv: nn.Conv2d | nn.Conv3d, x: torch.Tensor, first: int, with_bias: bool
) -> torch.Tensor:
    """``conv``'s weights for input channels ``first`` to ``first + x.shape[1]`` applied to ``x``.

    A convolution of a concatenation is the sum of such partial convolutions (with the bias
    added once), so a caller can convolve the parts of a merge without storing it.
    """
    weight = conv.weight[:, first : first + x.shape[1]]
    bias = conv.bias if with_bias else None
    fn = F.conv3d if isinstance(conv, nn.Conv3d) else F.conv2d
    return fn(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def conv_transpose(in_ch: int, out_ch: int, dim: int, planar: bool = False) -> nn.Module:
    """The 2x up-convolution (kernel = stride = 2; 1 along depth in planar blocks)."""
    size = _extent(2, dim, planar)
    return _CONV_T[dim](in_ch, out_ch, kernel_size=size, stride=size)


def max_pool(dim: int, planar: bool = False) -> nn.Module:
    size = _extent(2, dim, planar)
    return _POOL[dim](kernel_size=size, stride=size, ceil_mode=True)


def normalization(kind: str, channels: int, dim: int) -> nn.Module:
    """Normalization layer for a (validated) ``UNetConfig.normalization`` value."""
    groups = group_count(kind)
    if groups is not None:
        return nn.GroupNorm(num_groups=groups, num_channels=channels)
    if kind == "batch":
        return _BATCH[dim](channels)
    if kind == "instance":
        return _INSTANCE[dim](channels)
    return nn.Identity()


def activation(kind: str | nn.Module) -> nn.Module:
    """A fresh activation module; module instances are copied so no parameters are shared."""
    if isinstance(kind, nn.Module):
        return copy.deepcopy(kind)
    makers: dict[str, Callable[[], nn.Module]] = {
        "relu": nn.ReLU,
        "leaky": lambda: nn.LeakyReLU(negative_slope=0.1),
        "prelu": nn.PReLU,
        "rrelu": nn.RReLU,
        "silu": nn.SiLU,
        "lin": nn.Identity,
    }
    return makers[kind]()
