"""`UNetConfig`: the single, validated description of a U-Net architecture.

A config fails when it is built, with a :class:`~unetbench.ConfigError` that names the field, the
value and what is allowed, so that no bad value ever reaches a tensor.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from unetbench import shapes
from unetbench._errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "ACTIVATIONS",
    "CONV_MODES",
    "MERGE_MODES",
    "NORMALIZATIONS",
    "UP_MODES",
    "UNetConfig",
]

UP_MODES = (
    "transpose",
    "resizeconv_nearest",
    "resizeconv_linear",
    "resizeconv_nearest1",
    "resizeconv_linear1",
)
MERGE_MODES = ("concat", "add")
ACTIVATIONS = ("relu", "leaky", "prelu", "rrelu", "silu", "lin")
NORMALIZATIONS = ("batch", "group", "group<G>", "instance", "none")
CONV_MODES = ("same", "valid")
_GROUP_RE = re.compile(r"group(\d*)")


def _fail(field: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(f"UNetConfig.{field}={value!r} is not allowed; allowed: {allowed}")


def _check_int(field: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(field, value, f"an integer >= {minimum}")


def _check_choice(field: str, value: object, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise _fail(field, value, ", ".join(repr(c) for c in choices))


def _check_bool(field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise _fail(field, value, "True or False")


def group_count(normalization: str) -> int | None:
    """Number of groups of a 'group'/'group<G>' normalization, or None for other kinds."""
    match = _GROUP_RE.fullmatch(normalization)
    if match is None:
        return None
    return int(match.group(1)) if match.group(1) else 8


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Architecture of a U-Net; fields, defaults and meaning as elektronn3's ``UNet``."""

    in_channels: int = 1  # channels of the input image
    out_channels: int = 2  # classes of the segmentation output
    n_blocks: int = 3  # encoder blocks; n_blocks - 1 poolings and decoder blocks
    start_filts: int = 32  # filters of the first block, doubled in each deeper block
    up_mode: str = "transpose"  # decoder up-sampling, one of UP_MODES
    merge_mode: str = "concat"  # how skip features join the decoder: 'concat' or 'add'
    planar_blocks: tuple[int, ...] = ()  # blocks (and their decoder twins) that ignore depth
    batch_norm: str = "unset"  # deprecated in elektronn3; only 'unset' is accepted
    attention: bool = False  # grid attention gates on the skip connections (Oktay et al.)
    activation: str | nn.Module = "relu"  # one of ACTIVATIONS or an nn.Module instance
    normalization: str = "batch"  # 'batch', 'group', 'group<G>', 'instance' or 'none'
    full_norm: bool = True  # normalize after every conv (else only the last of each block)
    dim: int = 3  # spatial dimensions: 3 (N, C, D, H, W) or 2 (N, C, H, W)
    conv_mode: str = "same"  # 'same' (zero-padded) or 'valid' (unpadded) convolutions

    def __post_init__(self) -> None:
        if self.normalization is None:
            object.__setattr__(self, "normalization", "none")
        planar = self.planar_blocks
        if isinstance(planar, Iterable) and not isinstance(planar, (str, bytes)):
            planar = tuple(planar)
            if all(isinstance(i, int) and not isinstance(i, bool) for i in planar):
                planar = tuple(sorted(set(planar)))
            object.__setattr__(self, "planar_blocks", planar)
        self._validate()

    def _validate(self) -> None:
        _check_int("in_channels", self.in_channels, 1)
        _check_int("out_channels", self.out_channels, 1)
        _check_int("n_blocks", self.n_blocks, 1)
        _check_int("start_filts", self.start_filts, 1)
        _check_choice("up_mode", self.up_mode, UP_MODES)
        _check_choice("merge_mode", self.merge_mode, MERGE_MODES)
        if self.merge_mode == "add" and self.up_mode != "transpose":
            raise ConfigError(
                f"UNetConfig.merge_mode='add' cannot be combined with up_mode={self.up_mode!r}; "
                "allowed: merge_mode='add' only with up_mode='transpose', or merge_mode='concat'"
            )
        self._validate_planar()
        if self.batch_norm != "unset":
            raise ConfigError(
                f"UNetConfig.batch_norm={self.batch_norm!r} is not allowed; allowed: 'unset' "
                "(the option was replaced by `normalization`, e.g. normalization='batch')"
            )
        _check_bool("attention", self.attention)
        if not _is_module(self.activation):
            _check_choice("activation", self.activation, ACTIVATIONS)
        self._validate_normalization()
        _check_bool("full_norm", self.full_norm)
        if isinstance(self.dim, bool) or self.dim not in (2, 3):
            raise _fail("dim", self.dim, "2 or 3")
        _check_choice("conv_mode", self.conv_mode, CONV_MODES)
        if self.attention and self.start_filts < 2:
            raise _fail("start_filts", self.start_filts, "an integer >= 2 when attention=True")

    def _validate_planar(self) -> None:
        planar = self.planar_blocks
        allowed = f"a sequence of distinct block indices in 0..{self.n_blocks - 1}"
        if not isinstance(planar, tuple) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in planar
        ):
            raise _fail("planar_blocks", planar, allowed)
        bad = [i for i in planar if not 0 <= i < self.n_blocks]
        if bad:
            raise _fail("planar_blocks", planar, allowed + f" (n_blocks={self.n_blocks})")
        if planar and self.dim == 2:
            raise _fail("planar_blocks", planar, "() when dim=2 (planar blocks need a depth axis)")

    def _validate_normalization(self) -> None:
        norm = self.normalization
        allowed = "'batch', 'group' (8 groups), 'group<G>' (e.g. 'group16'), 'instance', 'none'"
        if not isinstance(norm, str):
            raise _fail("normalization", norm, allowed)
        groups = group_count(norm)
        if groups is None:
            if norm not in ("batch", "instance", "none"):
                raise _fail("normalization", norm, allowed)
            return
        if groups < 1:
            raise _fail("normalization", norm, allowed + " with G >= 1")
        if self.start_filts % groups:
            # Every block has start_filts * 2**i channels: divisible iff start_filts is.
            raise ConfigError(
                f"UNetConfig.normalization={norm!r} needs channel counts divisible by {groups}, "
                f"but start_filts={self.start_filts} is not; allowed: a start_filts that is a "
                f"multiple of {groups}, or another group count that divides {self.start_filts}"
            )

    # -- serialisation -------------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the config fields, in declaration order (also record column names)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able dict of the fields (planar_blocks as a list)."""
        if _is_module(self.activation):
            raise ConfigError(
                f"UNetConfig.activation={self.activation!r} is an nn.Module instance and cannot be "
                f"serialised; allowed for serialisation: one of {', '.join(ACTIVATIONS)}"
            )
        data = {name: getattr(self, name) for name in self.field_names()}
        data["planar_blocks"] = list(self.planar_blocks)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UNetConfig:
        """Build a config from a mapping; unknown keys are rejected with the allowed names."""
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise ConfigError(
                f"unknown UNetConfig field(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(cls.field_names())}"
            )
        return cls(**dict(data))

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> UNetConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"UNetConfig JSON is malformed: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"UNetConfig JSON must be an object, got {type(data).__name__}")
        return cls.from_dict(data)

    # -- input shapes --------------------------------------------------------------------------

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial output shape for a spatial input shape ((D, H, W) or (H, W))."""
        return shapes.output_shape(self, input_shape)

    def check_input_shape(self, input_shape: Sequence[int]) -> None:
        """Raise ConfigError, suggesting the nearest legal sizes, if the shape is illegal."""
        shapes.output_shape(self, input_shape)

    def valid_input_sizes(self, axis_range: Iterable[int], axis: int = -1) -> list[int]:
        """Sizes in ``axis_range`` that are legal along ``axis`` (tiling-consistent in 'valid').

        In 'valid' mode these are the sizes whose output equals the matching region of the
        output of a larger input, so tiled inference gives seamless results.
        """
        return shapes.legal_sizes(self, axis_range, axis)


def _is_module(value: object) -> bool:
    """Whether ``value`` is a torch module, without importing torch (a module instance can only
    exist once torch is imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.nn.Module)
