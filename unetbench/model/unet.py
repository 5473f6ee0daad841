"""The parametric U-Net, built from a :class:`~unetbench.UNetConfig`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from unetbench.config import UNetConfig
from unetbench.model.blocks import DownConv, UpConv
from unetbench.model.checkpoint import checkpoint

__all__ = ["DownFn", "UNet", "UpFn"]

# How ``UNet.forward_with`` runs one block: ``down(block, x) -> (pooled, skip)`` and
# ``up(block, skip, x) -> x``.
DownFn = Callable[[DownConv, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
UpFn = Callable[[UpConv, torch.Tensor, torch.Tensor], torch.Tensor]


class UNet(nn.Module):
    """U-Net for 2D/3D segmentation with elektronn3's options and state-dict layout.

    ``UNet(**kwargs)`` takes the same keyword arguments (and defaults) as ``UNetConfig`` and
    elektronn3's ``UNet``; ``UNet.from_config(cfg)`` builds from a config. A checkpoint saved
    from an elektronn3 ``UNet`` loads unchanged with ``load_state_dict``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        n_blocks: int = 3,
        start_filts: int = 32,
        up_mode: str = "transpose",
        merge_mode: str = "concat",
        planar_blocks: Any = (),
        batch_norm: str = "unset",
        attention: bool = False,
        activation: str | nn.Module = "relu",
        normalization: str | None = "batch",
        full_norm: bool = True,
        dim: int = 3,
        conv_mode: str = "same",
    ) -> None:
        super().__init__()
        cfg = UNetConfig(
            in_channels=in_channels,
            out_channels=out_channels,
            n_blocks=n_blocks,
            start_filts=start_filts,
            up_mode=up_mode,
            merge_mode=merge_mode,
            planar_blocks=planar_blocks,
            batch_norm=batch_norm,
            attention=attention,
            activation=activation,
            normalization=normalization,  # type: ignore[arg-type]  # None means 'none'
            full_norm=full_norm,
            dim=dim,
            conv_mode=conv_mode,
        )
        self._config = cfg
        common: dict[str, Any] = dict(
            activation=cfg.activation,
            normalization=cfg.normalization,
            full_norm=cfg.full_norm,
            dim=cfg.dim,
            conv_mode=cfg.conv_mode,
        )
        self.down_convs = nn.ModuleList()
        channels = cfg.in_channels
        for level in range(cfg.n_blocks):
            out = cfg.start_filts * 2**level
            self.down_convs.append(
                DownConv(
                    channels,
                    out,
                    pooling=level < cfg.n_blocks - 1,
                    planar=level in cfg.planar_blocks,
                    **common,
                )
            )
            channels = out
        self.up_convs = nn.ModuleList()
        for level in range(cfg.n_blocks - 2, -1, -1):
            out = channels // 2
            self.up_convs.append(
                UpConv(
                    channels,
                    out,
                    merge_mode=cfg.merge_mode,
                    up_mode=cfg.up_mode,
                    planar=level in cfg.planar_blocks,
                    attention=cfg.attention,
                    **common,
                )
            )
            channels = out
        final = nn.Conv3d if cfg.dim == 3 else nn.Conv2d
        self.conv_final = final(channels, cfg.out_channels, kernel_size=1)
        self.apply(self.weight_init)

    @classmethod
    def from_config(cls, config: UNetConfig) -> UNet:
        """Build the model a config describes."""
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        return cls(**fields)

    @property
    @torch.jit.unused
    def config(self) -> UNetConfig:
        """The validated architecture of this model."""
        return self._config

    @staticmethod
    def weight_init(m: nn.Module) -> None:
        """Xavier-normal weights and zero biases for every (transposed) convolution."""
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The loop of ``forward_with``, written out because TorchScript cannot pass functions.
        skips: list[torch.Tensor] = []
        for block in self.down_convs:
            x, before_pool = block(x)
            skips.append(before_pool)
        for i, block in enumerate(self.up_convs):
            x = block(skips[-(i + 2)], x)
        return self.conv_final(x)

    @property
    @torch.jit.unused
    def encoder_blocks(self) -> list[DownConv]:
        """The encoder blocks, full resolution first."""
        return cast("list[DownConv]", list(self.down_convs))

    @property
    @torch.jit.unused
    def decoder_blocks(self) -> list[UpConv]:
        """The decoder blocks, lowest resolution first (full resolution last)."""
        return cast("list[UpConv]", list(self.up_convs))

    @torch.jit.unused
    def forward_with(self, x: torch.Tensor, down: DownFn, up: UpFn) -> torch.Tensor:
        """``forward`` with each block run by ``down`` or ``up`` (e.g. under checkpointing)."""
        skips: list[torch.Tensor] = []
        for block in self.encoder_blocks:
            x, before_pool = down(block, x)
            skips.append(before_pool)
        for i, dec_block in enumerate(self.decoder_blocks):
            x = up(dec_block, skips[-(i + 2)], x)
        return self.conv_final(x)

    @torch.jit.unused
    def forward_gradcp(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` with per-block gradient checkpointing.

        Keeps only block inputs and outputs during the forward pass and recomputes the rest in
        backward. Gradients equal those of ``forward`` for any input (also one that does not
        require grad), and BatchNorm statistics are updated once per step.
        """
        return self.forward_with(x, checkpoint, checkpoint)
