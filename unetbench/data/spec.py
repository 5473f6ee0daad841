"""``DataSpec``: the ``[data]`` table of a study file, validated, and ``make_dataset``.

Kinds and their keys (anything else is an error naming the key and what is allowed):

- ``synthetic``: seed, shape, anisotropy, foreground_fraction, noise, n_train, n_val.
  Volume ``i`` is drawn with seed ``seed * 1000 + i``; the first ``n_train`` train, the rest
  validate, so validation data is never seen in training.
- ``hdf5``: path, raw, label (dataset names), val_path, val_fraction, split_axis.
- ``npz``: path, raw, label (array names), val_path, val_fraction, split_axis.
- ``npy``: raw, label (file paths), val_raw, val_label, val_fraction, split_axis.

``path``/``val_path`` may be one file or a list of files. Without separate validation files,
the last ``val_fraction`` of each volume along ``split_axis`` (0 = z) is held out.
Relative paths are resolved against ``root`` (the sweep passes the study file's folder).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unetbench._errors import ConfigError
from unetbench.data import volumes
from unetbench.data.synthetic import make_synthetic_volume
from unetbench.data.volumes import SegmentationData, Volume
from unetbench.shapes import fmt_shape

__all__ = ["DataSpec", "make_dataset"]

log = logging.getLogger(__name__)

_KINDS = ("synthetic", "hdf5", "npz", "npy")
_SPLIT = {"val_fraction", "split_axis"}
_KEYS: dict[str, set[str]] = {
    "synthetic": {
        "seed",
        "shape",
        "anisotropy",
        "foreground_fraction",
        "noise",
        "n_train",
        "n_val",
    },
    "hdf5": {"path", "raw", "label", "val_path", *_SPLIT},
    "npz": {"path", "raw", "label", "val_path", *_SPLIT},
    "npy": {"raw", "label", "val_raw", "val_label", *_SPLIT},
}


@dataclass(frozen=True)
class DataSpec:
    """Where a study's volumes come from; see the module docstring for the keys per kind."""

    kind: str = "synthetic"
    seed: int = 0
    shape: tuple[int, ...] = (48, 128, 128)
    anisotropy: float = 1.0
    foreground_fraction: float = 0.1
    noise: float = 0.4
    n_train: int = 2
    n_val: int = 1
    path: tuple[str, ...] = ()
    raw: str = "raw"
    label: str = "label"
    val_path: tuple[str, ...] = ()
    val_raw: str = ""
    val_label: str = ""
    val_fraction: float = 0.25
    split_axis: int = 0

    def __post_init__(self) -> None:
        _fail_unless(self.kind in _KINDS, "kind", self.kind, " | ".join(_KINDS))
        if self.kind == "synthetic":
            ok = len(self.shape) == 3 and all(isinstance(s, int) and s >= 8 for s in self.shape)
            _fail_unless(ok, "shape", list(self.shape), "3 integers >= 8, [z, y, x]")
            _fail_unless(0.25 <= self.anisotropy <= 16, "anisotropy", self.anisotropy, "0.25..16")
            fg = self.foreground_fraction
            _fail_unless(0.01 <= fg <= 0.5, "foreground_fraction", fg, "0.01..0.5")
            _fail_unless(0 <= self.noise <= 5, "noise", self.noise, "0..5")
            _fail_unless(self.n_train >= 1, "n_train", self.n_train, "an integer >= 1")
            _fail_unless(self.n_val >= 1, "n_val", self.n_val, "an integer >= 1")
        else:
            _fail_unless(0 < self.val_fraction < 1, "val_fraction", self.val_fraction, "0 < f < 1")
            _fail_unless(self.split_axis in (0, 1, 2), "split_axis", self.split_axis, "0, 1, 2")
        if self.kind in ("hdf5", "npz"):
            _fail_unless(bool(self.path), "path", list(self.path), "a file or a list of files")
        if self.kind == "npy":
            for key in ("raw", "label"):
                ok = str(getattr(self, key)).endswith(".npy")
                _fail_unless(ok, key, getattr(self, key), "a path to a .npy file")
            ok = bool(self.val_raw) == bool(self.val_label)
            _fail_unless(ok, "val_raw", self.val_raw, "given together with val_label")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataSpec:
        """Build from a ``[data]`` table; unknown keys or keys of another kind are errors."""
        kind = d.get("kind", "synthetic")
        _fail_unless(kind in _KINDS, "kind", kind, " | ".join(_KINDS))
        allowed = _KEYS[kind]
        for key in d:
            if key != "kind" and key not in allowed:
                names = ", ".join(sorted(allowed))
                raise ConfigError(f"data.{key}: unknown key for kind={kind!r} (allowed: {names})")
        kwargs: dict[str, Any] = {"kind": kind}
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for key, value in d.items():
            if key == "kind":
                continue
            kwargs[key] = _coerce(key, value, str(types[key]))
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The keys that matter for this kind, JSON/TOML-able (tuples become lists)."""
        out: dict[str, Any] = {"kind": self.kind}
        for key in sorted(_KEYS[self.kind]):
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


def _fail_unless(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"data.{key}={value!r} is not allowed (allowed: {allowed})")


def _coerce(key: str, value: Any, type_name: str) -> Any:
    """Check a TOML value against the field's type; lists become tuples."""
    if type_name.startswith("tuple"):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"data.{key}={value!r} is not allowed (allowed: a list)")
        want = str if "str" in type_name else int
        if not all(isinstance(v, want) and not isinstance(v, bool) for v in items):
            raise ConfigError(f"data.{key}={value!r} is not allowed (allowed: {want.__name__}s)")
        return tuple(items)
    if type_name == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"data.{key}={value!r} is not allowed (allowed: an integer)")
    if type_name == "float":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"data.{key}={value!r} is not allowed (allowed: a number)")
        return float(value)
    if type_name == "str" and not isinstance(value, str):
        raise ConfigError(f"data.{key}={value!r} is not allowed (allowed: a string)")
    return value


def make_dataset(
    spec: Mapping[str, Any] | DataSpec, *, root: str | Path | None = None
) -> SegmentationData:
    """Build training and validation volumes from a ``[data]`` table or a :class:`DataSpec`."""
    ds = spec if isinstance(spec, DataSpec) else DataSpec.from_dict(spec)
    base = Path(root) if root is not None else Path.cwd()
    if ds.kind == "synthetic":
        vols = [
            Volume.from_arrays(
                *make_synthetic_volume(
                    (ds.shape[0], ds.shape[1], ds.shape[2]),
                    ds.seed * 1000 + i,
                    anisotropy=ds.anisotropy,
                    foreground_fraction=ds.foreground_fraction,
                    noise=ds.noise,
                ),
                name=f"synthetic-{ds.seed}-{i}",
            )
            for i in range(ds.n_train + ds.n_val)
        ]
        train, val = vols[: ds.n_train], vols[ds.n_train :]
        desc = (
            f"synthetic(seed={ds.seed}, shape={fmt_shape(ds.shape)}, "
            f"anisotropy={ds.anisotropy:g}, foreground_fraction={ds.foreground_fraction:g}, "
            f"noise={ds.noise:g})"
        )
        return SegmentationData(train, val, desc, {"data_kind": ds.kind})

    def resolve(p: str) -> Path:
        return Path(p) if Path(p).is_absolute() else base / p

    def load(path: str) -> Volume:
        if ds.kind == "hdf5":
            return volumes.load_hdf5(resolve(path), ds.raw, ds.label)
        return volumes.load_npz(resolve(path), ds.raw, ds.label)

    if ds.kind == "npy":
        train = [volumes.load_npy(resolve(ds.raw), resolve(ds.label))]
        val = [volumes.load_npy(resolve(ds.val_raw), resolve(ds.val_label))] if ds.val_raw else []
    else:
        train = [load(p) for p in ds.path]
        val = [load(p) for p in ds.val_path]
    if not val:
        pairs = [volumes.split_volume(v, ds.val_fraction, ds.split_axis) for v in train]
        train, val = [t for t, _ in pairs], [v for _, v in pairs]
    files = ", ".join(ds.path) if ds.kind != "npy" else ds.raw
    log.info("loaded %d training and %d validation volume(s) from %s", len(train), len(val), files)
    return SegmentationData(train, val, f"{ds.kind}({files})", {"data_kind": ds.kind})
