"""The training and inference steps every measurement runs, and the models they run on.

One definition for the real measurement, the fake estimate and the timing, so that the three
agree by construction: zero gradients (set to None), forward under a checkpointing policy,
the training loss (:func:`unetbench.model.training.segmentation_loss`: cross-entropy, with or
without the soft Dice loss), backward; every parameter must then hold a gradient.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from unetbench._errors import UsageError

if TYPE_CHECKING:
    from unetbench.config import UNetConfig
    from unetbench.model.policies import CheckpointPolicy

__all__ = [
    "MissingGradientError",
    "build_model",
    "config_of",
    "fake_mode",
    "make_batch",
    "train_step",
]


class MissingGradientError(RuntimeError):
    """A training step left some parameters without a gradient (a trap, not a measurement)."""


def config_of(config_or_model: Any) -> UNetConfig:
    """Return the UNetConfig of a config or of a model built from one."""
    from unetbench.config import UNetConfig

    if isinstance(config_or_model, UNetConfig):
        return config_or_model
    cfg = getattr(config_or_model, "config", None)
    if isinstance(cfg, UNetConfig):
        return cfg
    raise UsageError(
        f"expected a UNetConfig or a unetbench UNet (with .config), got "
        f"{type(config_or_model).__name__}"
    )


def build_model(config: UNetConfig, device: torch.device | str | None = None) -> nn.Module:
    """Build the U-Net of ``config``, on ``device`` if given (fake tensors under a fake mode)."""
    from unetbench.model import UNet

    model: nn.Module = UNet.from_config(config)
    return model if device is None else model.to(device)


@contextlib.contextmanager
def fake_mode() -> Iterator[None]:
    """Run the block with fake tensors: shapes and dtypes propagate, nothing is allocated."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=False):
        yield


def make_batch(
    config: UNetConfig,
    full_shape: tuple[int, ...],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random input of ``full_shape`` (N, C, *spatial) and a matching segmentation target.

    The target holds class indices for ``out_channels >= 2`` (cross-entropy) and a float mask
    for one output channel (binary cross-entropy).
    """
    n, spatial = full_shape[0], tuple(full_shape[2:])
    out_spatial = tuple(config.output_shape(spatial))
    x = torch.randn(full_shape, device=device, dtype=dtype)
    if config.out_channels >= 2:
        target = torch.randint(0, config.out_channels, (n, *out_spatial), device=device)
    else:
        target = torch.rand((n, 1, *out_spatial), device=device, dtype=dtype).round()
    return x, target


def train_step(
    model: nn.Module,
    policy: CheckpointPolicy,
    x: torch.Tensor,
    target: torch.Tensor,
    optimizer: torch.optim.Optimizer | None = None,
    precision: str = "fp32",
    scaler: Any = None,
    dice_loss: bool = False,
) -> None:
    """One training step: forward (under ``policy``) and loss under ``precision``'s autocast,
    backward, optional optimizer step (through ``scaler`` for fp16, if given). The loss is
    training's: cross-entropy, plus the soft Dice loss if ``dice_loss``.

    Raises:
        MissingGradientError: Some parameter got no gradient, so the step did not train the
            whole network and its memory would be understated.
    """
    from unetbench.model.training import segmentation_loss
    from unetbench.precision import autocast

    for p in model.parameters():
        p.grad = None
    with autocast(precision, x.device.type):
        loss = segmentation_loss(policy.forward(model, x), target, dice_loss)
    (loss if scaler is None else scaler.scale(loss)).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise MissingGradientError(
            f"{len(missing)} parameters got no gradient under {policy.name!r}: {shown}"
        )
    if optimizer is not None:
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of all tensors held in an optimizer's state (e.g. Adam's two moments)."""
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


def resolve_shape(
    config: UNetConfig, input_shape: tuple[int, ...] | list[int], batch_size: int = 1
) -> tuple[int, ...]:
    """Return the full input shape (N, C, *spatial) of a spatial or full ``input_shape``.

    Raises:
        UsageError: The batch size is not a positive integer, or a full shape disagrees
            with ``batch_size`` or the config's ``in_channels``.
        ConfigError: The spatial shape is not legal for the config (from the config's
            own check, which names the nearest legal sizes).
    """
    shape = tuple(input_shape)
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise UsageError(f"input shape must be integers, got {shape!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise UsageError(f"batch size must be a positive integer, got {batch_size!r}")
    if len(shape) == config.dim + 2:
        if shape[1] != config.in_channels:
            raise UsageError(
                f"input shape {shape} has {shape[1]} channels but in_channels={config.in_channels}"
            )
        if batch_size not in (1, shape[0]):
            raise UsageError(f"input shape {shape} disagrees with batch_size={batch_size}")
        batch_size, shape = shape[0], shape[2:]
    elif len(shape) != config.dim:
        raise UsageError(
            f"input shape {shape} must have {config.dim} spatial sizes (dim={config.dim}), "
            f"optionally preceded by batch and channels"
        )
    config.check_input_shape(shape)
    return (batch_size, config.in_channels, *shape)
