"""Grid attention gate for skip connections (Oktay et al., arXiv 1804.03999).

The gate weights the encoder's skip features ``x`` by a sigmoid map computed from ``x`` (at half
resolution) and the coarser decoder features ``g``, so that the decoder attends to the regions
the deeper layers found relevant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unetbench.model.layers import normalization

__all__ = ["GridAttention", "NoAttention"]


class NoAttention(nn.Module):
    """Passes the skip features through unchanged (``attention=False``)."""

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x


class GridAttention(nn.Module):
    """Additive attention gate.

    Args:
        in_channels: channels of the skip features ``x``.
        gating_channels: channels of the gating decoder features ``g``.
        dim: spatial dimensions (2 or 3).
    """

    def __init__(self, in_channels: int, gating_channels: int, dim: int = 3) -> None:
        super().__init__()
        inter = max(in_channels // 2, 1)
        conv = nn.Conv3d if dim == 3 else nn.Conv2d
        self.mode = "trilinear" if dim == 3 else "bilinear"
        # Output projection of the gated features (always batch-normalized, as in the paper).
        self.w = nn.Sequential(
            conv(in_channels, in_channels, 1), normalization("batch", in_channels, dim)
        )
        self.theta = conv(in_channels, inter, kernel_size=2, stride=2, bias=False)
        self.phi = conv(gating_channels, inter, kernel_size=1)
        self.psi = conv(inter, 1, kernel_size=1)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        theta_x = self.theta(x)
        phi_g = F.interpolate(self.phi(g), size=theta_x.shape[2:], mode=self.mode)
        gate = torch.sigmoid(self.psi(F.relu(theta_x + phi_g)))
        gate = F.interpolate(gate, size=x.shape[2:], mode=self.mode)
        return self.w(gate * x)
