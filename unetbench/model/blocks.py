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

    # The block's public pieces: ``forward`` is made of them, and so is every checkpointing
    # policy (``unetbench.model.policies``), grouping them into checkpoints in its own way.
    # A unit applies its norm and activation inline, not through ``norm_act*``, so that the
    # convolution's output is freed before the activation runs: under no_grad (a checkpoint's
    # first pass) when each intermediate is freed sets the peak.

    def unit1(self, x: torch.Tensor) -> torch.Tensor:
        """First convolution, norm and activation."""
        return self.act1(self.norm0(self.conv1(x)))

    def unit2(self, t: torch.Tensor) -> torch.Tensor:
        """Second convolution, norm and activation: the skip features."""
        return self.act2(self.norm1(self.conv2(t)))

    def convs(self, x: torch.Tensor) -> torch.Tensor:
        """Both units: the block's output before pooling (the skip features)."""
        return self.unit2(self.unit1(x))

    def norm_act1(self, t: torch.Tensor) -> torch.Tensor:
        """``unit1`` after its convolution (for a policy that keeps the convolution's output)."""
        return self.act1(self.norm0(t))

    def norm_act2(self, t: torch.Tensor) -> torch.Tensor:
        """``unit2`` after its convolution: the block's last norm and activation."""
        return self.act2(self.norm1(t))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.convs(x)
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
        self.gated = attention
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

    # The block's public pieces, in the order ``forward`` applies them; the checkpointing
    # policies (``unetbench.model.policies``) group them into checkpoints. As in ``DownConv``,
    # the units apply their norm and activation inline, and ``forward`` keeps its
    # intermediates bound to the end: when each is freed sets the peak of a checkpoint's first
    # (no_grad) pass.

    def upsample(self, dec: torch.Tensor) -> torch.Tensor:
        """The coarser decoder features ``dec`` up-sampled, normalized and activated."""
        return self.act0(self.norm0(self.upconv(dec)))

    def norm_act0(self, t: torch.Tensor) -> torch.Tensor:
        """``upsample`` after ``upconv`` (for a policy that keeps the up-sampling's output)."""
        return self.act0(self.norm0(t))

    def skip_features(self, enc: torch.Tensor, dec: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """The encoder's skip features as merged: cropped to ``up`` ('valid'), then gated."""
        if self.crop:
            enc = center_crop(enc, up)
        return self.attention(enc, dec)

    def merge(self, up: torch.Tensor, enc: torch.Tensor) -> torch.Tensor:
        """The up-sampled and the skip features, concatenated or added."""
        return torch.cat((up, enc), 1) if self.concat else up + enc

    def unit1(self, merged: torch.Tensor) -> torch.Tensor:
        """First convolution (of the merged features), norm and activation."""
        return self.act1(self.norm1(self.conv1(merged)))

    def merge_conv1(self, up: torch.Tensor, enc: torch.Tensor) -> torch.Tensor:
        """The first convolution of the merged features (before its norm)."""
        return self.conv1(self.merge(up, enc))

    @torch.jit.unused
    def conv1_of_up(self, up: torch.Tensor) -> torch.Tensor:
        """The up-sampled part of ``merge_conv1`` (bias included), for ``merge_mode='concat'``."""
        return layers.conv_on_channels(self.conv1, up, 0, with_bias=True)

    @torch.jit.unused
    def conv1_of_skip(self, enc: torch.Tensor) -> torch.Tensor:
        """The skip part of ``merge_conv1`` (no bias), for ``merge_mode='concat'``."""
        # The up-sampled part comes first and has as many channels as the convolution writes.
        first = self.conv1.out_channels
        return layers.conv_on_channels(self.conv1, enc, first, with_bias=False)

    @torch.jit.unused
    def split_merge_conv1(self, up: torch.Tensor, enc: torch.Tensor) -> torch.Tensor:
        """``merge_conv1`` without storing the concatenation: each part convolved on its own.

        Equal up to rounding; with ``merge_mode='add'`` it is ``merge_conv1`` itself.
        """
        if not self.concat:
            return self.merge_conv1(up, enc)
        return self.conv1_of_up(up) + self.conv1_of_skip(enc)

    @torch.jit.unused
    def split_merge_unit(
        self, enc: torch.Tensor, dec: torch.Tensor, up: torch.Tensor
    ) -> torch.Tensor:
        """Skip features merged with ``up`` and ``unit1`` by ``split_merge_conv1``: the
        concatenation is never stored."""
        return self.act1(self.norm1(self.split_merge_conv1(up, self.skip_features(enc, dec, up))))

    def norm_act1(self, t: torch.Tensor) -> torch.Tensor:
        """``unit1`` after its convolution (for a policy that keeps the convolution's output)."""
        return self.act1(self.norm1(t))

    def unit2(self, t: torch.Tensor) -> torch.Tensor:
        """The tail: second convolution, norm and activation."""
        return self.act2(self.norm2(self.conv2(t)))

    def norm_act2(self, t: torch.Tensor) -> torch.Tensor:
        """``unit2`` after its convolution: the block's last norm and activation."""
        return self.act2(self.norm2(t))

    def forward(self, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        up = self.upsample(dec)
        enc = self.skip_features(enc, dec, up)
        merged = self.merge(up, enc)
        y = self.unit1(merged)
        return self.unit2(y)
