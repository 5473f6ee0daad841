"""Volumes, the train/validation container, and loaders for user data (HDF5, .npy, .npz).

Every volume is held the same way whatever its source: ``raw`` float32 of shape
``(C, Z, Y, X)`` (a channel axis is added to single-channel data) and ``label`` int64 of shape
``(Z, Y, X)`` holding class indices. 2D images are stored with ``Z == 1`` so one code path
serves 2D and 3D configs. Raw data is standardised per volume (zero mean, unit variance) on
load, because U-Net training with default learning rates assumes inputs of that scale.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetbench._errors import ConfigError, UsageError
from unetbench.shapes import fmt_shape

__all__ = ["SegmentationData", "Volume", "load_hdf5", "load_npy", "load_npz", "split_volume"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Volume:
    """One raw/label pair: raw ``(C, Z, Y, X)`` float32, label ``(Z, Y, X)`` int64."""

    raw: np.ndarray
    label: np.ndarray
    name: str = ""

    @classmethod
    def from_arrays(cls, raw: Any, label: Any, name: str = "", standardize: bool = True) -> Volume:
        """Check and convert arrays: adds channel (and z for 2D) axes, standardises raw."""
        raw_a = np.asarray(raw, dtype=np.float32)
        label_a = np.asarray(label)
        if label_a.ndim == 2:  # a 2D image: one z slice
            label_a = label_a[None]
            raw_a = raw_a[..., None, :, :]
        if label_a.ndim != 3:
            raise ConfigError(
                f"{name or 'label'}: label must be 2D or 3D, got shape {label_a.shape}"
            )
        if raw_a.ndim == 3:
            raw_a = raw_a[None]
        if raw_a.ndim != 4 or raw_a.shape[1:] != label_a.shape:
            raise ConfigError(
                f"{name or 'volume'}: raw shape {raw_a.shape} does not match label shape "
                f"{label_a.shape} (allowed: raw (Z,Y,X) or (C,Z,Y,X) with the label's (Z,Y,X))"
            )
        is_int = np.issubdtype(label_a.dtype, np.integer) or label_a.dtype == bool
        if not is_int and not np.all(np.equal(np.mod(label_a, 1), 0)):
            raise ConfigError(f"{name or 'label'}: labels must be integer class indices")
        label_a = label_a.astype(np.int64)
        if label_a.size and label_a.min() < 0:
            raise ConfigError(f"{name or 'label'}: negative class index {label_a.min()}")
        if not np.all(np.isfinite(raw_a)):
            raise ConfigError(f"{name or 'raw'}: raw data contains NaN or inf")
        if standardize:
            mean = raw_a.mean(axis=(1, 2, 3), keepdims=True)
            std = raw_a.std(axis=(1, 2, 3), keepdims=True)
            raw_a = ((raw_a - mean) / np.maximum(std, 1e-6)).astype(np.float32)
        return cls(np.ascontiguousarray(raw_a), np.ascontiguousarray(label_a), name)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        z, y, x = self.label.shape
        return (z, y, x)

    @property
    def channels(self) -> int:
        return int(self.raw.shape[0])


@dataclass(frozen=True)
class SegmentationData:
    """Training volumes and held-out validation volumes of one segmentation task."""

    train: list[Volume]
    val: list[Volume]
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.train or not self.val:
            raise ConfigError(
                f"data needs at least one training and one validation volume, got "
                f"{len(self.train)} and {len(self.val)}"
            )
        channels = {v.channels for v in [*self.train, *self.val]}
        if len(channels) != 1:
            raise ConfigError(f"all volumes need the same number of channels, got {channels}")

    @property
    def channels(self) -> int:
        return self.train[0].channels

    def check_model(self, in_channels: int, out_channels: int, where: str = "") -> None:
        """Raise ConfigError unless a model with these channels can train on this data:
        ``in_channels`` equal to the data's, ``out_channels`` at least its classes.
        ``where`` prefixes the field names (``"fixed."`` for a study spec)."""
        if in_channels != self.channels:
            raise ConfigError(
                f"{where}in_channels={in_channels} but the data has {self.channels} "
                f"channel(s) (allowed: {self.channels})"
            )
        if out_channels < self.n_classes:
            raise ConfigError(
                f"{where}out_channels={out_channels} but the labels have {self.n_classes} "
                f"classes (allowed: out_channels >= {self.n_classes})"
            )

    @property
    def n_classes(self) -> int:
        """Number of classes seen in any label (at least 2)."""
        return max(2, *(int(v.label.max()) + 1 for v in [*self.train, *self.val]))

    def summary(self) -> dict[str, Any]:
        """Flat, JSON-able description for records (shapes, foreground share, source)."""
        fg = [float(np.mean(v.label > 0)) for v in self.val]
        return {
            "data": self.description,
            "data_train_shapes": ";".join(fmt_shape(v.spatial_shape) for v in self.train),
            "data_val_shapes": ";".join(fmt_shape(v.spatial_shape) for v in self.val),
            "data_val_foreground_fraction": float(np.mean(fg)),
            **self.info,
        }


def split_volume(volume: Volume, val_fraction: float, axis: int = 0) -> tuple[Volume, Volume]:
    """Hold out the last ``val_fraction`` of a volume along spatial ``axis`` for validation."""
    n = volume.spatial_shape[axis]
    n_val = round(n * val_fraction)
    if not 0 < n_val < n:
        raise ConfigError(
            f"data.val_fraction={val_fraction} leaves {n_val} of {n} slices along axis {axis} "
            f"for validation (allowed: a fraction giving at least one slice for each side)"
        )
    cut = n - n_val
    raw_axis = axis + 1

    def take(a: np.ndarray, ax: int, lo: int, hi: int) -> np.ndarray:
        return np.ascontiguousarray(np.take(a, np.arange(lo, hi), axis=ax))

    train = Volume(
        take(volume.raw, raw_axis, 0, cut), take(volume.label, axis, 0, cut), volume.name
    )
    val = Volume(take(volume.raw, raw_axis, cut, n), take(volume.label, axis, cut, n), volume.name)
    return train, val


def _check_file(path: str | Path, suffixes: tuple[str, ...]) -> Path:
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise UsageError(f"{p}: expected a file ending in {' or '.join(suffixes)}")
    if not p.is_file():
        raise ConfigError(f"data file not found: {p}")
    return p


def load_hdf5(path: str | Path, raw: str = "raw", label: str = "label") -> Volume:
    """Load datasets ``raw`` and ``label`` (names inside the file) from an HDF5 file."""
    import h5py  # lazy: only needed for HDF5 data

    p = _check_file(path, (".h5", ".hdf5", ".hdf", ".n5"))
    with h5py.File(p, "r") as f:
        for key in (raw, label):
            if key not in f:
                raise ConfigError(f"{p}: no dataset {key!r} (allowed: {sorted(_h5_datasets(f))})")
        return Volume.from_arrays(f[raw][()], f[label][()], name=f"{p.name}:{raw}")


def _h5_datasets(f: Any) -> list[str]:
    import h5py

    names: list[str] = []
    f.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
    return names


def load_npy(raw_path: str | Path, label_path: str | Path) -> Volume:
    """Load raw and label arrays from two ``.npy`` files."""
    r = _check_file(raw_path, (".npy",))
    lab = _check_file(label_path, (".npy",))
    return Volume.from_arrays(np.load(r), np.load(lab), name=r.name)


def load_npz(path: str | Path, raw: str = "raw", label: str = "label") -> Volume:
    """Load arrays named ``raw`` and ``label`` from one ``.npz`` archive."""
    p = _check_file(path, (".npz",))
    with np.load(p) as f:
        for key in (raw, label):
            if key not in f.files:
                raise ConfigError(f"{p}: no array {key!r} (allowed: {sorted(f.files)})")
        return Volume.from_arrays(f[raw], f[label], name=f"{p.name}:{raw}")
