"""What one training step is, defined once for training, the profile and the estimate.

The loss (cross-entropy, binary cross-entropy for one output channel, optionally plus the soft
Dice loss), the deterministic-algorithm flags training runs under, and the memory format of
the model and its input. ``unetbench.train`` trains with these; the profiler measures and the
fake-tensor estimate sizes the same step, so a study with ``dice_loss = true`` is budgeted for
the step it trains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F

from unetbench._errors import UsageError

__all__ = [
    "MEMORY_FORMATS",
    "check_memory_format",
    "deterministic_training",
    "parse_memory_formats",
    "segmentation_loss",
    "soft_dice_loss",
    "to_memory_format",
    "torch_memory_format",
]

#: Layouts of the model's weights and input: torch's default, or channels last (NHWC/NDHWC).
MEMORY_FORMATS = ("contiguous", "channels_last")


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice of the foreground classes (softmax probabilities), pooled over the batch."""
    probs = torch.softmax(logits, dim=1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1)[:, 1:].to(probs.dtype)
    dims = (0, *range(2, probs.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, dice_loss: bool = False
) -> torch.Tensor:
    """The training loss: cross-entropy for class indices (plus :func:`soft_dice_loss` if
    ``dice_loss``), binary cross-entropy for a float mask of one output channel.

    Raises:
        UsageError: ``dice_loss`` with a one-channel output (the soft Dice here is over the
            softmax's foreground classes, which one channel does not have).
    """
    if target.dtype != torch.int64:
        if dice_loss:
            raise UsageError("dice_loss needs out_channels >= 2 (softmax classes), got 1")
        return F.binary_cross_entropy_with_logits(logits, target)
    loss = F.cross_entropy(logits, target)
    if dice_loss:
        loss = loss + soft_dice_loss(logits, target)
    return loss


@contextlib.contextmanager
def deterministic_training() -> Iterator[None]:
    """Deterministic algorithms (warning where an operation has none), as training runs:
    on CUDA this chooses other kernels (and so other workspaces) than the default."""
    before = torch.are_deterministic_algorithms_enabled()
    warn_before = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_before)


def check_memory_format(name: str) -> str:
    """Return ``name`` if it is a memory format, else raise a UsageError naming the allowed."""
    if name not in MEMORY_FORMATS:
        raise UsageError(f"unknown memory format {name!r}; choose from {', '.join(MEMORY_FORMATS)}")
    return name


def parse_memory_formats(value: str | Iterable[str]) -> tuple[str, ...]:
    """``"contiguous,channels_last"`` or a sequence of names -> checked, distinct names."""
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    names = [n for n in names if n]
    if not names:
        raise UsageError(f"no memory format given; choose from {', '.join(MEMORY_FORMATS)}")
    return tuple(dict.fromkeys(check_memory_format(n) for n in names))


def to_memory_format(model: torch.nn.Module, name: str, dim: int) -> torch.nn.Module:
    """Lay out ``model``'s convolution weights in ``name`` (in place; returns ``model``).

    What ``Module.to(memory_format=...)`` does, through ``.data`` so that it also works on a
    fake-tensor model (whose parameters cannot be swapped).
    """
    fmt = torch_memory_format(name, dim)
    for p in model.parameters():
        if p.dim() == dim + 2:
            p.data = p.data.contiguous(memory_format=fmt)
    return model


def torch_memory_format(name: str, dim: int) -> torch.memory_format:
    """torch's memory format for ``name`` on a ``dim``-D network (channels last is
    ``channels_last_3d`` for 3D)."""
    if check_memory_format(name) == "contiguous":
        return torch.contiguous_format
    return torch.channels_last_3d if dim == 3 else torch.channels_last
