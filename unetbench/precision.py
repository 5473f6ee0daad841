"""Training precision: ``fp32``, ``bf16`` or ``fp16`` mixed precision.

Mixed precision is ``torch.autocast`` over the forward pass and the loss, with float32
parameters, gradients and optimizer state; ``fp16`` also scales the loss
(``torch.amp.GradScaler``) so small gradients do not underflow. Every number unetbench produces
(estimate, measured peak, FLOPs, step time, training in sweeps) is for one precision, named in
the record's ``precision`` column. This module imports torch only when a context is entered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from unetbench._errors import UsageError

__all__ = [
    "PRECISIONS",
    "autocast",
    "autocast_dtype_name",
    "check_precision",
    "cuda_rules_on_cpu",
    "grad_scaler",
    "parse_precisions",
]

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPE_NAME = {"fp32": "", "bf16": "bfloat16", "fp16": "float16"}


def check_precision(name: str) -> str:
    """Return ``name`` if it is a precision, else raise a UsageError listing the allowed ones."""
    if name not in PRECISIONS:
        raise UsageError(f"unknown precision {name!r}; choose from {', '.join(PRECISIONS)}")
    return name


def parse_precisions(value: str | Iterable[str]) -> tuple[str, ...]:
    """``"fp32,bf16"`` or a sequence of names -> a tuple of checked, distinct names."""
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    names = [n for n in names if n]
    if not names:
        raise UsageError(f"no precision given; choose from {', '.join(PRECISIONS)}")
    return tuple(dict.fromkeys(check_precision(n) for n in names))


def autocast_dtype_name(precision: str) -> str:
    """The autocast dtype of a precision as text (``""`` for fp32)."""
    return _DTYPE_NAME[check_precision(precision)]


@contextlib.contextmanager
def autocast(precision: str, device_type: str) -> Iterator[None]:
    """Autocast for ``precision`` on ``device_type`` ("cpu" or "cuda"); nothing for fp32."""
    check_precision(precision)
    if precision == "fp32":
        yield
        return
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device_type=device_type, dtype=dtype):
        yield


def grad_scaler(precision: str, device_type: str) -> Any:
    """A loss scaler for ``fp16`` training (None otherwise)."""
    if check_precision(precision) != "fp16":
        return None
    import torch

    return torch.amp.GradScaler(device_type)


# Functions whose CPU autocast rule differs from CUDA's, by name as torch's functional API
# dispatches them: CPU autocast runs 3D pooling in float32, CUDA in the input's dtype; CUDA
# runs group and layer norm in float32, CPU in the lower precision.
_CUDA_IN_INPUT_DTYPE = frozenset(
    {"max_pool3d", "_max_pool3d", "max_pool3d_with_indices", "avg_pool3d",
     "adaptive_avg_pool3d", "adaptive_max_pool3d"}
)  # fmt: skip
_CUDA_IN_FLOAT32 = frozenset({"group_norm", "layer_norm"})


@contextlib.contextmanager
def cuda_rules_on_cpu() -> Iterator[None]:
    """Make CPU autocast follow CUDA's rules for the operations a U-Net uses.

    For sizing a CUDA step on a machine without CUDA (fake tensors on the CPU): enter it
    around the whole step, backward included, so that checkpointed recomputation follows the
    same rules. Outside an enabled CPU autocast it changes nothing.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    class _CudaRules(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            if not torch.is_autocast_enabled("cpu") or (
                name not in _CUDA_IN_INPUT_DTYPE and name not in _CUDA_IN_FLOAT32
            ):
                return func(*args, **kwargs)
            if name in _CUDA_IN_FLOAT32:
                args = tuple(_to_float32(a) for a in args)
                kwargs = {k: _to_float32(v) for k, v in kwargs.items()}
            with torch.autocast("cpu", enabled=False):
                return func(*args, **kwargs)

    from unetbench.model.checkpoint import recompute_also_under

    with _CudaRules(), recompute_also_under(_CudaRules):
        yield


def _to_float32(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    return value
