"""Argument handling shared by ``unetbench profile`` and ``unetbench plan``.

Turns ``--config``/``--set``/``--shape``/``--checkpointing``/``--out`` into validated values
(raising ConfigError/UsageError with one line naming the bad value) and renders records as a
readable table with units.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unetbench._errors import ConfigError, UsageError

if TYPE_CHECKING:  # pandas is imported when a table is written, not when the parser is built
    import pandas as pd

__all__ = [
    "add_config_arguments",
    "check_out",
    "config_from_args",
    "parse_list",
    "parse_shape",
    "readable",
    "validate_profile_args",
    "write_frame",
]

OUT_SUFFIXES = (".csv", ".parquet", ".json")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE.json`` and repeatable ``--set key=value``."""
    parser.add_argument("--config", metavar="FILE.json", help="UNetConfig as a JSON object")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a config field, e.g. --set n_blocks=4 --set planar_blocks=0,1 (repeatable)",
    )


def _value(key: str, text: str) -> Any:
    """Read a --set value: JSON (numbers, true/false, lists), a comma list of ints, or text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if key == "planar_blocks":
        try:
            return [int(p) for p in text.split(",") if p.strip()]
        except ValueError:
            raise UsageError(f"--set planar_blocks={text!r}: expected e.g. 0,1 or [0, 1]") from None
    return text


def config_from_args(args: argparse.Namespace) -> Any:
    """Build the UNetConfig of ``--config`` and ``--set`` (``--set`` wins)."""
    from unetbench.config import UNetConfig

    data: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read --config {path}: {exc.strerror or exc}") from None
        data = UNetConfig.from_json(text).to_dict()
    for item in args.overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        data[key] = _value(key, text)
    return UNetConfig.from_dict(data)


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """Read ``"32,64,64"`` (or ``"32x64x64"``) as a tuple of positive ints."""
    if text is None:
        return None
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(
            f"--shape {text!r}: expected sizes like 32,64,64 (or 64,64 in 2D)"
        ) from None
    if any(s <= 0 for s in shape):
        raise ConfigError(f"--shape {text!r}: sizes must be positive")
    return shape


def parse_list(text: str, option: str) -> tuple[str, ...]:
    """Read a comma-separated list (e.g. ``--checkpointing none,blocks``)."""
    items = tuple(p.strip() for p in text.split(",") if p.strip())
    if not items:
        raise UsageError(f"{option} needs at least one value, got {text!r}")
    return items


def validate_profile_args(
    config: Any, shape: tuple[int, ...], batch: int, device: str, policies: tuple[str, ...]
) -> None:
    """Refuse a bad shape, batch, device or policy before any progress bar or work starts."""
    from unetbench.model.policies import get_policy
    from unetbench.profiler import _step, devices

    devices.resolve_device(device)
    for name in policies:
        if name != "auto":
            get_policy(name)
    _step.resolve_shape(config, shape, batch)


def check_out(path: str | None) -> Path | None:
    """Validate the ``--out`` suffix before any work is done."""
    if path is None:
        return None
    out = Path(path)
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise UsageError(f"--out {path!r}: use a file ending in {', '.join(OUT_SUFFIXES)}")
    return out


def write_frame(frame: pd.DataFrame, out: Path) -> None:
    """Write records as CSV, Parquet or JSON (records orientation) by file suffix."""
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(out, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(out, index=False)
    else:
        frame.to_json(out, orient="records", indent=1)


def readable(frame: pd.DataFrame, columns: tuple[str, ...]) -> str:
    """Chosen columns of records as an aligned text table with units in the headers."""
    from unetbench.report.render import render_table

    return render_table(frame[[c for c in columns if c in frame]], style="text")
