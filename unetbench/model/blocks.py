"""The two building blocks of the U-Net: an encoder block and a decoder (up-and-merge) block.

Attribute names follow elektronn3's ``UNet`` so that state dicts are interchangeable.
Each convolution is followed by its normalization and then its activation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unetbench.model import layers
from unetbench.model.attention import GridAttention, NoAttention

__all__ = ["DownConv", "ResizeConv", "UpConv", "center_crop"]


def center_crop(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Crop the spatial axes of ``x`` symmetrically to the spatial shape of ``like``."""
    for axis in range(2, x.dim()):
        excess = x.size(axis) - like.size(axis)
        if excess > 0:
            x = x.narrow(axis, excess // 2, like.size(axis))
    return x


class DownConv(nn.Module):
    """Encoder block: two convolutions (+ activation, normalization), then optional pooling.

    ``forward`` returns ``(pooled, before_pool)``; the latter feeds the skip connection.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        pooling: bool,
        planar: bool,
        activation: str | nn.Module,
        normalization: str,
        full_norm: bool,
        dim: int,
        conv_mode: str,
    ) -> None:
        super().__init__()
        padded = conv_mode == "same"
        self.conv1 = layers.conv(in_channels, out_channels, dim, 3, planar, padded)
        self.conv2 = layers.conv(out_channels, out_channels, dim, 3, planar, padded)
        self.pool = layers.max_pool(dim, planar) if pooling else nn.Identity()
        self.act1 = layers.activation(activation)
        self.act2 = layers.activation(activation)
        norm0 = normalization if full_norm else "none"
        self.norm0 = layers.normalization(norm0, out_channels, dim)
        self.norm1 = layers.normalization(normalization, out_channels, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.act1(self.norm0(self.conv1(x)))
        y = self.act2(self.norm1(self.conv2(y)))
        return self.pool(y), y


class ResizeConv(nn.Module):
    """Up-sampling by interpolation followed by a (3- or 1-wide) padded convolution.

    Avoids the checkerboard artifacts of transposed convolutions
    (https://distill.pub/2016/deconv-checkerboard/).
    """

    def __init__(
        self, in_channels: int, out_channels: int, dim: int, planar: bool, mode: str, kernel: int
    ) -> None:
        super().__init__()
        self.scale = [1.0, 2.0, 2.0] if planar else [2.0] * dim
        if mode == "linear":
            mode = "trilinear" if dim == 3 else "bilinear"
        self.mode = mode
        self.conv = layers.conv(in_channels, out_channels, dim, kernel, planar, padded=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.scale, mode=self.mode))


def _upsampler(up_mode: str, in_ch: int, out_ch: int, dim: int, planar: bool) -> nn.Module:
    if up_mode == "transpose":
        return layers.conv_transpose(in_ch, out_ch, dim, planar)
    mode = up_mode.removeprefix("resizeconv_")
    kernel = 1 if mode.endswith("1") else 3
    return ResizeConv(in_ch, out_ch, dim, planar, mode.rstrip("1"), kernel)


class UpConv(nn.Module):
    """Decoder block: up-sample the coarser features, merge the skip features, two convolutions."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        merge_mode: str,
        up_mode: str,
        planar: bool,
        activation: str | nn.Module,
        normalization: str,
        full_norm: bool,
        attention: bool,
        dim: int,
        conv_mode: str,
    ) -> None:
        super().__init__()
        padded = conv_mode == "same"
        self.concat = merge_mode == "concat"
        self.crop = not padded
        self.upconv = _upsampler(up_mode, in_channels, out_channels, dim, planar)
        merged = 2 * out_channels if self.concat else out_channels
        self.conv1 = layers.conv(merged, out_channels, dim, 3, planar, padded)
        self.conv2 = layers.conv(out_channels, out_channels, dim, 3, planar, padded)
        self.act0 = layers.activation(activation)
        self.act1 = layers.activation(activation)
        self.act2 = layers.activation(activation)
        inner = normalization if full_norm else "none"
        self.norm0 = layers.normalization(inner, out_channels, dim)
        self.norm1 = layers.normalization(inner, out_channels, dim)
        self.norm2 = layers.normalization(normalization, out_channels, dim)
        self.attention: nn.Module = (
            GridAttention(out_channels, in_channels, dim) if attention else NoAttention()
        )

    def forward(self, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        up = self.act0(self.norm0(self.upconv(dec)))
        if self.crop:
            enc = center_crop(enc, up)
        enc = self.attention(enc, dec)
        merged = torch.cat((up, enc), 1) if self.concat else up + enc
        y = self.act1(self.norm1(self.conv1(merged)))
        return self.act2(self.norm2(self.conv2(y)))
