"""Shape arithmetic of a U-Net config, axis by axis, without building a model.

Along one spatial axis, every block runs two 3-wide convolutions (1-wide along depth in planar
blocks) and, except the last block, a 2x max-pooling (1x along depth in planar blocks). The
decoder mirrors this. A size is *legal* when the network runs and tiles seamlessly: every pooled
size is even, every skip connection is cropped symmetrically ('valid' mode) and nothing shrinks
to zero. In 'valid' mode a non-planar axis shrinks by 6 * 2**n_blocks - 8.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from unetbench._errors import ConfigError

if TYPE_CHECKING:
    from unetbench.config import UNetConfig

__all__ = ["fmt_shape", "legal_sizes", "output_shape", "output_size"]

_AXIS_NAMES = {3: ("D", "H", "W"), 2: ("H", "W")}


def fmt_shape(shape: Iterable[int]) -> str:
    """A shape as records and messages write it: ``(16, 48, 48)`` -> ``"16x48x48"``."""
    return "x".join(str(s) for s in shape)


class _IllegalSize(Exception):
    """One axis cannot take the given size; the message says why."""


def _planar_flags(cfg: UNetConfig, axis: int) -> list[bool]:
    """Whether each block leaves ``axis`` alone (planar blocks skip the depth axis)."""
    is_depth = cfg.dim == 3 and axis == 0
    return [is_depth and i in cfg.planar_blocks for i in range(cfg.n_blocks)]


def output_size(cfg: UNetConfig, axis: int, size: int) -> int:
    """Output size along ``axis`` for input ``size``; raises _IllegalSize if not legal."""
    planar = _planar_flags(cfg, axis)
    shrink = 4 if cfg.conv_mode == "valid" else 0  # two unpadded 3-wide convolutions
    skips: list[int] = []
    s = size
    for level in range(cfg.n_blocks):
        s -= 0 if planar[level] else shrink
        if s < 1:
            raise _IllegalSize(f"features shrink to {s} in encoder block {level}")
        skips.append(s)
        if level < cfg.n_blocks - 1 and not planar[level]:
            if s % 2:
                raise _IllegalSize(f"size {s} before the pooling of block {level} is odd")
            s //= 2
    for level in range(cfg.n_blocks - 2, -1, -1):
        s *= 1 if planar[level] else 2
        if cfg.attention and s < 2:
            # The gate's theta convolution is 2 wide along every axis, planar or not.
            raise _IllegalSize(f"attention gate of block {level} needs size >= 2, got {s}")
        excess = skips[level] - s
        if excess < 0 or excess % 2:
            raise _IllegalSize(
                f"skip features of block {level} ({skips[level]}) cannot be centre-cropped to "
                f"the decoder's {s}"
            )
        s -= 0 if planar[level] else shrink
        if s < 1:
            raise _IllegalSize(f"features shrink to {s} in the decoder block of level {level}")
    return s


def _is_legal(cfg: UNetConfig, axis: int, size: int) -> bool:
    try:
        output_size(cfg, axis, size)
    except _IllegalSize:
        return False
    return True


def _nearest_legal(cfg: UNetConfig, axis: int, size: int) -> list[int]:
    period = 2**cfg.n_blocks
    window = range(max(1, size - 4 * period), size + 4 * period + 100)
    legal = [s for s in window if _is_legal(cfg, axis, s)]
    below = [s for s in legal if s < size]
    above = [s for s in legal if s > size]
    return ([below[-1]] if below else []) + ([above[0]] if above else [])


def _normalise_axis(cfg: UNetConfig, axis: int) -> int:
    if not -cfg.dim <= axis < cfg.dim:
        raise ConfigError(
            f"axis={axis} is not allowed for dim={cfg.dim}; allowed: 0..{cfg.dim - 1}"
        )
    return axis % cfg.dim


def output_shape(cfg: UNetConfig, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Spatial output shape; ConfigError naming each illegal axis and its nearest legal sizes."""
    names = _AXIS_NAMES[cfg.dim]
    shape = tuple(input_shape)
    if len(shape) != cfg.dim or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        raise ConfigError(
            f"input shape {shape} is not allowed for dim={cfg.dim}; allowed: {cfg.dim} positive "
            f"integer spatial sizes ({', '.join(names)}), without batch and channel axes"
        )
    out: list[int] = []
    problems: list[str] = []
    for axis, size in enumerate(shape):
        try:
            out.append(output_size(cfg, axis, size))
        except _IllegalSize as why:
            nearest = " or ".join(str(s) for s in _nearest_legal(cfg, axis, size)) or "none"
            problems.append(f"{names[axis]}={size} ({why}; nearest legal: {nearest})")
    if problems:
        raise ConfigError(
            f"input shape {shape} is not legal for n_blocks={cfg.n_blocks}, "
            f"conv_mode={cfg.conv_mode!r}, planar_blocks={cfg.planar_blocks}: "
            + "; ".join(problems)
        )
    return tuple(out)


def legal_sizes(cfg: UNetConfig, axis_range: Iterable[int], axis: int = -1) -> list[int]:
    """The sizes in ``axis_range`` that are legal along ``axis``."""
    ax = _normalise_axis(cfg, axis)
    return [s for s in axis_range if s > 0 and _is_legal(cfg, ax, s)]
